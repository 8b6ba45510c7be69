/**
 * What the connecting load clients (bench/lib/load-client.ts, bench/lib/steady-client.ts) have in
 * common: the base of their configs, the cap on connections per process, and their source addresses.
 */

/**
 * Connections one client process is given at most: under the 20,000-descriptor limit per process,
 * with room to spare.
 */
export const MAX_PER_PROCESS = 15_000;

/** The config fields every connecting load client process takes. */
export interface ConnectClientConfig {
  port: number;
  host: string;
  tls: boolean;
  /** Connections this process opens (and holds). */
  count: number;
  /** Connections started per second by this process. */
  rate: number;
  /** Most connects in flight at once (what a connect includes is the client's to say). */
  inFlight: number;
  /** Second octet of this process's source addresses (127.<net>.x.y), distinct per process. */
  net: number;
  /** Connections per source address. */
  perAddress: number;
  /** Give up one attempt after this many ms. */
  connectTimeout: number;
}

/**
 * Source address number `index` of the range 127.<net>.x.y: 127.<net>.1.1, 127.<net>.1.2, …,
 * 250 per third octet. Spreading connections over addresses keeps the ephemeral port range from
 * being the limit.
 */
export function sourceAddress(net: number, index: number): string {
  return `127.${net}.${Math.floor(index / 250) + 1}.${(index % 250) + 1}`;
}
