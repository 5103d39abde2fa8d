import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { checksum, fold, sumWords } from './checksum.ts';
import { completeChecksum, MIN_GSO_SIZE, SEG_BAD, SEG_BURST, SEG_NOBUF, SEG_OK, segmentTcp } from './offload.ts';
import { PacketPool } from './pool.ts';
import {
  VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4, writeVnetHdr,
} from './vnet.ts';

// Deterministic by default; set FC_SEED to explore other inputs (a failure prints its seed).
fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 20241124) });

// ---------------------------------------------------------------------------------------------
// An independent Internet checksum: ones'-complement sum of 16-bit words, folded as it goes.

function onesSum(parts: ArrayLike<number>[]): number {
  // the parts are concatenated, then summed as big-endian words (odd tail padded with zero)
  const all: number[] = [];
  for (const p of parts) for (let i = 0; i < p.length; i++) all.push(p[i]!);
  let s = 0;
  for (let i = 0; i < all.length; i += 2) {
    s += (all[i]! << 8) + (all[i + 1] ?? 0);
    s = (s & 0xffff) + (s >>> 16);
  }
  return s;
}

const be16 = (v: number): number[] => [(v >>> 8) & 0xff, v & 0xff];
const be32 = (v: number): number[] => [...be16(Math.floor(v / 0x10000) & 0xffff), ...be16(v & 0xffff)];

/** Is the TCP/UDP checksum of l4 bytes valid over the pseudo-header for these addresses? */
function l4ChecksumOk(v6: boolean, src: Uint8Array, dst: Uint8Array, proto: number, seg: Uint8Array): boolean {
  const pseudo = v6 ? [...be32(seg.length), 0, 0, 0, proto] : [0, proto, ...be16(seg.length)];
  return onesSum([src, dst, pseudo, seg]) === 0xffff;
}

/** Pseudo-header sum, folded but not complemented: what Linux leaves in the field for CHECKSUM_PARTIAL. */
function pseudoSum(v6: boolean, src: Uint8Array, dst: Uint8Array, proto: number, l4len: number): number {
  const pseudo = v6 ? [...be32(l4len), 0, 0, 0, proto] : [0, proto, ...be16(l4len)];
  return onesSum([src, dst, pseudo]);
}

// ---------------------------------------------------------------------------------------------
// Frame builder.

const MAC_DST = [0x02, 0, 0, 0, 0, 0x02];
const MAC_SRC = [0x02, 0, 0, 0, 0, 0x01];
const V4_SRC = Uint8Array.of(10, 0, 0, 1);
const V4_DST = Uint8Array.of(10, 0, 0, 2);
const V6_SRC = Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);
const V6_DST = Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd);

const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_PSH = 0x08;
const TCP_ACK = 0x10;
const TCP_URG = 0x20;
const TCP_ECE = 0x40;
const TCP_CWR = 0x80;

interface FrameOpts {
  v6: boolean;
  /** TPID of one VLAN tag (0x8100 or 0x88a8), or none. */
  vlan?: number;
  payload: Uint8Array;
  mss: number;
  seq?: number;
  flags?: number;
  ipId?: number;
  /** Extra 32-bit words of IPv4 options (NOPs). */
  ipOptWords?: number;
  /** Extra 32-bit words of TCP options (a timestamp option when 3, NOPs otherwise). */
  tcpOptWords?: number;
  /** virtio-net gso_type; defaults to TCPV4/TCPV6 to match. */
  gsoType?: number;
  /** Override the Ethernet type after the (optional) tag. */
  etype?: number;
  /** IP protocol / next header (6 = TCP). */
  proto?: number;
  /** UDP instead of TCP as the L4 header (8 bytes), for completeChecksum. */
  udp?: boolean;
  /** vnet flags, default NEEDS_CSUM. */
  vnetFlags?: number;
}

interface Built {
  h: number;
  l3: number;
  l4: number;
  /** Ethernet + IP + TCP header length. */
  hl: number;
  len: number;
  /** A copy of the frame as built. */
  frame: Uint8Array;
}

