import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { DEFAULT_CHAIN_CAPACITY, DescriptorChain } from './chain.ts';
import { MockDriver, type MockDriverOptions, type MockSegment } from './mock-driver.ts';
import {
  AVAIL_ALIGN, DESC_ALIGN, DESC_SIZE, MAX_QUEUE_SIZE, USED_ALIGN, VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY, availEventOffset, availRingSize,
  descTableSize, isValidQueueSize, usedEventOffset, usedRingSize, vringNeedEvent,
} from './ring.ts';
import { DeviceQueue, QUEUE_ERROR_NAMES, QueueError, type QueueErrorName } from './split-queue.ts';

// Deterministic by default; set FC_SEED to explore other inputs (a failure prints its seed).
fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 20241124) });

const NEXT = VRING_DESC_F_NEXT;
const WRITE = VRING_DESC_F_WRITE;
const INDIRECT = VRING_DESC_F_INDIRECT;

function setup(opts: MockDriverOptions, chainCap = DEFAULT_CHAIN_CAPACITY) {
  const drv = new MockDriver(opts);
  const q = new DeviceQueue(drv.space, drv.mem);
  assert.equal(q.configure(drv.deviceConfig()), null);
  return { drv, q, chain: new DescriptorChain(chainCap) };
}

/** pop fails with `code`, counted once, and the queue stays broken. */
function expectBroken(q: DeviceQueue, chain: DescriptorChain, code: QueueErrorName): void {
  assert.equal(q.pop(chain), false);
  assert.equal(q.broken, code);
  assert.equal(q.errors[QueueError[code]], 1, `${code} counted once`);
  const total = q.errors.reduce((a, b) => a + b, 0);
  assert.equal(total, 1, 'no other error counted');
  assert.equal(q.pop(chain), false, 'a broken queue pops nothing');
  assert.equal(q.available(), 0);
  assert.equal(q.errors[QueueError[code]], 1, 'a broken queue does not count again');
}

function bytesOf(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 31 + i * 7) & 0xff;
  return b;
}

describe('ring layout', () => {
  test('constants and sizes match virtio 1.2 2.7', () => {
    assert.equal(VIRTIO_F_INDIRECT_DESC, 28);
    assert.equal(VIRTIO_F_EVENT_IDX, 29);
    assert.equal(VIRTIO_F_VERSION_1, 32);
    assert.deepEqual([NEXT, WRITE, INDIRECT], [1, 2, 4]);
    assert.equal(VRING_AVAIL_F_NO_INTERRUPT, 1);
    assert.equal(VRING_USED_F_NO_NOTIFY, 1);
    assert.deepEqual([DESC_ALIGN, AVAIL_ALIGN, USED_ALIGN], [16, 2, 4]);
    assert.equal(DESC_SIZE, 16);
    assert.equal(descTableSize(256), 4096);
    assert.equal(availRingSize(256), 6 + 512);
    assert.equal(usedRingSize(256), 6 + 2048);
    assert.equal(usedEventOffset(256), 4 + 512);
    assert.equal(availEventOffset(256), 4 + 2048);
    assert.equal(MAX_QUEUE_SIZE, 32768);
    for (const s of [1, 2, 256, 32768]) assert.ok(isValidQueueSize(s), `${s}`);
    for (const s of [0, 3, 255, 32769, 65536, -1, 1.5]) assert.ok(!isValidQueueSize(s), `${s}`);
  });

  test('vringNeedEvent: event in [old, new) modulo 2^16', () => {
    assert.equal(vringNeedEvent(0, 1, 0), true);
    assert.equal(vringNeedEvent(1, 1, 0), false);
    assert.equal(vringNeedEvent(5, 10, 0), true);
    assert.equal(vringNeedEvent(10, 10, 0), false);
    assert.equal(vringNeedEvent(3, 3, 3), false, 'no movement, no event');
    // Across the 16-bit wrap: old = 0xfff0, new = 0x0010.
    assert.equal(vringNeedEvent(0xfff0, 0x0010, 0xfff0), true);
    assert.equal(vringNeedEvent(0xffff, 0x0010, 0xfff0), true);
    assert.equal(vringNeedEvent(0x0000, 0x0010, 0xfff0), true);
    assert.equal(vringNeedEvent(0x000f, 0x0010, 0xfff0), true);
    assert.equal(vringNeedEvent(0x0010, 0x0010, 0xfff0), false);
    assert.equal(vringNeedEvent(0xffef, 0x0010, 0xfff0), false);
    assert.equal(vringNeedEvent(0x8000, 0x0010, 0xfff0), false);
  });

  test('vringNeedEvent equals "(event - old) mod 2^16 < (new - old) mod 2^16" for all 16-bit triples', () => {
    const u16 = fc.integer({ min: 0, max: 0xffff });
    fc.assert(fc.property(u16, u16, u16, (e, n, o) => {
      assert.equal(vringNeedEvent(e, n, o), ((e - o) & 0xffff) < ((n - o) & 0xffff));
    }), { numRuns: 2000 });
  });
});

