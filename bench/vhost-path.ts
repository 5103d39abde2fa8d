// The vhost-user datapath in one process, for A/B of changes to it: pier's virtio-user port
// (the driver) and pier's vhost-user port (the device) in one engine over a vhost-user socket, as
// in the daemon's dataplane thread. Each step the driver sends a burst of 32 64-byte frames
// (the device pops them from its transmitq, the engine forwards them to a bridge with no other
// port and releases them) and the device sends a burst of 32 (it copies them into the driver's
// posted buffers, the driver receives them). ns of the thread per frame, both directions
// together. The loop of bench/vhost.ts moves by 40 % from round to round on this machine; this
// figure moves by a few, so a change to the rings or the copies shows here first.
// The frames are UDP over IPv4, as in the loop; `--secured` puts port security on the device's
// port (the frames the driver sends are checked), for its A/B against the same run without; the
// device's frames then leave through a second device port to a second driver (both rounds alike),
// since a secured port's frames are judged where an output copies them.
// Runs the compiled code (dist/): `npm run build` first. Usage: node --import tsx bench/vhost-path.ts [--rounds N] [--packed] [--secured] [--compare-rings]
// (--compare-rings: split and packed rings alternating in one run, results/vhost-path-rings.*).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { machine, median, option } from './common.ts';
import { ROOT } from '../test/helpers.ts';

const ROUNDS = option('--rounds', 7);
/** pier's CPU per 64-byte packet in the testpmd loop (bench/vhost.ts, its fast rounds: 116-125 ns on 2026-12-04). */
const LOOP_NS = 120;
const STEPS = 20_000;
const BURST = 32;
if (process.argv.includes('--compare-rings')) {
  // Split and packed rings in one run: processes of one round each, alternating layouts (a port's
  // layout is fixed when it is made), so a drift of the machine falls on both alike.
  const figures: Record<'split' | 'packed', number[]> = { split: [], packed: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const packed of [false, true]) {
      const child = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'vhost-path.ts'), '--rounds', '3', '--emit', ...(packed ? ['--packed'] : [])],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      if (child.status !== 0) throw new Error(`bench/vhost-path.ts: a round failed (exit ${child.status})`);
      figures[packed ? 'packed' : 'split'].push((JSON.parse(child.stdout) as { ns: number }).ns);
    }
  }
  const split = +median(figures.split).toFixed(1);
  const packed = +median(figures.packed).toFixed(1);
  const date = new Date().toISOString().slice(0, 10);
  const m = machine();
  writeFileSync(join(ROOT, 'bench', 'results', 'vhost-path-rings.json'), JSON.stringify({ date, machine: m, rounds: ROUNDS, steps: STEPS, burst: BURST, nsPerFrame: { split, packed }, packedOverSplit: +(packed / split).toFixed(2), samples: figures }, null, 2) + '\n');
  writeFileSync(join(ROOT, 'bench', 'results', 'vhost-path-rings.md'), [
    `# vhost-user path in one process: split against packed rings, one run (${date})`,
    '',
    `${m.cpus} cores, ${m.cpu ?? '?'}, kernel ${m.kernel}, Node ${m.node}; ${ROUNDS} processes per layout, alternating, each the median of 3 rounds of ${STEPS} steps. Both ends are pier's (its virtio-user driver and its vhost-user device), so both sides of the ring are in the figure. Method: the comment at the top of [../vhost-path.ts](../vhost-path.ts).`,
    '',
    '| rings | ns per 64-byte frame, both directions (median) | each process |',
    '|---|---|---|',
    `| split | ${split} | ${figures.split.join(', ')} |`,
    `| packed | ${packed} | ${figures.packed.join(', ')} |`,
    '',
    `- packed / split: **${(packed / split).toFixed(2)}x** the time per frame.`,
    '',
  ].join('\n'));
  console.error(`split ${split} ns, packed ${packed} ns a frame (${(packed / split).toFixed(2)}x)`);
  process.exit(0);
}
const PACKED = process.argv.includes('--packed');
const SECURED = process.argv.includes('--secured');
const dist = (m: string): string => join(ROOT, 'dist', `${m}.js`);
if (!existsSync(dist('ports/virtio-user/dataplane'))) {
  console.error('bench/vhost-path.ts: dist/ is missing: run npm run build first');
  process.exit(1);
}
const { Engine } = await import(dist('dataplane/engine')) as typeof import('../src/dataplane/engine.ts');
const { C, newCounters } = await import(dist('dataplane/counters')) as typeof import('../src/dataplane/counters.ts');
const { listenVhostUser, closeListener } = await import(dist('ports/vhost-user/control')) as typeof import('../src/ports/vhost-user/control.ts');
const { VhostUserPort } = await import(dist('ports/vhost-user/dataplane')) as typeof import('../src/ports/vhost-user/dataplane.ts');
const { PortGuard } = await import(dist('dataplane/port-guard')) as typeof import('../src/dataplane/port-guard.ts');
const { VirtioUserPort } = await import(dist('ports/virtio-user/dataplane')) as typeof import('../src/ports/virtio-user/dataplane.ts');

