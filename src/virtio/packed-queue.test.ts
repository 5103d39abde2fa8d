import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { DEFAULT_CHAIN_CAPACITY, DescriptorChain } from './chain.ts';
import { ADD_FULL, ADD_INVALID, DriverError } from './driver-queue.ts';
import { MockPackedDriver, type MockDriverOptions, type MockSegment } from './mock-driver.ts';
import { PackedDeviceQueue } from './packed-queue.ts';
import {
  RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, VIRTIO_F_RING_PACKED,
  VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED, availFlags, isAvail, isUsed, packedCounter,
  packedNeedEvent, usedFlags,
} from './packed-ring.ts';
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from './ring.ts';
import { QUEUE_ERROR_NAMES, QueueError, type QueueErrorName } from './split-queue.ts';

fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 20241124) });

const NEXT = VRING_DESC_F_NEXT;
const WRITE = VRING_DESC_F_WRITE;
const INDIRECT = VRING_DESC_F_INDIRECT;
const A1 = availFlags(1); // available in the first lap

function setup(opts: MockDriverOptions, chainCap = DEFAULT_CHAIN_CAPACITY) {
  const drv = new MockPackedDriver(opts);
  const q = new PackedDeviceQueue(drv.space, drv.mem);
  assert.equal(q.configure(drv.deviceConfig()), null);
  return { drv, q, chain: new DescriptorChain(chainCap) };
}

function expectBroken(q: PackedDeviceQueue, chain: DescriptorChain, code: QueueErrorName): void {
  assert.equal(q.pop(chain), false);
  assert.equal(q.broken, code);
  assert.equal(q.errors[QueueError[code]], 1, `${code} counted once`);
  assert.equal(q.errors.reduce((a, b) => a + b, 0), 1, 'no other error counted');
  assert.equal(q.pop(chain), false, 'a broken queue pops nothing');
  assert.equal(q.available(), 0);
  assert.equal(q.errors[QueueError[code]], 1);
}

function bytesOf(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 31 + i * 7) & 0xff;
  return b;
}

describe('packed ring layout', () => {
  test('constants and flag tests match virtio 1.2 2.8', () => {
    assert.equal(VIRTIO_F_RING_PACKED, 34);
    assert.equal(VRING_PACKED_DESC_F_AVAIL, 0x80);
    assert.equal(VRING_PACKED_DESC_F_USED, 0x8000);
    assert.deepEqual([RING_EVENT_FLAGS_ENABLE, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_DESC], [0, 1, 2]);
    assert.equal(availFlags(1), 0x80);
    assert.equal(availFlags(0), 0x8000);
    assert.equal(usedFlags(1), 0x8080);
    assert.equal(usedFlags(0), 0);
    for (const w of [0, 1]) {
      assert.ok(isAvail(availFlags(w), w) && !isUsed(availFlags(w), w));
      assert.ok(isUsed(usedFlags(w), w) && !isAvail(usedFlags(w), w));
      assert.ok(!isAvail(availFlags(w), w ^ 1), 'last lap\'s available is not available now');
      assert.ok(!isUsed(usedFlags(w), w ^ 1));
    }
    assert.ok(!isAvail(0, 1) && !isUsed(0, 1), 'a zeroed ring holds nothing for the first lap');
    assert.equal(packedCounter(0, 1, 8), 0);
    assert.equal(packedCounter(7, 1, 8), 7);
    assert.equal(packedCounter(0, 0, 8), 8);
  });

  test('packedNeedEvent: the event position lies in [old, new) on the counter modulo 2 * size', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 300 }), fc.nat(), fc.nat(), fc.nat(), (size, a, b, e) => {
      const span = 2 * size;
      const old = a % span;
      const moved = b % (size + 1); // a producer moves at most size descriptors between decisions
      const now = (old + moved) % span;
      const ev = e % span;
      const offWrap = (ev % size) | (ev < size ? 1 : 0) << 15;
      let inside = false;
      for (let k = 0; k < moved; k++) if ((old + k) % span === ev) inside = true;
      assert.equal(packedNeedEvent(offWrap, now, old, size), inside);
    }));
    assert.equal(packedNeedEvent(9 | 1 << 15, 3, 0, 8), false, 'an offset outside the ring never fires');
  });
});

