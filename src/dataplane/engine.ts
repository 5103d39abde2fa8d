// The forwarding engine: one thread, one epoll set, one packet pool. Each turn it waits for ready
// ports, receives a bounded burst from each, lets the port's bridge classify it, and flushes the
// output queues the burst reached, fixing up offloads a receiving port does not accept. Control requests arrive on a
// doorbell eventfd in the same epoll set, so the loop never spins while idle.
import { BRIDGE_GAUGE_FDB_ENTRIES, GAUGE_POOL_ALLOC_FAILURES, GAUGE_POOL_AVAILABLE } from './gauges.ts';
import { ARENA_SIZE } from '../memory/arena.ts';
import { Epoll, EventFd, FAULT_RING, faultAddress, faultCount, libc, sigbusGuard } from '../sys/index.ts';
import { Bridge } from './bridge.ts';
import { CAPTURE_IN, CAPTURE_OUT, type CaptureBinding, CaptureTap } from './capture.ts';
import { C, COUNTER_NAMES } from './counters.ts';
import { checkHeaders } from './headers.ts';
import { finishChecksum, SEG_BAD, SEG_BURST, segmentTcp } from './offload.ts';
import { judgedCopy } from './deferred.ts';
import { tuneJit } from './jit.ts';
import { PacketPool, REFUSED_COPY } from './pool.ts';
import { GSO_TCP, Port, type PortContext } from './port.ts';
import type { PeerNews } from './protocol.ts';
import { macFromString, macToString } from './fdb.ts';
import { PortGuard } from './port-guard.ts';
import { type SecurityConfig, setStorm } from './security.ts';
import { applyVlan, PUSH_TOO_BIG, pushTag, VLAN_TRUNK, type VlanConfig } from './vlan.ts';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE } from './vnet.ts';

export const BURST = 32;
/** At most one port-security event per port and reason, or flapping event per bridge, this often (the first at once). */
const SECURITY_EVENT_MS = 10_000;
/** The drops that make port-security events: forged frames, and storms a port was cut off from. */
const SECURITY_REASONS = [C.rx_dropped_spoofed_mac, C.rx_dropped_spoofed_ip, C.rx_dropped_spoofed_arp, C.rx_dropped_spoofed_nd,
  C.rx_dropped_ra, C.rx_dropped_dhcp_server, C.rx_dropped_unjudgeable, C.rx_dropped_storm];

const CONTROL_TOKEN = 0xffffffff;
/**
 * A full burst of which at least half was over the port's storm limit leaves that queue unread
 * for this long: the storm waits in the kernel's or the peer's queue, which drops what does not
 * fit, instead of costing pier a read per frame it will drop (bench/results/port-security.md).
 */
export const STORM_PAUSE_MS = 20;
const MAX_PORTS = 1 << 20;

export class Engine implements PortContext {
  readonly pool: PacketPool;
  readonly epoll = new Epoll(128);
  readonly bridges = new Map<number, Bridge>();
  readonly ports: Array<Port | undefined> = [];
  private readonly batch = new Int32Array(BURST);
  private readonly segq = new Int32Array(SEG_BURST);
  /** The VLAN of each packet on a bridge with VLANs, between classification and a trunk's push. */
  private readonly vlanOf: Uint16Array;
  private running = true;
  private turns = 0;
  /** The bridges as an array, for loops on the hot path (a Map iterator allocates). */
  private bridgeList: Bridge[] = [];
  private lastAging = 0;
  /** epoll_wait calls that returned events, and bursts received: packets per wakeup tells how well batching works. */
  wakeups = 0;
  bursts = 0;
  packets = 0;
  /** Polls that found nothing to receive. */
  emptyPolls = 0;
  private readonly flushFn = (p: Port): void => this.flush(p);
  /**
   * The burst being forwarded may hold packets with offload requests (its port's rxOffloads) or
   * lent from a peer's memory (rxExternal): flush() then looks at each packet for the output port.
   */
  private burstFix = false;
  private burstExt = false;
  /** The burst holds deferred packets (a secured port's lent frames, judged only as copied: PacketPool.defer). */
  private burstDeferred = false;
  /** (port index << 8 | queue) tokens to poll again next turn, and their count. */
  private pending = new Int32Array(4096);
  private npending = 0;
  private pendingNext = new Int32Array(4096);
  /**
   * The SIGBUS guard's counter ([0]: low 32 bits of the faults survived) and the value last
   * dispatched: a peer's file shrank under its mapping when they differ (docs/design/peer-memory.md).
   */
  private readonly faults: Int32Array;
  private faultsSeen: number;
  private faultsDispatched: number;
  /** Guarded faults in this engine's arena dispatched to ports; of those, none claimed; bursts dropped because of one. */
  memoryFaults = 0;
  memoryFaultsUnclaimed = 0;
  faultDroppedBursts = 0;

