/**
 * One device connection: the gateway's corral `ProtocolHandler`, one instance per connection.
 *
 * ## A session's life
 *
 * 1. **Hello.** The first line must be `{"type":"hello","device","token"}`, within `helloTimeout`
 *    (which bounds the whole hello: authentication and broker round trips included). The hello is
 *    stamped when it is read (`at`, see {@link DeviceDirectory.helloTime}); `authenticate` names the
 *    device; the session takes its presence seq ({@link DeviceDirectory.nextSeq}) and is registered
 *    in the process's {@link DeviceDirectory}; the takeover (with the seq) is announced to every
 *    node; the device's downlink is routed to this node (`attachDevice`); only then is
 *    `{"type":"welcome"}` sent, followed by the `connected` presence event. Lines sent
 *    meanwhile wait (corral does not read while `onFrame`'s promise is pending). A hello older than
 *    a session already known for the device (here or on another node) is refused with `taken_over`.
 * 2. **Uplink.** Each `msg` is published in the order read; `ack` or `nack` follows the broker's
 *    confirm. Reading goes on (pipelining) until `maxInflightPerDevice` are unconfirmed, or until the
 *    process's {@link UplinkBudget} is spent; then `onFrame` waits, and corral stops reading the socket.
 * 3. **Downlink.** Commands reach the session through {@link dispatchBrokerEvents}. At most
 *    `maxPendingCommands` are written and unacknowledged; more wait in a bounded queue, then (still
 *    unacknowledged at the broker) in a bounded overflow, in order; a command beyond both waits
 *    {@link QUEUE_FULL_RETRY_MS} before it goes back to the broker (at once, it looped straight back
 *    here). A command that cannot be encoded is dead-lettered (`Command.deadLetter`). A `cmd_ack`
 *    is published as an event (confirmed) before the command's delivery is acknowledged. An expired
 *    command is dropped, after a `cmd_expired` event; a command not acknowledged within
 *    `cmdAckTimeout`, or left when the session ends, is given back to the broker (`redeliver`) to
 *    follow its device.
 * 4. **Takeover.** When any node announces a later session of the device, this one is sent
 *    `taken_over` and closed. If the announced seq is not above this session's `disconnected`
 *    (seq + 1), or above a seq this process remembers for the device, the new session is announced
 *    again with a higher one, which its node adopts (and publishes `connected` again): presence
 *    orders by seq (docs/gateway.md, "Events").
 * 5. **Errors.** A line that breaks the protocol gets `{"type":"error","code","message"}`, then the
 *    connection closes. Nothing a device sends can crash the process.
 * 6. **Drain.** On `onShutdown` the session closes once its unconfirmed uplinks are settled (corral
 *    force-closes at the drain deadline). Meanwhile it still reads command acks and pings, answers
 *    new uplinks with `nack` `shutting_down`, and writes no new commands.
 * 7. **Close.** The session leaves the directory, detaches the device (once per attach: the broker
 *    counts), publishes `disconnected`, and gives every command it still holds back to the broker.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { type CloseReason, type Connection, FrameTooLargeError, type ProtocolHandler } from 'corral';
import type { Logger } from 'pino';
import type { Authenticate } from './auth.js';
import type { Broker, Command, CommandEvent, DeadLetterReason, PresenceEvent, Takeover } from './broker.js';
import { type DeviceDirectory, isNewer } from './device-directory.js';
import {
  type CommandAck,
  DEVICE_ID,
  type ErrorCode,
  encode,
  type Hello,
  MESSAGE_ID,
  parseDeviceLine,
  ProtocolError,
  type Uplink,
} from './device-protocol.js';
import type { CommandEventKind, GatewayMetrics, HelloOutcome, RedeliveryReason } from './metrics.js';
import type { UplinkBudget } from './uplink-budget.js';
import { UplinkRate } from './uplink-rate.js';

/**
 * How long after its TLS handshake a connection may take to send its hello and still count in the
 * set-up window (the gateway's `maxConnecting`, corral's `maxConnections`), in ms: a device sends
 * it at once, one round trip later even from far away.
 */
export const HELLO_WINDOW_MS = 1000;

/**
 * How long a command that finds its session full (pending, queued and held) waits before it is
 * given back to the broker, in ms. Given back at once, it came straight back to the same full
 * session: a loop through RabbitMQ (a spin with the embedded broker) for as long as the device did
 * not acknowledge. The wait bounds that to one round per second per command.
 */
export const QUEUE_FULL_RETRY_MS = 1000;

/** Per-device limits and timeouts (ms), all filled in. */
export interface SessionLimits {
  readonly helloTimeout: number;
  readonly idleTimeout: number;
  readonly maxInflightPerDevice: number;
  readonly maxPendingCommands: number;
  /** Commands waiting behind the pending ones, at most; beyond, they are held (`maxHeldCommands`). */
  readonly maxQueuedCommands: number;
  /**
   * Commands held behind the queued ones (unacknowledged at the broker, in arrival order), at
   * most; beyond, each is given back after {@link QUEUE_FULL_RETRY_MS}.
   */
  readonly maxHeldCommands: number;
  readonly cmdAckTimeout: number;
  /** Devices this process holds at most (welcomed, or with a hello under way); a hello beyond is refused `overloaded`. */
  readonly maxDevices: number;
  /** Uplink messages per second a device may send (`Infinity`: no limit), and its burst. */
  readonly uplinkRate: number;
  readonly uplinkBurst: number;
  /** Longest line, in bytes, in either direction (the device protocol's bound); a `cmd` over it is dead-lettered `too_large`. */
  readonly maxLineLength: number;
}