describe('packed device queue: configure', () => {
  test('refuses bad sizes, misaligned or outside parts, bases beyond the ring', () => {
    const drv = new MockPackedDriver({ size: 8 });
    const q = new PackedDeviceQueue(drv.space, drv.mem);
    const c = drv.deviceConfig();
    assert.match(q.configure({ ...c, size: 0 })!, /queue size/);
    assert.match(q.configure({ ...c, size: 32769 })!, /queue size/);
    assert.match(q.configure({ ...c, descAddr: 8 })!, /aligned to 16/);
    assert.match(q.configure({ ...c, driverAddr: c.driverAddr + 2 })!, /aligned to 4/);
    assert.match(q.configure({ ...c, deviceAddr: drv.end })!, /outside/);
    assert.match(q.configure({ ...c, vringBase: 8 | 0x8000 })!, /next avail index 8/);
    assert.match(q.configure({ ...c, vringBase: 0x8000 | (9 << 16) })!, /next used index 9/);
    assert.equal(q.ready, false);
    assert.equal(q.configure({ ...c, size: 6 }), null, 'a packed ring need not be a power of two');
  });

  test('vring base: bits 0-15 avail, 16-31 used (or the same as avail when 0), and back', () => {
    const { drv, q } = setup({ size: 8 });
    assert.equal(q.vringBase, 0x80008000, 'a fresh ring: (0, wrap 1) twice');
    assert.equal(q.configure(drv.deviceConfig({ vringBase: 5 })), null);
    assert.deepEqual([q.lastAvailIdx, q.availWrapCounter, q.usedIdx, q.usedWrapCounter], [5, 0, 5, 0]);
    assert.equal(q.configure(drv.deviceConfig({ vringBase: (3 | 1 << 15) | (2 << 16) })), null);
    assert.deepEqual([q.lastAvailIdx, q.availWrapCounter, q.usedIdx, q.usedWrapCounter], [3, 1, 2, 0]);
    assert.equal(q.vringBase, (3 | 1 << 15) | (2 << 16));
  });
});

/** One list as the driver posted it, to compare with what the device popped. */
interface Posted {
  segs: MockSegment[];
  offsets: number[];
  indirect: boolean;
}

function checkPopped(chain: DescriptorChain, p: Posted): void {
  const nonEmpty = p.segs.map((s, k) => ({ ...s, off: p.offsets[k]! })).filter((s) => s.len > 0);
  assert.equal(chain.count, nonEmpty.length);
  assert.equal(chain.descriptors, p.segs.length);
  assert.equal(chain.indirect, p.indirect);
  nonEmpty.forEach((s, k) => {
    assert.equal(chain.offset[k], s.off);
    assert.equal(chain.len[k], s.len);
    assert.equal(chain.writable[k], s.writable ? 1 : 0);
  });
  assert.equal(chain.readable, nonEmpty.filter((s) => !s.writable).length);
}

const segsArb = fc.tuple(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 4 }))
  .filter(([r, w]) => r + w > 0)
  .chain(([r, w]) => fc.tuple(fc.array(fc.integer({ min: 0, max: 300 }), { minLength: r, maxLength: r }), fc.array(fc.integer({ min: 0, max: 300 }), { minLength: w, maxLength: w })))
  .map(([rs, ws]) => [...rs.map((len) => ({ len })), ...ws.map((len) => ({ len, writable: true }))] as MockSegment[]);

