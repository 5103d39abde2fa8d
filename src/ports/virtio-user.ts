// A virtio-user port: pier is the virtio *driver*. Its rings live in a memfd of its own and its
// packet buffers are the packet pool itself, both mapped in the arena and handed to the backend
// in SET_MEM_TABLE, so a backend writes received frames straight into pool buffers and reads
// sent frames straight from them: no copy in pier, either way. Guest-physical addresses are
// pier's own virtual addresses (IOVA as VA), so one translation serves the backend for rings
// (user addresses) and descriptors (guest-physical).
//
// This file speaks vhost-user to the backend (DPDK net_vhost, OVS-DPDK dpdkvhostuser, pier's own
// vhost-user port). The handshake is a small state machine driven by epoll like everything else
// in the dataplane thread, so pier can even drive its own vhost-user port in the same thread.
import { C } from '../dataplane/counters.ts';
import { flowHash } from '../dataplane/flow-hash.ts';
import type { PacketPool } from '../dataplane/pool.ts';
import { BUF_SIZE, VNET_HDR } from '../dataplane/pool.ts';
import { Port, type PortContext } from '../dataplane/port.ts';
import type { VirtioUserSpec } from '../dataplane/protocol.ts';
import { VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from '../dataplane/vnet.ts';
import { EventFd, FdReceiver, libc, memfd, sendWithFds, unixAccept, unixConnect, VhostKernel } from '../sys/index.ts';
import { GSO_TCP } from '../dataplane/port.ts';
import * as P from '../vhost/protocol.ts';
import { memTableProblem, readMaxMemRegions } from '../vhost/mem-table.ts';
import { DriverQueue } from '../virtio/driver-queue.ts';
import { decodeFeatures, NET_F } from '../virtio/net-features.ts';
import { availRingSize, descTableSize, usedRingSize, VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1 } from '../virtio/ring.ts';

const Q_LISTEN = 0xfe;
const Q_CONN = 0xfd;
const ETH_HLEN = 14;
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5000;
/** How soon a port looks again at transmit buffers the backend holds and at short refills. */
const HOUSEKEEP_MS = 20;
const bit = (n: number): bigint => 1n << BigInt(n);

/** What pier asks of the backend; the acked set is this & what the backend offers. */
const WANTED = bit(VIRTIO_F_VERSION_1) | bit(P.F_PROTOCOL_FEATURES) | bit(VIRTIO_F_EVENT_IDX) | bit(NET_F.MRG_RXBUF) | bit(NET_F.CSUM) |
  bit(NET_F.GUEST_CSUM) | bit(NET_F.HOST_TSO4) | bit(NET_F.HOST_TSO6) | bit(NET_F.GUEST_TSO4) | bit(NET_F.GUEST_TSO6) |
  bit(NET_F.HOST_ECN) | bit(NET_F.GUEST_ECN);

type Phase = 'down' | 'features' | 'protocol' | 'queues' | 'running';

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
  private conn = -1;
  private phase: Phase = 'down';
  private offered = 0n;
  features = 0n;
  /** Queue pairs pier drives (the queues= option). */
  private readonly pairs: number;
  /** What the backend said it supports (vhost-user GET_QUEUE_NUM); 0 when not asked. */
  private backendPairs = 0;
  private readonly ringsFd: number;
  private readonly ringsOff: number;
  private readonly ringsSize: number;
  private readonly queues: DriverQueue[];
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
  private readonly one = new Float64Array(1);
  private readonly len1 = new Uint32Array(1);
  private readonly w1 = new Uint8Array(1);
  private readonly ro1 = new Uint8Array(1);
  private readonly msg = new Uint8Array(P.HDR_SIZE + 64);
  private readonly msgDv = new DataView(this.msg.buffer);
  private have = 0;
  private readonly receiver = new FdReceiver();
  private reconnectMs = RECONNECT_MIN_MS;
  connects = 0;
  disconnects = 0;
  lastError = '';

  constructor(index: number, name: string, bridge: number, counters: Float64Array, pool: PacketPool, readonly opts: Omit<VirtioUserSpec, 'kind' | 'index' | 'name' | 'bridge' | 'counters'>) {
    super(index, name, bridge, counters, pool, false, false);
    const n = opts.queueSize;
    this.pairs = opts.queuePairs;
    const nq = 2 * this.pairs;
    // Every ring of every queue pair in one memfd: the memory table stays two regions.
    this.ringsSize = nq * ringBytes(n);
    this.ringsFd = memfd(`pier-virtio-user-${name}`, this.ringsSize);
    this.ringsOff = pool.arena.place(this.ringsFd, 0, this.ringsSize);
    this.queues = Array.from({ length: nq }, () => new DriverQueue(pool.arena));
    this.owner = Array.from({ length: nq }, () => new Int32Array(n).fill(-1));
    this.kick = Array.from({ length: nq }, () => new EventFd());
    this.call = Array.from({ length: nq }, () => new EventFd());
    this.rxPair = new Float64Array(this.pairs);
    this.txPair = new Float64Array(this.pairs);
    this.rxCap = Math.max(1, Math.floor((pool.count >> 3) / this.pairs));
    this.txCap = Math.max(1, pool.count >> 3);
    this.w1[0] = 1;
    this.ro1[0] = 0;
  }

  /** What pier asks of this backend: WANTED, and MQ when it drives more than one pair. */
  private wanted(): bigint {
    return WANTED | (this.pairs > 1 ? bit(NET_F.MQ) : 0n);
  }

  override attach(ctx: PortContext): void {
    this.ctx = ctx;
    for (let k = 0; k < this.pairs; k++) ctx.watch(this, this.call[2 * k]!.fd, 2 * k);
    if (this.opts.backend === 'vhost-kernel') this.kernelSetUp();
    else if (this.opts.server) ctx.watch(this, this.opts.listenFd, Q_LISTEN);
    else this.tryConnect();
  }

  /**
   * The vhost-kernel backend: the same rings and buffers, set up with ioctls on /dev/vhost-net,
   * and the kernel's vhost worker moving packets between them and the container's tap. The tap
   * carries the virtio-net header (IFF_VNET_HDR, 12 bytes), so vhost-net adds none of its own
   * and offloads pass through: the tap takes super-frames and partial checksums from pier.
   *
   * vhost-net is one queue pair per fd (its vrings 0 and 1, one kernel worker): queue pair k is
   * vhost fd k, whose backend is queue k of the container's multiqueue tap.
   */
  private kernelSetUp(): void {
    const vks = this.opts.vhostFds.map((fd) => new VhostKernel(fd));
    if (vks.length !== this.pairs || this.opts.tapFds.length !== this.pairs) throw new Error(`${vks.length} vhost-net fds and ${this.opts.tapFds.length} tap queues for ${this.pairs} queue pairs`);
    for (const vk of vks) vk.setOwner();
    this.offered = vks[0]!.getFeatures();
    const f = this.offered & (bit(VIRTIO_F_VERSION_1) | bit(NET_F.MRG_RXBUF) | bit(VIRTIO_F_EVENT_IDX));
    if ((f & (bit(VIRTIO_F_VERSION_1) | bit(NET_F.MRG_RXBUF))) === 0n) throw new Error('vhost-net offers neither VERSION_1 nor MRG_RXBUF: its 10-byte header is not supported');
    const regions = this.memRegions();
    // Checked by the control plane before the port was made; again here, in case vhost was
    // reloaded with another limit since, and E2BIG named if the kernel still refuses.
    const mem = memTableProblem(regions.length, readMaxMemRegions().value);
    if (mem) throw new Error(`${mem.message}: ${mem.hint}`);
    for (const vk of vks) {
      vk.setFeatures(f);
      try {
        vk.setMemTable(regions);
      } catch (e) {
        if ((e as libc.SysError).code === 'E2BIG') throw new Error(`VHOST_SET_MEM_TABLE: E2BIG: ${memTableProblem(regions.length, 0)!.hint}`);
        throw e;
      }
    }
    this.features = f;
    const n = this.opts.queueSize;
    const rings = this.configureRings();
    if (typeof rings === 'string') throw new Error(`ring setup: ${rings}`);
    for (let k = 0; k < this.pairs; k++) {
      const vk = vks[k]!;
      for (const v of [0, 1]) {
        const q = 2 * k + v;
        const r = rings[q]!;
        vk.setVringNum(v, n);
        vk.setVringBase(v, 0);
        vk.setVringAddr(v, r.desc, r.used, r.avail);
        vk.setVringKick(v, this.kick[q]!.fd);
        vk.setVringCall(v, this.call[q]!.fd);
      }
      this.queues[2 * k + 1]!.disableUsedNotifications();
      for (const v of [0, 1]) vk.setBackend(v, this.opts.tapFds[k]!);
    }
    this.gsoTypes = GSO_TCP;
    this.acceptsCsum = true;
    this.connects = 1;
    this.phase = 'running';
    for (let k = 0; k < this.pairs; k++) if (this.refill(2 * k)) this.soon();
  }

  // ---- connection ----

  private tryConnect(): void {
    try {
      this.adopt(unixConnect(this.opts.path));
      this.reconnectMs = RECONNECT_MIN_MS;
    } catch (e) {
      this.lastError = (e as Error).message;
      this.timerAt = Date.now() + this.reconnectMs;
      this.reconnectMs = Math.min(RECONNECT_MAX_MS, this.reconnectMs * 2);
    }
  }

  override onTimer(): void {
    if (this.opts.backend === 'vhost-user' && !this.opts.server && this.conn < 0) this.tryConnect();
    else if (this.phase === 'running') this.housekeep();
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
    if (again) this.timerAt = Date.now() + HOUSEKEEP_MS;
  }

  /** Make sure housekeep() runs soon (a no-op when it is already due). */
  private soon(): void {
    if (this.timerAt === 0) this.timerAt = Date.now() + HOUSEKEEP_MS;
  }

  private adopt(fd: number): void {
    this.conn = fd;
    this.have = 0;
    this.connects++;
    this.ctx.watch(this, fd, Q_CONN);
    this.phase = 'features';
    this.send(P.Req.GET_FEATURES);
  }

  private disconnect(why: string): void {
    if (this.conn < 0) return;
    if (why) this.lastError = why;
    this.ctx.unwatch(this.conn);
    libc.close(this.conn);
    this.conn = -1;
    this.phase = 'down';
    this.features = 0n;
    this.gsoTypes = 0;
    this.acceptsCsum = false;
    this.disconnects++;
    this.releaseBuffers();
    if (!this.opts.server) {
      // A backend that refuses what pier needs (a queue count, a feature) is asked again at the
      // slowest pace; one that went away, soon.
      this.timerAt = Date.now() + (why.startsWith('refused: ') ? RECONNECT_MAX_MS : RECONNECT_MIN_MS);
    }
  }

  override onHangup(queue: number): boolean {
    if (queue === Q_CONN) {
      this.disconnect('backend closed the connection');
      return true;
    }
    return queue !== Q_LISTEN;
  }

  private send(req: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): void {
    if (this.conn < 0) return;
    const m = new Uint8Array(P.HDR_SIZE + payload.length);
    const dv = new DataView(m.buffer);
    dv.setUint32(0, req, true);
    dv.setUint32(4, P.VHOST_USER_VERSION, true);
    dv.setUint32(8, payload.length, true);
    m.set(payload, P.HDR_SIZE);
    try {
      if (sendWithFds(this.conn, m, m.length, fds) !== m.length) this.disconnect(`short write of ${P.REQ_NAMES[req]}`);
    } catch (e) {
      this.disconnect((e as Error).message);
    }
  }

  private readReplies(): void {
    for (let guard = 0; guard < 16 && this.conn >= 0; guard++) {
      const want = this.have < P.HDR_SIZE ? P.HDR_SIZE : P.HDR_SIZE + this.msgDv.getUint32(8, true);
      let n: number;
      try {
        n = this.receiver.recv(this.conn, this.msg, this.have, want - this.have);
      } catch (e) {
        return this.disconnect((e as Error).message);
      }
      for (const fd of this.receiver.fds) libc.close(fd); // a backend sends pier no fds
      if (n < 0) return;
      if (n === 0) return this.disconnect('backend closed the connection');
      this.have += n;
      if (this.have === P.HDR_SIZE && this.msgDv.getUint32(8, true) > 64) return this.disconnect('oversized reply from the backend');
      if (this.have >= P.HDR_SIZE && this.have === P.HDR_SIZE + this.msgDv.getUint32(8, true)) {
        this.have = 0;
        this.onReply(this.msgDv.getUint32(0, true), this.msgDv.getUint32(8, true));
      }
    }
  }

  /**
   * The three questions pier asks (GET_FEATURES, GET_PROTOCOL_FEATURES, and GET_QUEUE_NUM when
   * it drives several queue pairs); everything else it sends needs no reply.
   */
  private onReply(req: number, size: number): void {
    const u64 = size === 8 ? this.msgDv.getBigUint64(P.HDR_SIZE, true) : -1n;
    if (this.phase === 'features' && req === P.Req.GET_FEATURES && u64 >= 0n) {
      this.offered = u64;
      if ((u64 & bit(VIRTIO_F_VERSION_1)) === 0n) return this.disconnect('refused: the backend does not offer VIRTIO_F_VERSION_1 (legacy virtio is not supported)');
      if (this.pairs > 1 && (u64 & bit(NET_F.MQ)) === 0n) {
        return this.disconnect(`refused: queues=${this.pairs} needs VIRTIO_NET_F_MQ and the backend does not offer it: use queues=1, or give the backend queues (DPDK net_vhost: queues=${this.pairs})`);
      }
      if ((u64 & bit(P.F_PROTOCOL_FEATURES)) !== 0n) {
        this.phase = 'protocol';
        this.send(P.Req.GET_PROTOCOL_FEATURES);
      } else this.setUp();
    } else if (this.phase === 'protocol' && req === P.Req.GET_PROTOCOL_FEATURES && u64 >= 0n) {
      // pier sends no NEED_REPLY, so it needs no REPLY_ACK; with several queue pairs it asks for
      // MQ, which is what makes GET_QUEUE_NUM an answerable question.
      const mq = this.pairs > 1 ? u64 & bit(P.PF_MQ) : 0n;
      this.send(P.Req.SET_PROTOCOL_FEATURES, u64le(mq));
      if (mq !== 0n) {
        this.phase = 'queues';
        this.send(P.Req.GET_QUEUE_NUM);
      } else this.setUp();
    } else if (this.phase === 'queues' && req === P.Req.GET_QUEUE_NUM && u64 >= 0n) {
      this.backendPairs = u64 > 0xffffn ? 0xffff : Number(u64);
      if (this.backendPairs < this.pairs) {
        return this.disconnect(`refused: the backend has ${this.backendPairs} queue pair(s) (GET_QUEUE_NUM) and queues=${this.pairs} asks for more: use queues=${Math.max(1, this.backendPairs)}, or give the backend more queues`);
      }
      this.setUp();
    } else {
      this.disconnect(`unexpected reply ${P.REQ_NAMES[req] ?? req} in phase ${this.phase}`);
    }
  }

  /** Everything after feature discovery: no further replies are needed. */
  private setUp(): void {
    const f = this.offered & this.wanted();
    this.features = f;
    const has = (n: number): boolean => (f & bit(n)) !== 0n;
    this.gsoTypes = (has(NET_F.HOST_TSO4) ? 1 << VIRTIO_NET_HDR_GSO_TCPV4 : 0) | (has(NET_F.HOST_TSO6) ? 1 << VIRTIO_NET_HDR_GSO_TCPV6 : 0);
    this.acceptsCsum = has(NET_F.CSUM);
    this.send(P.Req.SET_OWNER);
    this.send(P.Req.SET_FEATURES, u64le(f));
    const pool = this.pool;
    // Two regions: the packet pool and this port's rings; guest-physical = user address = VA.
    const regions = this.memRegions();
    const table = new Uint8Array(8 + 32 * regions.length);
    const tv = new DataView(table.buffer);
    tv.setUint32(0, regions.length, true);
    regions.forEach(([va, size], i) => {
      tv.setBigUint64(8 + 32 * i, BigInt(va), true);
      tv.setBigUint64(16 + 32 * i, BigInt(size), true);
      tv.setBigUint64(24 + 32 * i, BigInt(va), true);
      tv.setBigUint64(32 + 32 * i, 0n, true);
    });
    this.send(P.Req.SET_MEM_TABLE, table, [pool.fd, this.ringsFd]);
    const n = this.opts.queueSize;
    const rings = this.configureRings();
    if (typeof rings === 'string') return this.disconnect(`ring setup: ${rings}`);
    for (let q = 0; q < 2 * this.pairs; q++) {
      const r = rings[q]!;
      this.send(P.Req.SET_VRING_NUM, state(q, n));
      this.send(P.Req.SET_VRING_BASE, state(q, 0));
      const a = new Uint8Array(40);
      const av = new DataView(a.buffer);
      av.setUint32(0, q, true);
      av.setBigUint64(8, BigInt(r.desc), true);
      av.setBigUint64(16, BigInt(r.used), true);
      av.setBigUint64(24, BigInt(r.avail), true);
      this.send(P.Req.SET_VRING_ADDR, a);
      this.send(P.Req.SET_VRING_CALL, u64le(BigInt(q)), [this.call[q]!.fd]);
      this.send(P.Req.SET_VRING_KICK, u64le(BigInt(q)), [this.kick[q]!.fd]);
      // A transmitq's completions are reclaimed when pier next sends: no interrupts for it.
      if ((q & 1) === 1) this.queues[q]!.disableUsedNotifications();
    }
    // With protocol features rings start disabled; every ring of every pair is enabled here. A
    // backend with a control queue of its own never sees one from pier: like DPDK's virtio-user
    // and QEMU, pier does not ask for CTRL_VQ, and the pairs in use are the enabled ones (what a
    // VQ_PAIRS_SET would have said is said by SET_VRING_ENABLE per vring).
    if (has(P.F_PROTOCOL_FEATURES)) for (let q = 0; q < 2 * this.pairs; q++) this.send(P.Req.SET_VRING_ENABLE, state(q, 1));
    if (this.conn < 0) return;
    this.phase = 'running';
    for (let k = 0; k < this.pairs; k++) if (this.refill(2 * k)) this.soon();
  }

  /**
   * The memory table, as [address, size] (guest-physical = user address = pier's VA): the
   * packet pool and this port's rings, DRIVER_MEM_REGIONS in all.
   */
  private memRegions(): Array<[number, number]> {
    const arena = this.pool.arena;
    return [[arena.base + this.pool.offset, this.pool.count * BUF_SIZE], [arena.base + this.ringsOff, this.ringsSize]];
  }

  /**
   * Lay every ring out in the port's memfd (zeroed), configure the DriverQueues, and return
   * each ring's addresses as the backend sees them (pier's virtual addresses), or a problem.
   */
  private configureRings(): Array<{ desc: number; avail: number; used: number }> | string {
    const arena = this.pool.arena;
    const n = this.opts.queueSize;
    const per = ringBytes(n);
    const eventIdx = (this.features & bit(VIRTIO_F_EVENT_IDX)) !== 0n;
    arena.bytes.fill(0, this.ringsOff, this.ringsOff + this.ringsSize);
    const out = [];
    for (let q = 0; q < 2 * this.pairs; q++) {
      const desc = this.ringsOff + q * per;
      const avail = desc + descTableSize(n);
      const used = (avail + availRingSize(n) + 3) & ~3;
      const err = this.queues[q]!.configure({ size: n, descOff: desc, availOff: avail, usedOff: used, eventIdx, addrBase: arena.base });
      if (err) return err;
      out.push({ desc: arena.base + desc, avail: arena.base + avail, used: arena.base + used });
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
      if (q.kickNeeded()) this.kick[qi]!.signal();
    }
    return short;
  }

  receive(queue: number, out: Int32Array, max: number): number {
    if (queue === Q_LISTEN) {
      const fd = unixAccept(this.opts.listenFd);
      if (fd >= 0 && this.conn >= 0) libc.close(fd);
      else if (fd >= 0) this.adopt(fd);
      return 0;
    }
    if (queue === Q_CONN) {
      this.readReplies();
      return 0;
    }
    if ((queue & 1) !== 0 || queue >= 2 * this.pairs) return 0;
    if (this.phase !== 'running') {
      this.call[queue]!.drain();
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
      this.disconnect(`receiveq ${queue >> 1} broken: ${q.broken}`);
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
      this.call[queue]!.drain();
      if (q.enableUsedNotifications()) this.ctx.again(this, queue);
    }
    return n;
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
    if (this.phase !== 'running') {
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
      if (q.kickNeeded()) this.kick[2 * k + 1]!.signal();
      if (q.broken !== null) return this.disconnect(`transmitq ${k} broken: ${q.broken}`);
    }
  }

  override describe(): unknown {
    const held = (qi: number): number => this.owner[qi]!.reduce((k, h) => k + (h >= 0 ? 1 : 0), 0);
    const pairs = Array.from({ length: this.pairs }, (_, k) => ({
      pair: k, rxPosted: held(2 * k), txInFlight: held(2 * k + 1), rxPackets: this.rxPair[k]!, txPackets: this.txPair[k]!,
    }));
    return {
      backend: this.opts.backend,
      mode: this.opts.server ? 'server' : 'client',
      path: this.opts.path,
      connected: this.conn >= 0,
      link: this.phase === 'running' ? 'up' : 'down',
      features: decodeFeatures(this.features, this.offered & this.wanted()),
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
      connects: this.connects,
      disconnects: this.disconnects,
      lastError: this.lastError || undefined,
    };
  }

  close(): void {
    this.disconnect('');
    if (this.opts.backend === 'vhost-kernel') {
      // The control plane closes the vhost-net fds (which stops the kernel workers); buffers go back.
      this.releaseBuffers();
      this.phase = 'down';
    }
    for (let k = 0; k < this.pairs; k++) this.ctx?.unwatch(this.call[2 * k]!.fd);
    if (this.opts.server) this.ctx?.unwatch(this.opts.listenFd);
    this.timerAt = 0;
    for (const e of [...this.kick, ...this.call]) e.close();
    this.pool.arena.release(this.ringsOff);
    libc.close(this.ringsFd);
  }
}

function u64le(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

function state(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, index, true);
  dv.setUint32(4, num, true);
  return b;
}
