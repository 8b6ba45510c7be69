/** Whether this runtime can listen with `SO_REUSEPORT`. */
export function supportsReusePort(): boolean {
  if (process.platform !== 'linux') return false;
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  return major > 22 || (major === 22 && minor >= 12);
}
