import { PROXY_HEADER_MAX_V1, type ProxyHeader, type ProxyInetAddress } from './header.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from './ip-address.js';
import { incomplete, invalid, type ProxyHeaderInvalidReason, type ProxyHeaderParseResult } from './parse-result.js';

const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;

/** `PROXY`, the v1 signature. */
export const V1_SIGNATURE = Buffer.from('PROXY', 'latin1');

const PROTOCOLS = ['TCP4', 'TCP6', 'UNKNOWN'] as const;

/** One space-or-CR-terminated field of a TCP4/TCP6 line. */
interface FieldRule {
  name: string;
  reason: ProxyHeaderInvalidReason;
  maxLength: number;
  allowed: (c: number) => boolean;
  /** Whether the text so far can still become a valid field (checked before the field ends). */
  canGrow?: (text: string) => boolean;
}

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isHex = (c: number): boolean => isDigit(c) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);

/** A number with no leading zero whose value, however it grows, is at most `max`. */
function numberCanGrow(text: string, max: number): boolean {
  return text === '' || ((text === '0' || text[0] !== '0') && Number(text) <= max);
}

const IPV4_FIELD = {
  reason: 'bad_address',
  maxLength: 15,
  allowed: (c: number) => isDigit(c) || c === 0x2e,
  canGrow: (text: string) => {
    const parts = text.split('.');
    return parts.length <= 4 && parts.every((part, i) => (i < parts.length - 1 ? part !== '' : true) && numberCanGrow(part, 255));
  },
} as const;
// 45 = ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255, the longest IPv6 text.
const IPV6_FIELD = { reason: 'bad_address', maxLength: 45, allowed: (c: number) => isHex(c) || c === 0x3a || c === 0x2e } as const;
const PORT_FIELD = { reason: 'bad_port', maxLength: 5, allowed: isDigit, canGrow: (text: string) => numberCanGrow(text, 0xffff) } as const;

function show(bytes: Uint8Array): string {
  return JSON.stringify(Buffer.from(bytes).toString('latin1'));
}

function parsePort(text: Uint8Array): number | undefined {
  if (text.length === 0 || text.length > 5 || (text.length > 1 && text[0] === 0x30)) return undefined;
  let value = 0;
  for (const c of text) {
    if (!isDigit(c)) return undefined;
    value = value * 10 + (c - 0x30);
  }
  return value <= 0xffff ? value : undefined;
}

/**
 * Reads a v1 line from `head`, which starts with `PROXY`. The line is checked left to right as its
 * bytes arrive, so each answer is decided by the first byte that settles it: the same bytes give
 * the same answer however many more follow.
 */
