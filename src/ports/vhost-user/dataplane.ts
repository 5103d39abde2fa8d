// A vhost-user port: pier is the virtio-net *device* (the vhost-user backend) for a DPDK
// application's virtio-user driver or a VM's virtio-net, moving packets through the peer's
// virtqueues in its own shared memory, mapped into pier's arena. Runs in the dataplane thread:
// the protocol socket and the kick eventfds sit in the engine's epoll set next to everything else.
//
// Queue numbering (virtio-net): vring 2k is receiveq k (pier -> peer), 2k+1 transmitq k
// (peer -> pier). Epoll tokens carry the vring index; two more mark the sockets.
import { C } from '../../dataplane/counters.ts';
import { writeLevels } from '../../dataplane/gauges.ts';
import { flowHash } from '../../dataplane/flow-hash.ts';
import type { BufferLender, LentJudge, PacketPool } from '../../dataplane/pool.ts';
import { BUF_SIZE, REFUSED_COPY, VNET_HDR } from '../../dataplane/pool.ts';
import { judgedCopy } from '../../dataplane/deferred.ts';
import { JUDGED_COPY_MAX, JUDGED_COPY_MIN } from '../../dataplane/port-guard.ts';
import { GSO_TCP, Port, type PortContext } from '../../dataplane/port.ts';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from '../../dataplane/vnet.ts';
import { headerFits } from '../../dataplane/headers.ts';
import { closeAll } from '../../memory/guest-memory.ts';
import { drainPeer, FAULT_RING, faultAddress, faultCount, libc, signalPeer } from '../../sys/index.ts';
import { VhostError, VhostUserBackend, type Vring, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1 } from '../../vhost/backend.ts';
import * as codec from '../../vhost/codec.ts';
import { acceptPending, Dialer, Disconnect, type DisconnectKind, type Message, VhostConnection } from '../../vhost/connection.ts';
import * as P from '../../vhost/protocol.ts';
import type { DataplaneHalf } from '../kind.ts';
import type { VhostUserSpec } from './options.ts';
import type { VhostUserView } from './view.ts';
import { decodeFeatures, featureNames, NET_F } from '../../virtio/net-features.ts';

const Q_LISTEN = 0xfe;
/** Epoll tokens of connections: Q_SESSION + slot (vrings use 0..32). */
const Q_SESSION = 0xc0;
/** Connections a server port holds besides the frontend in charge (see "connections"). */
const MAX_NEWCOMERS = 16;
/** A newer connection that sends nothing whole for this long is let go. */
export const NEWCOMER_IDLE_MS = 3000;
/** Refused requests a session gets into the daemon's log (all are counted in pier show). */
const MAX_REFUSALS_LOGGED = 10;
/** Connections accepted per readiness of the listening socket. */
const ACCEPT_BATCH = 64;
/** How long the listener rests after accept() failed (EMFILE, ENFILE, ENOMEM). */
const ACCEPT_RETRY_MS = 100;
const ETH_HLEN = 14;
/**
 * busy-poll=on: empty polls a transmitq gets before it sleeps on its kicks again (about 20-40 µs
 * here). Polling past the end of traffic buys latency through short gaps; polling an idle ring
 * for ever costs a core and, under load, slows the producer (docs/design/performance.md).
 */
export const BUSY_POLL_SPIN = 256;
/** Most receive buffers one packet may take with MRG_RXBUF (a 64 KiB frame in 1 KiB buffers). */
const MAX_MERGE = 128;
const MAX_SEGS = 1024;


const bit = (n: number): bigint => 1n << BigInt(n);

export function offeredFeatures(queuePairs: number, mtu: number, packed = true): bigint {
  let f = bit(VIRTIO_F_VERSION_1) | bit(P.F_PROTOCOL_FEATURES) | bit(VIRTIO_F_EVENT_IDX) | bit(VIRTIO_F_INDIRECT_DESC) |
    bit(NET_F.MRG_RXBUF) | bit(NET_F.CSUM) | bit(NET_F.GUEST_CSUM) | bit(NET_F.HOST_TSO4) | bit(NET_F.HOST_TSO6) |
    bit(NET_F.GUEST_TSO4) | bit(NET_F.GUEST_TSO6) | bit(NET_F.HOST_ECN) | bit(NET_F.GUEST_ECN) | bit(NET_F.STATUS);
  if (mtu > 0) f |= bit(NET_F.MTU);
  // The packed ring is the driver's to choose (DPDK packed_vq=1, QEMU packed=on); packed=off stops offering it.
  if (packed) f |= bit(VIRTIO_F_RING_PACKED);
  if (queuePairs > 1) f |= bit(NET_F.MQ) | bit(NET_F.CTRL_VQ);
  return f;
}

