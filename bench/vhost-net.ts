// The thread's own setup, measured: containers on virtio-user ports over the kernel's vhost-net,
// against containers on pier tap ports and on the Linux bridge, both directions, queue-size 256
// and 1024, with per-thread CPU (pier's dataplane thread, the kernel's vhost workers, iperf3).
// Needs /dev/vhost-net, so it runs inside ../shared/tools/vmrun; only ratios mean anything there.
// Usage (root, on the host): node --import tsx bench/vhost-net.ts [--seconds T] [--rounds N] [--no-ablation]
// Method and write-up: bench/vhost-net.md.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { machine, median, option } from './common.ts';
import { delNetns, iperf, makeNetns, must, ROOT, sh, TestDaemon } from '../test/helpers.ts';

const T = option('--seconds', 5);
const OUT = process.env.PIER_BENCH_OUT ?? join(ROOT, 'bench', 'results');

if (!existsSync('/dev/vhost-net')) {
  // On the host: run this same file inside the VM, with the results directory writable.
  const vmrun = join(ROOT, '..', 'shared', 'tools', 'vmrun');
  const r = spawnSync(vmrun, ['--timeout', '5400', '--mem', '3072', '--rw', OUT, '--', 'node', '--import', 'tsx', 'bench/vhost-net.ts', ...process.argv.slice(2)],
    { stdio: 'inherit', env: { ...process.env, VMRUN_ACCEL: process.env.VMRUN_ACCEL ?? 'tcg', PIER_BENCH_OUT: OUT } });
  process.exit(r.status ?? 1);
}

/** CPU seconds of every thread whose name matches, summed (from /proc/PID/task/TID/stat). */
function cpuOf(match: (comm: string, pid: number, tid: number) => boolean): number {
  let total = 0;
  for (const pid of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        if (!match(comm, Number(pid), Number(tid))) continue;
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        total += (Number(f[11]) + Number(f[12])) / 100;
      } catch { /* gone */ }
    }
  }
  return total;
}

interface PortDiff { port: string; side: 'sender' | 'receiver'; counters: Record<string, number>; kernel: Record<string, number> }
interface Row {
  mode: string; queueSize?: number; dir: string; gbps: number; samples: number[]; retransmits: number;
  cpu: Record<string, number | Record<string, number>>; ports?: PortDiff[];
}
const rows: Row[] = [];

/** How every number of a port's `pier stats --json` changed over a run (zeros kept: a counter that did not move is a finding too). */
function diff(before: Record<string, unknown>, after: Record<string, unknown>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const a = typeof before[k] === 'number' ? before[k] : 0;
    if (typeof v === 'number') out[k] = v - a;
  }
  return out;
}

/** The vhost workers' tids, oldest first: a port's worker is made when the port is, so pa's comes first. */
function vhostWorkers(): number[] {
  const tids: number[] = [];
  for (const pid of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      if (comm.startsWith('vhost-')) tids.push(Number(pid));
    } catch { /* gone */ }
  }
  return tids.sort((x, y) => x - y);
}

type Stats = Array<{ port: string; counters: Record<string, number>; kernel?: Record<string, unknown> }>;

