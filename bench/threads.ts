// Dataplane threads: two independent port pairs (two bridges, two tap pairs, two iperf3 TCP
// streams at once) through one dataplane thread and through two, same run, tap offloads on and
// off; also one pair alone, and one pair split across two threads (the cost of an engine link).
// Records the aggregate, each thread's CPU and the whole machine's, so the scaling can be read
// against what limits it. Method: bench/threads.md.
// Usage (root): node --import tsx bench/threads.ts [--rounds N] [--seconds T]
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { machine, machineTicks, median, option, resultHead, threadCpu } from './common.ts';
import { delNetns, makeNetns, ROOT, TestDaemon, waitFor } from '../test/helpers.ts';

const ROUNDS = option('--rounds', 3);
const T = option('--seconds', 8);

type Mode = '1 thread, 2 pairs' | '2 threads, 2 pairs' | '1 thread, 1 pair' | '2 threads, 1 pair across';
const MODES: { mode: Mode; threads: number; pairs: number; place: (pair: number, end: number) => number }[] = [
  { mode: '1 thread, 1 pair', threads: 1, pairs: 1, place: () => 0 },
  { mode: '1 thread, 2 pairs', threads: 1, pairs: 2, place: () => 0 },
  { mode: '2 threads, 2 pairs', threads: 2, pairs: 2, place: (pair) => pair },
  { mode: '2 threads, 1 pair across', threads: 2, pairs: 1, place: (_pair, end) => end },
];

interface Sample { gbps: number; pairs: number[]; threadCpu: number[]; machineCpu: number }
const samples: Record<string, Sample[]> = {};


/** iperf3 -s in `ns`, up until it listens; killed by the caller. */
async function server(ns: string): Promise<ReturnType<typeof spawn>> {
  const s = spawn('ip', ['netns', 'exec', ns, 'iperf3', '-s', '-1'], { stdio: 'ignore' });
  await waitFor(() => {
    if (s.exitCode !== null) throw new Error(`iperf3 -s in ${ns} exited (${s.exitCode})`);
    return spawnSync('ip', ['netns', 'exec', ns, 'ss', '-Htln', 'sport = :5201'], { encoding: 'utf8' }).stdout.includes('5201');
  }, 10_000, `iperf3 -s in ${ns} to listen`);
  return s;
}