export class VhostUserPort extends Port implements BufferLender {
  readonly fds: readonly number[] = [];
  private ctx!: PortContext;
  readonly backend: VhostUserBackend;
  /** Connections by slot; `active` is the frontend in charge (-1: none). */
  private readonly slots: Array<VhostConnection | null>;
  private active = -1;
  /** Client mode: how pier reaches the frontend. */
  private readonly dialer: Dialer | null;
  /** When a listener that failed to accept is watched again (0: it is watched). */
  private listenResumeAt = 0;
  private refusalsLogged = 0;
  /** Connections ended, by kind (pier show). */
  readonly ended: Record<DisconnectKind, number> = { 'peer-closed': 0, protocol: 0, timeout: 0, resource: 0, refused: 0, superseded: 0, memory: 0, local: 0 };
  /** Virtio-net header length the driver uses: 12 with VERSION_1 or MRG_RXBUF, else 10. */
  private hdrLen = 12;
  private mergeable = false;
  /** Scatter plan for one packet towards the peer: segments and the chains they belong to. */
  private readonly segOff = new Float64Array(MAX_SEGS);
  private readonly segLen = new Uint32Array(MAX_SEGS);
  private readonly chainHead = new Uint32Array(MAX_MERGE);
  private readonly chainCap = new Float64Array(MAX_MERGE);
  /** Transmit buffers lent to the pool in the current burst, and a ring that broke meanwhile. */
  private lent = 0;
  /** SIGBUS guard faults already looked at (faultedHere). */
  private faultsSeen = faultCount();
  /** A session end decided while lent frames were in flight: carried out in afterBurst(). */
  private pendingEnd: Disconnect | null = null;
  /** busy-poll=on: empty polls of each vring since its last packet (BUSY_POLL_SPIN). */
  private readonly spins: Int32Array;
  /** 1 while a vring waits for kicks (notifications on), 0 while it is polled turn after turn. */
  private readonly asleep: Uint8Array;
  connects = 0;
  disconnects = 0;
  /** Features of the session in charge, as last set (undefined until its first SET_FEATURES). */
  private negotiated: bigint | undefined = undefined;
  protocolErrors = 0;
  lastError = '';

  constructor(index: number, name: string, bridge: number, counters: Float64Array, pool: PacketPool, readonly opts: VhostUserSpec) {
    super(index, name, bridge, counters, pool, false, false);
    this.busyPoll = opts.busyPoll;
    this.acceptsExternal = true; // toGuest copies and is done
    this.judgesLent = true; // toGuest judges a deferred frame on the copy it made
    this.slots = new Array<VhostConnection | null>(opts.server ? MAX_NEWCOMERS + 1 : 1).fill(null);
    this.dialer = opts.server ? null : new Dialer(opts.path);
    const vrings = 2 * opts.queuePairs + (opts.queuePairs > 1 ? 1 : 0);
    this.spins = new Int32Array(vrings);
    this.asleep = new Uint8Array(vrings);
    this.backend = new VhostUserBackend(pool.arena, {
      features: offeredFeatures(opts.queuePairs, opts.mtu, opts.packed),
      protocolFeatures: bit(P.PF_MQ) | bit(P.PF_REPLY_ACK) | bit(P.PF_MTU) | bit(P.PF_STATUS),
      vrings, queuePairs: opts.queuePairs, mtu: opts.mtu, maxQueueSize: opts.maxQueueSize, requireSealedMemory: opts.requireSealedMemory,
    }, {
      onStart: (v) => this.vringStarted(v),
      onStop: (v) => this.vringStopped(v),
      onFeatures: (f) => this.featuresChanged(f),
    });
  }

  override attach(ctx: PortContext): void {
    this.ctx = ctx;
    if (this.opts.server) ctx.watch(this, this.opts.listenFd, Q_LISTEN);
    else this.dial();
  }

