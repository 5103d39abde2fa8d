// The vhost-user datapath in one process, for A/B of changes to it: pier's virtio-user port
// (the driver) and pier's vhost-user port (the device) in one engine over a vhost-user socket, as
// in the daemon's dataplane thread. Each step the driver sends a burst of 32 64-byte frames
// (the device pops them from its transmitq, the engine forwards them to a bridge with no other
// port and releases them) and the device sends a burst of 32 (it copies them into the driver's
// posted buffers, the driver receives them). ns of the thread per frame, both directions
// together. The loop of bench/vhost.ts moves by 40 % from round to round on this machine; this
// figure moves by a few, so a change to the rings or the copies shows here first.
// Runs the compiled code (dist/): `npm run build` first. Usage: node --import tsx bench/vhost-path.ts [--rounds N] [--packed]
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { machine, median, option } from './common.ts';
import { ROOT } from '../test/helpers.ts';

const ROUNDS = option('--rounds', 7);
const STEPS = 20_000;
const BURST = 32;
const PACKED = process.argv.includes('--packed');
const dist = (m: string): string => join(ROOT, 'dist', `${m}.js`);
if (!existsSync(dist('ports/virtio-user/dataplane'))) {
  console.error('bench/vhost-path.ts: dist/ is missing: run npm run build first');
  process.exit(1);
}
const { Engine } = await import(dist('dataplane/engine')) as typeof import('../src/dataplane/engine.ts');
const { C, newCounters } = await import(dist('dataplane/counters')) as typeof import('../src/dataplane/counters.ts');
const { listenVhostUser, closeListener } = await import(dist('ports/vhost-user/control')) as typeof import('../src/ports/vhost-user/control.ts');
const { VhostUserPort } = await import(dist('ports/vhost-user/dataplane')) as typeof import('../src/ports/vhost-user/dataplane.ts');
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

function turnUntil(done: () => boolean, ms: number): void {
  const end = Date.now() + ms;
  while (!done()) {
    if (Date.now() > end) throw new Error(`bench/vhost-path.ts: timed out (driver ${JSON.stringify(drv.describe())})`);
    engine.turn(0);
  }
}
const peer = (): { link: string; rxPosted: number } => drv.describe();
turnUntil(() => peer().link === 'up' && peer().rxPosted >= BURST && (dev.describe() as { queuePairs: { enabled: number } }).queuePairs.enabled === 1, 5000);

/** A burst of 64-byte broadcast frames in fresh pool buffers (the bridges flood them to nobody). */
const q = new Int32Array(BURST);
function burst(): Int32Array {
  const pool = engine.pool;
  for (let i = 0; i < BURST; i++) {
    const h = pool.alloc();
    const fo = pool.frameOffset(h);
    pool.bytes.fill(0, pool.hdrOffset(h), fo + 64);
    pool.bytes.fill(0xff, fo, fo + 6);
    pool.bytes.set([2, 0, 0, 0, 0, 9, 0x88, 0xb5], fo + 6);
    pool.len[h] = 64;
    q[i] = h;
  }
  return q;
}

/** ns per frame over STEPS steps of one burst each way; the frames' making is timed apart and taken out. */
function run(): number {
  let made = 0n;
  const t0 = process.hrtime.bigint();
  for (let s = 0; s < STEPS; s++) {
    const rxDev = devCounters[C.rx_packets]!;
    const rxDrv = drvCounters[C.rx_packets]!;
    let m0 = process.hrtime.bigint();
    burst();
    made += process.hrtime.bigint() - m0;
    drv.transmit(q, BURST);
    m0 = process.hrtime.bigint();
    burst();
    made += process.hrtime.bigint() - m0;
    dev.transmit(q, BURST);
    turnUntil(() => devCounters[C.rx_packets]! >= rxDev + BURST && drvCounters[C.rx_packets]! >= rxDrv + BURST, 2000);
  }
  return Number(process.hrtime.bigint() - t0 - made) / STEPS / (2 * BURST);
}

run(); // warm up
const samples: number[] = [];
for (let r = 0; r < ROUNDS; r++) samples.push(+run().toFixed(1));
const lost = drvCounters[C.tx_dropped_full]! + devCounters[C.tx_dropped_full]! + devCounters[C.rx_dropped_no_buffer]! + drvCounters[C.rx_dropped_no_buffer]!;
engine.removePort(2);
engine.removePort(1);
closeListener(listenFd, path);
rmSync(dir, { recursive: true, force: true });
if (lost > 0) throw new Error(`bench/vhost-path.ts: ${lost} frames dropped: the figure would not be per frame`);
const ns = median(samples);
console.error(`vhost-user path in one process (${PACKED ? 'packed' : 'split'} rings): ${ns} ns a frame, both directions (rounds: ${samples.join(', ')})`);
const name = PACKED ? 'vhost-path-packed' : 'vhost-path';
const date = new Date().toISOString().slice(0, 10);
writeFileSync(join(ROOT, 'bench', 'results', `${name}.json`), JSON.stringify({ date, machine: machine(), rounds: ROUNDS, steps: STEPS, burst: BURST, ring: PACKED ? 'packed' : 'split', nsPerFrame: ns, samples }, null, 2) + '\n');
const m = machine();
writeFileSync(join(ROOT, 'bench', 'results', `${name}.md`), [
  `# vhost-user path in one process, ${PACKED ? 'packed' : 'split'} rings (${date})`,
  '',
  `${m.cpus} cores, ${m.cpu ?? '?'}, kernel ${m.kernel}, Node ${m.node}; median of ${ROUNDS} rounds of ${STEPS} steps. Method: the comment at the top of [../vhost-path.ts](../vhost-path.ts).`,
  '',
  `**${ns} ns** of the dataplane thread per 64-byte frame, pier's driver and device both counted (each round: ${samples.join(', ')}).`,
  '',
].join('\n'));
