// Port security's per-frame cost on the 64-byte vhost-user path, in one process, no peer: what a
// burst of 32 lent frames costs the engine, from the pop to the output's copy into the receiving
// guest's buffer, with a secured port against an unsecured one; and what the design before it
// (copy on pop, judged as copied) cost in the same run. The loop benchmark (bench/vhost.ts
// --secured) shows the whole effect, but on this machine its rounds move by 40 %; this one moves
// by a few. Runs the compiled code (dist/, what the daemon runs): `npm run build` first.
// Method: bench/port-security.md. Usage: node --import tsx bench/guard.ts [--rounds N]
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { machine, median, option } from './common.ts';
import { ROOT } from '../test/helpers.ts';

const ROUNDS = option('--rounds', 7);
const BURSTS = 200_000;
const BURST = 32;
const dist = (m: string): string => join(ROOT, 'dist', 'dataplane', `${m}.js`);
if (!existsSync(dist('port-guard'))) {
  console.error('bench/guard.ts: dist/ is missing: run npm run build first');
  process.exit(1);
}
const { PacketPool, VNET_HDR } = await import(dist('pool')) as typeof import('../src/dataplane/pool.ts');
const { PortGuard } = await import(dist('port-guard')) as typeof import('../src/dataplane/port-guard.ts');
const { judgedCopy } = await import(dist('deferred')) as typeof import('../src/dataplane/deferred.ts');
const { newCounters } = await import(dist('counters')) as typeof import('../src/dataplane/counters.ts');

// The loop's frames: UDP 198.18.0.1 -> .2 from 02:00:00:00:0a:01 and :02, 64 bytes; the "peer's memory" is
// 32 pool buffers that are lent as a vhost-user port lends a guest's transmit buffers.
const pool = new PacketPool(256);
const guard = new PortGuard({ macs: ['02:00:00:00:0a:01', '02:00:00:00:0a:02'], addresses: [{ ip: '198.18.0.0/24' }], trunk: false });
const frame = Uint8Array.from([2, 0, 0, 0, 10, 2, 2, 0, 0, 0, 10, 1, 8, 0, 0x45, 0, 0, 50, 0, 0, 0, 0, 64, 17, 0, 0,
  198, 18, 0, 1, 198, 18, 0, 2, 0x04, 0xd2, 0x16, 0x2e, 0, 30, 0, 0, ...new Array<number>(22).fill(0)]);
const guestBuf: number[] = [];
const owned: number[] = [];
/** The receiving guest's buffers, where the output port copies each frame (toGuest). */
const rxBuf: number[] = [];
for (let i = 0; i < BURST; i++) {
  const h = pool.alloc();
  owned.push(h);
  pool.bytes.set(frame, pool.frameOffset(h));
  // The loop's two "VM" ports' frames circulate together: every other one from the second MAC.
  if (i % 2 === 1) pool.bytes[pool.frameOffset(h) + 11] = 2;
  pool.len[h] = frame.length;
  guestBuf.push(pool.hdrOffset(h));
  rxBuf.push(pool.hdrOffset(pool.alloc()));
}
let returned = 0;
const lender = { returnBuffer(): void { returned++; } };
const batch = new Int32Array(BURST);
const i32 = pool.arena.i32;
const counters = newCounters();

