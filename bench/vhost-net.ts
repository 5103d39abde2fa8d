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
const WARMUP = option('--warmup', 3);
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

/** Minor page faults of a process (all its threads) or of every vhost worker, from /proc. */
function minorFaults(pid: number | 'vhost'): number {
  const one = (path: string): number => {
    try {
      const stat = readFileSync(path, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
    } catch {
      return 0;
    }
  };
  if (pid !== 'vhost') return one(`/proc/${pid}/stat`);
  let total = 0;
  for (const tid of vhostWorkers()) total += one(`/proc/${tid}/stat`);
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

/** Processes (or kernel threads) whose name matches, by pid, oldest first. */
function pidsNamed(match: (comm: string) => boolean): number[] {
  const pids: number[] = [];
  for (const pid of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      if (match(readFileSync(`/proc/${pid}/comm`, 'utf8').trim())) pids.push(Number(pid));
    } catch { /* gone */ }
  }
  return pids.sort((x, y) => x - y);
}

/** The vhost workers' tids, oldest first: a port's worker is made when the port is, so pa's comes first. */
const vhostWorkers = (): number[] => pidsNamed((c) => c.startsWith('vhost-'));

type Stats = Array<{ port: string; counters: Record<string, number>; kernel?: Record<string, unknown> }>;

/** One iperf3 run per direction, with CPU per thread and, for pier, every port's counters over it. */
async function measure(mode: string, a: string, b: string, d: TestDaemon | undefined, queueSize?: number): Promise<void> {
  const show = d?.json('show');
  const dpPid: number | undefined = show?.pid;
  const dpTid: number | undefined = show?.dataplane.tid;
  const workers = vhostWorkers();
  // A stream each way first, not measured (--warmup S, 0 to skip): the first stream on a fresh
  // daemon pays the first touches of pool memory and pier's code being compiled, and measured
  // first it made a->b, always measured first, the slower direction (bench/vhost-net.md).
  if (WARMUP > 0) for (const reverse of [false, true]) await iperf(b, a, ipB, { seconds: WARMUP, reverse });
  // --reverse-order: b->a measured first on each fresh daemon.
  for (const dir of reverseOrder ? ['b->a', 'a->b'] : ['a->b', 'b->a']) {
    const lingering = new Set(pidsNamed((c) => c === 'iperf3')); // still exiting from the stream before
    const threads: Record<string, () => number> = {
      pier: () => (dpPid && dpTid ? cpuOf((_c, pid, tid) => pid === dpPid && tid === dpTid) : 0),
      vhost: () => cpuOf((c) => c.startsWith('vhost-')),
      // Only this stream's own iperf3 processes: one left from the stream before, exiting while
      // this one runs, took its CPU time out of a sum over all of them (a negative share).
      iperf3: () => cpuOf((c, pid) => c === 'iperf3' && !lingering.has(pid)),
    };
    workers.forEach((tid, i) => (threads[`vhost:${(bFirst ? ['pb', 'pa'] : ['pa', 'pb'])[i] ?? tid}`] = () => cpuOf((_c, pid) => pid === tid)));
    const c0 = Object.fromEntries(Object.entries(threads).map(([k, f]) => [k, f()]));
    // First touches of pool memory (by pier's read()s, or by the vhost workers' copies into
    // buffers posted to them) are page faults: a fresh daemon's first stream pays them.
    const f0 = { pier: dpPid ? minorFaults(dpPid) : 0, vhost: minorFaults('vhost') };
    const s0 = d?.json<Stats>('stats');
    const t0 = performance.now();
    // --swap-roles: the iperf3 server in a (the sender of a->b is then the server, in -R mode),
    // to tell a direction's cost that follows iperf3's roles from one that follows the namespaces.
    const r = swapRoles ? await iperf(a, b, ipA, { seconds: T, reverse: dir === 'a->b' }) : await iperf(b, a, ipB, { seconds: T, reverse: dir === 'b->a' });
    const wall = (performance.now() - t0) / 1000;
    const s1 = d?.json<Stats>('stats');
    const share = (k: string): number => +((threads[k]!() - c0[k]!) / wall).toFixed(2);
    const cpu: Row['cpu'] = { pier: share('pier'), vhost: share('vhost'), iperf3: share('iperf3') };
    cpu.minorFaults = { pier: (dpPid ? minorFaults(dpPid) : 0) - f0.pier, vhost: minorFaults('vhost') - f0.vhost };
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
  // --ns-swap: b's namespace made before a's, to tell a cost that follows the namespaces' order.
  const [a, b] = (nsSwap ? makeNetns(2).reverse() : makeNetns(2)) as [string, string];
  const saved = process.env.PIER_ABLATE;
  try {
    // A virtio-user port posts at most an eighth of the pool: 8192 buffers let a 1024-entry ring
    // be full, so queue-size 256 and 1024 compare what they say.
    if (c.ablate) process.env.PIER_ABLATE = c.ablate; // the daemon inherits it (src/ports/ablate.ts)
    await d.start(['--pool', String(c.pool ?? 8192)]);
    d.ok('add-br', 'br0');
    const opts = (k: 'virtio-user' | 'tap'): string[] => (k === 'virtio-user' ? ['type=virtio-user', 'path=/dev/vhost-net', `queue-size=${c.queueSize}`] : ['type=tap']);
    const addA = (): unknown => d.ok('add-port', 'br0', 'pa', ...opts(c.a), `netns=${a}`, `ip=${ipA}/24`);
    const addB = (): unknown => d.ok('add-port', 'br0', 'pb', ...opts(c.b), `netns=${b}`, `ip=${ipB}/24`);
    // --b-first: pb made before pa, to tell a direction's cost that follows the ports' order (the
    // engine's polling order, the vhost workers' creation) from one that follows iperf3's roles.
    if (bFirst) { addB(); addA(); } else { addA(); addB(); }
    sh('ip', ['netns', 'exec', a, 'ping', '-c', '1', '-W', '5', ipB]);
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
// One-change variants (bench/vhost-net.md): each names itself in the results' file name.
const VARIANTS = ['b-first', 'swap-roles', 'ns-swap', 'ip-swap', 'reverse-order'] as const;
const variants = VARIANTS.filter((v) => process.argv.includes(`--${v}`));
const bFirst = variants.includes('b-first');
const swapRoles = variants.includes('swap-roles');
const nsSwap = variants.includes('ns-swap');
const ipSwap = variants.includes('ip-swap'); // a is 10.83.0.2 and b 10.83.0.1
const reverseOrder = variants.includes('reverse-order');
const [ipA, ipB] = ipSwap ? ['10.83.0.2', '10.83.0.1'] : ['10.83.0.1', '10.83.0.2'];
const ablation = process.argv.includes('--no-ablation') ? [] : ABLATIONS;

// Rounds alternate every path, so a drift of the emulated machine shows in every path alike.
const all: Row[][] = [];
// --paths bridge,tap,vu256,vu1024,mixed (default all): a run of fewer paths and more rounds, for
// one comparison (the seed's path against tap ports), writes vhost-net-<paths>.json/.md instead.
const PATHS = ['bridge', 'tap', 'vu256', 'vu1024', 'mixed'];
const pathsArg = process.argv.indexOf('--paths');
const paths = pathsArg >= 0 ? process.argv[pathsArg + 1]!.split(',') : PATHS;
// vuN: both containers on virtio-user ports of queue-size N (vu256 and vu1024 are the defaults).
const vuSizes = paths.filter((x) => /^vu\d+$/.test(x)).map((x) => Number(x.slice(2)));
for (const x of paths) if (!PATHS.includes(x) && !/^vu\d+$/.test(x)) throw new Error(`bench/vhost-net.ts: unknown path ${x} in --paths (one of ${PATHS.join(', ')}, or vuN for queue-size N)`);
const partial = paths.length < PATHS.length;
for (let round = 0; round < ROUNDS; round++) {
  rows.length = 0;
  if (paths.includes('bridge')) await bridgeRun();
  if (paths.includes('tap')) await pierRun({ mode: 'pier tap ports', a: 'tap', b: 'tap' });
  for (const qs of vuSizes) await pierRun({ mode: VIRTIO, a: 'virtio-user', b: 'virtio-user', queueSize: qs });
  // One container on each kind: which direction a virtio-user port slows (the thread's hosts had
  // one virtio-user container each; with both ports virtio-user each direction crosses both).
  if (paths.includes('mixed')) await pierRun({ mode: MIXED, a: 'virtio-user', b: 'tap', queueSize: 1024 });
  if (!partial) for (const x of ablation) await pierRun(x.config);
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
  ratios[`virtio-user(256)/tap ${dir}`] = +(get(VIRTIO, dir, 256) / get('pier tap ports', dir)).toFixed(2);
  ratios[`virtio-user(1024)/bridge ${dir}`] = +(get(VIRTIO, dir, 1024) / get('linux bridge', dir)).toFixed(2);
  ratios[`virtio-user(1024)/tap ${dir}`] = +(get(VIRTIO, dir, 1024) / get('pier tap ports', dir)).toFixed(2);
  ratios[`virtio-user 256/1024 ${dir}`] = +(get(VIRTIO, dir, 256) / get(VIRTIO, dir, 1024)).toFixed(2);
  ratios[`virtio-user-to-tap/tap ${dir}`] = +(get(MIXED, dir, 1024) / get('pier tap ports', dir)).toFixed(2);
}
// Each round's own ratio to tap ports (the rounds alternate paths, so a drift of the emulated
// machine moves both figures of a round together): the median of those, and how many were >= 1.
const paired: Record<string, { median: number; perRound: number[]; atLeastTap: number }> = {};
for (const dir of ['a->b', 'b->a']) {
  for (const qs of vuSizes) {
    const per = all.map((rs) => {
      const v = rs.find((x) => x.mode === VIRTIO && x.dir === dir && x.queueSize === qs)?.gbps;
      const t = rs.find((x) => x.mode === 'pier tap ports' && x.dir === dir)?.gbps;
      return v !== undefined && t !== undefined ? +(v / t).toFixed(2) : NaN;
    }).filter((x) => !Number.isNaN(x));
    if (per.length > 0) paired[`virtio-user(${qs})/tap ${dir}`] = { median: +median(per).toFixed(2), perRound: per, atLeastTap: per.filter((x) => x >= 1).length };
  }
}
for (const [k, v] of Object.entries(ratios)) if (Number.isNaN(v)) delete ratios[k];
const base = partial || variants.length > 0 ? ['vhost-net', ...paths, ...variants].join('-') : 'vhost-net';
const result = { benchmark: 'vhost-net virtio-user vs tap vs Linux bridge, inside vmrun (TCG): ratios only', date: new Date().toISOString(), machine: machine(), secondsPerRun: T, rounds: ROUNDS, rows: mainRows, ratios };
writeFileSync(join(OUT, `${base}.json`), JSON.stringify({ ...result, paths, pairedRatios: paired, everyRound: all.map((rs) => rs.map((r) => ({ mode: r.mode, queueSize: r.queueSize, dir: r.dir, gbps: r.gbps, cpu: r.cpu,
  ports: r.ports?.map((p) => ({ port: p.port, side: p.side, moved: Object.fromEntries(Object.entries(p.counters).filter(([k, v]) => v !== 0 && !/^(rx|tx)_(packets|bytes)$/.test(k))) })) }))) }, null, 2) + '\n');
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
  ...Object.entries(paired).map(([k, v]) => `- ${k}, round by round: median **${v.median}x** (${v.perRound.join(', ')}; at least tap's in ${v.atLeastTap} of ${v.perRound.length})`),
  '',
].join('\n');
writeFileSync(join(OUT, `${base}.md`), md);
process.stdout.write(md);
