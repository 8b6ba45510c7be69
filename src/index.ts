/**
 * corral: Erlang's Ranch model for Node.js. Named listeners with an acceptor pool that admits
 * connections under `maxConnections` and `maxHandshakes`, supervised protocol handlers, pluggable
 * transports and a drain that closes what it must and keeps what it promised.
 *
 * @packageDocumentation
 */
export { startListener, getListener, stopListener, listeners } from './registry.js';
export type { ListenerOptions, ListenerSettings, ProtocolSettings } from './options.js';
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
} from './listener.js';
export type { Distribution } from './workers/distribution.js';
export type { WorkerInfo } from './workers/ipc.js';
export { currentWorker, type WorkerIdentity } from './workers/current-worker.js';
export type { WorkerRestartOptions } from './options.js';
export { currentConnection, type ConnectionContext } from './connection-context.js';
export type { AcceptorPoolStats, RejectReason, HandshakeFailure, Overflow } from './acceptor-pool/acceptor-pool.js';
export type { SilentCloseReason } from './acceptor-pool/silent-sockets.js';
export type { AdmissionPolicy } from './acceptor-pool/wait-queue.js';
export { sourceKey, type SourcePrefix } from './limits/source-key.js';
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
export type { Connection, ConnectionInfo, ConnectionMetaValue } from './connection.js';
export type { RestartStrategy } from './supervisor.js';
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
} from './transport.js';
export { TcpTransport, supportsReusePort, type TcpTransportOptions } from './transports/tcp.js';
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