type Case = 'unsecured' | 'secured' | 'copy on pop' | 'copy only' | 'check only';
const b = pool.bytes;
/** The output: copy header and frame into the receiving guest's buffer, as toGuest does; a deferred frame is judged as it is copied. */
function output(n: number): void {
  for (let i = 0; i < n; i++) {
    const h = batch[i]!;
    const ho = pool.hdrOffset(h);
    const off = rxBuf[i]!;
    const judge = pool.deferredJudge(h);
    if (judge === undefined) b.copyWithin(off, ho, ho + VNET_HDR + pool.len[h]!);
    else if (!judge.copyJudged(b, i32, off, ho, VNET_HDR + pool.len[h]!)) {
      // Not by the fast path (the first frame of each source): every rule, on a pool copy of the sender's frame, as toGuest.
      const m = judgedCopy(pool, h, judge);
      if (m < 0) throw new Error('bench/guard.ts: the guard refused a frame of the loop');
      pool.release(m);
    }
    pool.release(h);
  }
}
/** ns per frame: lend a burst, treat it as the case says, then the output's copy and release. */
function run(c: Case): number {
  const t0 = process.hrtime.bigint();
  for (let it = 0; it < BURSTS; it++) {
    let n = BURST;
    if (c === 'check only') {
      // Frames already in the pool (a tap's): the check without the copy.
      for (let i = 0; i < n; i++) {
        const h = owned[i]!;
        pool.refs[h]!++;
        batch[i] = h;
      }
      n = guard.filter(pool, batch, n, counters);
      output(n);
      continue;
    }
    if (c === 'unsecured') {
      // The zero-copy receive: each frame lent where it lies, its buffer back to the peer on release.
      for (let i = 0; i < n; i++) batch[i] = pool.lend(guestBuf[i]!, frame.length, lender, i);
    } else if (c === 'secured') {
      // A secured port's receive: lent as well, deferred (PacketPool.defer), marked for filter()
      // to pass; the output judges the copy it makes.
      let judged = 0;
      for (let i = 0; i < n; i++) {
        const h = pool.lend(guestBuf[i]!, frame.length, lender, i);
        pool.defer(h, guard);
        judged |= 1 << i;
        batch[i] = h;
      }
      n = guard.filter(pool, batch, n, counters, judged);
    } else if (c === 'copy on pop') {
      // The design before: each frame copied into a pool buffer and judged in the same pass as
      // it is popped, the peer's buffer returned at once (lender.returnBuffer stands for the
      // used-ring push); filter() then passes what was judged.
      let judged = 0;
      for (let i = 0; i < n; i++) {
        const h = pool.alloc();
        if (guard.copyJudged(pool.bytes, i32, pool.hdrOffset(h), guestBuf[i]!, VNET_HDR + frame.length)) judged |= 1 << i;
        pool.len[h] = frame.length;
        lender.returnBuffer();
        batch[i] = h;
      }
      n = guard.filter(pool, batch, n, counters, judged);
    } else {
      // The copy alone, as a port without port security would make it (PacketPool.copy).
      for (let i = 0; i < n; i++) {
        const h = pool.alloc();
        pool.copy(pool.hdrOffset(h), guestBuf[i]!, VNET_HDR + frame.length);
        pool.len[h] = frame.length;
        lender.returnBuffer();
        batch[i] = h;
      }
    }
    output(n);
  }
  return Number(process.hrtime.bigint() - t0) / BURSTS / BURST;
}

const CASES: Case[] = ['unsecured', 'secured', 'copy on pop', 'copy only', 'check only'];
const samples: Record<Case, number[]> = { unsecured: [], secured: [], 'copy on pop': [], 'copy only': [], 'check only': [] };
for (const c of CASES) run(c); // warm up: every case compiled before anything is timed
for (let r = 0; r < ROUNDS; r++) {
  for (const c of CASES) samples[c].push(+run(c).toFixed(1));
}
if (returned === 0) throw new Error('bench/guard.ts: no buffer went back to its lender');
if (counters.some((x) => x !== 0)) throw new Error(`bench/guard.ts: the guard dropped frames of the loop: ${Array.from(counters).map((x, i) => `${i}:${x}`).filter((s) => !s.endsWith(':0')).join(' ')}`);
const med = Object.fromEntries(CASES.map((c) => [c, median(samples[c])])) as Record<Case, number>;
const added = +(med.secured - med.unsecured).toFixed(1);
const copy = +(med['copy only'] - med.unsecured).toFixed(1);
const before = +(med['copy on pop'] - med.unsecured).toFixed(1);
console.error(CASES.map((c) => `${c} ${med[c]} ns`).join(', '), `; port security adds ${added} ns a frame (copy on pop: ${before}; a copy alone ${copy})`);

const date = new Date().toISOString().slice(0, 10);
const out = { date, machine: machine(), rounds: ROUNDS, bursts: BURSTS, burst: BURST, samples, median: med, addedNs: added, copyOnPopAddedNs: before, copyNs: copy };
writeFileSync(join(ROOT, 'bench', 'results', 'guard.json'), JSON.stringify(out, null, 2) + '\n');
const m = machine();
writeFileSync(join(ROOT, 'bench', 'results', 'guard.md'), [
  `# Port security per frame, 64-byte vhost-user frames (${date})`,
  '',
  `${m.cpus} cores, ${m.cpu ?? '?'}, kernel ${m.kernel}, Node ${m.node}; median of ${ROUNDS} rounds of ${BURSTS} bursts of ${BURST}. Method: [../port-security.md](../port-security.md).`,
  '',
  '| case | ns per frame (median) | each round |',
  '|---|---|---|',
  ...CASES.map((c) => `| ${c} | ${med[c]} | ${samples[c].join(', ')} |`),
  '',
  `- a secured vhost-user port adds **${added} ns** a frame: it lends the frame unjudged, and the output judges the copy it makes into the receiving guest's buffer as it makes it (PortGuard.copyJudged, a word copy, where the unsecured output calls copyWithin); the design before, which copied each frame out of the peer's memory and judged it in the same pass (PortGuard.copyJudged), added ${before} ns; a copy alone (a pool buffer taken and released, 76 bytes by PacketPool.copy) costs ${copy} ns more than lending`,
  `- every case ends with the output's copy into the receiving guest's buffer (as toGuest: copyWithin, or copyJudged for a deferred frame) and the release. "unsecured" is the lend of the zero-copy receive; "secured" the lend, defer and filter() of a secured port and the output's copy judged as it is made; "copy on pop" the design before; "copy only" a copy into the pool without judgment; "check only" filter() over a tap's frames (already in the pool)`,
  '',
].join('\n'));