/** What every session of one process shares. */
export interface SessionContext {
  readonly nodeId: string;
  readonly broker: Broker;
  readonly authenticate: Authenticate;
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
  readonly limits: SessionLimits;
  readonly directory: DeviceDirectory<DeviceSession>;
  readonly budget: UplinkBudget;
  /** Devices this process holds now: welcomed, or with a hello past authentication (see `maxDevices`). */
  readonly devices: { held: number };
  /** Broker work a closed session still has under way (detach, redeliveries); a drain waits for it. */
  readonly settling: Set<Promise<void>>;
}

/** A command waiting for room to be written, with its line (encoded once, on arrival). */
interface Queued {
  readonly command: Command;
  readonly line: string;
}

/** A command written to the device and not yet acknowledged. */
interface Pending {
  readonly command: Command;
  readonly timer: NodeJS.Timeout;
  readonly sentAt: number;
}

type Phase = 'hello' | 'authenticating' | 'open' | 'closed';

/**
 * Route broker events to this process's sessions: each command to the newest local session of its
 * device (or back to the broker when there is none), and each takeover announcement to the older
 * local sessions of its device, which close. Returns the function that stops routing.
 */
export function dispatchBrokerEvents(context: SessionContext): () => void {
  const { broker, directory, metrics, logger } = context;
  const onCommand = (command: Command): void => {
    try {
      if (expired(command)) {
        expire(context, command, directory.current(command.device)?.session ?? null);
        return;
      }
      const session = directory.current(command.device);
      if (session === undefined) {
        metrics.downlinkRedelivered('no_session');
        command.redeliver();
        return;
      }
      session.deliver(command);
    } catch (err) {
      logger.error({ err, device: command.device, command: command.id }, 'command dispatch failed');
      // Never leave it unsettled: hand it back so it follows the device (settling twice is a no-op).
      command.redeliver();
    }
  };
  const onTakeover = (takeover: Takeover): void => {
    try {
      const { device } = takeover;
      const latest = directory.latest(device);
      const known = directory.knownSeq(device);
      directory.noteStamp(device, takeover);
      if (
        known !== undefined &&
        known.session !== takeover.session &&
        takeover.seq < known.seq + 2 &&
        (latest === undefined || latest.session === takeover.session || isNewer(takeover, latest))
      ) {
        // The newest session of the device, as far as this process knows, with a seq not above one
        // this process remembers (its node never heard of it: restarted, or it forgot): announce
        // it again above that, and its node adopts the seq.
        takeover = { ...takeover, seq: known.seq + 2 };
        directory.noteSeq(device, takeover.seq, takeover.session);
        correctSeq(context, takeover);
      } else {
        directory.noteSeq(device, takeover.seq, takeover.session);
      }
      for (const session of [...directory.sessions(device)]) {
        if (session.session === takeover.session) {
          // This session, announced again with a higher seq by a node that knew a higher one.
          session.adoptSeq(takeover.seq);
        } else if (isNewer(takeover, session)) {
          // This session loses. Its `disconnected` will carry its seq + 1: if the winner's seq is
          // not above that (its node did not know this session's seq), announce the winner again
          // with a seq that is, and its node adopts it.
          if (takeover.seq < session.seq + 2) {
            takeover = { ...takeover, seq: session.seq + 2 };
            directory.noteSeq(device, takeover.seq, takeover.session);
            correctSeq(context, takeover);
          }
          session.takeOver(takeover);
        } else if (session.seq < takeover.seq + 2) {
          // The announced session loses to this one (hellos raced), but this one's seq is not above
          // the loser's `disconnected`: raise it.
          session.adoptSeq(takeover.seq + 2);
        }
      }
    } catch (err) {
      logger.error({ err, device: takeover.device }, 'takeover dispatch failed');
    }
  };
  broker.on('command', onCommand);
  broker.on('takeover', onTakeover);
  return () => {
    broker.off('command', onCommand);
    broker.off('takeover', onTakeover);
  };
}

function expired(command: Command): boolean {
  return command.expiresAt !== undefined && command.expiresAt <= Date.now();
}

/** Announce a session again with a corrected (higher) presence seq. */
function correctSeq(context: SessionContext, takeover: Takeover): void {
  const { broker, logger } = context;
  track(
    context,
    broker.announceTakeover(takeover).catch((err: unknown) => logger.warn({ err, device: takeover.device }, 'seq correction not announced')),
  );
}

/** An expired command: publish `cmd_expired`, then drop it (dropped whatever the publish's outcome). */
function expire(context: SessionContext, command: Command, session: string | null): void {
  context.metrics.downlinkExpired();
  const settle = (): void => command.drop();
  track(context, publishCommandEvent(context, command, 'cmd_expired', session).then(settle, settle));
}

