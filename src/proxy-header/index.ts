/**
 * The PROXY protocol (HAProxy's doc/proxy-protocol.txt, versions 1 and 2): a pure parser for the
 * bytes a connection received so far, and a builder for clients and tests. Self-contained: no
 * sockets, no listener options; the listener decides when to call the parser and whom to trust.
 *
 * @module
 */
export {
  PROXY_HEADER_MAX_V1,
  PROXY_HEADER_MAX_V2,
  PP2_TYPE,
  PP2_SUBTYPE_SSL,
  PP2_CLIENT,
  type ProxyHeader,
  type ProxyEndpoints,
  type ProxyTransport,
  type ProxyInetAddress,
  type ProxyUnixAddress,
  type ProxyTlv,
  type ProxySslInfo,
} from './header.js';
export type { ProxyHeaderParseResult, ProxyHeaderInvalidReason } from './parse-result.js';
export { parseProxyHeader, type ProxyHeaderParseOptions } from './parse.js';
export { buildProxyHeader, type ProxyHeaderInit, type BuildProxyHeaderOptions } from './build.js';
export { encodeSslTlv, type ProxySslTlvInit } from './tlv.js';
