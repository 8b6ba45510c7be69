/**
 * Compile-time tests of the public types (checked by `npm run typecheck` and by
 * test/types.test.ts): what must type-check is written plainly; what must not is marked
 * `@ts-expect-error`, and the check fails if any of those lines compiles.
 */
import { type Connection, type ListenerOptions, type ProtocolHandler, channels, startListener } from '../../src/index.js';

// Per-connection state, typed through the handler: `conn.data` is `{ lines: number } | undefined`.
const counter: ProtocolHandler<{ lines: number }> = {
  onReady(conn) {
    conn.data = { lines: 0 };
  },
  onFrame(line, conn) {
    conn.data!.lines++;
    // @ts-expect-error: data is { lines: number }, not a string
    conn.data = 'hello';
    conn.sendFrame(line);
  },
};
export const withState = (): Promise<unknown> => startListener({ name: 'typed-state', protocol: counter });

// A class that needs options: protocolOptions is required, and must have the right shape.
class Greeter implements ProtocolHandler {
  constructor(
    _conn: Connection,
    private readonly options: { greeting: string },
  ) {}
  onReady(conn: Connection): void {
    conn.sendFrame(this.options.greeting);
  }
}
export const greeter = (): Promise<unknown> => startListener({ name: 'greeter', protocol: Greeter, protocolOptions: { greeting: 'hi' } });
// @ts-expect-error: Greeter needs protocolOptions
export const greeterWithout = (): Promise<unknown> => startListener({ name: 'greeter', protocol: Greeter });
// @ts-expect-error: protocolOptions of the wrong shape
export const greeterWrong = (): Promise<unknown> => startListener({ name: 'greeter', protocol: Greeter, protocolOptions: { greet: 'hi' } });

// A factory whose options may be undefined: protocolOptions stays optional.
const optional = (_conn: Connection, options: { prefix?: string } | undefined): ProtocolHandler => ({
  onFrame(frame, conn) {
    conn.sendFrame(`${options?.prefix ?? ''}${frame.toString()}`);
  },
});
export const optionalOptions = (): Promise<unknown> => startListener({ name: 'optional', protocol: optional });

// Options objects can be written ahead of the call.
const options: ListenerOptions<{ greeting: string }> = { name: 'ahead', protocol: Greeter, protocolOptions: { greeting: 'hello' } };
export const ahead = (): Promise<unknown> => startListener(options);

// Diagnostics channels are typed for subscribers.
channels.connectionClose.subscribe((m) => {
  const reason: string = m.reason;
  const id: string = m.id;
  // @ts-expect-error: a close message has no such field
  void m.handshakeMs;
  void reason;
  void id;
});
channels.connectionOpen.subscribe((m) => void m.handshakeMs);