describe('DeviceQueue.configure', () => {
  test('rejects bad sizes, misaligned parts and parts outside the memory, with a reason', () => {
    const drv = new MockDriver({ size: 16 });
    const q = new DeviceQueue(drv.space, drv.mem);
    const ok = drv.deviceConfig();
    for (const size of [0, 3, 24, 32769, 65536]) {
      assert.match(q.configure({ ...ok, size }) ?? '', /power of two/);
      assert.equal(q.ready, false);
    }
    assert.match(q.configure({ ...ok, descAddr: ok.descAddr + 8 }) ?? '', /descriptor table.*aligned to 16/);
    assert.match(q.configure({ ...ok, availAddr: ok.availAddr + 1 }) ?? '', /available ring.*aligned to 2/);
    assert.match(q.configure({ ...ok, usedAddr: ok.usedAddr + 2 }) ?? '', /used ring.*aligned to 4/);
    assert.match(q.configure({ ...ok, usedAddr: drv.end - 8 }) ?? '', /outside/);
    assert.match(q.configure({ ...ok, descAddr: -16 }) ?? '', /not a valid offset/);
    assert.match(q.configure({ ...ok, lastAvailIdx: 65536 }) ?? '', /16-bit/);
    assert.equal(q.pop(new DescriptorChain()), false, 'an unconfigured queue pops nothing');
    assert.equal(q.configure(ok), null);
    assert.equal(q.ready, true);
  });

  test('accepts sizes 1 and 32768', () => {
    for (const size of [1, 32768]) {
      const { drv, q, chain } = setup({ size, dataBytes: 4096 });
      drv.post([{ len: 10, data: bytesOf(10, 1) }]);
      assert.equal(q.pop(chain), true);
      assert.equal(chain.count, 1);
    }
  });

  test('resumes at lastAvailIdx and at the used.idx found in memory; vringBase reports it', () => {
    const { drv, q, chain } = setup({ size: 8 });
    for (let i = 0; i < 3; i++) drv.post([{ len: 4 }]);
    assert.equal(q.pop(chain), true);
    q.push(chain.head, 0);
    q.flush();
    assert.equal(q.vringBase, 1);
    const base = q.vringBase;
    q.reset();
    assert.equal(q.ready, false);
    assert.equal(q.configure(drv.deviceConfig({ lastAvailIdx: base })), null);
    assert.equal(q.usedIdx, 1, 'used index taken from used.idx in memory');
    assert.equal(q.available(), 2);
    assert.equal(q.pop(chain), true);
    assert.equal(chain.head, 1);
  });

  test('resumeAtUsed: a driver that kept its ring and sends base 0 resumes at used.idx; without it the ring breaks', () => {
    // Ten chains used and returned, as the last device left them; then two more posted.
    const { drv, q, chain } = setup({ size: 8 });
    drv.writeDesc(0, drv.addr(drv.alloc(4)), 4, 0, 0); // one buffer, offered again and again (raw)
    for (let round = 0; round < 10; round++) {
      drv.pushAvail(0);
      assert.equal(q.pop(chain), true);
      q.push(chain.head, 0);
      q.flush();
    }
    drv.pushAvail(0);
    drv.pushAvail(0);
    q.reset();
    const resumed = new DeviceQueue(drv.space, drv.mem);
    assert.equal(resumed.configure(drv.deviceConfig({ lastAvailIdx: 0, resumeAtUsed: true })), null);
    assert.equal(resumed.vringBase, 10, 'starts at used.idx, not at the base it was given');
    assert.equal(resumed.available(), 2);
    assert.equal(resumed.pop(chain), true);
    assert.equal(resumed.broken, null);
    const fresh = new DeviceQueue(drv.space, drv.mem);
    assert.equal(fresh.configure(drv.deviceConfig({ lastAvailIdx: 0 })), null);
    expectBroken(fresh, chain, 'avail_idx_ahead'); // 12 entries ahead of 0 in a ring of 8
  });
});

describe('DeviceQueue.pop: valid chains', () => {
  test('a direct chain: readable then writable, offsets and totals', () => {
    const { drv, q, chain } = setup({ size: 16, base: 0x1_0000_0000 });
    const { head, offsets } = drv.post([
      { len: 12, data: bytesOf(12, 1) }, { len: 100, data: bytesOf(100, 2) },
      { len: 200, writable: true }, { len: 50, writable: true },
    ]);
    assert.equal(q.available(), 1);
    assert.equal(q.pop(chain), true);
    assert.equal(chain.head, head);
    assert.equal(chain.count, 4);
    assert.equal(chain.readable, 2);
    assert.deepEqual([...chain.offset.subarray(0, 4)], offsets);
    assert.deepEqual([...chain.len.subarray(0, 4)], [12, 100, 200, 50]);
    assert.deepEqual([...chain.writable.subarray(0, 4)], [0, 0, 1, 1]);
    assert.equal(chain.readableBytes, 112);
    assert.equal(chain.writableBytes, 250);
    assert.equal(chain.totalBytes, 362);
    assert.equal(chain.indirect, false);
    assert.deepEqual(drv.space.bytes.subarray(chain.offset[1], chain.offset[1]! + 100), bytesOf(100, 2));
    assert.equal(q.pop(chain), false, 'nothing more');
    assert.equal(q.broken, null);
  });

  test('an indirect chain; the WRITE flag of the indirect descriptor itself is ignored (2.7.5.3.2)', () => {
    const { drv, q, chain } = setup({ size: 8, indirect: true });
    const { head, offsets, table } = drv.postIndirect([{ len: 30, data: bytesOf(30, 3) }, { len: 64, writable: true }]);
    drv.writeDesc(head, drv.addr(table), 32, INDIRECT | WRITE, 0);
    assert.equal(q.pop(chain), true);
    assert.equal(chain.indirect, true);
    assert.equal(chain.count, 2);
    assert.equal(chain.readable, 1);
    assert.deepEqual([...chain.offset.subarray(0, 2)], offsets);
    assert.deepEqual([...chain.writable.subarray(0, 2)], [0, 1]);
  });

  test('direct descriptors followed by one indirect descriptor are accepted (2.7.5.3.2)', () => {
    const { drv, q, chain } = setup({ size: 8, indirect: true });
    const hdr = drv.alloc(12);
    const pkt = drv.alloc(64);
    const rx = drv.alloc(128);
    const table = drv.alloc(32, 16);
    drv.writeDesc(0, drv.addr(pkt), 64, 0, 0, table);
    drv.writeDesc(1, drv.addr(rx), 128, WRITE, 0, table);
    drv.writeDesc(0, drv.addr(pkt), 64, NEXT, 1, table); // indirect chain 0 -> 1
    drv.writeDesc(5, drv.addr(hdr), 12, NEXT, 6);
    drv.writeDesc(6, drv.addr(table), 32, INDIRECT, 0);
    drv.pushAvail(5);
    assert.equal(q.pop(chain), true);
    assert.equal(chain.head, 5);
    assert.deepEqual([...chain.offset.subarray(0, 3)], [hdr, pkt, rx]);
    assert.deepEqual([...chain.writable.subarray(0, 3)], [0, 0, 1]);
    assert.equal(chain.descriptors, 3);
  });

  test('zero-length buffers are walked but produce no segment and are not translated', () => {
    const { drv, q, chain } = setup({ size: 8 });
    const a = drv.alloc(10);
    drv.writeDesc(0, drv.addr(a), 10, NEXT, 1);
    drv.writeDesc(1, 0xdead_beef_0000, 0, NEXT, 2); // unmapped address, but empty
    drv.writeDesc(2, drv.addr(a), 10, WRITE, 0);
    drv.pushAvail(0);
    assert.equal(q.pop(chain), true);
    assert.equal(chain.count, 2);
    assert.equal(chain.descriptors, 3);
    assert.equal(q.broken, null);
  });

  test('a chain of exactly the queue size, and exactly the chain capacity, is accepted', () => {
    const { drv, q, chain } = setup({ size: 16 }, 16);
    const b = drv.alloc(16);
    for (let i = 0; i < 16; i++) drv.writeDesc(i, drv.addr(b + i), 1, i < 15 ? NEXT : 0, i + 1);
    drv.pushAvail(0);
    assert.equal(q.pop(chain), true);
    assert.equal(chain.count, 16);
  });

  test('exactly size entries ahead is allowed', () => {
    const { drv, q, chain } = setup({ size: 4 });
    for (let i = 0; i < 4; i++) drv.post([{ len: 8 }]);
    assert.equal(q.available(), 4);
    for (let i = 0; i < 4; i++) assert.equal(q.pop(chain), true);
    assert.equal(q.broken, null);
  });
});