/** Publish a command outcome event; resolves once confirmed, rejects (logged, counted) if not. */
function publishCommandEvent(context: SessionContext, command: Command, event: CommandEventKind, session: string | null): Promise<void> {
  const { broker, logger, metrics, nodeId } = context;
  const body: CommandEvent = { device: command.device, command: command.id, event, node: nodeId, session, at: new Date().toISOString() };
  return broker.publishCommandEvent(body).then(
    () => metrics.commandEvent(event, 'published'),
    (err: unknown) => {
      metrics.commandEvent(event, 'failed');
      logger.warn({ err, device: command.device, command: command.id, event }, 'command event not published');
      throw err;
    },
  );
}

/** Broker work a drain must wait for. */
function track(context: SessionContext, work: Promise<void>): void {
  const settling = context.settling;
  settling.add(work);
  void work.finally(() => settling.delete(work));
}

/** The device handler: one instance per connection, built with the process's {@link SessionContext}. */
export class DeviceSession implements ProtocolHandler {
  /** The authenticated device id, once the hello was accepted. */
  device: string | undefined = undefined;
  /** This session's id (random), once the hello was read. */
  session = '';
  /** When the hello was read (see {@link DeviceDirectory.helloTime}). */
  at = 0;
  /**
   * This session's presence seq (`connected` carries it, `disconnected` seq + 1), from
   * {@link DeviceDirectory.nextSeq}; raised if a node announces this session with a higher one.
   */
  seq = 0;
  private phase: Phase = 'hello';
  private helloTimer: NodeJS.Timeout | undefined = undefined;
  /** Takes the connection out of the set-up window if its hello is late (see `onReady`). */
  private windowTimer: NodeJS.Timeout | undefined = undefined;
  /** Counted in `ctx.devices.held`. */
  private held = false;
  private registered = false;
  private attached = false;
  /** The hello is binding the device here (`attachDevice` under way). */
  private attaching = false;
  /** What the session held when it closed while `attaching`, given back after the device is parked. */
  private heldWhileAttaching: Command[] = [];
  /** Settles the drain's wait for a session closed while `attaching`, once its device is released. */
  private releasedAfterAttach: (() => void) | undefined = undefined;
  private welcomed = false;
  private takenOver = false;
  /** Its takeover announcement was confirmed: the device's older sessions, wherever, are closing. */
  private announced = false;
  /**
   * Set on an older session of the device (taken over, closing) by a newer one here that ended
   * first and would have parked the device: this one, whose detach is then the last, parks for it.
   */
  parkFor: string | undefined = undefined;
  private shuttingDown = false;
  /** The hello's outcome was counted (it is counted once). */
  private helloCounted = false;
  private inflight = 0;
  /** Reading is paused on the process-wide uplink byte budget. */
  private awaitingBudget = false;
  /** Acks and nacks waiting for {@link flushReplies}. */
  private replies: string[] = [];
  private rate: UplinkRate | undefined;
  /** The wait for the next uplink token, while over the device's rate. */
  private rateWait: { timer: NodeJS.Timeout; resolve: () => void } | undefined;
  private resumeReading: (() => void) | undefined = undefined;
  /** The device ended its side: settle `onRemoteClose` once no uplink is in flight. */
  private remoteClosed: (() => void) | undefined = undefined;
  private readonly pending = new Map<string, Pending>();
  private readonly queued: Queued[] = [];
  /** Commands behind `queued` (at most `maxHeldCommands`), moved up in order as it has room. */
  private readonly overflow: Queued[] = [];
  /** Commands that found the session full, waiting {@link QUEUE_FULL_RETRY_MS} to be given back. */
  private readonly retrying = new Map<Command, NodeJS.Timeout>();

  constructor(
    private readonly conn: Connection,
    private readonly ctx: SessionContext,
  ) {}

  /** Whether the connection has closed (a getter: the phase changes under awaits). */
  private get closed(): boolean {
    return this.phase === 'closed';
  }

  onReady(conn: Connection): void {
    conn.setKeepAlive(true, 60_000);
    // A peer slow to send its hello (or that never will: a TLS handshake, then silence) leaves the
    // set-up window after HELLO_WINDOW_MS, so such peers cannot keep real devices out of it; it
    // still has helloTimeout to say hello.
    this.windowTimer = setTimeout(() => {
      this.windowTimer = undefined;
      this.guarded('hello window', () => conn.removeFromCount());
    }, HELLO_WINDOW_MS);
    this.windowTimer.unref();
    this.helloTimer = setTimeout(() => {
      this.helloTimer = undefined;
      if (this.closed || this.welcomed) return;
      this.guarded('hello timeout', () => {
        this.helloOutcome('timeout');
        this.fail('hello_timeout', `no hello within ${this.ctx.limits.helloTimeout} ms`);
      });
    }, this.ctx.limits.helloTimeout);
    this.helloTimer.unref();
  }