/** One iperf3 run per direction, with CPU per thread and, for pier, every port's counters over it. */
async function measure(mode: string, a: string, b: string, d: TestDaemon | undefined, queueSize?: number): Promise<void> {
  const show = d?.json('show');
  const dpPid: number | undefined = show?.pid;
  const dpTid: number | undefined = show?.dataplane.tid;
  const workers = vhostWorkers();
  for (const dir of ['a->b', 'b->a']) {
    const threads: Record<string, () => number> = {
      pier: () => (dpPid && dpTid ? cpuOf((_c, pid, tid) => pid === dpPid && tid === dpTid) : 0),
      vhost: () => cpuOf((c) => c.startsWith('vhost-')),
      iperf3: () => cpuOf((c) => c === 'iperf3'),
    };
    workers.forEach((tid, i) => (threads[`vhost:${['pa', 'pb'][i] ?? tid}`] = () => cpuOf((_c, pid) => pid === tid)));
    const c0 = Object.fromEntries(Object.entries(threads).map(([k, f]) => [k, f()]));
    const s0 = d?.json<Stats>('stats');
    const t0 = performance.now();
    const r = await iperf(b, a, '10.83.0.2', { seconds: T, reverse: dir === 'b->a' });
    const wall = (performance.now() - t0) / 1000;
    const s1 = d?.json<Stats>('stats');
    const share = (k: string): number => +((threads[k]!() - c0[k]!) / wall).toFixed(2);
    const cpu: Row['cpu'] = { pier: share('pier'), vhost: share('vhost'), iperf3: share('iperf3') };
    const byPort = Object.fromEntries(Object.keys(threads).filter((k) => k.startsWith('vhost:')).map((k) => [k.slice(6), share(k)]));
    if (Object.keys(byPort).length > 0) cpu.vhostWorkers = byPort;
    const ports = s0 && s1 ? s1.map((p1): PortDiff => {
      const p0 = s0.find((x) => x.port === p1.port);
      const sender = (dir === 'a->b') === (p1.port === 'pa');
      return { port: p1.port, side: sender ? 'sender' : 'receiver', counters: diff(p0?.counters ?? {}, p1.counters), kernel: diff(p0?.kernel ?? {}, p1.kernel ?? {}) };
    }) : undefined;
    rows.push({ mode, ...(queueSize ? { queueSize } : {}), dir, gbps: +r.gbps.toFixed(3), samples: [], retransmits: r.retransmits, cpu, ...(ports ? { ports } : {}) });
    console.error(`${mode}${queueSize ? ` qs=${queueSize}` : ''} ${dir} ${r.gbps.toFixed(3)} Gbit/s retransmits ${r.retransmits} cpu ${JSON.stringify(cpu)}`);
  }
}

interface PierConfig { mode: string; a: 'virtio-user' | 'tap'; b: 'virtio-user' | 'tap'; queueSize?: number; pool?: number; ablate?: string }

async function pierRun(c: PierConfig): Promise<void> {
  const d = new TestDaemon();
  const [a, b] = makeNetns(2) as [string, string];
  const saved = process.env.PIER_ABLATE;
  try {
    // A virtio-user port posts at most an eighth of the pool: 8192 buffers let a 1024-entry ring
    // be full, so queue-size 256 and 1024 compare what they say.
    if (c.ablate) process.env.PIER_ABLATE = c.ablate; // the daemon inherits it (src/ports/ablate.ts)
    await d.start(['--pool', String(c.pool ?? 8192)]);
    d.ok('add-br', 'br0');
    const opts = (k: 'virtio-user' | 'tap'): string[] => (k === 'virtio-user' ? ['type=virtio-user', 'path=/dev/vhost-net', `queue-size=${c.queueSize}`] : ['type=tap']);
    d.ok('add-port', 'br0', 'pa', ...opts(c.a), `netns=${a}`, 'ip=10.83.0.1/24');
    d.ok('add-port', 'br0', 'pb', ...opts(c.b), `netns=${b}`, 'ip=10.83.0.2/24');
    sh('ip', ['netns', 'exec', a, 'ping', '-c', '1', '-W', '5', '10.83.0.2']);
    await measure(c.mode, a, b, d, c.queueSize);
  } finally {
    if (saved === undefined) delete process.env.PIER_ABLATE;
    else process.env.PIER_ABLATE = saved;
    await d.cleanup();
    delNetns([a, b]);
  }
}

async function bridgeRun(): Promise<void> {
  const [a, b] = makeNetns(2) as [string, string];
  try {
    must('ip', ['link', 'add', 'pbr', 'type', 'bridge']);
    must('ip', ['link', 'set', 'pbr', 'up']);
    for (const [ns, ip, n] of [[a, '10.83.0.1/24', 'va'], [b, '10.83.0.2/24', 'vb']] as const) {
      must('ip', ['link', 'add', n, 'type', 'veth', 'peer', 'name', `${n}h`]);
      must('ip', ['link', 'set', `${n}h`, 'master', 'pbr', 'up']);
      must('ip', ['link', 'set', n, 'netns', ns]);
      must('ip', ['-n', ns, 'addr', 'add', ip, 'dev', n]);
      must('ip', ['-n', ns, 'link', 'set', n, 'up']);
    }
    await measure('linux bridge', a, b, undefined);
  } finally {
    delNetns([a, b]);
    sh('ip', ['link', 'del', 'pbr']);
  }
}