const dir = mkdtempSync(join(tmpdir(), 'pier-vhost-path-'));
const path = join(dir, 'dev.sock');
const engine = new Engine(4096, undefined, () => {});
engine.addBridge(1, 'dev');
engine.addBridge(2, 'drv');
const listenFd = listenVhostUser(path);
const devCounters = newCounters();
const drvCounters = newCounters();
const dev = new VhostUserPort(1, 'dev', 1, devCounters, engine.pool, { path, server: true, listenFd, queuePairs: 1, mtu: 0, maxQueueSize: 32768, busyPoll: false, requireSealedMemory: false, packed: PACKED });
const drv = new VirtioUserPort(2, 'drv', 2, drvCounters, engine.pool, {
  backend: 'vhost-user', path, server: false, listenFd: -1, queueSize: 256, queuePairs: 1, packed: PACKED, vhostFds: [], tapFds: [],
});
engine.addPort(dev);
engine.addPort(drv);
const guard = new PortGuard({ macs: ['02:00:00:00:00:09'], addresses: [{ ip: '198.18.0.0/24' }], trunk: false });
// With --secured, the device's frames leave through a second device port (dev2, to pier's driver
// drv2 on a bridge of its own), as in the loop: a secured port's frames are lent unjudged and
// judged where an output copies them, so an output must be there for the check to be counted.
const path2 = join(dir, 'dev2.sock');
const listenFd2 = SECURED ? listenVhostUser(path2) : -1;
const drv2Counters = newCounters();
let dev2: InstanceType<typeof VhostUserPort> | undefined;
let drv2: InstanceType<typeof VirtioUserPort> | undefined;
if (SECURED) {
  engine.addBridge(3, 'drv2');
  dev2 = new VhostUserPort(3, 'dev2', 1, newCounters(), engine.pool, { path: path2, server: true, listenFd: listenFd2, queuePairs: 1, mtu: 0, maxQueueSize: 32768, busyPoll: false, requireSealedMemory: false, packed: PACKED });
  drv2 = new VirtioUserPort(4, 'drv2', 3, drv2Counters, engine.pool, {
    backend: 'vhost-user', path: path2, server: false, listenFd: -1, queueSize: 256, queuePairs: 1, packed: PACKED, vhostFds: [], tapFds: [],
  });
  engine.addPort(dev2);
  engine.addPort(drv2);
  guard.counters = devCounters;
}

