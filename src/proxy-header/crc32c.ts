/** The reflected Castagnoli polynomial 0x1EDC6F41 (RFC 4960 appendix B, iSCSI, SSE4.2 `crc32`). */
const CASTAGNOLI_REFLECTED = 0x82f63b78;

const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ CASTAGNOLI_REFLECTED : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * CRC32c (Castagnoli) of `data`, as the PROXY protocol v2 `PP2_TYPE_CRC32C` TLV carries it:
 * an unsigned 32-bit integer, `0xE3069283` for the ASCII bytes `123456789`.
 *
 * Pass the result of a previous call as `previous` to continue over more bytes:
 * `crc32c(b, crc32c(a))` equals `crc32c(Buffer.concat([a, b]))`. This is not `zlib.crc32`,
 * which uses the IEEE polynomial.
 */
export function crc32c(data: Uint8Array, previous = 0): number {
  let crc = ~previous;
  for (let i = 0; i < data.length; i++) crc = TABLE[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}
