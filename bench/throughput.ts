// Container-to-container TCP throughput: pier (tap ports, offloads on and off, MTU 1500 and 9000) against the Linux
// bridge and a plain veth pair, in the same run, both directions, with pier's dataplane CPU time.
// Method: bench/throughput.md. Usage (root): node --import tsx bench/throughput.ts [--rounds N] [--seconds T]
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Dir, machineTicks, median, option, resultHead, tapPair, tapPairTcp } from './common.ts';
import { delNetns, makeNetns, ROOT, TestDaemon } from '../test/helpers.ts';

const ROUNDS = option('--rounds', 3);
const T = option('--seconds', 8);
const BASELINE = join(ROOT, '..', 'shared', 'bench', 'baseline.sh');

interface Sample { gbps: number; retransmits: number; cpu?: number }
const results: Record<string, Record<Dir, Sample[]>> = {};
function record(mode: string, dir: Dir, s: Sample): void {
  ((results[mode] ??= { 'a->b': [], 'b->a': [] })[dir]).push(s);
  console.error(`${mode.padEnd(18)} ${dir} ${s.gbps.toFixed(2)} Gbit/s${s.cpu !== undefined ? `  dataplane CPU ${(s.cpu * 100).toFixed(0)}%` : ''}`);
}

/** Busy CPU-seconds of the whole machine so far (USER_HZ jiffies). */
const busySeconds = (): number => machineTicks().busy / 100;
/** The whole machine's CPU per byte moved, ns, one figure per run of a path (both directions together). */
const perByte: Record<string, number[]> = {};
function recordPerByte(mode: string, busy: number, gbps: number[]): void {
  const bytes = gbps.reduce((x, y) => x + y, 0) * 1e9 / 8 * T;
  (perByte[mode] ??= []).push(+(busy * 1e9 / bytes).toFixed(3));
}

function baseline(mode: 'veth' | 'bridge'): void {
  const b0 = busySeconds();
  const r = spawnSync('bash', [BASELINE, mode], { encoding: 'utf8', env: { ...process.env, T: String(T) } });
  for (const line of r.stdout.split('\n')) {
    const m = /^(\S+) (a->b|b->a) ([\d.]+) (\S+)/.exec(line);
    if (m) record(mode === 'bridge' ? 'linux-bridge' : 'veth', m[2] as Dir, { gbps: Number(m[3]), retransmits: Number(m[4]) || 0 });
  }
  // The script also makes and removes its namespaces: a little more busy time than the streams.
  const busy = busySeconds() - b0;
  recordPerByte(mode === 'bridge' ? 'linux-bridge' : 'veth', busy, [...r.stdout.matchAll(/^\S+ (?:a->b|b->a) ([\d.]+)/gm)].map((x) => Number(x[1])));
  if (!r.stdout.includes('a->b')) throw new Error(`baseline ${mode} failed: ${r.stderr}`);
}


/** pier's tap ports, offloads on or off, at the default MTU (1500) or `mtu`. */
async function pierRun(offloads: boolean, mtu?: number): Promise<void> {
  const d = new TestDaemon();
  const [a, b] = makeNetns(2) as [string, string];
  try {
    await d.start();
    const off = [...(offloads ? [] : ['offloads=off']), ...(mtu ? [`mtu=${mtu}`] : [])];
    const dp = tapPair(d, a, b, off);
    const mode = `${offloads ? 'pier' : 'pier-offloads-off'}${mtu ? `-mtu${mtu}` : ''}`;
    const b0 = busySeconds();
    const gbps: number[] = [];
    for (const dir of ['a->b', 'b->a'] as Dir[]) {
      const s = await tapPairTcp(dp, a, b, dir, T);
      gbps.push(s.gbps);
      record(mode, dir, s);
    }
    recordPerByte(mode, busySeconds() - b0, gbps);
  } finally {
    await d.cleanup();
    delNetns([a, b]);
  }
}


for (let r = 0; r < ROUNDS; r++) {
  console.error(`-- round ${r + 1}/${ROUNDS}`);
  baseline('veth');
  baseline('bridge');
  await pierRun(true);
  await pierRun(false);
  // The effect of the MTU: with TSO a segment's size hardly matters to pier (super-frames of up
  // to 64 KiB cross it either way); without offloads each frame is a read() and a write().
  await pierRun(true, 9000);
  await pierRun(false, 9000);
}