function build(pool: PacketPool, o: FrameOpts): Built {
  const h = pool.alloc();
  assert.ok(h >= 0, 'test pool ran dry');
  const f: number[] = [...MAC_DST, ...MAC_SRC];
  if (o.vlan !== undefined) f.push(...be16(o.vlan), ...be16(0x0064));
  f.push(...be16(o.etype ?? (o.v6 ? 0x86dd : 0x0800)));
  const l3 = f.length;
  const proto = o.proto ?? (o.udp ? 17 : 6);
  const tcpOptWords = o.tcpOptWords ?? 0;
  const l4hdr = o.udp ? 8 : 20 + 4 * tcpOptWords;
  const l4len = l4hdr + o.payload.length;
  let ipHdr: number[];
  if (o.v6) {
    ipHdr = [0x60, 0, 0, 0, ...be16(l4len), proto, 64, ...V6_SRC, ...V6_DST];
  } else {
    const ihl = 5 + (o.ipOptWords ?? 0);
    ipHdr = [0x40 | ihl, 0, ...be16(ihl * 4 + l4len), ...be16(o.ipId ?? 0x1234), 0x40, 0, 64, proto, 0, 0, ...V4_SRC, ...V4_DST];
    for (let i = 0; i < (o.ipOptWords ?? 0) * 4; i++) ipHdr.push(1);
    const c = ~onesSum([ipHdr]) & 0xffff;
    ipHdr[10] = c >>> 8;
    ipHdr[11] = c & 0xff;
  }
  f.push(...ipHdr);
  const l4 = f.length;
  const src = o.v6 ? V6_SRC : V4_SRC;
  const dst = o.v6 ? V6_DST : V4_DST;
  const ps = pseudoSum(o.v6, src, dst, proto, l4len);
  if (o.udp) {
    f.push(...be16(5353), ...be16(53), ...be16(l4len), ...be16(ps));
  } else {
    f.push(...be16(12345), ...be16(80), ...be32(o.seq ?? 0x10000000), ...be32(0x01020304));
    f.push((5 + tcpOptWords) << 4, o.flags ?? TCP_ACK, ...be16(0xfff0), ...be16(ps), ...be16(0));
    if (tcpOptWords === 3) f.push(1, 1, 8, 10, ...be32(0xdeadbeef), ...be32(0x00c0ffee));
    else for (let i = 0; i < tcpOptWords * 4; i++) f.push(1);
  }
  const hl = f.length;
  const len = hl + o.payload.length;
  const fo = pool.frameOffset(h);
  pool.bytes.set(f, fo);
  pool.bytes.set(o.payload, fo + hl);
  pool.len[h] = len;
  writeVnetHdr(pool.dv, pool.hdrOffset(h), {
    flags: o.vnetFlags ?? VIRTIO_NET_HDR_F_NEEDS_CSUM,
    gsoType: o.gsoType ?? (o.v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4),
    hdrLen: hl,
    gsoSize: o.mss,
    csumStart: l4,
    csumOffset: o.udp ? 6 : 16,
    numBuffers: 0,
  });
  return { h, l3, l4, hl, len, frame: pool.bytes.slice(fo, fo + len) };
}

