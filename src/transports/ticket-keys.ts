import { createHash, randomBytes } from 'node:crypto';
import type tls from 'node:tls';
import { InvalidOptionError } from '../errors.js';

/** Bytes of one session-ticket key: 16 name, 16 HMAC secret, 16 AES key (Node's `ticketKeys` layout). */
export const TICKET_KEY_BYTES = 48;

/**
 * Check `transportOptions.ticketKeys`: one 48-byte key, or a non-empty list of them with distinct
 * names (the first 16 bytes). Returns a copy of each key, so that what the caller does with its
 * buffers afterwards changes nothing. Never puts key bytes in a message. @internal
 */
export function checkTicketKeys(value: unknown, option = 'transportOptions.ticketKeys'): Buffer[] | undefined {
  if (value === undefined) return undefined;
  const list = Array.isArray(value) ? (value as unknown[]) : [value];
  if (list.length === 0) throw new InvalidOptionError(option, 'must hold at least one key');
  const names = new Set<string>();
  return list.map((k, i) => {
    if (!(k instanceof Uint8Array) || k.byteLength !== TICKET_KEY_BYTES) {
      throw new InvalidOptionError(option, `key ${i} must be a Buffer of ${TICKET_KEY_BYTES} bytes (16 name, 16 HMAC, 16 AES)`);
    }
    // A copy: the caller may zero its buffers once the listener has started (keys are secrets),
    // and a list of keys is read again for every ticket (see useTicketKeys).
    const key = Buffer.from(k);
    const name = key.subarray(0, 16).toString('hex');
    if (names.has(name)) throw new InvalidOptionError(option, `key ${i} has the same name (first 16 bytes) as an earlier key`);
    names.add(name);
    return key;
  });
}

/** The native side of a `tls.SecureContext` that Node's ticket-key callback hangs on (not in Node's types). */
interface NativeContext {
  enableTicketKeyCallback(): void;
  onticketkeycallback: (name: Buffer, iv: Buffer, encrypt: boolean) => unknown[];
}

/** A throwaway HMAC/AES pair for "no such key": Node checks their lengths even then. */
const UNUSED = Buffer.alloc(16);

/**
 * Make `context` encrypt new session tickets with `keys[0]` and accept tickets made with any key of
 * the list, so that a key can be replaced without invalidating every ticket at once (a ticket under
 * an older key is accepted and renewed under the first). A ticket whose key name is not in the list
 * gets a full handshake.
 *
 * Node's public API holds one key per context (`ticketKeys`); a list needs the secure context's
 * ticket-key callback, which Node has but does not document (`enableTicketKeyCallback()` and
 * `onticketkeycallback`, pinned by corral's tests on the Node versions it supports). With a single
 * key this is not needed and not used. @internal
 */
export function useTicketKeys(context: tls.SecureContext, keys: readonly Buffer[]): void {
  // Cast: the native context behind a SecureContext is internal to Node and absent from its types.
  const native = (context as unknown as { context?: Partial<NativeContext> }).context;
  if (native === undefined || typeof native.enableTicketKeyCallback !== 'function') {
    throw new InvalidOptionError('transportOptions.ticketKeys', `a list of keys needs the ticket-key callback of Node's secure context, which this Node (${process.version}) lacks; give one key`);
  }
  const current = keys[0]!;
  const byName = new Map(keys.map((k, i) => [k.subarray(0, 16).toString('hex'), { key: k, current: i === 0 }]));
  native.enableTicketKeyCallback();
  // Returns [result, hmac, aes, name, iv]: result 1 = use this key, 2 = accepted but renew the
  // ticket under the current key, 0 = unknown key (full handshake).
  native.onticketkeycallback = (name: Buffer, _iv: Buffer, encrypt: boolean): unknown[] => {
    if (encrypt) return [1, current.subarray(16, 32), current.subarray(32, 48), current.subarray(0, 16), randomBytes(16)];
    const found = byName.get(name.toString('hex'));
    if (found === undefined) return [0, UNUSED, UNUSED];
    return [found.current ? 1 : 2, found.key.subarray(16, 32), found.key.subarray(32, 48)];
  };
}

/**
 * The session id context corral gives a TLS listener that sets none: the same for every process
 * and restart of a listener (derived from its name), so that sessions resume across worker
 * processes and restarts, and clients that present a certificate (`requestCert`) can resume at all
 * (OpenSSL refuses a resumption without one: `ERR_SSL_SESSION_ID_CONTEXT_UNINITIALIZED`). @internal
 */
export function sessionIdContextFor(listenerName: string): string {
  return createHash('sha256').update(`corral:${listenerName}`).digest('hex').slice(0, 32);
}
