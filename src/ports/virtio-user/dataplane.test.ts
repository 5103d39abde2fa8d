// A virtio-user port driving pier's own vhost-user port, both in one engine in this process (as
// in the daemon, where the dataplane thread runs both ends), on a 64-buffer pool small enough to
// run dry on purpose: the pool limits, and housekeeping, which reclaims what the backend has
// sent and refills a receive ring that the pool left empty.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { C, newCounters } from '../../dataplane/counters.ts';
import { Engine } from '../../dataplane/engine.ts';
import { PortGuard } from '../../dataplane/port-guard.ts';
import { listenVhostUser, closeListener } from '../vhost-user/control.ts';
import { BUSY_POLL_SPIN, VhostUserPort } from '../vhost-user/dataplane.ts';
import { VirtioUserPort } from './dataplane.ts';

interface Peer { link: string; ring: string; rxPosted: number; txInFlight: number; rxPostLimit: number; txHoldLimit: number }

const dir = mkdtempSync(join(tmpdir(), 'pier-vu-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function setUpRings(poolSize: number, queueSize: number, packed = false, busyPoll = false): { engine: Engine; dev: VhostUserPort; drv: VirtioUserPort; drvCounters: Float64Array; close: () => void } {
  const engine = new Engine(poolSize, undefined, () => {});
  engine.addBridge(1, 'dev');
  engine.addBridge(2, 'drv');
  const path = join(dir, `s${Math.random().toString(36).slice(2)}.sock`);
  const listenFd = listenVhostUser(path);
  const dev = new VhostUserPort(1, 'dev', 1, newCounters(), engine.pool, { path, server: true, listenFd, queuePairs: 1, mtu: 0, maxQueueSize: 32768, busyPoll, requireSealedMemory: false, packed: true });
  const drvCounters = newCounters();
  const drv = new VirtioUserPort(2, 'drv', 2, drvCounters, engine.pool, {
    backend: 'vhost-user', path, server: false, listenFd: -1, queueSize, queuePairs: 1, packed, vhostFds: [], tapFds: [],
  });
  engine.addPort(dev);
  engine.addPort(drv);
  return {
    engine, dev, drv, drvCounters,
    close: () => {
      engine.removePort(2);
      engine.removePort(1);
      closeListener(listenFd, path);
    },
  };
}

/** Run engine turns (each waiting up to 5 ms) until `done` or the deadline. */
function turnUntil(engine: Engine, done: () => boolean, ms = 2000): boolean {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (done()) return true;
    engine.turn(5);
  }
  return done();
}

/** A broadcast frame of 60 bytes in a fresh pool buffer (the bridge floods it; nobody to flood to). */
function frame(engine: Engine, tag: number): number {
  const pool = engine.pool;
  const h = pool.alloc();
  assert.ok(h >= 0);
  const fo = pool.frameOffset(h);
  pool.bytes.fill(0, pool.hdrOffset(h), fo + 60);
  pool.bytes.fill(0xff, fo, fo + 6);
  pool.bytes.set([2, 0, 0, 0, 0, 9, 0x88, 0xb5, tag], fo + 6);
  pool.len[h] = 60;
  return h;
}

/** Turn the engine until both ends are up; returns a reader of the driver's view. */
function linkUp(engine: Engine, dev: { describe(): unknown }, drv: { describe(): unknown }): () => Peer {
  const peer = (): Peer => drv.describe() as Peer;
  const devUp = (): boolean => (dev.describe() as { queuePairs: { enabled: number } }).queuePairs.enabled === 1;
  assert.ok(turnUntil(engine, () => peer().link === 'up' && peer().rxPosted > 0 && devUp()), 'link up on both ends');
  return peer;
}