  onFrame(frame: Buffer): void | Promise<void> {
    if (this.closed || this.conn.closed) return;
    let message;
    try {
      message = parseDeviceLine(frame);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.fail(err.code, err.message);
      return;
    }
    if (this.phase === 'hello') {
      if (message.type !== 'hello') {
        this.fail('hello_required', 'the first line must be a hello');
        return;
      }
      return this.hello(message);
    }
    switch (message.type) {
      case 'hello':
        this.fail('duplicate_hello', 'hello was already sent');
        return;
      case 'msg':
        if (this.shuttingDown) return this.refuseDraining(message.id);
        return this.uplink(message, frame.length);
      case 'cmd_ack':
        this.commandAck(message);
        return;
      case 'ping':
        this.sendLine(encode({ type: 'pong' }));
        return;
    }
  }

  onFrameError(error: Error): void {
    const tooLong = error instanceof FrameTooLargeError;
    this.fail(tooLong ? 'line_too_long' : 'malformed_json', tooLong ? error.message : `unreadable input: ${error.message}`);
  }

  onShutdown(): void {
    this.shuttingDown = true;
    if (this.inflight === 0) this.uplinksSettled();
  }

  /**
   * The device ended its side (it may still read): answer the uplinks still in flight — each was
   * published, and a device that got no ack would send it again — then let corral close.
   */
  onRemoteClose(): void | Promise<void> {
    if (this.inflight === 0) {
      this.flushReplies();
      return;
    }
    return new Promise((resolve) => (this.remoteClosed = resolve));
  }

  /**
   * No uplink is in flight any more: what the device's end (`onRemoteClose`, settled now: corral
   * closes) or a drain (closed here) waited for, after their acks and nacks are written.
   */
  private uplinksSettled(): void {
    const remoteClosed = this.remoteClosed;
    if (remoteClosed === undefined && !this.shuttingDown) return;
    this.flushReplies();
    this.remoteClosed = undefined;
    if (remoteClosed !== undefined) remoteClosed();
    else void this.conn.close();
  }

