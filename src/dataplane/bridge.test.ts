import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Bridge } from './bridge.ts';
import { C, newCounters } from './counters.ts';
import { macFromString } from './fdb.ts';
import { PacketPool } from './pool.ts';
import { Port, TXQ_SIZE } from './port.ts';

// Deterministic by default; set FC_SEED to explore other inputs (a failure prints its seed).
fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 20241124) });

/** A port that records what it is asked to send (by a tag stored in the frame) and releases it. */
class FakePort extends Port {
  readonly fds: readonly number[] = [];
  /** Tags of transmitted frames, in order. */
  readonly sent: number[] = [];
  /** Handles of transmitted frames, in order. */
  readonly handles: number[] = [];
  /** Sizes of the transmit() calls. */
  readonly bursts: number[] = [];

  constructor(index: number, pool: PacketPool) {
    super(index, `fake${index}`, 1, newCounters(), pool, true, true);
  }

  receive(): number {
    return 0;
  }

  transmit(q: Int32Array, n: number): void {
    this.bursts.push(n);
    for (let i = 0; i < n; i++) {
      const h = q[i]!;
      assert.ok(this.pool.refs[h]! > 0, `port ${this.index} transmits handle ${h} that has no reference left`);
      this.handles.push(h);
      this.sent.push(tagOf(this.pool, h));
      this.pool.release(h);
    }
  }

  close(): void {}
}

const TAG_AT = 14; // the tag sits right after the Ethernet header

function tagOf(pool: PacketPool, h: number): number {
  return pool.dv.getUint32(pool.frameOffset(h) + TAG_AT);
}

function putMac(b: Uint8Array, at: number, mac: number): void {
  for (let i = 5; i >= 0; i--) {
    b[at + i] = mac % 256;
    mac = Math.floor(mac / 256);
  }
}

/**
 * A 60-byte frame dst <- src carrying `tag` lent from "peer memory" (another pool buffer) at
 * `shift` bytes past a 4-byte boundary, as a vhost-user port lends a guest's buffer.
 */
function lentFrame(pool: PacketPool, dst: number, src: number, tag: number, shift: number): number {
  const g = frame(pool, dst, src, tag);
  const at = pool.hdrOffset(g) + 64 + shift; // header at `at`, frame after it
  pool.bytes.copyWithin(at, pool.hdrOffset(g), pool.frameOffset(g) + 60);
  const h = pool.lend(at, 60, { returnBuffer: () => pool.release(g) }, 0);
  assert.ok(h >= 0, 'no external handle left');
  return h;
}

/** Allocate a 60-byte Ethernet frame dst <- src carrying `tag`. */
function frame(pool: PacketPool, dst: number, src: number, tag: number): number {
  const h = pool.alloc();
  assert.ok(h >= 0, 'test pool ran dry');
  const b = pool.bytes;
  b.fill(0, pool.hdrOffset(h), pool.hdrOffset(h) + 12);
  const fo = pool.frameOffset(h);
  putMac(b, fo, dst);
  putMac(b, fo + 6, src);
  pool.dv.setUint16(fo + 12, 0x0800);
  b.fill(0, fo + 14, fo + 60);
  pool.dv.setUint32(fo + TAG_AT, tag);
  pool.len[h] = 60;
  return h;
}

interface Rig {
  pool: PacketPool;
  br: Bridge;
  ports: FakePort[];
  flushes: Map<number, number>;
  flush: (p: Port) => void;
  /** Forward one batch from ports[inPort] and flush the outputs it reached (Bridge.flushTouched), as Engine.poll does. */
  send(inPort: number, frames: Array<[dst: number, src: number, tag: number]>, shift?: number): void;
}

const sharedPool = new PacketPool(600);

