// CPU time of one of this process's threads, from /proc (no FFI): for the dataplane thread's
// share in metrics and `pier top`.
import { readFileSync } from 'node:fs';

/** utime + stime of thread `tid` of this process, in seconds (clock ticks are 1/100 s on Linux); 0 when it cannot be read. */
export function threadCpuSeconds(tid: number): number {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}