describe('DeviceQueue.pop: each validation rule breaks the queue with its reason, never throws', () => {
  test('avail_idx_ahead: avail.idx more than size ahead (2.7, 2.7.13)', () => {
    const { drv, q, chain } = setup({ size: 8 });
    drv.availIdx = 9;
    assert.equal(q.available(), 0);
    assert.equal(q.broken, 'avail_idx_ahead');
    const q2 = new DeviceQueue(drv.space, drv.mem);
    assert.equal(q2.configure(drv.deviceConfig({ lastAvailIdx: 3 })), null);
    drv.availIdx = 2; // behind last_avail_idx: "moved backwards" reads as 65535 ahead
    expectBroken(q2, chain, 'avail_idx_ahead');
  });

  test('head_out_of_range: avail ring entry >= size', () => {
    const { drv, q, chain } = setup({ size: 8 });
    drv.pushAvail(8);
    expectBroken(q, chain, 'head_out_of_range');
  });

  test('next_out_of_range: next >= size (2.7.5)', () => {
    const { drv, q, chain } = setup({ size: 8 });
    drv.writeDesc(0, drv.addr(drv.alloc(8)), 8, NEXT, 8);
    drv.pushAvail(0);
    expectBroken(q, chain, 'next_out_of_range');
  });

  test('next_out_of_range inside an indirect table: next >= table entries', () => {
    const { drv, q, chain } = setup({ size: 8, indirect: true });
    const t = drv.alloc(32, 16);
    drv.writeDesc(0, drv.addr(drv.alloc(8)), 8, NEXT, 2, t); // table has 2 entries
    drv.writeDesc(0, drv.addr(t), 32, INDIRECT, 0);
    drv.pushAvail(0);
    expectBroken(q, chain, 'next_out_of_range');
  });

  test('chain_loop: a loop in the descriptor table (2.7.5.2)', () => {
    const { drv, q, chain } = setup({ size: 8 });
    const b = drv.addr(drv.alloc(8));
    drv.writeDesc(0, b, 8, NEXT, 1);
    drv.writeDesc(1, b, 8, NEXT, 0);
    drv.pushAvail(0);
    expectBroken(q, chain, 'chain_loop');
  });

  test('chain_loop: a descriptor pointing at itself with zero length', () => {
    const { drv, q, chain } = setup({ size: 256 });
    drv.writeDesc(3, 0, 0, NEXT, 3);
    drv.pushAvail(3);
    expectBroken(q, chain, 'chain_loop');
  });

  test('chain_loop inside an indirect table', () => {
    const { drv, q, chain } = setup({ size: 8, indirect: true });
    const t = drv.alloc(48, 16);
    const b = drv.addr(drv.alloc(8));
    drv.writeDesc(0, b, 8, NEXT, 1, t);
    drv.writeDesc(1, b, 8, NEXT, 2, t);
    drv.writeDesc(2, b, 8, NEXT, 0, t);
    drv.writeDesc(0, drv.addr(t), 48, INDIRECT, 0);
    drv.pushAvail(0);
    expectBroken(q, chain, 'chain_loop');
  });

  test('chain_too_long: more buffer descriptors than the chain capacity (2.7.4.1)', () => {
    const { drv, q, chain } = setup({ size: 2048 });
    const b = drv.addr(drv.alloc(8));
    const n = DEFAULT_CHAIN_CAPACITY + 1;
    for (let i = 0; i < n; i++) drv.writeDesc(i, b, 8, i < n - 1 ? NEXT : 0, i + 1);
    drv.pushAvail(0);
    expectBroken(q, chain, 'chain_too_long');
  });

  test('chain_too_long: a loop in a queue larger than the capacity ends at the capacity', () => {
    const { drv, q, chain } = setup({ size: 32768, dataBytes: 4096 });
    drv.writeDesc(0, 0, 0, NEXT, 1);
    drv.writeDesc(1, 0, 0, NEXT, 0);
    drv.pushAvail(0);
    const t0 = performance.now();
    expectBroken(q, chain, 'chain_too_long');
    assert.ok(performance.now() - t0 < 1000);
  });

  test('chain_too_long with a small chain capacity', () => {
    const { drv, q, chain } = setup({ size: 16 }, 4);
    drv.post([{ len: 1 }, { len: 1 }, { len: 1 }, { len: 1 }]);
    assert.equal(q.pop(chain), true, '4 descriptors fit a capacity of 4');
    const b = drv.addr(drv.alloc(8));
    for (let i = 0; i < 5; i++) drv.writeDesc(8 + i, b, 1, i < 4 ? NEXT : 0, 9 + i);
    drv.pushAvail(8);
    expectBroken(q, chain, 'chain_too_long');
  });

  test('chain_len_overflow: total length 2^32 or more (2.7.5.2)', () => {
    const { drv, q, chain } = setup({ size: 8 });
    const b = drv.addr(drv.alloc(8));
    drv.writeDesc(0, b, 8, NEXT, 1);
    drv.writeDesc(1, b, 0xffff_fff8, 0, 0);
    drv.pushAvail(0);
    expectBroken(q, chain, 'chain_len_overflow');
  });

  test('readable_after_writable: a device-readable buffer after a device-writable one (2.7.4.2)', () => {
    const { drv, q, chain } = setup({ size: 8 });
    const b = drv.addr(drv.alloc(8));
    drv.writeDesc(0, b, 8, WRITE | NEXT, 1);
    drv.writeDesc(1, b, 8, 0, 0);
    drv.pushAvail(0);
    expectBroken(q, chain, 'readable_after_writable');
  });

  test('readable_after_writable: a readable descriptor in the indirect table after a writable direct one', () => {
    const { drv, q, chain } = setup({ size: 8, indirect: true });
    const b = drv.addr(drv.alloc(8));
    const t = drv.alloc(16, 16);
    drv.writeDesc(0, b, 8, 0, 0, t);
    drv.writeDesc(0, b, 8, WRITE | NEXT, 1);
    drv.writeDesc(1, drv.addr(t), 16, INDIRECT, 0);
    drv.pushAvail(0);
    expectBroken(q, chain, 'readable_after_writable');
  });

  test('readable_after_writable: order is checked on zero-length descriptors too', () => {
    const { drv, q, chain } = setup({ size: 8 });
    const b = drv.addr(drv.alloc(8));
    drv.writeDesc(0, b, 0, WRITE | NEXT, 1);
    drv.writeDesc(1, b, 8, 0, 0);
    drv.pushAvail(0);
    expectBroken(q, chain, 'readable_after_writable');
  });

  test('desc_unmapped: a buffer outside every region, past the end, below the base, at 2^53 or more', () => {
    const cases: Array<(d: MockDriver) => void> = [
      (d) => { const o = d.alloc(64); d.mem.setRegions([[0, o + 32]]); d.writeDesc(0, d.addr(o), 64, 0, 0); },
      (d) => d.writeDesc(0, d.addr(d.end - 4), 8, 0, 0),
      (d) => d.writeDesc(0, d.base - 8, 8, 0, 0),
      (d) => d.writeDesc(0, 0xffff_ffff * 4294967296 + 0x1000, 8, 0, 0),
      (d) => d.writeDesc(0, 2 ** 53, 8, 0, 0),
    ];
    for (const make of cases) {
      const { drv, q, chain } = setup({ size: 8, base: 0x4000_0000 });
      make(drv);
      drv.pushAvail(0);
      expectBroken(q, chain, 'desc_unmapped');
    }
  });

  test('desc_unmapped: an AddressSpace answering an offset past the end of bytes is not trusted', () => {
    const drv = new MockDriver({ size: 8 });
    const q = new DeviceQueue(drv.space, { translate: () => drv.end - 2 });
    assert.equal(q.configure(drv.deviceConfig()), null);
    drv.writeDesc(0, 0, 8, 0, 0);
    drv.pushAvail(0);
    expectBroken(q, new DescriptorChain(), 'desc_unmapped');
  });

  test('indirect_not_negotiated: INDIRECT without VIRTIO_F_INDIRECT_DESC (2.7.5.3.1)', () => {
    const { drv, q, chain } = setup({ size: 8, indirect: false });
    const t = drv.alloc(16, 16);
    drv.writeDesc(0, drv.addr(drv.alloc(8)), 8, 0, 0, t);
    drv.writeDesc(0, drv.addr(t), 16, INDIRECT, 0);
    drv.pushAvail(0);
    expectBroken(q, chain, 'indirect_not_negotiated');
  });

  test('indirect_with_next: INDIRECT and NEXT together (2.7.5.3.1)', () => {
    const { drv, q, chain } = setup({ size: 8, indirect: true });
    const t = drv.alloc(16, 16);
    drv.writeDesc(0, drv.addr(drv.alloc(8)), 8, 0, 0, t);
    drv.writeDesc(0, drv.addr(t), 16, INDIRECT | NEXT, 1);
    drv.writeDesc(1, drv.addr(drv.alloc(8)), 8, 0, 0);
    drv.pushAvail(0);
    expectBroken(q, chain, 'indirect_with_next');
  });

  test('indirect_nested: INDIRECT inside an indirect table (2.7.5.3.1)', () => {
    const { drv, q, chain } = setup({ size: 8, indirect: true });
    const inner = drv.alloc(16, 16);
    const outer = drv.alloc(16, 16);
    drv.writeDesc(0, drv.addr(drv.alloc(8)), 8, 0, 0, inner);
    drv.writeDesc(0, drv.addr(inner), 16, INDIRECT, 0, outer);
    drv.writeDesc(0, drv.addr(outer), 16, INDIRECT, 0);
    drv.pushAvail(0);
    expectBroken(q, chain, 'indirect_nested');
  });

  test('indirect_bad_len: table length 0 or not a multiple of 16 (2.7.5.3)', () => {
    for (const len of [0, 8, 17, 31, 0xffff_ffff]) {
      const { drv, q, chain } = setup({ size: 8, indirect: true });
      drv.writeDesc(0, drv.addr(drv.alloc(64, 16)), len, INDIRECT, 0);
      drv.pushAvail(0);
      expectBroken(q, chain, 'indirect_bad_len');
    }
  });

  test('indirect_unmapped: the table outside the address space', () => {
    const { drv, q, chain } = setup({ size: 8, indirect: true });
    drv.writeDesc(0, drv.addr(drv.end - 16), 32, INDIRECT, 0);
    drv.pushAvail(0);
    expectBroken(q, chain, 'indirect_unmapped');
  });

  test('an indirect table need not be 16-byte aligned (only its length is checked)', () => {
    const { drv, q, chain } = setup({ size: 8, indirect: true });
    const t = drv.alloc(40, 8) + 3;
    const b = drv.alloc(8);
    drv.writeDesc(0, drv.addr(b), 8, NEXT, 1, t);
    drv.writeDesc(1, drv.addr(b), 8, WRITE, 0, t);
    drv.writeDesc(0, drv.addr(t), 32, INDIRECT, 0);
    drv.pushAvail(0);
    assert.equal(q.pop(chain), true);
    assert.equal(chain.count, 2);
  });

  test('reason codes and counter slots correspond one to one', () => {
    assert.equal(new Set(Object.values(QueueError)).size, QUEUE_ERROR_NAMES.length);
    QUEUE_ERROR_NAMES.forEach((n, i) => assert.equal(QueueError[n], i));
  });

  test('reset() and configure() clear broken; counters are kept', () => {
    const { drv, q, chain } = setup({ size: 8 });
    drv.pushAvail(9);
    assert.equal(q.pop(chain), false);
    assert.equal(q.broken, 'head_out_of_range');
    q.reset();
    drv.queue.configure({ size: 8, descOff: drv.descOff, availOff: drv.availOff, usedOff: drv.usedOff, eventIdx: false });
    assert.equal(q.configure(drv.deviceConfig()), null);
    assert.equal(q.broken, null);
    drv.post([{ len: 4 }]);
    assert.equal(q.pop(chain), true);
    assert.equal(q.errors[QueueError.head_out_of_range], 1);
  });
});

