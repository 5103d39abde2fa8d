import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EXTERNAL_MAX, PacketPool, VNET_HDR } from './pool.ts';

test('pool: a lent packet reads where it lies and goes back to its lender with the last reference', () => {
  const pool = new PacketPool(4);
  const returned: number[] = [];
  const lender = { returnBuffer: (tag: number): void => void returned.push(tag) };
  const at = pool.scratch - 4096 + 512; // somewhere in the arena that is mapped
  pool.bytes.fill(9, at, at + VNET_HDR + 60);
  const h = pool.lend(at, 60, lender, 77);
  assert.ok(pool.isExternal(h));
  assert.equal(pool.hdrOffset(h), at);
  assert.equal(pool.frameOffset(h), at + VNET_HDR);
  assert.equal(pool.hdrAddr(h), pool.arena.base + at);
  assert.equal(pool.len[h], 60);
  assert.equal(pool.lent, 1);
  pool.refs[h] = 2; // flooded to two ports
  pool.release(h);
  assert.deepEqual(returned, []);
  pool.release(h);
  assert.deepEqual(returned, [77]);
  assert.equal(pool.lent, 0);
  assert.equal(pool.available(), 4, 'no pool buffer was used');
});

test('pool: materialize copies a lent packet into a pool buffer and returns the loan', () => {
  const pool = new PacketPool(2);
  const returned: number[] = [];
  const at = pool.scratch - 4096;
  for (let i = 0; i < VNET_HDR + 100; i++) pool.bytes[at + i] = i;
  const h = pool.lend(at, 100, { returnBuffer: (t) => void returned.push(t) }, 5);
  const m = pool.materialize(h);
  assert.ok(m >= 0 && !pool.isExternal(m));
  assert.equal(pool.len[m], 100);
  assert.deepEqual([...pool.bytes.subarray(pool.hdrOffset(m), pool.hdrOffset(m) + VNET_HDR + 100)], [...pool.bytes.subarray(at, at + VNET_HDR + 100)]);
  assert.deepEqual(returned, [5]);
  // With the pool empty the loan still comes back, and -1 says the packet is gone.
  const a = pool.alloc();
  const h2 = pool.lend(at, 100, { returnBuffer: (t) => void returned.push(t) }, 6);
  assert.equal(pool.materialize(h2), -1);
  assert.deepEqual(returned, [5, 6]);
  pool.release(a);
  pool.release(m);
});

test('pool: external handles run out (-1), never pool buffers', () => {
  const pool = new PacketPool(1);
  const hs: number[] = [];
  for (let i = 0; i < EXTERNAL_MAX; i++) hs.push(pool.lend(pool.scratch, 0, { returnBuffer: () => {} }, i));
  assert.ok(hs.every((h) => h >= 1));
  assert.equal(pool.lend(pool.scratch, 0, { returnBuffer: () => {} }, 0), -1);
  assert.equal(pool.available(), 1);
  for (const h of hs) pool.release(h);
  assert.equal(pool.lent, 0);
});

test('pool: copy moves exactly len bytes, aligned or not, short or long, and nothing past them', () => {
  const pool = new PacketPool(2);
  const b = pool.bytes;
  const src = pool.hdrOffset(0);
  const dst = pool.hdrOffset(1);
  for (const len of [0, 1, 3, 4, 15, 16, 17, 63, 64, 76, 255, 256, 257, 1514]) {
    for (const [so, dO] of [[0, 0], [4, 8], [1, 0], [0, 2], [3, 3]] as const) {
      for (let i = 0; i < len + 16; i++) b[src + so + i] = (i * 7 + len) & 0xff;
      b.fill(0xee, dst, dst + len + 32);
      pool.copy(dst + dO, src + so, len);
      const got = [...b.subarray(dst + dO, dst + dO + len)];
      assert.deepEqual(got, [...b.subarray(src + so, src + so + len)], `${len} bytes from +${so} to +${dO}`);
      assert.deepEqual([...b.subarray(dst + dO + len, dst + dO + len + 8)], new Array<number>(8).fill(0xee), `nothing past ${len} bytes`);
      if (dO > 0) assert.equal(b[dst + dO - 1], 0xee, 'nothing before');
    }
  }
});
