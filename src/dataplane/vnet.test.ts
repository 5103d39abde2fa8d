import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  clearVnetHdr, readVnetHdr, vnetFlags, vnetGsoType, writeVnetHdr, type VnetHdr,
  VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
} from './vnet.ts';

// Deterministic by default; set FC_SEED to explore other inputs (a failure prints its seed).
fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 20241124) });

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const hdrArb: fc.Arbitrary<VnetHdr> = fc.record({
  flags: u8, gsoType: u8, hdrLen: u16, gsoSize: u16, csumStart: u16, csumOffset: u16, numBuffers: u16,
});

const SAMPLE: VnetHdr = {
  flags: 0x01, gsoType: 0x81, hdrLen: 0x1234, gsoSize: 0x05b4, csumStart: 0x0022, csumOffset: 0x0010, numBuffers: 0xbeef,
};
// struct virtio_net_hdr_v1: u8 flags @0, u8 gso_type @1, le16 hdr_len @2, le16 gso_size @4,
// le16 csum_start @6, le16 csum_offset @8, le16 num_buffers @10
const SAMPLE_BYTES = [0x01, 0x81, 0x34, 0x12, 0xb4, 0x05, 0x22, 0x00, 0x10, 0x00, 0xef, 0xbe];

describe('virtio-net header', () => {
  test('constants match the virtio specification / linux/virtio_net.h', () => {
    assert.equal(VIRTIO_NET_HDR_F_NEEDS_CSUM, 1);
    assert.equal(VIRTIO_NET_HDR_F_DATA_VALID, 2);
    assert.equal(VIRTIO_NET_HDR_GSO_NONE, 0);
    assert.equal(VIRTIO_NET_HDR_GSO_TCPV4, 1);
    assert.equal(VIRTIO_NET_HDR_GSO_UDP, 3);
    assert.equal(VIRTIO_NET_HDR_GSO_TCPV6, 4);
    assert.equal(VIRTIO_NET_HDR_GSO_UDP_L4, 5);
    assert.equal(VIRTIO_NET_HDR_GSO_ECN, 0x80);
  });

  test('writeVnetHdr lays fields out little-endian at the virtio_net_hdr_v1 offsets', () => {
    const buf = new Uint8Array(12);
    writeVnetHdr(new DataView(buf.buffer), 0, SAMPLE);
    assert.deepEqual([...buf], SAMPLE_BYTES);
  });

  test('readVnetHdr decodes the same layout', () => {
    const buf = Uint8Array.from(SAMPLE_BYTES);
    assert.deepEqual(readVnetHdr(new DataView(buf.buffer), 0), SAMPLE);
  });

  test('each field lands in its own bytes only', () => {
    const zero: VnetHdr = { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0, numBuffers: 0 };
    const fields: Array<[keyof VnetHdr, number, number]> = [
      ['flags', 0, 1], ['gsoType', 1, 1], ['hdrLen', 2, 2], ['gsoSize', 4, 2], ['csumStart', 6, 2], ['csumOffset', 8, 2], ['numBuffers', 10, 2],
    ];
    for (const [name, at, size] of fields) {
      const buf = new Uint8Array(12);
      writeVnetHdr(new DataView(buf.buffer), 0, { ...zero, [name]: size === 1 ? 0xa5 : 0xa55a });
      const want = new Array<number>(12).fill(0);
      if (size === 1) want[at] = 0xa5;
      else [want[at], want[at + 1]] = [0x5a, 0xa5];
      assert.deepEqual([...buf], want, name);
    }
  });

  test('write at an unaligned offset touches exactly the 12 header bytes', () => {
    const buf = new Uint8Array(32).fill(0xcc);
    writeVnetHdr(new DataView(buf.buffer), 7, SAMPLE);
    assert.deepEqual([...buf.subarray(0, 7)], new Array(7).fill(0xcc));
    assert.deepEqual([...buf.subarray(7, 19)], SAMPLE_BYTES);
    assert.deepEqual([...buf.subarray(19)], new Array(13).fill(0xcc));
  });

  test('a DataView over part of a buffer uses view-relative offsets', () => {
    const buf = new Uint8Array(40);
    const dv = new DataView(buf.buffer, 16, 24);
    writeVnetHdr(dv, 4, SAMPLE);
    assert.deepEqual([...buf.subarray(20, 32)], SAMPLE_BYTES);
    assert.deepEqual(readVnetHdr(dv, 4), SAMPLE);
  });

  test('round trip (property), at any offset, leaving neighbours alone', () => {
    fc.assert(
      fc.property(hdrArb, fc.integer({ min: 0, max: 20 }), u8, (h, off, fill) => {
        const buf = new Uint8Array(32).fill(fill);
        const dv = new DataView(buf.buffer);
        writeVnetHdr(dv, off, h);
        assert.deepEqual(readVnetHdr(dv, off), { ...h }); // fc.record objects have a null prototype
        for (let i = 0; i < buf.length; i++) if (i < off || i >= off + 12) assert.equal(buf[i], fill);
        // byte-level: compare with an independent little-endian encoding
        const le = (v: number): number[] => [v & 0xff, v >>> 8];
        const want = [h.flags, h.gsoType, ...le(h.hdrLen), ...le(h.gsoSize), ...le(h.csumStart), ...le(h.csumOffset), ...le(h.numBuffers)];
        assert.deepEqual([...buf.subarray(off, off + 12)], want);
      }),
    );
  });

  test('byte round trip (property): read then write reproduces any 12 bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 12, maxLength: 12 }), (bytes) => {
        const src = Uint8Array.from(bytes);
        const dst = new Uint8Array(12);
        writeVnetHdr(new DataView(dst.buffer), 0, readVnetHdr(new DataView(src.buffer), 0));
        assert.deepEqual([...dst], [...src]);
      }),
    );
  });

  test('hot-path accessors: flags, gso type without the ECN bit, clear', () => {
    const buf = new Uint8Array(20).fill(0x77);
    writeVnetHdr(new DataView(buf.buffer), 4, SAMPLE);
    assert.equal(vnetFlags(buf, 4), 0x01);
    assert.equal(vnetGsoType(buf, 4), VIRTIO_NET_HDR_GSO_TCPV4); // 0x81 & ~ECN
    buf[5] = VIRTIO_NET_HDR_GSO_TCPV6;
    assert.equal(vnetGsoType(buf, 4), VIRTIO_NET_HDR_GSO_TCPV6);
    clearVnetHdr(buf, 4);
    assert.deepEqual([...buf], [...new Array(4).fill(0x77), ...new Array(12).fill(0), ...new Array(4).fill(0x77)]);
    assert.equal(vnetGsoType(buf, 4), VIRTIO_NET_HDR_GSO_NONE);
  });
});