function turnUntil(done: () => boolean, ms: number): void {
  const end = Date.now() + ms;
  while (!done()) {
    if (Date.now() > end) throw new Error(`bench/vhost-path.ts: timed out (driver ${JSON.stringify(drv.describe())})`);
    engine.turn(0);
  }
}
const peer = (): { link: string; rxPosted: number } => drv.describe();
turnUntil(() => peer().link === 'up' && peer().rxPosted >= BURST && (dev.describe() as { queuePairs: { enabled: number } }).queuePairs.enabled === 1, 5000);
if (drv2 && dev2) {
  const d2 = drv2;
  const v2 = dev2;
  turnUntil(() => (d2.describe() as { link: string }).link === 'up' && (d2.describe() as { rxPosted: number }).rxPosted >= BURST && (v2.describe() as { queuePairs: { enabled: number } }).queuePairs.enabled === 1, 5000);
}

/** A burst of 64-byte broadcast frames in fresh pool buffers (the bridges flood them to nobody). */
const q = new Int32Array(BURST);
// UDP 198.18.0.1 -> .255 from 02:00:00:00:00:09, 64 bytes (the loop's frames, to broadcast).
const frame = Uint8Array.from([255, 255, 255, 255, 255, 255, 2, 0, 0, 0, 0, 9, 8, 0, 0x45, 0, 0, 50, 0, 0, 0, 0, 64, 17, 0, 0,
  198, 18, 0, 1, 198, 18, 0, 255, 0x04, 0xd2, 0x16, 0x2e, 0, 30, 0, 0, ...new Array<number>(22).fill(0)]);
function burst(): Int32Array {
  const pool = engine.pool;
  for (let i = 0; i < BURST; i++) {
    const h = pool.alloc();
    const fo = pool.frameOffset(h);
    pool.bytes.fill(0, pool.hdrOffset(h), fo);
    pool.bytes.set(frame, fo);
    pool.len[h] = frame.length;
    q[i] = h;
  }
  return q;
}

/** ns per frame over STEPS steps of one burst each way; the frames' making is timed apart and taken out. */
function run(steps = STEPS): number {
  let made = 0n;
  const t0 = process.hrtime.bigint();
  for (let s = 0; s < steps; s++) {
    const rxDev = devCounters[C.rx_packets]!;
    const rxDrv = drvCounters[C.rx_packets]!;
    const rxDrv2 = drv2Counters[C.rx_packets]!;
    let m0 = process.hrtime.bigint();
    burst();
    made += process.hrtime.bigint() - m0;
    drv.transmit(q, BURST);
    m0 = process.hrtime.bigint();
    burst();
    made += process.hrtime.bigint() - m0;
    dev.transmit(q, BURST);
    turnUntil(() => devCounters[C.rx_packets]! >= rxDev + BURST && drvCounters[C.rx_packets]! >= rxDrv + BURST && (!SECURED || drv2Counters[C.rx_packets]! >= rxDrv2 + BURST), 2000);
  }
  return Number(process.hrtime.bigint() - t0 - made) / steps / (2 * BURST);
}

