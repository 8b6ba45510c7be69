/**
 * The device protocol: newline-delimited JSON over TLS, one object per line.
 *
 * Device → gateway: `hello` (first line), `msg` (uplink), `cmd_ack`, `ping`.
 * Gateway → device: `welcome`, `ack`, `nack`, `cmd`, `pong`, `error` (then close).
 */

/** Device ids: 1–128 characters of `[A-Za-z0-9_:-]` (no dot: ids are words of routing keys). */
export const DEVICE_ID = /^[A-Za-z0-9_:-]{1,128}$/;
/** Uplink topics: one routing-key word. */
export const TOPIC = /^[A-Za-z0-9_:-]{1,64}$/;
/** Message ids as devices send them. */
export const MESSAGE_ID = /^[\x21-\x7e]{1,128}$/;

export interface Hello {
  readonly type: 'hello';
  readonly device: string;
  readonly token: string | undefined;
}
export interface Uplink {
  readonly type: 'msg';
  readonly id: string;
  readonly topic: string;
  readonly body: unknown;
}
export interface CommandAck {
  readonly type: 'cmd_ack';
  readonly id: string;
}
export interface Ping {
  readonly type: 'ping';
}
export type DeviceMessage = Hello | Uplink | CommandAck | Ping;

/** Why the gateway refused a line or a device; sent as `{"type":"error","code":…}` before closing. */
export type ErrorCode =
  | 'malformed_json'
  | 'not_an_object'
  | 'unknown_type'
  | 'invalid_field'
  | 'line_too_long'
  | 'hello_required'
  | 'duplicate_hello'
  | 'unauthorized'
  | 'hello_timeout'
  | 'idle_timeout'
  | 'taken_over'
  | 'shutting_down'
  | 'overloaded';

/** A line that breaks the protocol. */
export class ProtocolError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Deepest nesting of arrays and objects a message or command body may have. JSON.parse takes any
 * depth, but the body is published as JSON, and JSON.stringify runs out of stack some thousands
 * of levels down.
 */
export const MAX_BODY_DEPTH = 64;

/** Whether `value` nests arrays or objects more than `max` levels deep (iteratively: any depth). */
export function nestedDeeperThan(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const [v, depth] = next;
    if (typeof v !== 'object' || v === null) continue;
    if (depth > max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
  }
  return false;
}

function field(o: Record<string, unknown>, name: string, pattern: RegExp): string {
  const v = o[name];
  if (typeof v !== 'string' || !pattern.test(v)) throw new ProtocolError('invalid_field', `field "${name}" is missing or invalid`);
  return v;
}

/** Parse one line from a device. Throws {@link ProtocolError} with the reason. */
export function parseDeviceLine(line: Buffer | string): DeviceMessage {
  let text: string;
  try {
    // Fatal: a byte sequence that is not UTF-8 is refused, not stored as U+FFFD.
    text = typeof line === 'string' ? line : UTF8.decode(line);
  } catch {
    throw new ProtocolError('malformed_json', 'line is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ProtocolError('malformed_json', 'line is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError('not_an_object', 'line is not a JSON object');
  }
  const o = value as Record<string, unknown>;
  switch (o.type) {
    case 'hello': {
      const token = o.token;
      if (token !== undefined && typeof token !== 'string') throw new ProtocolError('invalid_field', 'field "token" must be a string');
      return { type: 'hello', device: field(o, 'device', DEVICE_ID), token };
    }
    case 'msg':
      if (!('body' in o)) throw new ProtocolError('invalid_field', 'field "body" is missing');
      if (nestedDeeperThan(o.body, MAX_BODY_DEPTH)) throw new ProtocolError('invalid_field', `field "body" is nested deeper than ${MAX_BODY_DEPTH} levels`);
      return { type: 'msg', id: field(o, 'id', MESSAGE_ID), topic: field(o, 'topic', TOPIC), body: o.body };
    case 'cmd_ack':
      return { type: 'cmd_ack', id: field(o, 'id', MESSAGE_ID) };
    case 'ping':
      return { type: 'ping' };
    default:
      // Named by its JSON only when it is a string: an array or object nested deeply enough would
      // overflow JSON.stringify's stack while building this very message.
      throw new ProtocolError('unknown_type', `unknown message type ${typeof o.type === 'string' ? JSON.stringify(o.type) : Array.isArray(o.type) ? '(an array)' : `(${o.type === null ? 'null' : typeof o.type})`}`);
  }
}

/** Messages the gateway sends. */
export type GatewayMessage =
  | { type: 'welcome'; node: string; session: string }
  | { type: 'ack'; id: string }
  | { type: 'nack'; id: string; reason: string }
  | { type: 'cmd'; id: string; body: unknown }
  | { type: 'pong' }
  | { type: 'error'; code: ErrorCode; message: string };

/** One line for a device (without the line ending; the line framing adds it). */
export function encode(message: GatewayMessage): string {
  return JSON.stringify(message);
}
