/**
 * IP address text as the PROXY protocol writes it, and as Node prints it. Kept here rather than
 * borrowed from `node:net` (which only `transports/` imports): `net.isIP` accepts what the
 * protocol forbids (IPv6 zone ids) and Node has no public bytes-to-text call.
 */

const DOT = 0x2e;
const COLON = 0x3a;

function digit(c: number): number {
  return c >= 0x30 && c <= 0x39 ? c - 0x30 : -1;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/**
 * Reads dotted-decimal IPv4 text (`text[start, end)`) into `out[at..at+4)`: exactly four numbers
 * 0-255, no leading zeros (the spec forbids them to avoid octal confusion), no sign, no spaces.
 * Returns false, leaving `out` partly written, when the text is not that.
 */
function readIPv4(text: Uint8Array, start: number, end: number, out: Uint8Array, at: number): boolean {
  let part = 0;
  let i = start;
  for (;;) {
    const first = i;
    let value = 0;
    while (i < end && digit(text[i]!) >= 0) {
      value = value * 10 + digit(text[i]!);
      i++;
      if (i - first > 3) return false;
    }
    const len = i - first;
    if (len === 0 || value > 255 || (len > 1 && text[first] === 0x30)) return false;
    out[at + part] = value;
    part++;
    if (part === 4) return i === end;
    if (i >= end || text[i] !== DOT) return false;
    i++;
  }
}

/** Parses strict dotted-decimal IPv4 text (see {@link readIPv4}) into 4 bytes, or undefined. */
export function parseIPv4(text: Uint8Array): Uint8Array | undefined {
  const out = new Uint8Array(4);
  return readIPv4(text, 0, text.length, out, 0) ? out : undefined;
}

/**
 * Parses IPv6 text into 16 bytes, or undefined: groups of 1 to 4 hex digits (either case) separated
 * by single colons, at most one `::` standing for one or more zero groups, optionally ending in a
 * dotted IPv4 address for the last 32 bits (as `inet_ntop` writes `::ffff:192.0.2.1`). No zone id,
 * no brackets, exactly 128 bits.
 */
export function parseIPv6(text: Uint8Array): Uint8Array | undefined {
  const out = new Uint8Array(16);
  const end = text.length;
  let i = 0;
  let groups = 0; // 16-bit groups written so far
  let gap = -1; // group index where `::` stands
  if (end >= 2 && text[0] === COLON && text[1] === COLON) {
    gap = 0;
    i = 2;
    if (i === end) return out;
  } else if (end > 0 && text[0] === COLON) {
    return undefined;
  }
  for (;;) {
    // One group (or a trailing IPv4 address) starts at i.
    const first = i;
    let value = 0;
    while (i < end && hexDigit(text[i]!) >= 0 && i - first < 5) {
      value = value * 16 + hexDigit(text[i]!);
      i++;
    }
    if (i < end && text[i] === DOT) {
      if (groups > 6) return undefined;
      if (!readIPv4(text, first, end, out, groups * 2)) return undefined;
      groups += 2;
      break;
    }
    const len = i - first;
    if (len === 0 || len > 4 || groups === 8) return undefined;
    out[groups * 2] = value >> 8;
    out[groups * 2 + 1] = value & 0xff;
    groups++;
    if (i === end) break;
    if (text[i] !== COLON) return undefined;
    i++;
    if (i < end && text[i] === COLON) {
      if (gap !== -1) return undefined;
      gap = groups;
      i++;
      if (i === end) break;
    } else if (i === end) {
      return undefined;
    }
  }
  if (gap === -1) return groups === 8 ? out : undefined;
  if (groups > 7) return undefined;
  // Move the groups after the gap to the end; the gap itself is zeros.
  const tail = (groups - gap) * 2;
  out.copyWithin(16 - tail, gap * 2, groups * 2);
  out.fill(0, gap * 2, 16 - tail);
  return out;
}

/** Dotted-decimal text of the 4 bytes at `bytes[at..at+4)`. */
export function formatIPv4(bytes: Uint8Array, at = 0): string {
  return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
}

/**
 * Text of the 16 bytes at `bytes[at..at+16)`, the way Node prints socket addresses (libuv's
 * `inet_ntop`): lower-case hex without leading zeros, the first longest run of two or more zero
 * groups written `::`, and `::ffff:a.b.c.d` / `::a.b.c.d` in dotted form for IPv4-mapped and
 * IPv4-compatible addresses.
 */
export function formatIPv6(bytes: Uint8Array, at = 0): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((bytes[at + i * 2]! << 8) | bytes[at + i * 2 + 1]!);
  let bestBase = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestBase = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestBase = -1;
  let text = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase !== -1 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) text += ':';
      continue;
    }
    if (i !== 0) text += ':';
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 5 && words[5] === 0xffff))) {
      return text + formatIPv4(bytes, at + 12);
    }
    text += words[i]!.toString(16);
  }
  if (bestBase !== -1 && bestBase + bestLen === 8) text += ':';
  return text;
}