describe('DeviceQueue used ring', () => {
  test('push is invisible until flush; flush writes every element before publishing used.idx', () => {
    const drv = new MockDriver({ size: 8 });
    // A DataView that checks, on every used element write, that used.idx does not cover it yet.
    const usedIdxU16 = (drv.usedOff + 2) >> 1;
    const ringStart = drv.usedOff + 4;
    const ringEnd = ringStart + 8 * 8;
    let checkedWrites = 0;
    class CheckingView extends DataView<ArrayBuffer> {
      override setUint32(off: number, v: number, le?: boolean): void {
        if (off >= ringStart && off < ringEnd) {
          assert.equal(Atomics.load(drv.space.u16, usedIdxU16), 0, 'used element written after used.idx');
          checkedWrites++;
        }
        super.setUint32(off, v, le);
      }
    }
    const space = { bytes: drv.space.bytes, u16: drv.space.u16, dv: new CheckingView(drv.buffer) };
    const q = new DeviceQueue(space, drv.mem);
    assert.equal(q.configure(drv.deviceConfig()), null);
    const chain = new DescriptorChain();
    for (let i = 0; i < 5; i++) drv.post([{ len: 16, writable: true }]);
    const heads: number[] = [];
    while (q.pop(chain)) heads.push(chain.head);
    assert.equal(heads.length, 5);
    heads.forEach((h, i) => q.push(h, 10 + i));
    assert.equal(drv.usedIdx, 0, 'not published before flush');
    assert.deepEqual(drv.usedElem(0), [0, 0], 'not written before flush');
    q.flush();
    assert.equal(checkedWrites, 10);
    assert.equal(drv.usedIdx, 5);
    heads.forEach((h, i) => assert.deepEqual(drv.usedElem(i), [h, 10 + i]));
  });

  test('flush with nothing pushed publishes nothing and asks for no notification', () => {
    const { drv, q } = setup({ size: 8 });
    assert.equal(q.flush(), false);
    assert.equal(drv.usedIdx, 0);
  });

  test('more pushes than the queue size between flushes (a misbehaving driver) do not throw', () => {
    const { drv, q, chain } = setup({ size: 4 });
    drv.post([{ len: 4 }]);
    assert.equal(q.pop(chain), true);
    for (let i = 0; i < 11; i++) q.push(chain.head, i);
    q.flush();
    assert.equal(drv.usedIdx, 11);
    assert.deepEqual(drv.usedElem(10), [chain.head, 10]);
  });

  test('used.idx and avail.idx wrap at 2^16', () => {
    const { drv, q, chain } = setup({ size: 4 });
    q.reset();
    // Start both sides just below the wrap.
    drv.availIdx = 0xfffe;
    assert.equal(q.configure(drv.deviceConfig({ lastAvailIdx: 0xfffe, usedIdx: 0xfffe })), null);
    const b = drv.addr(drv.alloc(8));
    for (let i = 0; i < 4; i++) drv.writeDesc(i, b, 8, 0, 0);
    for (let i = 0; i < 4; i++) drv.pushAvail(i);
    assert.equal(drv.availIdx, 2);
    assert.equal(q.available(), 4);
    for (let i = 0; i < 4; i++) {
      assert.equal(q.pop(chain), true);
      assert.equal(chain.head, i);
      q.push(chain.head, 0);
    }
    q.flush();
    assert.equal(q.lastAvailIdx, 2);
    assert.equal(drv.usedIdx, 2);
    assert.deepEqual(drv.usedElem(0xfffe), [0, 0]);
    assert.deepEqual(drv.usedElem(1), [3, 0]);
  });
});

