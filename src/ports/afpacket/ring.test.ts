// The AF_PACKET ring walkers over crafted memory: well-formed blocks, the budget, VLAN tags put
// back, and a hostile ring (offsets and lengths outside the block, loops, truncation) that is
// counted and never read outside its block.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { C, newCounters } from '../../dataplane/counters.ts';
import { PacketPool, VNET_HDR } from '../../dataplane/pool.ts';
import { libc } from '../../sys/index.ts';
import { PKT_VNET, RxRing, TX_DATA_OFFSET, TxRing } from './ring.ts';

const BS = 4096;
const NB = 4;
const MAC = 82; // tp_mac of the crafted frames: header, sockaddr_ll, vnet header right before

interface Frame {
  data: Uint8Array;
  vnet?: number[];
  status?: number;
  tci?: number;
  snap?: number;
  wire?: number;
  mac?: number;
  next?: number;
  pkttype?: number;
}

function frame(len: number, fill: number): Uint8Array {
  const f = new Uint8Array(len).fill(fill);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00].slice(0, len), 0);
  return f;
}

/** Write a retired block: descriptor, then the frames back to back (8-aligned). */
function block(mem: ArrayBuffer, i: number, frames: Frame[], o: { count?: number; first?: number; len?: number; seq?: number; status?: number } = {}): void {
  const dv = new DataView(mem, i * BS, BS);
  const u8 = new Uint8Array(mem, i * BS, BS);
  u8.fill(0);
  let off = 48;
  for (let k = 0; k < frames.length; k++) {
    const f = frames[k]!;
    const mac = f.mac ?? MAC;
    const snap = f.snap ?? f.data.length;
    const size = (MAC + f.data.length + 7) & ~7; // laid out as if tp_mac were MAC, whatever it says
    const last = k === frames.length - 1;
    dv.setUint32(off, f.next ?? (last ? 0 : size), true);
    dv.setUint32(off + 12, snap, true);
    dv.setUint32(off + 16, f.wire ?? snap, true);
    dv.setUint32(off + 20, f.status ?? 1, true);
    dv.setUint16(off + 24, mac, true);
    dv.setUint32(off + 32, f.tci ?? 0, true);
    u8[off + 58] = f.pkttype ?? 0;
    if (off + MAC + f.data.length <= BS) {
      u8.set(f.vnet ?? [], off + MAC - PKT_VNET);
      u8.set(f.data, off + MAC);
    }
    off += size;
  }
  dv.setUint32(0, 3, true); // version
  dv.setUint32(8, o.status ?? 1, true);
  dv.setUint32(12, o.count ?? frames.length, true);
  dv.setUint32(16, o.first ?? 48, true);
  dv.setUint32(20, o.len ?? off, true);
  dv.setBigUint64(24, BigInt(o.seq ?? i + 1), true);
}

function status(mem: ArrayBuffer, i: number): number {
  return new DataView(mem).getUint32(i * BS + 8, true);
}

function setup(filterOutgoing = false, start = 0) {
  const mem = new ArrayBuffer(BS * NB);
  const pool = new PacketPool(16);
  const ring = new RxRing(mem, libc.addressOf(new Uint8Array(mem)), 0, BS, NB, filterOutgoing, start);
  const c = newCounters();
  const out = new Int32Array(32);
  return { mem, pool, ring, c, out };
}

function bytesOf(pool: PacketPool, h: number): Uint8Array {
  const o = pool.frameOffset(h);
  return pool.bytes.slice(o, o + pool.len[h]!);
}

