/**
 * The longest PROXY protocol v1 line, CRLF included (`PROXY UNKNOWN` followed by two full IPv6
 * addresses and two 5-digit ports, as the spec counts it). A v1 header that has not ended within
 * this many bytes is invalid.
 */
export const PROXY_HEADER_MAX_V1 = 107;

/** The longest PROXY protocol v2 header: 16 fixed bytes plus a 16-bit length of what follows. */
export const PROXY_HEADER_MAX_V2 = 16 + 0xffff;

/**
 * Which connection a PROXY header describes, from its v1 protocol word or its v2 family and
 * protocol byte: TCP or UDP over IPv4/IPv6, a Unix stream or datagram socket, or `'unknown'`
 * (v1 `UNKNOWN`, v2 `AF_UNSPEC`, and every v2 `LOCAL` command, whose family the spec says to ignore).
 */
export type ProxyTransport = 'tcp4' | 'tcp6' | 'udp4' | 'udp6' | 'unix' | 'unix-dgram' | 'unknown';

/**
 * An IP endpoint. `address` is printed the way Node prints `socket.remoteAddress`: dotted decimal
 * for IPv4; for IPv6 lower-case, zeros compressed, and IPv4-mapped addresses kept mapped
 * (`::ffff:192.0.2.1`), never unwrapped to IPv4.
 */
export interface ProxyInetAddress {
  /** The IP address as text, printed as described above. */
  address: string;
  /** 0 to 65535. */
  port: number;
}

/**
 * A Unix socket endpoint (v2 only). `path` is the text (UTF-8, invalid bytes replaced) before the
 * first NUL of the 108-byte field; `''` for an all-NUL field (an unnamed socket); a Linux
 * abstract-namespace name (field starting with NUL) is `'\0'` followed by the name without the
 * NULs that pad it, as Node spells such paths.
 */
export interface ProxyUnixAddress {
  /** The socket path, decoded as described above. */
  path: string;
}

/** One type-length-value entry of a v2 header (or of its SSL TLV), exactly as sent. */
export interface ProxyTlv {
  /** 0 to 255; see {@link PP2_TYPE}. */
  type: number;
  /** The value bytes (at most 65535). */
  value: Buffer;
}

/**
 * What the `PP2_TYPE_SSL` TLV says about the client's TLS connection to the proxy. The string
 * fields are present when their sub-TLV was sent; `tlvs` lists every sub-TLV in order, unknown
 * ones included.
 */
export interface ProxySslInfo {
  /** Bit field of {@link PP2_CLIENT}: `SSL` (client used TLS), `CERT_CONN`, `CERT_SESS`. */
  client: number;
  /**
   * Certificate verification result, unsigned 32-bit; 0 means verified. (HAProxy also sends 0 when
   * the client presented no certificate, so look at `client` first.)
   */
  verify: number;
  /** `PP2_SUBTYPE_SSL_VERSION` (US-ASCII), e.g. `TLSv1.3`. */
  version?: string;
  /** `PP2_SUBTYPE_SSL_CN` (UTF-8): the client certificate's Common Name. */
  cn?: string;
  /** `PP2_SUBTYPE_SSL_CIPHER` (US-ASCII), e.g. `ECDHE-RSA-AES128-GCM-SHA256`. */
  cipher?: string;
  /** `PP2_SUBTYPE_SSL_SIG_ALG` (US-ASCII), e.g. `RSA-SHA256`. */
  sigAlg?: string;
  /** `PP2_SUBTYPE_SSL_KEY_ALG` (US-ASCII), e.g. `RSA2048`. */
  keyAlg?: string;
  /** Every sub-TLV, in order. */
  tlvs: ProxyTlv[];
}

/** The endpoints of a header; present exactly when the transport has addresses. */
export type ProxyEndpoints =
  | {
      /** The proxy relays a client's connection, whose endpoints follow. */
      command: 'proxy';
      /** The client's connection to the proxy was TCP or UDP, over IPv4 or IPv6. */
      transport: 'tcp4' | 'tcp6' | 'udp4' | 'udp6';
      /** The client's end: where the connection came from. */
      source: ProxyInetAddress;
      /** The end the client connected to (usually the proxy's listening address). */
      destination: ProxyInetAddress;
    }
  | {
      /** The proxy relays a client's connection, whose endpoints follow. */
      command: 'proxy';
      /** The client's connection to the proxy was a Unix stream or datagram socket (v2 only). */
      transport: 'unix' | 'unix-dgram';
      /** The client's end: where the connection came from. */
      source: ProxyUnixAddress;
      /** The end the client connected to (usually the proxy's listening socket). */
      destination: ProxyUnixAddress;
    }
  | {
      /** `'local'`: the proxy opened the connection itself (a health check); use the socket's addresses. */
      command: 'proxy' | 'local';
      /**
       * No endpoints were sent: v1 `UNKNOWN`, v2 `AF_UNSPEC`, or any v2 `LOCAL` header. Use the
       * socket's own addresses.
       */
      transport: 'unknown';
      /** Absent: the header carries no addresses. */
      source?: undefined;
      /** Absent: the header carries no addresses. */
      destination?: undefined;
    };

