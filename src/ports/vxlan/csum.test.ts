import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checksum, fold, sumWords } from '../../dataplane/checksum.ts';
import { markPartialChecksum } from './csum.ts';

/** vnet header (12) + Ethernet + IPv4 + TCP with `payload` bytes; the TCP checksum complete or partial. */
function tcp4(payload: number, partial: boolean): Uint8Array {
  const len = 14 + 20 + 20 + payload;
  const b = new Uint8Array(12 + len);
  const f = 12;
  b[f + 12] = 0x08;
  b[f + 14] = 0x45;
  b[f + 16] = (20 + 20 + payload) >> 8;
  b[f + 17] = (20 + 20 + payload) & 0xff;
  b[f + 23] = 6;
  b.set([10, 42, 0, 1, 10, 42, 0, 2], f + 26);
  const l4 = f + 34;
  b[l4 + 12] = 0x50;
  for (let i = 0; i < payload; i++) b[l4 + 20 + i] = (i * 7) & 0xff;
  const pseudo = sumWords(b, f + 26, f + 34, 0) + 6 + 20 + payload;
  const c = partial ? fold(pseudo) : checksum(b, l4, l4 + 20 + payload, pseudo);
  b[l4 + 16] = c >> 8;
  b[l4 + 17] = c & 0xff;
  return b;
}

describe('inner checksums left partial (veth underlay)', () => {
  test('a partial TCP checksum is marked NEEDS_CSUM with its start and offset', () => {
    const b = tcp4(100, true);
    assert.equal(markPartialChecksum(b, 0, 12, b.length - 12), true);
    assert.equal(b[0], 1);
    assert.equal(b[6]! | (b[7]! << 8), 34);
    assert.equal(b[8], 16);
  });

  test('a complete checksum is left alone, and so is a corrupted one', () => {
    const ok = tcp4(100, false);
    assert.equal(markPartialChecksum(ok, 0, 12, ok.length - 12), false);
    assert.equal(ok[0], 0);
    const bad = tcp4(100, false);
    bad[12 + 54 + 3]! ^= 0xff;
    assert.equal(markPartialChecksum(bad, 0, 12, bad.length - 12), false);
  });

  test('a complete checksum that equals the pseudo-header sum is verified, not marked', () => {
    // Find a payload whose complete checksum happens to equal the folded pseudo-header sum.
    for (let n = 0; n < 200000; n++) {
      const b = tcp4(64, false);
      b[12 + 54 + 60] = n & 0xff;
      b[12 + 54 + 61] = (n >> 8) & 0xff;
      b[12 + 54 + 62] = n >> 16;
      const l4 = 12 + 34;
      b[l4 + 16] = 0;
      b[l4 + 17] = 0;
      const pseudo = sumWords(b, 12 + 26, 12 + 34, 0) + 6 + 84;
      const c = checksum(b, l4, l4 + 84, pseudo);
      if (c !== fold(pseudo)) continue;
      b[l4 + 16] = c >> 8;
      b[l4 + 17] = c & 0xff;
      assert.equal(markPartialChecksum(b, 0, 12, b.length - 12), false);
      return;
    }
    assert.fail('no payload found');
  });

  test('not TCP/UDP, fragments, short frames: nothing to do', () => {
    const b = tcp4(10, true);
    b[12 + 23] = 1; // ICMP
    assert.equal(markPartialChecksum(b, 0, 12, b.length - 12), false);
    const frag = tcp4(10, true);
    frag[12 + 21] = 1;
    assert.equal(markPartialChecksum(frag, 0, 12, frag.length - 12), false);
    assert.equal(markPartialChecksum(b, 0, 12, 30), false);
  });
});
