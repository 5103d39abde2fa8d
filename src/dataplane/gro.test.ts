import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checksum, sumWords } from './checksum.ts';
import { completeChecksum, MIN_GSO_SIZE, segmentTcp } from './offload.ts';
import { PacketPool } from './pool.ts';
import { markSuperFrame, TcpCoalescer } from './gro.ts';

/** A complete IPv4 TCP segment (with a 12-byte timestamp option) in a pool buffer. */
function segment(pool: PacketPool, seq: number, payload: number, flags = 0x10, id = 1): number {
  const h = pool.alloc();
  const b = pool.bytes;
  const f = pool.frameOffset(h);
  const hl = 14 + 20 + 32;
  b.fill(0, f - 12, f + hl + payload);
  b.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00], f);
  b[f + 14] = 0x45;
  b[f + 16] = (52 + payload) >> 8;
  b[f + 17] = (52 + payload) & 0xff;
  b[f + 18] = id >> 8;
  b[f + 19] = id & 0xff;
  b[f + 20] = 0x40;
  b[f + 22] = 64;
  b[f + 23] = 6;
  b.set([10, 42, 0, 1, 10, 42, 0, 2], f + 26);
  const c = checksum(b, f + 14, f + 34);
  b[f + 24] = c >> 8;
  b[f + 25] = c & 0xff;
  const t = f + 34;
  b.set([0x13, 0x88, 0xc0, 0x01], t);
  pool.dv.setUint32(t + 4, seq);
  pool.dv.setUint32(t + 8, 777);
  b[t + 12] = 0x80;
  b[t + 13] = flags;
  b[t + 15] = 0xff;
  b.set([1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6], t + 20);
  for (let i = 0; i < payload; i++) b[f + hl + i] = (seq + i) & 0xff;
  pool.len[h] = hl + payload;
  // A complete TCP checksum, as a segment from the wire has (the coalescer verifies it).
  const tcpLen = 32 + payload;
  const c4 = checksum(b, t, f + hl + payload, sumWords(b, f + 26, f + 34, 0) + 6 + tcpLen);
  b[t + 16] = c4 >> 8;
  b[t + 17] = c4 & 0xff;
  return h;
}

