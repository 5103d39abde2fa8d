import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { mapShared, unmap } from '../sys/index.ts';
import { CAPTURE_IN, CAPTURE_OUT, captureControl, CaptureReader, captureStats, CaptureTap, CTL_HEAD, REC_DATA, REC_VNET, type CaptureRecord } from './capture.ts';
import { PacketPool, VNET_HDR } from './pool.ts';

const RING = 262144;

describe('capture ring', () => {
  const pool = new PacketPool(64);
  const mappings: Array<ReturnType<typeof mapShared>> = [];
  after(() => mappings.forEach(unmap));

  /** A ring as the daemon makes it: a memfd the main thread maps, placed in the pool's arena. */
  function ring(snaplen = 262144): { tap: CaptureTap; reader: CaptureReader; ctl: SharedArrayBuffer } {
    const m = mapShared('capture-test', RING);
    mappings.push(m);
    const ctl = captureControl();
    const tap = new CaptureTap(1, ctl, pool.arena.place(m.fd, 0, RING), RING, snaplen, pool);
    return { tap, reader: new CaptureReader(ctl, new Uint8Array(m.buffer)), ctl };
  }

  /** A packet of `len` bytes, each byte `seed + i`, with a recognisable virtio-net header. */
  function packet(len: number, seed: number): number {
    const h = pool.alloc();
    assert.ok(h >= 0);
    const ho = pool.hdrOffset(h);
    pool.bytes.fill(0, ho, ho + VNET_HDR);
    pool.bytes[ho] = 1; // NEEDS_CSUM
    pool.bytes[ho + 1] = seed & 0xff;
    for (let i = 0; i < len; i++) pool.bytes[ho + VNET_HDR + i] = (seed + i) & 0xff;
    pool.len[h] = len;
    return h;
  }

  function readAll(reader: CaptureReader): Array<CaptureRecord & { vnet: number[]; data: number[] }> {
    const out: Array<CaptureRecord & { vnet: number[]; data: number[] }> = [];
    reader.read((r) => {
      out.push({ ...r, vnet: [...reader.ring.subarray(r.at + REC_VNET, r.at + REC_VNET + 2)], data: [...reader.ring.subarray(r.at + REC_DATA, r.at + REC_DATA + r.capLen)] });
      return true;
    });
    return out;
  }

  test('a burst is read back as written: interface, direction, lengths, header and bytes', () => {
    const { tap, reader, ctl } = ring();
    const q = Int32Array.from([packet(60, 1), packet(1514, 2), packet(65000, 3)]);
    tap.write(pool, q, 3, 2, CAPTURE_OUT);
    const recs = readAll(reader);
    assert.equal(recs.length, 3);
    recs.forEach((r, i) => {
      const len = [60, 1514, 65000][i]!;
      assert.equal(r.iface, 2);
      assert.equal(r.dir, CAPTURE_OUT);
      assert.equal(r.origLen, len);
      assert.equal(r.capLen, len);
      assert.deepEqual(r.vnet, [1, i + 1]);
      assert.ok(r.data.every((b, k) => b === ((i + 1 + k) & 0xff)), `bytes of packet ${i}`);
      assert.ok(Math.abs(r.sec * 1000 + r.nsec / 1e6 - Date.now()) < 5000, 'a wall-clock time');
    });
    assert.deepEqual([...captureStats(ctl).subarray(4, 6)], [3, 0], 'interface 2: 3 seen, none lost');
    for (const h of q) pool.release(h);
  });

  test('snaplen keeps the head of each packet; the original length is kept', () => {
    const { tap, reader } = ring(100);
    const q = Int32Array.from([packet(1514, 7), packet(64, 8)]);
    tap.write(pool, q, 2, 0, CAPTURE_IN);
    const recs = readAll(reader);
    assert.deepEqual(recs.map((r) => [r.origLen, r.capLen, r.data.length]), [[1514, 100, 100], [64, 64, 64]]);
    for (const h of q) pool.release(h);
  });

  test('a full ring loses the new records, counted, and never overwrites what the reader has not read; wraps with padding', () => {
    const { tap, reader, ctl } = ring();
    const big = packet(60000, 5);
    const q = Int32Array.from([big, big, big, big, big]);
    tap.write(pool, q, 5, 0, CAPTURE_IN); // 4 records of 60040 bytes fit in 256 KiB, the 5th is lost
    assert.deepEqual([...captureStats(ctl).subarray(0, 2)], [5, 1]);
    tap.write(pool, q, 1, 0, CAPTURE_IN);
    assert.deepEqual([...captureStats(ctl).subarray(0, 2)], [6, 2], 'no room while the records are unread');
    assert.equal(readAll(reader).length, 4);
    // 21984 bytes are left before the ring's end: the next record pads them and starts at 0.
    tap.write(pool, q, 3, 0, CAPTURE_IN);
    const wrapped = readAll(reader);
    assert.deepEqual(wrapped.map((r) => r.at), [0, 60040, 120080]);
    for (const r of wrapped) assert.ok(r.data.every((b, k) => b === ((5 + k) & 0xff)));
    assert.equal(captureStats(ctl)[1], 2);
    pool.release(big);
  });

  test('a length the producer cannot have written stops the reader', () => {
    const { reader, ctl } = ring();
    new DataView(reader.ring.buffer).setUint32(0, 12, true); // shorter than a record's header
    Atomics.store(new Int32Array(ctl), CTL_HEAD, 64);
    assert.equal(reader.read(() => true), 0);
    assert.equal(reader.corrupt, true);
  });
});
