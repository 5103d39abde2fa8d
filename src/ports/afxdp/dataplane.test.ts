import assert from 'node:assert/strict';
import { test } from 'node:test';
import { C, newCounters } from '../../dataplane/counters.ts';
import { PacketPool, VNET_HDR } from '../../dataplane/pool.ts';
import { memfd } from '../../sys/index.ts';
import { ConsumerRing, ProducerRing, type RingOffsets } from '../../sys/xsk.ts';
import { AfXdpPort, CHUNK_SIZE, RX_FRAMES, TX_FRAMES, umemSize, XskQueue } from './dataplane.ts';

// Rings in ordinary memory, with no socket behind them (fd -1): the test plays the kernel.
const OFF: RingOffsets = { producer: 0, consumer: 64, flags: 128, desc: 192 };
const ring = (size: number, words: number): Uint32Array => new Uint32Array(OFF.desc / 4 + size * words);

function fakePort(): { port: AfXdpPort; pool: PacketPool; umem: number; fill: Uint32Array; rx: Uint32Array; tx: Uint32Array; comp: Uint32Array } {
  const pool = new PacketPool(64);
  const bytes = umemSize(1);
  const umem = pool.arena.place(memfd('afxdp-test', bytes), 0, bytes);
  const fill = ring(RX_FRAMES, 2);
  const rx = ring(RX_FRAMES, 4);
  const comp = ring(TX_FRAMES, 2);
  const tx = ring(TX_FRAMES, 4);
  const q = new XskQueue(-1, new ProducerRing(fill, OFF, RX_FRAMES), new ConsumerRing(comp, OFF, TX_FRAMES),
    new ConsumerRing(rx, OFF, RX_FRAMES), new ProducerRing(tx, OFF, TX_FRAMES), []);
  const port = new AfXdpPort({ index: 1, name: 'up', bridge: 1, counters: newCounters() }, pool, [q],
    { dev: 'test0', mode: 'generic', zeroCopy: false, mapFd: -1, umemOff: umem, umemBytes: bytes, umemFd: -1 });
  return { port, pool, umem, fill, rx, tx, comp };
}

/** What the kernel takes from the fill ring: the next posted address. */
function take(fill: Uint32Array): number {
  const i = fill[OFF.consumer / 4]!;
  assert.ok(i !== fill[OFF.producer / 4], 'the fill ring is empty');
  fill[OFF.consumer / 4] = i + 1;
  return fill[OFF.desc / 4 + (i & (RX_FRAMES - 1)) * 2]!;
}

/** The kernel writes one rx descriptor (aligned mode: the frame is 256 bytes into its chunk). */
function deliver(rx: Uint32Array, addr: number, len: number, hi = 0): void {
  const i = rx[OFF.producer / 4]!;
  const w = OFF.desc / 4 + (i & (RX_FRAMES - 1)) * 4;
  rx[w] = addr;
  rx[w + 1] = hi;
  rx[w + 2] = len;
  rx[OFF.producer / 4] = i + 1;
}

test('afxdp: every rx frame is posted at start, a chunk apart; a received frame is copied after a zeroed virtio-net header and its chunk posted again', () => {
  const { port, pool, umem, fill, rx } = fakePort();
  port.start(-1);
  assert.equal(fill[OFF.producer / 4], RX_FRAMES);
  const a = take(fill);
  assert.equal(a % CHUNK_SIZE, 0);
  pool.bytes.fill(0xab, umem + a + 256, umem + a + 256 + 60);
  deliver(rx, a + 256, 60);
  const out = new Int32Array(32);
  assert.equal(port.receive(0, out, 32), 1);
  const h = out[0]!;
  assert.equal(pool.len[h], 60);
  assert.deepEqual([...pool.bytes.subarray(pool.hdrOffset(h), pool.hdrOffset(h) + VNET_HDR)], new Array(VNET_HDR).fill(0));
  assert.ok(pool.bytes.subarray(pool.frameOffset(h), pool.frameOffset(h) + 60).every((b) => b === 0xab));
  assert.equal(fill[OFF.producer / 4], RX_FRAMES + 1, 'the chunk went back to the fill ring');
  assert.equal(fill[OFF.desc / 4 + (RX_FRAMES & (RX_FRAMES - 1)) * 2], a);
  pool.release(h);
  port.close();
  assert.equal(pool.available(), pool.count);
});