const summary: Record<string, Record<Dir, { gbps: number; cpu?: number; samples: number[] }> & { machineCpuNsPerByte?: number; machineCpuNsPerByteSamples?: number[] }> = {};
for (const [mode, dirs] of Object.entries(results)) {
  summary[mode] = {} as (typeof summary)[string];
  for (const dir of ['a->b', 'b->a'] as Dir[]) {
    const xs = dirs[dir];
    const cpu = xs.every((x) => x.cpu !== undefined) ? median(xs.map((x) => x.cpu!)) : undefined;
    summary[mode][dir] = { gbps: +median(xs.map((x) => x.gbps)).toFixed(2), ...(cpu !== undefined ? { cpu: +cpu.toFixed(2) } : {}), samples: xs.map((x) => x.gbps) };
  }
  if (perByte[mode]) {
    summary[mode].machineCpuNsPerByte = +median(perByte[mode]).toFixed(3);
    summary[mode].machineCpuNsPerByteSamples = perByte[mode];
  }
}
const ratio = (mode: string, ref: string, dir: Dir): number => +(summary[mode]![dir].gbps / summary[ref]![dir].gbps).toFixed(2);
const ratios = {
  'pier/linux-bridge': { 'a->b': ratio('pier', 'linux-bridge', 'a->b'), 'b->a': ratio('pier', 'linux-bridge', 'b->a') },
  'pier/veth': { 'a->b': ratio('pier', 'veth', 'a->b'), 'b->a': ratio('pier', 'veth', 'b->a') },
  'pier-offloads-off/linux-bridge': { 'a->b': ratio('pier-offloads-off', 'linux-bridge', 'a->b'), 'b->a': ratio('pier-offloads-off', 'linux-bridge', 'b->a') },
  'pier mtu 9000/1500': { 'a->b': ratio('pier-mtu9000', 'pier', 'a->b'), 'b->a': ratio('pier-mtu9000', 'pier', 'b->a') },
  'pier-offloads-off mtu 9000/1500': { 'a->b': ratio('pier-offloads-off-mtu9000', 'pier-offloads-off', 'a->b'), 'b->a': ratio('pier-offloads-off-mtu9000', 'pier-offloads-off', 'b->a') },
  'pier direction balance (b->a / a->b)': +(summary.pier!['b->a'].gbps / summary.pier!['a->b'].gbps).toFixed(2),
};
const out = {
  ...resultHead('container-to-container TCP throughput (iperf3, one stream)', ROUNDS, T),
  summary,
  ratios,
};
writeFileSync(join(ROOT, 'bench', 'results', 'throughput.json'), JSON.stringify(out, null, 2) + '\n');
const rows = Object.entries(summary).map(([m, s]) =>
  `| ${m} | ${s['a->b'].gbps} | ${s['b->a'].gbps} | ${s['a->b'].cpu !== undefined ? `${Math.round(s['a->b'].cpu * 100)}% / ${Math.round(s['b->a'].cpu! * 100)}%` : '-'} | ` +
  `${s['a->b'].cpu !== undefined ? `${(s['a->b'].cpu * 8 / s['a->b'].gbps).toFixed(2)} / ${(s['b->a'].cpu! * 8 / s['b->a'].gbps).toFixed(2)}` : '-'} | ${s.machineCpuNsPerByte ?? '-'} |`);
const md = [
  `# Throughput: pier vs Linux bridge vs veth (${out.date.slice(0, 10)})`,
  '',
  `${out.machine.cpus} cores, ${out.machine.cpu}, kernel ${out.machine.kernel}, Node ${out.machine.node}; median of ${ROUNDS} rounds of ${T} s, one iperf3 TCP stream. Method: [../throughput.md](../throughput.md).`,
  '',
  '| path | a->b Gbit/s | b->a Gbit/s | pier dataplane CPU (a->b / b->a) | pier thread CPU ns per byte (a->b / b->a) | whole machine CPU ns per byte (both directions) |',
  '|---|---|---|---|---|---|',
  ...rows,
  '',
  `pier / Linux bridge: a->b **${ratios['pier/linux-bridge']['a->b']}x**, b->a **${ratios['pier/linux-bridge']['b->a']}x**; ` +
    `offloads off: ${ratios['pier-offloads-off/linux-bridge']['a->b']}x / ${ratios['pier-offloads-off/linux-bridge']['b->a']}x; ` +
    `direction balance ${ratios['pier direction balance (b->a / a->b)']}. ` +
    `MTU 9000 against 1500: ${ratios['pier mtu 9000/1500']['a->b']}x / ${ratios['pier mtu 9000/1500']['b->a']}x with offloads, ` +
    `${ratios['pier-offloads-off mtu 9000/1500']['a->b']}x / ${ratios['pier-offloads-off mtu 9000/1500']['b->a']}x without.`,
  '',
].join('\n');
writeFileSync(join(ROOT, 'bench', 'results', 'throughput.md'), md);
process.stdout.write(md);
