import type { EventEmitter } from 'node:events';
import type { ConnectionInfo } from '../connection.js';
import { channels } from '../diagnostics.js';
import type { HandlerCrashEvent, HandshakeErrorEvent, ListenerEvents, RejectEvent } from '../listener.js';
import type { CloseReason } from '../protocol.js';
import type { SocketAddress } from '../transport.js';

/**
 * Emit `event` to the application's listeners so that one that throws cannot stop corral's own
 * work half-way (a loop over expired sockets, a lease's release): its error is thrown again on the
 * next tick, an uncaught exception as from any of the application's callbacks — what
 * `diagnostics_channel` does with a subscriber's. @internal
 */
export function emitSafely<K extends keyof ListenerEvents>(emitter: EventEmitter<ListenerEvents>, event: K, ...args: ListenerEvents[K]): void {
  try {
    (emitter.emit as (event: K, ...args: ListenerEvents[K]) => boolean)(event, ...args);
  } catch (err) {
    process.nextTick(() => {
      throw err;
    });
  }
}

/**
 * What a listener tells the world, each fact through its event and its diagnostics channel
 * together, so that no listener (single-process, worker, or a pool's primary) can emit one without
 * publishing the other. Nothing is built for an event nobody listens to or a channel nobody
 * subscribes to. @internal
 */
export class ListenerReporter {
  constructor(
    private readonly emitter: EventEmitter<ListenerEvents>,
    /** The listener's name, as every channel message carries it. */
    private readonly listener: string,
  ) {}

  /** The listener accepts (`corral:listener:start`). */
  started(transport: string, address: SocketAddress): void {
    if (channels.listenerStart.hasSubscribers) channels.listenerStart.publish({ listener: this.listener, transport, address });
  }

  /** The listener stopped (`stop`, `corral:listener:stop`). */
  stopped(): void {
    if (channels.listenerStop.hasSubscribers) channels.listenerStop.publish({ listener: this.listener });
    emitSafely(this.emitter, 'stop');
  }

  /**
   * A connection opened, before its handler is created (`connectionOpen`, `corral:connection:open`).
   * A `connectionOpen` listener that throws throws here: the supervisor makes it a crash of the
   * connection it was told of.
   */
  opened(info: () => ConnectionInfo, id: string, remote: () => SocketAddress, handshakeMs: number): void {
    try {
      if (this.emitter.listenerCount('connectionOpen') > 0) this.emitter.emit('connectionOpen', info());
    } finally {
      // Published even when a listener threw: its `corral:connection:close` will follow.
      if (channels.connectionOpen.hasSubscribers) channels.connectionOpen.publish({ listener: this.listener, id, remote: remote(), handshakeMs });
    }
  }

  /** A connection closed, after `onClose` (`connectionClose`, `corral:connection:close`). */
  closed(id: string, reason: CloseReason, durationMs: number): void {
    if (channels.connectionClose.hasSubscribers) channels.connectionClose.publish({ listener: this.listener, id, reason, durationMs });
    if (this.emitter.listenerCount('connectionClose') > 0) emitSafely(this.emitter, 'connectionClose', id, reason);
  }

  /** A handshake failed (`handshakeError`, `corral:handshake:error`). */
  handshakeFailed(event: HandshakeErrorEvent): void {
    if (channels.handshakeError.hasSubscribers) channels.handshakeError.publish({ listener: this.listener, ...event });
    emitSafely(this.emitter, 'handshakeError', event);
  }

  /** A socket was closed unserved (`reject`, `corral:overload:reject`). */
  rejected(event: RejectEvent): void {
    if (channels.overloadReject.hasSubscribers) channels.overloadReject.publish({ listener: this.listener, ...event });
    if (this.emitter.listenerCount('reject') > 0) emitSafely(this.emitter, 'reject', event);
  }

  /** A handler hook crashed (`handlerCrash`, `corral:handler:crash`). */
  crashed(event: HandlerCrashEvent): void {
    if (channels.handlerCrash.hasSubscribers) channels.handlerCrash.publish({ listener: this.listener, ...event });
    emitSafely(this.emitter, 'handlerCrash', event);
  }

  /**
   * Whether a `reject` or `handshakeError` report would be seen now: only then is a socket's peer
   * address read at accept (a syscall), while it can still be read.
   */
  wantsPeerAddress(): boolean {
    return (
      this.emitter.listenerCount('reject') > 0 ||
      this.emitter.listenerCount('handshakeError') > 0 ||
      channels.overloadReject.hasSubscribers ||
      channels.handshakeError.hasSubscribers
    );
  }
}