/** Deterministic pseudo-random payload (xorshift32). */
function payloadOf(n: number, seed: number): Uint8Array {
  const p = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    p[i] = x & 0xff;
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Segment checker.

interface Expect {
  v6: boolean;
  mss: number;
  payload: Uint8Array;
  seq: number;
  flags: number;
  ipId: number;
}

function checkSegments(pool: PacketPool, sup: Built, e: Expect, out: Int32Array, n: number): void {
  const { l3, l4, hl } = sup;
  const want = Math.max(1, Math.ceil(e.payload.length / e.mss));
  assert.equal(n, want, 'segment count');
  const reassembled: number[] = [];
  const handles = new Set<number>();
  for (let k = 0; k < n; k++) {
    const s = out[k]!;
    assert.ok(s >= 0 && s < pool.count && s !== sup.h, `segment ${k} handle ${s}`);
    assert.ok(!handles.has(s), 'distinct handles');
    handles.add(s);
    assert.equal(pool.refs[s], 1);
    const pLen = Math.min(e.mss, e.payload.length - k * e.mss);
    const len = pool.len[s]!;
    assert.equal(len, hl + pLen, `segment ${k} length`);
    const ho = pool.hdrOffset(s);
    assert.deepEqual([...pool.bytes.subarray(ho, ho + 12)], new Array(12).fill(0), 'virtio-net header zeroed');
    const fo = pool.frameOffset(s);
    const seg = pool.bytes.slice(fo, fo + len);
    const dv = new DataView(seg.buffer);
    const orig = sup.frame;
    // Ethernet (and VLAN) header untouched
    assert.deepEqual([...seg.subarray(0, l3)], [...orig.subarray(0, l3)]);
    if (e.v6) {
      assert.equal(dv.getUint16(l3 + 4), len - l3 - 40, 'IPv6 payload length');
      assert.deepEqual([...seg.subarray(l3, l3 + 4)], [...orig.subarray(l3, l3 + 4)]);
      assert.deepEqual([...seg.subarray(l3 + 6, l4)], [...orig.subarray(l3 + 6, l4)]);
    } else {
      assert.equal(dv.getUint16(l3 + 2), len - l3, 'IPv4 total length');
      assert.equal(dv.getUint16(l3 + 4), (e.ipId + k) & 0xffff, 'IPv4 ID');
      assert.equal(onesSum([seg.subarray(l3, l4)]), 0xffff, `IPv4 header checksum of segment ${k}`);
      assert.deepEqual([...seg.subarray(l3 + 6, l3 + 10)], [...orig.subarray(l3 + 6, l3 + 10)]);
      assert.deepEqual([...seg.subarray(l3 + 12, l4)], [...orig.subarray(l3 + 12, l4)]);
      assert.equal(seg[l3], orig[l3]);
    }
    // TCP
    assert.deepEqual([...seg.subarray(l4, l4 + 4)], [...orig.subarray(l4, l4 + 4)], 'ports');
    assert.equal(dv.getUint32(l4 + 4), (e.seq + k * e.mss) % 2 ** 32, `sequence number of segment ${k}`);
    assert.deepEqual([...seg.subarray(l4 + 8, l4 + 13)], [...orig.subarray(l4 + 8, l4 + 13)], 'ack, data offset');
    let fl = e.flags;
    if (k !== n - 1) fl &= ~(TCP_FIN | TCP_PSH);
    if (k !== 0) fl &= ~TCP_CWR;
    assert.equal(seg[l4 + 13], fl, `flags of segment ${k}`);
    assert.deepEqual([...seg.subarray(l4 + 14, l4 + 16)], [...orig.subarray(l4 + 14, l4 + 16)], 'window');
    assert.deepEqual([...seg.subarray(l4 + 18, hl)], [...orig.subarray(l4 + 18, hl)], 'urgent pointer, options');
    const src = e.v6 ? V6_SRC : V4_SRC;
    const dst = e.v6 ? V6_DST : V4_DST;
    assert.ok(l4ChecksumOk(e.v6, src, dst, 6, seg.subarray(l4)), `TCP checksum of segment ${k}`);
    for (let i = hl; i < len; i++) reassembled.push(seg[i]!);
  }
  assert.equal(reassembled.length, e.payload.length);
  assert.ok(Buffer.from(reassembled).equals(Buffer.from(e.payload)), 'payload reassembles');
}

function releaseAll(pool: PacketPool, out: Int32Array, n: number): void {
  for (let i = 0; i < n; i++) pool.release(out[i]!);
}

const pool = new PacketPool(1100); // room for every segment of 65000 bytes at MSS 64

/** Scribble over every free buffer (header and frame start) without changing the free-list order. */
function dirtyFreeBuffers(p: PacketPool): void {
  const hs: number[] = [];
  for (let h = p.alloc(); h >= 0; h = p.alloc()) hs.push(h);
  p.allocFailures--;
  for (const h of hs) p.bytes.fill(0xa5, p.hdrOffset(h), p.frameOffset(h) + 128);
  for (let i = hs.length - 1; i >= 0; i--) p.release(hs[i]!);
}

/** Build, segment, check, release everything; asserts the pool is whole afterwards. */
function roundTrip(o: FrameOpts): number {
  const free0 = pool.available();
  dirtyFreeBuffers(pool);
  assert.equal(pool.available(), free0);
  const sup = build(pool, o);
  // Segment in chunks of SEG_BURST, as the engine does, and gather every handle.
  const chunk = new Int32Array(SEG_BURST);
  const all: number[] = [];
  for (let first = 0; ;) {
    const k = segmentTcp(pool, sup.h, chunk, first);
    assert.ok(k >= 0, `segmentTcp returned ${k}`);
    for (let i = 0; i < k; i++) all.push(chunk[i]!);
    first += k;
    if (k < SEG_BURST) break;
  }
  const out = Int32Array.from(all);
  const n = out.length;
  assert.ok(n > 0, 'no segments');
  // the super-frame is neither released nor changed
  assert.equal(pool.refs[sup.h], 1);
  const fo = pool.frameOffset(sup.h);
  assert.ok(Buffer.from(pool.bytes.subarray(fo, fo + sup.len)).equals(Buffer.from(sup.frame)), 'super-frame unchanged');
  assert.equal(pool.available(), free0 - 1 - n);
  checkSegments(pool, sup, {
    v6: o.v6, mss: o.mss, payload: o.payload, seq: o.seq ?? 0x10000000, flags: o.flags ?? TCP_ACK, ipId: o.ipId ?? 0x1234,
  }, out, n);
  releaseAll(pool, out, n);
  pool.release(sup.h);
  assert.equal(pool.available(), free0);
  return n;
}

/** Expect SEG_BAD (or `code`) with nothing allocated. */
function expectReject(o: FrameOpts, code = SEG_BAD, mutate?: (b: Built) => void, out = new Int32Array(SEG_BURST)): void {
  const sup = build(pool, o);
  mutate?.(sup);
  const free0 = pool.available();
  const failures0 = pool.allocFailures;
  assert.equal(segmentTcp(pool, sup.h, out), code);
  assert.equal(pool.available(), free0, 'nothing allocated');
  assert.equal(pool.allocFailures, failures0);
  pool.release(sup.h);
}

// ---------------------------------------------------------------------------------------------

describe('checksum.ts', () => {
  test('RFC 1071 example', () => {
    const b = Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7);
    assert.equal(sumWords(b, 0, 8, 0), 0x2ddf0);
    assert.equal(fold(0x2ddf0), 0xddf2);
    assert.equal(checksum(b, 0, 8), 0x220d);
  });

  test('odd length pads the last byte on the right', () => {
    const b = Uint8Array.of(0x12, 0x34, 0x56);
    assert.equal(sumWords(b, 0, 3, 0), 0x1234 + 0x5600);
    assert.equal(sumWords(b, 1, 2, 0), 0x3400);
    assert.equal(sumWords(b, 1, 1, 7), 7);
  });

  test('fold handles sums above 32 bits', () => {
    assert.equal(fold(0), 0);
    assert.equal(fold(0xffff), 0xffff);
    assert.equal(fold(0x10000), 1);
    assert.equal(fold(0x1fffe), 0xffff);
    assert.equal(fold(2 ** 40 + 5), 0x105); // 2^16 is 1 in ones-complement arithmetic, so 2^40 is 2^8
  });

  test('agrees with the independent implementation on random data (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.nat({ max: 0xfffff }), fc.nat(8), (bytes, init, skip) => {
        const start = Math.min(skip, bytes.length);
        const sub = bytes.subarray(start);
        const want = ~onesSum([sub, []]) & 0xffff;
        // the init value enters as if it were another word of the sum
        const withInit = ~fold(onesSum([sub]) + init) & 0xffff;
        assert.equal(checksum(bytes, start, bytes.length), want);
        assert.equal(checksum(bytes, start, bytes.length, init), withInit);
        assert.equal(fold(sumWords(bytes, start, bytes.length, 0)), onesSum([sub]));
      }),
    );
  });

  test('a 64 KiB run of 0xff bytes folds correctly', () => {
    const b = new Uint8Array(65536).fill(0xff);
    assert.equal(fold(sumWords(b, 0, b.length, 0)), 0xffff);
    assert.equal(checksum(b, 0, b.length), 0);
  });
});