  constructor(poolSize: number, private readonly doorbell: EventFd | undefined, private readonly onControl: () => void,
    /** Called once when a port's fd reports an error or hang-up (its device went away). */
    private readonly onPortDown: (index: number, reason: string) => void = () => {},
    /** Called with what a port says about its peer (for the daemon's log). */
    private readonly onNews: (index: number, n: PeerNews) => void = () => {}) {
    tuneJit();
    this.pool = new PacketPool(poolSize);
    this.vlanOf = new Uint16Array(this.pool.len.length);
    if (doorbell) this.epoll.add(doorbell.fd, libc.EPOLLIN, CONTROL_TOKEN);
    let counter: Int32Array;
    try {
      counter = sigbusGuard().counter; // the arena installed it, unless SIGBUS was someone else's
    } catch {
      counter = new Int32Array(2);
    }
    this.faults = counter;
    this.faultsDispatched = faultCount();
    this.faultsSeen = Atomics.load(counter, 0);
  }

  addBridge(id: number, name: string, agingSeconds?: number, gauges?: Float64Array, fdbSize?: number): void {
    const br = new Bridge(id, name, this.pool, agingSeconds, this.vlanOf, fdbSize);
    br.gauges = gauges;
    this.bridges.set(id, br);
    this.bridgeList = [...this.bridges.values()];
  }

  removeBridge(id: number): void {
    this.bridges.delete(id);
    this.bridgeList = [...this.bridges.values()];
  }

  addPort(p: Port, vlan?: VlanConfig, security?: SecurityConfig): void {
    if (p.index <= 0 || p.index >= MAX_PORTS || this.ports[p.index]) throw new Error(`port slot ${p.index} is taken`);
    const br = this.bridges.get(p.bridge);
    if (!br) throw new Error(`no bridge ${p.bridge}`);
    applyVlan(p, vlan);
    // Built before the port is in any table: a bad identity leaves nothing behind.
    const guard = security?.secured ? new PortGuard({ ...security.secured, trunk: p.vlanMode === VLAN_TRUNK }) : null;
    p.fds.forEach((fd, q) => this.epoll.add(fd, libc.EPOLLIN, (p.index << 8) | q));
    this.ports[p.index] = p;
    br.addPort(p);
    this.securities.set(p.index, security);
    this.applySecurity(p, br, security, guard);
    this.securityBaseline(p);
    this.bindCaptures(p.index);
    p.attach(this);
  }

  /**
   * Change a running port's VLANs (set-port tag=/trunks=). Runs between bursts (control requests
   * are handled in the loop, never inside a poll), so no packet sees half a change; what the port
   * learned goes, since it was learned in its old VLANs.
   */
  setVlan(index: number, vlan: VlanConfig | undefined): void {
    const p = this.ports[index];
    if (!p) throw new Error(`no port in slot ${index}`);
    const br = this.bridges.get(p.bridge);
    applyVlan(p, vlan);
    br?.fdb.flushPort(index);
    br?.vlansChanged();
    // Static entries live in the port's untagged VLAN, and a trunk's guard reads past a tag.
    if (br) this.setSecurity(index, this.securities.get(index));
  }