function rig(nPorts: number, pool = sharedPool, agingSeconds?: number): Rig {
  const br = new Bridge(1, 'br-test', pool, agingSeconds);
  const ports: FakePort[] = [];
  for (let i = 0; i < nPorts; i++) {
    const p = new FakePort(i + 1, pool); // the engine never hands out slot 0
    ports.push(p);
    br.addPort(p);
  }
  const flushes = new Map<number, number>();
  const flush = (p: Port): void => {
    flushes.set(p.index, (flushes.get(p.index) ?? 0) + 1);
    const n = p.out.txCount;
    p.out.txCount = 0;
    p.transmit(p.out.txq, n);
  };
  const r: Rig = {
    pool, br, ports, flushes, flush,
    send(inPort, frames, shift) {
      const batch = new Int32Array(frames.length);
      frames.forEach(([d, s, t], i) => (batch[i] = shift === undefined ? frame(pool, d, s, t) : lentFrame(pool, d, s, t, shift)));
      br.forward(ports[inPort]!, batch, frames.length, flush);
      br.flushTouched(flush);
    },
  };
  return r;
}

/** The group bit is the least significant bit of the first octet. */
const isUnicast = (mac: number): boolean => Math.floor(mac / 2 ** 40) % 2 === 0;

const A = macFromString('02:00:00:00:00:0a');
const B = macFromString('02:00:00:00:00:0b');
const D = macFromString('02:00:00:00:00:0d');
const BCAST = macFromString('ff:ff:ff:ff:ff:ff');
const MCAST4 = macFromString('01:00:5e:00:00:01');
const MCAST6 = macFromString('33:33:00:00:00:01');

describe('Bridge flooding', () => {
  test('unknown unicast floods to every other member, never back to the ingress port', () => {
    const free0 = sharedPool.available();
    const r = rig(4);
    r.send(0, [[B, A, 1]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[], [1], [1], [1]]);
    assert.equal(r.ports[0]!.counters[C.flooded], 1);
    assert.equal(r.ports[0]!.counters[C.dropped_hairpin], 0);
    assert.equal(sharedPool.available(), free0);
  });

  for (const [name, dst] of [['broadcast', BCAST], ['IPv4 multicast', MCAST4], ['IPv6 multicast', MCAST6]] as const) {
    test(`${name} floods to every other member`, () => {
      const free0 = sharedPool.available();
      const r = rig(3);
      r.send(1, [[dst, A, 7]]);
      assert.deepEqual(r.ports.map((p) => p.sent), [[7], [], [7]]);
      assert.equal(r.ports[1]!.counters[C.flooded], 1);
      assert.equal(sharedPool.available(), free0);
    });
  }

  test('a flooded packet carries one reference per copy, all queued on the one shared buffer', () => {
    const free0 = sharedPool.available();
    const r = rig(5);
    const h = frame(sharedPool, BCAST, A, 3);
    r.br.forward(r.ports[2]!, Int32Array.of(h), 1, r.flush);
    assert.equal(sharedPool.refs[h], 4);
    assert.deepEqual(r.ports.map((p) => p.out.txCount), [1, 1, 0, 1, 1]);
    for (const p of r.ports) if (p.out.txCount > 0) assert.equal(p.out.txq[0], h);
    assert.equal(sharedPool.available(), free0 - 1);
    // release the copies one port at a time; the buffer only comes back with the last
    for (const [i, p] of r.ports.entries()) {
      if (p.out.txCount > 0) r.flush(p);
      assert.equal(sharedPool.available(), i === 4 ? free0 : free0 - 1);
    }
  });

  test('a lone member floods to nobody and the buffer is released at once', () => {
    const free0 = sharedPool.available();
    const r = rig(1);
    r.send(0, [[BCAST, A, 1]]);
    assert.deepEqual(r.ports[0]!.sent, []);
    assert.equal(r.ports[0]!.counters[C.flooded], 1);
    assert.equal(sharedPool.available(), free0);
  });

  // Regression: refs was a Uint8Array, so 257 copies stored refs=1 and the buffer was freed after
  // the first transmit (use after free) and pushed on the free list twice.
  test('flooding to more than 255 ports keeps an exact reference count', () => {
    const pool = new PacketPool(8);
    const free0 = pool.available();
    const r = rig(258, pool);
    const h = frame(pool, BCAST, A, 1);
    r.br.forward(r.ports[0]!, Int32Array.of(h), 1, r.flush);
    const copies = r.ports.filter((p) => p.out.txCount > 0).length;
    assert.equal(copies, 257);
    assert.equal(pool.refs[h], 257);
    for (const p of r.ports) if (p.out.txCount > 0) r.flush(p);
    assert.equal(pool.available(), free0, 'buffer returned exactly once');
  });
});

