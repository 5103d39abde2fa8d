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
const RXQ = 0;
const TXQ = 1;
const ETH_HLEN = 14;
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5000;
const bit = (n: number): bigint => 1n << BigInt(n);

/** What pier asks of the backend; the acked set is this & what the backend offers. */
const WANTED = bit(VIRTIO_F_VERSION_1) | bit(P.F_PROTOCOL_FEATURES) | bit(VIRTIO_F_EVENT_IDX) | bit(NET_F.MRG_RXBUF) | bit(NET_F.CSUM) |
  bit(NET_F.GUEST_CSUM) | bit(NET_F.HOST_TSO4) | bit(NET_F.HOST_TSO6) | bit(NET_F.GUEST_TSO4) | bit(NET_F.GUEST_TSO6) |
  bit(NET_F.HOST_ECN) | bit(NET_F.GUEST_ECN);

type Phase = 'down' | 'features' | 'protocol' | 'running';

export class VirtioUserPort extends Port {
  readonly fds: readonly number[] = [];
  private ctx!: PortContext;
  private conn = -1;
  private phase: Phase = 'down';
  private offered = 0n;
  features = 0n;
  private readonly ringsFd: number;
  private readonly ringsOff: number;
  private readonly ringsSize: number;
  private readonly queues: DriverQueue[];
  /** Pool handle each descriptor head carries, per queue (-1: none). */
  private readonly owner: Int32Array[];
  private readonly kick = [new EventFd(), new EventFd()];
  private readonly call = [new EventFd(), new EventFd()];
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
    const one = (descTableSize(n) + availRingSize(n) + 3 + usedRingSize(n) + 4095) & ~4095;
    this.ringsSize = 2 * one;
    this.ringsFd = memfd(`pier-virtio-user-${name}`, this.ringsSize);
    this.ringsOff = pool.arena.place(this.ringsFd, 0, this.ringsSize);
    this.queues = [0, 1].map(() => new DriverQueue(pool.arena));
    this.owner = [new Int32Array(n).fill(-1), new Int32Array(n).fill(-1)];
    this.w1[0] = 1;
    this.ro1[0] = 0;
  }

  override attach(ctx: PortContext): void {
    this.ctx = ctx;
    ctx.watch(this, this.call[RXQ]!.fd, RXQ);
    if (this.opts.backend === 'vhost-kernel') this.kernelSetUp();
    else if (this.opts.server) ctx.watch(this, this.opts.listenFd, Q_LISTEN);
    else this.tryConnect();
  }

  /**
   * The vhost-kernel backend: the same rings and buffers, set up with ioctls on /dev/vhost-net,
   * and the kernel's vhost worker moving packets between them and the container's tap. The tap
   * carries the virtio-net header (IFF_VNET_HDR, 12 bytes), so vhost-net adds none of its own
   * and offloads pass through: the tap takes super-frames and partial checksums from pier.
   */
  private kernelSetUp(): void {
    const vk = new VhostKernel(this.opts.vhostFd);
    vk.setOwner();
    this.offered = vk.getFeatures();
    const f = this.offered & (bit(VIRTIO_F_VERSION_1) | bit(NET_F.MRG_RXBUF) | bit(VIRTIO_F_EVENT_IDX));
    if ((f & (bit(VIRTIO_F_VERSION_1) | bit(NET_F.MRG_RXBUF))) === 0n) throw new Error('vhost-net offers neither VERSION_1 nor MRG_RXBUF: its 10-byte header is not supported');
    vk.setFeatures(f);
    this.features = f;
    const regions = this.memRegions();
    // Checked by the control plane before the port was made; again here, in case vhost was
    // reloaded with another limit since, and E2BIG named if the kernel still refuses.
    const mem = memTableProblem(regions.length, readMaxMemRegions().value);
    if (mem) throw new Error(`${mem.message}: ${mem.hint}`);
    try {
      vk.setMemTable(regions);
    } catch (e) {
      if ((e as libc.SysError).code === 'E2BIG') throw new Error(`VHOST_SET_MEM_TABLE: E2BIG: ${memTableProblem(regions.length, 0)!.hint}`);
      throw e;
    }
    const n = this.opts.queueSize;
    const rings = this.configureRings();
    if (typeof rings === 'string') throw new Error(`ring setup: ${rings}`);
    for (const q of [RXQ, TXQ]) {
      const r = rings[q]!;
      vk.setVringNum(q, n);
      vk.setVringBase(q, 0);
      vk.setVringAddr(q, r.desc, r.used, r.avail);
      vk.setVringKick(q, this.kick[q]!.fd);
      vk.setVringCall(q, this.call[q]!.fd);
    }
    this.queues[TXQ]!.disableUsedNotifications();
    for (const q of [RXQ, TXQ]) vk.setBackend(q, this.opts.tapFd);
    this.gsoTypes = GSO_TCP;
    this.acceptsCsum = true;
    this.connects = 1;
    this.phase = 'running';
    this.refill();
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
    if (!this.opts.server && this.conn < 0) this.tryConnect();
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
    if (!this.opts.server) this.timerAt = Date.now() + RECONNECT_MIN_MS;
  }

  override onHangup(queue: number): boolean {
    if (queue === Q_CONN) {
      this.disconnect('backend closed the connection');
      return true;
    }
    return queue !== Q_LISTEN;
  }

  private send(req: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): void {
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

  private onReply(req: number, size: number): void {
    const u64 = size === 8 ? this.msgDv.getBigUint64(P.HDR_SIZE, true) : -1n;
    if (this.phase === 'features' && req === P.Req.GET_FEATURES && u64 >= 0n) {
      this.offered = u64;
      if ((u64 & bit(VIRTIO_F_VERSION_1)) === 0n) return this.disconnect('the backend does not offer VIRTIO_F_VERSION_1 (legacy virtio is not supported)');
      if ((u64 & bit(P.F_PROTOCOL_FEATURES)) !== 0n) {
        this.phase = 'protocol';
        this.send(P.Req.GET_PROTOCOL_FEATURES);
      } else this.setUp();
    } else if (this.phase === 'protocol' && req === P.Req.GET_PROTOCOL_FEATURES) {
      this.send(P.Req.SET_PROTOCOL_FEATURES, u64le(0n)); // none needed: pier sends no NEED_REPLY
      this.setUp();
    } else {
      this.disconnect(`unexpected reply ${P.REQ_NAMES[req] ?? req} in phase ${this.phase}`);
    }
  }

  /** Everything after feature discovery: no further replies are needed. */
  private setUp(): void {
    const f = this.offered & WANTED;
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
    for (const q of [RXQ, TXQ]) {
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
    }
    // The transmitq's completions are reclaimed when pier next sends: no interrupts for it.
    this.queues[TXQ]!.disableUsedNotifications();
    if ((f & bit(P.F_PROTOCOL_FEATURES)) !== 0n) for (const q of [RXQ, TXQ]) this.send(P.Req.SET_VRING_ENABLE, state(q, 1));
    if (this.conn < 0) return;
    this.phase = 'running';
    this.refill();
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
   * Lay both rings out in the port's memfd (zeroed), configure the DriverQueues, and return
   * each ring's addresses as the backend sees them (pier's virtual addresses), or a problem.
   */
  private configureRings(): Array<{ desc: number; avail: number; used: number }> | string {
    const arena = this.pool.arena;
    const n = this.opts.queueSize;
    const per = this.ringsSize / 2;
    arena.bytes.fill(0, this.ringsOff, this.ringsOff + this.ringsSize);
    const out = [];
    for (const q of [RXQ, TXQ]) {
      const desc = this.ringsOff + q * per;
      const avail = desc + descTableSize(n);
      const used = (avail + availRingSize(n) + 3) & ~3;
      const eventIdx = (this.features & bit(VIRTIO_F_EVENT_IDX)) !== 0n;
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
  }

  // ---- datapath ----

  /** Keep the receiveq full of empty pool buffers. */
  private refill(): void {
    const q = this.queues[RXQ]!;
    const own = this.owner[RXQ]!;
    const pool = this.pool;
    let added = 0;
    let short = false;
    // Never let one port's posted buffers take more than half the pool from everyone else.
    const reserve = pool.count >> 1;
    while (q.numFree > 0) {
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
    if (short) this.counters[C.rx_post_short]!++;
    if (added > 0) {
      this.counters[C.rx_buffers_posted]! += added;
      q.publish();
      if (q.kickNeeded()) this.kick[RXQ]!.signal();
    }
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
    if (this.phase !== 'running') {
      this.call[RXQ]!.drain();
      return 0;
    }
    const q = this.queues[RXQ]!;
    const own = this.owner[RXQ]!;
    const pool = this.pool;
    const c = this.counters;
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
      const mrg = (this.features & bit(NET_F.MRG_RXBUF)) !== 0n;
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
    if (q.broken !== null) {
      this.disconnect(`receiveq broken: ${q.broken}`);
      return n;
    }
    // When pier last read used.idx the backend had filled every buffer posted to it: until the
    // refill below it had nowhere to put a frame (the DPDK thread's receive-side loss is here).
    if (got > 0 && q.deviceHeld() === 0) c[C.rx_ring_empty]!++;
    this.refill();
    if (n === max) this.ctx.again(this, RXQ);
    else {
      // Going to sleep on this ring: clear the eventfd, then ask for a notification (with
      // EVENT_IDX: used_event = what pier consumed; until now the backend had no reason to
      // notify) and look once more, so a frame that landed in between is not left waiting.
      this.call[RXQ]!.drain();
      if (q.enableUsedNotifications()) this.ctx.again(this, RXQ);
    }
    return n;
  }

  private reclaimTx(): void {
    const q = this.queues[TXQ]!;
    const own = this.owner[TXQ]!;
    for (;;) {
      const head = q.getUsed();
      if (head < 0) break;
      const h = own[head]!;
      own[head] = -1;
      if (h >= 0) this.pool.release(h);
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
    this.reclaimTx();
    const q = this.queues[TXQ]!;
    const own = this.owner[TXQ]!;
    let sent = 0;
    for (let i = 0; i < n; i++) {
      const h = qh[i]!;
      const len = pool.len[h]!;
      const ho = pool.hdrOffset(h);
      pool.bytes[ho + 10] = 0; // num_buffers is the device's to set
      pool.bytes[ho + 11] = 0;
      this.one[0] = ho;
      this.len1[0] = VNET_HDR + len;
      const head = q.add(this.one, this.len1, this.ro1, 1);
      if (head < 0) {
        c[C.tx_dropped_full]!++;
        pool.release(h);
        continue;
      }
      own[head] = h; // the backend reads it in place; released when it is used
      c[C.tx_packets]!++;
      c[C.tx_bytes]! += len;
      if (pool.bytes[ho + 1] !== 0) c[C.tx_gso_packets]!++;
      sent++;
    }
    if (sent > 0) {
      q.publish();
      if (q.kickNeeded()) this.kick[TXQ]!.signal();
    }
    if (q.broken !== null) this.disconnect(`transmitq broken: ${q.broken}`);
  }

  override describe(): unknown {
    return {
      backend: this.opts.backend,
      mode: this.opts.server ? 'server' : 'client',
      path: this.opts.path,
      connected: this.conn >= 0,
      link: this.phase === 'running' ? 'up' : 'down',
      features: decodeFeatures(this.features, this.offered & WANTED),
      queueSize: this.opts.queueSize,
      rxPosted: this.owner[RXQ]!.reduce((k, h) => k + (h >= 0 ? 1 : 0), 0),
      txInFlight: this.owner[TXQ]!.reduce((k, h) => k + (h >= 0 ? 1 : 0), 0),
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
      // The control plane closes the vhost-net fd (which stops the kernel worker); buffers go back.
      this.releaseBuffers();
      this.phase = 'down';
    }
    this.ctx?.unwatch(this.call[RXQ]!.fd);
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