  // ---- connections ----
  //
  // A server port holds the frontend in charge (`active`) and up to MAX_NEWCOMERS newer
  // connections. A newcomer may ask what the device offers (GET_FEATURES, GET_PROTOCOL_FEATURES,
  // GET_QUEUE_NUM); its first request that sets anything up makes it the frontend in charge and
  // ends the old one ('superseded'): a VM restarted by its manager reconnects before its old
  // connection is seen dead, and the newest session that sets up wins. A newcomer that sends
  // nothing whole for NEWCOMER_IDLE_MS is let go, and when all slots are taken the oldest silent
  // newcomer makes room, so neither a stalled peer nor a flood of idle connections keeps a
  // frontend off the port for more than a few seconds.

  private dial(now = Date.now()): void {
    const d = this.dialer!;
    const fd = d.dial(now);
    if (fd < 0) this.lastError = d.lastError;
    else this.adopt(0, fd, now);
    this.rearm(now);
  }

  private adopt(slot: number, fd: number, now: number): void {
    this.slots[slot] = new VhostConnection(fd, now);
    this.ctx.watch(this, fd, Q_SESSION + slot);
    if (!this.opts.server) this.takeOver(slot);
  }

  private accept(now = Date.now()): void {
    const { fds, error } = acceptPending(this.opts.listenFd, ACCEPT_BATCH);
    for (const fd of fds) {
      let slot = this.slots.indexOf(null);
      if (slot < 0) {
        slot = this.oldestNewcomer();
        this.end(slot, new Disconnect('resource', `${MAX_NEWCOMERS} newer connections were waiting: the oldest silent one was let go`), now);
      }
      this.adopt(slot, fd, now);
    }
    if (error) {
      // accept() fails with the connection still queued (EMFILE...): stop looking for a while,
      // or a level-triggered listener would spin the dataplane.
      this.lastError = `accept: ${error}`;
      this.ctx.unwatch(this.opts.listenFd);
      this.listenResumeAt = now + ACCEPT_RETRY_MS;
    }
    this.rearm(now);
  }

  /** The newcomer to let go when every slot is taken: the oldest that never sent a whole message, else the oldest. */
  private oldestNewcomer(): number {
    let best = -1;
    for (let s = 0; s < this.slots.length; s++) {
      const c = this.slots[s];
      if (!c || s === this.active) continue;
      const b = best < 0 ? undefined : this.slots[best]!;
      if (!b || (c.messages === 0 && b.messages > 0) || ((c.messages === 0) === (b.messages === 0) && c.openedAt < b.openedAt)) best = s;
    }
    return best;
  }

  private takeOver(slot: number): void {
    if (this.active === slot) return;
    if (this.active >= 0) this.end(this.active, new Disconnect('superseded', 'a newer frontend took the port over'));
    this.active = slot;
    this.connects++;
    this.refusalsLogged = 0;
    this.negotiated = undefined;
    this.ctx.news(this, { what: 'connected', detail: `frontend session ${this.connects} on ${this.opts.path}` });
  }

  /** End the connection in `slot`; for the frontend in charge, forget everything it set up. */
  private end(slot: number, d: Disconnect, now = Date.now()): void {
    const c = this.slots[slot];
    if (!c) return;
    if (c.open) this.ctx.unwatch(c.fd);
    c.close();
    this.slots[slot] = null;
    this.ended[d.kind]++;
    if (slot !== this.active) return;
    this.active = -1;
    // An end that waited for the burst belongs to this session: the next one must not inherit it.
    this.pendingEnd = null;
    if (d.kind !== 'local') this.lastError = d.toString();
    this.ctx.news(this, { what: 'ended', kind: d.kind, detail: d.detail });
    if (d.kind === 'protocol') this.protocolErrors++;
    this.backend.reset();
    this.gsoTypes = 0;
    this.acceptsCsum = false;
    this.disconnects++;
    this.dialer?.after(d, now);
  }

  /**
   * The frontend in charge is gone or broke something: its session ends. While frames lent
   * from its memory are still being forwarded (a broken ring, a kick fd that failed, in the
   * middle of a burst), the end waits for afterBurst(): ending unmaps that memory.
   */
  private endActive(d: Disconnect): void {
    if (this.lent > 0) {
      this.pendingEnd ??= d;
      return;
    }
    if (this.active >= 0) this.end(this.active, d);
    this.rearm();
  }