/**
 * A valid PROXY protocol header as {@link parseProxyHeader} returns it.
 *
 * Narrow on `transport` to reach the addresses: `tcp4`/`tcp6`/`udp4`/`udp6` carry
 * {@link ProxyInetAddress}es, `unix`/`unix-dgram` {@link ProxyUnixAddress}es, `unknown` none.
 * v1 headers are always `command: 'proxy'` with `tcp4`, `tcp6` or `unknown`, and no TLVs.
 *
 * The decoded TLV fields are conveniences over `tlvs`, each present when its TLV was sent (each
 * may appear at most once). `raw`, the TLV values and `ssl.tlvs` values are views of one private
 * copy of the header's bytes, not of the buffer that was parsed.
 */
export type ProxyHeader = ProxyEndpoints & {
  /** The protocol version the header was sent in: 1 (the text line) or 2 (the binary block). */
  version: 1 | 2;
  /** Every v2 TLV in the order sent, unknown and NOOP ones included. Empty for v1. */
  tlvs: ProxyTlv[];
  /** `PP2_TYPE_ALPN`: the application protocol, as bytes (e.g. `h2`). */
  alpn?: Buffer;
  /** `PP2_TYPE_AUTHORITY` (UTF-8): the host name the client asked for, usually its TLS SNI. */
  authority?: string;
  /** `PP2_TYPE_CRC32C`: the checksum, present only after it matched the header. */
  crc32c?: number;
  /** `PP2_TYPE_UNIQUE_ID`: the proxy's opaque connection id, at most 128 bytes. */
  uniqueId?: Buffer;
  /** `PP2_TYPE_SSL`: the client's TLS connection to the proxy. */
  ssl?: ProxySslInfo;
  /** `PP2_TYPE_NETNS` (US-ASCII): the network namespace name. */
  netns?: string;
  /** The header's bytes exactly as received (the v1 line with its CRLF; the whole v2 block). */
  raw: Buffer;
};

/** The TLV types the PROXY protocol v2 spec registers (section 2.2). */
export const PP2_TYPE = {
  /** `PP2_TYPE_ALPN`: the application protocol the client negotiated (opaque bytes). */
  ALPN: 0x01,
  /** `PP2_TYPE_AUTHORITY`: the host name the client asked for (UTF-8), usually its TLS SNI. */
  AUTHORITY: 0x02,
  /** `PP2_TYPE_CRC32C`: a 32-bit CRC32C checksum of the whole header. */
  CRC32C: 0x03,
  /** `PP2_TYPE_NOOP`: padding; its value is ignored. */
  NOOP: 0x04,
  /** `PP2_TYPE_UNIQUE_ID`: the proxy's opaque id of the connection, at most 128 bytes. */
  UNIQUE_ID: 0x05,
  /** `PP2_TYPE_SSL`: the client's TLS connection to the proxy, with sub-TLVs ({@link PP2_SUBTYPE_SSL}). */
  SSL: 0x20,
  /** `PP2_TYPE_NETNS`: the name of the network namespace the connection came from (US-ASCII). */
  NETNS: 0x30,
} as const;

/** The sub-TLV types inside a `PP2_TYPE_SSL` TLV. */
export const PP2_SUBTYPE_SSL = {
  /** `PP2_SUBTYPE_SSL_VERSION`: the TLS version (US-ASCII), e.g. `TLSv1.3`. */
  VERSION: 0x21,
  /** `PP2_SUBTYPE_SSL_CN`: the Common Name of the client certificate (UTF-8). */
  CN: 0x22,
  /** `PP2_SUBTYPE_SSL_CIPHER`: the name of the cipher suite used (US-ASCII). */
  CIPHER: 0x23,
  /** `PP2_SUBTYPE_SSL_SIG_ALG`: the algorithm that signed the certificate the proxy presented (US-ASCII). */
  SIG_ALG: 0x24,
  /** `PP2_SUBTYPE_SSL_KEY_ALG`: the key algorithm of the certificate the proxy presented (US-ASCII), e.g. `RSA2048`. */
  KEY_ALG: 0x25,
} as const;

/** The bits of {@link ProxySslInfo.client}. */
export const PP2_CLIENT = {
  /** The client connected over SSL/TLS. */
  SSL: 0x01,
  /** The client presented a certificate on this connection. */
  CERT_CONN: 0x02,
  /** The client presented a certificate at least once in this TLS session. */
  CERT_SESS: 0x04,
} as const;
