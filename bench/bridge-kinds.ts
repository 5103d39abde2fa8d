// The bridge's per-packet cost with ports of one kind against ports of five kinds (classes), as a
// node mixes them (taps, vhost-user, an uplink, a tunnel, the links between threads). V8 keys its
// inline caches on an object's map, one per class: the bridge's loads of an output port's fields
// see as many maps as there are kinds, and beyond four it gives up on them (megamorphic). Eight
// ports on one bridge, bursts of 32 64-byte frames from each port in turn, unicast to the next
// port's learned MAC and broadcast (flooded to the seven others); the frames' making is timed
// apart and taken out, and the output ports release what they are handed. Each case runs in a
// process of its own, so no case's feedback reaches another. Runs compiled code: `npm run build`
// first; `--dist DIR` measures another build (an A/B: the tree before a change).
// Usage: node --import tsx bench/bridge-kinds.ts [--rounds N] [--dist DIR]
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { machine, median, option } from './common.ts';
import { ROOT } from '../test/helpers.ts';

const ROUNDS = option('--rounds', 5);
const BURST = 32;
const STEPS = 40_000;
const distArg = process.argv.indexOf('--dist');
const DIST = distArg >= 0 ? process.argv[distArg + 1]! : join(ROOT, 'dist');
const caseArg = process.argv.indexOf('--case');

if (caseArg < 0) {
  if (!existsSync(join(DIST, 'dataplane', 'bridge.js'))) {
    console.error(`bench/bridge-kinds.ts: ${DIST}/dataplane/bridge.js is missing: run npm run build first`);
    process.exit(1);
  }
  const cases = ['1 unicast', '5 unicast', '1 flood', '5 flood'];
  const figures: Record<string, number[]> = {};
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of cases) {
      const child = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'bridge-kinds.ts'), '--case', c, '--dist', DIST],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      if (child.status !== 0) throw new Error(`bench/bridge-kinds.ts: case ${c} failed (exit ${child.status})`);
      (figures[c] ??= []).push(Number(child.stdout.trim()));
    }
  }
  const med = Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, +median(v).toFixed(1)]));
  const date = new Date().toISOString().slice(0, 10);
  const m = machine();
  const name = distArg >= 0 ? 'bridge-kinds-other-build' : 'bridge-kinds';
  writeFileSync(join(ROOT, 'bench', 'results', `${name}.json`), JSON.stringify({ date, machine: m, dist: DIST, rounds: ROUNDS, steps: STEPS, burst: BURST, nsPerPacket: med, samples: figures }, null, 2) + '\n');
  writeFileSync(join(ROOT, 'bench', 'results', `${name}.md`), [
    `# The bridge's cost per packet with one port kind and with five (${date})`,
    '',
    `${m.cpus} cores, ${m.cpu ?? '?'}, kernel ${m.kernel}, Node ${m.node}; build ${distArg >= 0 ? DIST : 'dist/ of this tree'}; median of ${ROUNDS} processes per case, ${STEPS} bursts of ${BURST} each. Method: the comment at the top of [../bridge-kinds.ts](../bridge-kinds.ts).`,
    '',
    '| port kinds on the bridge | unicast, ns per packet | flood to 7 ports, ns per packet |',
    '|---|---|---|',
    `| 1 | ${med['1 unicast']} (${figures['1 unicast']!.join(', ')}) | ${med['1 flood']} (${figures['1 flood']!.join(', ')}) |`,
    `| 5 | ${med['5 unicast']} (${figures['5 unicast']!.join(', ')}) | ${med['5 flood']} (${figures['5 flood']!.join(', ')}) |`,
    '',
  ].join('\n'));
  console.error(Object.entries(med).map(([k, v]) => `${k}: ${v} ns`).join(', '));
  process.exit(0);
}

// ---- one case, in its own process ----
const [kindsText, traffic] = process.argv[caseArg + 1]!.split(' ') as [string, 'unicast' | 'flood'];
const KINDS = Number(kindsText);
const { Bridge } = await import(join(DIST, 'dataplane', 'bridge.js')) as typeof import('../src/dataplane/bridge.ts');
const { Port } = await import(join(DIST, 'dataplane', 'port.js')) as typeof import('../src/dataplane/port.ts');
const { PacketPool } = await import(join(DIST, 'dataplane', 'pool.js')) as typeof import('../src/dataplane/pool.ts');
const { newCounters } = await import(join(DIST, 'dataplane', 'counters.js')) as typeof import('../src/dataplane/counters.ts');
type PortT = InstanceType<typeof Port>;

