// Remote checksum offload through two real vxlan ports over loopback UDP: the sender with rco=on
// leaves a partial inner checksum as it is and says where in the header; the receiver marks the
// frame NEEDS_CSUM from the header without summing it. With rco=off the checksum is finished
// before sending and the header is the plain one. A header whose start or offset falls outside the
// frame is dropped and counted.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { checksum, fold, sumWords } from '../../dataplane/checksum.ts';
import { C, newCounters } from '../../dataplane/counters.ts';
import { completeChecksum, segmentTcp } from '../../dataplane/offload.ts';
import { PacketPool } from '../../dataplane/pool.ts';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4 } from '../../dataplane/vnet.ts';
import { boundPort, MmsgBatch, MSG_DONTWAIT, sendmmsg, sockaddr, udpSocket } from '../../sys/udp.ts';
import { addressOf, close } from '../../sys/libc.ts';
import { VxlanPort } from './dataplane.ts';
import { encodeVxlanRco } from './header.ts';
import type { VxlanSpec } from './options.ts';

const pool = new PacketPool(64);
const fds: number[] = [];
after(() => fds.forEach((fd) => close(fd)));

function sock(): number {
  const fd = udpSocket({ netnsPath: undefined, family: 4, local: '127.0.0.1', port: 0 });
  fds.push(fd);
  return fd;
}

function port(rxFd: number, txFd: number, dstport: number, rco: boolean, gso = false): VxlanPort {
  const spec: VxlanSpec = {
    rxFd, txFds: [txFd], txPorts: [boundPort(txFd)], family: 4, vni: 42, dstport, local: '127.0.0.1', remotes: ['127.0.0.1'],
    underlayMtu: 1500, mtuFrom: 'mtu=', gso, gro: false, udpGro: false, rco,
  };
  return new VxlanPort(1, 'vx0', 0, newCounters(), pool, spec);
}

/** A TCP/IPv4 frame of `payload` bytes in a pool buffer with its checksum partial (NEEDS_CSUM at 34, field 16). */
function partialFrame(payload: number): number {
  const h = pool.alloc();
  const b = pool.bytes;
  const ho = pool.hdrOffset(h);
  const f = pool.frameOffset(h);
  const len = 14 + 20 + 20 + payload;
  b.fill(0, ho, f + len);
  b.set([0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00], f);
  b[f + 14] = 0x45;
  b[f + 16] = (40 + payload) >> 8;
  b[f + 17] = (40 + payload) & 0xff;
  b[f + 22] = 64;
  b[f + 23] = 6;
  b.set([10, 42, 0, 1, 10, 42, 0, 2], f + 26);
  const ip = checksum(b, f + 14, f + 34);
  b[f + 24] = ip >> 8;
  b[f + 25] = ip & 0xff;
  b[f + 34 + 12] = 0x50;
  for (let i = 0; i < payload; i++) b[f + 54 + i] = (i * 13) & 0xff;
  const p = fold(sumWords(b, f + 26, f + 34, 0) + 6 + 20 + payload);
  b[f + 34 + 16] = p >> 8;
  b[f + 34 + 17] = p & 0xff;
  pool.len[h] = len;
  b[ho] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  b[ho + 6] = 34;
  b[ho + 8] = 16;
  return h;
}

/** The TCP checksum of the received frame h, summed over pseudo-header and segment: 0 when complete and right. */
function tcpSum(h: number): number {
  const b = pool.bytes;
  const f = pool.frameOffset(h);
  const l4len = pool.len[h]! - 34;
  return checksum(b, f + 34, f + 34 + l4len, sumWords(b, f + 26, f + 34, 0) + 6 + l4len);
}

/** Send one datagram by hand: an 8-byte VXLAN header and an inner frame, to the UDP port `dstport`. */
function sendRaw(dstport: number, hdr: Uint8Array, frame: Uint8Array): void {
  const m = new MmsgBatch(1, 2);
  m.setIov(0, addressOf(hdr), 8);
  m.setIov(1, addressOf(frame), frame.length);
  const dst = sockaddr(4, '127.0.0.1', dstport);
  m.setName(0, dst);
  m.setMsg(0, 0, 2, dst.length);
  assert.equal(sendmmsg(sock(), m.addr, 1, MSG_DONTWAIT), 1);
}

/** The next `n` frames the port receives, in order. */
function receiveN(rx: VxlanPort, n: number): number[] {
  const got: number[] = [];
  const out = new Int32Array(8);
  for (let tries = 0; tries < 1000 && got.length < n; tries++) {
    const k = rx.receive(0, out, n - got.length);
    for (let i = 0; i < k; i++) got.push(out[i]!);
  }
  assert.equal(got.length, n, 'frames received');
  return got;
}