for (const ring of ['split', 'packed'] as const) describe(`virtio-user port on a small pool (driving pier's own vhost-user port in-process, ${ring} rings)`, () => {
  const setUp = (poolSize: number, queueSize: number): ReturnType<typeof setUpRings> => setUpRings(poolSize, queueSize, ring === 'packed');

  test('posts at most an eighth of the pool; a receive ring the pool left empty is refilled by housekeeping', () => {
    const { engine, dev, drv, drvCounters, close } = setUp(64, 64);
    try {
      const peer = linkUp(engine, dev, drv);
      assert.equal(peer().ring, ring);
      assert.equal((dev.describe() as { ring: string }).ring, ring, 'both ends agree on the layout');
      const pool = engine.pool;
      assert.equal(peer().rxPostLimit, 8, 'an eighth of a 64-buffer pool, below the 64-entry ring');
      assert.equal(peer().rxPosted, 8);
      assert.equal(pool.available(), 56);
      // Take the pool down to its half (32) with frames for the device to send and buffers held
      // here, so the driver's refill after receiving them is cut short.
      const frames = new Int32Array(8);
      for (let i = 0; i < 8; i++) frames[i] = frame(engine, i);
      const held: number[] = [];
      while (pool.available() > 24) held.push(pool.alloc());
      // The device copies the 8 frames into the driver's 8 posted buffers and releases them.
      dev.transmit(frames, 8);
      assert.equal(pool.available(), 32);
      const received = drvCounters[C.rx_packets]!;
      assert.ok(turnUntil(engine, () => drvCounters[C.rx_packets]! === received + 8), 'the 8 frames arrive');
      assert.equal(peer().rxPosted, 0, 'every posted buffer was used and the pool was at its half: nothing posted');
      assert.ok(drvCounters[C.rx_post_short]! >= 1, 'the short refill is counted');
      assert.ok(drvCounters[C.rx_ring_empty]! >= 1, 'the backend had no buffer left');
      // The pool recovers. Nothing can arrive on an empty ring, so only housekeeping refills it.
      for (const h of held) pool.release(h);
      assert.ok(turnUntil(engine, () => peer().rxPosted === 8, 500), `refilled by housekeeping (posted ${peer().rxPosted})`);
      assert.equal(pool.available() + peer().rxPosted, 64, 'no buffer lost');
    } finally {
      close();
    }
  });

  test('sent buffers come back to the pool while the port is quiet; the transmit rings hold at most an eighth of the pool', () => {
    const { engine, dev, drv, drvCounters, close } = setUp(64, 64);
    try {
      const peer = linkUp(engine, dev, drv);
      const pool = engine.pool;
      assert.equal(peer().txHoldLimit, 8);
      // 12 frames in one burst: the ring has room for 64, the port may hold 8; the rest is
      // dropped as on a full ring.
      const q = new Int32Array(12);
      for (let i = 0; i < 12; i++) q[i] = frame(engine, i);
      drv.transmit(q, 12);
      assert.equal(drvCounters[C.tx_packets], 8);
      assert.equal(drvCounters[C.tx_dropped_full], 4);
      assert.equal(peer().txInFlight, 8);
      // The device takes them (its transmitq kick) and nothing else is sent: housekeeping, not a
      // next transmit, gives the buffers back.
      assert.ok(turnUntil(engine, () => peer().txInFlight === 0, 500), `reclaimed (in flight ${peer().txInFlight})`);
      assert.equal(pool.available() + peer().rxPosted, 64, 'no buffer lost');
      assert.equal(drv.timerAt, 0, 'housekeeping stops once nothing is held');
    } finally {
      close();
    }
  });

  test('frames both ways over many laps of a 64-entry ring, contents intact, nothing broken or lost', () => {
    const { engine, dev, drv, drvCounters, close } = setUp(512, 64);
    try {
      const peer = linkUp(engine, dev, drv);
      const pool = engine.pool;
      const devCounters = (dev as unknown as { counters: Float64Array }).counters;
      const burst = new Int32Array(8);
      for (let round = 0; round < 50; round++) {
        const rx = drvCounters[C.rx_packets]!;
        for (let i = 0; i < 8; i++) burst[i] = frame(engine, (round * 8 + i) & 0xff);
        dev.transmit(burst, 8);
        assert.ok(turnUntil(engine, () => drvCounters[C.rx_packets]! === rx + 8), `round ${round}: 8 frames reach the driver`);
        const txDev = devCounters[C.rx_packets]!;
        for (let i = 0; i < 8; i++) burst[i] = frame(engine, i);
        drv.transmit(burst, 8);
        assert.ok(turnUntil(engine, () => devCounters[C.rx_packets]! === txDev + 8), `round ${round}: 8 frames reach the device`);
      }
      assert.equal(drvCounters[C.rx_packets], 400);
      assert.equal(devCounters[C.rx_packets], 400, '400 descriptors through a 64-entry transmitq: six laps');
      assert.equal(devCounters[C.rx_errors], 0);
      assert.equal(drvCounters[C.rx_dropped_malformed], 0);
      assert.ok(turnUntil(engine, () => peer().txInFlight === 0, 500));
      assert.equal(pool.available() + peer().rxPosted, 512, 'no buffer lost');
    } finally {
      close();
    }
  });
});

