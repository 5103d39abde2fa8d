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
import type { PacketPool } from '../../dataplane/pool.ts';
import type { PortGuard } from '../../dataplane/port-guard.ts';
import { Port } from '../../dataplane/port.ts';
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

/**
 * An output on the bridge that keeps what it is handed and, when `rewrite` is set, acts as the
 * sending guest's second vCPU: it rewrites the frame in the guest's buffer while the burst is
 * still being forwarded (after the pop, before the next output copies it).
 */
class RacingSink extends Port {
  readonly fds: readonly number[] = [];
  readonly got: number[][] = [];
  readonly hdrs: number[][] = [];
  rewrite: (() => void) | null = null;
  constructor(index: number, pool: PacketPool, bridge = 1) {
    super(index, `sink${index}`, bridge, newCounters(), pool, true, true);
    this.rxOffloads = false;
  }
  receive(): number {
    return 0;
  }
  transmit(q: Int32Array, n: number): void {
    for (let i = 0; i < n; i++) {
      const h = q[i]!;
      assert.equal(this.pool.isExternal(h), false, 'a port that does not judge is handed a judged pool copy');
      this.got.push([...this.pool.bytes.subarray(this.pool.frameOffset(h), this.pool.frameOffset(h) + this.pool.len[h]!)]);
      this.hdrs.push([...this.pool.bytes.subarray(this.pool.hdrOffset(h), this.pool.frameOffset(h))]);
      this.pool.release(h);
    }
    this.rewrite?.();
  }
  close(): void {}
}