  override onTimer(): void {
    const now = Date.now();
    if (this.dialer && this.active < 0 && this.dialer.retryAt <= now) this.dial(now);
    if (this.listenResumeAt > 0 && this.listenResumeAt <= now) {
      this.listenResumeAt = 0;
      this.ctx.watch(this, this.opts.listenFd, Q_LISTEN);
    }
    for (let s = 0; s < this.slots.length; s++) {
      const c = this.slots[s];
      if (!c) continue;
      const d = c.expired(now) ??
        (s !== this.active && now - c.lastMessageAt >= NEWCOMER_IDLE_MS ? new Disconnect('timeout', `a newer connection sent nothing whole for ${NEWCOMER_IDLE_MS} ms`) : null);
      if (d) this.end(s, d, now);
    }
    this.rearm(now);
  }

  /** Set the timer to the next deadline: a reconnect, a stalled message, an idle newcomer. */
  private rearm(now = Date.now()): void {
    let t = 0;
    const at = (x: number): void => {
      if (x > 0 && (t === 0 || x < t)) t = x;
    };
    if (this.dialer && this.active < 0) at(Math.max(this.dialer.retryAt, now + 1));
    at(this.listenResumeAt);
    for (let s = 0; s < this.slots.length; s++) {
      const c = this.slots[s];
      if (!c) continue;
      at(c.deadline());
      if (s !== this.active) at(c.lastMessageAt + NEWCOMER_IDLE_MS);
    }
    this.timerAt = t;
  }

  override onHangup(queue: number): boolean {
    if (queue >= Q_SESSION && queue < Q_SESSION + this.slots.length) {
      this.readSession(queue - Q_SESSION); // take what is still buffered, then notice EOF
      const slot = queue - Q_SESSION;
      if (this.slots[slot]) this.end(slot, new Disconnect('peer-closed', 'the frontend closed the connection'));
      this.rearm();
      return true;
    }
    if (queue === Q_LISTEN) return false;
    // A kick eventfd does not hang up; if one errs, the ring is unusable.
    if (this.backend.vrings[queue]) this.endActive(new Disconnect('protocol', `vring ${queue}: kick fd error`));
    return true;
  }

  // ---- protocol messages ----

  private readSession(slot: number): void {
    const c = this.slots[slot];
    if (!c) return;
    const d = c.read((m) => this.onMessage(slot, m));
    if (d && this.slots[slot] === c) this.end(slot, d);
    this.rearm();
  }

  private onMessage(slot: number, m: Message): void {
    const be = this.backend;
    const { req, payload, fds } = m;
    const name = codec.requestName(req);
    const verdict = codec.checkRequest(req, payload, fds.length);
    if (slot !== this.active) {
      if (verdict.kind === 'ok' && codec.isQuery(req)) return this.reply(slot, req, be.handle(req, payload, fds)!);
      this.takeOver(slot);
    }
    const needReply = (m.flags & P.FLAG_NEED_REPLY) !== 0 && be.hasProtocol(P.PF_REPLY_ACK);
    const answered = codec.replySize(req) > 0;
    if (verdict.kind !== 'ok') {
      // Never acted on. A request whose answer the frontend waits for cannot be answered
      // sensibly: it would misread anything pier sent, so the connection ends.
      closeAll(fds);
      be.count(`${verdict.kind} ${codec.requestKind(req)}`);
      if (verdict.kind === 'malformed' && answered) return this.end(slot, new Disconnect('protocol', verdict.why));
      if (verdict.kind === 'malformed') this.lastError = verdict.why;
      this.refused(verdict.kind === 'malformed' ? verdict.why : `${name} is not supported`);
      if (needReply) this.reply(slot, req, codec.ack(true));
      return;
    }
    let body: Uint8Array | undefined;
    try {
      body = be.handle(req, payload, fds);
    } catch (e) {
      be.count(`failed ${codec.requestKind(req)}`);
      const why = `${name}: ${(e as Error).message}`;
      if (answered || !(e instanceof VhostError) || e.fatal) return this.end(slot, new Disconnect('protocol', why));
      this.protocolErrors++;
      this.lastError = why;
      this.refused(why);
      if (needReply) this.reply(slot, req, codec.ack(true));
      return;
    }
    if (answered) this.reply(slot, req, body ?? codec.EMPTY);
    else if (needReply) this.reply(slot, req, codec.ack(false));
  }

