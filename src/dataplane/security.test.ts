// Port security in the engine: a secured port's burst is checked before the bridge, its MACs are
// static entries no other port moves, learning stops at a port's limit, and a port's floods stop
// at its storm limit (docs/design/port-security.md).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { C } from './counters.ts';
import { BURST, Engine } from './engine.ts';
import { EventFd } from '../sys/index.ts';
import type { SecurityConfig } from './security.ts';
import type { PortContext } from './port.ts';
import { WirePort } from './wire-port.test-util.ts';

/** A WirePort whose queue 0 is an fd it asks the engine to watch (as vhost-user watches its kick eventfds). */
class WatchPort extends WirePort {
  readonly ev = new EventFd();
  ctx: PortContext | undefined;
  override attach(ctx: PortContext): void {
    this.ctx = ctx;
    ctx.watch(this, this.ev.fd, 0);
  }
}

/** A WirePort whose queue 0 has an fd the engine polls (an eventfd, kept readable). */
class FdPort extends WirePort {
  readonly ev = new EventFd();
  override readonly fds: readonly number[] = [this.ev.fd];
}

const A = [2, 0, 0, 0, 0, 0xa];
const B = [2, 0, 0, 0, 0, 0xb];
const X = [2, 0, 0, 0, 0, 0xee];
const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

/** An IPv4/UDP frame from (mac, ip) to (dst mac, ip), 60 bytes, marker byte at 42. */
function udp(dst: number[], src: number[], sip: number[], dip: number[], marker = 0): Uint8Array {
  const f = new Uint8Array(60);
  f.set(dst, 0);
  f.set(src, 6);
  f.set([0x08, 0x00, 0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0], 12);
  f.set(sip, 26);
  f.set(dip, 30);
  f.set([0x30, 0x39, 0x30, 0x39, 0, 26, 0, 0], 34);
  f[42] = marker;
  return f;
}

function rig(securities: Array<SecurityConfig | undefined>): { engine: Engine; ports: WirePort[]; send: (i: number, ...f: Uint8Array[]) => void } {
  const engine = new Engine(256, undefined, () => {});
  engine.addBridge(1, 'br');
  const ports = securities.map((s, i) => {
    const p = new WirePort(i + 1, engine.pool);
    engine.addPort(p, undefined, s);
    return p;
  });
  return {
    engine, ports,
    send(i, ...f) {
      ports[i]!.inbox.push(...f);
      while (ports[i]!.inbox.length > 0) engine.poll(ports[i]!, 0);
    },
  };
}

const secured = (mac: number[], ip: string): SecurityConfig => ({
  secured: { own: true, macs: [mac.map((x) => x.toString(16).padStart(2, '0')).join(':')], addresses: [{ ip }] }, macLimit: 1, stormLimit: 0,
});