describe('afpacket rx ring', () => {
  test('copies every frame of a retired block with its virtio-net header, gives the block back, goes on to the next', () => {
    const { mem, pool, ring, c, out } = setup();
    const a = frame(60, 0xa1);
    const b = frame(1514, 0xb2);
    block(mem, 0, [{ data: a }, { data: b, vnet: [1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0] }]);
    block(mem, 1, [{ data: frame(100, 0xc3) }]);
    const n = ring.receive(pool, out, 32, c);
    assert.equal(n, 3);
    assert.deepEqual(bytesOf(pool, out[0]!), a);
    assert.deepEqual(bytesOf(pool, out[1]!), b);
    const ho = pool.hdrOffset(out[1]!);
    assert.deepEqual([...pool.bytes.subarray(ho, ho + VNET_HDR)], [1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0]);
    assert.equal(status(mem, 0), 0);
    assert.equal(status(mem, 1), 0);
    assert.equal(c[C.rx_packets], 3);
    assert.equal(c[C.rx_bytes], 60 + 1514 + 100);
    assert.equal(c[C.rx_gso_packets], 1);
    assert.ok(ring.sawOffload);
    assert.equal(ring.position, 2);
    assert.equal(ring.receive(pool, out, 32, c), 0, 'block 2 is still the kernel\'s');
  });

  test('stops at the budget and resumes inside the block; the block goes back with its last frame', () => {
    const { mem, pool, ring, c, out } = setup();
    block(mem, 0, [{ data: frame(60, 1) }, { data: frame(61, 2) }, { data: frame(62, 3) }]);
    assert.equal(ring.receive(pool, out, 2, c), 2);
    assert.equal(pool.len[out[1]!], 61);
    assert.equal(status(mem, 0), 1, 'still being walked');
    assert.ok(ring.ready());
    assert.equal(ring.receive(pool, out, 2, c), 1);
    assert.equal(pool.len[out[0]!], 62);
    assert.equal(status(mem, 0), 0);
    assert.ok(!ring.sawOffload);
  });

  test('puts an 802.1Q tag the kernel took out back into the frame, moving the offload offsets', () => {
    const { mem, pool, ring, c, out } = setup();
    const f = frame(80, 7);
    block(mem, 0, [{ data: f, status: 1 | 0x10, tci: 0x2064, vnet: [1, 0, 0, 0, 0, 0, 34, 0, 16, 0] }]);
    assert.equal(ring.receive(pool, out, 32, c), 1);
    const got = bytesOf(pool, out[0]!);
    assert.equal(got.length, 84);
    assert.deepEqual([...got.subarray(12, 18)], [0x81, 0x00, 0x20, 0x64, 0x08, 0x00]);
    assert.deepEqual(got.subarray(16), f.subarray(12));
    assert.equal(pool.dv.getUint16(pool.hdrOffset(out[0]!) + 6, true), 38, 'csum_start moved by the tag');
  });

  test('a block whose length, first offset or count leaves the block is given back unread and counted', () => {
    const { mem, pool, ring, c, out } = setup();
    block(mem, 0, [{ data: frame(60, 1) }], { len: BS + 8 });
    block(mem, 1, [{ data: frame(60, 1) }], { first: 8 });
    block(mem, 2, [{ data: frame(60, 1) }], { count: 1_000_000 });
    block(mem, 3, [{ data: frame(60, 1) }], { first: 0xffffff00 });
    assert.equal(ring.receive(pool, out, 32, c), 0);
    assert.equal(ring.stats.badBlocks, 4);
    assert.equal(c[C.rx_dropped_malformed], 4);
    for (let i = 0; i < NB; i++) assert.equal(status(mem, i), 0, `block ${i} given back`);
    assert.equal(pool.available(), 16, 'no buffer kept');
  });

  test('a frame whose tp_mac, tp_snaplen or next offset leaves the block ends the block there, counted', () => {
    const { mem, pool, ring, c, out } = setup();
    block(mem, 0, [{ data: frame(60, 1) }, { data: frame(60, 2), mac: 0xfff0 }, { data: frame(60, 3) }]);
    block(mem, 1, [{ data: frame(60, 1), snap: 0x7fffffff, wire: 0x7fffffff }]);
    block(mem, 2, [{ data: frame(60, 1), next: 0 }, { data: frame(60, 2) }]); // a loop onto itself
    block(mem, 3, [{ data: frame(60, 1), next: 0x80000000 }, { data: frame(60, 2) }]);
    const n = ring.receive(pool, out, 32, c);
    assert.equal(n, 1, 'the frame before the bad tp_mac; a frame whose next offset is bad is itself suspect');
    assert.equal(ring.stats.badFrames, 4);
    assert.equal(c[C.rx_dropped_malformed], 4);
    for (let i = 0; i < NB; i++) assert.equal(status(mem, i), 0);
  });

  test('a frame tp_mac puts inside its own header is refused', () => {
    const { mem, pool, ring, c, out } = setup();
    block(mem, 0, [{ data: frame(60, 1), mac: 20 }]);
    assert.equal(ring.receive(pool, out, 32, c), 0);
    assert.equal(ring.stats.badFrames, 1);
  });

  test('a truncated frame (snaplen < len) and a runt are dropped, the next frame is read', () => {
    const { mem, pool, ring, c, out } = setup();
    block(mem, 0, [{ data: frame(60, 1), wire: 70000 }, { data: frame(10, 2) }, { data: frame(60, 3) }]);
    assert.equal(ring.receive(pool, out, 32, c), 1);
    assert.equal(bytesOf(pool, out[0]!)[20], 3);
    assert.equal(ring.stats.truncated, 1);
    assert.equal(c[C.rx_dropped_malformed], 2);
  });

  test('with the pool empty frames are counted as rx_dropped_no_buffer and the block still goes back', () => {
    const { mem, ring, c, out } = setup();
    const pool = new PacketPool(1);
    block(mem, 0, [{ data: frame(60, 1) }, { data: frame(60, 2) }, { data: frame(60, 3) }]);
    assert.equal(ring.receive(pool, out, 32, c), 1);
    assert.equal(c[C.rx_dropped_no_buffer], 2);
    assert.equal(status(mem, 0), 0);
  });

  test('skips the host\'s own transmissions when asked to filter them (no PACKET_IGNORE_OUTGOING)', () => {
    const { mem, pool, ring, c, out } = setup(true);
    block(mem, 0, [{ data: frame(60, 1), pkttype: 4 }, { data: frame(60, 2), pkttype: 0 }]);
    assert.equal(ring.receive(pool, out, 32, c), 1);
    assert.equal(ring.stats.outgoing, 1);
  });

  test('starting from a stale position, follows the ring from the oldest retired block', () => {
    const { mem, pool, c, out } = setup();
    const ring = new RxRing(mem, libc.addressOf(new Uint8Array(mem)), 0, BS, NB, false, 0);
    block(mem, 3, [{ data: frame(60, 4) }], { seq: 11 });
    block(mem, 2, [{ data: frame(60, 3) }], { seq: 10 });
    assert.equal(ring.receive(pool, out, 32, c), 2);
    assert.equal(bytesOf(pool, out[0]!)[20], 3);
    assert.equal(bytesOf(pool, out[1]!)[20], 4);
    assert.equal(ring.stats.resyncs, 1);
    assert.equal(ring.position, 0);
  });
});

