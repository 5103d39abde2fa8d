import assert from 'node:assert/strict';
import { test } from 'node:test';
import { C, newCounters } from '../../dataplane/counters.ts';
import { BUF_SIZE, PacketPool, VNET_HDR } from '../../dataplane/pool.ts';
import { ConsumerRing, ProducerRing, type RingOffsets } from '../../sys/xsk.ts';
import { AfXdpPort, FILL_BIAS, RING_SIZE, RX_FRAME_MAX, XskQueue } from './dataplane.ts';

// Rings in ordinary memory, with no socket behind them (fd -1): the test plays the kernel.
const OFF: RingOffsets = { producer: 0, consumer: 64, flags: 128, desc: 192 };
const ring = (words: number): Uint32Array => new Uint32Array(OFF.desc / 4 + RING_SIZE * words);

function fakePort(poolSize = 64): { port: AfXdpPort; pool: PacketPool; fill: Uint32Array; rx: Uint32Array; tx: Uint32Array; comp: Uint32Array } {
  const pool = new PacketPool(poolSize);
  const fill = ring(2);
  const comp = ring(2);
  const rx = ring(4);
  const tx = ring(4);
  const q = new XskQueue(-1, new ProducerRing(fill, OFF, RING_SIZE), new ConsumerRing(comp, OFF, RING_SIZE),
    new ConsumerRing(rx, OFF, RING_SIZE), new ProducerRing(tx, OFF, RING_SIZE), []);
  const port = new AfXdpPort({ index: 1, name: 'up', bridge: 1, counters: newCounters() }, pool, [q],
    { dev: 'test0', mode: 'generic', zeroCopy: false, mapFd: -1, umemBytes: poolSize * BUF_SIZE });
  return { port, pool, fill, rx, tx, comp };
}

/** What the kernel reads from the fill ring: the addresses pier posted. */
function posted(fill: Uint32Array): number[] {
  const n = fill[OFF.producer / 4]!;
  return Array.from({ length: n }, (_, i) => fill[OFF.desc / 4 + i * 2]!);
}

/** The kernel writes one rx descriptor (unaligned mode: offset in the top 16 bits of the address). */
function deliver(rx: Uint32Array, base: number, offset: number, len: number): void {
  const i = rx[OFF.producer / 4]!;
  const w = OFF.desc / 4 + (i & (RING_SIZE - 1)) * 4;
  rx[w] = base;
  rx[w + 1] = offset << 16;
  rx[w + 2] = len;
  rx[OFF.producer / 4] = i + 1;
}

test('afxdp: buffers are posted so the kernel puts the frame right after the virtio-net header; buffer 0 never is', () => {
  const { port, pool, fill } = fakePort();
  port.onTimer(); // refill
  const addrs = posted(fill);
  assert.ok(addrs.length > 0);
  for (const a of addrs) {
    assert.equal((a - FILL_BIAS) % BUF_SIZE, 0);
    assert.ok(a - FILL_BIAS >= BUF_SIZE, 'buffer 0 is not posted');
    assert.equal(a + 256, ((a - FILL_BIAS) / BUF_SIZE) * BUF_SIZE + VNET_HDR);
  }
  port.close();
  assert.equal(pool.available(), pool.count);
});

test('afxdp: bad rx descriptors (outside the UMEM, not posted, bad length, not a frame start) are counted and dropped', () => {
  const { port, pool, fill, rx } = fakePort();
  port.onTimer();
  const [a0, a1, a2] = posted(fill) as [number, number, number];
  deliver(rx, a0, 256, 60); // good
  deliver(rx, 0xfffff000, 256, 60); // outside the UMEM
  deliver(rx, 5 * BUF_SIZE + 60, 0, 60); // inside, but not a frame start
  const unposted = [...Array(pool.count).keys()].find((h) => h > 0 && !posted(fill).includes(h * BUF_SIZE + FILL_BIAS))!;
  deliver(rx, unposted * BUF_SIZE + FILL_BIAS, 256, 60); // a buffer this port never posted
  deliver(rx, a1, 256, RX_FRAME_MAX + 1); // too long for the chunk
  deliver(rx, a2, 256, 0); // empty
  deliver(rx, a0, 256, 60); // the same buffer twice
  const out = new Int32Array(32);
  const n = port.receive(0, out, 32);
  assert.equal(n, 1);
  const h = out[0]!;
  assert.equal(h * BUF_SIZE + FILL_BIAS, a0);
  assert.equal(pool.len[h], 60);
  assert.equal(port.counters[C.rx_packets], 1);
  assert.equal(port.counters[C.rx_dropped_malformed], 6);
  assert.equal(port.badRxDescs, 6);
  assert.equal(rx[OFF.consumer / 4], 7, 'every descriptor is consumed');
  pool.release(h);
  port.close();
  assert.equal(pool.available(), pool.count, 'the buffers of the bad descriptors went back to the pool');
});

test('afxdp: transmit writes descriptors at the frame, keeps the buffer until its completion, drops what cannot be sent', () => {
  const { port, pool, tx, comp } = fakePort();
  const q = new Int32Array(4);
  q[0] = pool.alloc();
  pool.len[q[0]] = 100;
  q[1] = pool.alloc();
  pool.len[q[1]] = 5000; // over a chunk: the engine should have segmented it
  port.transmit(q, 2);
  assert.equal(tx[OFF.producer / 4], 1);
  assert.equal(tx[OFF.desc / 4], q[0] * BUF_SIZE + VNET_HDR);
  assert.equal(tx[OFF.desc / 4 + 2], 100);
  assert.equal(port.counters[C.tx_dropped_too_big], 1);
  assert.equal(port.txInFlight, 1);
  const before = pool.available();
  // The kernel completes it, and once a bogus address.
  comp[OFF.desc / 4] = q[0] * BUF_SIZE + VNET_HDR;
  comp[OFF.desc / 4 + 2] = 12345;
  comp[OFF.producer / 4] = 2;
  port.transmit(q, 0); // a transmit takes completions back first
  assert.equal(pool.available(), before + 1);
  assert.equal(port.txInFlight, 0);
  assert.equal(port.badCompletions, 1);
  port.close();
  assert.equal(pool.available(), pool.count);
});
