// Dataplane threads on the vhost-user path: two independent loops (two DPDK testpmd "VMs", each
// with two virtio-user ports in io forwarding, as in ../shared/bench/vhost-loop.sh) through two
// bridges of one pier daemon, with one dataplane thread and with two (each loop's ports on a
// thread of their own), same run, rounds alternating; one loop alone on one thread beside them.
// 64-byte frames. Records each loop's Mpps, pier's CPU per thread and the machine's, so the
// scaling can be read against what limits it. Method: bench/threads.md ("vhost-user loops").
// Usage (root): node --import tsx bench/threads-vhost.ts [--rounds N] [--seconds T] [--len B]
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { machine, machineTicks, median, option, resultHead, threadCpu } from './common.ts';
import { ROOT, TestDaemon, waitFor } from '../test/helpers.ts';

const ROUNDS = option('--rounds', 3);
const T = option('--seconds', 8);
const LEN = option('--len', 64);

interface Mode { mode: string; threads: number; loops: number }
const MODES: Mode[] = [
  { mode: '1 thread, 1 loop', threads: 1, loops: 1 },
  { mode: '1 thread, 2 loops', threads: 1, loops: 2 },
  { mode: '2 threads, 2 loops', threads: 2, loops: 2 },
];

interface Sample { mpps: number; loops: number[]; threadCpu: number[]; machineCpu: number }
const samples: Record<string, Sample[]> = {};


