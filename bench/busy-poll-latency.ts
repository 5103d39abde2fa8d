// busy-poll=on against the default, for what the option is kept for: latency of request and
// reply. A container on a tap port floods pings (`ping -f`: each request leaves when the last
// reply came back, so the next frame reaches pier within microseconds of the last) at DPDK
// testpmd in icmpecho mode on a vhost-user port, through one pier bridge. The vhost-user port's
// busy-poll is switched between rounds (set-port, with no peer attached; written when the change
// rebuilt the port's dataplane half, which a DPDK virtio-user client does not reconnect to), and
// testpmd is started again for each round, so both modes run in one run. Reported: round trips per second,
// ping's RTT, and the daemon's CPU per round trip.
// Usage (root): node --import tsx bench/busy-poll-latency.ts [--rounds N] [--count C]
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { median, option, resultHead } from './common.ts';
import { delNetns, makeNetns, nsExec, ROOT, TestDaemon } from '../test/helpers.ts';
import { Testpmd } from '../test/testpmd.ts';

const ROUNDS = option('--rounds', 5);
const COUNT = option('--count', 20_000);
const PEER = '10.91.0.2';
type Mode = 'off' | 'on';

/** CPU seconds the process has used (user + system), from /proc. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

interface Sample { perSecond: number; rttAvgUs: number; rttMinUs: number; cpuUsPerTrip: number }

const d = new TestDaemon();
const [ns] = makeNetns(1) as [string];
let t: Testpmd | undefined;
const samples: Record<Mode, Sample[]> = { off: [], on: [] };
try {
  await d.start();
  d.ok('add-br', 'br0');
  d.ok('add-port', 'br0', 'c', 'type=tap', `netns=${ns}`, 'ip=10.91.0.1/24', 'ifname=eth0');
  d.ok('add-port', 'br0', 'vm', 'type=vhost-user', `path=${d.dir}/vm.sock`);
  const pid = d.proc!.pid!;
  for (let r = 0; r < ROUNDS; r++) {
    for (const mode of (r % 2 ? ['on', 'off'] : ['off', 'on']) as Mode[]) {
      d.ok('set-port', 'vm', `busy-poll=${mode}`);
      t = new Testpmd([`net_virtio_user0,path=${d.dir}/vm.sock`], 'icmpecho');
      await t.start();
      const warm = nsExec(ns, 'ping', ['-c', '3', '-W', '2', PEER], 15_000);
      if (warm.code !== 0) throw new Error(`bench/busy-poll-latency.ts: testpmd does not answer: ${warm.stdout}${warm.stderr}`);
      const c0 = cpuSeconds(pid);
      const t0 = process.hrtime.bigint();
      const p = nsExec(ns, 'ping', ['-f', '-q', '-c', String(COUNT), PEER], 120_000);
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      const cpu = cpuSeconds(pid) - c0;
      const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\//.exec(p.stdout);
      const got = /(\d+) received/.exec(p.stdout);
      if (!rtt || !got || Number(got[1]) < COUNT * 0.99) throw new Error(`bench/busy-poll-latency.ts: ping -f lost replies (${mode}): ${p.stdout}${p.stderr}`);
      const sample = { perSecond: Math.round(Number(got[1]) / s), rttAvgUs: Math.round(Number(rtt[2]) * 1000), rttMinUs: Math.round(Number(rtt[1]) * 1000), cpuUsPerTrip: +(cpu * 1e6 / Number(got[1])).toFixed(1) };
      samples[mode].push(sample);
      console.error(`round ${r + 1} busy-poll=${mode}: ${sample.perSecond} round trips/s, rtt avg ${sample.rttAvgUs} us (min ${sample.rttMinUs}), daemon CPU ${sample.cpuUsPerTrip} us a round trip`);
      await t.kill();
      t = undefined;
    }
  }
} finally {
  await t?.kill();
  await d.cleanup();
  delNetns([ns]);
}

const med = (m: Mode, k: keyof Sample): number => median(samples[m].map((x) => x[k]));
const keys: Array<[keyof Sample, string]> = [['perSecond', 'round trips per second'], ['rttAvgUs', 'RTT avg, µs'], ['rttMinUs', 'RTT min, µs'], ['cpuUsPerTrip', 'daemon CPU per round trip, µs']];
/** Median over the rounds of on / off for one figure. */
const pairedRatio = (k: keyof Sample): number => +median(samples.on.map((x, i) => x[k] / samples.off[i]![k])).toFixed(2);
const ahead = samples.on.filter((x, i) => x.perSecond > samples.off[i]!.perSecond).length;
console.error(`paired: round trips/s on/off ${pairedRatio('perSecond')}x, RTT avg ${pairedRatio('rttAvgUs')}x, on ahead in ${ahead}/${ROUNDS} rounds`);
const head = resultHead('busy-poll-latency', ROUNDS, 0);
writeFileSync(join(ROOT, 'bench', 'results', 'busy-poll-latency.json'), JSON.stringify({ ...head, count: COUNT, samples, paired: { perSecond: pairedRatio('perSecond'), rttAvgUs: pairedRatio('rttAvgUs') }, onAhead: ahead }, null, 2) + '\n');
const m = head.machine;
writeFileSync(join(ROOT, 'bench', 'results', 'busy-poll-latency.md'), [
  `# busy-poll=on against the default: ping -f from a tap container to testpmd icmpecho on a vhost-user port (${head.date.slice(0, 10)})`,
  '',
  `${m.cpus} cores, ${m.cpu ?? '?'}, kernel ${m.kernel}, Node ${m.node}; ${ROUNDS} rounds of ${COUNT} round trips per mode, modes alternating (set-port, testpmd started again each time). Method: the comment at the top of [../busy-poll-latency.ts](../busy-poll-latency.ts).`,
  '',
  '| | busy-poll=off (default) | busy-poll=on | on / off |',
  '|---|---|---|---|',
  ...keys.map(([k, label]) => `| ${label} (median) | ${med('off', k)} | ${med('on', k)} | ${(med('on', k) / med('off', k)).toFixed(2)} |`),
  '',
  `Paired by round (the machine's load drifts between rounds more than the modes differ): round trips per second on / off **${pairedRatio('perSecond')}x** (median of the rounds' ratios), RTT avg on / off **${pairedRatio('rttAvgUs')}x**; busy-poll=on ahead in ${ahead} of ${ROUNDS} rounds.`,
  '',
  'Each round:',
  '',
  '| round | mode | round trips/s | RTT avg µs | RTT min µs | CPU µs per trip |',
  '|---|---|---|---|---|---|',
  ...samples.off.flatMap((x, i) => (['off', 'on'] as Mode[]).map((mode) => {
    const y = mode === 'off' ? x : samples.on[i]!;
    return `| ${i + 1} | ${mode} | ${y.perSecond} | ${y.rttAvgUs} | ${y.rttMinUs} | ${y.cpuUsPerTrip} |`;
  })),
  '',
].join('\n'));
