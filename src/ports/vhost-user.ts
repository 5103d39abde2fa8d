// A vhost-user port: pier is the virtio-net *device* (the vhost-user backend) for a DPDK
// application's virtio-user driver or a VM's virtio-net, moving packets through the peer's
// virtqueues in its own shared memory, mapped into pier's arena. Runs in the dataplane thread:
// the protocol socket and the kick eventfds sit in the engine's epoll set next to everything else.
//
// Queue numbering (virtio-net): vring 2k is receiveq k (pier -> peer), 2k+1 transmitq k
// (peer -> pier). Epoll tokens carry the vring index; two more mark the sockets.
import { C } from '../dataplane/counters.ts';
import { flowHash } from '../dataplane/flow-hash.ts';
import type { BufferLender, PacketPool } from '../dataplane/pool.ts';
import type { VhostUserSpec } from '../dataplane/protocol.ts';
import { BUF_SIZE, VNET_HDR } from '../dataplane/pool.ts';
import { GSO_TCP, Port, type PortContext } from '../dataplane/port.ts';
import { VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from '../dataplane/vnet.ts';
import { closeAll } from '../memory/guest-memory.ts';
import { FdReceiver, libc, unixAccept, unixConnect } from '../sys/index.ts';
import { VhostError, VhostUserBackend, type Vring, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1 } from '../vhost/backend.ts';
import * as P from '../vhost/protocol.ts';
import { decodeFeatures, NET_F } from '../virtio/net-features.ts';

const Q_LISTEN = 0xfe;
const Q_CONN = 0xfd;
const ETH_HLEN = 14;
/** Most receive buffers one packet may take with MRG_RXBUF (a 64 KiB frame in 1 KiB buffers). */
const MAX_MERGE = 128;
const MAX_SEGS = 1024;
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5000;

/** What the control plane tells the port (see VhostUserSpec). */
export type VhostUserOptions = Omit<VhostUserSpec, 'kind' | 'index' | 'name' | 'bridge' | 'counters'>;

const bit = (n: number): bigint => 1n << BigInt(n);

export function offeredFeatures(queuePairs: number, mtu: number): bigint {
  let f = bit(VIRTIO_F_VERSION_1) | bit(P.F_PROTOCOL_FEATURES) | bit(VIRTIO_F_EVENT_IDX) | bit(VIRTIO_F_INDIRECT_DESC) |
    bit(NET_F.MRG_RXBUF) | bit(NET_F.CSUM) | bit(NET_F.GUEST_CSUM) | bit(NET_F.HOST_TSO4) | bit(NET_F.HOST_TSO6) |
    bit(NET_F.GUEST_TSO4) | bit(NET_F.GUEST_TSO6) | bit(NET_F.HOST_ECN) | bit(NET_F.GUEST_ECN) | bit(NET_F.STATUS);
  if (mtu > 0) f |= bit(NET_F.MTU);
  if (queuePairs > 1) f |= bit(NET_F.MQ) | bit(NET_F.CTRL_VQ);
  return f;
}

export class VhostUserPort extends Port implements BufferLender {
  readonly fds: readonly number[] = [];
  private ctx!: PortContext;
  private conn = -1;
  readonly backend: VhostUserBackend;
  private readonly msg = new Uint8Array(P.HDR_SIZE + P.MAX_PAYLOAD);
  private readonly msgDv = new DataView(this.msg.buffer);
  private have = 0;
  private readonly msgFds: number[] = [];
  private readonly receiver = new FdReceiver();
  private readonly kick = new BigUint64Array(1);
  private readonly one = new BigUint64Array([1n]);
  /** Virtio-net header length the driver uses: 12 with VERSION_1 or MRG_RXBUF, else 10. */
  private hdrLen = 12;
  private mergeable = false;
  private reconnectMs = RECONNECT_MIN_MS;
  /** Scatter plan for one packet towards the peer: segments and the chains they belong to. */
  private readonly segOff = new Float64Array(MAX_SEGS);
  private readonly segLen = new Uint32Array(MAX_SEGS);
  private readonly chainHead = new Uint32Array(MAX_MERGE);
  private readonly chainCap = new Float64Array(MAX_MERGE);
  /** Transmit buffers lent to the pool in the current burst, and a ring that broke meanwhile. */
  private lent = 0;
  private brokenDuringBurst: Vring | null = null;
  connects = 0;
  disconnects = 0;
  protocolErrors = 0;
  lastError = '';

  constructor(index: number, name: string, bridge: number, counters: Float64Array, pool: PacketPool, readonly opts: VhostUserOptions) {
    super(index, name, bridge, counters, pool, false, false);
    this.busyPoll = opts.busyPoll;
    this.acceptsExternal = true; // toGuest copies and is done
    const vrings = 2 * opts.queuePairs + (opts.queuePairs > 1 ? 1 : 0);
    this.backend = new VhostUserBackend(pool.arena, {
      features: offeredFeatures(opts.queuePairs, opts.mtu),
      protocolFeatures: bit(P.PF_MQ) | bit(P.PF_REPLY_ACK) | bit(P.PF_MTU) | bit(P.PF_STATUS),
      vrings, queuePairs: opts.queuePairs, mtu: opts.mtu, maxQueueSize: opts.maxQueueSize,
    }, {
      onStart: (v) => this.vringStarted(v),
      onStop: (v) => this.vringStopped(v),
      onFeatures: (f) => this.featuresChanged(f),
    });
  }

  override attach(ctx: PortContext): void {
    this.ctx = ctx;
    if (this.opts.server) ctx.watch(this, this.opts.listenFd, Q_LISTEN);
    else this.tryConnect();
  }

  // ---- connection handling ----

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
  }

  private accept(): void {
    let fd: number;
    try {
      fd = unixAccept(this.opts.listenFd);
    } catch (e) {
      this.lastError = (e as Error).message;
      return;
    }
    if (fd < 0) return;
    if (this.conn >= 0) {
      // One frontend at a time: a second one is turned away, the first keeps its port.
      libc.close(fd);
      this.lastError = 'refused a second frontend while one is connected';
      return;
    }
    this.adopt(fd);
  }

  /** The frontend went away or broke the protocol: forget everything it set up. */
  private disconnect(why: string): void {
    if (this.conn < 0) return;
    if (why) this.lastError = why;
    this.ctx.unwatch(this.conn);
    libc.close(this.conn);
    this.conn = -1;
    closeAll(this.msgFds.splice(0));
    this.backend.reset();
    this.gsoTypes = 0;
    this.acceptsCsum = false;
    this.disconnects++;
    if (!this.opts.server) {
      this.reconnectMs = RECONNECT_MIN_MS;
      this.timerAt = Date.now() + RECONNECT_MIN_MS;
    }
  }

  override onHangup(queue: number): boolean {
    if (queue === Q_CONN) {
      this.readMessages(); // take what is still buffered, then notice EOF
      this.disconnect('frontend closed the connection');
      return true;
    }
    if (queue === Q_LISTEN) return false;
    // A kick eventfd does not hang up; if one errs, the ring is unusable.
    const v = this.backend.vrings[queue];
    if (v) this.disconnect(`vring ${queue}: kick fd error`);
    return true;
  }

  // ---- protocol messages ----

  private readMessages(): void {
    for (let guard = 0; guard < 64 && this.conn >= 0; guard++) {
      const want = this.have < P.HDR_SIZE ? P.HDR_SIZE : P.HDR_SIZE + this.msgDv.getUint32(8, true);
      let n: number;
      try {
        n = this.receiver.recv(this.conn, this.msg, this.have, want - this.have);
      } catch (e) {
        this.disconnect((e as Error).message);
        return;
      }
      this.msgFds.push(...this.receiver.fds);
      if (this.receiver.truncated) return this.disconnect('file descriptors were truncated (more than pier accepts in one message)');
      if (n < 0) return; // EAGAIN: the rest comes later
      if (n === 0) return this.disconnect('frontend closed the connection');
      this.have += n;
      if (this.have === P.HDR_SIZE) {
        const size = this.msgDv.getUint32(8, true);
        if (size > P.MAX_PAYLOAD) return this.protocolError(`message of ${size} bytes is over ${P.MAX_PAYLOAD}`, true);
        if ((this.msgDv.getUint32(4, true) & P.FLAG_VERSION_MASK) !== P.VHOST_USER_VERSION) return this.protocolError('wrong protocol version in flags', true);
      }
      if (this.have >= P.HDR_SIZE && this.have === P.HDR_SIZE + this.msgDv.getUint32(8, true)) {
        this.have = 0;
        this.dispatch();
      }
    }
  }

  private dispatch(): void {
    const req = this.msgDv.getUint32(0, true);
    const flags = this.msgDv.getUint32(4, true);
    const size = this.msgDv.getUint32(8, true);
    const fds = this.msgFds.splice(0);
    const needReply = (flags & P.FLAG_NEED_REPLY) !== 0 && this.backend.hasProtocol(P.PF_REPLY_ACK);
    const shape = P.SHAPES[req];
    const name = P.REQ_NAMES[req] ?? `request ${req}`;
    if (!shape) {
      // Unknown or unsupported: never acted on; answered "failed" when an answer is expected.
      closeAll(fds);
      this.backend.count(`unsupported ${name}`);
      if (needReply) this.reply(req, ack(1));
      return;
    }
    if (!P.sizeOk(shape, size) || (shape.fds >= 0 && fds.length !== shape.fds)) {
      closeAll(fds);
      this.backend.count(`malformed ${name}`);
      // A request that expects a body cannot be answered sensibly: the frontend is broken.
      if (shape.reply) return this.protocolError(`malformed ${name} (${size} bytes, ${fds.length} fds)`, true);
      if (needReply) this.reply(req, ack(1));
      return;
    }
    let body: Uint8Array | undefined;
    try {
      body = this.backend.handle(req, new DataView(this.msg.buffer, P.HDR_SIZE, size), fds);
    } catch (e) {
      this.backend.count(`failed ${name}`);
      const fatal = shape.reply || (e instanceof VhostError && e.fatal) || !(e instanceof VhostError);
      if (fatal) return this.protocolError(`${name}: ${(e as Error).message}`, true);
      this.protocolError(`${name}: ${(e as Error).message}`, false);
      if (needReply) this.reply(req, ack(1));
      return;
    }
    if (shape.reply) this.reply(req, body ?? new Uint8Array(0));
    else if (needReply) this.reply(req, ack(0));
  }

  private protocolError(why: string, fatal: boolean): void {
    this.protocolErrors++;
    this.lastError = why;
    if (fatal) this.disconnect(why);
  }

  private reply(req: number, body: Uint8Array): void {
    const out = new Uint8Array(P.HDR_SIZE + body.length);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, req, true);
    dv.setUint32(4, P.VHOST_USER_VERSION | P.FLAG_REPLY, true);
    dv.setUint32(8, body.length, true);
    out.set(body, P.HDR_SIZE);
    if (libc.writeBuf(this.conn, out, out.length) !== out.length) this.disconnect('cannot write a reply to the frontend');
  }

  // ---- negotiated state ----

  private featuresChanged(f: bigint): void {
    const has = (n: number): boolean => (f & bit(n)) !== 0n;
    this.mergeable = has(NET_F.MRG_RXBUF);
    this.hdrLen = has(VIRTIO_F_VERSION_1) || this.mergeable ? 12 : 10;
    this.gsoTypes = (has(NET_F.GUEST_TSO4) ? 1 << VIRTIO_NET_HDR_GSO_TCPV4 : 0) | (has(NET_F.GUEST_TSO6) ? 1 << VIRTIO_NET_HDR_GSO_TCPV6 : 0);
    this.acceptsCsum = has(NET_F.GUEST_CSUM);
    void GSO_TCP;
  }

  /** Whether pier waits on this vring's kicks: transmitqs and the control queue, not receiveqs. */
  private kicked(v: Vring): boolean {
    return (v.index & 1) === 1 || v.index === 2 * this.opts.queuePairs;
  }

  private vringStarted(v: Vring): void {
    if (!this.kicked(v)) {
      // A receiveq's kicks say "more buffers": pier never waits for those (it drops when the
      // ring is full, counted), so the driver is asked not to send them at all.
      v.queue.disableNotifications();
      return;
    }
    this.ctx.watch(this, v.kickFd, v.index);
    this.ctx.again(this, v.index); // buffers may be waiting already
    if (this.busyPoll && (v.index & 1) === 1) {
      this.busyQueues.push(v.index);
      v.queue.disableNotifications(); // the driver need not kick a ring that is polled anyway
    }
  }

  private vringStopped(v: Vring): void {
    if (this.kicked(v)) this.ctx.unwatch(v.kickFd);
    const i = this.busyQueues.indexOf(v.index);
    if (i >= 0) this.busyQueues.splice(i, 1);
  }

  // ---- datapath ----

  receive(queue: number, out: Int32Array, max: number): number {
    if (queue === Q_LISTEN) {
      this.accept();
      return 0;
    }
    if (queue === Q_CONN) {
      this.readMessages();
      return 0;
    }
    const v = this.backend.vrings[queue];
    if (!v || !v.started) return 0;
    if (queue === 2 * this.opts.queuePairs) {
      libc.readBuf(v.kickFd, this.kick, 8);
      return this.controlQueue(v);
    }
    if ((queue & 1) === 0) return 0; // receiveq: the driver posted buffers; used when we send
    return this.fromGuest(v, out, max);
  }

  /** Pop up to `max` frames from a transmitq into pool buffers. */
  private fromGuest(v: Vring, out: Int32Array, max: number): number {
    const vq = v.queue;
    const ch = v.chain;
    const pool = this.pool;
    const b = pool.bytes;
    const c = this.counters;
    const hl = this.hdrLen;
    vq.disableNotifications();
    let n = 0;
    let popped = 0;
    let offloads = 0;
    let bytes = 0;
    while (n < max && vq.pop(ch)) {
      popped++;
      const total = ch.readableBytes;
      if (total < hl + ETH_HLEN || total - hl > BUF_SIZE - VNET_HDR) {
        c[C.rx_dropped_malformed]!++;
        vq.push(ch.head, 0);
        continue;
      }
      if (hl === VNET_HDR && ch.count === 1) {
        // Header and frame in one buffer (DPDK and Linux drivers send that): no copy, the
        // packet stays in the driver's buffer, lent to the pool until the burst is forwarded;
        // its descriptor goes back in returnBuffer().
        const ho = ch.offset[0]!;
        const flen = total - hl;
        const h = pool.lend(ho, flen, this, (v.index << 16) | ch.head);
        if (h >= 0) {
          this.lent++;
          bytes += flen;
          const gso = b[ho + 1]!;
          if (gso !== 0) c[C.rx_gso_packets]!++;
          offloads |= gso | b[ho]!;
          out[n++] = h;
          continue;
        }
      }
      const h = pool.alloc();
      if (h < 0) {
        c[C.rx_dropped_no_buffer]!++;
        vq.push(ch.head, 0);
        continue;
      }
      // Gather: the first hl bytes are the virtio-net header, the rest the frame. With a 12-byte
      // header the pool's header and frame are adjacent, so each segment is one copy.
      const ho = pool.hdrOffset(h);
      const fo = ho + VNET_HDR;
      let pos = 0;
      if (hl === VNET_HDR) {
        for (let s = 0; s < ch.readable; s++) {
          const off = ch.offset[s]!;
          const len = ch.len[s]!;
          b.copyWithin(ho + pos, off, off + len);
          pos += len;
        }
      } else for (let s = 0; s < ch.readable; s++) {
        let off = ch.offset[s]!;
        let len = ch.len[s]!;
        if (pos < hl) {
          const k = Math.min(len, hl - pos);
          b.copyWithin(ho + pos, off, off + k);
          pos += k;
          off += k;
          len -= k;
        }
        if (len > 0) {
          b.copyWithin(fo + pos - hl, off, off + len);
          pos += len;
        }
      }
      if (hl === 10) {
        b[ho + 10] = 0;
        b[ho + 11] = 0;
      }
      const flen = total - hl;
      pool.len[h] = flen;
      bytes += flen;
      const gso = b[ho + 1]!;
      if (gso !== 0) c[C.rx_gso_packets]!++;
      offloads |= gso | b[ho]!;
      vq.push(ch.head, 0);
      out[n++] = h;
    }
    this.rxOffloads = offloads !== 0;
    this.rxExternal = this.lent > 0;
    c[C.rx_packets]! += n;
    c[C.rx_bytes]! += bytes;
    if (vq.broken !== null) {
      // Lent packets still live in the driver's memory: reset the port (and unmap it) only
      // once the burst is through.
      if (this.lent > 0) this.brokenDuringBurst = v;
      else this.ringBroken(v);
      return n;
    }
    // With packets lent, the used ring is published in afterBurst(), once they are back.
    if (popped > 0 && this.lent === 0 && vq.flush()) this.signal(v);
    if (this.busyPoll) return n; // polled again next turn anyway; notifications stay off
    if (n === max) {
      this.ctx.again(this, v.index); // more waiting: come back next turn, kicks stay off
      return n;
    }
    // Going to sleep on this ring: clear the doorbell, then ask for kicks and look once more.
    libc.readBuf(v.kickFd, this.kick, 8);
    if (vq.enableNotifications()) this.ctx.again(this, v.index);
    return n;
  }

  transmit(q: Int32Array, n: number): void {
    const pool = this.pool;
    const c = this.counters;
    const pairs = this.enabledPairs();
    const vrings = this.backend.vrings;
    let sent = 0;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const h = q[i]!;
      if (pairs === 0) {
        c[C.tx_dropped_link_down]!++;
      } else if (this.toGuest(vrings[pairs === 1 ? 0 : 2 * (flowHash(pool.bytes, pool.frameOffset(h), pool.len[h]!) % pairs)]!, h)) {
        sent++;
        bytes += pool.len[h]!;
      }
      pool.release(h);
    }
    c[C.tx_packets]! += sent;
    c[C.tx_bytes]! += bytes;
    for (let k = 0; k < this.opts.queuePairs; k++) {
      const v = this.backend.vrings[2 * k]!;
      if (v.started && v.queue.flush()) this.signal(v); // flush() is a no-op when nothing was pushed
    }
  }

  private enabledPairs(): number {
    let k = 0;
    while (k < this.opts.queuePairs && this.backend.vrings[2 * k]!.started) k++;
    return k;
  }

  /** Copy one packet into the peer's receive buffers (several with MRG_RXBUF). */
  private toGuest(v: Vring, h: number): boolean {
    const vq = v.queue;
    const ch = v.chain;
    const pool = this.pool;
    const b = pool.bytes;
    const c = this.counters;
    const hl = this.hdrLen;
    const flen = pool.len[h]!;
    const need = hl + flen;
    // Fast path: one chain whose single writable buffer holds header and frame (the common case
    // for MTU-sized frames in a DPDK or Linux receive ring).
    const start = vq.lastAvailIdx;
    if (hl === VNET_HDR) {
      if (!vq.pop(ch)) {
        if (vq.broken !== null) this.ringBroken(v);
        else c[C.tx_dropped_full]!++;
        return false;
      }
      if (ch.count - ch.readable === 1 && ch.writableBytes >= need) {
        const ho = pool.hdrOffset(h);
        const off = ch.offset[ch.readable]!;
        b.copyWithin(off, ho, ho + need);
        b[off + 10] = 1; // num_buffers, in the copy: the packet may be lent and is read-only
        b[off + 11] = 0;
        vq.push(ch.head, need);
        if (b[ho + 1] !== 0) c[C.tx_gso_packets]!++;
        return true;
      }
      vq.lastAvailIdx = start; // not the simple case: un-pop and take the general path
    }
    // Phase 1: take chains until they hold the packet; give them back if the ring runs dry.
    let chains = 0;
    let segs = 0;
    let room = 0;
    while (room < need) {
      if (chains === (this.mergeable ? MAX_MERGE : 1) || !vq.pop(ch)) {
        if (vq.broken !== null) {
          this.ringBroken(v);
          return false;
        }
        vq.lastAvailIdx = start; // nothing was pushed: un-pop
        c[chains > 0 && !this.mergeable ? C.tx_dropped_too_big : C.tx_dropped_full]!++;
        return false;
      }
      let cap = 0;
      for (let s = ch.readable; s < ch.count && segs < MAX_SEGS; s++) {
        this.segOff[segs] = ch.offset[s]!;
        this.segLen[segs++] = ch.len[s]!;
        cap += ch.len[s]!;
      }
      this.chainHead[chains] = ch.head;
      this.chainCap[chains++] = cap;
      room += cap;
    }
    // Phase 2: scatter header then frame over the segments, chain by chain. The header is built
    // in the pool's scratch (the packet may be lent, read-only): the first 10 bytes as they are,
    // then num_buffers.
    const ho = pool.hdrOffset(h);
    const fo = ho + VNET_HDR;
    const so = pool.scratch;
    b.copyWithin(so, ho, ho + 10);
    b[so + 10] = chains & 0xff;
    b[so + 11] = chains >>> 8;
    let pos = 0;
    let s = 0;
    for (let k = 0; k < chains; k++) {
      let left = Math.min(this.chainCap[k]!, need - pos);
      const used = left;
      while (left > 0) {
        const off = this.segOff[s]!;
        const len = Math.min(this.segLen[s]!, left);
        // logical [pos, pos+len): header bytes come from the scratch, frame bytes from fo
        let done = 0;
        if (pos < hl) {
          const k2 = Math.min(len, hl - pos);
          b.copyWithin(off, so + pos, so + pos + k2);
          done = k2;
        }
        if (done < len) b.copyWithin(off + done, fo + pos + done - hl, fo + pos + len - hl);
        pos += len;
        left -= len;
        if (len === this.segLen[s]!) s++;
        else {
          this.segOff[s] = off + len;
          this.segLen[s] = this.segLen[s]! - len;
        }
      }
      // Every chain but the last is filled to capacity (chains were taken only while the room
      // was short), so the segment cursor moves from one chain's segments to the next.
      vq.push(this.chainHead[k]!, used);
    }
    if (b[ho + 1] !== 0) c[C.tx_gso_packets]!++;
    return true;
  }

  /**
   * The control virtqueue (virtio 1.2, 5.1.6.5), for frontends that hand it to the backend
   * (DPDK's virtio-user and QEMU answer it themselves). Only VIRTIO_NET_CTRL_MQ
   * VQ_PAIRS_SET is understood: the pairs it names are what the driver enables with
   * SET_VRING_ENABLE, so pier just acknowledges; any other command gets VIRTIO_NET_ERR.
   */
  private controlQueue(v: Vring): number {
    const vq = v.queue;
    const ch = v.chain;
    const b = this.pool.bytes;
    let popped = 0;
    while (popped < 64 && vq.pop(ch)) {
      popped++;
      const ok = ch.readable > 0 && ch.len[0]! >= 2 && ch.count > ch.readable && ch.len[ch.readable]! >= 1;
      if (!ok) {
        vq.push(ch.head, 0);
        continue;
      }
      const cls = b[ch.offset[0]!]!;
      const cmd = b[ch.offset[0]! + 1]!;
      const VIRTIO_NET_CTRL_MQ = 4;
      const VQ_PAIRS_SET = 0;
      b[ch.offset[ch.readable]!] = cls === VIRTIO_NET_CTRL_MQ && cmd === VQ_PAIRS_SET ? 0 : 1; // VIRTIO_NET_OK / ERR
      vq.push(ch.head, 1);
    }
    if (vq.broken !== null) this.ringBroken(v);
    else if (popped > 0 && vq.flush()) this.signal(v);
    return 0;
  }

  /** A lent transmit buffer is released: its descriptor goes back to the driver (BufferLender). */
  returnBuffer(tag: number): void {
    this.lent--;
    this.backend.vrings[tag >>> 16]!.queue.push(tag & 0xffff, 0);
  }

  /** The burst is forwarded and every lent buffer returned: publish the used ring. */
  override afterBurst(queue: number): void {
    const v = this.backend.vrings[queue];
    if (!v) return;
    if (this.lent !== 0) {
      // Cannot happen while every port's transmit() is done with a packet when it returns;
      // if it ever does, the descriptors are not lost silently.
      this.lastError = `${this.lent} lent buffers outlived their burst`;
      this.lent = 0;
    }
    const broken = this.brokenDuringBurst;
    if (broken !== null) {
      this.brokenDuringBurst = null;
      this.ringBroken(broken);
      return;
    }
    if (v.started && v.queue.flush()) this.signal(v);
  }

  private signal(v: Vring): void {
    if (v.callFd >= 0) libc.writeBuf(v.callFd, this.one, 8);
  }

  /** The peer broke a ring's rules: its port resets (the daemon and every other port carry on). */
  private ringBroken(v: Vring): void {
    this.counters[C.rx_errors]!++;
    this.disconnect(`vring ${v.index} broken: ${v.queue.broken}`);
  }

  override describe(): unknown {
    const be = this.backend;
    const rings = be.vrings.filter((v) => v.started).map((v) => ({ vring: v.index, size: v.num, lastAvailIdx: v.queue.lastAvailIdx, usedIdx: v.queue.usedIdx, waiting: v.queue.available(), kickFd: v.kickFd, callFd: v.callFd }));
    return {
      mode: this.opts.server ? 'server' : 'client',
      path: this.opts.path,
      connected: this.conn >= 0,
      link: this.enabledPairs() > 0 ? 'up' : 'down',
      features: decodeFeatures(be.features, offeredFeatures(this.opts.queuePairs, this.opts.mtu)),
      protocolFeatures: `0x${be.protocolFeatures.toString(16)}`,
      mtu: be.mtu || undefined,
      queuePairs: { configured: this.opts.queuePairs, enabled: this.enabledPairs() },
      vrings: rings,
      connects: this.connects,
      disconnects: this.disconnects,
      protocolErrors: this.protocolErrors,
      lastError: this.lastError || undefined,
      refused: Object.fromEntries(be.errors),
    };
  }

  close(): void {
    this.disconnect('');
    if (this.opts.server) this.ctx?.unwatch(this.opts.listenFd);
    this.timerAt = 0;
  }
}

function ack(v: number): Uint8Array {
  const r = new Uint8Array(8);
  r[0] = v;
  return r;
}