describe('packed device queue: round trips with the packed driver', () => {
  test('random lists, direct and indirect, returned out of order, wrap around many times; sizes not powers of two too', () => {
    fc.assert(fc.property(
      fc.constantFrom(1, 3, 4, 7, 16, 33),
      fc.boolean(),
      fc.array(fc.tuple(segsArb, fc.boolean(), fc.nat(), fc.integer({ min: 0, max: 3 })), { minLength: 1, maxLength: 150 }),
      (size, eventIdx, steps) => {
        const { drv, q, chain } = setup({ size, eventIdx, indirect: true, dataBytes: 1 << 20 });
        const dq = drv.queue;
        const posted = new Map<number, Posted>();
        const outstanding: Array<{ id: number; wbytes: number }> = [];
        let returned = 0;
        for (const [segs, indirect, pick, batch] of steps) {
          // Driver: post when it can (indirect takes one ring descriptor, direct one per segment).
          const r = indirect ? drv.postIndirect(segs) : drv.post(segs);
          if (r.head >= 0) {
            assert.ok(!posted.has(r.head), 'the driver hands out each ID once');
            posted.set(r.head, { segs, offsets: r.offsets, indirect });
          } else assert.equal(r.head, !indirect && segs.length > size ? ADD_INVALID : ADD_FULL);
          // Device: pop what is there, return a few in an order of the test's choosing.
          while (q.pop(chain)) {
            const p = posted.get(chain.head);
            assert.ok(p, `popped ID ${chain.head} was posted`);
            checkPopped(chain, p);
            outstanding.push({ id: chain.head, wbytes: chain.writableBytes });
          }
          assert.equal(q.broken, null);
          for (let k = 0; k <= batch && outstanding.length > 0; k++) {
            const [o] = outstanding.splice(pick % outstanding.length, 1);
            q.push(o!.id, o!.wbytes);
          }
          q.flush();
          for (let id = dq.getUsed(); id >= 0; id = dq.getUsed()) {
            const p = posted.get(id)!;
            assert.equal(dq.usedLen, p.segs.filter((s) => s.writable).reduce((a, s) => a + s.len, 0));
            posted.delete(id);
            returned++;
          }
          assert.equal(dq.broken, null);
        }
        // Drain: everything comes back, the ring is whole again.
        for (const o of outstanding) q.push(o.id, o.wbytes);
        q.flush();
        while (dq.getUsed() >= 0) returned++;
        assert.equal(dq.numFree, size);
        assert.equal(dq.inFlight, 0);
        assert.ok(returned >= 0);
        assert.equal(q.errors.reduce((a, b) => a + b, 0), 0);
      },
    ), { numRuns: 150 });
  });

  test('buffer contents cross both ways; the used position skips each list\'s descriptors', () => {
    const { drv, q, chain } = setup({ size: 5 });
    for (let round = 0; round < 40; round++) {
      const data = bytesOf(100, round);
      const { head, offsets } = drv.post([{ len: 40, data }, { len: 60, data: data.subarray(40) }, { len: 64, writable: true }]);
      assert.ok(head >= 0);
      assert.ok(q.pop(chain));
      const got = new Uint8Array(100);
      got.set(drv.space.bytes.subarray(chain.offset[0], chain.offset[0]! + 40), 0);
      got.set(drv.space.bytes.subarray(chain.offset[1], chain.offset[1]! + 60), 40);
      assert.deepEqual(got, data);
      drv.space.bytes.fill(round & 0xff, chain.offset[2], chain.offset[2]! + 10);
      q.push(chain.head, 10);
      q.flush();
      assert.equal(drv.queue.getUsed(), head);
      assert.equal(drv.queue.usedLen, 10);
      assert.equal(drv.space.bytes[offsets[2]!], round & 0xff);
    }
    assert.equal(q.usedIdx, q.lastAvailIdx, 'used caught up with avail');
  });

  test('unpop returns to the saved position, wrap counter included', () => {
    const { drv, q, chain } = setup({ size: 3 });
    for (let i = 0; i < 3; i++) drv.post([{ len: 10, writable: true }]);
    assert.ok(q.pop(chain) && q.pop(chain));
    for (let i = 0; i < 2; i++) q.push(i, 0);
    q.flush();
    while (drv.queue.getUsed() >= 0);
    drv.post([{ len: 10, writable: true }]); // slot 0, second lap
    assert.ok(q.pop(chain)); // slot 2, first lap
    const mark = q.nextAvail;
    assert.equal(mark, 0, 'index 0, wrap 0');
    assert.ok(q.pop(chain));
    q.unpop(mark);
    assert.equal(q.nextAvail, mark);
    assert.ok(q.pop(chain), 'the same list pops again');
    assert.equal(q.available(), 0);
  });
});

