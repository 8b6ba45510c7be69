import type { Connection, ProtocolHandler } from '../../src/index.js';

/** Sends every frame back unchanged (with `line` framing: every line). */
export const echoProtocol: ProtocolHandler = {
  onFrame(frame, conn) {
    conn.sendFrame(frame);
  },
};

/** Echoes, but a frame `crash` makes the hook throw and `reject` makes it reject. */
export const crashProtocol: ProtocolHandler = {
  onFrame(frame, conn) {
    const text = frame.toString();
    if (text === 'crash') throw new Error('crash requested');
    if (text === 'reject') return Promise.reject(new Error('reject requested'));
    conn.sendFrame(frame);
  },
};

/** Ignores shutdown requests: only the drain deadline closes it. */
export const stubbornProtocol: ProtocolHandler = {
  onFrame(frame, conn) {
    conn.sendFrame(frame);
  },
  onShutdown() {
    // keep the connection open on purpose
  },
};

/** Greets on ready with `hello <restarts>`, so a test can see a transient restart happen. */
export class GreetingProtocol implements ProtocolHandler {
  onReady(conn: Connection): void {
    conn.sendFrame(`hello ${conn.restarts}`);
  }
  onFrame(frame: Buffer, conn: Connection): void {
    if (frame.toString() === 'crash') throw new Error('crash requested');
    conn.sendFrame(frame);
  }
}
