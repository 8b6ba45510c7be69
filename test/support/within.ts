/**
 * A deadline on one promise, for tests: `promise`'s outcome, or a rejection
 * "`what`: not within `ms` ms" if it has not settled by then. The timer is cleared either way.
 * `what` may be a function, read when the deadline passes (for counts that change meanwhile).
 */
export async function within<T>(promise: Promise<T>, ms: number, what: string | (() => string)): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${typeof what === 'function' ? what() : what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