const VIRTIO = 'pier virtio-user/vhost-net';
const MIXED = 'pier virtio-user (a) to tap (b)';
/** Each change since the 2026-11-24 run undone in turn (bench/vhost-net.md, "the ratio drop"). */
const ABLATIONS: Array<{ label: string; undone: string; config: PierConfig }> = [
  { label: 'EVENT_IDX undone (driver side)', undone: 'event-idx', config: { mode: `${VIRTIO} [event-idx undone]`, a: 'virtio-user', b: 'virtio-user', queueSize: 1024, ablate: 'event-idx' } },
  { label: '1 MiB tap send buffer undone', undone: 'tap-sndbuf', config: { mode: `${VIRTIO} [tap-sndbuf undone]`, a: 'virtio-user', b: 'virtio-user', queueSize: 1024, ablate: 'tap-sndbuf' } },
  { label: 'per-port pool budget undone', undone: 'port-budget', config: { mode: `${VIRTIO} [port-budget undone]`, a: 'virtio-user', b: 'virtio-user', queueSize: 1024, ablate: 'port-budget' } },
  { label: 'the default pool (4096) instead of --pool 8192', undone: 'pool-8192', config: { mode: `${VIRTIO} [pool 4096]`, a: 'virtio-user', b: 'virtio-user', queueSize: 1024, pool: 4096 } },
];
const ROUNDS = option('--rounds', 2);
const ablation = process.argv.includes('--no-ablation') ? [] : ABLATIONS;

// Rounds alternate every path, so a drift of the emulated machine shows in every path alike.
const all: Row[][] = [];
for (let round = 0; round < ROUNDS; round++) {
  rows.length = 0;
  await bridgeRun();
  await pierRun({ mode: 'pier tap ports', a: 'tap', b: 'tap' });
  await pierRun({ mode: VIRTIO, a: 'virtio-user', b: 'virtio-user', queueSize: 256 });
  await pierRun({ mode: VIRTIO, a: 'virtio-user', b: 'virtio-user', queueSize: 1024 });
  // One container on each kind: which direction a virtio-user port slows (the thread's hosts had
  // one virtio-user container each; with both ports virtio-user each direction crosses both).
  await pierRun({ mode: MIXED, a: 'virtio-user', b: 'tap', queueSize: 1024 });
  for (const x of ablation) await pierRun(x.config);
  all.push([...rows]);
}
// The row of each path and direction: the median round's, every round's figure kept in samples.
rows.length = 0;
for (const r of all[0]!) {
  const same = all.map((rs) => rs.find((x) => x.mode === r.mode && x.dir === r.dir && x.queueSize === r.queueSize)!);
  const byGbps = [...same].sort((x, y) => x.gbps - y.gbps);
  const mid = byGbps[(byGbps.length - 1) >> 1]!;
  rows.push({ ...mid, gbps: +median(same.map((x) => x.gbps)).toFixed(3), samples: same.map((x) => x.gbps) });
}
const mainRows = rows.filter((r) => !r.mode.includes('['));
const abRows = rows.filter((r) => r.mode.includes('['));

