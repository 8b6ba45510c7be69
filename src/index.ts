/**
 * corral: Erlang's Ranch model for Node.js. Named listeners with an acceptor pool that admits
 * connections under `maxConnections` and `maxHandshakes`, supervised protocol handlers, pluggable
 * transports and a drain that closes what it must and keeps what it promised.
 *
 * @packageDocumentation
 */
export { startListener, getListener, stopListener, listeners } from './registry.js';
export type {
  AdmissionPolicy,
  AlarmEvent,
  ConnectionAlarm,
  Distribution,
  ListenerOptions,
  ListenerSettings,
  Overflow,
  ProtocolSettings,
  RestartStrategy,
  WorkerRestartOptions,
} from './options.js';
export type {
  Listener,
  ListenerStatus,
  ListenerInfo,
  ListenerEvents,
  DrainResult,
  ConnectionCountOp,
  HandlerCrashEvent,
  HandshakeErrorEvent,
  RejectEvent,
  ListenerRole,
  WorkerEvent,
  WorkerInfo,
  WorkerAnswer,
  ListenerTotals,
} from './listener.js';
export { currentWorker, type WorkerIdentity } from './workers/current-worker.js';
export { currentConnection, type ConnectionContext } from './current-connection.js';
export type { AcceptorPoolStats, HandshakeFailure, RejectReason } from './acceptor-pool/acceptor-pool-stats.js';
export type { SilentCloseReason } from './acceptor-pool/silent-sockets.js';
export { sourceKey, type SourcePrefix } from './limits/source-key.js';
export type { AccessRule } from './limits/access-rules.js';
export type { RateLimit } from './limits/token-bucket.js';
export type {
  ProtocolHandler,
  ProtocolHandlerClass,
  ProtocolHandlerFactory,
  Protocol,
  CloseReason,
  ShutdownRequest,
  HandlerHook,
  CrashInfo,
} from './protocol.js';
export type { Connection, ConnectionInfo, ConnectionMetaValue, ConnectionProxy } from './connection.js';
export { RestartIntensity } from './restart-intensity.js';
export type {
  Transport,
  TransportServer,
  TransportConnection,
  TransportListenHandlers,
  AcceptedSocket,
  SocketAddress,
  TlsInfo,
  SharedListenHandle,
  DetachedSocket,
} from './transport.js';
export { TcpTransport } from './transports/tcp.js';
export type { TcpTransportOptions } from './transports/tcp-options.js';
export { supportsReusePort } from './transports/reuse-port.js';
export { TlsTransport, type TlsTransportOptions, type SniContextOptions } from './transports/tls.js';
export {
  lineFraming,
  lengthPrefixedFraming,
  rawFraming,
  type Framer,
  type Framing,
  type FramingOption,
  type LineFramingOptions,
  type LengthPrefixedFramingOptions,
} from './framing/index.js';
export { channels, type TypedChannel } from './diagnostics.js';
export type {
  ListenerStartMessage,
  ListenerStopMessage,
  ConnectionOpenMessage,
  ConnectionCloseMessage,
  HandshakeErrorMessage,
  HandlerCrashMessage,
  OverloadRejectMessage,
} from './diagnostics.js';
export {
  CorralError,
  InvalidOptionError,
  FrameTooLargeError,
  ListenError,
  type CorralErrorCode,
} from './errors.js';
export {
  parseProxyHeader,
  buildProxyHeader,
  encodeSslTlv,
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
  type ProxyHeaderParseResult,
  type ProxyHeaderInvalidReason,
  type ProxyHeaderParseOptions,
  type ProxyHeaderInit,
  type BuildProxyHeaderOptions,
  type ProxySslTlvInit,
} from './proxy-header/index.js';