describe('packed event suppression', () => {
  test('device -> driver: flags ENABLE / DISABLE without EVENT_IDX; DESC with it', () => {
    const { drv, q, chain } = setup({ size: 8 });
    const step = (): boolean => {
      drv.post([{ len: 8, writable: true }]);
      assert.ok(q.pop(chain));
      q.push(chain.head, 1);
      const r = q.flush();
      drv.queue.getUsed();
      return r;
    };
    assert.equal(step(), true);
    drv.setDriverEvent(0, RING_EVENT_FLAGS_DISABLE);
    assert.equal(step(), false);
    drv.setDriverEvent(0, 3);
    assert.equal(step(), true, 'the reserved value counts as enable');
    assert.equal(q.flush(), false, 'a flush that publishes nothing decides nothing');
  });

  test('with EVENT_IDX the device notifies exactly when the used position passes off_wrap', () => {
    fc.assert(fc.property(fc.integer({ min: 2, max: 12 }), fc.array(fc.tuple(fc.integer({ min: 1, max: 4 }), fc.nat()), { minLength: 1, maxLength: 40 }), (size, rounds) => {
      const { drv, q, chain } = setup({ size, eventIdx: true });
      let first = true;
      for (const [n, ev] of rounds) {
        const before = packedCounter(q.publishedIdx, q.publishedWrap, size);
        let k = 0;
        while (k < n && drv.post([{ len: 8, writable: true }]).head >= 0) k++;
        while (q.pop(chain)) q.push(chain.head, 1);
        const e = ev % (2 * size);
        drv.setDriverEvent((e % size) | (e < size ? 1 : 0) << 15, RING_EVENT_FLAGS_DESC);
        const after = packedCounter(q.usedIdx, q.usedWrapCounter, size);
        let want = false;
        for (let c = before; c !== after; c = (c + 1) % (2 * size)) if (c === e) want = true;
        const got = q.flush();
        if (after === before) assert.equal(got, false);
        else assert.equal(got, first || want, `event ${e} in [${before}, ${after})`);
        if (after !== before) first = false;
        while (drv.queue.getUsed() >= 0);
      }
    }), { numRuns: 200 });
  });

  test('driver -> device: disable, enable (with the slipped-in check), DESC at the avail position', () => {
    for (const eventIdx of [false, true]) {
      const { drv, q, chain } = setup({ size: 4, eventIdx });
      const dq = drv.queue;
      q.disableNotifications();
      assert.equal(drv.deviceEvent.flags, RING_EVENT_FLAGS_DISABLE);
      drv.post([{ len: 8 }]);
      assert.equal(dq.kickNeeded(), false, 'disabled: no kick');
      assert.ok(q.pop(chain));
      assert.equal(q.enableNotifications(), false, 'nothing slipped in');
      assert.equal(drv.deviceEvent.flags, eventIdx ? RING_EVENT_FLAGS_DESC : RING_EVENT_FLAGS_ENABLE);
      if (eventIdx) assert.equal(drv.deviceEvent.offWrap, q.nextAvail);
      drv.post([{ len: 8 }]);
      assert.equal(dq.kickNeeded(), true, 'the first list after enabling kicks');
      if (eventIdx) {
        drv.post([{ len: 8 }]);
        assert.equal(dq.kickNeeded(), false, 'with DESC, not the next one: the device has not looked yet');
      }
      q.disableNotifications();
      assert.equal(q.enableNotifications(), true, 'lists waiting: poll again rather than sleep');
    }
  });

  test('driver side: used notifications disabled / enabled with a look at the used position', () => {
    const { drv, q, chain } = setup({ size: 4, eventIdx: true });
    const dq = drv.queue;
    dq.disableUsedNotifications();
    drv.post([{ len: 8, writable: true }]);
    assert.ok(q.pop(chain));
    q.push(chain.head, 0);
    assert.equal(q.flush(), false, 'DISABLE is honoured with EVENT_IDX too');
    assert.equal(dq.enableUsedNotifications(), true, 'a used descriptor is already there');
    assert.ok(dq.getUsed() >= 0);
    assert.equal(dq.enableUsedNotifications(), false);
  });
});

