// vhost-user datapath: ../shared/bench/vhost-loop.sh with DPDK testpmd as the switch and with
// pier as the switch (event-driven, and busy-polling), same run, 64- and 1500-byte packets.
// Method: bench/vhost.md. Usage (root): node --import tsx bench/vhost.ts [--rounds N] [--seconds T]
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { machine, median, option, threadCpu } from './common.ts';
import { ROOT, sleep } from '../test/helpers.ts';

const ROUNDS = option('--rounds', 3);
const T = option('--seconds', 10);
const LOOP = join(ROOT, '..', 'shared', 'bench', 'vhost-loop.sh');
const SWITCH = join(ROOT, 'bench', 'pier-loop-switch.sh');

type Mode = 'testpmd' | 'pier' | 'pier-busy-poll';
const samples: Record<string, Array<{ mpps: number; cpu?: number; nsPerPacket?: number }>> = {};

/** Packets pier's dataplane has received so far (pier show --json), or undefined. */
function dataplanePackets(socket: string): number | undefined {
  try {
    const j = JSON.parse(execFileSync(join(ROOT, 'bin', 'pier'), ['show', '--json'], { env: { ...process.env, PIER_SOCKET: socket }, stdio: ['ignore', 'pipe', 'ignore'] }).toString());
    return Number(j.dataplane.packets);
  } catch {
    return undefined;
  }
}