describe('used buffer notifications (device -> driver, 2.7.7)', () => {
  test('without EVENT_IDX: notify unless avail.flags has NO_INTERRUPT', () => {
    const { drv, q, chain } = setup({ size: 8 });
    drv.post([{ len: 4 }]);
    drv.post([{ len: 4 }]);
    q.pop(chain);
    q.push(chain.head, 0);
    assert.equal(q.flush(), true);
    drv.availFlags = VRING_AVAIL_F_NO_INTERRUPT;
    q.pop(chain);
    q.push(chain.head, 0);
    assert.equal(q.flush(), false);
  });

  test('with EVENT_IDX: the first flush notifies, then only when used.idx passes used_event', () => {
    const { drv, q, chain } = setup({ size: 16, eventIdx: true });
    for (let i = 0; i < 12; i++) drv.post([{ len: 4 }]);
    const flushN = (n: number): boolean => {
      for (let i = 0; i < n; i++) {
        assert.equal(q.pop(chain), true);
        q.push(chain.head, 0);
      }
      return q.flush();
    };
    drv.availFlags = VRING_AVAIL_F_NO_INTERRUPT; // must be ignored with EVENT_IDX
    drv.usedEvent = 100;
    assert.equal(flushN(1), true, 'first decision always notifies'); // used 0 -> 1
    drv.usedEvent = 5;
    assert.equal(flushN(2), false); // 1 -> 3
    assert.equal(flushN(3), true); // 3 -> 6: used index 5 written
    assert.equal(flushN(2), false); // 6 -> 8: old value tracked, 5 not crossed again
    drv.usedEvent = 8;
    assert.equal(flushN(1), true); // 8 -> 9
    drv.usedEvent = 8;
    assert.equal(flushN(1), false); // 9 -> 10
  });

  test('with EVENT_IDX across the 16-bit wrap of used.idx', () => {
    const drv = new MockDriver({ size: 8, eventIdx: true });
    const q = new DeviceQueue(drv.space, drv.mem);
    drv.availIdx = 0xfffc;
    assert.equal(q.configure(drv.deviceConfig({ lastAvailIdx: 0xfffc, usedIdx: 0xfffc })), null);
    const chain = new DescriptorChain();
    const b = drv.addr(drv.alloc(8));
    for (let i = 0; i < 8; i++) drv.writeDesc(i, b, 8, 0, 0);
    for (let i = 0; i < 8; i++) drv.pushAvail(i);
    const flushN = (n: number): boolean => {
      for (let i = 0; i < n; i++) {
        assert.equal(q.pop(chain), true);
        q.push(chain.head, 0);
      }
      return q.flush();
    };
    assert.equal(flushN(1), true); // first: 0xfffc -> 0xfffd
    drv.usedEvent = 0x0000;
    assert.equal(flushN(2), false); // 0xfffd -> 0xffff
    assert.equal(flushN(2), true); // 0xffff -> 0x0001 crosses 0x0000
    drv.usedEvent = 0xffff; // already passed
    assert.equal(flushN(2), false); // 0x0001 -> 0x0003
    drv.usedEvent = 0x0003;
    assert.equal(flushN(1), true); // 0x0003 -> 0x0004
  });
});