  /** Each port's security as last set (re-applied when its VLANs change). */
  private readonly securities = new Map<number, SecurityConfig | undefined>();

  /** busy-poll= of a running port: a flag its receive reads at each poll, changed in place. */
  setBusyPoll(index: number, on: boolean): void {
    const p = this.ports[index];
    if (!p) throw new Error(`no port in slot ${index}`);
    p.busyPoll = on;
  }

  /**
   * Change a running port's security (set-port port-security= allowed-addresses= mac-limit=
   * storm-limit=, or its MAC or IPs): between bursts, like a VLAN change. The guard is built
   * first, so an identity it refuses changes nothing.
   */
  setSecurity(index: number, security: SecurityConfig | undefined): void {
    const p = this.ports[index];
    if (!p) throw new Error(`no port in slot ${index}`);
    const br = this.bridges.get(p.bridge);
    if (!br) throw new Error(`no bridge ${p.bridge}`);
    const guard = security?.secured ? new PortGuard({ ...security.secured, trunk: p.vlanMode === VLAN_TRUNK }) : null;
    this.securities.set(index, security);
    this.applySecurity(p, br, security, guard);
  }

  /** Per port: each reason's counter when last told, and when the next event of that reason may be sent. */
  private readonly spoofs = new Map<number, { told: Float64Array; nextAt: Float64Array }>();
  /** Per bridge: flaps already told, and when the next event may be sent. */
  private readonly flapsTold = new Map<number, { seen: number; nextAt: number }>();

  /** Drops a port had when it was added are not news (its counters outlive a rebuilt dataplane half). */
  private securityBaseline(p: Port): { told: Float64Array; nextAt: Float64Array } {
    const s = { told: new Float64Array(SECURITY_REASONS.length), nextAt: new Float64Array(SECURITY_REASONS.length) };
    for (let r = 0; r < SECURITY_REASONS.length; r++) s.told[r] = p.counters[SECURITY_REASONS[r]!]!;
    this.spoofs.set(p.index, s);
    return s;
  }

  /**
   * Once a second: what ports tried to forge (and storms they were cut off from), and which MACs
   * flap, as events for the daemon's log, rate-limited: the first of each reason at once, then
   * at most one per port and reason every SECURITY_EVENT_MS, with the count since. Read from the
   * counters, so a guard replaced by set-port loses nothing. A hostile port must not flood the log.
   */
  private securityNews(nowMs: number): void {
    for (const p of this.ports) {
      if (!p) continue;
      const c = p.counters;
      const s = this.spoofs.get(p.index) ?? this.securityBaseline(p);
      for (let r = 0; r < SECURITY_REASONS.length; r++) {
        const slot = SECURITY_REASONS[r]!;
        const n = c[slot]! - s.told[r]!;
        if (n <= 0 || nowMs < s.nextAt[r]!) continue;
        const d = (p.guard as PortGuard | null)?.lastDrop();
        const name = COUNTER_NAMES[slot]!.replace(/^rx_dropped_/, '');
        const what = d && d.reason === slot ? ` from ${macToString(d.mac)}${d.detail ? ` (${d.detail})` : ''}` : '';
        this.onNews(p.index, { what: 'spoofed', kind: COUNTER_NAMES[slot], detail: `${n} frame${n === 1 ? '' : 's'} dropped: ${name}${what}` });
        s.told[r] = c[slot]!;
        s.nextAt[r] = nowMs + SECURITY_EVENT_MS;
      }
    }
    for (const br of this.bridgeList) {
      const f = br.fdb;
      let t = this.flapsTold.get(br.id);
      if (!t) this.flapsTold.set(br.id, (t = { seen: 0, nextAt: 0 }));
      if (f.flaps === t.seen || nowMs < t.nextAt) continue;
      const l = f.lastFlap;
      this.onNews(l.to, { what: 'flapping', kind: String(l.from), detail: `MAC ${macToString(l.mac)}${l.vid ? ` in VLAN ${l.vid}` : ''} moves between ports (${f.flaps - t.seen} flapping since the last report)` });
      t.seen = f.flaps;
      t.nextAt = nowMs + SECURITY_EVENT_MS;
    }
  }