describe('port security in the engine', () => {
  test('a secured port forwards what it may send and drops a forged source, counted; the pool gets every buffer back', () => {
    const r = rig([secured(A, '10.0.0.1'), undefined]);
    const free = r.engine.pool.available();
    r.send(0, udp(BCAST, A, [10, 0, 0, 1], [10, 0, 0, 2], 1), udp(BCAST, B, [10, 0, 0, 1], [10, 0, 0, 2], 2), udp(BCAST, A, [10, 0, 0, 9], [10, 0, 0, 2], 3));
    assert.deepEqual(r.ports[1]!.sent.map((f) => f[42]), [1], 'only the frame from its own MAC and IP');
    assert.equal(r.ports[0]!.counters[C.rx_dropped_spoofed_mac], 1);
    assert.equal(r.ports[0]!.counters[C.rx_dropped_spoofed_ip], 1);
    assert.equal(r.engine.pool.available(), free);
  });

  test("a secured port's MAC is static: another port sending from it does not take its traffic", () => {
    const r = rig([secured(A, '10.0.0.1'), undefined, undefined]);
    r.send(2, udp(BCAST, A, [10, 0, 0, 1], [10, 0, 0, 2], 7)); // the attacker, unsecured, forges A
    assert.equal(r.ports[2]!.counters[C.fdb_move_refused], 1);
    r.send(1, udp(A, B, [10, 0, 0, 2], [10, 0, 0, 1], 8)); // B to A
    assert.deepEqual(r.ports[0]!.sent.map((f) => f[42]), [7, 8], 'A gets the broadcast and its own unicast');
    assert.deepEqual(r.ports[2]!.sent.map((f) => f[42]), [], 'the attacker gets nothing for A');
    const fdb = r.engine.bridges.get(1)!.fdb.entries(0);
    assert.ok(fdb.some((e) => e.mac === '02:00:00:00:00:0a' && e.port === 1 && e.static === true), JSON.stringify(fdb));
  });

  test('mac-limit: a flood of sources fills only its own share; a port attached later is learned and not flooded to the flooder', () => {
    const r = rig([{ secured: null, macLimit: 16, stormLimit: 0 }, undefined, undefined]);
    for (let k = 0; k < 200; k++) r.send(0, udp(BCAST, [2, 1, 0, 0, k >> 8, k & 0xff], [10, 0, 1, 1], [10, 0, 0, 2]));
    const br = r.engine.bridges.get(1)!;
    assert.equal(br.fdb.heldBy(1), 16);
    assert.equal(r.ports[0]!.counters[C.fdb_limit], 184);
    r.send(1, udp(BCAST, B, [10, 0, 0, 2], [10, 0, 0, 3], 0)); // B speaks: learned
    r.ports[0]!.sent.length = 0;
    r.send(2, udp(B, X, [10, 0, 0, 3], [10, 0, 0, 2], 9)); // to B: unicast, not flooded
    assert.deepEqual(r.ports[1]!.sent.filter((f) => f[42] === 9).length, 1);
    assert.deepEqual(r.ports[0]!.sent.filter((f) => f[42] === 9).length, 0, 'the flooder does not see traffic to B');
  });

  test('storm-limit: floods past the bucket are dropped before any copy, counted; unicast to a known port is not limited', () => {
    const r = rig([{ secured: null, macLimit: 0, stormLimit: 100 }, undefined]);
    const br = r.engine.bridges.get(1)!;
    br.now = 1000;
    for (let k = 0; k < 300; k++) r.send(0, udp(BCAST, A, [10, 0, 0, 1], [10, 0, 0, 255]));
    assert.equal(r.ports[1]!.sent.length, 64, 'the burst allowance (at least 64)');
    assert.equal(r.ports[0]!.counters[C.rx_dropped_storm], 236);
    br.now = 1000.5; // half a second: 50 more
    for (let k = 0; k < 100; k++) r.send(0, udp(BCAST, A, [10, 0, 0, 1], [10, 0, 0, 255]));
    assert.equal(r.ports[1]!.sent.length, 64 + 50);
    r.send(1, udp(A, B, [10, 0, 0, 2], [10, 0, 0, 1]));
    r.ports[1]!.sent.length = 0;
    for (let k = 0; k < 200; k++) r.send(0, udp(B, A, [10, 0, 0, 1], [10, 0, 0, 2]));
    assert.equal(r.ports[1]!.sent.length, 200, 'known unicast is never storm-limited');
  });

  test('forged frames become one event at once, then at most one per 10 s with the count since', () => {
    const news: Array<{ index: number; what: string; kind?: string; detail: string }> = [];
    const engine = new Engine(256, undefined, () => {}, () => {}, (index, n) => news.push({ index, ...n }));
    engine.addBridge(1, 'br');
    const a = new WirePort(1, engine.pool);
    const b = new WirePort(2, engine.pool);
    engine.addPort(a, undefined, secured(A, '10.0.0.1'));
    engine.addPort(b);
    a.inbox.push(udp(BCAST, A, [10, 0, 0, 66], [10, 0, 0, 2]), udp(BCAST, A, [10, 0, 0, 66], [10, 0, 0, 2]));
    engine.poll(a, 0);
    engine.turn(1); // housekeeping
    assert.equal(news.length, 1, JSON.stringify(news));
    assert.deepEqual({ ...news[0], detail: undefined }, { index: 1, what: 'spoofed', kind: 'rx_dropped_spoofed_ip', detail: undefined });
    assert.match(news[0]!.detail, /^2 frames dropped: spoofed_ip from 02:00:00:00:00:0a \(10\.0\.0\.66\)/);
    a.inbox.push(udp(BCAST, A, [10, 0, 0, 67], [10, 0, 0, 2]));
    engine.poll(a, 0);
    (engine as unknown as { lastAging: number }).lastAging = 0; // the next second
    engine.turn(1);
    assert.equal(news.length, 1, 'within 10 s: held back, counted');
    // Another reason is news at once, even within the 10 s of the first.
    a.inbox.push(udp(BCAST, X, [10, 0, 0, 1], [10, 0, 0, 2]));
    engine.poll(a, 0);
    (engine as unknown as { lastAging: number }).lastAging = 0;
    engine.turn(1);
    assert.equal(news.length, 2, JSON.stringify(news));
    assert.equal(news[1]!.kind, 'rx_dropped_spoofed_mac');
    // A guard replaced by set-port loses no count: the held-back spoofed_ip drop is told when its 10 s are over.
    engine.setSecurity(1, secured(A, '10.0.0.1'));
    (engine as unknown as { spoofs: Map<number, { nextAt: Float64Array }> }).spoofs.get(1)!.nextAt.fill(0);
    (engine as unknown as { lastAging: number }).lastAging = 0;
    engine.turn(1);
    assert.equal(news.length, 3, JSON.stringify(news));
    assert.match(news[2]!.detail, /^1 frame dropped: spoofed_ip$/);
  });

  test('a full burst mostly over the storm limit leaves the queue unread for a while, then it is read again', () => {
    const engine = new Engine(256, undefined, () => {});
    engine.addBridge(1, 'br');
    const a = new FdPort(1, engine.pool);
    const b = new WirePort(2, engine.pool);
    engine.addPort(a, undefined, { secured: null, macLimit: 0, stormLimit: 100 });
    engine.addPort(b);
    a.ev.signal();
    const bcast = (): Uint8Array => udp(BCAST, A, [10, 0, 0, 1], [10, 0, 0, 255]);
    try {
      engine.bridges.get(1)!.now = 1000;
      // Two full bursts within the bucket's 64 frames, then one of which half is over: pause.
      for (let k = 0; k < 2; k++) {
        a.inbox.push(...Array.from({ length: BURST }, bcast));
        engine.poll(a, 0);
      }
      assert.equal(a.counters[C.rx_storm_pauses], 0);
      a.inbox.push(...Array.from({ length: BURST - 1 }, bcast));
      engine.poll(a, 0);
      assert.equal(a.counters[C.rx_storm_pauses], 0, 'a burst that is not full does not pause');
      a.inbox.push(...Array.from({ length: BURST }, bcast));
      engine.poll(a, 0);
      assert.equal(a.counters[C.rx_storm_pauses], 1);
      assert.equal(a.pausedMask, 1);
      assert.equal(b.sent.length, 2 * BURST);
      // Paused: a readable fd is not polled, however many turns go by.
      a.inbox.push(bcast());
      for (let k = 0; k < 5; k++) engine.turn(0);
      assert.equal(a.inbox.length, 1, 'read while paused');
      // Its time up, the queue is read again without a new event (a peer may not notify twice).
      (engine as unknown as { paused: Array<{ until: number }> }).paused[0]!.until = 0;
      a.ev.drain();
      engine.turn(1);
      engine.turn(0);
      assert.equal(a.pausedMask, 0);
      assert.equal(a.inbox.length, 0, 'not read after the pause');
    } finally {
      a.ev.close();
    }
  });

  test('a queue watched through PortContext.watch (vhost-user\'s kicks) pauses and resumes too; unwatched, its fd is forgotten', () => {
    const engine = new Engine(256, undefined, () => {});
    engine.addBridge(1, 'br');
    const a = new WatchPort(1, engine.pool);
    engine.addPort(a, undefined, { secured: null, macLimit: 0, stormLimit: 100 });
    engine.addPort(new WirePort(2, engine.pool));
    try {
      engine.bridges.get(1)!.now = 1000;
      for (let k = 0; k < 3; k++) {
        a.inbox.push(...Array.from({ length: BURST }, () => udp(BCAST, A, [10, 0, 0, 1], [10, 0, 0, 255])));
        engine.poll(a, 0);
      }
      assert.equal(a.counters[C.rx_storm_pauses], 1);
      a.ev.signal();
      a.inbox.push(udp(BCAST, A, [10, 0, 0, 1], [10, 0, 0, 255]));
      for (let k = 0; k < 3; k++) engine.turn(0);
      assert.equal(a.inbox.length, 1, 'read while paused');
      (engine as unknown as { paused: Array<{ until: number }> }).paused[0]!.until = 0;
      engine.turn(1);
      engine.turn(0);
      assert.equal(a.inbox.length, 0, 'not read after the pause');
      a.ctx!.unwatch(a.ev.fd);
      assert.equal(a.watched[0], -1);
    } finally {
      a.ev.close();
    }
  });

  test('an uplink (stormPause false) is never paused: its queue carries everyone\'s traffic; the bucket alone cuts the storm', () => {
    const engine = new Engine(256, undefined, () => {});
    engine.addBridge(1, 'br');
    const a = new FdPort(1, engine.pool);
    a.stormPause = false;
    engine.addPort(a, undefined, { secured: null, macLimit: 0, stormLimit: 100 });
    engine.addPort(new WirePort(2, engine.pool));
    try {
      engine.bridges.get(1)!.now = 1000;
      for (let k = 0; k < 6; k++) {
        a.inbox.push(...Array.from({ length: BURST }, () => udp(BCAST, A, [10, 0, 0, 1], [10, 0, 0, 255])));
        engine.poll(a, 0);
      }
      assert.equal(a.counters[C.rx_dropped_storm], 6 * BURST - 64);
      assert.equal(a.counters[C.rx_storm_pauses], 0);
      assert.equal(a.pausedMask, 0);
    } finally {
      a.ev.close();
    }
  });

  test('security changes live: on, then off; static entries follow', () => {
    const r = rig([undefined, undefined]);
    r.send(0, udp(BCAST, X, [10, 0, 0, 9], [10, 0, 0, 2], 1));
    assert.equal(r.ports[1]!.sent.length, 1);
    r.engine.setSecurity(1, secured(A, '10.0.0.1'));
    r.send(0, udp(BCAST, X, [10, 0, 0, 9], [10, 0, 0, 2], 2));
    assert.equal(r.ports[1]!.sent.length, 1, 'now refused');
    const fdb = r.engine.bridges.get(1)!.fdb;
    assert.ok(fdb.entries(0).every((e) => e.mac !== '02:00:00:00:00:ee'), 'what it learned before being secured is forgotten');
    r.engine.setSecurity(1, undefined);
    r.send(0, udp(BCAST, X, [10, 0, 0, 9], [10, 0, 0, 2], 3));
    assert.equal(r.ports[1]!.sent.length, 2);
    assert.ok(fdb.entries(0).every((e) => !e.static), 'no static entry left');
  });
});