describe('a secured vhost-user port lends its frames unjudged; each output judges the copy it makes (the guest could rewrite a lent frame until then)', () => {
  // Bridge 1: dev (secured, its guest is pier's driver drv), a sink, and dev2 (whose guest is
  // drv2). drv sends; what reaches the sink and drv2 is what each output copied and judged.
  // `dev2First`: dev2 is flushed before the sink. `seen2` records what drv2's guest received (the
  // only other member of bridge 3).
  function rig(dev2First = false): { engine: Engine; pool: PacketPool; dev: VhostUserPort; drv: VirtioUserPort; sink: RacingSink; seen2: RacingSink; dev2: VhostUserPort; drv2Counters: Float64Array; devCounters: Float64Array; close: () => void } {
    const engine = new Engine(256, undefined, () => {});
    engine.addBridge(1, 'br');
    engine.addBridge(2, 'drv');
    engine.addBridge(3, 'drv2');
    const pool = engine.pool;
    const paths = [0, 1].map(() => join(dir, `s${Math.random().toString(36).slice(2)}.sock`));
    const fds = paths.map((path) => listenVhostUser(path));
    const devCounters = newCounters();
    const dev = new VhostUserPort(1, 'dev', 1, devCounters, pool, { path: paths[0]!, server: true, listenFd: fds[0]!, queuePairs: 1, mtu: 0, maxQueueSize: 32768, busyPoll: false, requireSealedMemory: false, packed: false });
    const drv = new VirtioUserPort(2, 'drv', 2, newCounters(), pool, { backend: 'vhost-user', path: paths[0]!, server: false, listenFd: -1, queueSize: 64, queuePairs: 1, packed: false, vhostFds: [], tapFds: [] });
    const sink = new RacingSink(3, pool);
    const dev2 = new VhostUserPort(4, 'dev2', 1, newCounters(), pool, { path: paths[1]!, server: true, listenFd: fds[1]!, queuePairs: 1, mtu: 0, maxQueueSize: 32768, busyPoll: false, requireSealedMemory: false, packed: false });
    const drv2Counters = newCounters();
    const drv2 = new VirtioUserPort(5, 'drv2', 3, drv2Counters, pool, { backend: 'vhost-user', path: paths[1]!, server: false, listenFd: -1, queueSize: 64, queuePairs: 1, packed: false, vhostFds: [], tapFds: [] });
    engine.addPort(dev);
    engine.addPort(drv);
    const seen2 = new RacingSink(6, pool, 3);
    if (!dev2First) engine.addPort(sink);
    engine.addPort(dev2);
    if (dev2First) engine.addPort(sink);
    engine.addPort(drv2);
    engine.addPort(seen2);
    engine.setSecurity(1, { secured: { macs: ['02:00:00:00:00:09'], addresses: [{ ip: '198.18.0.1' }], own: true }, macLimit: 0, stormLimit: 0 });
    linkUp(engine, dev, drv);
    linkUp(engine, dev2, drv2);
    return {
      engine, pool, dev, drv, sink, seen2, dev2, drv2Counters, devCounters,
      close: () => {
        for (const i of [6, 5, 4, 3, 2, 1]) engine.removePort(i);
        fds.forEach((fd, k) => closeListener(fd, paths[k]!));
      },
    };
  }

  /** A broadcast UDP frame from 02:00:00:00:00:09, source `src` (its last byte), in a pool buffer for drv to send. */
  function udp(pool: PacketPool, src: number): number {
    const h = pool.alloc();
    const fo = pool.frameOffset(h);
    pool.bytes.fill(0, pool.hdrOffset(h), fo + 64);
    pool.bytes.fill(0xff, fo, fo + 6);
    pool.bytes.set([2, 0, 0, 0, 0, 9, 8, 0, 0x45, 0, 0, 50, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, src, 198, 18, 0, 255, 0x04, 0xd2, 0x16, 0x2e, 0, 30], fo + 6);
    pool.len[h] = 64;
    return h;
  }

  test('lent while it is forwarded; what each output gets is a copy judged before any rewrite; a forged copy reaches no one and is counted once', () => {
    const { engine, pool, drv, sink, seen2, devCounters, close } = rig();
    try {
      // A frame of the guest's own: both outputs get it, and it was lent, not copied, on the way in.
      let lentSeen = false;
      sink.rewrite = () => {
        lentSeen ||= pool.lent > 0;
      };
      drv.transmit(Int32Array.of(udp(pool, 1)), 1);
      assert.ok(turnUntil(engine, () => seen2.got.length === 1 && sink.got.length === 1), 'both outputs got the frame');
      assert.ok(lentSeen, 'the frame stayed in the guest\'s buffer while the burst was forwarded');
      assert.equal(sink.got[0]![29], 1, 'the sink got the source the guest sent');

      // The guest rewrites its buffer (driver handle h: this driver sends pier's own pool buffer)
      // after the sink's copy was judged, before dev2 copies it: dev2 takes the copy that was
      // judged (one verdict per frame), not the rewrite.
      const h = udp(pool, 1);
      const at = pool.frameOffset(h) + 29;
      sink.rewrite = () => {
        pool.bytes[at] = 66;
      };
      drv.transmit(Int32Array.of(h), 1);
      assert.ok(turnUntil(engine, () => seen2.got.length === 2 && sink.got.length === 2));
      sink.rewrite = null;
      assert.equal(sink.got[1]![29], 1);
      assert.equal(seen2.got[1]![29], 1, 'dev2\'s guest got the judged copy, not the rewrite');
      assert.equal(devCounters[C.rx_dropped_spoofed_ip], 0, 'nothing forged was sent anywhere');

      // Forged from the start, flooded to both outputs: neither gets it, one drop is counted.
      drv.transmit(Int32Array.of(udp(pool, 77)), 1);
      assert.ok(turnUntil(engine, () => devCounters[C.rx_dropped_spoofed_ip]! === 1));
      turnUntil(engine, () => false, 50);
      assert.equal(devCounters[C.rx_dropped_spoofed_ip], 1, 'one count for the frame, not one per output');
      assert.equal(sink.got.length, 2);
      assert.equal(seen2.got.length, 2);

      // And the guest's own again: it still goes.
      drv.transmit(Int32Array.of(udp(pool, 1)), 1);
      assert.ok(turnUntil(engine, () => seen2.got.length === 3 && sink.got.length === 3));
      assert.equal(pool.lent, 0);
    } finally {
      close();
    }
  });

  test('a rewrite after one output copied the frame, before the first pool copy, reaches no later output and is counted', () => {
    const { engine, pool, dev, drv, sink, seen2, devCounters, close } = rig(true);
    try {
      drv.transmit(Int32Array.of(udp(pool, 1)), 1); // warms the fast path: the next copy into dev2's guest passes by it
      assert.ok(turnUntil(engine, () => seen2.got.length === 1 && sink.got.length === 1));
      const guard = dev.guard as PortGuard;
      const copyJudged = guard.copyJudged.bind(guard);
      const h = udp(pool, 1);
      const at = pool.frameOffset(h) + 29;
      guard.copyJudged = (b: Uint8Array, w: Int32Array, dst: number, src: number, bytes: number): boolean => {
        const verdict = copyJudged(b, w, dst, src, bytes);
        if (pool.handleAt(dst) < 0) pool.bytes[at] = 66; // as dev2 judges its copy, the sender rewrites its buffer
        return verdict;
      };
      drv.transmit(Int32Array.of(h), 1);
      assert.ok(turnUntil(engine, () => seen2.got.length === 2 && devCounters[C.rx_dropped_spoofed_ip]! === 1));
      assert.equal(seen2.got[1]![29], 1, 'dev2\'s guest got what was there when it was copied and judged');
      turnUntil(engine, () => false, 50);
      assert.equal(sink.got.length, 1, 'the sink, flushed after, got nothing: the copy made for it was the rewrite');
      assert.equal(guard.lastDrop()?.detail, '198.18.0.66');
    } finally {
      close();
    }
  });

  test('the receiving guest writing its own buffer as pier copies into it refuses nothing of the sender\'s and blames no one', () => {
    const { engine, pool, dev, drv, sink, seen2, dev2, devCounters, close } = rig(true);
    try {
      drv.transmit(Int32Array.of(udp(pool, 1)), 1); // warms the fast path: dev2's copy is judged by it
      assert.ok(turnUntil(engine, () => seen2.got.length === 1 && sink.got.length === 1));
      const guard = dev.guard as PortGuard;
      const copyJudged = guard.copyJudged.bind(guard);
      const passesAt = guard.passesAt.bind(guard);
      // What dev2's guest writes into its receive buffer, where pier copies the frame, as pier
      // judges it: once copyJudged() returned, or before the read-back passesAt().
      let write: ((at: number) => void) | null = null;
      let copied = 0;
      let readBack = 0;
      guard.copyJudged = (b: Uint8Array, w: Int32Array, dst: number, src: number, bytes: number): boolean => {
        const verdict = copyJudged(b, w, dst, src, bytes);
        if (pool.handleAt(dst) < 0) { // the receiver's mapping, not a pool copy
          copied++;
          write?.(dst);
        }
        return verdict;
      };
      guard.passesAt = (w: Int32Array, i: number, flen: number): boolean => {
        if (pool.handleAt(4 * i) < 0) {
          readBack++;
          write?.(4 * i);
        }
        return passesAt(w, i, flen);
      };
      const noBlame = (): void => {
        assert.equal(devCounters[C.rx_dropped_spoofed_ip], 0, 'the sender is not blamed');
        assert.equal(devCounters[C.rx_dropped_bad_offload], 0);
        assert.equal(dev2.counters[C.tx_dropped_bad_gso], 0, 'nor the receiver');
      };

      // 1. After the verdict on what pier wrote: the receiver reads its own write; nobody else is affected.
      write = (at) => {
        pool.bytes[at + 12 + 29] = 66;
      };
      drv.transmit(Int32Array.of(udp(pool, 1)), 1);
      assert.ok(turnUntil(engine, () => seen2.got.length === 2 && sink.got.length === 2), 'both outputs got the frame');
      assert.equal(copied, 1);
      assert.equal(sink.got[1]![29], 1, 'the other output got the sender\'s frame');
      assert.equal(seen2.got[1]![29], 66, 'dev2\'s guest reads what it wrote itself');
      noBlame();

      // 2. Its header rewritten to ask for what dev2's guest does not take (UDP fragmentation
      // offload): the header check on its buffer fails, and it gets the sender's frame, judged
      // on a pool copy.
      write = (at) => {
        pool.bytes[at + 1] = 3; // gso_type UDP
        pool.bytes[at + 4] = 100;
      };
      drv.transmit(Int32Array.of(udp(pool, 1)), 1);
      assert.ok(turnUntil(engine, () => seen2.got.length === 3 && sink.got.length === 3));
      assert.equal(copied, 2);
      assert.equal(seen2.got[2]![29], 1, 'dev2\'s guest got the sender\'s frame, copied again');
      assert.equal(seen2.hdrs[2]![1], 0, 'with the sender\'s header');
      noBlame();

      // 3. A frame too long to be judged as it is copied (300 bytes): copyWithin, then the
      // verdict read back from the receiver's buffer, which it has just rewritten.
      write = (at) => {
        pool.bytes[at + 12 + 29] = 66;
      };
      const long = udp(pool, 1);
      pool.bytes.fill(0, pool.frameOffset(long) + 64, pool.frameOffset(long) + 300);
      pool.len[long] = 300;
      drv.transmit(Int32Array.of(long), 1);
      assert.ok(turnUntil(engine, () => seen2.got.length === 4 && sink.got.length === 4));
      assert.equal(readBack, 1, 'the read-back verdict ran on the receiver\'s buffer');
      assert.equal(seen2.got[3]![29], 1, 'its failure sent dev2\'s guest the sender\'s frame');
      assert.equal(seen2.got[3]!.length, 300);
      noBlame();
    } finally {
      close();
    }
  });

  test('a deferred frame\'s virtio-net header is checked on the copy: a checksum request aimed at its own source port, DATA_VALID, a gso_size of 1', () => {
    const { engine, pool, drv, sink, drv2Counters, devCounters, close } = rig();
    try {
      const rx2 = (): number => drv2Counters[C.rx_packets]!;
      const send = (h: number, hdr: number[]): void => {
        pool.bytes.set(hdr, pool.hdrOffset(h));
        drv.transmit(Int32Array.of(h), 1);
      };
      // NEEDS_CSUM | DATA_VALID, csum_start 34, csum_offset 0: whoever completes the checksum
      // would write the UDP source port (a DHCP server's 67, with the right payload).
      send(udp(pool, 1), [0x03, 0, 0, 0, 0, 0, 34, 0, 0, 0, 0, 0]);
      assert.ok(turnUntil(engine, () => devCounters[C.rx_dropped_unjudgeable]! === 1), 'refused as unjudgeable');
      // DATA_VALID alone on the guest's own frame: it goes, the flag cleared.
      send(udp(pool, 1), [0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
      assert.ok(turnUntil(engine, () => sink.got.length === 1 && rx2() === 1));
      assert.equal(sink.hdrs[0]![0], 0, 'no flag but NEEDS_CSUM reaches an output');
      // TCP segmentation with a gso_size of 1 (a 64 KiB frame would be 65 535 segments).
      const t = udp(pool, 1);
      const fo = pool.frameOffset(t);
      pool.bytes[fo + 23] = 6; // TCP
      pool.bytes[fo + 46] = 0x50; // data offset 5
      send(t, [0x01, 1, 0, 0, 1, 0, 34, 0, 16, 0, 0, 0]);
      assert.ok(turnUntil(engine, () => devCounters[C.rx_dropped_bad_offload]! === 1), 'refused for its gso_size');
      turnUntil(engine, () => false, 50);
      assert.equal(sink.got.length, 1, 'the refused frames reached no output');
      assert.equal(rx2(), 1);
      assert.equal(devCounters[C.rx_dropped_unjudgeable], 1);
      assert.equal(pool.lent, 0);
    } finally {
      close();
    }
  });

  test('a deferred frame\'s bad header is its sender\'s drop, also where a vhost-user output\'s fast path copied it', () => {
    const { engine, pool, drv, seen2, dev2, devCounters, close } = rig();
    try {
      engine.bridges.get(1)!.fdb.addStatic(0x020000000077, 4, 0); // 02:00:00:00:00:77 is behind dev2: unicast goes there only
      drv.transmit(Int32Array.of(udp(pool, 1)), 1); // warms the fast path
      assert.ok(turnUntil(engine, () => seen2.got.length === 1));
      // TCP segmentation with gso_size 1, to dev2 (whose guest takes TSO): the fast path passes
      // the copy in dev2's guest's buffer, whose header check then refuses it.
      const t = udp(pool, 1);
      const fo = pool.frameOffset(t);
      pool.bytes.set([2, 0, 0, 0, 0, 0x77], fo);
      pool.bytes[fo + 23] = 6; // TCP
      pool.bytes[fo + 46] = 0x50; // data offset 5
      pool.bytes.set([0x01, 1, 0, 0, 1, 0, 34, 0, 16, 0, 0, 0], pool.hdrOffset(t));
      drv.transmit(Int32Array.of(t), 1);
      assert.ok(turnUntil(engine, () => devCounters[C.rx_dropped_bad_offload]! === 1), 'counted on the sender');
      assert.equal(dev2.counters[C.tx_dropped_bad_gso], 0, 'not on the receiver');
      assert.equal(seen2.got.length, 1);
    } finally {
      close();
    }
  });

  test('once a copy of a frame was refused, no output sends it, even rewritten clean', () => {
    const { engine, pool, dev, drv, sink, seen2, devCounters, close } = rig();
    try {
      drv.transmit(Int32Array.of(udp(pool, 1)), 1);
      assert.ok(turnUntil(engine, () => seen2.got.length === 1 && sink.got.length === 1));
      const guard = dev.guard as PortGuard;
      const passesAt = guard.passesAt.bind(guard);
      const h = udp(pool, 77);
      const at = pool.frameOffset(h) + 29;
      guard.passesAt = (w: Int32Array, i: number, flen: number): boolean => {
        const verdict = passesAt(w, i, flen);
        if (pool.handleAt(4 * i) >= 0) pool.bytes[at] = 1; // once the sink's copy is judged, the sender makes its frame clean
        return verdict;
      };
      drv.transmit(Int32Array.of(h), 1);
      assert.ok(turnUntil(engine, () => devCounters[C.rx_dropped_spoofed_ip]! === 1));
      turnUntil(engine, () => false, 50);
      assert.equal(sink.got.length, 1);
      assert.equal(seen2.got.length, 1, 'dev2 did not send the rewrite: one verdict per frame');
    } finally {
      close();
    }
  });

  test('the bridge learns no MAC from a secured port that the port may not send from', () => {
    const { engine, pool, drv, sink, devCounters, close } = rig();
    try {
      const h = udp(pool, 1);
      pool.bytes[pool.frameOffset(h) + 11] = 0x0a; // 02:00:00:00:00:0a, not the port's
      drv.transmit(Int32Array.of(h), 1);
      assert.ok(turnUntil(engine, () => devCounters[C.rx_dropped_spoofed_mac]! === 1));
      assert.equal(sink.got.length, 0);
      assert.equal(engine.bridges.get(1)!.fdb.heldBy(1), 0, 'nothing learned on the secured port');
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