  private applySecurity(p: Port, br: Bridge, s: SecurityConfig | undefined, guard: PortGuard | null): void {
    p.guard = guard;
    if (guard !== null) guard.counters = p.counters;
    const fdb = br.fdb;
    fdb.flushStatic(p.index);
    // A secured port's own MAC is a static entry of its own VLAN (untagged frames'): no other
    // port moves it. What it learned before goes: it may have been forged.
    if (s?.secured) {
      fdb.flushPort(p.index);
      if (s.secured.own) fdb.addStatic(macFromString(s.secured.macs[0]!), p.index, p.vlanUntagged);
    }
    fdb.setLimit(p.index, s?.macLimit ?? 0);
    setStorm(p, s?.stormLimit ?? 0, br.now);
  }

  /**
   * Captures by port slot: kept here, not only on the Port, so a port made again in the same
   * slot (its device came back, set-port --recreate) is captured again.
   */
  private readonly captures = new Map<number, { in: CaptureBinding[]; out: CaptureBinding[] }>();
  private readonly taps = new Map<number, CaptureTap>();

  /** Start capturing `slots` (interface i is slots[i]) in the directions of `dirs` (CAPTURE_IN | CAPTURE_OUT). */
  startCapture(tap: CaptureTap, slots: readonly number[], dirs: number): void {
    if (this.taps.has(tap.id)) throw new Error(`capture ${tap.id} is running`);
    this.taps.set(tap.id, tap);
    slots.forEach((slot, iface) => {
      let b = this.captures.get(slot);
      if (!b) this.captures.set(slot, (b = { in: [], out: [] }));
      if (dirs & CAPTURE_IN) b.in = [...b.in, { tap, iface }];
      if (dirs & CAPTURE_OUT) b.out = [...b.out, { tap, iface }];
      this.bindCaptures(slot);
    });
  }

  /** Stop capture `id`; returns its tap (the caller releases the ring) or undefined. */
  stopCapture(id: number): CaptureTap | undefined {
    const tap = this.taps.get(id);
    if (!tap) return undefined;
    this.taps.delete(id);
    for (const [slot, b] of this.captures) {
      b.in = b.in.filter((x) => x.tap !== tap);
      b.out = b.out.filter((x) => x.tap !== tap);
      if (b.in.length === 0 && b.out.length === 0) this.captures.delete(slot);
      this.bindCaptures(slot);
    }
    return tap;
  }

  /** New arrays each change: the hot path reads a port's lists without a lock or a check. */
  private bindCaptures(slot: number): void {
    const p = this.ports[slot];
    if (!p) return;
    const b = this.captures.get(slot);
    p.captureIn = b ? b.in : [];
    p.captureOut = b ? b.out : [];
  }

  watch(p: Port, fd: number, queue: number): void {
    this.epoll.add(fd, libc.EPOLLIN, (p.index << 8) | queue);
    if (queue < 32) p.watched[queue] = fd;
  }

  news(p: Port, n: PeerNews): void {
    this.onNews(p.index, n);
  }

  unwatch(fd: number): void {
    this.epoll.remove(fd);
    // Forgotten as a queue's fd, so a storm pause never puts a closed (or reused) fd back.
    for (const p of this.ports) {
      if (!p) continue;
      const w = p.watched;
      for (let q = 0; q < w.length; q++) if (w[q] === fd) w[q] = -1;
    }
  }

  /** The fd the engine polls for queue q of p (its own, or one it asked to be watched), or -1. */
  private queueFd(p: Port, q: number): number {
    return p.fds[q] ?? p.watched[q] ?? -1;
  }

  again(p: Port, queue: number): void {
    // Once per queue per turn: a queue asked for again from two places in one turn (its own
    // poll, and an epoll event for it) would otherwise be polled once more at every turn.
    if (queue < 32) {
      const bit = 1 << queue;
      if ((p.againMask & bit) !== 0) return;
      p.againMask |= bit;
    }
    if (this.npending < this.pending.length) this.pending[this.npending++] = (p.index << 8) | queue;
  }

