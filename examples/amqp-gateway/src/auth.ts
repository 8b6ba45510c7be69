import { createHmac, timingSafeEqual } from 'node:crypto';
import type { TlsInfo } from 'corral';
import type { Hello } from './device-protocol.js';

/**
 * Decides whether a hello may open a session, and for which device id. Return the device id to
 * accept (normally `hello.device`; with mTLS it may come from the client certificate), or
 * `undefined` to refuse. May be async (a lookup in a device registry).
 */
export type Authenticate = (hello: Hello, tls: TlsInfo | null) => string | undefined | Promise<string | undefined>;

/** The token a device proves itself with: hex HMAC-SHA256 of its id under a gateway secret. */
export function deviceToken(secret: string, device: string): string {
  return createHmac('sha256', secret).update(device).digest('hex');
}

/**
 * The default authentication: `token` must be the device's HMAC token under the current secret or,
 * during a rotation, under the previous one. Compared in constant time.
 */
export function hmacAuthenticate(secrets: { current: string; previous?: string | undefined }): Authenticate {
  const keys = [secrets.current, ...(secrets.previous ? [secrets.previous] : [])];
  return (hello) => {
    const token = hello.token;
    if (typeof token !== 'string' || !/^[0-9a-f]{64}$/.test(token)) return undefined;
    const given = Buffer.from(token, 'hex');
    for (const key of keys) {
      if (timingSafeEqual(given, Buffer.from(deviceToken(key, hello.device), 'hex'))) return hello.device;
    }
    return undefined;
  };
}