async function run(mode: Mode, len: number): Promise<void> {
  const info = `/tmp/pier-vhost-bench-${process.pid}.json`;
  rmSync(info, { force: true });
  rmSync(`${info}.sock`, { force: true });
  const args = [LOOP, String(len)];
  const env: NodeJS.ProcessEnv = { ...process.env, T: String(T), PIER_INFO_OUT: info };
  if (mode !== 'testpmd') args.push(`${SWITCH} {A} {B}`);
  if (mode === 'pier-busy-poll') env.PIER_PORT_OPTS = 'busy-poll=on';
  const p = spawn('bash', args, { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  const done = new Promise<void>((r) => p.once('exit', () => r()));
  // Pier's dataplane thread CPU over the measured part of the run.
  let cpu: number | undefined;
  let nsPerPacket: number | undefined;
  if (mode !== 'testpmd') {
    let ids: { pid: number; tid: number } | undefined;
    for (let i = 0; i < 100 && !ids; i++) {
      await sleep(100);
      if (existsSync(info)) {
        try {
          const j = JSON.parse(readFileSync(info, 'utf8'));
          ids = { pid: j.pid, tid: j.dataplane.tid };
        } catch { /* still being written */ }
      }
    }
    if (ids) {
      await sleep(6000); // the harness starts its VM and sends tx_first about 5 s in
      const socket = readFileSync(`${info}.sock`, 'utf8').trim();
      const p0 = dataplanePackets(socket);
      const c0 = threadCpu(ids.pid, ids.tid);
      const t0 = Date.now();
      let c1 = c0;
      let t1 = t0;
      while (Date.now() - t0 < (T - 2) * 1000) {
        await sleep(500);
        const c = threadCpu(ids.pid, ids.tid);
        if (c === undefined) break;
        c1 = c;
        t1 = Date.now();
      }
      const p1 = dataplanePackets(socket);
      const c2 = threadCpu(ids.pid, ids.tid);
      if (c2 !== undefined) {
        c1 = c2;
        t1 = Date.now();
      }
      if (c0 !== undefined && c1 !== undefined && t1 > t0) cpu = +((c1 - c0) / ((t1 - t0) / 1000)).toFixed(2);
      // CPU time of the dataplane thread per packet it received: what a packet costs pier,
      // whatever the loop's population did meanwhile (10 ms clock ticks over ~T s: +-1 %).
      if (c0 !== undefined && c1 !== undefined && p0 !== undefined && p1 !== undefined && p1 > p0) nsPerPacket = Math.round(((c1 - c0) * 1e9) / (p1 - p0));
    }
  }
  await done;
  const m = /Mpps ([\d.]+)/.exec(out);
  if (!m) throw new Error(`vhost-loop.sh gave no figure for ${mode} ${len}: ${out}`);
  const key = `${mode} ${len}`;
  (samples[key] ??= []).push({ mpps: Number(m[1]), ...(cpu !== undefined ? { cpu } : {}), ...(nsPerPacket !== undefined ? { nsPerPacket } : {}) });
  console.error(`${key.padEnd(22)} ${m[1]} Mpps${cpu !== undefined ? `  pier dataplane CPU ${Math.round(cpu * 100)}%` : ''}${nsPerPacket !== undefined ? `, ${nsPerPacket} ns/packet` : ''}`);
}


for (let r = 0; r < ROUNDS; r++) {
  console.error(`-- round ${r + 1}/${ROUNDS}`);
  for (const len of [64, 1500]) for (const mode of ['testpmd', 'pier', 'pier-busy-poll'] as Mode[]) await run(mode, len);
}

const summary: Record<string, { mpps: number; cpu?: number; nsPerPacket?: number; samples: number[] }> = {};
for (const [k, xs] of Object.entries(samples)) {
  const cpu = xs.every((x) => x.cpu !== undefined) && xs.length ? median(xs.map((x) => x.cpu!)) : undefined;
  const ns = xs.filter((x) => x.nsPerPacket !== undefined).map((x) => x.nsPerPacket!);
  summary[k] = {
    mpps: +median(xs.map((x) => x.mpps)).toFixed(2), ...(cpu !== undefined ? { cpu } : {}),
    ...(ns.length ? { nsPerPacket: Math.round(median(ns)) } : {}), samples: xs.map((x) => x.mpps),
  };
}
const ratio = (mode: string, len: number): number => +(summary[`${mode} ${len}`]!.mpps / summary[`testpmd ${len}`]!.mpps).toFixed(2);
const ratios = {
  'pier/testpmd 64': ratio('pier', 64), 'pier/testpmd 1500': ratio('pier', 1500),
  'pier-busy-poll/testpmd 64': ratio('pier-busy-poll', 64), 'pier-busy-poll/testpmd 1500': ratio('pier-busy-poll', 1500),
};
const result = {
  benchmark: 'vhost-user loop (../shared/bench/vhost-loop.sh): Mpps circulating through the switch',
  date: new Date().toISOString(),
  machine: machine(),
  rounds: ROUNDS,
  secondsPerRun: T,
  summary,
  ratios,
};
writeFileSync(join(ROOT, 'bench', 'results', 'vhost.json'), JSON.stringify(result, null, 2) + '\n');
const rows = [64, 1500].flatMap((len) => (['testpmd', 'pier', 'pier-busy-poll'] as Mode[]).map((m) => {
  const s = summary[`${m} ${len}`]!;
  return `| ${len} | ${m} | ${s.mpps} | ${m === 'testpmd' ? '1.00' : ratio(m, len).toFixed(2)} | ${s.cpu !== undefined ? `${Math.round(s.cpu * 100)}%` : m === 'testpmd' ? '100% (polls)' : '-'} | ${s.nsPerPacket ?? '-'} | ${s.samples.join(', ')} |`;
}));
const md = [
  `# vhost-user loop: pier vs DPDK testpmd (${result.date.slice(0, 10)})`,
  '',
  `${result.machine.cpus} cores, ${result.machine.cpu}, kernel ${result.machine.kernel}, Node ${result.machine.node}; median of ${ROUNDS} rounds of ${T} s. Method: [../vhost.md](../vhost.md).`,
  '',
  '| packet bytes | switch | Mpps (median) | x testpmd | switch dataplane CPU | pier CPU ns per packet | Mpps of each round |',
  '|---|---|---|---|---|---|---|',
  ...rows,
  '',
].join('\n');
writeFileSync(join(ROOT, 'bench', 'results', 'vhost.md'), md);
process.stdout.write(md);