  /** Log a refused request: the first few of a session (a hostile peer must not flood the log). */
  private refused(why: string): void {
    if (this.refusalsLogged++ < MAX_REFUSALS_LOGGED) this.ctx.news(this, { what: 'refused', detail: why });
  }

  private reply(slot: number, req: number, body: Uint8Array): void {
    const c = this.slots[slot];
    const d = c ? c.send(req, body, [], P.VHOST_USER_VERSION | P.FLAG_REPLY) : null;
    if (d) this.end(slot, d);
  }

  // ---- negotiated state ----

  private featuresChanged(f: bigint): void {
    // A renegotiation within a session (a guest driver reloaded, a DPDK port reconfigured) is news:
    // what the port may send changes with it. The first SET_FEATURES of a session is not.
    const was = this.negotiated;
    this.negotiated = f;
    if (was !== undefined && was !== f) {
      const gained = featureNames(f & ~was);
      const lost = featureNames(was & ~f);
      this.ctx.news(this, { what: 'features', detail: [...gained.map((n) => `+${n}`), ...lost.map((n) => `-${n}`)].join(' ') });
    }
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
    this.asleep[v.index] = 1; // a ring starts with kicks on
    this.ctx.again(this, v.index); // buffers may be waiting already
  }

  private vringStopped(v: Vring): void {
    if (this.kicked(v)) this.ctx.unwatch(v.kickFd);
    this.spins[v.index] = 0;
  }

  // ---- datapath ----

