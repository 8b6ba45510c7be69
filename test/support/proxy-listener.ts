/**
 * An in-process listener for the edge tests: lines echoed, `whoami` answered with the client
 * address corral sees, `proxy` with what its PROXY header said (JSON), `cert` with nothing special.
 */
import { type Listener, type ListenerSettings, type ProtocolHandler, startListener } from '../../src/index.js';

let next = 0;

export const edgeProtocol: ProtocolHandler = {
  onFrame(frame, conn) {
    const line = frame.toString();
    if (line === 'whoami') {
      const r = conn.remote;
      conn.sendFrame(r.family === 'IPv4' || r.family === 'IPv6' ? `${r.address} ${r.port}` : r.family);
    } else if (line === 'proxy') {
      const p = conn.proxy;
      conn.sendFrame(
        JSON.stringify(
          p === null
            ? null
            : {
                version: p.header.version,
                transport: p.header.transport,
                peer: p.peer,
                crc32c: p.header.crc32c !== undefined,
                uniqueId: p.header.uniqueId?.toString(),
                authority: p.header.authority,
                alpn: p.header.alpn?.toString(),
                ssl: p.header.ssl === undefined ? undefined : { version: p.header.ssl.version, cipher: p.header.ssl.cipher, client: p.header.ssl.client },
                raw: p.header.raw.length,
              },
        ),
      );
    } else conn.sendFrame(frame);
  },
};

/** Start a line listener on 127.0.0.1 with these settings (a fresh name each time). */
export function edgeListener(settings: Partial<ListenerSettings> = {}): Promise<Listener> {
  return startListener({
    name: `edge-${process.pid}-${next++}`,
    protocol: edgeProtocol,
    framing: 'line',
    transportOptions: { host: '127.0.0.1', port: 0 },
    ...settings,
  } as ListenerSettings & { protocol: ProtocolHandler });
}