describe('packed device queue: hostile drivers break only the queue', () => {
  test('a zeroed ring, and flags inconsistent with the wrap counter, are simply not available', () => {
    const { drv, q, chain } = setup({ size: 4 });
    assert.equal(q.pop(chain), false);
    drv.writeDesc(0, drv.dataOff, 8, 0, VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED); // used, not available
    assert.equal(q.pop(chain), false);
    drv.writeDesc(0, drv.dataOff, 8, 0, availFlags(0)); // available in the second lap only
    assert.equal(q.pop(chain), false);
    assert.equal(q.broken, null);
  });

  test('a later descriptor of a list that is not available', () => {
    const { drv, q, chain } = setup({ size: 4 });
    drv.writeDesc(1, drv.dataOff, 8, 1, availFlags(0)); // wrong lap
    drv.writeDesc(0, drv.dataOff, 8, 0, A1 | NEXT);
    expectBroken(q, chain, 'desc_not_avail');
  });

  test('a list that crosses the end of the ring uses the next lap\'s wrap counter', () => {
    const { drv, q, chain } = setup({ size: 2 });
    drv.post([{ len: 8 }]);
    assert.ok(q.pop(chain));
    q.push(chain.head, 0);
    q.flush();
    drv.queue.getUsed();
    drv.writeDesc(0, drv.dataOff, 8, 0, A1); // stale first-lap flags where the list continues
    drv.writeDesc(1, drv.dataOff, 8, 0, A1 | NEXT);
    expectBroken(q, chain, 'desc_not_avail');
  });

  test('a list longer than the ring (every descriptor NEXT)', () => {
    const { drv, q, chain } = setup({ size: 4 });
    for (let i = 3; i >= 0; i--) drv.writeDesc(i, drv.dataOff, 8, 0, A1 | NEXT);
    expectBroken(q, chain, 'chain_loop');
  });

  test('more buffers than the chain capacity, directly and through a table', () => {
    const a = setup({ size: 8 }, 2);
    for (let i = 2; i >= 0; i--) a.drv.writeDesc(i, a.drv.dataOff, 8, 0, A1 | (i < 2 ? NEXT : 0));
    expectBroken(a.q, a.chain, 'chain_too_long');
    const b = setup({ size: 8, indirect: true }, 2);
    b.drv.postIndirect([{ len: 8 }, { len: 8 }, { len: 8 }]);
    expectBroken(b.q, b.chain, 'chain_too_long');
  });

  test('readable after writable in the ring breaks the queue', () => {
    const a = setup({ size: 8 });
    a.drv.writeDesc(1, a.drv.dataOff, 8, 0, A1);
    a.drv.writeDesc(0, a.drv.dataOff, 8, 0, A1 | WRITE | NEXT);
    expectBroken(a.q, a.chain, 'readable_after_writable');
  });

  test('a table with WRITE out of order (DPDK\'s packed transmit header) is read as all device-readable, and counted', () => {
    const { drv, q, chain } = setup({ size: 8, indirect: true });
    const t = drv.alloc(48, 16);
    drv.writeDesc(0, drv.dataOff, 12, 0, WRITE, t); // the net header, marked WRITE
    drv.writeDesc(1, drv.dataOff + 64, 60, 1, A1, t); // the frame, with the ring's flags
    drv.writeDesc(2, drv.dataOff + 128, 40, 2, A1 | NEXT, t);
    drv.writeDesc(0, t, 48, 3, A1 | INDIRECT);
    assert.ok(q.pop(chain));
    assert.deepEqual([chain.head, chain.count, chain.readable, chain.readableBytes, chain.writableBytes], [3, 3, 3, 112, 0]);
    assert.equal(q.tablesReadOnly, 1);
    assert.equal(q.broken, null);
    // In order, WRITE still means writable.
    const t2 = drv.alloc(32, 16);
    drv.writeDesc(0, drv.dataOff, 12, 0, 0, t2);
    drv.writeDesc(1, drv.dataOff + 64, 60, 0, WRITE, t2);
    drv.writeDesc(1, t2, 32, 4, A1 | INDIRECT);
    assert.ok(q.pop(chain));
    assert.deepEqual([chain.readable, chain.writableBytes], [1, 60]);
    assert.equal(q.tablesReadOnly, 1);
  });

  test('a list of 2^32 bytes or more', () => {
    const { drv, q, chain } = setup({ size: 4 });
    drv.mem.setRegions([[0, Number.MAX_SAFE_INTEGER]]);
    drv.writeDesc(1, 0, 0xffffffff, 0, A1);
    drv.writeDesc(0, 0, 1, 0, A1 | NEXT);
    expectBroken(q, chain, 'chain_len_overflow');
  });

  test('unmapped buffers and addresses beyond 2^53', () => {
    for (const addr of [drv0().end + 64, 2 ** 60]) {
      const { drv, q, chain } = setup({ size: 4 });
      drv.writeDesc(0, addr, 8, 0, A1);
      expectBroken(q, chain, 'desc_unmapped');
    }
  });

  test('indirect rules: negotiated, alone in its list, a whole number of entries, mapped', () => {
    const cases: Array<[QueueErrorName, boolean, (d: MockPackedDriver) => void]> = [
      ['indirect_not_negotiated', false, (d) => d.writeDesc(0, d.dataOff, 16, 0, A1 | INDIRECT)],
      ['indirect_with_next', true, (d) => {
        d.writeDesc(1, d.dataOff, 8, 0, A1);
        d.writeDesc(0, d.dataOff, 16, 0, A1 | INDIRECT | NEXT);
      }],
      ['indirect_with_next', true, (d) => {
        d.writeDesc(1, d.dataOff, 16, 0, A1 | INDIRECT);
        d.writeDesc(0, d.dataOff, 8, 0, A1 | NEXT); // a direct descriptor before it
      }],
      ['indirect_bad_len', true, (d) => d.writeDesc(0, d.dataOff, 0, 0, A1 | INDIRECT)],
      ['indirect_bad_len', true, (d) => d.writeDesc(0, d.dataOff, 24, 0, A1 | INDIRECT)],
      ['indirect_unmapped', true, (d) => d.writeDesc(0, d.end, 16, 0, A1 | INDIRECT)],
      ['indirect_unmapped', true, (d) => d.writeDesc(0, 2 ** 60, 16, 0, A1 | INDIRECT)],
    ];
    for (const [code, indirect, write] of cases) {
      const { drv, q, chain } = setup({ size: 4, indirect });
      write(drv);
      expectBroken(q, chain, code);
    }
  });

  test('flags other than WRITE inside a table, and its IDs, are ignored', () => {
    const { drv, q, chain } = setup({ size: 4, indirect: true });
    const t = drv.alloc(32, 16);
    drv.writeDesc(0, drv.dataOff, 8, 77, NEXT | INDIRECT | A1, t);
    drv.writeDesc(1, drv.dataOff + 64, 8, 99, WRITE | INDIRECT, t);
    drv.writeDesc(0, t, 32, 5, A1 | INDIRECT);
    assert.ok(q.pop(chain));
    assert.equal(chain.head, 5);
    assert.deepEqual([chain.count, chain.readable, chain.indirect], [2, 1, true]);
  });

  test('any ring content: pop never throws, stays in bounds, and the queue either works or is broken with a named reason', () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 16 }), fc.boolean(),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 4096 }), fc.nat(0xffff), fc.nat(0xffff), fc.boolean()), { minLength: 1, maxLength: 40 }),
      (size, indirect, descs) => {
        const { drv, q, chain } = setup({ size, indirect }, 16);
        for (let i = descs.length - 1; i >= 0; i--) {
          const [addr, len, id, flags, mapped] = descs[i]!;
          drv.writeDesc(i % size, mapped ? drv.dataOff + (addr % 4096) : addr * 4096, len, id, flags);
        }
        let pops = 0;
        while (q.pop(chain)) {
          for (let k = 0; k < chain.count; k++) {
            assert.ok(drv.mem.containsOffset(chain.offset[k]!, chain.len[k]!), 'every segment inside the memory');
          }
          q.push(chain.head, 0);
          assert.ok(++pops <= size, 'at most one lap of lists without new writes');
        }
        q.flush();
        assert.ok(q.broken === null || QUEUE_ERROR_NAMES.includes(q.broken));
      },
    ), { numRuns: 500 });
  });
});

