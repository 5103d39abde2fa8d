// vhost-user datapath: ../shared/bench/vhost-loop.sh with DPDK testpmd, OVS-DPDK and pier
// (event-driven, and busy-polling) as the switch, same run, 64-, 512- and 1500-byte packets.
// With --packed, the loop runs again with the "VM"'s virtio-user ports on packed rings
// (packed_vq=1), through testpmd and through pier, in the same rounds: packed vs split.
// With --secured, pier runs once more with port-security=on on both ports (the cost of the checks).
// Method: bench/vhost.md. Usage (root): node --import tsx bench/vhost.ts [--rounds N] [--seconds T] [--no-ovs] [--packed] [--secured]
//   [--sizes 64,1500] [--modes pier,pier-busy-poll] [--out NAME]: a part of the run, kept in bench/results/NAME.*
//   [--ab DIR]: also pier as built in the tree DIR ("pier-b"), for an A/B of one change in the same rounds
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { median, option, resultHead, threadCpu } from './common.ts';
import { ROOT, sleep } from '../test/helpers.ts';

const ROUNDS = option('--rounds', 3);
const T = option('--seconds', 10);
const LOOP = join(ROOT, '..', 'shared', 'bench', 'vhost-loop.sh');
const SWITCH = join(ROOT, 'bench', 'pier-loop-switch.sh');
const OVS = join(ROOT, '..', 'shared', 'bench', 'ovs-loop-switch.sh');
/** A list option (--sizes 64,1500), or undefined when absent. */
function listOption(name: string): string[] | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? (process.argv[i + 1] ?? '').split(',').filter((x) => x !== '') : undefined;
}
const SIZES = (listOption('--sizes') ?? ['64', '512', '1500']).map(Number);
/** Results go to bench/results/OUT.json and OUT.md (a partial run must not replace the full one). */
const OUT = listOption('--out')?.[0] ?? 'vhost';

type Mode = 'testpmd' | 'ovs-dpdk' | 'pier' | 'pier-busy-poll' | 'testpmd-packed' | 'pier-packed' | 'pier-secured' | 'pier-b';
const withOvs = !process.argv.includes('--no-ovs');
const withPacked = process.argv.includes('--packed');
const withSecured = process.argv.includes('--secured');
/** --ab DIR: pier as built in the tree DIR (a worktree with one change) as a mode of its own, "pier-b", for an A/B against "pier" in the same rounds. */
const AB = listOption('--ab')?.[0];
if (withOvs && !existsSync('/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk')) {
  console.error('bench/vhost.ts: OVS-DPDK, the reference, is missing: apt-get install openvswitch-switch-dpdk (or run with --no-ovs)');
  process.exit(1);
}
const ALL_MODES: Mode[] = [...(withOvs ? ['testpmd', 'ovs-dpdk', 'pier', 'pier-busy-poll'] as const : ['testpmd', 'pier', 'pier-busy-poll'] as const),
  ...(withPacked ? ['testpmd-packed', 'pier-packed'] as const : []), ...(withSecured ? ['pier-secured'] as const : []), ...(AB ? ['pier-b'] as const : [])];
// --modes keeps some of them; testpmd always runs (every ratio has it as the first reference).
const only = listOption('--modes');
const MODES: Mode[] = only ? ALL_MODES.filter((m) => m === 'testpmd' || only.includes(m)) : ALL_MODES;
const isPier = (m: Mode): boolean => m === 'pier' || m === 'pier-busy-poll' || m === 'pier-packed' || m === 'pier-secured' || m === 'pier-b';
/**
 * --secured: pier with port-security=on on both ports (the cost of the checks, issue 15). The
 * "VM"'s vdevs get fixed MACs so the ports can name them; testpmd's frames are UDP from
 * 198.18.0.1 to .2. Frames circulate, so each port sees both MACs. The storm limit is off: every
 * frame of this loop is unknown unicast (its destination MAC never sends), which a storm limit
 * would cut, not cost.
 */
const SECURED_OPTS = 'port-security=on allowed-addresses=02:00:00:00:0a:01,02:00:00:00:0a:02,198.18.0.0/24 storm-limit=0 mac-limit=0';
/** The mode a mode is compared with: the same switch on split rings, and testpmd on the same layout. */
const PACKED_OF: Partial<Record<Mode, Mode>> = { 'testpmd-packed': 'testpmd', 'pier-packed': 'pier' };