describe('afpacket tx ring', () => {
  test('fills frames with the 10-byte virtio-net header and the frame, marks them, wraps, reports full', () => {
    const FS = 1024;
    const mem = new ArrayBuffer(BS * 2);
    const tx = new TxRing(mem, libc.addressOf(new Uint8Array(mem)), 0, BS, 2, FS); // 4 frames a block, 8 in all
    assert.equal(tx.frames, 8);
    assert.equal(tx.frameMax, FS - TX_DATA_OFFSET - PKT_VNET);
    const pool = new PacketPool(2);
    const h = pool.alloc();
    const ho = pool.hdrOffset(h);
    pool.bytes.set([1, 4, 66, 0, 0x10, 0x05, 54, 0, 16, 0, 0xee, 0xee], ho);
    const f = frame(200, 9);
    pool.bytes.set(f, ho + VNET_HDR);
    pool.len[h] = 200;
    const dv = new DataView(mem);
    for (let i = 0; i < 8; i++) {
      assert.ok(tx.available());
      tx.put(pool, h, 200);
    }
    assert.equal(tx.pending, 8);
    assert.ok(!tx.available(), 'every frame waits for the kernel');
    const at = 4 * FS; // frame 4: first of block 1
    assert.equal(dv.getUint32(BS + 20, true), 1, 'frame 4 lies at the start of block 1');
    assert.equal(dv.getUint32(BS + 16, true), 210);
    assert.deepEqual([...new Uint8Array(mem, BS + TX_DATA_OFFSET, 10)], [1, 4, 66, 0, 0x10, 0x05, 54, 0, 16, 0]);
    assert.deepEqual(new Uint8Array(mem, BS + TX_DATA_OFFSET + 10, 200), f);
    assert.ok(at > 0);
    dv.setUint32(20, 0, true); // the kernel sent frame 0
    assert.ok(tx.available());
    assert.equal(tx.position, 0);
  });
});