describe('receive coalescing (gro.ts)', () => {
  // A bit flipped on the wire: in the TCP payload, or in the IPv4 header (its ID, which segments
  // of a flow need not share): a merged frame leaves with checksums pier computed, so neither may merge.
  for (const [where, at, atFirst] of [['TCP payload', 66 + 100, 66], ['IPv4 header', 14 + 4, 14 + 5]] as const) {
    test(`a segment whose own checksum is wrong (${where}) is neither merged nor starts a super-frame: it leaves alone, for its receiver to drop`, () => {
      const pool = new PacketPool(16);
      const g = new TcpCoalescer(pool);
      const a = segment(pool, 1000, 1398);
      const bad = segment(pool, 2398, 1398, 0x10, 2);
      pool.bytes[pool.frameOffset(bad) + at]! ^= 0x01;
      g.open(a);
      assert.equal(g.offer(bad), false);
      assert.equal(g.badChecksum, 1);
      assert.equal(g.close(), false, 'nothing merged');
      const bad2 = segment(pool, 5000, 1398);
      pool.bytes[pool.frameOffset(bad2) + atFirst]! ^= 0x80;
      g.open(bad2);
      assert.equal(g.offer(segment(pool, 6398, 1398, 0x10, 2)), false, 'a bad segment opens nothing');
      assert.equal(g.badChecksum, 2);
    });
  }

  test('a partial segment (NEEDS_CSUM, as remote checksum offload delivers it) merges only when its request names its own TCP checksum', () => {
    const pool = new PacketPool(16);
    const g = new TcpCoalescer(pool);
    const partial = (h: number, start: number, off: number): number => {
      const ho = pool.hdrOffset(h);
      pool.bytes[ho] = 1; // NEEDS_CSUM
      pool.bytes[ho + 6] = start;
      pool.bytes[ho + 8] = off;
      pool.bytes[pool.frameOffset(h) + 34 + 16]! ^= 0xff; // the field no longer a complete checksum
      return h;
    };
    const a = partial(segment(pool, 1000, 1398), 34, 16);
    g.open(a);
    assert.equal(g.offer(partial(segment(pool, 2398, 1398, 0x10, 2), 34, 16)), true, 'TCP header, offset 16: merged without summing');
    // Another place (the IPv4 header; the TCP header with another offset): merging would rewrite it.
    assert.equal(g.offer(partial(segment(pool, 3796, 1398, 0x10, 3), 14, 16)), false);
    assert.equal(g.offer(partial(segment(pool, 3796, 1398, 0x10, 4), 34, 6)), false);
    assert.equal(g.badChecksum, 2);
    assert.equal(g.close(), true);
    assert.equal(pool.len[a], 66 + 1398 * 2);
  });

  test('consecutive segments become one TSO super-frame that segments back to the same bytes', () => {
    const pool = new PacketPool(64);
    const g = new TcpCoalescer(pool);
    const segs = [segment(pool, 1000, 1398), segment(pool, 2398, 1398, 0x10, 2), segment(pool, 3796, 500, 0x18, 3)];
    const copies = segs.map((h) => pool.bytes.slice(pool.frameOffset(h), pool.frameOffset(h) + pool.len[h]!));
    const first = segs[0]!;
    g.open(first);
    assert.equal(g.offer(segs[1]!), true);
    assert.equal(g.offer(segs[2]!), true);
    assert.equal(g.close(), true);
    assert.equal(pool.len[first], 66 + 1398 * 2 + 500);
    const ho = pool.hdrOffset(first);
    assert.equal(pool.bytes[ho + 1], 1); // GSO_TCPV4
    assert.equal(pool.dv.getUint16(ho + 4, true), 1398);
    // Cut it again as the engine would: the segments come back, checksums valid, PSH on the last.
    const out = new Int32Array(8);
    const n = segmentTcp(pool, first, out);
    assert.equal(n, 3);
    for (let i = 0; i < n; i++) {
      const s = out[i]!;
      const f = pool.frameOffset(s);
      const got = pool.bytes.slice(f, f + pool.len[s]!);
      assert.deepEqual(got.slice(54), copies[i]!.slice(54), `segment ${i} payload and options`);
      assert.equal(got[47], i === 2 ? 0x18 : 0x10, `segment ${i} flags`);
    }
    // Or finish its checksum in place: the super-frame's own TCP checksum is then valid.
    assert.ok(completeChecksum(pool, first));
  });

  test('a gap in sequence, other flags, a larger segment or another flow are not merged', () => {
    const pool = new PacketPool(64);
    const g = new TcpCoalescer(pool);
    const a = segment(pool, 1000, 1000);
    g.open(a);
    assert.equal(g.offer(segment(pool, 2001, 1000)), false, 'gap');
    assert.equal(g.offer(segment(pool, 2000, 1000, 0x11)), false, 'FIN');
    assert.equal(g.offer(segment(pool, 2000, 1200)), false, 'larger than the first');
    const other = segment(pool, 2000, 1000);
    pool.bytes[pool.frameOffset(other) + 35]! ^= 1; // another source port
    assert.equal(g.offer(other), false, 'another flow');
    assert.equal(g.close(), false, 'nothing merged: the frame stays as it was');
    assert.equal(pool.bytes[pool.hdrOffset(a) + 1], 0);
  });

  test('segments shorter than MIN_GSO_SIZE start no super-frame: its gso_size would be refused at ingress', () => {
    const pool = new PacketPool(16);
    const g = new TcpCoalescer(pool);
    const a = segment(pool, 1000, MIN_GSO_SIZE - 1);
    g.open(a);
    assert.equal(g.offer(segment(pool, 1000 + MIN_GSO_SIZE - 1, MIN_GSO_SIZE - 1)), false);
    assert.equal(g.close(), false);
    const b = segment(pool, 5000, MIN_GSO_SIZE);
    g.open(b);
    assert.equal(g.offer(segment(pool, 5000 + MIN_GSO_SIZE, MIN_GSO_SIZE)), true, 'at the minimum they merge');
  });

  test('a frame too large for the tunnel (a TSO frame passed whole through a veth) is marked a super-frame of tunnel-sized segments', () => {
    const pool = new PacketPool(64);
    const h = segment(pool, 5000, 3000, 0x18);
    const payload = pool.bytes.slice(pool.frameOffset(h) + 66, pool.frameOffset(h) + 3066);
    assert.equal(markSuperFrame(pool, h, 1464), true);
    const ho = pool.hdrOffset(h);
    assert.equal(pool.bytes[ho], 1); // NEEDS_CSUM
    assert.equal(pool.dv.getUint16(ho + 4, true), 1464 - 66);
    const out = new Int32Array(8);
    const n = segmentTcp(pool, h, out);
    assert.equal(n, 3);
    const got: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = out[i]!;
      const f = pool.frameOffset(s);
      assert.ok(pool.len[s]! <= 1464);
      assert.equal(checksum(pool.bytes, f + 34, f + pool.len[s]!, tcpPseudo(pool, f)), 0, `segment ${i} TCP checksum`);
      got.push(...pool.bytes.slice(f + 66, f + pool.len[s]!));
    }
    assert.deepEqual(got, [...payload]);
    assert.equal(markSuperFrame(pool, segment(pool, 1, 1000), 1464), false, 'small enough: left alone');
  });

  test('a frame too large for the tunnel with a wrong TCP or IPv4 header checksum is left as it came (not given a fresh checksum)', () => {
    const pool = new PacketPool(16);
    const bad = segment(pool, 5000, 3000, 0x18);
    const fb = pool.frameOffset(bad);
    pool.bytes[fb + 66 + 7]! ^= 0x04; // payload damaged
    const before = pool.bytes.slice(pool.hdrOffset(bad), fb + pool.len[bad]!);
    assert.equal(markSuperFrame(pool, bad, 1464), false);
    assert.deepEqual(pool.bytes.slice(pool.hdrOffset(bad), fb + pool.len[bad]!), before, 'header and frame untouched');
    const badIp = segment(pool, 9000, 3000, 0x18);
    pool.bytes[pool.frameOffset(badIp) + 14 + 8]! ^= 0x01; // TTL damaged, IPv4 header checksum now wrong
    assert.equal(markSuperFrame(pool, badIp, 1464), false);
  });

  test('push(): a damaged segment after a good one is checked and counted once', () => {
    const pool = new PacketPool(16);
    const g = new TcpCoalescer(pool);
    const out = new Int32Array(8);
    let n = g.push(segment(pool, 1000, 1398), out, 0);
    const bad = segment(pool, 2398, 1398, 0x10, 2);
    pool.bytes[pool.frameOffset(bad) + 66 + 9]! ^= 0x02;
    n = g.push(bad, out, n);
    assert.equal(n, 2, 'both go out as they are');
    assert.equal(g.badChecksum, 1);
    n = g.push(segment(pool, 3796, 1398, 0x10, 3), out, n);
    n = g.push(segment(pool, 5194, 1398, 0x10, 4), out, n);
    assert.equal(g.close(), true, 'the good ones after it still merge');
    assert.equal(n, 3);
  });
});

function tcpPseudo(pool: PacketPool, f: number): number {
  const b = pool.bytes;
  let s = 0;
  for (let i = 26; i < 34; i += 2) s += (b[f + i]! << 8) | b[f + i + 1]!;
  const l4len = ((b[f + 16]! << 8) | b[f + 17]!) - 20;
  return s + 6 + l4len;
}