/**
 * The harness with the "VM"'s virtio-user vdevs on packed rings: the same script with packed_vq=1
 * added to both vdevs (the shared harness is read-only and has no knob for it). Made once.
 */
function packedLoop(): string {
  return rewrittenLoop('packed', (vdev) => `${vdev},packed_vq=1`);
}

/** The harness with the "VM"'s vdevs given fixed MACs (02:00:00:00:0a:01 and :02), for --secured. */
function macLoop(): string {
  return rewrittenLoop('mac', (vdev) => `${vdev},mac=02:00:00:00:0a:0${Number(/net_virtio_user(\d)/.exec(vdev)![1]) + 1}`);
}

/** A copy of the shared harness (read-only, no knobs) with each virtio_user vdev rewritten. Made once. */
function rewrittenLoop(what: string, vdev: (v: string) => string): string {
  const out = `/tmp/pier-vhost-loop-${what}-${process.pid}.sh`;
  if (existsSync(out)) return out;
  const text = readFileSync(LOOP, 'utf8');
  let n = 0;
  const changed = text.replace(/(net_virtio_user[01],path=[^",]*,queues=1)/g, (v) => {
    n++;
    return vdev(v);
  });
  if (n !== 2) throw new Error(`${LOOP}: could not find the two virtio_user vdevs to rewrite (${what})`);
  writeFileSync(out, changed);
  chmodSync(out, 0o755);
  process.once('exit', () => rmSync(out, { force: true }));
  return out;
}
interface Sample { mpps: number; cpu?: number; nsPerPacket?: number; packetsPerBurst?: number; packetsPerWakeup?: number; emptyPollsPerBurst?: number }
const samples: Record<string, Sample[]> = {};

/** What pier's dataplane has done so far (pier show --json): packets, bursts and wake-ups, or undefined. */
function dataplaneCounts(socket: string): { packets: number; bursts: number; wakeups: number; emptyPolls: number } | undefined {
  try {
    const j = JSON.parse(execFileSync(join(ROOT, 'bin', 'pier'), ['show', '--json'], { env: { ...process.env, PIER_SOCKET: socket }, stdio: ['ignore', 'pipe', 'ignore'] }).toString());
    return { packets: Number(j.dataplane.packets), bursts: Number(j.dataplane.bursts), wakeups: Number(j.dataplane.wakeups), emptyPolls: Number(j.dataplane.emptyPolls) };
  } catch {
    return undefined;
  }
}


async function run(mode: Mode, len: number): Promise<void> {
  const info = `/tmp/pier-vhost-bench-${process.pid}.json`;
  rmSync(info, { force: true });
  rmSync(`${info}.sock`, { force: true });
  const args = [PACKED_OF[mode] ? packedLoop() : mode === 'pier-secured' ? macLoop() : LOOP, String(len)];
  const env: NodeJS.ProcessEnv = { ...process.env, T: String(T), PIER_INFO_OUT: info };
  if (mode === 'ovs-dpdk') args.push(`${OVS} {A} {B}`);
  else if (mode === 'pier-b') args.push(`${join(AB!, 'bench', 'pier-loop-switch.sh')} {A} {B}`);
  else if (mode !== 'testpmd' && mode !== 'testpmd-packed') args.push(`${SWITCH} {A} {B}`);
  if (mode === 'pier-busy-poll') env.PIER_PORT_OPTS = 'busy-poll=on';
  if (mode === 'pier-packed') env.PIER_PORT_OPTS = 'packed=on'; // vhost-user ports offer packed rings only when asked
  if (mode === 'pier-secured') env.PIER_PORT_OPTS = SECURED_OPTS;
  const p = spawn('bash', args, { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  const done = new Promise<void>((r) => p.once('exit', () => r()));
  // Pier's dataplane thread CPU over the measured part of the run.
  let cpu: number | undefined;
  let nsPerPacket: number | undefined;
  let packetsPerBurst: number | undefined;
  let packetsPerWakeup: number | undefined;
  let emptyPollsPerBurst: number | undefined;
  if (isPier(mode)) {
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
      const p0 = dataplaneCounts(socket);
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
      const p1 = dataplaneCounts(socket);
      const c2 = threadCpu(ids.pid, ids.tid);
      if (c2 !== undefined) {
        c1 = c2;
        t1 = Date.now();
      }
      if (c0 !== undefined && c1 !== undefined && t1 > t0) cpu = +((c1 - c0) / ((t1 - t0) / 1000)).toFixed(2);
      // CPU time of the dataplane thread per packet it received: what a packet costs pier,
      // whatever the loop's population did meanwhile (10 ms clock ticks over ~T s: +-1 %).
      if (c0 !== undefined && c1 !== undefined && p0 && p1 && p1.packets > p0.packets) nsPerPacket = Math.round(((c1 - c0) * 1e9) / (p1.packets - p0.packets));
      // How well work is batched: packets per received burst, and per epoll wake-up.
      if (p0 && p1 && p1.bursts > p0.bursts) packetsPerBurst = +((p1.packets - p0.packets) / (p1.bursts - p0.bursts)).toFixed(1);
      if (p0 && p1 && p1.wakeups > p0.wakeups) packetsPerWakeup = +((p1.packets - p0.packets) / (p1.wakeups - p0.wakeups)).toFixed(1);
      if (p0 && p1 && p1.bursts > p0.bursts && Number.isFinite(p1.emptyPolls - p0.emptyPolls)) emptyPollsPerBurst = +((p1.emptyPolls - p0.emptyPolls) / (p1.bursts - p0.bursts)).toFixed(2);
    }
  }
  await done;
  rmSync(info, { force: true });
  rmSync(`${info}.sock`, { force: true });
  const m = /Mpps ([\d.]+)/.exec(out);
  if (!m) throw new Error(`vhost-loop.sh gave no figure for ${mode} ${len}: ${out}`);
  const key = `${mode} ${len}`;
  (samples[key] ??= []).push({ mpps: Number(m[1]), ...(cpu !== undefined ? { cpu } : {}), ...(nsPerPacket !== undefined ? { nsPerPacket } : {}),
    ...(packetsPerBurst !== undefined ? { packetsPerBurst } : {}), ...(packetsPerWakeup !== undefined ? { packetsPerWakeup } : {}),
    ...(emptyPollsPerBurst !== undefined ? { emptyPollsPerBurst } : {}) });
  console.error(`${key.padEnd(22)} ${m[1]} Mpps${cpu !== undefined ? `  pier dataplane CPU ${Math.round(cpu * 100)}%` : ''}${nsPerPacket !== undefined ? `, ${nsPerPacket} ns/packet` : ''}${packetsPerBurst !== undefined ? `, ${packetsPerBurst} packets/burst, ${packetsPerWakeup ?? '-'} per wake-up, ${emptyPollsPerBurst ?? '-'} empty polls per burst` : ''}`);
}


for (let r = 0; r < ROUNDS; r++) {
  console.error(`-- round ${r + 1}/${ROUNDS}`);
  for (const len of SIZES) for (const mode of MODES) await run(mode, len);
}

const summary: Record<string, { mpps: number; cpu?: number; nsPerPacket?: number; packetsPerBurst?: number; packetsPerWakeup?: number; emptyPollsPerBurst?: number; samples: number[] }> = {};
const med = (xs: Sample[], f: (x: Sample) => number | undefined): number | undefined => {
  const v = xs.map(f).filter((x): x is number => x !== undefined);
  return v.length ? median(v) : undefined;
};
for (const [k, xs] of Object.entries(samples)) {
  const cpu = med(xs, (x) => x.cpu);
  const ns = med(xs, (x) => x.nsPerPacket);
  const ppb = med(xs, (x) => x.packetsPerBurst);
  const ppw = med(xs, (x) => x.packetsPerWakeup);
  const epb = med(xs, (x) => x.emptyPollsPerBurst);
  summary[k] = {
    mpps: +median(xs.map((x) => x.mpps)).toFixed(2), ...(cpu !== undefined ? { cpu } : {}),
    ...(ns !== undefined ? { nsPerPacket: Math.round(ns) } : {}),
    ...(ppb !== undefined ? { packetsPerBurst: ppb } : {}), ...(ppw !== undefined ? { packetsPerWakeup: ppw } : {}),
    ...(epb !== undefined ? { emptyPollsPerBurst: epb } : {}),
    samples: xs.map((x) => x.mpps),
  };
}
const hasOvs = MODES.includes('ovs-dpdk');
/** The modes held to OVS-DPDK, by the medians' ratio and by each round's own. */
const AGAINST_OVS = MODES.filter((x) => x === 'pier' || x === 'pier-busy-poll');
const ratio = (mode: string, len: number, ref = 'testpmd'): number => +(summary[`${mode} ${len}`]!.mpps / summary[`${ref} ${len}`]!.mpps).toFixed(2);
const ratios: Record<string, number> = {};
for (const len of SIZES) {
  for (const m of MODES.filter((x) => x !== 'testpmd')) ratios[`${m}/testpmd ${len}`] = ratio(m, len);
  // Packed against split, same switch; and pier against testpmd, both packed.
  if (MODES.includes('pier-secured') && MODES.includes('pier')) ratios[`pier-secured/pier ${len}`] = ratio('pier-secured', len, 'pier');
  if (MODES.includes('pier-b') && MODES.includes('pier')) {
    ratios[`pier-b/pier ${len}`] = ratio('pier-b', len, 'pier');
    const ns = (m: string): number => summary[`${m} ${len}`]!.nsPerPacket ?? NaN;
    ratios[`pier-b/pier CPU ns per packet ${len}`] = +(ns('pier-b') / ns('pier')).toFixed(2);
  }
  for (const m of MODES) if (PACKED_OF[m] && MODES.includes(PACKED_OF[m])) ratios[`${m}/${PACKED_OF[m]} ${len}`] = ratio(m, len, PACKED_OF[m]);
  if (MODES.includes('pier-packed') && MODES.includes('testpmd-packed')) ratios[`pier-packed/testpmd-packed ${len}`] = ratio('pier-packed', len, 'testpmd-packed');
  if (hasOvs) for (const m of AGAINST_OVS) ratios[`${m}/ovs-dpdk ${len}`] = ratio(m, len, 'ovs-dpdk');
}
// Each round's own ratio, pier's run against OVS-DPDK's a few seconds before it: the machine's
// mood swings (every switch's rounds spread over a factor of two or more) fall on both halves of
// a pair more often than on two medians taken from different rounds.
const pairedRatios: Record<string, { median: number; rounds: number[] }> = {};
if (hasOvs) {
  for (const len of SIZES) for (const m of AGAINST_OVS) {
    const a = samples[`${m} ${len}`]!, o = samples[`ovs-dpdk ${len}`]!;
    const rs = a.map((x, i) => +(x.mpps / o[i]!.mpps).toFixed(2));
    pairedRatios[`${m}/ovs-dpdk ${len}`] = { median: +median(rs).toFixed(2), rounds: rs };
  }
}
const result = {
  ...resultHead('vhost-user loop (../shared/bench/vhost-loop.sh): Mpps circulating through the switch', ROUNDS, T),
  summary,
  ratios,
  pairedRatios,
  // Every run as measured, round by round.
  runs: samples,
};
writeFileSync(join(ROOT, 'bench', 'results', `${OUT}.json`), JSON.stringify(result, null, 2) + '\n');
const rows = SIZES.flatMap((len) => MODES.map((m) => {
  const s = summary[`${m} ${len}`]!;
  const polls = !isPier(m) ? '100% (polls)' : '-';
  return `| ${len} | ${m} | ${s.mpps} | ${m === 'testpmd' ? '1.00' : ratio(m, len).toFixed(2)} | ${hasOvs ? `${ratio(m, len, 'ovs-dpdk').toFixed(2)} | ` : ''}${s.cpu !== undefined ? `${Math.round(s.cpu * 100)}%` : polls} | ${s.nsPerPacket ?? '-'} | ${s.packetsPerBurst ?? '-'} / ${s.packetsPerWakeup ?? '-'} | ${s.samples.join(', ')} |`;
}));
const md = [
  `# vhost-user loop: pier vs DPDK testpmd${hasOvs ? ' and OVS-DPDK' : ''} (${result.date.slice(0, 10)})`,
  '',
  `${result.machine.cpus} cores, ${result.machine.cpu}, kernel ${result.machine.kernel}, Node ${result.machine.node}; median of ${ROUNDS} rounds of ${T} s. Method: [../vhost.md](../vhost.md).`,
  '',
  `| packet bytes | switch | Mpps (median) | x testpmd | ${hasOvs ? 'x OVS-DPDK | ' : ''}switch dataplane CPU | pier CPU ns per packet | pier packets per burst / per wake-up | Mpps of each round |`,
  `|---|---|---|---|${hasOvs ? '---|' : ''}---|---|---|---|`,
  ...rows,
  '',
  ...(hasOvs ? ['Each round\'s own ratio to OVS-DPDK (the two switches measured in the same round, one after the other), and their median:', '',
    ...Object.entries(pairedRatios).map(([k, v]) => `- ${k} B: **${v.median}x** (${v.rounds.join(', ')})`), ''] : []),
].join('\n');
writeFileSync(join(ROOT, 'bench', 'results', `${OUT}.md`), md);
process.stdout.write(md);
