import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checksum, fold, sumWords } from './checksum.ts';

/** RFC 1071 as written: big-endian 16-bit words, one at a time. */
function reference(b: Uint8Array, start: number, end: number, init: number): number {
  let sum = init;
  for (let i = start; i < end; i += 2) sum += (b[i]! << 8) | (i + 1 < end ? b[i + 1]! : 0);
  return fold(sum);
}

describe('checksum', () => {
  it('the 32-bit sum folds to the RFC 1071 word sum at every alignment, length and view offset', () => {
    const buf = new ArrayBuffer(4096 + 16);
    const all = new Uint8Array(buf);
    let seed = 12345;
    for (let i = 0; i < all.length; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      all[i] = seed >>> 24;
    }
    for (const viewOff of [0, 1, 2, 3, 4, 8]) {
      const b = new Uint8Array(buf, viewOff, 4096);
      for (let start = 0; start < 9; start++) {
        for (const len of [0, 1, 2, 3, 63, 64, 65, 66, 67, 100, 1448, 1449, 4000]) {
          if (start + len > b.length) continue;
          for (const init of [0, 0x1234, 0x2fffe]) {
            assert.equal(fold(sumWords(b, start, start + len, init)), reference(b, start, start + len, init), `view +${viewOff} start ${start} len ${len} init ${init}`);
          }
        }
      }
    }
  });

  it('zero bytes sum to zero; all-ones bytes to 0xffff (never 0: a checksum field of 0 means none for UDP)', () => {
    const z = new Uint8Array(1024);
    assert.equal(sumWords(z, 0, 1024, 0), 0);
    assert.equal(checksum(z, 0, 1024), 0xffff);
    const o = new Uint8Array(1024).fill(0xff);
    assert.equal(fold(sumWords(o, 0, 1024, 0)), 0xffff);
    assert.equal(checksum(o, 0, 1024), 0);
  });

  it('a packet with its checksum in place sums to 0xffff over the wide path too', () => {
    const b = new Uint8Array(2000);
    for (let i = 0; i < b.length; i++) b[i] = (i * 31 + 7) & 0xff;
    b[100] = 0;
    b[101] = 0;
    const c = checksum(b, 0, 1500);
    b[100] = c >>> 8;
    b[101] = c & 0xff;
    assert.equal(checksum(b, 0, 1500), 0);
  });
});
