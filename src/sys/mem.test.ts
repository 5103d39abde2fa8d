import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as c from './libc.ts';
import { mapShared, memfd, PIER_SEALS, unmap } from './mem.ts';

test('mem: pier memfds are sealed at their size: a peer holding the fd cannot shrink or grow them', () => {
  const fd = memfd('pier-seal-test', 1 << 20);
  const m = mapShared('pier-seal-test-map', 64 << 10);
  try {
    for (const f of [fd, m.fd]) {
      assert.equal(c.fcntlInt(f, c.F_GET_SEALS), PIER_SEALS);
      // What a hostile backend would do with the fd pier sent it.
      assert.equal(c.ftruncate(f, 0), -1);
      assert.equal(c.errno(), c.EPERM);
      assert.equal(c.ftruncate(f, 1 << 30), -1);
      assert.equal(c.errno(), c.EPERM);
      assert.equal(c.fcntlInt(f, c.F_ADD_SEALS, c.F_SEAL_WRITE), -1, 'no further seal (F_SEAL_WRITE would stop pier writing)');
      assert.equal(c.errno(), c.EPERM);
    }
    assert.equal(c.fstat(fd)!.size, 1 << 20);
    new Uint8Array(m.buffer)[(64 << 10) - 1] = 1; // still mapped and writable
  } finally {
    c.close(fd);
    unmap(m);
  }
});
