// Port security (issue 15), same run: (1) the cost of the checks on tap ports, TCP both ways with
// port-security on and off, rounds alternating; (2) what a legitimate container makes the bridge
// flood (broadcast, multicast, unknown unicast) while it starts and talks; (3) what a container
// flooding broadcasts at full speed costs two neighbours' TCP, with no storm limit and with the
// default. The vhost-user loop's A/B is bench/vhost.ts --secured. Method: bench/port-security.md.
// Usage (root): node --import tsx bench/port-security.ts [--rounds N] [--seconds T]
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Dir, median, option, resultHead, tapPair, tapPairTcp } from './common.ts';
import { delNetns, iperf, makeNetns, ROOT, TestDaemon } from '../test/helpers.ts';

const ROUNDS = option('--rounds', 3);
const T = option('--seconds', 8);

interface Tcp { gbps: number; cpu: number }
const tcp: Record<'off' | 'on', Record<Dir, Tcp[]>> = { off: { 'a->b': [], 'b->a': [] }, on: { 'a->b': [], 'b->a': [] } };

/** Two containers on tap ports, secured or not; iperf3 both ways. */
async function tcpRun(secured: boolean): Promise<void> {
  const d = new TestDaemon();
  const [a, b] = makeNetns(2) as [string, string];
  try {
    await d.start();
    const dp = tapPair(d, a, b, secured ? ['port-security=on'] : []);
    for (const dir of ['a->b', 'b->a'] as Dir[]) {
      const r = await tapPairTcp(dp, a, b, dir, T);
      tcp[secured ? 'on' : 'off'][dir].push({ gbps: +r.gbps.toFixed(2), cpu: +r.cpu.toFixed(2) });
      console.error(`tap TCP port-security=${secured ? 'on ' : 'off'} ${dir} ${r.gbps.toFixed(2)} Gbit/s, dataplane CPU ${Math.round(r.cpu * 100)}%`);
    }
    if (secured) {
      const l: Array<{ counters: Record<string, number> }> = d.json('stats', 'pa');
      const drops = Object.entries(l[0]!.counters).filter(([k, v]) => /spoofed|_ra$|dhcp_server|storm|unjudgeable/.test(k) && v > 0);
      if (drops.length > 0) throw new Error(`a legitimate container's TCP was dropped as forged: ${JSON.stringify(drops)}`);
    }
  } finally {
    await d.cleanup();
    delNetns([a, b]);
  }
}

/** A python3 loop sending broadcast frames as fast as it can from `ns` for `seconds`. */
function flood(ns: string, seconds: number): ReturnType<typeof spawn> {
  const py = [
    'import socket, time',
    's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
    "s.bind(('eth0', 0))",
    "f = b'\\xff' * 6 + bytes.fromhex('020000000c03') + b'\\x08\\x06' + bytes(46)",
    `end = time.time() + ${seconds}`,
    'n = 0',
    // A full tap queue refuses a frame (ENOBUFS): counted apart, the flood goes on.
    'refused = 0',
    'while time.time() < end:',
    '    for _ in range(256):',
    '        try:',
    '            s.send(f)',
    '            n += 1',
    '        except OSError:',
    '            refused += 1',
    'print(n, refused, flush=True)',
  ].join('\n');
  return spawn('ip', ['netns', 'exec', ns, 'python3', '-c', py], { stdio: ['ignore', 'pipe', 'ignore'] });
}

interface Storm { limit: number; gbps: number; sent: number; refused: number; dropped: number; flooded: number; pauses: number }
const storms: Storm[] = [];
let legit: { seconds: number; flooded: number; perSecondMax: number } | undefined;

