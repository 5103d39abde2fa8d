import assert from 'node:assert/strict';
import { test } from 'node:test';
import { libc, memfd } from '../sys/index.ts';
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
