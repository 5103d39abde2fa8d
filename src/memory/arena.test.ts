import assert from 'node:assert/strict';
import { test } from 'node:test';
import { faultAddress, faultCount, libc, memfd, sigbusGuard } from '../sys/index.ts';
import { Arena } from './arena.ts';

test('arena: the same range of one file is mapped once and unmapped with its last holder', () => {
  const a = new Arena();
  const fd = memfd('arena-test', 4 << 20);
  const other = libc.dup(fd); // another fd, the same file: what SCM_RIGHTS gives a second connection
  const x = a.place(fd, 0, 4 << 20);
  const y = a.place(other, 0, 4 << 20);
  assert.equal(x, y);
  assert.equal(a.placedCount, 1);
  const z = a.place(fd, 2 << 20, 1 << 20); // another range: its own mapping
  assert.notEqual(z, x);
  assert.equal(a.placedCount, 2);
  a.bytes[x] = 7;
  a.release(x);
  assert.equal(a.bytes[y], 7, 'still mapped for the second holder');
  a.release(y);
  a.release(z);
  assert.equal(a.placedCount, 0);
  // The space comes back: a new placement starts at the bottom again.
  assert.equal(a.place(fd, 0, 1 << 20), x);
  libc.close(fd);
  libc.close(other);
});

test('arena: different files never share a mapping', () => {
  const a = new Arena();
  const f1 = memfd('arena-a', 1 << 20);
  const f2 = memfd('arena-b', 1 << 20);
  const x = a.place(f1, 0, 1 << 20);
  const y = a.place(f2, 0, 1 << 20);
  assert.notEqual(x, y);
  a.bytes[x] = 1;
  a.bytes[y] = 2;
  assert.equal(a.bytes[x], 1);
  a.release(x);
  a.release(y);
  libc.close(f1);
  libc.close(f2);
});

test('arena: a peer file that shrinks under a mapping costs zero pages and counted faults, not the process', () => {
  const a = new Arena();
  assert.ok(a.guarded, 'every arena is covered by the SIGBUS guard');
  // A DPDK --no-huge style memfd: made without MFD_ALLOW_SEALING, so it cannot be sealed.
  const fd = libc.check(libc.memfd_create('arena-shrink', libc.MFD_CLOEXEC), 'memfd_create');
  libc.check(libc.ftruncate(fd, 1 << 20), 'ftruncate');
  const x = a.place(fd, 0, 1 << 20);
  a.bytes[x + 100] = 5;
  const before = faultCount();
  libc.check(libc.ftruncate(fd, 0), 'ftruncate'); // the peer shrinks its file
  // Read, write, and a bulk copy across pages: each first touch of a lost page is one fault.
  assert.equal(a.bytes[x + 100], 0, 'the lost page reads as zeros');
  a.bytes[x + 8192 + 3] = 9;
  assert.equal(a.bytes[x + 8192 + 3], 9, 'a write lands in the private zero page');
  a.bytes.copyWithin(x + 65536, x + 4096 * 4, x + 4096 * 6);
  const g = sigbusGuard();
  const n = faultCount() - before;
  assert.equal(n, 6, 'pages 0, 2, 4, 5, 16 and 17: one fault each');
  assert.equal(Atomics.load(g.counter, 0), (before + n) | 0, 'the one-load counter moved with it');
  const addrs = Array.from({ length: n }, (_, i) => faultAddress(before + i) - a.base - x).sort((p, q) => p - q);
  assert.deepEqual(addrs.map((o) => Math.floor(o / 4096)), [0, 2, 4, 5, 16, 17]);
  assert.equal(addrs[0], 100, 'the exact faulting address is recorded');
  // The mapping is not shared with a later placement of the same file range.
  assert.ok(a.forget(x + 100));
  const y = a.place(fd, 0, 1 << 20);
  assert.notEqual(y, x);
  a.release(x);
  a.release(y);
  assert.equal(a.placedCount, 0);
  libc.close(fd);
});