describe('completeChecksum', () => {
  const cases: Array<[string, FrameOpts]> = [
    ['IPv4/TCP', { v6: false, payload: payloadOf(1000, 1), mss: 0 }],
    ['IPv4/TCP odd length, VLAN', { v6: false, vlan: 0x8100, payload: payloadOf(333, 2), mss: 0 }],
    ['IPv6/TCP', { v6: true, payload: payloadOf(1400, 3), mss: 0 }],
    ['IPv6/TCP with options, no payload', { v6: true, payload: new Uint8Array(0), mss: 0, tcpOptWords: 3 }],
    ['IPv4/UDP', { v6: false, udp: true, payload: payloadOf(77, 4), mss: 0 }],
    ['IPv6/UDP', { v6: true, udp: true, payload: payloadOf(1200, 5), mss: 0 }],
  ];
  for (const [name, o] of cases) {
    test(`${name}: yields a valid checksum and clears NEEDS_CSUM`, () => {
      const free0 = pool.available();
      const sup = build(pool, { ...o, gsoType: VIRTIO_NET_HDR_GSO_NONE, vnetFlags: VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID });
      assert.equal(completeChecksum(pool, sup.h), true);
      const fo = pool.frameOffset(sup.h);
      const frame = pool.bytes.subarray(fo, fo + sup.len);
      assert.ok(l4ChecksumOk(o.v6, o.v6 ? V6_SRC : V4_SRC, o.v6 ? V6_DST : V4_DST, o.udp ? 17 : 6, frame.subarray(sup.l4)));
      assert.equal(pool.bytes[pool.hdrOffset(sup.h)], VIRTIO_NET_HDR_F_DATA_VALID, 'only NEEDS_CSUM cleared');
      // nothing but the checksum field changed
      const at = sup.l4 + (o.udp ? 6 : 16);
      for (let i = 0; i < sup.len; i++) if (i !== at && i !== at + 1) assert.equal(frame[i], sup.frame[i], `byte ${i}`);
      assert.equal(pool.len[sup.h], sup.len);
      pool.release(sup.h);
      assert.equal(pool.available(), free0);
    });
  }

  test('a computed checksum of zero is sent as 0xffff (UDP must never carry 0)', () => {
    const payload = payloadOf(100, 9);
    payload[98] = 0;
    payload[99] = 0;
    const probe = build(pool, { v6: false, udp: true, payload, mss: 0, gsoType: 0 });
    const fo = pool.frameOffset(probe.h);
    const s = onesSum([pool.bytes.subarray(fo + probe.l4, fo + probe.len)]);
    pool.release(probe.h);
    // choose the last word so that the whole sum is 0xffff, i.e. the checksum is 0
    const w = s === 0xffff ? 0 : 0xffff - s;
    payload[98] = w >>> 8;
    payload[99] = w & 0xff;
    const sup = build(pool, { v6: false, udp: true, payload, mss: 0, gsoType: 0 });
    const f2 = pool.frameOffset(sup.h);
    assert.equal(~onesSum([pool.bytes.subarray(f2 + sup.l4, f2 + sup.len)]) & 0xffff, 0, 'the crafted frame sums to a zero checksum');
    assert.equal(completeChecksum(pool, sup.h), true);
    assert.equal(pool.dv.getUint16(f2 + sup.l4 + 6), 0xffff);
    assert.ok(l4ChecksumOk(false, V4_SRC, V4_DST, 17, pool.bytes.subarray(f2 + sup.l4, f2 + sup.len)));
    pool.release(sup.h);
  });

  test('offsets that do not fit inside the frame return false and change nothing', () => {
    const sup = build(pool, { v6: false, payload: payloadOf(10, 6), mss: 0, gsoType: 0 });
    const ho = pool.hdrOffset(sup.h);
    const fo = pool.frameOffset(sup.h);
    const tries: Array<[number, number]> = [
      [sup.len, 0], // start at the end
      [sup.len - 1, 0], // field would straddle the end
      [sup.l4, sup.len - sup.l4 - 1], // offset one past the last fitting position
      [0xffff, 0xffff],
      [sup.l4, 0xfff0],
    ];
    for (const [start, off] of tries) {
      pool.dv.setUint16(ho + 6, start, true);
      pool.dv.setUint16(ho + 8, off, true);
      assert.equal(completeChecksum(pool, sup.h), false, `start ${start} offset ${off}`);
      assert.ok(Buffer.from(pool.bytes.subarray(fo, fo + sup.len)).equals(Buffer.from(sup.frame)));
      assert.equal(pool.bytes[ho]! & VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_NEEDS_CSUM);
    }
    // the last two bytes of the frame are a legal place for the field
    pool.dv.setUint16(ho + 6, sup.l4, true);
    pool.dv.setUint16(ho + 8, sup.len - sup.l4 - 2, true);
    assert.equal(completeChecksum(pool, sup.h), true);
    pool.release(sup.h);
  });
});

