/**
 * The gateway's logs: pino, one JSON object per line on stdout, with the node id and the process
 * id in every line and a child logger per module (`{"module":"admin",…}`), so the lines of the
 * primary and of each worker process can be told apart when they share one stdout.
 */
import { type LevelWithSilent, type Logger, pino } from 'pino';

/** The levels `--log-level` accepts, most severe first. */
export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** Whether `value` is one of {@link LOG_LEVELS}. */
export function isLogLevel(value: string): value is LevelWithSilent {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

/**
 * The root logger of one gateway process: JSON lines on stdout at `level`, with ISO timestamps
 * and `node` and `pid` in every line. Written synchronously, so nothing is lost on `process.exit`.
 */
export function createLogger(options: { level: LevelWithSilent; node: string }): Logger {
  return pino(
    {
      level: options.level,
      base: { node: options.node, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    // Synchronous: log lines and the CLI's own output stay in order, and survive process.exit.
    pino.destination({ dest: 1, sync: true }),
  );
}

/** The logger of one module (`cli`, `admin`, `gateway`, `broker`, …): every line carries `module`. */
export function moduleLogger(root: Logger, module: string): Logger {
  return root.child({ module });
}
