/**
 * How the benchmarks start their child processes (servers and load clients): `node --import tsx
 * <script>`, optionally pinned to CPUs with `taskset`.
 */
import { execFileSync } from 'node:child_process';

/** True when `taskset` (util-linux) can be run here. */
export function hasTaskset(): boolean {
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * The command that runs `node --import tsx <script>`, pinned with `taskset -c <cpus>` when asked.
 * `taskset` execs node, so the child's pid is node's and an IPC channel passes through.
 */
export function nodeCommand(script: string, cpus?: string): { command: string; args: string[] } {
  const nodeArgs = ['--import', 'tsx', script];
  return cpus === undefined ? { command: process.execPath, args: nodeArgs } : { command: 'taskset', args: ['-c', cpus, process.execPath, ...nodeArgs] };
}