  removePort(index: number): void {
    const p = this.ports[index];
    if (!p) return;
    for (const fd of p.fds) this.epoll.remove(fd); // harmless if already removed
    this.bridges.get(p.bridge)?.removePort(p);
    this.ports[index] = undefined;
    this.securities.delete(index);
    this.spoofs.delete(index);
    p.close();
  }

  stop(): void {
    this.running = false;
  }

  /** Run until stop(). */
  run(): void {
    while (this.running) this.turn(this.npending > 0 ? 0 : this.nextTimeout());
  }

  /** Sleep until the soonest port timer or paused queue, at most a second (FDB aging). */
  private nextTimeout(): number {
    let t = 1000;
    const now = Date.now();
    for (const p of this.ports) if (p && p.timerAt > 0) t = Math.min(t, Math.max(0, p.timerAt - now));
    for (const x of this.paused) t = Math.min(t, Math.max(0, x.until - now));
    return t;
  }

  /** Queues left unread because they storm, and when each is read again (ms since epoch). */
  private paused: Array<{ p: Port; q: number; until: number }> = [];

  /** Stop reading queue q of p for STORM_PAUSE_MS (its fd out of epoll). */
  private pauseQueue(p: Port, q: number): void {
    const fd = q < 32 ? this.queueFd(p, q) : -1;
    if (fd < 0 || (p.pausedMask & (1 << q)) !== 0) return;
    this.epoll.remove(fd);
    p.pausedMask |= 1 << q;
    p.counters[C.rx_storm_pauses]!++;
    this.paused.push({ p, q, until: Date.now() + STORM_PAUSE_MS });
  }

  /** Read the paused queues whose time is up again: back in epoll, and polled once next turn (a peer may not notify again). */
  private resumeQueues(nowMs: number): void {
    const list = this.paused;
    for (let i = list.length - 1; i >= 0; i--) {
      const x = list[i]!;
      if (x.until > nowMs && this.ports[x.p.index] === x.p) continue;
      list.splice(i, 1);
      x.p.pausedMask &= ~(1 << x.q);
      // A port removed or rebuilt meanwhile is not this one any more: nothing to give back.
      if (this.ports[x.p.index] !== x.p) continue;
      const fd = this.queueFd(x.p, x.q);
      try {
        if (fd >= 0) this.epoll.add(fd, libc.EPOLLIN, (x.p.index << 8) | x.q);
      } catch {
        // Already back in epoll (EEXIST): nothing more to do.
      }
      this.again(x.p, x.q);
    }
  }

  /**
   * Set by the dataplane thread: pool levels written at every housekeeping turn, read by the main
   * thread without a request (GAUGE_* slots, src/daemon/dataplane.ts).
   */
  gauges: Float64Array | undefined;