describe('segmentTcp', () => {
  test('result codes', () => {
    assert.equal(SEG_OK, 0);
    assert.ok(SEG_BAD < 0 && SEG_NOBUF < 0);
    assert.notEqual(SEG_BAD, SEG_NOBUF);
  });

  test('IPv4: 5000 bytes at MSS 1448 give 4 segments', () => {
    assert.equal(roundTrip({ v6: false, payload: payloadOf(5000, 11), mss: 1448 }), 4);
  });

  test('IPv4 behind an 802.1Q tag', () => {
    assert.equal(roundTrip({ v6: false, vlan: 0x8100, payload: payloadOf(9000, 12), mss: 1460 }), 7);
  });

  test('IPv6', () => {
    assert.equal(roundTrip({ v6: true, payload: payloadOf(4000, 13), mss: 1440 }), 3);
  });

  test('IPv6 behind an 802.1ad tag', () => {
    assert.equal(roundTrip({ v6: true, vlan: 0x88a8, payload: payloadOf(3001, 14), mss: 1000 }), 4);
  });

  test('IPv4 options and TCP timestamp option are copied into every segment', () => {
    assert.equal(roundTrip({ v6: false, ipOptWords: 2, tcpOptWords: 3, payload: payloadOf(6000, 15), mss: 1436 }), 5);
    assert.equal(roundTrip({ v6: true, vlan: 0x8100, tcpOptWords: 10, payload: payloadOf(2000, 16), mss: 536 }), 4);
  });

  test('payload an exact multiple of MSS: last segment is full', () => {
    assert.equal(roundTrip({ v6: false, payload: payloadOf(3 * 1448, 17), mss: 1448 }), 3);
  });

  test('payload smaller than MSS, and no payload at all, give one segment', () => {
    assert.equal(roundTrip({ v6: false, payload: payloadOf(100, 18), mss: 1448 }), 1);
    assert.equal(roundTrip({ v6: true, payload: new Uint8Array(0), mss: 1448, flags: TCP_ACK | TCP_FIN }), 1);
  });

  test('the TCP checksum is recomputed whatever the field held', () => {
    const free0 = pool.available();
    const sup = build(pool, { v6: false, payload: payloadOf(3000, 19), mss: 1000 });
    const fo = pool.frameOffset(sup.h);
    pool.dv.setUint16(fo + sup.l4 + 16, 0xbad0);
    pool.dv.setUint16(fo + sup.l3 + 10, 0x1111); // and a wrong IPv4 header checksum
    sup.frame.set(pool.bytes.subarray(fo + sup.l4 + 16, fo + sup.l4 + 18), sup.l4 + 16);
    sup.frame.set(pool.bytes.subarray(fo + sup.l3 + 10, fo + sup.l3 + 12), sup.l3 + 10);
    const out = new Int32Array(8);
    const n = segmentTcp(pool, sup.h, out);
    checkSegments(pool, sup, { v6: false, mss: 1000, payload: payloadOf(3000, 19), seq: 0x10000000, flags: TCP_ACK, ipId: 0x1234 }, out, n);
    releaseAll(pool, out, n);
    pool.release(sup.h);
    assert.equal(pool.available(), free0);
  });

  test('partial: checksums left for the port (NEEDS_CSUM at the TCP header, field 16), and finishing them gives the same segments', () => {
    for (const o of [{ v6: false, payload: payloadOf(5000, 23), mss: 1448 }, { v6: true, vlan: 0x8100, tcpOptWords: 3, payload: payloadOf(3001, 24), mss: 1000 }] as FrameOpts[]) {
      const free0 = pool.available();
      const sup = build(pool, o);
      const whole = new Int32Array(8);
      const part = new Int32Array(8);
      const n = segmentTcp(pool, sup.h, whole);
      assert.equal(segmentTcp(pool, sup.h, part, 0, true), n);
      for (let k = 0; k < n; k++) {
        const s = part[k]!;
        const ho = pool.hdrOffset(s);
        assert.equal(pool.bytes[ho], VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert.equal(pool.bytes[ho + 1], 0, 'no GSO');
        assert.equal(pool.dv.getUint16(ho + 6, true), sup.l4, 'csum_start: the TCP header');
        assert.equal(pool.dv.getUint16(ho + 8, true), 16, 'csum_offset: the TCP checksum');
        assert.ok(completeChecksum(pool, s));
        const a = pool.frameOffset(s);
        const w = pool.frameOffset(whole[k]!);
        assert.equal(pool.len[s], pool.len[whole[k]!]);
        assert.ok(Buffer.from(pool.bytes.subarray(a, a + pool.len[s]!)).equals(Buffer.from(pool.bytes.subarray(w, w + pool.len[s]!))), `segment ${k} differs once finished`);
      }
      releaseAll(pool, whole, n);
      releaseAll(pool, part, n);
      pool.release(sup.h);
      assert.equal(pool.available(), free0);
    }
  });

  test('FIN and PSH only on the last segment, CWR only on the first, others everywhere', () => {
    const flags = TCP_FIN | TCP_PSH | TCP_ACK | TCP_CWR | TCP_ECE | TCP_URG;
    assert.equal(roundTrip({ v6: false, payload: payloadOf(4000, 20), mss: 1000, flags }), 4);
    assert.equal(roundTrip({ v6: true, payload: payloadOf(2500, 21), mss: 1000, flags, gsoType: VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN }), 3);
    // a single segment keeps all of them
    assert.equal(roundTrip({ v6: false, payload: payloadOf(500, 22), mss: 1000, flags, gsoType: VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN }), 1);
    // SYN is left alone
    assert.equal(roundTrip({ v6: false, payload: payloadOf(2000, 23), mss: 1000, flags: TCP_SYN | TCP_ACK }), 2);
  });

  test('sequence numbers wrap modulo 2^32 and IPv4 IDs modulo 2^16', () => {
    assert.equal(roundTrip({ v6: false, payload: payloadOf(5000, 24), mss: 1000, seq: 0xfffffc18, ipId: 0xfffe }), 5);
  });

  test('more segments than `out` holds come out in chunks, each a call', () => {
    const sup = build(pool, { v6: false, payload: payloadOf(3000, 25), mss: 1000 });
    const out = new Int32Array(2);
    assert.equal(segmentTcp(pool, sup.h, out, 0), 2);
    releaseAll(pool, out, 2);
    assert.equal(segmentTcp(pool, sup.h, out, 2), 1);
    releaseAll(pool, out, 1);
    assert.equal(segmentTcp(pool, sup.h, out, 3), 0, 'past the last segment');
    pool.release(sup.h);
  });

  test('more than SEG_BURST segments are produced over several calls', () => {
    assert.equal(roundTrip({ v6: false, payload: payloadOf(SEG_BURST * 100 + 1, 26), mss: 100 }), SEG_BURST + 1);
  });

  test('exactly SEG_BURST segments', () => {
    assert.equal(roundTrip({ v6: false, payload: payloadOf(SEG_BURST * 100, 27), mss: 100 }), SEG_BURST);
  });

  // Linux accepts an MSS down to TCP_MIN_MSS (88) for its own sends and tcp_min_snd_mss (48) from
  // a peer, and a tun device advertises gso_max_segs = 65535, so a guest's TSO super-frame of
  // 64 KiB at MSS 88 (745 segments) is legal. segmentTcp refuses anything above SEG_MAX = 512
  // segments with SEG_BAD, so such a flow to a non-TSO port is dropped as tx_dropped_bad_gso on
  // every retransmission and stalls (unless the tap's gso_max_segs is lowered to SEG_MAX).
  test('a legal 64 KiB super-frame at the Linux minimum MSS is segmented', () => {
    assert.equal(roundTrip({ v6: false, payload: payloadOf(65000, 28), mss: 88 }), Math.ceil(65000 / 88));
  });

  describe('malformed super-frames return SEG_BAD and allocate nothing', () => {
    const ok4: FrameOpts = { v6: false, payload: payloadOf(3000, 30), mss: 1000 };
    const ok6: FrameOpts = { v6: true, payload: payloadOf(3000, 31), mss: 1000 };
    const setLen = (n: number) => (b: Built) => void (pool.len[b.h] = n);

    test('gso type TCPV4 on an IPv6 frame, and TCPV6 on an IPv4 frame', () => {
      expectReject({ ...ok6, gsoType: VIRTIO_NET_HDR_GSO_TCPV4 });
      expectReject({ ...ok4, gsoType: VIRTIO_NET_HDR_GSO_TCPV6 });
      expectReject({ ...ok4, vlan: 0x8100, gsoType: VIRTIO_NET_HDR_GSO_TCPV6 });
    });

    test('an ethertype that is neither IPv4 nor IPv6 (ARP; two stacked tags)', () => {
      expectReject({ ...ok4, etype: 0x0806 });
      expectReject({ ...ok4, vlan: 0x88a8, etype: 0x8100 });
    });

    test('gso types that are not TCP (NONE, UDP, UDP_L4)', () => {
      for (const g of [VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4, 2, 0x7f]) {
        expectReject({ ...ok4, gsoType: g });
      }
    });

    test('gso_size 0, and any below MIN_GSO_SIZE (a 64 KiB frame at gso_size 1 would be 65535 segments)', () => {
      expectReject({ ...ok4, mss: 0 });
      expectReject({ ...ok4, mss: 1 });
      expectReject({ ...ok4, mss: MIN_GSO_SIZE - 1 });
      assert.equal(roundTrip({ ...ok4, mss: MIN_GSO_SIZE }), Math.ceil(3000 / MIN_GSO_SIZE));
      expectReject({ ...ok6, mss: 0 });
    });

    test('a protocol other than TCP', () => {
      expectReject({ ...ok4, proto: 17 });
      expectReject({ ...ok6, proto: 17 });
      expectReject({ ...ok6, proto: 0 }); // a hop-by-hop extension header is not parsed
    });

    test('IPv4 IHL below 5 and TCP data offset below 5', () => {
      expectReject(ok4, SEG_BAD, (b) => void (pool.bytes[pool.frameOffset(b.h) + b.l3] = 0x44));
      expectReject(ok4, SEG_BAD, (b) => void (pool.bytes[pool.frameOffset(b.h) + b.l4 + 12] = 0x40));
      expectReject(ok6, SEG_BAD, (b) => void (pool.bytes[pool.frameOffset(b.h) + b.l4 + 12] = 0x00));
    });

    test('headers cut short', () => {
      expectReject(ok4, SEG_BAD, setLen(0));
      expectReject(ok4, SEG_BAD, setLen(13)); // not even an Ethernet header
      expectReject(ok4, SEG_BAD, setLen(14 + 19)); // inside the IPv4 header
      expectReject(ok4, SEG_BAD, setLen(14 + 20 + 19)); // inside the TCP header
      expectReject({ ...ok4, vlan: 0x8100 }, SEG_BAD, setLen(16)); // inside the tag
      expectReject({ ...ok4, vlan: 0x8100 }, SEG_BAD, setLen(18 + 20 + 10));
      expectReject(ok6, SEG_BAD, setLen(14 + 39)); // inside the IPv6 header
      expectReject(ok6, SEG_BAD, setLen(14 + 40 + 19));
      expectReject({ ...ok4, ipOptWords: 5 }, SEG_BAD, setLen(14 + 40 + 10)); // IPv4 options run past the end
      expectReject({ ...ok4, tcpOptWords: 3 }, SEG_BAD, setLen(14 + 20 + 24)); // TCP options run past the end
    });

    test('a data offset pointing past the end of the frame', () => {
      const tiny: FrameOpts = { v6: false, payload: payloadOf(20, 32), mss: 1000 };
      expectReject(tiny, SEG_BAD, (b) => void (pool.bytes[pool.frameOffset(b.h) + b.l4 + 12] = 0xf0)); // 60 bytes > 40 left
    });
  });

  test('too few pool buffers gives SEG_NOBUF and allocates nothing; one more suffices', () => {
    const small = new PacketPool(8);
    const sup = build(small, { v6: false, payload: payloadOf(8 * 500, 40), mss: 500 }); // 8 segments
    assert.equal(small.available(), 7);
    const out = new Int32Array(16);
    assert.equal(segmentTcp(small, sup.h, out), SEG_NOBUF);
    assert.equal(small.available(), 7);
    assert.equal(small.allocFailures, 0);
    // at 7 segments it fits exactly
    small.len[sup.h] = sup.hl + 7 * 500;
    const n = segmentTcp(small, sup.h, out);
    assert.equal(n, 7);
    assert.equal(small.available(), 0);
    assert.equal(small.allocFailures, 0);
    releaseAll(small, out, n);
    small.release(sup.h);
    assert.equal(small.available(), 8);
  });

  test('property: any payload size (0..65000) and MSS (64..9000) reassembles exactly', () => {
    fc.assert(
      fc.property(
        fc.record({
          size: fc.oneof(fc.integer({ min: 0, max: 65000 }), fc.integer({ min: 0, max: 3000 })),
          mss: fc.oneof(fc.integer({ min: 64, max: 9000 }), fc.integer({ min: 500, max: 1500 })),
          v6: fc.boolean(),
          vlan: fc.constantFrom(undefined, 0x8100, 0x88a8),
          seed: fc.integer(),
          seq: fc.nat({ max: 0xffffffff }),
          ipId: fc.nat({ max: 0xffff }),
          flags: fc.nat({ max: 0xff }),
          tcpOptWords: fc.constantFrom(0, 3),
        }),
        (r) => {
          const o: FrameOpts = {
            v6: r.v6, vlan: r.vlan, payload: payloadOf(r.size, r.seed), mss: r.mss, seq: r.seq, ipId: r.ipId, flags: r.flags, tcpOptWords: r.tcpOptWords,
          };
          roundTrip(o);
        },
      ),
      { numRuns: 200 },
    );
  });
});
