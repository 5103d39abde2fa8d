import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { C, newCounters } from './counters.ts';
import { checkHeaders, headerFits } from './headers.ts';
import { MIN_GSO_SIZE } from './offload.ts';
import { PacketPool, VNET_HDR } from './pool.ts';

const pool = new PacketPool(64);

/** A 100-byte packet behind a header with these fields (little-endian, as virtio's). */
function packet(h: { flags?: number; gso?: number; gsoSize?: number; csumStart?: number; csumOffset?: number }, tag: number): number {
  const p = pool.alloc();
  const ho = pool.hdrOffset(p);
  pool.bytes.fill(0, ho, ho + VNET_HDR + 100);
  const dv = pool.dv;
  pool.bytes[ho] = h.flags ?? 0;
  pool.bytes[ho + 1] = h.gso ?? 0;
  dv.setUint16(ho + 4, h.gsoSize ?? 0, true);
  dv.setUint16(ho + 6, h.csumStart ?? 0, true);
  dv.setUint16(ho + 8, h.csumOffset ?? 0, true);
  pool.bytes[ho + VNET_HDR] = tag;
  pool.len[p] = 100;
  return p;
}

const tagOf = (h: number): number => pool.bytes[pool.frameOffset(h)]!;

describe('checkHeaders', () => {
  test('keeps what pier can carry, in order; drops and counts the rest; leaks nothing', () => {
    const free = pool.available();
    const cases: Array<[string, Parameters<typeof packet>[0], boolean]> = [
      ['no request', {}, true],
      ['a partial checksum inside the frame', { flags: 1, csumStart: 34, csumOffset: 16 }, true],
      ['a partial checksum ending at the frame\'s last byte', { flags: 1, csumStart: 82, csumOffset: 16 }, true],
      ['TCPv4 segmentation at MIN_GSO_SIZE', { flags: 1, gso: 1, gsoSize: MIN_GSO_SIZE, csumStart: 34, csumOffset: 16 }, true],
      ['TCPv6 segmentation with the ECN bit', { flags: 1, gso: 0x84, gsoSize: 1440, csumStart: 54, csumOffset: 16 }, true],
      ['a partial checksum past the frame', { flags: 1, csumStart: 90, csumOffset: 16 }, false],
      ['csum_start far past the frame', { flags: 1, csumStart: 0xffff, csumOffset: 0 }, false],
      ['gso_size 1 (65535 segments of a 64 KiB frame)', { flags: 1, gso: 1, gsoSize: 1, csumStart: 34, csumOffset: 16 }, false],
      ['gso_size just under the minimum', { flags: 1, gso: 4, gsoSize: MIN_GSO_SIZE - 1, csumStart: 54, csumOffset: 16 }, false],
      ['UDP fragmentation offload (no port carries it)', { flags: 1, gso: 3, gsoSize: 1000 }, false],
      ['UDP segmentation (a UDP_SEGMENT train from an uplink\'s kernel: back to a kernel it goes)', { flags: 1, gso: 5, gsoSize: 1200, csumStart: 34, csumOffset: 6 }, true],
      ['UDP segmentation under the minimum', { flags: 1, gso: 5, gsoSize: MIN_GSO_SIZE - 1, csumStart: 34, csumOffset: 6 }, false],
      ['a GSO type that aliases TCPv4 in a 32-bit shift', { flags: 1, gso: 0x21, gsoSize: 1000 }, false],
      ['the ECN bit alone', { gso: 0x80 }, false],
    ];
    const batch = Int32Array.from(cases.map(([, h], i) => packet(h, i)));
    const counters = newCounters();
    const n = checkHeaders(pool, batch, batch.length, counters);
    const want = cases.map(([, , ok], i) => (ok ? i : -1)).filter((i) => i >= 0);
    assert.deepEqual(Array.from(batch.subarray(0, n), tagOf), want, cases.filter(([, , ok]) => ok).map(([w]) => w).join('; '));
    assert.equal(counters[C.rx_dropped_bad_offload], cases.length - want.length);
    for (let i = 0; i < n; i++) pool.release(batch[i]!);
    assert.equal(pool.available(), free);
  });

  test('flags no driver may set (DATA_VALID, RSC_INFO) are cleared; NEEDS_CSUM stays', () => {
    const batch = Int32Array.from([packet({ flags: 2 }, 1), packet({ flags: 1 | 2 | 4, csumStart: 34, csumOffset: 16 }, 2)]);
    assert.equal(checkHeaders(pool, batch, 2, newCounters()), 2);
    assert.equal(pool.bytes[pool.hdrOffset(batch[0]!)], 0);
    assert.equal(pool.bytes[pool.hdrOffset(batch[1]!)], 1);
    for (const h of batch) pool.release(h);
  });

  test('a lent packet with flags to clear is copied into the pool, and its lender gets its buffer back', () => {
    const free = pool.available();
    const g = packet({ flags: 2 }, 9); // the "peer's memory"
    const returned: number[] = [];
    const h = pool.lend(pool.hdrOffset(g), 100, { returnBuffer: (t) => void returned.push(t) }, 7);
    const batch = Int32Array.from([h]);
    assert.equal(checkHeaders(pool, batch, 1, newCounters()), 1);
    assert.ok(!pool.isExternal(batch[0]!), 'still the lent packet');
    assert.deepEqual(returned, [7]);
    assert.equal(pool.bytes[pool.hdrOffset(batch[0]!)], 0);
    assert.equal(pool.bytes[pool.hdrOffset(g)], 2, 'wrote into the lender\'s memory');
    assert.equal(tagOf(batch[0]!), 9);
    pool.release(batch[0]!);
    pool.release(g);
    assert.equal(pool.available(), free);
  });
});