  /** One wait-and-forward turn; public so tests can drive the engine step by step. */
  turn(timeoutMs: number): void {
    const ep = this.epoll;
    // A turn that does not wait (queues left work for it) still looks at epoll (control requests,
    // sockets, kicks of other ports), but does its housekeeping only every 32nd time.
    const housekeeping = timeoutMs !== 0 || (++this.turns & 31) === 0;
    const n = ep.wait(timeoutMs);
    if (n > 0) this.wakeups++;
    if (housekeeping) {
      const now = Date.now() / 1000;
      for (let i = 0; i < this.bridgeList.length; i++) this.bridgeList[i]!.now = now;
      const g = this.gauges;
      if (g !== undefined) {
        g[GAUGE_POOL_AVAILABLE] = this.pool.available();
        g[GAUGE_POOL_ALLOC_FAILURES] = this.pool.allocFailures;
      }
      for (let i = 0; i < this.bridgeList.length; i++) {
        const br = this.bridgeList[i]!;
        if (br.gauges) br.gauges[BRIDGE_GAUGE_FDB_ENTRIES] = br.fdb.size;
      }
    }
    // Queues that stopped at their budget last turn go first, each once.
    const np = this.npending;
    if (np > 0) {
      // The two lists trade places (no copy, no view made per turn): polls below may queue for
      // the next turn while this one's list is walked.
      const list = this.pending;
      this.pending = this.pendingNext;
      this.pendingNext = list;
      this.npending = 0;
      for (let i = 0; i < np; i++) {
        const tok = list[i]!;
        const p = this.ports[tok >>> 8];
        if (!p) continue;
        const q = tok & 0xff;
        if (q < 32) p.againMask &= ~(1 << q);
        this.poll(p, q);
      }
    }
    for (let i = 0; i < n; i++) {
      const tok = ep.token(i);
      if (tok === CONTROL_TOKEN) {
        this.doorbell!.drain();
        this.onControl();
        continue;
      }
      const p = this.ports[tok >>> 8];
      if (!p) continue;
      if ((ep.events(i) & (libc.EPOLLERR | libc.EPOLLHUP)) !== 0) {
        if (p.onHangup(tok & 0xff)) continue;
        // The device is gone (for a tap: its namespace was deleted). Stop polling it, or a
        // level-triggered error would spin this loop; the control plane decides what next.
        for (const fd of p.fds) this.epoll.remove(fd);
        // A queue paused for storming must not be put back on a dead device.
        this.paused = this.paused.filter((x) => x.p !== p);
        p.pausedMask = 0;
        this.onPortDown(p.index, 'device error or hang-up');
        continue;
      }
      this.poll(p, tok & 0xff);
    }
    // A fault may also happen outside a received burst: copying into a peer's memory in
    // transmit(), reading its rings in a control request.
    if (Atomics.load(this.faults, 0) !== this.faultsSeen) this.dispatchFaults();
    if (!housekeeping) return;
    const nowMs = Date.now();
    if (this.paused.length > 0) this.resumeQueues(nowMs);
    for (const p of this.ports) {
      if (p && p.timerAt > 0 && p.timerAt <= nowMs) {
        p.timerAt = 0;
        p.onTimer();
      }
    }
    const now = nowMs / 1000;
    if (now - this.lastAging >= 1) {
      this.lastAging = now;
      this.securityNews(nowMs);
      for (const br of this.bridgeList) br.fdb.age(now);
      for (const p of this.ports) if (p?.levels) p.sampleLevels();
    }
  }

  /** Receive one burst from a port queue and forward it. */
  poll(p: Port, queue: number): number {
    // A queue paused for storming is not read, whoever asks: a pending entry, or an event
    // collected before a burst earlier in the same turn paused it.
    if (p.pausedMask !== 0 && queue < 32 && (p.pausedMask & (1 << queue)) !== 0) return 0;
    const br = this.bridges.get(p.bridge);
    let n = p.receive(queue, this.batch, BURST);
    if (n === 0) {
      this.emptyPolls++;
      return n;
    }
    if (Atomics.load(this.faults, 0) !== this.faultsSeen) {
      // Some packet of this burst may have been read from a page the guard just replaced with
      // zeros: drop it. Releasing returns lent buffers to their port (which writes its used
      // ring), so that happens first, while the port still has its memory; resets come after.
      for (let i = 0; i < n; i++) this.pool.release(this.batch[i]!);
      p.afterBurst(queue);
      this.faultDroppedBursts++;
      this.dispatchFaults();
      return n;
    }
    const cin = p.captureIn;
    for (let c = 0; c < cin.length; c++) cin[c]!.tap.write(this.pool, this.batch, n, cin[c]!.iface, CAPTURE_IN);
    // A burst that may ask for offloads has its headers checked before anything trusts them.
    if (p.rxOffloads) {
      const kept = checkHeaders(this.pool, this.batch, n, p.counters);
      // rxJudged names slots; a drop moved the frames after it, so the guard judges them all again.
      if (kept !== n) p.rxJudged = 0;
      n = kept;
      if (n === 0) {
        p.afterBurst(queue);
        return 0;
      }
    }
    // A secured port's burst is checked before the bridge sees it (a capture shows what it sent).
    const guard = p.guard;
    if (guard !== null && (n = guard.filter(this.pool, this.batch, n, p.counters, p.rxJudged)) === 0) {
      p.afterBurst(queue);
      return 0;
    }
    if (!br) {
      for (let i = 0; i < n; i++) this.pool.release(this.batch[i]!);
      p.afterBurst(queue);
      return n;
    }
    this.bursts++;
    this.packets += n;
    // What an output port may need done to this burst's packets before it takes them (flush()).
    this.burstFix = p.rxOffloads;
    this.burstExt = p.rxExternal;
    this.burstDeferred = p.rxDeferred;
    const storming = p.stormRate !== 0 ? p.counters[C.rx_dropped_storm]! : -1;
    br.forward(p, this.batch, n, this.flushFn);
    br.flushTouched(this.flushFn);
    this.burstFix = false;
    this.burstExt = false;
    this.burstDeferred = false;
    // Lent packets are all released by now: the port may return its buffers to the peer.
    p.afterBurst(queue);
    if (storming >= 0 && p.stormPause && n === BURST && 2 * (p.counters[C.rx_dropped_storm]! - storming) >= n) this.pauseQueue(p, queue);
    return n;
  }

