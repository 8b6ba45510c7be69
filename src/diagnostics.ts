import diagnosticsChannel from 'node:diagnostics_channel';
import type { HandshakeFailure, RejectReason } from './acceptor-pool/acceptor-pool.js';
import type { HandlerHook } from './protocol.js';
import type { CloseReason } from './protocol.js';
import type { SocketAddress } from './transport.js';

/**
 * Every `node:diagnostics_channel` channel corral publishes on, in one table (as undici does).
 * Nothing is built or published unless someone subscribes: `diagnosticsChannel.subscribe(name, fn)`.
 *
 * | channel                    | message                        |
 * |----------------------------|--------------------------------|
 * | `corral:listener:start`    | {@link ListenerStartMessage}   |
 * | `corral:listener:stop`     | {@link ListenerStopMessage}    |
 * | `corral:connection:open`   | {@link ConnectionOpenMessage}  |
 * | `corral:connection:close`  | {@link ConnectionCloseMessage} |
 * | `corral:handshake:error`   | {@link HandshakeErrorMessage}  |
 * | `corral:handler:crash`     | {@link HandlerCrashMessage}    |
 * | `corral:overload:reject`   | {@link OverloadRejectMessage}  |
 */
export const channels = {
  listenerStart: typed<ListenerStartMessage>('corral:listener:start'),
  listenerStop: typed<ListenerStopMessage>('corral:listener:stop'),
  connectionOpen: typed<ConnectionOpenMessage>('corral:connection:open'),
  connectionClose: typed<ConnectionCloseMessage>('corral:connection:close'),
  handshakeError: typed<HandshakeErrorMessage>('corral:handshake:error'),
  handlerCrash: typed<HandlerCrashMessage>('corral:handler:crash'),
  overloadReject: typed<OverloadRejectMessage>('corral:overload:reject'),
} as const;

/**
 * A `node:diagnostics_channel` channel whose messages are of type `M`: the same object
 * `diagnosticsChannel.channel(name)` returns, typed for subscribers
 * (`channels.connectionClose.subscribe((m) => m.reason)` type-checks).
 */
export interface TypedChannel<M> {
  /** The channel's name, e.g. `corral:connection:close`. */
  readonly name: string | symbol;
  /** Whether anyone subscribed (corral builds and publishes nothing otherwise). */
  readonly hasSubscribers: boolean;
  /** Publish a message to every subscriber. */
  publish(message: M): void;
  /** Call `onMessage` for every message published from now on. */
  subscribe(onMessage: (message: M, name: string | symbol) => void): void;
  /** Stop calling `onMessage`; returns whether it was subscribed. */
  unsubscribe(onMessage: (message: M, name: string | symbol) => void): boolean;
}

function typed<M>(name: string): TypedChannel<M> {
  // Node's Channel passes `unknown` messages; corral publishes only `M` on each channel.
  return diagnosticsChannel.channel(name) as unknown as TypedChannel<M>;
}

/** Published on `corral:listener:start` once the listener accepts. */
export interface ListenerStartMessage {
  readonly listener: string;
  readonly transport: string;
  readonly address: SocketAddress;
}

/** Published on `corral:listener:stop` once the listener has stopped. */
export interface ListenerStopMessage {
  readonly listener: string;
}

/** Published on `corral:connection:open` after the handshake, before `onReady`. */
export interface ConnectionOpenMessage {
  readonly listener: string;
  readonly id: string;
  readonly remote: SocketAddress;
  /** Milliseconds the handshake took. */
  readonly handshakeMs: number;
}

/** Published on `corral:connection:close` after `onClose`. */
export interface ConnectionCloseMessage {
  readonly listener: string;
  readonly id: string;
  readonly reason: CloseReason;
  readonly durationMs: number;
}

/** Published on `corral:handshake:error` when a handshake fails or times out. */
export interface HandshakeErrorMessage {
  readonly listener: string;
  readonly kind: HandshakeFailure;
  readonly error: Error;
  /** The peer, if someone listened on this channel (or for the event) when the socket was accepted; see `HandshakeErrorEvent`. */
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
}

/** Published on `corral:handler:crash` when a handler hook throws or rejects. */
export interface HandlerCrashMessage {
  readonly listener: string;
  readonly id: string;
  readonly hook: HandlerHook;
  readonly error: unknown;
  /** Whether a fresh handler was started on the connection (`restart: 'transient'`). */
  readonly restarted: boolean;
}

/** Published on `corral:overload:reject` when an accepted socket is closed unserved. */
export interface OverloadRejectMessage {
  readonly listener: string;
  readonly reason: RejectReason;
  /** The peer, if someone listened on this channel (or for the event) when the socket was accepted; see `RejectEvent`. */
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
}