export function parseV1(head: Buffer): ProxyHeaderParseResult {
  let at = V1_SIGNATURE.length;

  /** The answer when byte `i` is needed but not there: not yet received, or past the limit. */
  const missing = (i: number): ProxyHeaderParseResult =>
    i >= PROXY_HEADER_MAX_V1
      ? invalid('too_long', `no CRLF within the ${PROXY_HEADER_MAX_V1} bytes a v1 line may take`)
      : incomplete(PROXY_HEADER_MAX_V1);
  const has = (i: number): boolean => i < head.length && i < PROXY_HEADER_MAX_V1;

  /** Checks the CRLF starting at `at` (the CR), and builds the header if it is there. */
  const crlf = (build: (length: number) => ProxyHeaderParseResult): ProxyHeaderParseResult => {
    if (!has(at + 1)) return missing(at + 1);
    if (head[at + 1] !== LF) return invalid('bad_line', `CR at offset ${at} not followed by LF`);
    return build(at + 2);
  };

  if (!has(at)) return missing(at);
  if (head[at] !== SP) return invalid('bad_line', `expected a space after PROXY at offset ${at}, got ${show(head.subarray(at, at + 1))}`);
  at++;

  // The protocol word.
  const wordStart = at;
  let word = '';
  for (;;) {
    if (!has(at)) return missing(at);
    const c = head[at]!;
    if (c === SP || c === CR) break;
    if (c === LF) return invalid('bad_line', `LF without CR at offset ${at}`);
    word += String.fromCharCode(c);
    if (!PROTOCOLS.some((p) => p.startsWith(word))) {
      return invalid('bad_family', `protocol ${show(head.subarray(wordStart, at + 1))} is not TCP4, TCP6 or UNKNOWN`);
    }
    at++;
  }
  if (word === '') return invalid('bad_line', `empty protocol at offset ${wordStart}`);
  if (word !== 'TCP4' && word !== 'TCP6' && word !== 'UNKNOWN') {
    return invalid('bad_family', `protocol ${show(head.subarray(wordStart, at))} is not TCP4, TCP6 or UNKNOWN`);
  }

  const complete = (length: number, header: Omit<ProxyHeader, 'raw' | 'version' | 'tlvs'>): ProxyHeaderParseResult => ({
    status: 'complete',
    length,
    header: { ...header, version: 1, tlvs: [], raw: Buffer.from(head.subarray(0, length)) } as ProxyHeader,
  });

  if (word === 'UNKNOWN') {
    // "the receiver must ignore anything presented before the CRLF": any bytes but a lone CR or LF.
    for (;;) {
      if (!has(at)) return missing(at);
      if (head[at] === CR) break;
      if (head[at] === LF) return invalid('bad_line', `LF without CR at offset ${at}`);
      at++;
    }
    return crlf((length) => complete(length, { command: 'proxy', transport: 'unknown' }));
  }
  if (head[at] === CR) return invalid('bad_line', `${word} line ends at offset ${at} without addresses and ports`);
  at++;

  const tcp4 = word === 'TCP4';
  const ip = tcp4 ? IPV4_FIELD : IPV6_FIELD;
  const parseIp = tcp4 ? parseIPv4 : parseIPv6;
  const formatIp = tcp4 ? formatIPv4 : formatIPv6;
  const fields: FieldRule[] = [
    { name: 'source address', ...ip },
    { name: 'destination address', ...ip },
    { name: 'source port', ...PORT_FIELD },
    { name: 'destination port', ...PORT_FIELD },
  ];
  const values: (string | number)[] = [];
  for (const [index, field] of fields.entries()) {
    const terminator = index === fields.length - 1 ? CR : SP;
    const start = at;
    for (;;) {
      if (!has(at)) return missing(at);
      const c = head[at]!;
      if (c === terminator) break;
      if (c === SP || c === CR || c === LF) {
        const got = c === SP ? 'a space' : c === CR ? 'CR' : 'LF';
        return invalid('bad_line', `${got} at offset ${at} where the ${field.name} or its ${terminator === SP ? 'space' : 'CRLF'} belongs`);
      }
      if (!field.allowed(c) || at - start >= field.maxLength || (field.canGrow && !field.canGrow(head.toString('latin1', start, at + 1)))) {
        return invalid(field.reason, `${field.name} ${show(head.subarray(start, at + 1))}... is not valid for ${word}`);
      }
      at++;
    }
    if (at === start) return invalid('bad_line', `empty ${field.name} at offset ${at}`);
    const text = head.subarray(start, at);
    if (field.reason === 'bad_port') {
      const port = parsePort(text);
      if (port === undefined) return invalid('bad_port', `${field.name} ${show(text)} is not 0-65535 without leading zeros`);
      values.push(port);
    } else {
      const bytes = parseIp(text);
      if (!bytes) return invalid('bad_address', `${field.name} ${show(text)} is not valid for ${word}`);
      values.push(formatIp(bytes));
    }
    if (index < fields.length - 1) at++;
  }

  const [srcAddress, dstAddress, srcPort, dstPort] = values as [string, string, number, number];
  const source: ProxyInetAddress = { address: srcAddress, port: srcPort };
  const destination: ProxyInetAddress = { address: dstAddress, port: dstPort };
  return crlf((length) => complete(length, { command: 'proxy', transport: tcp4 ? 'tcp4' : 'tcp6', source, destination }));
}