describe('packed driver queue: hostile devices break only the queue', () => {
  function posted(size = 4) {
    const drv = new MockPackedDriver({ size });
    const { head } = drv.post([{ len: 100, writable: true }]);
    return { drv, dq: drv.queue, head };
  }
  function writeUsed(drv: MockPackedDriver, index: number, id: number, len: number, flags: number): void {
    drv.writeDesc(index, 0, len, id, flags);
  }

  test('an ID out of range or not in flight', () => {
    for (const id of [4, 3, 0xffff]) {
      const { drv, dq } = posted();
      writeUsed(drv, 0, id, 10, usedFlags(1) | WRITE);
      assert.equal(dq.getUsed(), -1);
      assert.equal(dq.broken, 'used_id_invalid');
      assert.equal(dq.errors[DriverError.used_id_invalid], 1);
      assert.equal(dq.getUsed(), -1, 'broken stays broken');
    }
  });

  test('a length beyond the writable bytes; no length without WRITE', () => {
    const a = posted();
    writeUsed(a.drv, 0, a.head, 101, usedFlags(1) | WRITE);
    assert.equal(a.dq.getUsed(), -1);
    assert.equal(a.dq.broken, 'used_len_invalid');
    const b = posted();
    writeUsed(b.drv, 0, b.head, 0xffffffff, usedFlags(1));
    assert.equal(b.dq.getUsed(), b.head, 'len is reserved without WRITE');
    assert.equal(b.dq.usedLen, 0);
  });

  test('an ID returned twice', () => {
    const { drv, dq, head } = posted();
    drv.post([{ len: 8 }]);
    writeUsed(drv, 0, head, 0, usedFlags(1));
    assert.equal(dq.getUsed(), head);
    writeUsed(drv, 1, head, 0, usedFlags(1));
    assert.equal(dq.getUsed(), -1);
    assert.equal(dq.broken, 'used_id_invalid');
  });

  test('used flags from the wrong lap are not used', () => {
    const { drv, dq } = posted();
    writeUsed(drv, 0, 0, 0, usedFlags(0));
    assert.equal(dq.getUsed(), -1);
    assert.equal(dq.broken, null);
  });
});

function drv0(): MockPackedDriver {
  return new MockPackedDriver({ size: 4 });
}
