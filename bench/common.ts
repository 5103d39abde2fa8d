// What the benchmarks share: command-line numbers, a thread's CPU time, medians, the machine.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { iperf, type TestDaemon } from '../test/helpers.ts';

export function option(name: string, dflt: number): number {
  const argv = process.argv.slice(2);
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
}

/** Busy and total jiffies of the whole machine so far (/proc/stat; busy: all but idle and iowait). */
export function machineTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]!, total };
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

export type Dir = 'a->b' | 'b->a';

/**
 * Two containers on tap ports of a new bridge br0 of daemon `d` (started), 10.9.0.1 in `a` and
 * 10.9.0.2 in `b`, with `opts` on both ports; one ping to resolve. Returns the dataplane thread.
 */
export function tapPair(d: TestDaemon, a: string, b: string, opts: string[] = []): { pid: number; tid: number } {
  d.ok('add-br', 'br0');
  d.ok('add-port', 'br0', 'pa', 'type=tap', `netns=${a}`, 'ip=10.9.0.1/24', 'ifname=eth0', ...opts);
  d.ok('add-port', 'br0', 'pb', 'type=tap', `netns=${b}`, 'ip=10.9.0.2/24', 'ifname=eth0', ...opts);
  const show = d.json('show');
  spawnSync('ip', ['netns', 'exec', a, 'ping', '-c', '1', '-W', '2', '10.9.0.2']);
  return { pid: show.pid as number, tid: show.dataplane.tid as number };
}

/** One iperf3 TCP stream between the tapPair containers in direction `dir`, and the dataplane thread's share of a core meanwhile. */
export async function tapPairTcp(dp: { pid: number; tid: number }, a: string, b: string, dir: Dir, seconds: number): Promise<{ gbps: number; retransmits: number; cpu: number }> {
  const c0 = threadCpu(dp.pid, dp.tid) ?? 0;
  const t0 = performance.now();
  const r = await iperf(b, a, '10.9.0.2', { reverse: dir === 'b->a', seconds });
  const cpu = ((threadCpu(dp.pid, dp.tid) ?? c0) - c0) / ((performance.now() - t0) / 1000);
  return { gbps: r.gbps, retransmits: r.retransmits, cpu };
}

/** The fields every results file starts with. */
export function resultHead(benchmark: string, rounds: number, secondsPerRun: number): { benchmark: string; date: string; machine: ReturnType<typeof machine>; rounds: number; secondsPerRun: number } {
  return { benchmark, date: new Date().toISOString(), machine: machine(), rounds, secondsPerRun };
}