function receiveOne(rx: VxlanPort): number {
  const out = new Int32Array(4);
  for (let tries = 0; tries < 1000; tries++) {
    const n = rx.receive(0, out, 4);
    if (n > 0) {
      assert.equal(n, 1);
      return out[0]!;
    }
  }
  throw new Error('nothing arrived');
}

describe('vxlan remote checksum offload over loopback', () => {
  const rxB = sock();
  const b = port(rxB, sock(), 0, false);
  const a = port(sock(), sock(), boundPort(rxB), true);
  const off = port(sock(), sock(), boundPort(rxB), false);
  const ext = (p: VxlanPort): Record<string, number> => p.describe().counters;

  it('rco=on takes partial checksums, sends one as it is, and the receiver marks it NEEDS_CSUM from the header', () => {
    // Both take partial checksums and TSO: the port finishes or cuts what it must itself.
    assert.equal(a.acceptsCsum, true);
    assert.equal(off.acceptsCsum, true);
    const rx0 = ext(b).rx_rco!;
    const tx0 = ext(a).tx_rco!;
    const sw0 = a.counters[C.tx_csum_sw]!;
    const q = new Int32Array([partialFrame(500)]);
    a.transmit(q, 1);
    assert.equal(ext(a).tx_rco, tx0 + 1);
    assert.equal(a.counters[C.tx_csum_sw], sw0, 'not summed on the way out');
    const h = receiveOne(b);
    const bb = pool.bytes;
    const ho = pool.hdrOffset(h);
    assert.equal(bb[ho]! & VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_NEEDS_CSUM);
    assert.equal(bb[ho + 6]! | (bb[ho + 7]! << 8), 34, 'csum_start');
    assert.equal(bb[ho + 8]! | (bb[ho + 9]! << 8), 16, 'csum_offset');
    assert.equal(pool.len[h], 14 + 40 + 500);
    assert.notEqual(tcpSum(h), 0, 'still partial: the receiver did not finish it either');
    assert.equal(ext(b).rx_rco, rx0 + 1);
    assert.equal(ext(b).rx_csum_partial, 0, 'known from the header, not found by summing');
    pool.release(h);
  });

  it('rco=off finishes the checksum before sending, with the plain header', () => {
    const rx0 = ext(b).rx_rco!;
    off.transmit(new Int32Array([partialFrame(300)]), 1);
    assert.equal(off.counters[C.tx_csum_sw], 1);
    assert.equal(ext(off).tx_rco, 0);
    const h = receiveOne(b);
    assert.equal(pool.bytes[pool.hdrOffset(h)]! & VIRTIO_NET_HDR_F_NEEDS_CSUM, 0);
    assert.equal(tcpSum(h), 0, 'complete and right');
    assert.equal(ext(b).rx_rco, rx0, 'no RCO header this time');
    pool.release(h);
  });

  it('rco=on, a request RCO cannot say (odd start) is finished on a copy: a shared packet is never written', () => {
    const h = partialFrame(400);
    const ho = pool.hdrOffset(h);
    // Start 33 (odd): as if the frame had one more byte before its TCP header. Only where the
    // request points matters here; the receiver checks the sum over the same range.
    pool.bytes[ho + 6] = 33;
    pool.refs[h]!++; // a flood's other output still holds it
    const before = pool.bytes.slice(ho, pool.frameOffset(h) + pool.len[h]!);
    // What the receiver should get: the request finished on a private copy.
    const want = pool.materialize((pool.refs[h]!++, h));
    assert.ok(completeChecksum(pool, want));
    const wantBytes = pool.bytes.slice(pool.frameOffset(want), pool.frameOffset(want) + pool.len[want]!);
    pool.release(want);
    const tx0 = ext(a).tx_rco!;
    const sw0 = a.counters[C.tx_csum_sw]!;
    a.transmit(new Int32Array([h]), 1);
    assert.ok(Buffer.from(pool.bytes.subarray(ho, pool.frameOffset(h) + pool.len[h]!)).equals(Buffer.from(before)), 'the shared packet is as it was');
    assert.equal(pool.refs[h], 1, 'the port let go of its reference');
    pool.release(h);
    assert.equal(ext(a).tx_rco, tx0);
    assert.equal(a.counters[C.tx_csum_sw], sw0 + 1);
    const r = receiveOne(b);
    const f = pool.frameOffset(r);
    assert.equal(pool.bytes[pool.hdrOffset(r)]! & VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 'sent with the plain header');
    assert.ok(Buffer.from(pool.bytes.subarray(f, f + pool.len[r]!)).equals(Buffer.from(wantBytes)), 'finished as the request named');
    pool.release(r);
  });

  it('received: the UDP bit means offset 6; a start or field at the very end of the frame is taken, one inside the Ethernet header or past the end is dropped and counted', () => {
    const cases: Array<[number, number, boolean]> = [
      // [RCO byte, inner frame length, taken]
      [(34 >> 1) | 0x80, 60, true], // UDP: field at 40..41
      [(44 >> 1), 62, true], // TCP field at 60..61: exactly the last two bytes
      [(44 >> 1), 61, false], // one byte short
      [(12 >> 1), 60, false], // inside the Ethernet header
      [127, 60, false], // start 254, past the end
    ];
    for (const [rco, flen, taken] of cases) {
      const hdr = new Uint8Array(new ArrayBuffer(8));
      encodeVxlanRco(hdr, 0, 42, rco);
      const frame = new Uint8Array(new ArrayBuffer(flen));
      frame.set([0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 9, 0x08, 0x00]);
      const bad0 = ext(b).rx_dropped_bad_rco!;
      const malformed0 = b.counters[C.rx_dropped_malformed]!;
      sendRaw(boundPort(rxB), hdr, frame);
      if (taken) {
        const h = receiveOne(b);
        const ho = pool.hdrOffset(h);
        assert.equal(pool.bytes[ho], VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert.equal(pool.bytes[ho + 6], (rco & 0x7f) << 1);
        assert.equal(pool.bytes[ho + 8], (rco & 0x80) !== 0 ? 6 : 16);
        pool.release(h);
      } else {
        const out = new Int32Array(4);
        for (let tries = 0; tries < 1000 && ext(b).rx_dropped_bad_rco === bad0; tries++) assert.equal(b.receive(0, out, 4), 0);
        assert.equal(ext(b).rx_dropped_bad_rco, bad0 + 1, `RCO byte ${rco} in a ${flen}-byte frame`);
        assert.equal(b.counters[C.rx_dropped_malformed], malformed0 + 1, 'counted as malformed too, not handed on');
      }
    }
  });

  for (const rco of [false, true]) {
    it(`a TSO super-frame is cut by the port without copying its payload (rco=${rco ? 'on' : 'off'}, one UDP_SEGMENT train): the same segments as the engine's segmentTcp`, () => {
      const tx = port(sock(), sock(), boundPort(rxB), rco, true);
      tx.table.learn(0x020000000002, 0, Date.now() / 1000); // the destination is behind the remote: unicast, so a train
      const h = partialFrame(5000);
      const ho = pool.hdrOffset(h);
      pool.bytes[ho + 1] = VIRTIO_NET_HDR_GSO_TCPV4;
      pool.dv.setUint16(ho + 2, 54, true);
      pool.dv.setUint16(ho + 4, 1400, true);
      const want = new Int32Array(8);
      const n = segmentTcp(pool, h, want);
      assert.equal(n, 4);
      const expected = [...want.subarray(0, n)].map((s) => pool.bytes.slice(pool.frameOffset(s), pool.frameOffset(s) + pool.len[s]!));
      want.subarray(0, n).forEach((s) => pool.release(s));
      const free0 = pool.available();
      tx.transmit(new Int32Array([h]), 1);
      assert.equal(pool.available(), free0 + 1, 'the super-frame is released once sent, and no pool buffer was taken');
      assert.equal(tx.counters[C.tx_segmented], 1);
      assert.equal(tx.counters[C.tx_packets], 4);
      assert.equal(tx.counters[C.tx_bytes], expected.reduce((t, f) => t + f.length, 0));
      assert.equal(tx.describe().counters.tx_gso_messages, 1, 'one train');
      assert.equal(tx.describe().counters.tx_rco, rco ? 4 : 0);
      const rs = receiveN(b, n);
      for (let k = 0; k < n; k++) {
        const r = rs[k]!;
        const rh = pool.hdrOffset(r);
        assert.equal(pool.bytes[rh]! & VIRTIO_NET_HDR_F_NEEDS_CSUM, rco ? VIRTIO_NET_HDR_F_NEEDS_CSUM : 0);
        if (rco) {
          assert.equal(pool.bytes[rh + 6], 34);
          assert.equal(pool.bytes[rh + 8], 16);
          assert.ok(completeChecksum(pool, r));
        }
        const f = pool.frameOffset(r);
        assert.ok(Buffer.from(pool.bytes.subarray(f, f + pool.len[r]!)).equals(Buffer.from(expected[k]!)), `segment ${k}`);
        pool.release(r);
      }
      tx.close();
    });
  }

  it('the segments of a super-frame too large for the tunnel are dropped and counted; a short last one, or a one-segment frame that fits, still goes', () => {
    const tx = port(sock(), sock(), boundPort(rxB), false, true);
    const h = partialFrame(3000);
    const ho = pool.hdrOffset(h);
    pool.bytes[ho + 1] = VIRTIO_NET_HDR_GSO_TCPV4;
    pool.dv.setUint16(ho + 2, 54, true);
    pool.dv.setUint16(ho + 4, 1500, true); // 54 + 1500 > 1450 + 14
    const free0 = pool.available();
    tx.transmit(new Int32Array([h]), 1);
    assert.equal(pool.available(), free0 + 1);
    assert.equal(tx.counters[C.tx_dropped_too_big], 2);
    assert.equal(tx.describe().counters.tx_dropped_too_big, 2);
    assert.equal(tx.counters[C.tx_packets], 0);
    // A last segment short enough still goes; so does a one-segment "super-frame" that fits.
    for (const [payload, sent] of [[1600, 1], [100, 1]] as const) {
      const g = partialFrame(payload);
      const gh = pool.hdrOffset(g);
      pool.bytes[gh + 1] = VIRTIO_NET_HDR_GSO_TCPV4;
      pool.dv.setUint16(gh + 2, 54, true);
      pool.dv.setUint16(gh + 4, 1500, true);
      const p0 = tx.counters[C.tx_packets]!;
      tx.transmit(new Int32Array([g]), 1);
      assert.equal(tx.counters[C.tx_packets], p0 + sent, `payload ${payload}`);
      for (const r of receiveN(b, sent)) {
        assert.equal(pool.len[r], 54 + (payload === 1600 ? 100 : 100));
        pool.release(r);
      }
    }
    assert.equal(tx.counters[C.tx_dropped_too_big], 3);
    // And one that does not parse as its header says.
    const bad = partialFrame(3000);
    pool.bytes[pool.hdrOffset(bad) + 1] = VIRTIO_NET_HDR_GSO_TCPV4;
    pool.dv.setUint16(pool.hdrOffset(bad) + 4, 10, true); // gso_size below MIN_GSO_SIZE
    tx.transmit(new Int32Array([bad]), 1);
    assert.equal(tx.counters[C.tx_dropped_bad_gso], 1);
    assert.equal(pool.available(), free0 + 1);
    tx.close();
  });

  it('a super-frame longer than one sendmmsg batch (100 datagrams, no GSO): each batch holds it, and the segments after a flush still take the right template', () => {
    const tx = port(sock(), sock(), boundPort(rxB), false, false);
    tx.table.learn(0x020000000002, 0, Date.now() / 1000);
    const h = partialFrame(100 * 500);
    const ho = pool.hdrOffset(h);
    pool.bytes[ho + 1] = VIRTIO_NET_HDR_GSO_TCPV4;
    pool.dv.setUint16(ho + 2, 54, true);
    pool.dv.setUint16(ho + 4, 500, true);
    // The engine's cut, 16 at a time (the test pool is small), for comparison.
    const chunk = new Int32Array(16);
    const expected: Uint8Array[] = [];
    for (let first = 0; ;) {
      const k = segmentTcp(pool, h, chunk, first);
      assert.ok(k >= 0);
      for (const sg of chunk.subarray(0, k)) {
        expected.push(pool.bytes.slice(pool.frameOffset(sg), pool.frameOffset(sg) + pool.len[sg]!));
        pool.release(sg);
      }
      first += k;
      if (k < chunk.length) break;
    }
    const n = expected.length;
    assert.equal(n, 100);
    const free0 = pool.available();
    tx.transmit(new Int32Array([h]), 1);
    assert.equal(pool.available(), free0 + 1, 'every batch let go of it');
    assert.ok(tx.describe().counters.tx_sendmmsg_calls! >= 2, 'more than one batch');
    assert.equal(tx.counters[C.tx_packets], 100);
    let k = 0;
    while (k < n) {
      for (const r of receiveN(b, Math.min(8, n - k))) {
        const f = pool.frameOffset(r);
        assert.ok(Buffer.from(pool.bytes.subarray(f, f + pool.len[r]!)).equals(Buffer.from(expected[k]!)), `segment ${k}`);
        pool.release(r);
        k++;
      }
    }
    tx.close();
  });
});
