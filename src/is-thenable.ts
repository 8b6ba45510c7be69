/** Whether `v` is a promise (or any thenable): how a hook's or a transport's result is told apart from a plain value. @internal */
export function isThenable<T = unknown>(v: unknown): v is PromiseLike<T> {
  return typeof v === 'object' && v !== null && typeof (v as PromiseLike<T>).then === 'function';
}