describe('available buffer notifications (driver -> device, 2.7.10)', () => {
  test('without EVENT_IDX: used.flags NO_NOTIFY, and the driver honours it', () => {
    const { drv, q, chain } = setup({ size: 8 });
    q.disableNotifications();
    assert.equal(drv.usedFlags, VRING_USED_F_NO_NOTIFY);
    drv.post([{ len: 4 }]);
    assert.equal(drv.queue.kickNeeded(), false);
    assert.equal(q.enableNotifications(), true, 'an entry slipped in while disabled');
    assert.equal(drv.usedFlags, 0);
    assert.equal(q.pop(chain), true);
    assert.equal(q.enableNotifications(), false, 'ring empty: safe to sleep');
    drv.post([{ len: 4 }]);
    assert.equal(drv.queue.kickNeeded(), true);
  });

  test('with EVENT_IDX: used.flags stays 0, avail_event = last_avail_idx on enable', () => {
    const { drv, q, chain } = setup({ size: 8, eventIdx: true });
    drv.availEvent = 0x1234;
    q.disableNotifications();
    assert.equal(drv.usedFlags, 0);
    assert.equal(drv.availEvent, 0x1234, 'disable writes nothing with EVENT_IDX');
    assert.equal(q.enableNotifications(), false);
    assert.equal(drv.availEvent, 0);
    drv.post([{ len: 4 }]);
    assert.equal(drv.queue.kickNeeded(), true, 'avail.idx moved 0 -> 1 across avail_event 0');
    q.disableNotifications();
    drv.post([{ len: 4 }]);
    assert.equal(drv.queue.kickNeeded(), false, 'avail_event 0 already passed');
    assert.equal(q.pop(chain), true);
    assert.equal(q.enableNotifications(), true, 'one more waiting');
    assert.equal(drv.availEvent, 1);
    assert.equal(q.pop(chain), true);
    assert.equal(q.enableNotifications(), false);
    assert.equal(drv.availEvent, 2);
    drv.post([{ len: 4 }]);
    assert.equal(drv.queue.kickNeeded(), true);
  });
});