describe('a secured vhost-user port copies what it pops (the driver could rewrite a lent frame after the check)', () => {
  test('unsecured, the frame is lent where it lies; secured, it is a pool copy the driver cannot reach', () => {
    const { engine, dev, drv, close } = setUpRings(64, 64);
    try {
      linkUp(engine, dev, drv);
      const pool = engine.pool;
      const out = new Int32Array(32);
      const guard = new PortGuard({ macs: ['02:00:00:00:00:09'], addresses: [{ ip: '198.18.0.1' }], trunk: false });
      for (const secured of [false, true]) {
        dev.guard = secured ? guard : null;
        const h = frame(engine, 1);
        const fo = pool.frameOffset(h);
        pool.bytes.set([8, 0, 0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2], fo + 12); // UDP from 198.18.0.1
        drv.transmit(Int32Array.of(h), 1);
        const n = dev.receive(1, out, 32); // the transmitq of pair 0, read as the engine would
        assert.equal(n, 1);
        const got = out[0]!;
        assert.equal(pool.isExternal(got), !secured, secured ? 'a pool buffer of its own' : 'lent from the driver\'s buffer');
        if (secured) {
          // The driver rewrites its buffer after the pop (when it lent pier's own pool buffer,
          // as this driver does, that is h): what the guard will judge does not change.
          pool.bytes[fo + 26] = 10;
          assert.equal(pool.bytes[pool.frameOffset(got) + 26], 198, 'the copy keeps the source the driver sent');
          const batch = Int32Array.of(got);
          const counters = newCounters();
          assert.equal(guard.filter(pool, batch, 1, counters), 1, 'the copy passes the guard');
          pool.release(batch[0]!);
        } else {
          pool.release(got);
        }
        dev.afterBurst(1);
        assert.equal(pool.lent, 0);
      }
      dev.guard = null;
    } finally {
      close();
    }
  });
});

describe('busy-poll=on on the vhost-user end: poll while there is traffic, sleep when idle', () => {
  /** Empty polls the engine makes after a burst from the driver, until it would sleep. */
  function emptyPollsAfterTraffic(busyPoll: boolean): number {
    const { engine, dev, drv, close } = setUpRings(256, 64, false, busyPoll);
    try {
      linkUp(engine, dev, drv);
      const q = new Int32Array(4);
      for (let i = 0; i < 4; i++) q[i] = frame(engine, i);
      const got = dev.counters[C.rx_packets]!;
      drv.transmit(q, 4);
      assert.ok(turnUntil(engine, () => dev.counters[C.rx_packets]! === got + 4, 500), 'the device received the burst');
      const e0 = engine.emptyPolls;
      for (let i = 0; i < 4 * BUSY_POLL_SPIN; i++) engine.turn(0);
      const spun = engine.emptyPolls - e0;
      // Idle now: more turns find nothing to poll.
      const e1 = engine.emptyPolls;
      for (let i = 0; i < 100; i++) engine.turn(0);
      assert.equal(engine.emptyPolls, e1, 'the port sleeps on its kicks once the spin is over');
      // And a kick still wakes it.
      const q2 = new Int32Array([frame(engine, 9)]);
      drv.transmit(q2, 1);
      assert.ok(turnUntil(engine, () => dev.counters[C.rx_packets]! === got + 5, 500), 'a frame sent after the spin arrives (kick)');
      return spun;
    } finally {
      close();
    }
  }

  test(`a transmitq that ran dry is polled ${BUSY_POLL_SPIN} more times, then waits for kicks; without busy-poll it waits at once`, () => {
    const busy = emptyPollsAfterTraffic(true);
    // One poll per turn (not one more per turn: the kick that woke it is cleared, and a queue is
    // in the engine's list once), BUSY_POLL_SPIN of them.
    assert.ok(busy >= BUSY_POLL_SPIN - 2 && busy <= BUSY_POLL_SPIN + 2, `busy-poll: ${busy} empty polls after the burst`);
    const dflt = emptyPollsAfterTraffic(false);
    assert.ok(dflt <= 4, `event-driven: ${dflt} empty polls after the burst`);
  });
});