/** a and b run TCP while c floods broadcasts; c's storm limit `limit` (0: none). */
async function stormRun(limit: number): Promise<void> {
  const d = new TestDaemon();
  const [a, b, c] = makeNetns(3) as [string, string, string];
  try {
    await d.start();
    tapPair(d, a, b);
    const t0 = Date.now();
    d.ok('add-port', 'br0', 'pc', 'type=tap', `netns=${c}`, 'ip=10.9.0.3/24', 'ifname=eth0', 'mac=02:00:00:00:0c:03', `storm-limit=${limit}`);
    const counters = (): Record<string, number> => {
      const l: Array<{ counters: Record<string, number> }> = d.json('stats', 'pc');
      return l[0]!.counters;
    };
    if (legit === undefined) {
      // A legitimate container: its interface comes up (IPv6 DAD, MLD, router solicitations),
      // it resolves and pings two neighbours, over 10 s from the attach. Floods it made, peak per second.
      const per: number[] = [];
      let last = counters().flooded ?? 0;
      const pinger = spawn('ip', ['netns', 'exec', c, 'sh', '-c', 'ping -c 20 -i 0.2 10.9.0.1 >/dev/null & ping -c 20 -i 0.2 10.9.0.2 >/dev/null & wait'], { stdio: 'ignore' });
      while (Date.now() - t0 < 10_000) {
        await new Promise((r) => setTimeout(r, 1000));
        const now = counters().flooded ?? 0;
        per.push(now - last);
        last = now;
      }
      pinger.kill();
      legit = { seconds: 10, flooded: last, perSecondMax: Math.max(...per) };
      console.error(`a legitimate container made the bridge flood ${last} frames in its first 10 s, at most ${legit.perSecondMax} in a second`);
    }
    const before = counters();
    const f = flood(c, T + 2);
    let sent = 0;
    let refused = 0;
    let out = '';
    f.stdout!.on('data', (x: Buffer) => {
      out += String(x);
      [sent = 0, refused = 0] = out.trim().split(' ').map(Number);
    });
    const done = new Promise<void>((r) => f.once('close', () => r())); // close: after its stdout
    const r = await iperf(b, a, '10.9.0.2', { seconds: T });
    await done;
    const after = counters();
    const s: Storm = { limit, gbps: +r.gbps.toFixed(2), sent, refused, dropped: (after.rx_dropped_storm ?? 0) - (before.rx_dropped_storm ?? 0), flooded: (after.flooded ?? 0) - (before.flooded ?? 0),
      pauses: (after.rx_storm_pauses ?? 0) - (before.rx_storm_pauses ?? 0) };
    storms.push(s);
    console.error(`storm from c (storm-limit=${limit || 'none'}): a->b ${s.gbps} Gbit/s; c sent ${sent} (${refused} refused by its interface), the bridge flooded ${s.flooded}, dropped ${s.dropped}, c's queue paused ${s.pauses} times`);
  } finally {
    await d.cleanup();
    delNetns([a, b, c]);
  }
}

// --storm-only: the storm runs and the quiet reference only, printed, not written (for experiments).
const STORM_ONLY = process.argv.includes('--storm-only');
const quiet: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  console.error(`-- round ${r + 1}/${ROUNDS}`);
  if (!STORM_ONLY) {
    await tcpRun(r % 2 === 1);
    await tcpRun(r % 2 === 0);
  }
  await stormRun(0);
  await stormRun(1000);
  // The neighbours' TCP with nobody flooding, for the comparison.
  const d = new TestDaemon();
  const [a, b] = makeNetns(2) as [string, string];
  try {
    await d.start();
    quiet.push(+(await tapPairTcp(tapPair(d, a, b), a, b, 'a->b', T)).gbps.toFixed(2));
  } finally {
    await d.cleanup();
    delNetns([a, b]);
  }
}