/** One iperf3 client run, concurrent with others: Gbit/s received. */
function client(ns: string, addr: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = spawn('ip', ['netns', 'exec', ns, 'iperf3', '-c', addr, '-t', String(T), '-J'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.once('exit', (code) => {
      try {
        if (code !== 0) throw new Error(`iperf3 -c ${addr} in ${ns}: exit ${code}: ${out.slice(0, 300)}`);
        resolve(JSON.parse(out).end.sum_received.bits_per_second / 1e9);
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  });
}

async function run(m: (typeof MODES)[number], offloads: boolean): Promise<Sample> {
  const d = new TestDaemon();
  const ns = makeNetns(2 * m.pairs);
  try {
    await d.start(['--dataplane-threads', String(m.threads)]);
    for (let p = 0; p < m.pairs; p++) {
      d.ok('add-br', `br${p}`);
      for (let e = 0; e < 2; e++) {
        d.ok('add-port', `br${p}`, `p${p}${e}`, 'type=tap', `netns=${ns[2 * p + e]}`, `ip=10.9${p}.0.${e + 1}/24`, 'ifname=eth0',
          `thread=${m.place(p, e)}`, ...(offloads ? [] : ['offloads=off']));
      }
    }
    const show = d.json('show');
    const pid = show.pid as number;
    const tids: number[] = m.threads > 1 ? (show.dataplane.threads as { tid: number }[]).map((t) => t.tid) : [show.dataplane.tid as number];
    for (let p = 0; p < m.pairs; p++) spawnSync('ip', ['netns', 'exec', ns[2 * p]!, 'ping', '-c', '1', '-W', '2', `10.9${p}.0.2`]);
    const servers = await Promise.all(Array.from({ length: m.pairs }, (_, p) => server(ns[2 * p + 1]!)));
    try {
      const c0 = tids.map((t) => threadCpu(pid, t) ?? 0);
      const m0 = machineTicks();
      const t0 = performance.now();
      const pairs = await Promise.all(Array.from({ length: m.pairs }, (_, p) => client(ns[2 * p]!, `10.9${p}.0.2`)));
      const wall = (performance.now() - t0) / 1000;
      const m1 = machineTicks();
      const cpu = tids.map((t, i) => +(((threadCpu(pid, t) ?? c0[i]!) - c0[i]!) / wall).toFixed(2));
      return { gbps: +pairs.reduce((a, b) => a + b, 0).toFixed(2), pairs: pairs.map((x) => +x.toFixed(2)), threadCpu: cpu, machineCpu: +((m1.busy - m0.busy) / (m1.total - m0.total)).toFixed(2) };
    } finally {
      for (const s of servers) s.kill();
    }
  } finally {
    await d.cleanup();
    delNetns(ns);
  }
}

for (let r = 0; r < ROUNDS; r++) {
  console.error(`-- round ${r + 1}/${ROUNDS}`);
  for (const offloads of [true, false]) {
    for (const m of MODES) {
      const key = `${m.mode}${offloads ? '' : ', offloads off'}`;
      const s = await run(m, offloads);
      (samples[key] ??= []).push(s);
      console.error(`${key.padEnd(40)} ${s.gbps.toFixed(2)} Gbit/s (${s.pairs.join(' + ')})  pier threads CPU ${s.threadCpu.map((c) => `${Math.round(c * 100)}%`).join(' ')}  machine ${Math.round(s.machineCpu * 100)}% of ${machine().cpus} cores`);
    }
  }
}

const summary: Record<string, { gbps: number; threadCpu: number[]; machineCpu: number; rounds: Sample[] }> = {};
for (const [k, xs] of Object.entries(samples)) {
  const mid = [...xs].sort((a, b) => a.gbps - b.gbps)[xs.length >> 1]!;
  summary[k] = { gbps: +median(xs.map((x) => x.gbps)).toFixed(2), threadCpu: mid.threadCpu, machineCpu: mid.machineCpu, rounds: xs };
}
const ratio = (a: string, b: string): number => +(summary[a]!.gbps / summary[b]!.gbps).toFixed(2);
const ratios = {
  '2 threads / 1 thread, 2 pairs': ratio('2 threads, 2 pairs', '1 thread, 2 pairs'),
  '2 threads / 1 thread, 2 pairs, offloads off': ratio('2 threads, 2 pairs, offloads off', '1 thread, 2 pairs, offloads off'),
  'pair across threads / on one thread': ratio('2 threads, 1 pair across', '1 thread, 1 pair'),
  'pair across threads / on one thread, offloads off': ratio('2 threads, 1 pair across, offloads off', '1 thread, 1 pair, offloads off'),
};
const out = {
  ...resultHead('dataplane threads: independent tap pairs (iperf3 TCP, one stream per pair, all at once)', ROUNDS, T),
  summary,
  ratios,
};
writeFileSync(join(ROOT, 'bench', 'results', 'threads.json'), JSON.stringify(out, null, 2) + '\n');
const pct = (x: number): string => `${Math.round(x * 100)}%`;
const rows = Object.entries(summary).map(([k, s]) =>
  `| ${k} | ${s.gbps} | ${s.threadCpu.map(pct).join(' + ')} | ${pct(s.machineCpu)} | ${s.rounds.map((x) => x.gbps).join(', ')} |`);
const md = [
  `# Dataplane threads: 1 vs 2 on independent pairs (${out.date.slice(0, 10)})`,
  '',
  `${out.machine.cpus} cores, ${out.machine.cpu}, kernel ${out.machine.kernel}, Node ${out.machine.node}; median of ${ROUNDS} rounds of ${T} s. ` +
    'Each pair: two namespaces on tap ports of their own bridge, one iperf3 TCP stream; the pairs run at once. Method: [../threads.md](../threads.md).',
  '',
  '| setup | aggregate Gbit/s (median) | pier dataplane CPU per thread | whole machine CPU busy | Gbit/s of each round |',
  '|---|---|---|---|---|',
  ...rows,
  '',
  `2 threads against 1 on two independent pairs: **${ratios['2 threads / 1 thread, 2 pairs']}x** with tap offloads, ` +
    `**${ratios['2 threads / 1 thread, 2 pairs, offloads off']}x** without. One pair split across two threads against one thread: ` +
    `${ratios['pair across threads / on one thread']}x / ${ratios['pair across threads / on one thread, offloads off']}x.`,
  '',
].join('\n');
writeFileSync(join(ROOT, 'bench', 'results', 'threads.md'), md);
process.stdout.write(md);
