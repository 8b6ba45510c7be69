/**
 * Errors that escape to the process (`uncaughtException`, `unhandledRejection`) while a test runs:
 * the returned array fills as they come; the listeners go when `cleanups` are run.
 */
export function watchProcess(cleanups: (() => void)[]): unknown[] {
  const escaped: unknown[] = [];
  const onError = (err: unknown): void => {
    escaped.push(err);
  };
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  cleanups.push(() => {
    process.off('uncaughtException', onError);
    process.off('unhandledRejection', onError);
  });
  return escaped;
}
