// What the benchmarks share: command-line numbers, a thread's CPU time, medians, the machine.
import { readFileSync } from 'node:fs';
import { cpus, release } from 'node:os';

export function option(name: string, dflt: number): number {
  const argv = process.argv.slice(2);
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
}

/** utime + stime of one thread in seconds, or undefined once it is gone. */
export function threadCpu(pid: number, tid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ
  } catch {
    return undefined;
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const k = s.length >> 1;
  return s.length % 2 ? s[k]! : (s[k - 1]! + s[k]!) / 2;
}

export function machine(): { cpus: number; cpu: string | undefined; kernel: string; node: string } {
  return { cpus: cpus().length, cpu: cpus()[0]?.model, kernel: release(), node: process.version };
}