  /**
   * Tell the ports about every fault survived since the last call: each address, as an arena
   * offset, to every port's memoryFault() (the one whose peer memory it is resets itself); -1 to
   * every port when the guard's ring of addresses overflowed. Faults in another arena of the
   * process (tests make several) are not this engine's.
   */
  private dispatchFaults(): void {
    const arena = this.pool.arena;
    for (let total = faultCount(); total !== this.faultsDispatched; total = faultCount()) {
      const from = this.faultsDispatched;
      this.faultsDispatched = total;
      this.faultsSeen = total | 0;
      if (total - from > FAULT_RING) {
        this.memoryFaults += total - from;
        this.memoryFaultsUnclaimed += this.tellPorts(-1) ? 0 : total - from;
        continue;
      }
      for (let k = from; k < total; k++) {
        const off = faultAddress(k) - arena.base;
        if (off < 0 || off >= ARENA_SIZE) continue;
        this.memoryFaults++;
        arena.forget(off); // never shared with a later mapping of the same file range
        if (!this.tellPorts(off)) this.memoryFaultsUnclaimed++;
      }
    }
  }

  private tellPorts(off: number): boolean {
    let claimed = false;
    for (const p of this.ports) {
      if (!p) continue;
      try {
        if (p.memoryFault(off)) claimed = true;
      } catch (e) {
        this.onPortDown(p.index, `memory fault handling failed: ${(e as Error).message}`);
      }
    }
    return claimed;
  }