describe('Bridge learning', () => {
  test('after learning, unicast goes only to the learned port', () => {
    const free0 = sharedPool.available();
    const r = rig(4);
    r.send(1, [[A, B, 1]]); // B is on port 1; A unknown: flood
    assert.deepEqual(r.ports.map((p) => p.sent), [[1], [], [1], [1]]);
    r.send(0, [[B, A, 2]]); // A is on port 0 now; B known on port 1
    assert.deepEqual(r.ports.map((p) => p.sent), [[1], [2], [1], [1]]);
    r.send(1, [[A, B, 3]]); // and back
    assert.deepEqual(r.ports.map((p) => p.sent), [[1, 3], [2], [1], [1]]);
    assert.equal(r.ports[0]!.counters[C.flooded], 0);
    assert.equal(r.ports[1]!.counters[C.flooded], 1);
    assert.equal(r.br.fdb.lookup(A, r.br.now), r.ports[0]!.index);
    assert.equal(r.br.fdb.lookup(B, r.br.now), r.ports[1]!.index);
    assert.equal(sharedPool.available(), free0);
  });

  test('unicast to a learned port holds a single reference', () => {
    const r = rig(3);
    r.send(1, [[BCAST, B, 1]]);
    const h = frame(sharedPool, B, A, 2);
    r.br.forward(r.ports[0]!, Int32Array.of(h), 1, r.flush);
    assert.equal(sharedPool.refs[h], 1);
    assert.deepEqual(r.ports.map((p) => p.out.txCount), [0, 1, 0]);
    r.flush(r.ports[1]!);
  });

  test('a destination learned on the ingress port is dropped and counted as hairpin', () => {
    const free0 = sharedPool.available();
    const r = rig(3);
    r.send(0, [[BCAST, A, 1]]); // A on port 0
    r.send(0, [[A, B, 2]]); // B also on port 0, talking to A through the bridge: drop
    assert.deepEqual(r.ports.map((p) => p.sent), [[], [1], [1]]);
    assert.equal(r.ports[0]!.counters[C.dropped_hairpin], 1);
    assert.equal(r.ports[0]!.counters[C.flooded], 1);
    assert.equal(sharedPool.available(), free0);
  });

  test('a frame addressed to its own sender is learned, then dropped as hairpin', () => {
    const free0 = sharedPool.available();
    const r = rig(2);
    r.send(0, [[A, A, 1]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[], []]);
    assert.equal(r.ports[0]!.counters[C.dropped_hairpin], 1);
    assert.equal(sharedPool.available(), free0);
  });

  test('a destination the FDB has on a port that is not a member is dropped, not leaked', () => {
    const free0 = sharedPool.available();
    const r = rig(3);
    r.br.fdb.learn(B, 99, 0); // cannot happen through forward() (removePort forgets a port's entries); the FDB API allows it
    r.send(0, [[B, A, 2]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[], [], []]);
    assert.equal(r.ports[0]!.counters[C.dropped_hairpin], 1);
    assert.equal(sharedPool.available(), free0);
  });

  test('a station that moves ports is followed at once', () => {
    const free0 = sharedPool.available();
    const r = rig(3);
    r.send(1, [[BCAST, B, 1]]);
    r.send(0, [[B, A, 2]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[1], [2], [1]]);
    r.send(2, [[BCAST, B, 3]]); // B shows up on port 2
    r.send(0, [[B, A, 4]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[1, 3], [2, 3], [1, 4]]);
    assert.equal(sharedPool.available(), free0);
  });

  test('group source addresses are never learned', () => {
    const free0 = sharedPool.available();
    const r = rig(3);
    const G = macFromString('03:00:00:00:00:01');
    r.send(0, [[BCAST, G, 1], [BCAST, BCAST, 2], [BCAST, MCAST4, 3]]);
    assert.equal(r.br.fdb.size, 0);
    // traffic to those addresses is still flooded (group destination), including from port 0 itself
    r.send(1, [[G, B, 4]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[4], [1, 2, 3], [1, 2, 3, 4]]);
    assert.equal(r.ports[1]!.counters[C.dropped_hairpin], 0);
    assert.equal(r.br.fdb.size, 1); // only B
    assert.equal(sharedPool.available(), free0);
  });

  test('a group destination floods even if the table holds that address', () => {
    const free0 = sharedPool.available();
    const r = rig(3);
    r.br.fdb.learn(BCAST, r.ports[1]!.index, 0); // cannot happen through forward(); the FDB API allows it
    r.br.fdb.learn(MCAST4, r.ports[1]!.index, 0);
    r.send(0, [[BCAST, A, 1], [MCAST4, A, 2]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[], [1, 2], [1, 2]]);
    assert.equal(sharedPool.available(), free0);
  });

  test('a locally administered unicast source (bit 1 set) is learned', () => {
    const r = rig(2);
    const L = macFromString('fe:00:00:00:00:01'); // group bit clear
    r.send(0, [[BCAST, L, 1]]);
    assert.equal(r.br.fdb.lookup(L, 0), r.ports[0]!.index);
  });

  test('learning uses Bridge.now; an aged entry floods again', () => {
    const free0 = sharedPool.available();
    const r = rig(3, sharedPool, 10);
    r.br.now = 100;
    r.send(1, [[BCAST, B, 1]]);
    r.br.now = 110; // exactly agingSeconds later: still known
    r.send(0, [[B, A, 2]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[1], [2], [1]]);
    r.br.now = 110.5;
    r.send(0, [[B, A, 3]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[1], [2, 3], [1, 3]]);
    assert.equal(sharedPool.available(), free0);
  });

  test('removePort forgets the stations behind it; their unicast floods to the remaining members', () => {
    const free0 = sharedPool.available();
    const r = rig(3);
    r.send(1, [[BCAST, B, 1]]);
    r.br.removePort(r.ports[1]!);
    assert.equal(r.br.fdb.lookup(B, 0), -1);
    assert.equal(r.br.members.length, 2);
    r.send(0, [[B, A, 2]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[1], [], [1, 2]]);
    assert.equal(r.ports[0]!.counters[C.dropped_hairpin], 0);
    assert.equal(sharedPool.available(), free0);
  });

  test('a source learned earlier in the same batch is already known to the frames after it', () => {
    const free0 = sharedPool.available();
    const r = rig(3);
    // frame 1 teaches A on port 1 and floods; frame 2 (also from port 1) is for A: hairpin
    r.send(1, [[B, A, 1], [A, B, 2]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[1], [], [1]]);
    assert.equal(r.ports[1]!.counters[C.dropped_hairpin], 1);
    assert.equal(r.ports[1]!.counters[C.flooded], 1);
    // A moves to port 0 with frame 3; frame 4 from port 2 for A follows it within the next batch
    r.send(0, [[D, A, 3]]);
    r.send(2, [[A, D, 4], [D, B, 5]]);
    assert.deepEqual(r.ports.map((p) => p.sent), [[1, 4], [3], [1, 3]]);
    assert.equal(r.ports[2]!.counters[C.dropped_hairpin], 1); // frame 5: D was just learned on port 2
    assert.equal(sharedPool.available(), free0);
  });
});