  onClose(_conn: Connection, reason: CloseReason): void {
    if (this.closed) return;
    this.phase = 'closed';
    this.remoteClosed?.();
    this.remoteClosed = undefined;
    const { ctx } = this;
    if (this.helloTimer !== undefined) clearTimeout(this.helloTimer);
    this.helloTimer = undefined;
    if (this.windowTimer !== undefined) clearTimeout(this.windowTimer);
    this.windowTimer = undefined;
    this.endRateWait();
    this.wakeReader();
    if (this.registered) ctx.directory.remove(this);
    if (this.held) {
      this.held = false;
      ctx.devices.held -= 1;
    }
    const device = this.device;
    if (this.welcomed && device !== undefined) {
      ctx.metrics.deviceDisconnected();
      this.presence('disconnected');
      ctx.logger.debug({ device, session: this.session, reason }, 'device disconnected');
    }
    const held: Command[] = [];
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      held.push(p.command);
    }
    this.pending.clear();
    for (const q of this.queued.splice(0)) held.push(q.command);
    for (const q of this.overflow.splice(0)) held.push(q.command);
    for (const [command, timer] of this.retrying) {
      clearTimeout(timer);
      held.push(command);
    }
    this.retrying.clear();
    if (this.attached && device !== undefined) {
      this.attached = false;
      this.release(device, held);
    } else if (this.attaching) {
      // Its hello is binding the device here: what the catch-up handed this session is given back
      // once that is done, after the device is parked again (see `hello`). A drain waits for it.
      this.heldWhileAttaching = held;
      this.track(new Promise<void>((resolve) => (this.releasedAfterAttach = resolve)));
    } else {
      this.giveBack(held);
    }
  }

  /**
   * Detach the device, then give `held` back to the broker, so it follows the device instead of
   * coming back here. Park the device (its commands kept for its next connect, on any node) unless
   * a newer session of it is known: one that took this one over, here or on another node.
   */
  private release(device: string, held: Command[]): Promise<void> {
    const { ctx } = this;
    const latest = ctx.directory.latest(device);
    // Only a session that announced itself parks: one whose announcement failed never closed the
    // device's older session (here or on another node), which still holds it. An older session
    // parks for a newer one that ended first and asked it to (below), if that is still the latest.
    const session = this.parkFor ?? this.session;
    let park = (this.parkFor !== undefined || (this.announced && !this.takenOver)) && (latest === undefined || latest.session === session);
    if (park) {
      // Older sessions of the device still here (taken over, closing): the binding is counted, so
      // only the last detach can park. The last of them parks for this one.
      const older = [...ctx.directory.sessions(device)].filter((s) => s !== this);
      if (older.length > 0) {
        for (const o of older) o.parkFor = session;
        park = false;
      }
    }
    const unparkIfOvertaken = async (): Promise<void> => {
      // A newer session of the device became known while it was being parked (it reconnected at
      // once, maybe to another node, whose attach may have looked for the offline queue before it
      // existed): take the parked commands back out — attach here catches them up, they find no
      // session here and are published again to `<p>.down`, which routes them to that session —
      // and detach again, this time without parking.
      const newer = ctx.directory.latest(device);
      if (!park || newer === undefined || newer.session === session) return;
      await ctx.broker.attachDevice(device);
      await ctx.broker.detachDevice(device);
    };
    const released = ctx.broker
      .detachDevice(device, { park })
      .then(unparkIfOvertaken)
      .then(
        () => this.giveBack(held),
        (err: unknown) => {
          ctx.logger.warn({ err, device }, 'detach failed');
          this.giveBack(held);
        },
      );
    this.track(released);
    return released;
  }

  private giveBack(held: readonly Command[]): void {
    for (const command of held) this.redeliver(command, 'disconnected');
  }

  /** A command for this session's device (from {@link dispatchBrokerEvents}). */
  deliver(command: Command): void {
    if (this.closed) {
      this.redeliver(command, 'disconnected');
      return;
    }
    if (expired(command)) {
      expire(this.ctx, command, this.session);
      return;
    }
    // Encoded before anything else: a command that cannot be written (its body too deeply nested
    // for JSON.stringify, say) is dead-lettered now, never held, written or given back.
    const line = this.encodeCommand(command);
    if (line === undefined) return;
    const hold = !this.welcomed || this.shuttingDown; // given back, to follow the device, when the session closes
    const { maxPendingCommands, maxQueuedCommands, maxHeldCommands } = this.ctx.limits;
    if (hold || this.pending.size >= maxPendingCommands || this.pending.has(command.id)) {
      // In arrival order: queued, then held (unacknowledged at the broker, so nothing is lost if
      // this process dies), then — the session full — given back after a wait.
      if (this.queued.length < maxQueuedCommands && this.overflow.length === 0) this.queued.push({ command, line });
      else if (this.overflow.length < maxHeldCommands) this.overflow.push({ command, line });
      else this.retryLater(command);
      return;
    }
    this.write(command, line);
  }

  /** The session is full: give the command back after {@link QUEUE_FULL_RETRY_MS} (or when it closes). */
  private retryLater(command: Command): void {
    const timer = setTimeout(() => {
      if (!this.retrying.delete(command)) return;
      this.guarded('queue-full retry', () => this.redeliver(command, 'queue_full'));
    }, QUEUE_FULL_RETRY_MS);
    timer.unref();
    this.retrying.set(command, timer);
  }

  /**
   * The `cmd` line for a command, or `undefined` if it cannot be encoded: then the command is
   * dead-lettered (to `<p>.down.offline`, see `Command.deadLetter`), counted and logged. Given back
   * instead, it would come back to this session, and fail again, for ever.
   */
  private encodeCommand(command: Command): string | undefined {
    // An id published by a back end directly to `<p>.down` (the admin API checks its own): one a
    // device could not send back in its cmd_ack would get the device closed for it, again and again.
    if (!MESSAGE_ID.test(command.id)) return this.deadLetter(command, 'invalid_id', undefined);
    let line: string;
    try {
      line = encode({ type: 'cmd', id: command.id, body: command.body });
    } catch (err) {
      return this.deadLetter(command, 'unencodable', err);
    }
    // Over the protocol's line bound a device may refuse it; over corral's send buffer (1 MiB) it
    // closes the connection. Given back, it would do the same at every connect until it expires.
    if (Buffer.byteLength(line) > this.ctx.limits.maxLineLength) {
      return this.deadLetter(command, 'too_large', undefined);
    }
    return line;
  }

  /** The hello's broker work failed: refuse it (the device retries with its backoff). */
  private brokerFailed(device: string, err: unknown): void {
    this.ctx.logger.warn({ err, device }, 'hello failed at the broker');
    this.helloOutcome('broker_error');
    const stopping = this.ctx.broker.state === 'closed';
    this.fail(stopping ? 'shutting_down' : 'overloaded', 'the gateway cannot reach its broker; try again later');
  }

  /** Dead-letter a command that can never be written to its device, counted and logged. */
  private deadLetter(command: Command, reason: DeadLetterReason, err: unknown): undefined {
    this.ctx.metrics.downlinkDeadLettered(reason);
    this.ctx.logger.error({ err, device: command.device, command: command.id, reason }, 'command cannot be written to the device: dead-lettered');
    try {
      command.deadLetter(reason);
    } catch (e) {
      this.ctx.logger.error({ err: e, device: command.device, command: command.id }, 'dead-lettering a command failed');
    }
    return undefined;
  }

  /** A later session of this device was announced: close this one. */
  takeOver(takeover: Takeover): void {
    if (this.closed || this.takenOver) return;
    this.takenOver = true;
    // No longer the device's session: `/devices` lists the new one only, not this one while it closes.
    delete this.conn.meta.device;
    delete this.conn.meta.session;
    if (this.welcomed) this.ctx.metrics.takeover('closed');
    else {
      // Not welcomed yet: this hello lost.
      this.ctx.metrics.takeover('refused');
      this.helloOutcome('taken_over');
    }
    this.ctx.logger.debug({ device: this.device, session: this.session, by: takeover.session, node: takeover.node }, 'session taken over');
    this.fail('taken_over', `device ${takeover.device} connected again (node ${takeover.node})`);
  }

  /**
   * An announcement says this session's seq must be at least `seq`: take it, tell every node, and
   * if `connected` was published already, publish it again with the new seq.
   */
  adoptSeq(seq: number): void {
    if (seq <= this.seq || this.closed || this.takenOver || this.device === undefined) return;
    const { ctx } = this;
    this.seq = seq;
    ctx.directory.noteSeq(this.device, seq, this.session);
    if (this.registered) correctSeq(ctx, { device: this.device, node: ctx.nodeId, session: this.session, at: this.at, seq });
    if (this.welcomed) this.presence('connected');
  }

  // ---- hello ---------------------------------------------------------------------------------------

  private async hello(hello: Hello): Promise<void> {
    const { ctx, conn } = this;
    if (this.windowTimer !== undefined) clearTimeout(this.windowTimer);
    this.windowTimer = undefined;
    this.phase = 'authenticating';
    this.at = ctx.directory.helloTime();
    this.session = randomBytes(12).toString('base64url');
    let device: string | undefined;
    try {
      device = await ctx.authenticate(hello, conn.tls);
    } catch (err) {
      ctx.logger.error({ err, device: hello.device }, 'authenticate failed');
      device = undefined;
    }
    if (this.closed) return this.helloGone();
    if (device === undefined || !DEVICE_ID.test(device)) {
      if (device !== undefined) ctx.logger.error({ device }, 'authenticate returned an invalid device id');
      this.helloOutcome('unauthorized');
      this.fail('unauthorized', 'device or token refused');
      return;
    }
    this.device = device;
    if (this.refuseIfOutdated()) return;
    if (ctx.devices.held >= ctx.limits.maxDevices) {
      this.helloOutcome('full');
      this.fail('overloaded', 'this gateway holds as many devices as it may; try again later');
      return;
    }
    this.held = true;
    ctx.devices.held += 1;
    this.seq = ctx.directory.nextSeq(device, this.session);
    ctx.directory.add(this);
    this.registered = true;
    // Bind first, then announce: the announcement closes the device's older session, whose node
    // then unbinds it, so a command published between that unbind and this bind would find the
    // device bound nowhere (`<p>.down.offline`) while it is connected. This way the two bindings
    // overlap instead: a command may reach both sessions, and the older one gives what it holds
    // back, to follow the device here (at-least-once).
    // While the broker is not connected (or is blocked) the announcement would fail at once, and the
    // bind would wait for the next link: refuse the hello now, the device retries with its backoff.
    if (ctx.broker.state !== 'connected') return this.brokerFailed(device, new Error(`the broker is ${ctx.broker.state}`));
    this.attaching = true;
    let bound = false;
    let failure: unknown;
    try {
      await ctx.broker.attachDevice(device);
      bound = true;
      // Announced even if the device gave up on its hello meanwhile: it is still the device's
      // latest hello, and the older session it closes lets this one park the device (below).
      await ctx.broker.announceTakeover({ device, node: ctx.nodeId, session: this.session, at: this.at, seq: this.seq });
      this.announced = true;
    } catch (err) {
      failure = err;
    } finally {
      this.attaching = false;
    }
    if (!bound) {
      if (this.closed) {
        this.giveBack(this.heldWhileAttaching.splice(0));
        this.releasedAfterAttach?.();
        return this.helloGone();
      }
      return this.brokerFailed(device, failure);
    }
    if (this.closed) {
      // Closed while binding or announcing (the device gave up on its hello): onClose could not
      // release what was not yet bound. Release it now, as any close would: parked if announced,
      // or the commands its attach caught up from its offline queue (deleted by then) would find
      // it connected nowhere; not parked if the announcement failed, since an older session may
      // still hold the device (see `release`).
      void this.release(device, this.heldWhileAttaching.splice(0)).finally(() => this.releasedAfterAttach?.());
      return this.helloGone();
    }
    // From here a close releases the device (onClose).
    this.attached = true;
    if (failure !== undefined) return this.brokerFailed(device, failure);
    if (this.refuseIfOutdated()) return;
    conn.meta.device = device;
    conn.meta.session = this.session;
    if (this.helloTimer !== undefined) clearTimeout(this.helloTimer);
    this.helloTimer = undefined;
    this.phase = 'open';
    this.welcomed = true;
    // Set up: from now on the connection counts against `maxDevices`, not against corral's
    // `maxConnections`, which bounds the connections in their TLS handshake or hello (the
    // gateway's `maxConnecting`).
    conn.removeFromCount();
    this.sendLine(encode({ type: 'welcome', node: ctx.nodeId, session: this.session }));
    // "A device silent for longer than idleTimeout is closed": only what the device sends counts,
    // not the commands written to it (a half-open device would otherwise never time out).
    conn.setIdleTimeout(ctx.limits.idleTimeout, { resetOn: 'read' });
    this.helloOutcome('welcome');
    ctx.metrics.deviceConnected();
    // remote: the device's own address (behind --proxy-header, the one its balancer's header names).
    ctx.logger.debug({ device, session: this.session, connection: conn.id, remote: conn.remote }, 'device connected');
    this.presence('connected');
    this.writeQueued();
  }

  /** A later session of this device is known: refuse this hello. */
  private refuseIfOutdated(): boolean {
    // Taken over while its hello was under way: refused (and counted) then.
    if (this.takenOver) return true;
    const latest = this.ctx.directory.latest(this.device!);
    if (latest === undefined || latest.session === this.session || !isNewer(latest, this)) return false;
    this.takenOver = true;
    this.helloOutcome('taken_over');
    this.ctx.metrics.takeover('refused');
    this.fail('taken_over', `a later session of device ${this.device} exists`);
    return true;
  }

  /** The hello was abandoned: the connection closed while it was under way. */
  private helloGone(): void {
    this.helloOutcome('closed');
  }

  private helloOutcome(outcome: HelloOutcome): void {
    if (this.helloCounted) return;
    this.helloCounted = true;
    this.ctx.metrics.hello(outcome);
  }

  // ---- uplink --------------------------------------------------------------------------------------

  /** Draining: what is in flight finishes; the device sends the rest to another node. */
  private refuseDraining(id: string): void {
    this.ctx.metrics.uplinkNacked('shutting_down');
    this.sendLine(encode({ type: 'nack', id, reason: 'shutting_down' }));
  }

  /** @param waited The message already waited for its token (count it once, not per wait). */
  private uplink(message: Uplink, bytes: number, waited = false): void | Promise<void> {
    const { uplinkRate, uplinkBurst } = this.ctx.limits;
    if (uplinkRate !== Infinity) {
      this.rate ??= new UplinkRate(uplinkRate, uplinkBurst, performance.now());
      const wait = this.rate.take(performance.now());
      if (wait > 0) {
        // A timer may fire a little before performance.now() says it is due: then it waits again.
        if (!waited) this.ctx.metrics.uplinkRateLimited();
        return this.afterRateWait(wait).then(() => {
          // Closing, not only closed: a session told `taken_over` (or any error) publishes nothing more.
          if (this.closed || this.conn.closed) return;
          return this.uplink(message, bytes, true);
        });
      }
    }
    return this.withBudget(message, bytes);
  }

  /** Ends a wait for the next uplink token at once (the session closes). */
  private endRateWait(): void {
    if (this.rateWait === undefined) return;
    clearTimeout(this.rateWait.timer);
    this.rateWait.resolve();
    this.rateWait = undefined;
  }

  /** Wait `ms` for the device's next uplink token; {@link endRateWait} ends it early. */
  private afterRateWait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.rateWait = {
        timer: setTimeout(() => {
          this.rateWait = undefined;
          resolve();
        }, ms),
        resolve,
      };
    });
  }

  private withBudget(message: Uplink, bytes: number): void | Promise<void> {
    const readAt = performance.now();
    const granted = this.ctx.budget.acquire(bytes);
    if (granted === undefined) return this.publish(message, bytes, readAt);
    this.awaitingBudget = true;
    return granted.then(() => {
      this.awaitingBudget = false;
      if (this.closed || this.conn.closed) {
        this.ctx.budget.release(bytes);
        return;
      }
      return this.publish(message, bytes, readAt);
    });
  }

  /**
   * An ack or nack for the device: held until the current burst of confirms is handled, then
   * written with the others as one write (one TLS record), instead of one record per message.
   * The broker confirms in batches, so a device with several messages in flight usually gets its
   * acks together.
   */
  private queueReply(line: string): void {
    this.replies.push(line);
    if (this.replies.length === 1) queueMicrotask(() => this.guarded('writing acks', () => this.flushReplies()));
  }

  /** Write the held acks and nacks now (before any other line, so the device sees them in order). */
  private flushReplies(): void {
    const lines = this.replies;
    if (lines.length === 0) return;
    this.replies = [];
    // The listener's framing is '\n'-terminated lines (see startGateway), so lines join as one chunk.
    if (lines.length === 1) this.conn.sendFrame(lines[0]!);
    else this.conn.send(`${lines.join('\n')}\n`);
  }

  /** Any other line to the device: after the held acks. */
  private sendLine(line: string): void {
    this.flushReplies();
    this.conn.sendFrame(line);
  }

  private publish(message: Uplink, bytes: number, readAt: number): void | Promise<void> {
    const { ctx } = this;
    const device = this.device!;
    this.inflight++;
    ctx.metrics.uplinkPublished();
    ctx.broker
      .publishUplink({ device, id: message.id, topic: message.topic, body: message.body })
      .catch((err: unknown) => {
        ctx.logger.error({ err, device, id: message.id }, 'uplink publish failed');
        return { ok: false, reason: 'rejected' } as const;
      })
      .then((result) => {
        if (result.ok) {
          ctx.metrics.uplinkAcked((performance.now() - readAt) / 1000);
          this.queueReply(encode({ type: 'ack', id: message.id }));
        } else {
          ctx.metrics.uplinkNacked(result.reason);
          this.queueReply(encode({ type: 'nack', id: message.id, reason: result.reason }));
        }
        ctx.budget.release(bytes);
        this.inflight--;
        this.wakeReader();
        if (this.inflight === 0) this.uplinksSettled();
      });
    if (this.inflight >= ctx.limits.maxInflightPerDevice) {
      return new Promise((resolve) => (this.resumeReading = resolve));
    }
  }

  /**
   * The device sent nothing for `idleTimeout`. If the gateway itself stopped reading it (confirms
   * outstanding while RabbitMQ is slow, down or blocked; the byte budget exhausted), its silence is
   * ours: keep it (corral asks again after another period). Otherwise close it, as corral would.
   */
  onIdle(): void {
    if (this.inflight > 0 || this.resumeReading !== undefined || this.awaitingBudget) return;
    this.fail('idle_timeout', `nothing received for ${this.ctx.limits.idleTimeout} ms`);
  }

  /** Let `onFrame` return once a confirm freed a slot (or the session closed). */
  private wakeReader(): void {
    const resume = this.resumeReading;
    if (resume === undefined) return;
    if (this.closed || this.inflight < this.ctx.limits.maxInflightPerDevice) {
      this.resumeReading = undefined;
      resume();
    }
  }

  // ---- downlink ------------------------------------------------------------------------------------

  /** Write a command (its `line` from {@link encodeCommand}) and wait for its ack. */
  private write(command: Command, line: string): void {
    const { ctx } = this;
    const timer = setTimeout(() => this.guarded('command ack timeout', () => this.ackTimedOut(command.id)), ctx.limits.cmdAckTimeout);
    timer.unref();
    this.pending.set(command.id, { command, timer, sentAt: performance.now() });
    this.sendLine(line);
    ctx.metrics.downlinkDelivered();
  }

  /** Write queued commands while there is room, moving held ones up as the queue has room. */
  private writeQueued(): void {
    const { maxPendingCommands: max, maxQueuedCommands } = this.ctx.limits;
    for (let moved = true; moved; ) {
      moved = false;
      while (this.overflow.length > 0 && this.queued.length < maxQueuedCommands) this.queued.push(this.overflow.shift()!);
      for (let i = 0; i < this.queued.length && this.pending.size < max && this.phase === 'open' && !this.shuttingDown; ) {
        const { command, line } = this.queued[i]!;
        if (expired(command)) {
          this.queued.splice(i, 1);
          expire(this.ctx, command, this.session);
          moved = true;
        } else if (this.pending.has(command.id)) {
          i++; // the same id is out: send this copy after it settles
        } else {
          this.queued.splice(i, 1);
          this.write(command, line);
          moved = true;
        }
      }
      if (this.overflow.length === 0) break;
    }
  }

  private commandAck(ack: CommandAck): void {
    const p = this.pending.get(ack.id);
    if (p === undefined) return; // late (timed out and given back) or unknown: nothing to settle
    clearTimeout(p.timer);
    this.pending.delete(ack.id);
    this.ctx.metrics.downlinkAcked((performance.now() - p.sentAt) / 1000);
    // The `cmd_ack` event first, confirmed; then the delivery is settled, so a connection lost in
    // between brings the command (and its event) again: at least once. If RabbitMQ refuses the
    // event (e.g. a back-end queue full with `reject-publish`), the delivery is settled anyway: the
    // device did the command, and giving it back would send it to the device again at every ack,
    // for as long as the refusal lasts. The lost event is counted (`outcome` `failed`) and logged.
    const command = p.command;
    const settle = (): void => command.ack();
    this.track(publishCommandEvent(this.ctx, command, 'cmd_ack', this.session).then(settle, settle));
    this.writeQueued();
  }

  private ackTimedOut(id: string): void {
    const p = this.pending.get(id);
    if (p === undefined || this.closed) return;
    this.pending.delete(id);
    this.ctx.metrics.downlinkTimedOut();
    this.redeliver(p.command, 'ack_timeout');
    this.writeQueued();
  }

  private redeliver(command: Command, reason: RedeliveryReason): void {
    this.ctx.metrics.downlinkRedelivered(reason);
    try {
      command.redeliver();
    } catch (err) {
      this.ctx.logger.error({ err, device: command.device, command: command.id }, 'redeliver failed');
    }
  }

  // ---- helpers -------------------------------------------------------------------------------------

  /**
   * Run session logic from a timer or a microtask: a throw there would be an uncaught exception
   * that ends the process (every device with it), so it is logged instead and the session closed.
   */
  private guarded(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.ctx.logger.error({ err, device: this.device, session: this.session }, `${what} failed`);
      try {
        if (!this.conn.closed) void this.conn.close();
      } catch {
        // Closing already.
      }
    }
  }

  /** Send an error line, count it, and close. */
  private fail(code: ErrorCode, message: string): void {
    if (this.conn.closed) return;
    this.endRateWait();
    this.ctx.metrics.deviceError(code);
    this.sendLine(encode({ type: 'error', code, message }));
    void this.conn.close();
  }

  private presence(event: PresenceEvent['event']): void {
    const { ctx } = this;
    const device = this.device!;
    const seq = event === 'connected' ? this.seq : this.seq + 1;
    ctx.directory.noteSeq(device, seq, this.session);
    ctx.broker
      .publishPresence({ device, event, node: ctx.nodeId, session: this.session, seq, at: new Date().toISOString() })
      .catch((err: unknown) => ctx.logger.warn({ err, device, event }, 'presence publish failed'));
  }

  private track(work: Promise<void>): void {
    track(this.ctx, work);
  }
}