const med = (xs: number[]): number => +median(xs).toFixed(2);
const tcpSummary = Object.fromEntries((['off', 'on'] as const).map((m) => [m, Object.fromEntries((['a->b', 'b->a'] as Dir[]).map((d) => [d, { gbps: med(tcp[m][d].map((x) => x.gbps)), cpu: med(tcp[m][d].map((x) => x.cpu)), samples: tcp[m][d].map((x) => x.gbps) }]))]));
const stormSummary = [0, 1000].map((limit) => {
  const xs = storms.filter((s) => s.limit === limit);
  const perS = (f: (x: Storm) => number, seconds: number): number => Math.round(median(xs.map(f)) / seconds);
  return { limit, gbps: med(xs.map((x) => x.gbps)), sentPerSecond: perS((x) => x.sent, T + 2), refusedPerSecond: perS((x) => x.refused, T + 2),
    floodedPerSecond: perS((x) => x.flooded, T), droppedPerSecond: perS((x) => x.dropped, T), pausesPerSecond: perS((x) => x.pauses, T), samples: xs };
});
const out = {
  ...resultHead('port security: cost on tap TCP (on vs off), what a container floods, what a broadcast storm costs its neighbours', ROUNDS, T),
  tcp: tcpSummary,
  ratios: { 'on/off a->b': +(tcpSummary.on!['a->b']!.gbps / tcpSummary.off!['a->b']!.gbps).toFixed(3), 'on/off b->a': +(tcpSummary.on!['b->a']!.gbps / tcpSummary.off!['b->a']!.gbps).toFixed(3) },
  legitimate: legit,
  storm: { quietGbps: med(quiet), quietSamples: quiet, runs: stormSummary },
};
if (STORM_ONLY) {
  console.log(JSON.stringify({ quiet: med(quiet), quietSamples: quiet, storms: stormSummary.map(({ samples: _, ...x }) => x), samples: storms }, null, 2));
  process.exit(0);
}
writeFileSync(join(ROOT, 'bench', 'results', 'port-security.json'), JSON.stringify(out, null, 2) + '\n');
const md = [
  `# Port security: cost and storms (${out.date.slice(0, 10)})`,
  '',
  `${out.machine.cpus} cores, ${out.machine.cpu}, kernel ${out.machine.kernel}, Node ${out.machine.node}; median of ${ROUNDS} rounds of ${T} s. Method: [../port-security.md](../port-security.md).`,
  '',
  '| tap TCP, one iperf3 stream | a->b Gbit/s | b->a Gbit/s | pier dataplane CPU |',
  '|---|---|---|---|',
  ...(['off', 'on'] as const).map((m) => `| port-security=${m} | ${tcpSummary[m]!['a->b']!.gbps} | ${tcpSummary[m]!['b->a']!.gbps} | ${Math.round(tcpSummary[m]!['a->b']!.cpu * 100)}% / ${Math.round(tcpSummary[m]!['b->a']!.cpu * 100)}% |`),
  '',
  `on / off: **${out.ratios['on/off a->b']}x** a->b, **${out.ratios['on/off b->a']}x** b->a.`,
  '',
  `A legitimate container (interface up, IPv6 DAD and router solicitations, two neighbours resolved and pinged 5 times a second) made the bridge flood ${legit?.flooded} frames in its first 10 s, at most ${legit?.perSecondMax} in one second.`,
  '',
  '| neighbours a->b TCP while c floods broadcasts | Gbit/s (median) | c sent per s (refused by its interface) | pier flooded per s | pier dropped (storm) per s | c\'s queue paused per s |',
  '|---|---|---|---|---|---|',
  `| nobody flooding | ${out.storm.quietGbps} | - | - | - | - |`,
  ...stormSummary.map((s) => `| c floods, storm-limit=${s.limit || 'none'} | ${s.gbps} | ${s.sentPerSecond} (${s.refusedPerSecond}) | ${s.floodedPerSecond} | ${s.droppedPerSecond} | ${s.pausesPerSecond} |`),
  '',
  'Every frame c sends and pier does not read is dropped by the kernel at c\'s tap while pier leaves the queue unread (a full burst mostly over the limit pauses it for 20 ms).',
  '',
].join('\n');
writeFileSync(join(ROOT, 'bench', 'results', 'port-security.md'), md);
process.stdout.write(md);