describe('Bridge tx queues', () => {
  test('a full unicast queue is flushed through the callback mid-batch, order kept', () => {
    const free0 = sharedPool.available();
    const r = rig(3);
    r.send(1, [[BCAST, B, 0]]);
    r.flushes.clear();
    const n = TXQ_SIZE + 44;
    const frames: Array<[number, number, number]> = [];
    for (let i = 1; i <= n; i++) frames.push([B, A, i]);
    const batch = new Int32Array(n);
    frames.forEach(([d, s, t], i) => (batch[i] = frame(sharedPool, d, s, t)));
    r.br.forward(r.ports[0]!, batch, n, r.flush);
    assert.equal(r.flushes.get(r.ports[1]!.index), 1, 'flushed once when the queue hit TXQ_SIZE');
    assert.equal(r.ports[1]!.out.txCount, 44);
    r.br.flushTouched(r.flush); // the rest, as the engine does after forward()
    assert.equal(r.flushes.get(r.ports[1]!.index), 2);
    assert.deepEqual(r.ports[1]!.bursts, [TXQ_SIZE, 44]);
    assert.deepEqual(r.ports[1]!.sent, frames.map((f) => f[2]));
    assert.equal(sharedPool.available(), free0);
  });

  test('only the outputs a burst reached are flushed; a unicast and a flood in one burst both go out', () => {
    const free0 = sharedPool.available();
    const r = rig(4);
    r.send(1, [[BCAST, B, 0]]);
    r.send(3, [[BCAST, D, 0]]);
    r.flushes.clear();
    r.send(0, [[B, A, 1]]);
    assert.deepEqual([...r.flushes.keys()], [r.ports[1]!.index], 'a unicast burst flushes its one output, not every member');
    r.flushes.clear();
    r.send(0, [[D, A, 2], [BCAST, A, 3]]);
    assert.deepEqual([...r.flushes.keys()].sort(), [r.ports[1]!.index, r.ports[2]!.index, r.ports[3]!.index].sort());
    assert.deepEqual(r.ports.map((p) => p.sent.slice(-2)), [[0, 0], [1, 3], [0, 3], [2, 3]]); // port 0 only has the two learning broadcasts
    assert.equal(sharedPool.available(), free0);
  });

  test('full queues are flushed while flooding, every copy still arrives once', () => {
    const free0 = sharedPool.available();
    const r = rig(3);
    const n = TXQ_SIZE + 10;
    const frames: Array<[number, number, number]> = [];
    for (let i = 1; i <= n; i++) frames.push([BCAST, A, i]);
    r.send(0, frames);
    assert.equal(r.flushes.get(r.ports[1]!.index), 2); // once mid-batch, once by the drain
    assert.equal(r.flushes.get(r.ports[2]!.index), 2);
    assert.equal(r.flushes.get(r.ports[0]!.index), undefined);
    const tags = frames.map((f) => f[2]);
    assert.deepEqual(r.ports[1]!.sent, tags);
    assert.deepEqual(r.ports[2]!.sent, tags);
    assert.equal(r.ports[0]!.counters[C.flooded], n);
    assert.equal(sharedPool.available(), free0);
  });
});

