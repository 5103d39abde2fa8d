// Engine links (docs/design/threads.md): two engines driven turn by turn in one thread, joined by
// a pair of LinkPorts as the daemon joins its threads, each with one plain port of its own.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { EventFd, libc } from '../sys/index.ts';
import { C } from './counters.ts';
import { newCounters } from './counters.ts';
import { Engine } from './engine.ts';
import { LINK_RING_BYTES, LINK_SLOTS, linkRing, LinkPort, linkWaiting, linkWakeAsked } from './link.ts';
import { WirePort } from './wire-port.test-util.ts';


function frame(dst: number, src: number, fill: number, len = 60): Uint8Array {
  const f = new Uint8Array(len).fill(fill);
  f.set(dst === 0xff ? [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] : [2, 0, 0, 0, 0, dst], 0);
  f.set([2, 0, 0, 0, 0, src], 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  return f;
}

const cleanup: Array<() => void> = [];
after(() => {
  for (const f of cleanup) f();
});

/** Engines a and b, a port on each (slots 1 and 2), the link between them (slots 10 and 11). */
function twoEngines(): { a: Engine; b: Engine; pa: WirePort; pb: WirePort; la: LinkPort; lb: LinkPort } {
  const a = new Engine(64, undefined, () => {});
  const b = new Engine(64, undefined, () => {});
  for (const e of [a, b]) e.addBridge(1, 'br0');
  const ab = linkRing();
  const ba = linkRing();
  const wa = new EventFd();
  const wb = new EventFd();
  const place = (e: Engine, fd: number): number => e.pool.arena.place(fd, 0, LINK_RING_BYTES);
  const la = new LinkPort(10, 'link1', 1, newCounters(), a.pool, { txOffset: place(a, ab.fd), rxOffset: place(a, ba.fd), txControl: ab.control, rxControl: ba.control, wake: wa, peerWake: wb, peer: 1 });
  const lb = new LinkPort(11, 'link0', 1, newCounters(), b.pool, { txOffset: place(b, ba.fd), rxOffset: place(b, ab.fd), txControl: ba.control, rxControl: ab.control, wake: wb, peerWake: wa, peer: 0 });
  libc.close(ab.fd);
  libc.close(ba.fd);
  cleanup.push(() => { wa.close(); wb.close(); });
  const pa = new WirePort(1, a.pool);
  const pb = new WirePort(2, b.pool);
  a.addPort(pa);
  a.addPort(la);
  b.addPort(pb);
  b.addPort(lb);
  return { a, b, pa, pb, la, lb };
}

/** Turns of the engines, each looking at its epoll set (a turn(0) looks only every 32nd time). */
function settle(...es: Engine[]): void {
  for (let i = 0; i < 8; i++) for (const e of es) e.turn(1);
}

test('a frame crosses the link byte for byte; the other engine learns its source on the link', () => {
  const { a, b, pa, pb, la, lb } = twoEngines();
  settle(a, b);
  pa.inbox.push(frame(0xff, 1, 0xa1, 1500));
  a.poll(pa, 0);
  assert.equal(la.counters[C.tx_packets], 1);
  settle(b);
  assert.equal(pb.sent.length, 1);
  assert.deepEqual(pb.sent[0], frame(0xff, 1, 0xa1, 1500));
  assert.equal(lb.counters[C.rx_packets], 1);
  assert.equal(b.bridges.get(1)!.fdb.lookup(0x020000000001, 0, 0), lb.index);
  // The answer goes straight back through the link (known on b), and a learns b's station there.
  pb.inbox.push(frame(1, 2, 0xb2));
  b.poll(pb, 0);
  settle(a);
  assert.equal(pa.sent.length, 1);
  assert.equal(b.pool.lent, 0);
  assert.equal(a.bridges.get(1)!.fdb.lookup(0x020000000002, 0, 0), la.index);
});

test('split horizon: what arrives on a link never leaves on a link', () => {
  const { a, b, pa, lb } = twoEngines();
  settle(a, b);
  // b learns station 1 on the link; a frame for station 1 that comes in on the link is not sent back.
  pa.inbox.push(frame(0xff, 1, 1));
  a.poll(pa, 0);
  settle(b);
  pa.inbox.push(frame(1, 1, 2)); // to itself: a drops it as a hairpin, nothing crosses
  a.poll(pa, 0);
  settle(b);
  assert.equal(lb.counters[C.tx_packets], 0);
  assert.equal(lb.counters[C.rx_packets], 1);
});

test('wake-ups: a drained consumer asks for one, the producer gives it once per publish', () => {
  const { a, b, pa, la, lb } = twoEngines();
  settle(a, b);
  assert.ok(linkWakeAsked(new Int32Array((la as unknown as { tx: { words: Int32Array } }).tx.words.buffer)));
  for (let round = 1; round <= 3; round++) {
    pa.inbox.push(frame(0xff, 1, round));
    a.poll(pa, 0);
    assert.equal(la.counters[C.notify_sent], round);
    settle(b);
    assert.equal(lb.counters[C.rx_packets], round);
  }
});

test('a full ring drops and counts at the producer; the consumer takes bursts of 32 and frees slots after each', () => {
  const { a, b, pa, pb, la } = twoEngines();
  settle(a, b);
  const words = new Int32Array((la as unknown as { tx: { words: Int32Array } }).tx.words.buffer);
  // The pool has 64 buffers: feed the ring in rounds without letting b run.
  let fed = 0;
  while (fed < LINK_SLOTS + 40) {
    for (let i = 0; i < 32; i++) pa.inbox.push(frame(0xff, 1, fed++ & 0xff));
    a.poll(pa, 0);
  }
  assert.equal(linkWaiting(words), LINK_SLOTS);
  assert.equal(la.counters[C.tx_dropped_full], fed - LINK_SLOTS);
  b.poll(b.ports[11]!, 0);
  assert.equal(linkWaiting(words), LINK_SLOTS - 32);
  settle(b);
  assert.equal(linkWaiting(words), 0);
  assert.equal(pb.sent.length, LINK_SLOTS);
  // In order: the fill byte counts up.
  pb.sent.forEach((f, i) => assert.equal(f[20], i & 0xff));
});