  receive(queue: number, out: Int32Array, max: number): number {
    if (queue === Q_LISTEN) {
      this.accept();
      return 0;
    }
    if (queue >= Q_SESSION) {
      this.readSession(queue - Q_SESSION);
      return 0;
    }
    const v = this.backend.vrings[queue];
    if (!v || !v.started) return 0;
    if (queue === 2 * this.opts.queuePairs) {
      if (this.drainKick(v)) return 0;
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
    const guard = this.guard;
    // A secured port lends as well, its frames unjudged (PacketPool.defer): whoever copies one out
    // of the guest's memory judges that copy (toGuest, src/dataplane/deferred.ts), since the guest
    // could rewrite the frame until then. A trunk's tagged frames are not deferred.
    const lend = guard === null || !guard.trunk;
    const w = pool.arena.i32;
    let judged = 0;
    let deferred = false;
    while (n < max && vq.pop(ch)) {
      popped++;
      const total = ch.readableBytes;
      if (total < hl + ETH_HLEN || total - hl > BUF_SIZE - VNET_HDR) {
        c[C.rx_dropped_malformed]!++;
        vq.push(ch.head, 0);
        continue;
      }
      if (hl === VNET_HDR && ch.count === 1 && lend && (guard === null || n < 32)) {
        // Header and frame in one buffer (DPDK and Linux drivers send that): no copy, the
        // packet stays in the driver's buffer, lent to the pool until the burst is forwarded;
        // its descriptor goes back in returnBuffer(). A secured port's frame is deferred, and
        // marked for filter() to pass (the bit means "judged elsewhere").
        const ho = ch.offset[0]!;
        const flen = total - hl;
        const h = pool.lend(ho, flen, this, (v.index << 16) | ch.head);
        if (h >= 0) {
          if (guard !== null) {
            pool.defer(h, guard);
            judged |= 1 << n;
            deferred = true;
          }
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
      if (guard !== null && hl === VNET_HDR && ch.count === 1 && total >= JUDGED_COPY_MIN && total <= JUDGED_COPY_MAX &&
        (ch.offset[0]! & 3) === 0 && n < 32) {
        // A secured port's short frame in one buffer: copied and judged in one pass.
        if (guard.copyJudged(b, w, ho, ch.offset[0]!, total)) judged |= 1 << n;
      } else if (hl === VNET_HDR) {
        for (let s = 0; s < ch.readable; s++) {
          const off = ch.offset[s]!;
          const len = ch.len[s]!;
          pool.copy(ho + pos, off, len);
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
    this.rxJudged = judged;
    this.rxDeferred = deferred;
    c[C.rx_packets]! += n;
    c[C.rx_bytes]! += bytes;
    if (vq.broken !== null) {
      this.ringBroken(v); // with lent packets, carried out once the burst is through (endActive)
      return n;
    }
    // With packets lent, the used ring is published in afterBurst(), once they are back.
    if (popped > 0 && this.lent === 0 && vq.flush()) this.signal(v);
    // More waiting, or busy-polling within its spin: come back next turn, kicks stay off.
    if (n > 0) this.spins[v.index] = 0;
    if (n === max || (this.busyPoll && this.spins[v.index]!++ < BUSY_POLL_SPIN)) {
      if (this.asleep[v.index] === 1) {
        // Awake for more than one turn: clear the kick that woke it, or epoll would report that
        // doorbell at every turn while the ring is polled anyway.
        this.asleep[v.index] = 0;
        if (this.drainKick(v)) return n;
      }
      this.ctx.again(this, v.index);
      return n;
    }
    this.spins[v.index] = 0;
    // Going to sleep on this ring: clear the doorbell, then ask for kicks and look once more.
    if (this.drainKick(v)) return n;
    this.asleep[v.index] = 1;
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
    const judge = pool.deferredJudge(h);
    // Fast path: one chain whose single writable buffer holds header and frame (the common case
    // for MTU-sized frames in a DPDK or Linux receive ring).
    const start = vq.nextAvail;
    if (hl === VNET_HDR) {
      if (!vq.pop(ch)) {
        if (vq.broken !== null) this.ringBroken(v);
        else c[C.tx_dropped_full]!++;
        return false;
      }
      // A secured port's lent frame (deferred) is judged here, by the fast path, on what this
      // guest will read (which its sender can no longer reach), unless a copy of it was judged
      // already (another output's: the same bytes go to every output then). Anything the fast
      // path does not pass, the general path decides on a copy of the sender's frame (deferred.ts):
      // this guest can write its own buffer too, and a verdict on what it wrote must not refuse,
      // or be counted against, the sender's frame.
      if (ch.count - ch.readable === 1 && ch.writableBytes >= need && (judge === undefined || pool.settledCopy(h) === -1)) {
        const ho = pool.hdrOffset(h);
        const off = ch.offset[ch.readable]!;
        if (judge === undefined) b.copyWithin(off, ho, ho + need);
        else if (!this.copyJudgedTo(judge, off, ho, need)) {
          vq.unpop(start);
          return this.toGuestJudged(v, h, judge, start);
        }
        b[off + 10] = 1; // num_buffers, in the copy: the packet may be lent and is read-only
        b[off + 11] = 0;
        if ((b[off]! | b[off + 1]!) !== 0) {
          if (!headerFits(b, off, flen, this.gsoTypes, this.acceptsCsum)) {
            vq.unpop(start); // nothing was pushed: the buffer stays the guest's, unused
            // A deferred frame's header is the sender's to answer for: its judged copy's check says whose drop this is.
            if (judge !== undefined) return this.toGuestJudged(v, h, judge, start);
            c[C.tx_dropped_bad_gso]!++;
            return false;
          }
          b[off] = b[off]! & VIRTIO_NET_HDR_F_NEEDS_CSUM; // no other flag reaches a guest
        }
        vq.push(ch.head, need);
        if (b[ho + 1] !== 0) c[C.tx_gso_packets]!++;
        return true;
      }
      vq.unpop(start); // not the simple case: un-pop and take the general path
    }
    if (judge === undefined) return this.toGuestChains(v, h, start);
    return this.toGuestJudged(v, h, judge, start);
  }

  /**
   * Copy a deferred frame's header and frame (`need` bytes from arena offset `ho`) into this
   * guest's buffer at `off`, and give the fast path's verdict on what was written: judged as it
   * is copied where both ends are aligned (what DPDK and Linux drivers post), else read back.
   */
  private copyJudgedTo(judge: LentJudge, off: number, ho: number, need: number): boolean {
    const pool = this.pool;
    if (((off | ho) & 3) === 0 && need >= JUDGED_COPY_MIN && need <= JUDGED_COPY_MAX) return judge.copyJudged(pool.bytes, pool.arena.i32, off, ho, need);
    pool.bytes.copyWithin(off, ho, ho + need);
    return (off & 3) === 0 && judge.passesAt(pool.arena.i32, off >>> 2, need - VNET_HDR);
  }

  /** A deferred frame h: its judged pool copy (deferred.ts), shared with the flood's other outputs, is what this guest gets. */
  private toGuestJudged(v: Vring, h: number, judge: LentJudge, start: number): boolean {
    const pool = this.pool;
    const m = judgedCopy(pool, h, judge);
    if (m < 0) {
      if (m !== REFUSED_COPY) this.counters[C.tx_dropped_no_buffer]!++;
      return false;
    }
    const sent = this.toGuestChains(v, m, start);
    pool.release(m);
    return sent;
  }

  /** toGuest() over one or more chains of several buffers, or with a 10-byte header. */
  private toGuestChains(v: Vring, h: number, start: number): boolean {
    const vq = v.queue;
    const ch = v.chain;
    const pool = this.pool;
    const b = pool.bytes;
    const c = this.counters;
    const hl = this.hdrLen;
    const flen = pool.len[h]!;
    const need = hl + flen;
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
        vq.unpop(start); // nothing was pushed: un-pop
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
    if ((b[so]! | b[so + 1]!) !== 0) {
      if (!headerFits(b, so, flen, this.gsoTypes, this.acceptsCsum)) {
        vq.unpop(start);
        c[C.tx_dropped_bad_gso]!++;
        return false;
      }
      b[so] = b[so]! & VIRTIO_NET_HDR_F_NEEDS_CSUM;
    }
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
    if (this.lent !== 0) {
      // Cannot happen while every port's transmit() is done with a packet when it returns;
      // if it ever does, the descriptors are not lost silently.
      this.lastError = `${this.lent} lent buffers outlived their burst`;
      this.lent = 0;
    }
    const d = this.pendingEnd;
    if (d !== null) {
      this.pendingEnd = null;
      this.endActive(d);
      return;
    }
    const v = this.backend.vrings[queue];
    if (v && v.started && v.queue.flush()) this.signal(v);
  }

  private signal(v: Vring): void {
    if (v.callFd < 0) return;
    const r = signalPeer(v.callFd);
    if (r === 0) this.counters[C.notify_sent]!++;
    else this.peerFdFailed(v, 'call', r);
  }

  /** Clear a ring's doorbell; true when that ended the session (a peer that made it block). */
  private drainKick(v: Vring): boolean {
    const r = drainPeer(v.kickFd);
    if (r === 0) {
      this.counters[C.notify_received]!++;
      return false;
    }
    if (r === -libc.EAGAIN) return false;
    this.peerFdFailed(v, 'kick', r);
    return true;
  }

  /**
   * A peer's eventfd failed pier: a full counter costs one notification (the peer finds the
   * work on its ring anyway); one that blocked until the watchdog interrupted it, or any other
   * error, ends the session: pier stops touching that peer's fds.
   */
  private peerFdFailed(v: Vring, what: string, r: number): void {
    if (r === -libc.EAGAIN) {
      this.counters[C.notify_dropped]!++;
      return;
    }
    if (r === -libc.EINTR) this.counters[C.notify_stalled]!++;
    const why = r === -libc.EINTR ? `it blocked pier (O_NONBLOCK cleared by the peer) until the watchdog interrupted it` : `errno ${-r}`;
    this.endActive(new Disconnect('protocol', `vring ${v.index} ${what} eventfd: ${why}`));
  }

  /**
   * The SIGBUS guard caught an access to this port's peer memory (its file shrank under pier,
   * the page now reads zeros): the session ends, the memory is unmapped. -1: an address the
   * guard's ring lost; claimed when any region of this peer is unsealed.
   */
  override memoryFault(arenaOffset: number): boolean {
    if (this.active < 0) return false;
    const mem = this.backend.mem;
    const mine = arenaOffset >= 0 ? mem.containsOffset(arenaOffset) : mem.regions().some((r) => r.seal === 'unsealed');
    if (!mine) return false;
    this.counters[C.rx_errors]!++;
    this.endActive(new Disconnect('memory', arenaOffset >= 0
      ? `the frontend's memory failed under pier at arena offset 0x${arenaOffset.toString(16)} (its file shrank after SET_MEM_TABLE; the page reads zeros until the reset)`
      : 'guarded faults were lost from the record; this frontend has unsealed memory'));
    return true;
  }

  /** The peer broke a ring's rules: its port resets (the daemon and every other port carry on). */
  private ringBroken(v: Vring): void {
    this.counters[C.rx_errors]!++;
    // A ring that reads as nonsense because its pages went to zeros under the SIGBUS guard (the
    // file shrank) is the memory's fault, not the ring's: say so.
    this.endActive(this.faultedHere()
      ? new Disconnect('memory', `vring ${v.index} read from memory whose file shrank after SET_MEM_TABLE (zeros under the SIGBUS guard: ${v.queue.broken})`)
      : new Disconnect('protocol', `vring ${v.index} broken: ${v.queue.broken}`));
  }

  /** Guard faults since the last look: was one of them in this peer's memory? */
  private faultedHere(): boolean {
    const total = faultCount();
    const base = this.pool.arena.base;
    let hit = false;
    for (let n = Math.max(this.faultsSeen, total - FAULT_RING); n < total && !hit; n++) hit = this.backend.mem.containsOffset(faultAddress(n) - base);
    this.faultsSeen = total;
    return hit;
  }

  /**
   * Ring levels once a second: the frontend's transmit vrings (odd) hold what waits for pier, its
   * receive vrings (even) the empty buffers pier may fill. The room a frontend has left in its own
   * transmit vrings is the frontend's to know (its descriptors), not pier's.
   */
  override sampleLevels(): void {
    let waiting = 0;
    let rxSize = 0;
    let room = 0;
    let txSize = 0;
    if (this.active >= 0) {
      for (const v of this.backend.vrings) {
        if (!v.started || v.index === 2 * this.opts.queuePairs) continue;
        const n = v.queue.available();
        if ((v.index & 1) === 1) {
          waiting += n;
          rxSize += v.num;
        } else {
          room += n;
          txSize += v.num;
        }
      }
    }
    writeLevels(this.levels!, waiting, NaN, room, rxSize, txSize);
  }

  override describe(): VhostUserView {
    const be = this.backend;
    const rings = be.vrings.filter((v) => v.started).map((v) => ({ vring: v.index, size: v.num, layout: v.queue.layout, lastAvailIdx: v.queue.lastAvailIdx, usedIdx: v.queue.usedIdx, ...(v.resumedAtUsed > 0 ? { resumedAtUsed: v.resumedAtUsed } : {}), waiting: v.queue.available(), kickFd: v.kickFd, callFd: v.callFd }));
    return {
      mode: this.opts.server ? 'server' : 'client',
      path: this.opts.path,
      connected: this.active >= 0,
      newcomers: this.slots.filter((c, s) => c !== null && s !== this.active).length,
      link: this.enabledPairs() > 0 ? 'up' : 'down',
      // The virtqueue layout the frontend negotiated (until it does, what the next one would get by default).
      ring: be.has(VIRTIO_F_RING_PACKED) ? 'packed' : 'split',
      features: decodeFeatures(be.features, offeredFeatures(this.opts.queuePairs, this.opts.mtu, this.opts.packed)),
      protocolFeatures: `0x${be.protocolFeatures.toString(16)}`,
      mtu: be.mtu || undefined,
      queuePairs: { configured: this.opts.queuePairs, enabled: this.enabledPairs() },
      vrings: rings,
      // The frontend's memory as pier mapped it: each region's file, whether it is sealed
      // against shrinking, and whether the SIGBUS guard covers it (docs/design/peer-memory.md).
      memory: be.mem.regions().map((r) => ({ region: r.index, gpa: hex(r.gpa), size: r.size, file: r.file, seal: r.seal, sealDetail: r.sealDetail, guarded: r.guarded })),
      strictMemory: this.opts.requireSealedMemory || undefined,
      connects: this.connects,
      disconnects: this.disconnects,
      protocolErrors: this.protocolErrors,
      ended: Object.fromEntries(Object.entries(this.ended).filter(([, n]) => n > 0)),
      lastError: this.lastError || undefined,
      refused: Object.fromEntries(be.errors),
    };
  }

  close(): void {
    for (let s = 0; s < this.slots.length; s++) if (s !== this.active) this.end(s, new Disconnect('local', 'the port was deleted, or rebuilt by a change that ends the session'));
    this.endActive(new Disconnect('local', 'the port was deleted, or rebuilt by a change that ends the session'));
    if (this.opts.server && this.listenResumeAt === 0) this.ctx?.unwatch(this.opts.listenFd);
    this.timerAt = 0;
  }
}

function hex(v: number): string {
  return `0x${v.toString(16)}`;
}

export const vhostUserDataplane: DataplaneHalf<VhostUserSpec> = {
  create: (b, spec, pool) => new VhostUserPort(b.index, b.name, b.bridge, b.counters, pool, spec),
};