describe('device/driver round trip', () => {
  test('70000 packets each way through a 64-entry queue (indexes wrap), content checked', () => {
    const drv = new MockDriver({ size: 64, eventIdx: true, indirect: true, base: 0x8_0000_0000, dataBytes: 1 << 20 });
    const q = new DeviceQueue(drv.space, drv.mem);
    assert.equal(q.configure(drv.deviceConfig()), null);
    const chain = new DescriptorChain();
    const bytes = drv.space.bytes;
    const TOTAL = 70000;
    const inflight = new Map<number, { seq: number; offs: number[]; lens: number[]; rx: boolean }>();
    let posted = 0;
    let completed = 0;
    let kicks = 0;
    let calls = 0;
    while (completed < TOTAL) {
      // Driver: post a burst (alternating tx chains with content and rx chains to be filled).
      while (posted < TOTAL && drv.queue.numFree >= 3) {
        const seq = posted;
        const rx = seq % 2 === 1;
        const len = 20 + (seq % 200);
        const segs: MockSegment[] = rx
          ? [{ len: 12, writable: true }, { len, writable: true }]
          : [{ len: 12, data: bytesOf(12, seq) }, { len, data: bytesOf(len, seq + 1) }];
        const r = seq % 5 === 0 ? drv.postIndirect(segs, false) : drv.post(segs, false);
        assert.ok(r.head >= 0);
        inflight.set(r.head, { seq, offs: r.offsets, lens: [12, len], rx });
        posted++;
        if (posted % 7 === 0) break;
      }
      drv.queue.publish();
      if (drv.queue.kickNeeded()) kicks++;
      // Device: consume everything, fill rx buffers, check tx content.
      while (q.pop(chain)) {
        const p = inflight.get(chain.head);
        assert.ok(p, `head ${chain.head} in flight`);
        assert.equal(chain.count, 2);
        assert.deepEqual([chain.offset[0], chain.offset[1]], p.offs);
        if (p.rx) {
          assert.equal(chain.readable, 0);
          bytes.set(bytesOf(p.lens[1]!, p.seq + 7), chain.offset[1]);
          q.push(chain.head, 12 + p.lens[1]!);
        } else {
          assert.equal(chain.readable, 2);
          assert.deepEqual(bytes.subarray(chain.offset[1], chain.offset[1]! + p.lens[1]!), bytesOf(p.lens[1]!, p.seq + 1));
          q.push(chain.head, 0);
        }
      }
      assert.equal(q.broken, null);
      if (q.flush()) calls++;
      // Driver: reclaim.
      drv.queue.enableUsedNotifications();
      for (let id = drv.queue.getUsed(); id >= 0; id = drv.queue.getUsed()) {
        const p = inflight.get(id);
        assert.ok(p);
        inflight.delete(id);
        if (p.rx) {
          assert.equal(drv.queue.usedLen, 12 + p.lens[1]!);
          assert.deepEqual(bytes.subarray(p.offs[1], p.offs[1]! + p.lens[1]!), bytesOf(p.lens[1]!, p.seq + 7));
        } else assert.equal(drv.queue.usedLen, 0);
        completed++;
      }
      assert.equal(drv.queue.broken, null);
    }
    assert.equal(inflight.size, 0);
    assert.equal(drv.queue.numFree, 64);
    assert.ok(q.lastAvailIdx === (TOTAL & 0xffff));
    assert.ok(kicks > 0 && calls > 0);
  });
});

// ---- properties ----

const segArb = fc.record({ len: fc.integer({ min: 0, max: 300 }), writable: fc.boolean() });
const chainArb = fc.record({
  segs: fc.array(segArb, { minLength: 1, maxLength: 12 }).map((s) => [...s].sort((a, b) => Number(a.writable) - Number(b.writable))),
  indirect: fc.boolean(),
});