run(); // warm up
// With --secured, short rounds alternate: the device's port unsecured, then secured (the guard
// checks each frame the driver sent before the bridge sees it), 20 pairs for each round asked,
// so both figures come from one run and whatever else the machine does falls on both alike.
const samples: number[] = [];
const securedSamples: number[] = [];
for (let r = 0; r < (SECURED ? 20 * ROUNDS : ROUNDS); r++) {
  dev.guard = null;
  samples.push(+run(SECURED ? STEPS / 20 : STEPS).toFixed(1));
  if (!SECURED) continue;
  dev.guard = guard;
  securedSamples.push(+run(STEPS / 20).toFixed(1));
}
const lost = drvCounters[C.tx_dropped_full]! + devCounters[C.tx_dropped_full]! + devCounters[C.rx_dropped_no_buffer]! + drvCounters[C.rx_dropped_no_buffer]! + drv2Counters[C.rx_dropped_no_buffer]!;
const refused = guard.lastDrop();
if (SECURED) {
  engine.removePort(4);
  engine.removePort(3);
  closeListener(listenFd2, path2);
}
engine.removePort(2);
engine.removePort(1);
closeListener(listenFd, path);
rmSync(dir, { recursive: true, force: true });
if (lost > 0) throw new Error(`bench/vhost-path.ts: ${lost} frames dropped: the figure would not be per frame`);
if (refused !== null) throw new Error(`bench/vhost-path.ts: the guard dropped a frame (${refused.detail}): the secured figure would not be per frame`);
const ns = +median(samples).toFixed(1);
const ring = PACKED ? 'packed' : 'split';
if (process.argv.includes('--emit')) {
  // A round of --compare-rings: the figure on stdout, no files.
  process.stdout.write(JSON.stringify({ ring, ns, samples }) + '\n');
  process.exit(0);
}
console.error(`vhost-user path in one process (${ring} rings): ${ns} ns a frame, both directions${SECURED ? '' : ` (rounds: ${samples.join(', ')})`}`);
const date = new Date().toISOString().slice(0, 10);
const m = machine();
const head = `${m.cpus} cores, ${m.cpu ?? '?'}, kernel ${m.kernel}, Node ${m.node}; median of ${ROUNDS} rounds of ${STEPS} steps. Method: the comment at the top of [../vhost-path.ts](../vhost-path.ts).`;
if (SECURED) {
  const on = +median(securedSamples).toFixed(1);
  // Only the driver's frames are checked: one of the two frames a step counts per direction.
  const added = +(2 * (on - ns)).toFixed(1);
  console.error(`secured: ${on} ns a frame; ${added} ns added per checked frame`);
  const name = PACKED ? 'vhost-path-secured-packed' : 'vhost-path-secured';
  writeFileSync(join(ROOT, 'bench', 'results', `${name}.json`), JSON.stringify({ date, machine: m, rounds: ROUNDS, steps: STEPS, burst: BURST, ring, nsPerFrame: { off: ns, on }, addedPerCheckedFrame: added, samples: { off: samples, on: securedSamples } }, null, 2) + '\n');
  writeFileSync(join(ROOT, 'bench', 'results', `${name}.md`), [
    `# Port security on the vhost-user path in one process, ${ring} rings (${date})`,
    '',
    head.replace(`${ROUNDS} rounds of ${STEPS} steps`, `${20 * ROUNDS} rounds of ${STEPS / 20} steps, alternating off and on`),
    '',
    '| device port | ns per frame, both directions (median) | fastest round | slowest round |',
    '|---|---|---|---|',
    `| port-security=off | ${ns} | ${Math.min(...samples)} | ${Math.max(...samples)} |`,
    `| port-security=on | ${on} | ${Math.min(...securedSamples)} | ${Math.max(...securedSamples)} |`,
    '',
    'Every round is in the JSON file beside this one.',
    '',
    `- on / off: **${(ns / on).toFixed(3)}x** the frame rate; **${added} ns** added per checked frame (only the driver-to-device half of the frames is checked, so the difference of the medians counts twice).`,
    `- against the loop: there pier spends ${LOOP_NS} ns of its CPU a 64-byte packet (pop, forward, copy into the other guest; bench/vhost.ts's fast rounds), so ${added} ns added per checked frame is **${(LOOP_NS / (LOOP_NS + added)).toFixed(2)}x** the loop's rate when both its ports are secured. This ratio, not the one above (diluted by the driver's half of the work, which in the loop is testpmd's), is the one against the 5 % target.`,
    '',
  ].join('\n'));
} else {
  const name = PACKED ? 'vhost-path-packed' : 'vhost-path';
  writeFileSync(join(ROOT, 'bench', 'results', `${name}.json`), JSON.stringify({ date, machine: m, rounds: ROUNDS, steps: STEPS, burst: BURST, ring, nsPerFrame: ns, samples }, null, 2) + '\n');
  writeFileSync(join(ROOT, 'bench', 'results', `${name}.md`), [
    `# vhost-user path in one process, ${ring} rings (${date})`,
    '',
    head,
    '',
    `**${ns} ns** of the dataplane thread per 64-byte frame, pier's driver and device both counted (each round: ${samples.join(', ')}).`,
    '',
  ].join('\n'));
}
