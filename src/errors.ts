/**
 * Stable error codes corral uses. Match on `error.code`, never on the message.
 */
export type CorralErrorCode =
  | 'CORRAL_INVALID_OPTION'
  | 'CORRAL_UNKNOWN_OPTION'
  | 'CORRAL_LISTENER_EXISTS'
  | 'CORRAL_LISTENER_NOT_FOUND'
  | 'CORRAL_LISTENER_STOPPED'
  | 'CORRAL_ADDRESS_IN_USE'
  | 'CORRAL_ADDRESS_ACCESS'
  | 'CORRAL_LISTEN_FAILED'
  | 'CORRAL_HANDSHAKE_TIMEOUT'
  | 'CORRAL_HANDSHAKE_FAILED'
  | 'CORRAL_FRAME_TOO_LARGE'
  | 'CORRAL_SEND_BUFFER_FULL'
  | 'CORRAL_WAIT_TIMEOUT'
  | 'CORRAL_UNSUPPORTED'
  | 'CORRAL_WORKERS_FAILED';

/**
 * What corral reports about listeners, their options, sockets and connections is a `CorralError`
 * with a stable `code`. A method called with an argument of the wrong type or out of range
 * (`drain({ timeout })`, `waitForConnections`, `setIdleTimeout`, `answer`) throws or rejects with a
 * plain `TypeError` or `RangeError` instead, as Node's own APIs do.
 */
export class CorralError extends Error {
  /** Stable, matchable code. */
  readonly code: CorralErrorCode;

  constructor(code: CorralErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CorralError';
    this.code = code;
  }
}

/**
 * A listener option is missing, of the wrong type or out of range. `option` names it.
 */
export class InvalidOptionError extends CorralError {
  /** Dotted path of the offending option, e.g. `transportOptions.port`. */
  readonly option: string;

  constructor(option: string, message: string, code: 'CORRAL_INVALID_OPTION' | 'CORRAL_UNKNOWN_OPTION' = 'CORRAL_INVALID_OPTION') {
    super(code, `corral: option \`${option}\` ${message}`);
    this.name = 'InvalidOptionError';
    this.option = option;
  }
}

/**
 * A frame exceeded the framing's `maxLength`. Handed to `ProtocolHandler.onFrameError`;
 * the connection closes after a bounded flush.
 */
export class FrameTooLargeError extends CorralError {
  /** The configured limit, in bytes. */
  readonly maxLength: number;

  constructor(maxLength: number, detail: string) {
    super('CORRAL_FRAME_TOO_LARGE', `frame exceeds maxLength of ${maxLength} bytes (${detail})`);
    this.name = 'FrameTooLargeError';
    this.maxLength = maxLength;
  }
}

/**
 * The listening socket could not be opened. `address` says which address was asked for.
 */
export class ListenError extends CorralError {
  /** The address that could not be bound, e.g. `127.0.0.1:8443` or `/tmp/corral.sock`. */
  readonly address: string;
  /** The system error code (`EADDRINUSE`, `EACCES`, ...), when there was one. */
  readonly syscallCode: string | undefined;

  constructor(address: string, cause: unknown) {
    const sys = (cause as { code?: unknown } | null)?.code;
    const syscallCode = typeof sys === 'string' ? sys : undefined;
    const code =
      syscallCode === 'EADDRINUSE'
        ? 'CORRAL_ADDRESS_IN_USE'
        : syscallCode === 'EACCES' || syscallCode === 'EPERM'
          ? 'CORRAL_ADDRESS_ACCESS'
          : 'CORRAL_LISTEN_FAILED';
    const why =
      code === 'CORRAL_ADDRESS_IN_USE'
        ? 'address already in use'
        : code === 'CORRAL_ADDRESS_ACCESS'
          ? 'permission denied'
          : cause instanceof Error
            ? cause.message
            : String(cause);
    super(code, `corral: cannot listen on ${address}: ${why}${syscallCode ? ` (${syscallCode})` : ''}`, { cause });
    this.name = 'ListenError';
    this.address = address;
    this.syscallCode = syscallCode;
  }
}