/** A testpmd "VM": two virtio-user ports on sockets a and b, io forwarding on CPU `fwd`. */
class Vm {
  private out = '';
  readonly p: ChildProcess;
  constructor(readonly name: string, a: string, b: string, fwd: number) {
    const main = fwd === 0 ? 1 : 0; // the main lcore mostly sleeps in the prompt
    // stdbuf: testpmd prints its stats with stdio, block-buffered into a pipe.
    this.p = spawn('stdbuf', ['-o0', 'dpdk-testpmd', '-l', `${main},${fwd}`, '--main-lcore', String(main), '--no-pci', '--no-huge', '-m', '1024',
      '--single-file-segments', `--file-prefix=${name}`, '--vdev', `net_virtio_user0,path=${a},queues=1`,
      '--vdev', `net_virtio_user1,path=${b},queues=1`, '--', '-i', '--forward-mode=io', `--txpkts=${LEN}`, '--nb-cores=1',
      '--total-num-mbufs=32768'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.p.stdout!.on('data', (d) => (this.out += d));
    this.p.stderr!.on('data', (d) => (this.out += d));
  }
  async ready(): Promise<void> {
    await waitFor(() => {
      if (this.p.exitCode !== null) throw new Error(`testpmd ${this.name} exited: ${this.out.slice(-500)}`);
      return this.out.includes('testpmd>');
    }, 30_000, `testpmd ${this.name} to start`);
  }
  send(cmd: string): void {
    this.p.stdin!.write(cmd + '\n');
  }
  /** RX-packets of both ports, summed, from a fresh "show port stats all". */
  async rxPackets(): Promise<number> {
    const mark = this.out.length;
    this.send('show port stats all');
    let got: number[] = [];
    await waitFor(() => {
      got = [...this.out.slice(mark).matchAll(/RX-packets:\s+(\d+)/g)].map((m) => Number(m[1]));
      return got.length >= 2;
    }, 10_000, `testpmd ${this.name} port stats`);
    return got[0]! + got[1]!;
  }
  async stop(): Promise<void> {
    this.send('stop');
    this.send('quit');
    this.p.stdin!.end();
    const exited = new Promise<void>((res) => this.p.once('exit', () => res()));
    const t = setTimeout(() => this.p.kill('SIGKILL'), 10_000);
    if (this.p.exitCode === null) await exited;
    clearTimeout(t);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function run(m: Mode): Promise<Sample> {
  const d = new TestDaemon();
  const dir = mkdtempSync(join(tmpdir(), 'pier-threads-vhost-'));
  const vms: Vm[] = [];
  try {
    // Thread i on CPU i; loop k's VM forwards on CPU 1 - k, so each core has one VM poller.
    await d.start(['--dataplane-threads', String(m.threads), '--dataplane-cpu', m.threads === 1 ? '0' : '0,1', '--pool', '4096']);
    for (let k = 0; k < m.loops; k++) {
      d.ok('add-br', `br${k}`);
      for (const e of ['a', 'b']) d.ok('add-port', `br${k}`, `${e}${k}`, 'type=vhost-user', `path=${join(dir, `${e}${k}.sock`)}`, `thread=${m.threads === 1 ? 0 : k}`);
    }
    for (let k = 0; k < m.loops; k++) {
      await waitFor(() => existsSync(join(dir, `b${k}.sock`)), 10_000, 'vhost-user sockets');
      vms.push(new Vm(`ptv${k}`, join(dir, `a${k}.sock`), join(dir, `b${k}.sock`), 1 - k));
    }
    for (const v of vms) await v.ready();
    const show = d.json('show');
    const pid = show.pid as number;
    const tids: number[] = m.threads > 1 ? (show.dataplane.threads as { tid: number }[]).map((t) => t.tid) : [show.dataplane.tid as number];
    for (const v of vms) v.send('start tx_first 8');
    await sleep(2000); // the loops fill and settle (a benchmark's warm-up, not a wait for a condition)
    const r0 = await Promise.all(vms.map((v) => v.rxPackets()));
    const c0 = tids.map((t) => threadCpu(pid, t) ?? 0);
    const m0 = machineTicks();
    const t0 = performance.now();
    await sleep(T * 1000);
    const r1 = await Promise.all(vms.map((v) => v.rxPackets()));
    const wall = (performance.now() - t0) / 1000;
    const m1 = machineTicks();
    const cpu = tids.map((t, i) => +(((threadCpu(pid, t) ?? c0[i]!) - c0[i]!) / wall).toFixed(2));
    const loops = r1.map((x, i) => +((x - r0[i]!) / wall / 1e6).toFixed(2));
    return { mpps: +loops.reduce((a, b) => a + b, 0).toFixed(2), loops, threadCpu: cpu, machineCpu: +((m1.busy - m0.busy) / (m1.total - m0.total)).toFixed(2) };
  } finally {
    for (const v of vms) await v.stop();
    await d.cleanup();
    rmSync(dir, { recursive: true, force: true });
    for (let k = 0; k < 2; k++) rmSync(`/var/run/dpdk/ptv${k}`, { recursive: true, force: true });
  }
}

for (let r = 0; r < ROUNDS; r++) {
  console.error(`-- round ${r + 1}/${ROUNDS}`);
  for (const m of MODES) {
    const s = await run(m);
    (samples[m.mode] ??= []).push(s);
    console.error(`${m.mode.padEnd(22)} ${s.mpps.toFixed(2)} Mpps (${s.loops.join(' + ')})  pier threads CPU ${s.threadCpu.map((c) => `${Math.round(c * 100)}%`).join(' ')}  machine ${Math.round(s.machineCpu * 100)}%`);
  }
}

const summary: Record<string, { mpps: number; threadCpu: number[]; machineCpu: number; rounds: Sample[] }> = {};
for (const [k, xs] of Object.entries(samples)) {
  const mid = [...xs].sort((a, b) => a.mpps - b.mpps)[xs.length >> 1]!;
  summary[k] = { mpps: +median(xs.map((x) => x.mpps)).toFixed(2), threadCpu: mid.threadCpu, machineCpu: mid.machineCpu, rounds: xs };
}
// Round by round (the rounds alternate modes, so a drift of the host moves a round's figures together).
const perRound = samples['2 threads, 2 loops']!.map((s, i) => +(s.mpps / samples['1 thread, 2 loops']![i]!.mpps).toFixed(2));
const ratios = {
  '2 threads / 1 thread, 2 loops': +(summary['2 threads, 2 loops']!.mpps / summary['1 thread, 2 loops']!.mpps).toFixed(2),
  '2 threads / 1 thread, 2 loops, round by round (median)': +median(perRound).toFixed(2),
  '1 thread: 2 loops / 1 loop': +(summary['1 thread, 2 loops']!.mpps / summary['1 thread, 1 loop']!.mpps).toFixed(2),
};
const out = { ...resultHead(`dataplane threads: independent vhost-user loops (testpmd io forwarding, ${LEN}-byte frames, all at once)`, ROUNDS, T), summary, ratios, perRound };
writeFileSync(join(ROOT, 'bench', 'results', 'threads-vhost.json'), JSON.stringify(out, null, 2) + '\n');
const pct = (x: number): string => `${Math.round(x * 100)}%`;
const md = [
  `# Dataplane threads: 1 vs 2 on independent vhost-user loops (${out.date.slice(0, 10)})`,
  '',
  `${machine().cpus} cores, ${out.machine.cpu}, kernel ${out.machine.kernel}, Node ${out.machine.node}; median of ${ROUNDS} rounds of ${T} s, ${LEN}-byte frames. ` +
    'Each loop: a testpmd "VM" with two virtio-user ports in io forwarding, on two vhost-user ports of its own bridge; the loops run at once, each VM polling on a core of its own. Method: [../threads.md](../threads.md).',
  '',
  '| setup | aggregate Mpps (median) | Mpps per loop (median round) | pier dataplane CPU per thread | whole machine CPU busy | Mpps of each round |',
  '|---|---|---|---|---|---|',
  ...Object.entries(summary).map(([k, s]) => {
    const mid = [...s.rounds].sort((a, b) => a.mpps - b.mpps)[s.rounds.length >> 1]!;
    return `| ${k} | ${s.mpps} | ${mid.loops.join(' + ')} | ${s.threadCpu.map(pct).join(' + ')} | ${pct(s.machineCpu)} | ${s.rounds.map((x) => x.mpps).join(', ')} |`;
  }),
  '',
  `2 threads against 1 on two independent loops: **${ratios['2 threads / 1 thread, 2 loops']}x** (round by round: ${perRound.join(', ')}).`,
  '',
].join('\n');
writeFileSync(join(ROOT, 'bench', 'results', 'threads-vhost.md'), md);
process.stdout.write(md);