  /**
   * Send a port's queued packets, segmenting or checksumming for a port that cannot. Only within
   * poll(), while a burst is forwarded: what the packets may need comes from burstFix/burstExt.
   */
  private flush(p: Port): void {
    const o = p.out;
    const txq = o.txq;
    let n = o.txCount;
    o.txCount = 0;
    const cout = p.captureOut;
    const txFix = this.burstFix || (this.burstExt && !p.acceptsExternal);
    let direct = !txFix || (p.gsoTypes === GSO_TCP && p.acceptsCsum && p.acceptsExternal);
    // A deferred packet goes as it is only to a port that judges its own copy, untouched; any
    // other gets a judged pool copy before anything reads it (tag, capture, segmentation).
    if (this.burstDeferred && (!p.judgesLent || !direct || p.vlanMode === VLAN_TRUNK || cout.length > 0)) {
      n = this.settleDeferred(p, txq, n);
      // The burst's need of an offload pass was read at pop from headers the sender could still
      // rewrite: a port that cannot take every request gets the pass over the judged copies.
      if (!(p.gsoTypes === GSO_TCP && p.acceptsCsum)) direct = false;
    }
    if (p.vlanMode === VLAN_TRUNK) n = this.pushTags(p, n);
    // Captured as the port is handed them: tagged for a trunk, super-frames not yet segmented.
    for (let c = 0; c < cout.length; c++) cout[c]!.tap.write(this.pool, txq, n, cout[c]!.iface, CAPTURE_OUT);
    if (direct) {
      p.transmit(txq, n);
      return;
    }
    const pool = this.pool;
    const b = pool.bytes;
    const fix = p.fixq;
    let m = 0;
    for (let i = 0; i < n; i++) {
      let h = txq[i]!;
      if (pool.isExternal(h) && (!p.acceptsExternal || (!p.acceptsCsum && (b[pool.hdrOffset(h)]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0))) {
        // A lent packet for a port that keeps it, or one whose checksum is finished in place.
        h = pool.materialize(h);
        if (h < 0) {
          p.counters[C.tx_dropped_no_buffer]!++;
          continue;
        }
      }
      const ho = pool.hdrOffset(h);
      const gso = b[ho + 1]! & ~VIRTIO_NET_HDR_GSO_ECN;
      if (gso !== VIRTIO_NET_HDR_GSO_NONE && (gso > 31 || (p.gsoTypes & (1 << gso)) === 0)) {
        if (m > 0) p.transmit(fix, m); // keep order: what came before leaves before
        m = 0;
        // In chunks of SEG_BURST, so a small-MSS super-frame never needs a huge pool.
        for (let first = 0; ;) {
          const k = segmentTcp(pool, h, this.segq, first, p.acceptsCsum);
          if (k < 0) {
            p.counters[k === SEG_BAD ? C.tx_dropped_bad_gso : C.tx_dropped_no_buffer]!++;
            break;
          }
          if (first === 0) p.counters[C.tx_segmented]!++;
          p.transmit(this.segq, k);
          first += k;
          if (k < SEG_BURST) break;
        }
        pool.release(h);
        continue;
      }
      // Finished on a packet of this port's own: a flood's other outputs may hold this one still
      // (virtio-user's ring, until its backend has read the partial checksum).
      if ((b[ho]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && !p.acceptsCsum && (h = finishChecksum(pool, h, p.counters)) < 0) continue;
      fix[m++] = h;
    }
    if (m > 0) p.transmit(fix, m);
  }

  /**
   * Replace each deferred packet of q[0..n) (a secured port's lent frame, not judged yet) by a
   * pool copy its port's guard judged; a refused copy is counted on the sending port and left
   * out. Returns how many are left, in order.
   */
  private settleDeferred(p: Port, q: Int32Array, n: number): number {
    const pool = this.pool;
    const vlanOf = this.vlanOf;
    let k = 0;
    for (let i = 0; i < n; i++) {
      let h = q[i]!;
      const judge = pool.deferredJudge(h);
      if (judge !== undefined) {
        const m = judgedCopy(pool, h, judge);
        pool.release(h);
        if (m < 0) {
          if (m !== REFUSED_COPY) p.counters[C.tx_dropped_no_buffer]!++;
          continue;
        }
        vlanOf[m] = vlanOf[h]!;
        h = m;
      }
      q[k++] = h;
    }
    return k;
  }

  /**
   * Tag txq[0..n) for trunk p with each packet's VLAN (VLAN 0 leaves untagged); returns how many
   * are left (a packet the pool had no buffer for is counted and dropped). Before the offload
   * pass, which then segments or checksums the tagged frame.
   */
  private pushTags(p: Port, n: number): number {
    const q = p.out.txq;
    const vlanOf = this.vlanOf;
    let k = 0;
    for (let i = 0; i < n; i++) {
      let h = q[i]!;
      const vid = vlanOf[h]!;
      if (vid !== 0) {
        h = pushTag(this.pool, h, vid);
        if (h < 0) {
          p.counters[h === PUSH_TOO_BIG ? C.tx_dropped_too_big : C.tx_dropped_no_buffer]!++;
          continue;
        }
      }
      q[k++] = h;
    }
    return k;
  }
}