describe('properties', () => {
  test('(a) random valid chains, direct and indirect, pop back exactly as posted', () => {
    fc.assert(fc.property(
      fc.constantFrom(8, 16, 64),
      fc.constantFrom(0, 0x1000, 0x1_0000_0000, 2 ** 52),
      fc.array(fc.array(chainArb, { minLength: 1, maxLength: 10 }), { minLength: 1, maxLength: 5 }),
      (size, base, batches) => {
        const drv = new MockDriver({ size, base, indirect: true, dataBytes: 64 * 1024 });
        const q = new DeviceQueue(drv.space, drv.mem);
        assert.equal(q.configure(drv.deviceConfig()), null);
        const chain = new DescriptorChain();
        for (const batch of batches) {
          drv.resetAlloc();
          const expected: Array<{ head: number; offsets: number[]; segs: MockSegment[] }> = [];
          for (const c of batch) {
            const segs: MockSegment[] = c.segs.map((s, i) => ({ ...s, data: bytesOf(s.len, i) }));
            const useIndirect = c.indirect || segs.length > drv.queue.numFree;
            if (drv.queue.numFree === 0) break;
            const r = useIndirect ? drv.postIndirect(segs, false) : drv.post(segs, false);
            assert.ok(r.head >= 0);
            expected.push({ head: r.head, offsets: r.offsets, segs });
          }
          drv.queue.publish();
          assert.equal(q.available(), expected.length);
          for (const e of expected) {
            assert.equal(q.pop(chain), true);
            assert.equal(chain.head, e.head);
            const nonEmpty = e.segs.map((s, i) => ({ ...s, off: e.offsets[i]! })).filter((s) => s.len > 0);
            assert.equal(chain.count, nonEmpty.length);
            assert.equal(chain.descriptors, e.segs.length);
            nonEmpty.forEach((s, k) => {
              assert.equal(chain.offset[k], s.off);
              assert.equal(chain.len[k], s.len);
              assert.equal(chain.writable[k], s.writable ? 1 : 0);
            });
            assert.equal(chain.readable, nonEmpty.filter((s) => !s.writable).length);
            assert.equal(chain.readableBytes, nonEmpty.filter((s) => !s.writable).reduce((a, s) => a + s.len, 0));
            assert.equal(chain.writableBytes, nonEmpty.filter((s) => s.writable).reduce((a, s) => a + s.len, 0));
            q.push(chain.head, chain.writableBytes);
          }
          assert.equal(q.pop(chain), false);
          assert.equal(q.broken, null);
          q.flush();
          for (let i = 0; i < expected.length; i++) assert.ok(drv.queue.getUsed() >= 0);
          assert.equal(drv.queue.broken, null);
        }
      },
    ), { numRuns: 150 });
  });

  const DATA = 8192;
  // A descriptor whose fields are drawn to hit the interesting cases often: addresses inside the
  // data area (often at a 16-byte table slot), small lengths, the usual flag combinations and
  // in-range next indexes, with a share of anything-goes values.
  const hostileDesc = (size: number, dataOff: number, dataLen: number, base: number) => fc.record({
    addr: fc.oneof(
      { weight: 6, arbitrary: fc.nat({ max: 127 }).map((k) => base + dataOff + 16 * k) },
      { weight: 3, arbitrary: fc.nat({ max: dataLen - 1 }).map((o) => base + dataOff + o) },
      { weight: 1, arbitrary: fc.tuple(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff })).map(([hi, lo]) => hi * 4294967296 + lo) },
      { weight: 1, arbitrary: fc.nat({ max: 0xffff }) },
    ),
    len: fc.oneof(
      { weight: 5, arbitrary: fc.nat({ max: 512 }) },
      { weight: 3, arbitrary: fc.constantFrom(0, 16, 32, 48, 64) },
      { weight: 1, arbitrary: fc.constantFrom(0xffff_ffff, 0x8000_0000, dataLen, 17) },
      { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) },
    ),
    flags: fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom(0, NEXT, WRITE, NEXT | WRITE, INDIRECT, INDIRECT | WRITE) },
      { weight: 1, arbitrary: fc.nat({ max: 0xffff }) },
    ),
    next: fc.oneof(
      { weight: 6, arbitrary: fc.nat({ max: size - 1 }) },
      { weight: 3, arbitrary: fc.nat({ max: 3 }) },
      { weight: 1, arbitrary: fc.nat({ max: 0xffff }) },
    ),
  });

  test('(b) random hostile rings never throw, stay bounded, and pop only chains inside the address space', () => {
    const scenario = fc.record({ size: fc.constantFrom(8, 32), base: fc.constantFrom(0, 0x10_0000) }).chain(({ size, base }) => {
      const { dataOff } = MockDriver.layout(size, DATA);
      const desc = hostileDesc(size, dataOff, DATA, base);
      return fc.record({
        size: fc.constant(size),
        base: fc.constant(base),
        indirect: fc.boolean(),
        lastAvail: fc.nat({ max: 0xffff }),
        availAhead: fc.oneof({ weight: 6, arbitrary: fc.nat({ max: size }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
        ring: fc.array(
          fc.oneof({ weight: 12, arbitrary: fc.nat({ max: size - 1 }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
          { minLength: size, maxLength: size },
        ),
        useRaw: fc.nat({ max: 5 }).map((x) => x === 0),
        rawDesc: fc.uint8Array({ minLength: 16 * size, maxLength: 16 * size }),
        descs: fc.array(desc, { minLength: size, maxLength: size }),
        dataSeed: fc.uint8Array({ minLength: 2048, maxLength: 2048 }),
        tableDescs: fc.array(fc.tuple(fc.nat({ max: 127 }), desc), { maxLength: 40 }),
        hole: fc.boolean(),
        cap: fc.constantFrom(16, 64),
      });
    });
    fc.assert(fc.property(scenario, (sc) => {
      const drv = new MockDriver({ size: sc.size, indirect: sc.indirect, base: sc.base, dataBytes: DATA });
      const bytes = drv.space.bytes;
      // Data area: random bytes, some overwritten with plausible descriptors so that indirect
      // tables pointing there have something to walk.
      bytes.set(sc.dataSeed, drv.dataOff);
      for (const [slot, d] of sc.tableDescs) drv.writeDesc(slot, d.addr, d.len, d.flags, d.next, drv.dataOff);
      if (sc.useRaw) bytes.set(sc.rawDesc, drv.descOff);
      else sc.descs.forEach((d, i) => drv.writeDesc(i, d.addr, d.len, d.flags, d.next));
      if (sc.hole) drv.mem.setRegions([[0, drv.dataOff + 1024], [drv.dataOff + 2048, drv.end]]);
      sc.ring.forEach((h, i) => drv.setAvailEntry(i, h));
      drv.availIdx = (sc.lastAvail + sc.availAhead) & 0xffff;
      const q = new DeviceQueue(drv.space, drv.mem);
      assert.equal(q.configure(drv.deviceConfig({ lastAvailIdx: sc.lastAvail })), null);
      const chain = new DescriptorChain(sc.cap);
      for (let i = 0; i < sc.size + 2; i++) {
        const before = drv.mem.translations;
        const ok = q.pop(chain);
        assert.ok(drv.mem.translations - before <= chain.capacity + 1, 'bounded work per pop');
        if (!ok) {
          assert.ok(q.broken !== null || q.available() === 0, 'false means broken or empty');
          break;
        }
        assert.ok(chain.head < sc.size);
        assert.ok(chain.count <= chain.descriptors && chain.descriptors <= chain.capacity);
        let rb = 0;
        let wb = 0;
        for (let k = 0; k < chain.count; k++) {
          const off = chain.offset[k]!;
          const len = chain.len[k]!;
          assert.ok(len > 0);
          assert.ok(drv.mem.containsOffset(off, len), `segment ${off}+${len} inside the address space`);
          if (k < chain.readable) {
            assert.equal(chain.writable[k], 0);
            rb += len;
          } else {
            assert.equal(chain.writable[k], 1);
            wb += len;
          }
        }
        assert.equal(rb, chain.readableBytes);
        assert.equal(wb, chain.writableBytes);
        assert.ok(rb + wb < 4294967296);
        q.push(chain.head, 0);
      }
      q.flush();
      if (q.broken !== null) {
        assert.ok((QUEUE_ERROR_NAMES as readonly string[]).includes(q.broken));
        assert.equal(q.errors.reduce((a, b) => a + b, 0), 1);
      }
    }), { numRuns: 600 });
  });
});