const pool = new PacketPool(4096);
abstract class BenchPort extends Port {
  readonly fds: readonly number[] = [];
  constructor(index: number) {
    super(index, `p${index}`, 1, newCounters(), pool, true, true);
  }
  receive(): number {
    return 0;
  }
  transmit(q: Int32Array, n: number): void {
    for (let i = 0; i < n; i++) pool.release(q[i]!);
  }
  close(): void {}
}
// Five classes of different shapes, as pier's port kinds are.
class K0 extends BenchPort { a = 1; }
class K1 extends BenchPort { b = 1; c = 2; }
class K2 extends BenchPort { d = new Int32Array(4); }
class K3 extends BenchPort { e = 'x'; f = 0; g = 0; }
class K4 extends BenchPort { h: number[] = []; }
const classes = [K0, K1, K2, K3, K4];
const br = new Bridge(1, 'br', pool);
const ports: PortT[] = [];
for (let i = 0; i < 8; i++) {
  const p = new classes[i % KINDS]!(i + 1);
  ports.push(p);
  br.addPort(p);
}
// The two forward() signatures: before PortOut (…, portsByIndex, flush) and after (…, flush).
const byIndex: Array<PortT | undefined> = [];
for (const p of ports) byIndex[p.index] = p;
const txCount = (p: PortT): number => ((p as unknown as { out?: { txCount: number } }).out ?? (p as unknown as { txCount: number })).txCount;
const txOf = (p: PortT): { txq: Int32Array; txCount: number } => (p as unknown as { out?: { txq: Int32Array; txCount: number } }).out ?? (p as unknown as { txq: Int32Array; txCount: number });
const flush = (p: PortT): void => {
  const o = txOf(p);
  const n = o.txCount;
  o.txCount = 0;
  p.transmit(o.txq, n);
};
const forward = br.forward.length === 5
  ? (p: PortT, q: Int32Array, n: number): void => (br.forward as unknown as (a: PortT, b: Int32Array, c: number, d: unknown, e: (p: PortT) => void) => void)(p, q, n, byIndex, flush)
  : (p: PortT, q: Int32Array, n: number): void => (br.forward)(p, q, n, flush);

// The end of a burst as each build's engine does it: the outputs the bridge listed (flushTouched,
// with PortOut) or every member with packets queued (before it).
const touchedFlush = (br as unknown as { flushTouched?: (f: (p: PortT) => void) => void }).flushTouched?.bind(br);
const endBurst = touchedFlush ? (): void => touchedFlush(flush) : (): void => {
  for (const p of ports) if (txCount(p) > 0) flush(p);
};
const mac = (i: number): number[] => [2, 0, 0, 0, 0, i + 1];
const q = new Int32Array(BURST);
function burst(from: number, to: number): void {
  for (let i = 0; i < BURST; i++) {
    const h = pool.alloc();
    const fo = pool.frameOffset(h);
    const b = pool.bytes;
    b.fill(0, pool.hdrOffset(h), fo + 64);
    if (traffic === 'flood') b.fill(0xff, fo, fo + 6);
    else b.set(mac(to), fo);
    b.set(mac(from), fo + 6);
    b[fo + 12] = 0x08;
    pool.len[h] = 64;
    q[i] = h;
  }
}
// Every port's MAC learned (and every kind through the sites) before the clock starts.
for (let r = 0; r < 200; r++) {
  for (let i = 0; i < 8; i++) {
    burst(i, (i + 1) % 8);
    forward(ports[i]!, q, BURST);
    endBurst();
  }
}
let made = 0n;
const t0 = process.hrtime.bigint();
for (let s = 0; s < STEPS; s++) {
  const i = s & 7;
  const m0 = process.hrtime.bigint();
  burst(i, (i + 1) & 7);
  made += process.hrtime.bigint() - m0;
  forward(ports[i]!, q, BURST);
  endBurst();
}
process.stdout.write(`${(Number(process.hrtime.bigint() - t0 - made) / (STEPS * BURST)).toFixed(1)}\n`);