const get = (mode: string, dir: string, qs?: number): number => rows.find((r) => r.mode === mode && r.dir === dir && r.queueSize === qs)?.gbps ?? NaN;
const ratios: Record<string, number> = {};
for (const dir of ['a->b', 'b->a']) {
  ratios[`virtio-user(1024)/bridge ${dir}`] = +(get(VIRTIO, dir, 1024) / get('linux bridge', dir)).toFixed(2);
  ratios[`virtio-user(1024)/tap ${dir}`] = +(get(VIRTIO, dir, 1024) / get('pier tap ports', dir)).toFixed(2);
  ratios[`virtio-user 256/1024 ${dir}`] = +(get(VIRTIO, dir, 256) / get(VIRTIO, dir, 1024)).toFixed(2);
  ratios[`virtio-user-to-tap/tap ${dir}`] = +(get(MIXED, dir, 1024) / get('pier tap ports', dir)).toFixed(2);
}
const result = { benchmark: 'vhost-net virtio-user vs tap vs Linux bridge, inside vmrun (TCG): ratios only', date: new Date().toISOString(), machine: machine(), secondsPerRun: T, rounds: ROUNDS, rows: mainRows, ratios };
writeFileSync(join(OUT, 'vhost-net.json'), JSON.stringify(result, null, 2) + '\n');
if (abRows.length > 0) {
  // The report's shape (bench/report.md): each run's rows, the committed path as "as committed".
  const refs = mainRows.filter((r) => r.mode === 'linux bridge' || r.mode === 'pier tap ports');
  const committed = mainRows.filter((r) => r.mode === VIRTIO && r.queueSize === 1024);
  const runs = [{ label: 'as committed', rows: [...refs, ...committed] },
    ...ABLATIONS.map((x) => ({ label: x.label, undone: x.undone, rows: [...refs, ...abRows.filter((r) => r.mode === x.config.mode).map((r) => ({ ...r, mode: VIRTIO }))] }))];
  writeFileSync(join(OUT, 'vhost-net-ablation.json'), JSON.stringify({ benchmark: 'vhost-net ablation: virtio-user/vhost-net with one change undone per run, beside tap ports and the Linux bridge of the same VM run', date: result.date, machine: result.machine, secondsPerRun: T, rounds: ROUNDS, runs }, null, 2) + '\n');
}
const pct = (v: unknown): string => (typeof v === 'number' ? `${Math.round(v * 100)}%` : '-');
const md = [
  `# vhost-net virtio-user vs tap ports vs Linux bridge, inside vmrun (${result.date.slice(0, 10)})`,
  '',
  `Software-emulated VM (QEMU TCG, 2 vCPUs): absolute figures are meaningless, compare within the table. Medians of ${ROUNDS} alternating rounds of ${T} s (every round in samples). Method: [../vhost-net.md](../vhost-net.md).`,
  '',
  '| path | dir | Gbit/s | rounds | TCP retransmits | pier thread CPU | vhost workers CPU (pa / pb) | iperf3 CPU |',
  '|---|---|---|---|---|---|---|---|',
  ...rows.map((r) => {
    const w = r.cpu.vhostWorkers as Record<string, number> | undefined;
    return `| ${r.mode}${r.queueSize ? ` (queue-size ${r.queueSize})` : ''} | ${r.dir} | ${r.gbps} | ${r.samples.join(', ')} | ${r.retransmits} | ${pct(r.cpu.pier)} | ${pct(r.cpu.vhost)}${w ? ` (${Object.entries(w).map(([k, v]) => `${k} ${pct(v)}`).join(' / ')})` : ''} | ${pct(r.cpu.iperf3)} |`;
  }),
  '',
  '## Where each direction lost packets (counters over the median round, per port)',
  '',
  '| path | dir | port (side) | counters that moved, besides packets and bytes | its tap (kernel) |',
  '|---|---|---|---|---|',
  ...rows.flatMap((r) => (r.ports ?? []).map((p) => {
    const c = Object.entries(p.counters).filter(([k, v]) => v !== 0 && !/^(rx|tx)_(packets|bytes|gso_packets)$/.test(k)).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
    const k = Object.entries(p.kernel).filter(([n, v]) => v !== 0 && /dropped|drops/.test(n)).map(([n, v]) => `${n} ${v}`).join(', ') || 'no drops';
    return `| ${r.mode}${r.queueSize ? ` (${r.queueSize})` : ''} | ${r.dir} | ${p.port} (${p.side}) | ${c} | ${k} |`;
  })),
  '',
  ...Object.entries(ratios).map(([k, v]) => `- ${k}: ${v}x`),
  '',
].join('\n');
writeFileSync(join(OUT, 'vhost-net.md'), md);
process.stdout.write(md);