describe('headerFits (a header as copied for an output peer)', () => {
  const TSO4 = 1 << 1;
  const TSO = TSO4 | (1 << 4);
  /** A 12-byte header in a scratch array, and the verdict for a 100-byte frame. */
  function fits(h: { flags?: number; gso?: number; gsoSize?: number; csumStart?: number; csumOffset?: number }, gsoTypes: number, csum: boolean): [boolean, number] {
    const b = new Uint8Array(12);
    const dv = new DataView(b.buffer);
    b[0] = h.flags ?? 0;
    b[1] = h.gso ?? 0;
    dv.setUint16(4, h.gsoSize ?? 0, true);
    dv.setUint16(6, h.csumStart ?? 0, true);
    dv.setUint16(8, h.csumOffset ?? 0, true);
    return [headerFits(b, 0, 100, gsoTypes, csum), b[0] ?? 0];
  }

  test('passes what the peer negotiated and fits the frame; refuses the rest', () => {
    assert.deepEqual(fits({}, 0, false), [true, 0]);
    assert.deepEqual(fits({ flags: 1, csumStart: 34, csumOffset: 16 }, 0, true), [true, 1]);
    assert.deepEqual(fits({ flags: 1, gso: 1, gsoSize: 1448, csumStart: 34, csumOffset: 16 }, TSO, true), [true, 1]);
    assert.deepEqual(fits({ flags: 1, gso: 0x84, gsoSize: 1440, csumStart: 54, csumOffset: 16 }, TSO, true), [true, 1]);
    assert.equal(fits({ flags: 1, csumStart: 34, csumOffset: 16 }, TSO, false)[0], false, 'NEEDS_CSUM to a peer without GUEST_CSUM');
    assert.equal(fits({ flags: 1, csumStart: 90, csumOffset: 16 }, TSO, true)[0], false, 'checksum field past the frame');
    assert.equal(fits({ flags: 1, gso: 4, gsoSize: 1440, csumStart: 54, csumOffset: 16 }, TSO4, true)[0], false, 'TCPv6 to a peer with TSO4 only');
    assert.equal(fits({ flags: 1, gso: 5, gsoSize: 1000, csumStart: 34, csumOffset: 6 }, TSO, true)[0], false, 'UDP segmentation to a peer with TCP TSO only');
    assert.equal(fits({ flags: 1, gso: 0x21, gsoSize: 1000, csumStart: 34, csumOffset: 16 }, TSO, true)[0], false, '0x21 is not TCPv4');
    assert.equal(fits({ flags: 1, gso: 1, gsoSize: 1, csumStart: 34, csumOffset: 16 }, TSO, true)[0], false, 'gso_size 1');
    assert.equal(fits({ gso: 0x80 }, TSO, true)[0], false, 'the ECN bit alone');
  });

  test('other flags do not decide, and the header is only read (the caller clears them where it may write)', () => {
    assert.deepEqual(fits({ flags: 2 }, 0, false), [true, 2]);
    assert.deepEqual(fits({ flags: 1 | 2 | 4, csumStart: 34, csumOffset: 16 }, 0, true), [true, 7]);
  });
});
