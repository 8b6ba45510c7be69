import diagnosticsChannel from 'node:diagnostics_channel';
import type { HandshakeFailure, RejectReason } from './acceptor-pool/acceptor-pool-stats.js';
import type { AlarmEvent } from './options.js';
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
 * | `corral:listener:alarm`    | {@link AlarmEvent}             |
 */
export const channels = {
  /** `corral:listener:start`: a listener has started, with its bound address. */
  listenerStart: typed<ListenerStartMessage>('corral:listener:start'),
  /** `corral:listener:stop`: a listener has stopped and released its name. */
  listenerStop: typed<ListenerStopMessage>('corral:listener:stop'),
  /** `corral:connection:open`: a connection completed its handshake (before `onReady`). */
  connectionOpen: typed<ConnectionOpenMessage>('corral:connection:open'),
  /** `corral:connection:close`: a connection closed (after `onClose`). */
  connectionClose: typed<ConnectionCloseMessage>('corral:connection:close'),
  /** `corral:handshake:error`: a transport handshake failed, timed out or was closed to make room. */
  handshakeError: typed<HandshakeErrorMessage>('corral:handshake:error'),
  /** `corral:handler:crash`: a handler hook threw or rejected. */
  handlerCrash: typed<HandlerCrashMessage>('corral:handler:crash'),
  /** `corral:overload:reject`: an accepted socket was closed without being served. */
  overloadReject: typed<OverloadRejectMessage>('corral:overload:reject'),
  /** `corral:listener:alarm`: a connection-count alarm fired (`alarms`). */
  listenerAlarm: typed<AlarmEvent>('corral:listener:alarm'),
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
  // Cast: Node's Channel passes `unknown` messages; corral publishes only `M` on each channel.
  return diagnosticsChannel.channel(name) as unknown as TypedChannel<M>;
}

/** Published on `corral:listener:start` once the listener accepts. */
export interface ListenerStartMessage {
  /** Name of the listener. */
  readonly listener: string;
  /** Name of its transport (`'tcp'`, `'tls'`, or a custom transport's `name`). */
  readonly transport: string;
  /** The address it is bound to, with the real port when port 0 was asked for. */
  readonly address: SocketAddress;
}

/** Published on `corral:listener:stop` once the listener has stopped. */
export interface ListenerStopMessage {
  /** Name of the listener; it is free to be started again. */
  readonly listener: string;
}

/** Published on `corral:connection:open` after the handshake, before `onReady`. */
export interface ConnectionOpenMessage {
  /** Name of the listener that accepted the connection. */
  readonly listener: string;
  /** The connection's id ({@link Connection.id}). */
  readonly id: string;
  /** The peer end of the connection. */
  readonly remote: SocketAddress;
  /** Milliseconds the handshake took. */
  readonly handshakeMs: number;
}

/** Published on `corral:connection:close` after `onClose`. */
export interface ConnectionCloseMessage {
  /** Name of the listener that accepted the connection. */
  readonly listener: string;
  /** The connection's id ({@link Connection.id}). */
  readonly id: string;
  /** Why the connection ended, as `onClose` was told. */
  readonly reason: CloseReason;
  /** How long the connection lived, in ms: from the end of its handshake until it closed. */
  readonly durationMs: number;
}

/** Published on `corral:handshake:error` when a handshake fails or times out. */
export interface HandshakeErrorMessage {
  /** Name of the listener that accepted the socket. */
  readonly listener: string;
  /** How the handshake failed: `timeout`, `stalled` or `error`. */
  readonly kind: HandshakeFailure;
  /**
   * What went wrong: for `error`, the transport's own error (wrapped in a `CorralError` with code
   * `CORRAL_HANDSHAKE_FAILED` if it was not an `Error`); for `timeout` and `stalled`, a `CorralError`
   * with code `CORRAL_HANDSHAKE_TIMEOUT`.
   */
  readonly error: Error;
  /** The peer, if someone listened on this channel (or for the event) when the socket was accepted; see `HandshakeErrorEvent`. */
  readonly remoteAddress: string | undefined;
  /** The peer's port, read together with `remoteAddress` and under the same condition. */
  readonly remotePort: number | undefined;
}

/** Published on `corral:handler:crash` when a handler hook throws or rejects. */
export interface HandlerCrashMessage {
  /** Name of the listener that accepted the connection. */
  readonly listener: string;
  /** The connection's id ({@link Connection.id}). */
  readonly id: string;
  /** The hook that threw or rejected. */
  readonly hook: HandlerHook;
  /** What the hook threw or rejected with, as is (not necessarily an `Error`). */
  readonly error: unknown;
  /**
   * Whether a fresh handler was granted the connection (`restart: 'transient'`). It takes over after
   * `onCrash` settles, unless the connection is closing by then.
   */
  readonly restarted: boolean;
}

/** Published on `corral:overload:reject` when an accepted socket is closed unserved. */
export interface OverloadRejectMessage {
  /** Name of the listener that accepted the socket. */
  readonly listener: string;
  /** Why the socket was closed unserved. */
  readonly reason: RejectReason;
  /** The peer, if someone listened on this channel (or for the event) when the socket was accepted; see `RejectEvent`. */
  readonly remoteAddress: string | undefined;
  /** The peer's port, read together with `remoteAddress` and under the same condition. */
  readonly remotePort: number | undefined;
  /** More on why, where there is more (see `RejectEvent.detail`). */
  readonly detail?: string;
}