test('afxdp: bad rx descriptors (outside the queue\'s frames, not the kernel\'s, past the chunk, empty, twice) are counted and dropped', () => {
  const { port, pool, fill, rx } = fakePort();
  port.start(-1);
  const a0 = take(fill);
  const a1 = take(fill);
  const a2 = take(fill);
  deliver(rx, a0 + 256, 60); // good
  deliver(rx, 0xfffff000, 60); // outside the UMEM
  deliver(rx, (RX_FRAMES + 3) * CHUNK_SIZE + 256, 60); // a tx frame
  deliver(rx, a1 + 256, 60, 1); // an address over 2^32
  deliver(rx, a1 + 256, CHUNK_SIZE - 255); // past the chunk
  deliver(rx, a2 + 256, 0); // empty
  deliver(rx, a0 + 256, 60); // the same frame again in one burst
  const out = new Int32Array(32);
  const n = port.receive(0, out, 32);
  assert.equal(n, 1);
  assert.equal(port.counters[C.rx_packets], 1);
  assert.equal(port.counters[C.rx_dropped_malformed], 6);
  assert.equal(port.badRxDescs, 6);
  assert.equal(rx[OFF.consumer / 4], 7, 'every descriptor is consumed');
  assert.equal(fill[OFF.producer / 4], RX_FRAMES + 3, 'the three real frames went back to the fill ring, once each');
  pool.release(out[0]!);
  port.close();
  assert.equal(pool.available(), pool.count);
});

test('afxdp: transmit copies into a tx frame, releases the packet, drops what cannot be sent; completions return frames', () => {
  const { port, pool, umem, tx, comp } = fakePort();
  const q = new Int32Array(4);
  q[0] = pool.alloc();
  pool.len[q[0]] = 100;
  pool.bytes.fill(0xcd, pool.frameOffset(q[0]), pool.frameOffset(q[0]) + 100);
  q[1] = pool.alloc();
  pool.len[q[1]] = 5000; // over a chunk: the engine should have segmented it
  port.transmit(q, 2);
  assert.equal(pool.available(), pool.count, 'both packets released at once');
  assert.equal(tx[OFF.producer / 4], 1);
  const addr = tx[OFF.desc / 4]!;
  assert.equal(Math.floor(addr / CHUNK_SIZE) >= RX_FRAMES, true, 'a tx frame');
  assert.equal(tx[OFF.desc / 4 + 2], 100);
  assert.ok(pool.bytes.subarray(umem + addr, umem + addr + 100).every((b) => b === 0xcd));
  assert.equal(port.counters[C.tx_dropped_too_big], 1);
  assert.equal(port.txInFlight, 1);
  // The kernel completes it, and once a bogus address.
  comp[OFF.desc / 4] = addr;
  comp[OFF.desc / 4 + 2] = 12345;
  comp[OFF.producer / 4] = 2;
  port.transmit(q, 0); // a transmit takes completions back first
  assert.equal(port.txInFlight, 0);
  assert.equal(port.badCompletions, 1);
  // Every tx frame can be used again: TX_FRAMES sends without a completion, then the ring is full.
  tx[OFF.consumer / 4] = tx[OFF.producer / 4]!; // the kernel took the descriptor
  const one = new Int32Array(1);
  for (let i = 0; i < TX_FRAMES + 1; i++) {
    one[0] = pool.alloc();
    pool.len[one[0]] = 64;
    port.transmit(one, 1);
  }
  assert.equal(port.txInFlight, TX_FRAMES);
  assert.equal(port.counters[C.tx_dropped_full], 1);
  port.close();
});