describe('Bridge against a reference model (property)', () => {
  test('random traffic: same deliveries as a simple learning-switch model, no buffer lost', () => {
    // Stations that differ in one byte each, so every byte of the address is compared.
    const stations = [A, B, D, macFromString('02:00:00:00:00:0e'), BCAST, MCAST4, macFromString('07:00:00:00:00:01'),
      macFromString('a2:34:56:78:9a:0a'), macFromString('02:01:00:00:00:0a'), macFromString('02:00:00:80:00:0a'), macFromString('0a:00:00:00:00:0a')];
    const frameArb = fc.tuple(
      fc.integer({ min: 0, max: 3 }), // ingress port
      fc.integer({ min: 0, max: stations.length - 1 }), // dst
      fc.integer({ min: 0, max: stations.length - 1 }), // src
    );
    fc.assert(
      // shift: frames in pool buffers (undefined), or lent from peer memory at an aligned or unaligned offset.
      fc.property(fc.array(fc.array(frameArb, { minLength: 1, maxLength: 12 }), { maxLength: 12 }), fc.constantFrom(undefined, 0, 1, 2, 3), (batches, shift) => {
        const free0 = sharedPool.available();
        const r = rig(4);
        const fdb = new Map<number, number>();
        const want: number[][] = [[], [], [], []];
        let tag = 0;
        let hairpins = 0;
        for (const bt of batches) {
          // one batch = frames from one ingress port
          const inPort = bt[0]![0];
          const frames: Array<[number, number, number]> = [];
          for (const [, di, si] of bt) {
            const dst = stations[di]!;
            const src = stations[si]!;
            const t = ++tag;
            frames.push([dst, src, t]);
            if (isUnicast(src)) fdb.set(src, inPort);
            const known = isUnicast(dst) ? fdb.get(dst) : undefined;
            if (known === undefined) for (let p = 0; p < 4; p++) { if (p !== inPort) want[p]!.push(t); }
            else if (known === inPort) hairpins++;
            else want[known]!.push(t);
          }
          r.send(inPort, frames, shift);
        }
        assert.deepEqual(r.ports.map((p) => p.sent), want);
        assert.equal(r.ports.reduce((s, p) => s + p.counters[C.dropped_hairpin]!, 0), hairpins);
        assert.equal(sharedPool.available(), free0);
      }),
      { numRuns: 200 },
    );
  });
});
