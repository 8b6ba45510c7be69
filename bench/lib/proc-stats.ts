import { readdirSync, readFileSync } from 'node:fs';

/** CPU seconds and resident memory of a process and all its descendants, read from /proc. */
export interface TreeStats {
  pids: number[];
  cpuSeconds: number;
  rssKiB: number;
}

const TICKS = 100; // USER_HZ on Linux

function stat(pid: number): { ppid: number; cpu: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // fields after the name: state(0) ppid(1) ... utime(11) stime(12)
    return { ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / TICKS };
  } catch {
    return undefined;
  }
}

function rss(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Stats of `root` and every process below it. */
export function treeStats(root: number): TreeStats {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const s = stat(pid);
    if (s) parent.set(pid, s.ppid);
  }
  const pids = [root];
  for (let i = 0; i < pids.length; i++) for (const [pid, pp] of parent) if (pp === pids[i]) pids.push(pid);
  let cpu = 0;
  let mem = 0;
  for (const pid of pids) {
    cpu += stat(pid)?.cpu ?? 0;
    mem += rss(pid);
  }
  return { pids, cpuSeconds: cpu, rssKiB: mem };
}

/** The pid of the first process whose command name (`/proc/<pid>/comm`) is `name`, if any. */
export function findProcess(name: string): number | undefined {
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === name) return pid;
    } catch {
      // gone
    }
  }
  return undefined;
}

/**
 * CPU seconds used so far by the RabbitMQ of this machine (its Erlang VM, `beam.smp`), or
 * undefined if it does not run here (a remote AMQP_URL): what the broker spends is part of what a
 * gateway costs, on the same cores in these benchmarks.
 */
export function rabbitCpuSeconds(): number | undefined {
  const pid = findProcess('beam.smp');
  return pid === undefined ? undefined : stat(pid)?.cpu;
}
