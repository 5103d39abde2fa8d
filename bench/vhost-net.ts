// The thread's own setup, measured: containers on virtio-user ports over the kernel's vhost-net,
// against containers on pier tap ports and on the Linux bridge, both directions, queue-size 256
// and 1024, with per-thread CPU (pier's dataplane thread, the kernel's vhost workers, iperf3).
// Needs /dev/vhost-net, so it runs inside ../shared/tools/vmrun; only ratios mean anything there.
// Usage (root, on the host): node --import tsx bench/vhost-net.ts [--seconds T]
// Method and write-up: bench/vhost-net.md.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { machine, option } from './common.ts';
import { delNetns, iperf, makeNetns, must, ROOT, sh, TestDaemon } from '../test/helpers.ts';

const T = option('--seconds', 5);
const OUT = process.env.PIER_BENCH_OUT ?? join(ROOT, 'bench', 'results');

if (!existsSync('/dev/vhost-net')) {
  // On the host: run this same file inside the VM, with the results directory writable.
  const vmrun = join(ROOT, '..', 'shared', 'tools', 'vmrun');
  const r = spawnSync(vmrun, ['--timeout', '1500', '--mem', '3072', '--rw', OUT, '--', 'node', '--import', 'tsx', 'bench/vhost-net.ts', '--seconds', String(T)],
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

interface Row { mode: string; queueSize?: number; dir: string; gbps: number; cpu: Record<string, number> }
const rows: Row[] = [];

async function measure(mode: string, a: string, b: string, dpPid: number | undefined, dpTid: number | undefined, queueSize?: number): Promise<void> {
  for (const dir of ['a->b', 'b->a']) {
    const threads = {
      pier: () => (dpPid && dpTid ? cpuOf((_c, pid, tid) => pid === dpPid && tid === dpTid) : 0),
      vhost: () => cpuOf((c) => c.startsWith('vhost-')),
      iperf3: () => cpuOf((c) => c === 'iperf3'),
    };
    const c0 = Object.fromEntries(Object.entries(threads).map(([k, f]) => [k, f()]));
    const t0 = performance.now();
    const r = await iperf(b, a, '10.83.0.2', { seconds: T, reverse: dir === 'b->a' });
    const wall = (performance.now() - t0) / 1000;
    const cpu = Object.fromEntries(Object.entries(threads).map(([k, f]) => [k, +((f() - c0[k]!) / wall).toFixed(2)]));
    rows.push({ mode, ...(queueSize ? { queueSize } : {}), dir, gbps: +r.gbps.toFixed(3), cpu });
    console.error(`${mode}${queueSize ? ` qs=${queueSize}` : ''} ${dir} ${r.gbps.toFixed(3)} Gbit/s cpu ${JSON.stringify(cpu)}`);
  }
}

async function pierRun(kind: 'virtio-user' | 'tap', queueSize?: number): Promise<void> {
  const d = new TestDaemon();
  const [a, b] = makeNetns(2) as [string, string];
  try {
    // A virtio-user port posts at most an eighth of the pool: 8192 buffers let a 1024-entry ring
    // be full, so queue-size 256 and 1024 compare what they say.
    await d.start(['--pool', '8192']);
    d.ok('add-br', 'br0');
    const extra = kind === 'virtio-user' ? ['type=virtio-user', 'path=/dev/vhost-net', `queue-size=${queueSize}`] : ['type=tap'];
    d.ok('add-port', 'br0', 'pa', ...extra, `netns=${a}`, 'ip=10.83.0.1/24');
    d.ok('add-port', 'br0', 'pb', ...extra, `netns=${b}`, 'ip=10.83.0.2/24');
    sh('ip', ['netns', 'exec', a, 'ping', '-c', '1', '-W', '5', '10.83.0.2']);
    const show = d.json('show');
    await measure(kind === 'tap' ? 'pier tap ports' : 'pier virtio-user/vhost-net', a, b, show.pid, show.dataplane.tid, queueSize);
  } finally {
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
    await measure('linux bridge', a, b, undefined, undefined);
  } finally {
    delNetns([a, b]);
    sh('ip', ['link', 'del', 'pbr']);
  }
}

await bridgeRun();
await pierRun('tap');
await pierRun('virtio-user', 256);
await pierRun('virtio-user', 1024);

const get = (mode: string, dir: string, qs?: number): number => rows.find((r) => r.mode === mode && r.dir === dir && r.queueSize === qs)?.gbps ?? NaN;
const ratios: Record<string, number> = {};
for (const dir of ['a->b', 'b->a']) {
  ratios[`virtio-user(1024)/bridge ${dir}`] = +(get('pier virtio-user/vhost-net', dir, 1024) / get('linux bridge', dir)).toFixed(2);
  ratios[`virtio-user(1024)/tap ${dir}`] = +(get('pier virtio-user/vhost-net', dir, 1024) / get('pier tap ports', dir)).toFixed(2);
  ratios[`virtio-user 256/1024 ${dir}`] = +(get('pier virtio-user/vhost-net', dir, 256) / get('pier virtio-user/vhost-net', dir, 1024)).toFixed(2);
}
const result = { benchmark: 'vhost-net virtio-user vs tap vs Linux bridge, inside vmrun (TCG): ratios only', date: new Date().toISOString(), machine: machine(), secondsPerRun: T, rows, ratios };
writeFileSync(join(OUT, 'vhost-net.json'), JSON.stringify(result, null, 2) + '\n');
const md = [
  `# vhost-net virtio-user vs tap ports vs Linux bridge, inside vmrun (${result.date.slice(0, 10)})`,
  '',
  'Software-emulated VM (QEMU TCG, 2 vCPUs): absolute figures are meaningless, compare within the table. Method: [../vhost-net.md](../vhost-net.md).',
  '',
  '| path | dir | Gbit/s | pier thread CPU | vhost workers CPU | iperf3 CPU |',
  '|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.mode}${r.queueSize ? ` (queue-size ${r.queueSize})` : ''} | ${r.dir} | ${r.gbps} | ${Math.round((r.cpu.pier ?? 0) * 100)}% | ${Math.round((r.cpu.vhost ?? 0) * 100)}% | ${Math.round((r.cpu.iperf3 ?? 0) * 100)}% |`),
  '',
  ...Object.entries(ratios).map(([k, v]) => `- ${k}: ${v}x`),
  '',
].join('\n');
writeFileSync(join(OUT, 'vhost-net.md'), md);
process.stdout.write(md);
