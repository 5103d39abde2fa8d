import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConsumerRing, ProducerRing, SIZEOF_SOCKADDR_XDP, SIZEOF_XDP_DESC, type RingOffsets } from './xsk.ts';

// A ring as the kernel lays it out: producer, consumer, flags words, then the descriptors.
const OFF: RingOffsets = { producer: 0, consumer: 64, flags: 128, desc: 192 };
function ringMemory(size: number, words: number, prod: number, cons: number): Uint32Array {
  const u32 = new Uint32Array(OFF.desc / 4 + size * words);
  u32[OFF.producer / 4] = prod;
  u32[OFF.consumer / 4] = cons;
  return u32;
}

test('xsk: struct sizes', () => {
  assert.equal(SIZEOF_SOCKADDR_XDP, 16);
  assert.equal(SIZEOF_XDP_DESC, 16);
});

test('xsk: a producer ring counts free entries across the 2^32 wrap and writes slot index & mask', () => {
  const start = 2 ** 32 - 3;
  const u32 = ringMemory(8, 2, start, start);
  const p = new ProducerRing(u32, OFF, 8);
  assert.equal(p.free(1), 8);
  for (let i = 0; i < 6; i++) u32[p.slotW(i, 2)] = 100 + i;
  p.submit(6);
  assert.equal(u32[OFF.producer / 4], 3); // wrapped: (2^32 - 3 + 6) mod 2^32
  assert.equal(p.outstanding(), 6);
  assert.equal(p.free(3), 2); // 8 - 6, the consumer has taken nothing
  // The slots were start & 7 = 5, 6, 7, 0, 1, 2.
  assert.deepEqual([5, 6, 7, 0, 1, 2].map((s) => u32[OFF.desc / 4 + s * 2]), [100, 101, 102, 103, 104, 105]);
  u32[OFF.consumer / 4] = 1; // the kernel took 4 (across the wrap)
  assert.equal(p.free(3), 6);
  assert.equal(p.outstanding(), 2);
});

test('xsk: a consumer ring peeks across the wrap, caps at max, and refuses a producer past the ring', () => {
  const start = 2 ** 32 - 2;
  const u32 = ringMemory(4, 4, start, start);
  const r = new ConsumerRing(u32, OFF, 4);
  assert.equal(r.peek(32), 0);
  u32[OFF.producer / 4] = 1; // 3 entries: slots 2, 3, 0
  assert.equal(r.peek(2), 2);
  assert.equal(r.slotW(0, 4), OFF.desc / 4 + 2 * 4);
  assert.equal(r.slotW(2, 4), OFF.desc / 4 + 0);
  r.release(2);
  assert.equal(u32[OFF.consumer / 4], 0);
  assert.equal(r.peek(32), 1);
  r.release(1);
  assert.equal(u32[OFF.consumer / 4], 1);
  u32[OFF.producer / 4] = 1 + 5; // more than the ring holds: a bug or a torn read, take none
  assert.equal(r.peek(32), 0);
});

test('xsk: need_wakeup is bit 0 of the flags word', () => {
  const u32 = ringMemory(4, 2, 0, 0);
  const p = new ProducerRing(u32, OFF, 4);
  assert.equal(p.needWakeup(), false);
  u32[OFF.flags / 4] = 1;
  assert.equal(p.needWakeup(), true);
});
