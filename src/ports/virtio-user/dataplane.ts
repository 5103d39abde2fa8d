// A virtio-user port: pier is the virtio *driver*. Its rings live in a memfd of its own and its
// packet buffers are the packet pool itself, both mapped in the arena and handed to the backend
// in the memory table, so a backend writes received frames straight into pool buffers and reads
// sent frames straight from them: no copy in pier, either way. Guest-physical addresses are
// pier's own virtual addresses (IOVA as VA), so one translation serves the backend for rings
// (user addresses) and descriptors (guest-physical).
//
// The backend is the kernel's vhost-net or a vhost-user device (DPDK net_vhost, OVS-DPDK
// dpdkvhostuser, pier's own vhost-user port), both behind src/vhost/driver-backend.ts: this file
// runs one set-up sequence against either and owns the datapath. Everything is driven by epoll
// in the dataplane thread, so pier can even drive its own vhost-user port in the same thread.
import { ablated } from '../ablate.ts';
import { C } from '../../dataplane/counters.ts';
import { writeLevels } from '../../dataplane/gauges.ts';
import { flowHash } from '../../dataplane/flow-hash.ts';
import type { PacketPool } from '../../dataplane/pool.ts';
import { BUF_SIZE, VNET_HDR } from '../../dataplane/pool.ts';
import { GSO_TCP, Port, type PortContext } from '../../dataplane/port.ts';
import { VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from '../../dataplane/vnet.ts';
import { drainPeer, EventFd, libc, memfd, signalPeer } from '../../sys/index.ts';
import type { MemRegion } from '../../vhost/codec.ts';
import { Disconnect } from '../../vhost/connection.ts';
import { type DriverBackend, type Offer, VhostKernelBackend, VhostUserDriver } from '../../vhost/driver-backend.ts';
import { DriverQueue } from '../../virtio/driver-queue.ts';
import { PACKED_FRESH_BASE, PackedDriverQueue } from '../../virtio/packed-driver-queue.ts';
import { EVENT_SUPPRESS_SIZE, packedRingSize, VIRTIO_F_RING_PACKED } from '../../virtio/packed-ring.ts';
import type { DriverVirtqueue } from '../../virtio/queue.ts';
import { decodeFeatures, NET_F } from '../../virtio/net-features.ts';
import { availRingSize, descTableSize, usedRingSize, VIRTIO_F_EVENT_IDX } from '../../virtio/ring.ts';
import type { DataplaneHalf } from '../kind.ts';
import type { VirtioUserSpec } from './options.ts';
import type { VirtioUserView } from './view.ts';

const ETH_HLEN = 14;
/** How soon a port looks again at transmit buffers the backend holds and at short refills. */
const HOUSEKEEP_MS = 20;
const bit = (n: number): bigint => 1n << BigInt(n);

/** Bytes of one ring (descriptor table, avail ring, used ring), rounded to a page. */
function ringBytes(n: number): number {
  return (descTableSize(n) + availRingSize(n) + 3 + usedRingSize(n) + 4095) & ~4095;
}

/**
 * Queue numbering is virtio-net's: queue 2k is receiveq k, 2k+1 transmitq k, for k below the
 * number of queue pairs. The epoll token of receiveq k's call eventfd is its queue number.
 */
export class VirtioUserPort extends Port {
  readonly fds: readonly number[] = [];
  private ctx!: PortContext;
  /** The rings are set up and the backend uses them. */
  private running = false;
  /** The vhost-user device this port drives (null for vhost-net). */
  private readonly user: VhostUserDriver | null;
  private backend: DriverBackend | null = null;
  private offered = 0n;
  features = 0n;
  /** Queue pairs pier drives (the queues= option). */
  private readonly pairs: number;
  /** What the backend said it supports (vhost-user GET_QUEUE_NUM); 0 when not asked. */
  private backendPairs = 0;
  private readonly ringsFd: number;
  private readonly ringsOff: number;
  private readonly ringsSize: number;
  /** The queue of each ring, of the layout negotiated: one of split[q] and packed[q]. */
  private readonly queues: DriverVirtqueue[];
  private readonly split: DriverQueue[];
  private readonly packed: Array<PackedDriverQueue | null>;
  /** Pool handle each descriptor head carries, per queue (-1: none). */
  private readonly owner: Int32Array[];
  private readonly kick: EventFd[];
  private readonly call: EventFd[];
  /** Packets received and sent per queue pair, for `pier show`. */
  private readonly rxPair: Float64Array;
  private readonly txPair: Float64Array;
  /** Most buffers one receiveq holds posted: the port's eighth of the pool, shared by its receiveqs. */
  private readonly rxCap: number;
  /**
   * Most pool buffers the port's transmit rings hold at once (sent, not yet given back): also an
   * eighth of the pool, so a backend that stops taking from its rings ties up that much and no
   * more; beyond it frames are dropped as on a full ring (tx_dropped_full).
   */
  private readonly txCap: number;
  /** Pool buffers the transmit rings hold now. */
  private txHeld = 0;
  /** When housekeep() is due (0: not scheduled). */
  private housekeepAt = 0;
  private readonly one = new Float64Array(1);
  private readonly len1 = new Uint32Array(1);
  private readonly w1 = new Uint8Array(1);
  private readonly ro1 = new Uint8Array(1);
  connects = 0;
  disconnects = 0;
  lastError = '';

  constructor(index: number, name: string, bridge: number, counters: Float64Array, pool: PacketPool, readonly opts: VirtioUserSpec) {
    super(index, name, bridge, counters, pool, false, false);
    const n = opts.queueSize;
    this.pairs = opts.queuePairs;
    const nq = 2 * this.pairs;
    // Every ring of every queue pair in one memfd: the memory table stays two regions.
    this.ringsSize = nq * ringBytes(n);
    this.ringsFd = memfd(`pier-virtio-user-${name}`, this.ringsSize);
    this.ringsOff = pool.arena.place(this.ringsFd, 0, this.ringsSize);
    this.split = Array.from({ length: nq }, () => new DriverQueue(pool.arena));
    this.packed = new Array<PackedDriverQueue | null>(nq).fill(null);
    this.queues = this.split.slice();
    this.owner = Array.from({ length: nq }, () => new Int32Array(n).fill(-1));
    this.kick = Array.from({ length: nq }, () => new EventFd());
    this.call = Array.from({ length: nq }, () => new EventFd());
    this.rxPair = new Float64Array(this.pairs);
    this.txPair = new Float64Array(this.pairs);
    this.rxCap = ablated('port-budget') ? n : Math.max(1, Math.floor((pool.count >> 3) / this.pairs));
    this.txCap = ablated('port-budget') ? pool.count : Math.max(1, pool.count >> 3);
    this.w1[0] = 1;
    this.ro1[0] = 0;
    this.user = opts.backend === 'vhost-user'
      ? new VhostUserDriver({ path: opts.path, server: opts.server, listenFd: opts.listenFd, queuePairs: this.pairs, packed: opts.packed }, {
        watch: (fd, token) => this.ctx.watch(this, fd, token),
        unwatch: (fd) => this.ctx.unwatch(fd),
        ready: (offer) => this.setUp(this.user!, offer),
        down: (d) => this.down(d),
      })
      : null;
  }

  override attach(ctx: PortContext): void {
    this.ctx = ctx;
    for (let k = 0; k < this.pairs; k++) ctx.watch(this, this.call[2 * k]!.fd, 2 * k);
    if (this.user) {
      this.user.start();
      this.rearm();
      return;
    }
    // vhost-net: discovery answers at once and every step throws, so a port that cannot be set
    // up fails its add-port with the reason.
    const be = new VhostKernelBackend(this.opts.vhostFds, this.opts.tapFds);
    this.connects = 1;
    this.setUp(be, be.discover());
  }

  /**
   * The set-up sequence, the same for both backends: owner, features, the memory table (two
   * regions: the packet pool and this port's rings; guest-physical = user address = pier's VA),
   * then per ring its size, base, addresses, call and kick eventfds, then every ring enabled.
   * A transmitq's completions are reclaimed when pier next sends: no interrupts for it.
   */
  private setUp(be: DriverBackend, offer: Offer): void {
    const f = offer.features & be.wanted & (ablated('event-idx') ? ~bit(VIRTIO_F_EVENT_IDX) : ~0n);
    this.backend = be;
    this.offered = offer.features;
    this.backendPairs = this.user ? offer.queuePairs : 0;
    this.features = f;
    if (this.user) {
      const has = (n: number): boolean => (f & bit(n)) !== 0n;
      this.gsoTypes = (has(NET_F.HOST_TSO4) ? 1 << VIRTIO_NET_HDR_GSO_TCPV4 : 0) | (has(NET_F.HOST_TSO6) ? 1 << VIRTIO_NET_HDR_GSO_TCPV6 : 0);
      this.acceptsCsum = has(NET_F.CSUM);
    } else {
      // The kernel's tap takes super-frames and partial checksums (IFF_VNET_HDR).
      this.gsoTypes = GSO_TCP;
      this.acceptsCsum = true;
    }
    be.setOwner();
    be.setFeatures(f);
    be.setMemTable(this.memRegions(), [this.pool.fd, this.ringsFd]);
    const n = this.opts.queueSize;
    const rings = this.configureRings();
    if (typeof rings === 'string') {
      if (!this.user) throw new Error(`ring setup: ${rings}`);
      return this.user.end(new Disconnect('local', `ring setup: ${rings}`));
    }
    for (let q = 0; q < 2 * this.pairs; q++) {
      be.setVringNum(q, n);
      be.setVringBase(q, this.queues[q]!.layout === 'packed' ? PACKED_FRESH_BASE : 0);
      be.setVringAddr(rings[q]!);
      be.setVringCall(q, this.call[q]!.fd);
      be.setVringKick(q, this.kick[q]!.fd);
      if ((q & 1) === 1) this.queues[q]!.disableUsedNotifications();
    }
    for (let q = 0; q < 2 * this.pairs; q++) be.enableVring(q);
    if (this.user && this.user.phase !== 'running') return; // the connection ended on the way
    this.running = true;
    if (this.user) this.ctx.news(this, { what: 'connected', detail: `backend session ${this.user.connects} on ${this.opts.path}` });
    for (let k = 0; k < this.pairs; k++) if (this.refill(2 * k)) this.soon();
  }

  /** The backend went away (vhost-user): the rings stop, every buffer goes back to the pool. */
  private down(d: Disconnect): void {
    this.running = false;
    this.features = 0n;
    this.gsoTypes = 0;
    this.acceptsCsum = false;
    if (d.kind !== 'local') {
      this.disconnects++;
      this.ctx.news(this, { what: 'ended', kind: d.kind, detail: d.detail });
    }
    this.releaseBuffers();
    this.rearm();
  }

  override onTimer(): void {
    const now = Date.now();
    this.user?.onTimer(now);
    if (this.housekeepAt > 0 && this.housekeepAt <= now) {
      this.housekeepAt = 0;
      if (this.running) this.housekeep();
    }
    this.rearm(now);
  }

  /** The engine's timer: the sooner of the vhost-user deadlines and housekeeping. */
  private rearm(now = Date.now()): void {
    const t = this.user ? this.user.deadline(now) : 0;
    const h = this.housekeepAt;
    this.timerAt = t === 0 ? h : h === 0 ? t : Math.min(t, h);
  }

  /**
   * Transmit buffers are reclaimed when pier next sends on the port, and receive rings refilled
   * when frames arrive; neither happens on a port that went quiet. So a port that holds sent
   * buffers, or whose refill the pool cut short, looks again every HOUSEKEEP_MS until it holds
   * none and its rings are posted: otherwise a port could keep pool buffers its backend sent
   * long ago, and a receive ring left empty by a drained pool would never be refilled (nothing
   * arrives on an empty ring), which stalls every port once the pool runs low.
   */
  private housekeep(): void {
    let again = false;
    for (let k = 0; k < this.pairs; k++) {
      const tq = this.queues[2 * k + 1]!;
      this.reclaimTx(2 * k + 1);
      if (tq.numFree < tq.size) again = true;
      if (this.refill(2 * k, false)) again = true;
    }
    if (again) this.housekeepAt = Date.now() + HOUSEKEEP_MS;
  }

  /** Make sure housekeep() runs soon (a no-op when it is already due). */
  private soon(): void {
    if (this.housekeepAt !== 0) return;
    this.housekeepAt = Date.now() + HOUSEKEEP_MS;
    this.rearm();
  }

  override onHangup(queue: number): boolean {
    if (queue === VhostUserDriver.Q_CONN) {
      this.user?.onHangup();
      this.rearm();
      return true;
    }
    return queue !== VhostUserDriver.Q_LISTEN;
  }

  /** The memory table: the packet pool and this port's rings (DRIVER_MEM_REGIONS). */
  private memRegions(): MemRegion[] {
    const arena = this.pool.arena;
    const region = (off: number, size: number): MemRegion => ({ gpa: arena.base + off, size, uva: arena.base + off, mmapOffset: 0 });
    return [region(this.pool.offset, this.pool.count * BUF_SIZE), region(this.ringsOff, this.ringsSize)];
  }

  /**
   * Lay every ring out in the port's memfd (zeroed), configure the DriverQueues, and return
   * each ring's addresses as the backend sees them (pier's virtual addresses), or a problem.
   */
  private configureRings(): Array<{ index: number; desc: number; avail: number; used: number }> | string {
    const arena = this.pool.arena;
    const n = this.opts.queueSize;
    const per = ringBytes(n);
    const eventIdx = (this.features & bit(VIRTIO_F_EVENT_IDX)) !== 0n;
    const packed = (this.features & bit(VIRTIO_F_RING_PACKED)) !== 0n;
    arena.bytes.fill(0, this.ringsOff, this.ringsOff + this.ringsSize);
    const out = [];
    for (let q = 0; q < 2 * this.pairs; q++) {
      const desc = this.ringsOff + q * per;
      let avail: number;
      let used: number;
      let err: string | null;
      if (packed) {
        // The descriptor ring, then the driver and device event suppression areas (vhost-user
        // carries them as avail and used); smaller than the split ring's three parts.
        avail = desc + packedRingSize(n);
        used = avail + EVENT_SUPPRESS_SIZE;
        const pq = (this.packed[q] ??= new PackedDriverQueue(arena));
        err = pq.configure({ size: n, descOff: desc, driverOff: avail, deviceOff: used, eventIdx, addrBase: arena.base });
        this.queues[q] = pq;
      } else {
        avail = desc + descTableSize(n);
        used = (avail + availRingSize(n) + 3) & ~3;
        err = this.split[q]!.configure({ size: n, descOff: desc, availOff: avail, usedOff: used, eventIdx, addrBase: arena.base });
        this.queues[q] = this.split[q]!;
      }
      if (err) return err;
      out.push({ index: q, desc: arena.base + desc, avail: arena.base + avail, used: arena.base + used });
    }
    return out;
  }

  /** Every buffer posted to or held by the backend goes back to the pool. */
  private releaseBuffers(): void {
    for (const own of this.owner) {
      for (let i = 0; i < own.length; i++) {
        if (own[i]! >= 0) this.pool.release(own[i]!);
        own[i] = -1;
      }
    }
    this.txHeld = 0;
  }

  // ---- datapath ----

  /**
   * Keep receiveq `qi` full of empty pool buffers, within two limits that keep ports from
   * starving each other and the rest of the switch: one port posts at most an eighth of the pool
   * (rxCap per receiveq: 512 buffers of the default 4096, so four ports with full 1024-entry
   * rings fit), and posting never takes the pool below half, which stays free for frames in
   * flight: what taps and vhost-user peers send, segmentation, and the buffers transmit rings
   * hold until the backend has sent them. (Measured in the VM with three vhost-net ports and
   * only a quarter kept free: the pool sat at that edge and refills were cut short all the
   * time.) A refill that the second limit stops is counted (rx_post_short, unless `count` is false: housekeeping
   * retries) and returns true; housekeeping then tries again.
   */
  private refill(qi: number, count = true): boolean {
    const q = this.queues[qi]!;
    const own = this.owner[qi]!;
    const pool = this.pool;
    const cap = this.rxCap;
    let added = 0;
    let short = false;
    const reserve = pool.count >> 1;
    // Each receive chain is one descriptor: size - numFree is what the ring holds posted.
    while (q.numFree > 0 && q.size - q.numFree < cap) {
      if (pool.available() <= reserve) {
        short = true;
        break;
      }
      const h = pool.alloc();
      if (h < 0) {
        short = true;
        break;
      }
      this.one[0] = pool.hdrOffset(h);
      this.len1[0] = BUF_SIZE;
      const head = q.add(this.one, this.len1, this.w1, 1);
      if (head < 0) {
        pool.release(h);
        break;
      }
      own[head] = h;
      added++;
    }
    if (short && count) this.counters[C.rx_post_short]!++;
    if (added > 0) {
      this.counters[C.rx_buffers_posted]! += added;
      q.publish();
      if (q.kickNeeded()) this.notify(qi);
    }
    return short;
  }

  receive(queue: number, out: Int32Array, max: number): number {
    if (queue === VhostUserDriver.Q_LISTEN) {
      this.user?.onListen();
      this.rearm();
      return 0;
    }
    if (queue === VhostUserDriver.Q_CONN) {
      this.user?.onReadable();
      this.rearm();
      return 0;
    }
    if ((queue & 1) !== 0 || queue >= 2 * this.pairs) return 0;
    if (!this.running) {
      this.drainCall(queue);
      return 0;
    }
    const q = this.queues[queue]!;
    const own = this.owner[queue]!;
    const pool = this.pool;
    const c = this.counters;
    const mrg = (this.features & bit(NET_F.MRG_RXBUF)) !== 0n;
    let n = 0;
    let got = 0;
    while (n < max) {
      const head = q.getUsed();
      if (head < 0) break;
      got++;
      const h = own[head]!;
      own[head] = -1;
      if (h < 0) continue;
      const len = q.usedLen;
      const ho = pool.hdrOffset(h);
      // One 66 KiB buffer holds any frame: with MRG_RXBUF num_buffers must be 1; without it
      // the field means nothing and is set to 1 for the ports the frame goes to.
      if (len < VNET_HDR + ETH_HLEN || len > BUF_SIZE || (mrg && (pool.bytes[ho + 10] !== 1 || pool.bytes[ho + 11] !== 0))) {
        c[C.rx_dropped_malformed]!++;
        pool.release(h);
        continue;
      }
      pool.bytes[ho + 10] = 1;
      pool.bytes[ho + 11] = 0;
      pool.len[h] = len - VNET_HDR;
      c[C.rx_packets]!++;
      c[C.rx_bytes]! += len - VNET_HDR;
      if (pool.bytes[ho + 1] !== 0) c[C.rx_gso_packets]!++;
      out[n++] = h;
    }
    this.rxPair[queue >> 1]! += n;
    if (q.broken !== null) {
      this.broken(`receiveq ${queue >> 1} broken: ${q.broken}`);
      return n;
    }
    // When pier last read used.idx the backend had filled every buffer posted to it: until the
    // refill below it had nowhere to put a frame (the DPDK thread's receive-side loss is here).
    if (got > 0 && q.deviceHeld() === 0) c[C.rx_ring_empty]!++;
    if (this.refill(queue)) this.soon();
    if (n === max) this.ctx.again(this, queue);
    else {
      // Going to sleep on this ring: clear the eventfd, then ask for a notification (with
      // EVENT_IDX: used_event = what pier consumed; until now the backend had no reason to
      // notify) and look once more, so a frame that landed in between is not left waiting.
      this.drainCall(queue);
      if (q.enableUsedNotifications()) this.ctx.again(this, queue);
    }
    return n;
  }

  // pier's own kick and call eventfds are shared with the backend, which could clear O_NONBLOCK
  // on them (a vhost-user backend holds the same file description): both go through the
  // watched peer-fd calls, so that costs a counter and the session, never a frozen dataplane.

  private notify(q: number): void {
    const r = signalPeer(this.kick[q]!.fd);
    if (r === 0) this.counters[C.notify_sent]!++;
    else this.peerFdFailed(q, 'kick', r);
  }

  private drainCall(q: number): void {
    const r = drainPeer(this.call[q]!.fd);
    if (r === 0) this.counters[C.notify_received]!++;
    else if (r !== -libc.EAGAIN) this.peerFdFailed(q, 'call', r);
  }

  private peerFdFailed(q: number, what: string, r: number): void {
    if (r === -libc.EAGAIN) {
      this.counters[C.notify_dropped]!++;
      return;
    }
    if (r === -libc.EINTR) this.counters[C.notify_stalled]!++;
    this.broken(`queue ${q} ${what} eventfd: ${r === -libc.EINTR ? 'it blocked pier (O_NONBLOCK cleared by the backend) until the watchdog interrupted it' : `errno ${-r}`}`);
  }

  /** Give the pool back the buffers the backend has sent from transmitq `qi`. */
  private reclaimTx(qi: number): void {
    const q = this.queues[qi]!;
    const own = this.owner[qi]!;
    for (;;) {
      const head = q.getUsed();
      if (head < 0) break;
      const h = own[head]!;
      own[head] = -1;
      if (h >= 0) {
        this.pool.release(h);
        this.txHeld--;
      }
    }
  }

  transmit(qh: Int32Array, n: number): void {
    const pool = this.pool;
    const c = this.counters;
    if (!this.running) {
      for (let i = 0; i < n; i++) pool.release(qh[i]!);
      c[C.tx_dropped_link_down]! += n;
      return;
    }
    const pairs = this.pairs;
    for (let k = 0; k < pairs; k++) this.reclaimTx(2 * k + 1);
    /** Bit k: transmitq k got packets in this call. */
    let touched = 0;
    for (let i = 0; i < n; i++) {
      const h = qh[i]!;
      const len = pool.len[h]!;
      const ho = pool.hdrOffset(h);
      // One flow, one queue pair (and so in order); flows spread over the pairs.
      const k = pairs === 1 ? 0 : flowHash(pool.bytes, ho + VNET_HDR, len) % pairs;
      const q = this.queues[2 * k + 1]!;
      pool.bytes[ho + 10] = 0; // num_buffers is the device's to set
      pool.bytes[ho + 11] = 0;
      this.one[0] = ho;
      this.len1[0] = VNET_HDR + len;
      const head = this.txHeld < this.txCap ? q.add(this.one, this.len1, this.ro1, 1) : -1;
      if (head < 0) {
        c[C.tx_dropped_full]!++;
        pool.release(h);
        continue;
      }
      this.txHeld++;
      this.owner[2 * k + 1]![head] = h; // the backend reads it in place; released when it is used
      c[C.tx_packets]!++;
      c[C.tx_bytes]! += len;
      this.txPair[k]!++;
      if (pool.bytes[ho + 1] !== 0) c[C.tx_gso_packets]!++;
      touched |= 1 << k;
    }
    if (touched !== 0) this.soon(); // buffers are in flight: reclaimed here or by housekeeping
    for (let k = 0; touched !== 0; k++, touched >>>= 1) {
      if ((touched & 1) === 0) continue;
      const q = this.queues[2 * k + 1]!;
      q.publish();
      if (q.kickNeeded()) this.notify(2 * k + 1);
      if (q.broken !== null) return this.broken(`transmitq ${k} broken: ${q.broken}`);
    }
  }

  /**
   * Ring levels once a second: in the receiveqs, frames the backend has filled and pier not yet
   * taken, and the empty buffers it still holds; in the transmitqs, the free descriptors.
   */
  override sampleLevels(): void {
    let waiting = 0;
    let held = 0;
    let room = 0;
    let size = 0;
    for (let k = 0; k < this.pairs; k++) {
      const rq = this.queues[2 * k]!;
      const tq = this.queues[2 * k + 1]!;
      if (!rq.ready || !tq.ready) continue;
      waiting += rq.pendingUsed();
      held += rq.deviceHeld();
      room += tq.numFree;
      size += rq.size;
    }
    writeLevels(this.levels!, waiting, held, room, size, size);
  }

  override describe(): VirtioUserView {
    const held = (qi: number): number => this.owner[qi]!.reduce((k, h) => k + (h >= 0 ? 1 : 0), 0);
    const pairs = Array.from({ length: this.pairs }, (_, k) => ({
      pair: k, rxPosted: held(2 * k), txInFlight: held(2 * k + 1), rxPackets: this.rxPair[k]!, txPackets: this.txPair[k]!,
    }));
    return {
      backend: this.opts.backend,
      mode: this.opts.server ? 'server' : 'client',
      path: this.opts.path,
      connected: this.user ? this.user.conn !== null : this.running,
      link: this.running ? 'up' : 'down',
      ring: (this.features & bit(VIRTIO_F_RING_PACKED)) !== 0n ? 'packed' : 'split',
      features: decodeFeatures(this.features, this.offered & (this.backend?.wanted ?? 0n)),
      queueSize: this.opts.queueSize,
      queuePairs: this.pairs,
      backendQueuePairs: this.backendPairs || undefined,
      /** Most buffers posted per receive ring: min(ring, the port's eighth of the pool / pairs). */
      rxPostLimit: Math.min(this.opts.queueSize, this.rxCap),
      /** Most buffers the transmit rings hold at once (an eighth of the pool). */
      txHoldLimit: this.txCap,
      rxPosted: pairs.reduce((k, p) => k + p.rxPosted, 0),
      txInFlight: pairs.reduce((k, p) => k + p.txInFlight, 0),
      pairs,
      // The ring counters of `pier stats`, here too: the driver's side of the exception path.
      rings: {
        rx_buffers_posted: this.counters[C.rx_buffers_posted]!, rx_ring_empty: this.counters[C.rx_ring_empty]!,
        rx_post_short: this.counters[C.rx_post_short]!, tx_dropped_full: this.counters[C.tx_dropped_full]!,
      },
      connects: this.user ? this.user.connects : this.connects,
      disconnects: this.disconnects,
      lastError: (this.user ? this.user.lastError : this.lastError) || undefined,
    };
  }

  /**
   * A ring broke its rules under pier (the backend wrote nonsense into a used ring). vhost-user:
   * the connection ends and the backend may come back; vhost-net: the kernel does not do that,
   * the port stops and says why.
   */
  private broken(why: string): void {
    if (this.user) {
      this.user.end(new Disconnect('protocol', why));
      this.rearm();
      return;
    }
    // The kernel's worker may still write into what is posted: the buffers stay with the port
    // until close().
    this.lastError = why;
    this.running = false;
  }

  close(): void {
    if (this.user) this.user.close();
    else {
      // The control plane closes the vhost-net fds (which stops the kernel workers); buffers go back.
      this.running = false;
      this.releaseBuffers();
    }
    for (let k = 0; k < this.pairs; k++) this.ctx?.unwatch(this.call[2 * k]!.fd);
    this.timerAt = 0;
    this.housekeepAt = 0;
    for (const e of [...this.kick, ...this.call]) e.close();
    this.pool.arena.release(this.ringsOff);
    libc.close(this.ringsFd);
  }
}

export const virtioUserDataplane: DataplaneHalf<VirtioUserSpec> = {
  create: (b, spec, pool) => new VirtioUserPort(b.index, b.name, b.bridge, b.counters, pool, spec),
};
