// The backends a virtio-user port drives, behind one interface (as rust-vmm's VhostBackend): the
// kernel's vhost-net (ioctls on /dev/vhost-net) and a vhost-user device (messages on a socket).
// The port runs one set-up sequence against either: owner, features, memory table, then per
// vring its size, base, addresses, kick and call fds, then enable. Only discovery differs: the
// kernel answers at once, a vhost-user device over its socket (VhostUserDriver below).
import { libc, VhostKernel } from '../sys/index.ts';
import { NET_F } from '../virtio/net-features.ts';
import { VIRTIO_F_RING_PACKED } from '../virtio/packed-ring.ts';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1 } from '../virtio/ring.ts';
import * as codec from './codec.ts';
import { acceptPending, Dialer, Disconnect, type Message, VhostConnection } from './connection.ts';
import { memTableProblem, readMaxMemRegions } from './mem-table.ts';
import * as P from './protocol.ts';

const bit = (n: number): bigint => 1n << BigInt(n);

/** What discovery found: the features offered and, when asked, the queue pairs. */
export interface Offer {
  features: bigint;
  /** vhost-user GET_QUEUE_NUM (0 when not asked). */
  queuePairs: number;
}

export interface DriverBackend {
  /** The features pier asks of this backend; what is acked is this & the offer. */
  readonly wanted: bigint;
  setOwner(): void;
  setFeatures(features: bigint): void;
  setMemTable(regions: readonly codec.MemRegion[], fds: readonly number[]): void;
  setVringNum(q: number, num: number): void;
  setVringBase(q: number, base: number): void;
  setVringAddr(a: codec.VringAddr): void;
  setVringKick(q: number, fd: number): void;
  setVringCall(q: number, fd: number): void;
  /** The ring may run: vhost-net attaches the tap queue, vhost-user sends SET_VRING_ENABLE. */
  enableVring(q: number): void;
}

/** Features both backends may be asked for; vhost-user adds the offloads and MQ. */
const RING_FEATURES = bit(VIRTIO_F_VERSION_1) | bit(NET_F.MRG_RXBUF) | bit(VIRTIO_F_EVENT_IDX);

/**
 * vhost-net: one /dev/vhost-net fd per queue pair (its vrings 0 and 1, one kernel worker), whose
 * backend is queue k of the container's multiqueue tap. Queue q of the port is vring q & 1 of
 * fd q >> 1. Every call throws on failure: the port is being added and the user gets the reason.
 */
export class VhostKernelBackend implements DriverBackend {
  readonly wanted = RING_FEATURES;
  private readonly vks: VhostKernel[];

  constructor(vhostFds: readonly number[], private readonly tapFds: readonly number[]) {
    if (vhostFds.length !== tapFds.length || vhostFds.length === 0) throw new Error(`${vhostFds.length} vhost-net fds and ${tapFds.length} tap queues`);
    this.vks = vhostFds.map((fd) => new VhostKernel(fd));
  }

  discover(): Offer {
    const features = this.vks[0]!.getFeatures();
    if ((features & (bit(VIRTIO_F_VERSION_1) | bit(NET_F.MRG_RXBUF))) === 0n) throw new Error('vhost-net offers neither VERSION_1 nor MRG_RXBUF: its 10-byte header is not supported');
    return { features, queuePairs: this.vks.length };
  }

  setOwner(): void {
    for (const vk of this.vks) vk.setOwner();
  }

  setFeatures(f: bigint): void {
    for (const vk of this.vks) vk.setFeatures(f);
  }

  setMemTable(regions: readonly codec.MemRegion[]): void {
    // Checked by the control plane before the port was made; again here, in case vhost was
    // reloaded with another limit since, and E2BIG named if the kernel still refuses.
    const mem = memTableProblem(regions.length, readMaxMemRegions().value);
    if (mem) throw new Error(`${mem.message}: ${mem.hint}`);
    const table = codec.memTable(regions.map((r) => ({ ...r, mmapOffset: 0 }))); // the kernel's field is padding
    for (const vk of this.vks) {
      try {
        vk.setMemTable(table);
      } catch (e) {
        if ((e as libc.SysError).code === 'E2BIG') throw new Error(`VHOST_SET_MEM_TABLE: E2BIG: ${memTableProblem(regions.length, 0)!.hint}`, { cause: e });
        throw e;
      }
    }
  }

  setVringNum(q: number, num: number): void {
    this.vks[q >> 1]!.setVringNum(q & 1, num);
  }

  setVringBase(q: number, base: number): void {
    this.vks[q >> 1]!.setVringBase(q & 1, base);
  }

  setVringAddr(a: codec.VringAddr): void {
    this.vks[a.index >> 1]!.setVringAddr(a.index & 1, a.desc, a.used, a.avail);
  }

  setVringKick(q: number, fd: number): void {
    this.vks[q >> 1]!.setVringKick(q & 1, fd);
  }

  setVringCall(q: number, fd: number): void {
    this.vks[q >> 1]!.setVringCall(q & 1, fd);
  }

  enableVring(q: number): void {
    this.vks[q >> 1]!.setBackend(q & 1, this.tapFds[q >> 1]!);
  }
}

/** How long a vhost-user device may take to answer one of pier's questions. */
export const REPLY_TIMEOUT_MS = 5000;

/** What pier asks a vhost-user device for, beyond the ring features. */
const USER_FEATURES = RING_FEATURES | bit(P.F_PROTOCOL_FEATURES) | bit(NET_F.CSUM) | bit(NET_F.GUEST_CSUM) |
  bit(NET_F.HOST_TSO4) | bit(NET_F.HOST_TSO6) | bit(NET_F.GUEST_TSO4) | bit(NET_F.GUEST_TSO6) | bit(NET_F.HOST_ECN) | bit(NET_F.GUEST_ECN);

export interface UserDriverOptions {
  path: string;
  server: boolean;
  /** The listening socket (server mode), made by the control plane. */
  listenFd: number;
  queuePairs: number;
  /** Ask for VIRTIO_F_RING_PACKED (taken when the backend offers it). */
  packed?: boolean;
}

export interface UserDriverHooks {
  watch(fd: number, token: number): void;
  unwatch(fd: number): void;
  /** Discovery is done: run the set-up sequence. */
  ready(offer: Offer): void;
  /** The connection ended; the port stops using the rings and takes its buffers back. */
  down(d: Disconnect): void;
}

type Phase = 'down' | 'features' | 'protocol' | 'queues' | 'running';

/**
 * A vhost-user device reached over a socket: pier connects (with backoff) or, with
 * `server`, listens; a newer connection replaces the current one (a restarted backend comes
 * back before its old connection is seen dead). Discovery asks GET_FEATURES, then
 * GET_PROTOCOL_FEATURES and, for several queue pairs, GET_QUEUE_NUM, each answer checked and
 * due within REPLY_TIMEOUT_MS; everything after needs no answer.
 */
export class VhostUserDriver implements DriverBackend {
  static readonly Q_LISTEN = 0xfe;
  static readonly Q_CONN = 0xfd;
  readonly wanted: bigint;
  phase: Phase = 'down';
  conn: VhostConnection | null = null;
  private readonly dialer: Dialer | null;
  private offered = 0n;
  private acked = 0n;
  /** The request whose answer pier waits for (0: none) and until when. */
  private asked = 0;
  private replyBy = 0;
  private listenResumeAt = 0;
  lastError = '';
  connects = 0;

  constructor(private readonly opts: UserDriverOptions, private readonly hooks: UserDriverHooks) {
    this.wanted = USER_FEATURES | (opts.queuePairs > 1 ? bit(NET_F.MQ) : 0n) | (opts.packed === true ? bit(VIRTIO_F_RING_PACKED) : 0n);
    this.dialer = opts.server ? null : new Dialer(opts.path);
  }

  start(): void {
    if (this.opts.server) this.hooks.watch(this.opts.listenFd, VhostUserDriver.Q_LISTEN);
    else this.dial();
  }

  // ---- the connection ----

  private dial(now = Date.now()): void {
    const fd = this.dialer!.dial(now);
    if (fd < 0) this.lastError = this.dialer!.lastError;
    else this.adopt(fd, now);
  }

  private adopt(fd: number, now: number): void {
    if (this.conn) this.end(new Disconnect('superseded', 'a newer backend connection took over'), now);
    this.conn = new VhostConnection(fd, now);
    this.connects++;
    this.hooks.watch(fd, VhostUserDriver.Q_CONN);
    this.phase = 'features';
    this.ask(P.Req.GET_FEATURES, now);
  }

  /** Server mode: take what is pending; the newest connection is the one kept. */
  onListen(now = Date.now()): void {
    const { fds, error } = acceptPending(this.opts.listenFd, 64);
    for (let i = 0; i < fds.length - 1; i++) libc.close(fds[i]!);
    if (fds.length > 0) this.adopt(fds[fds.length - 1]!, now);
    if (error) {
      this.lastError = `accept: ${error}`;
      this.hooks.unwatch(this.opts.listenFd);
      this.listenResumeAt = now + 100;
    }
  }

  onReadable(now = Date.now()): void {
    const c = this.conn;
    if (!c) return;
    const d = c.read((m) => this.onMessage(m, now), now);
    if (d && this.conn === c) this.end(d, now);
  }

  /** EPOLLHUP/ERR on the connection: read what is left, then end it. */
  onHangup(now = Date.now()): void {
    this.onReadable(now);
    if (this.conn) this.end(new Disconnect('peer-closed', 'the backend closed the connection'), now);
  }

  /** Deadlines and reconnects; returns when to be called again (0: nothing pending). */
  onTimer(now = Date.now()): number {
    if (this.dialer && !this.conn && this.dialer.retryAt <= now) this.dial(now);
    if (this.listenResumeAt > 0 && this.listenResumeAt <= now) {
      this.listenResumeAt = 0;
      this.hooks.watch(this.opts.listenFd, VhostUserDriver.Q_LISTEN);
    }
    const c = this.conn;
    if (c) {
      const d = c.expired(now) ?? (this.asked !== 0 && now >= this.replyBy
        ? new Disconnect('timeout', `no answer to ${codec.requestName(this.asked)} within ${REPLY_TIMEOUT_MS} ms`) : null);
      if (d) this.end(d, now);
    }
    return this.deadline(now);
  }

  deadline(now = Date.now()): number {
    let t = 0;
    const at = (x: number): void => {
      if (x > 0 && (t === 0 || x < t)) t = x;
    };
    if (this.dialer && !this.conn) at(Math.max(this.dialer.retryAt, now + 1));
    at(this.listenResumeAt);
    if (this.conn) {
      at(this.conn.deadline());
      if (this.asked !== 0) at(this.replyBy);
    }
    return t;
  }

  /** End the connection (the port's hooks.down runs). */
  end(d: Disconnect, now = Date.now()): void {
    const c = this.conn;
    if (!c) return;
    if (c.open) this.hooks.unwatch(c.fd);
    c.close();
    this.conn = null;
    this.phase = 'down';
    this.asked = 0;
    this.acked = 0n;
    if (d.kind !== 'local') this.lastError = d.toString();
    this.dialer?.after(d, now);
    this.hooks.down(d);
  }

  close(): void {
    this.end(new Disconnect('local', 'the port was deleted, or rebuilt by a change that ends the session'));
    if (this.opts.server && this.listenResumeAt === 0) this.hooks.unwatch(this.opts.listenFd);
    this.listenResumeAt = 0;
  }

  private send(req: number, payload?: Uint8Array, fds?: readonly number[]): void {
    const c = this.conn;
    if (!c) return;
    const d = c.send(req, payload, fds);
    if (d) this.end(d);
  }

  private ask(req: number, now: number): void {
    this.asked = req;
    this.replyBy = now + REPLY_TIMEOUT_MS;
    this.send(req);
  }

  // ---- discovery ----

  private onMessage(m: Message, now: number): void {
    const nfds = m.fds.length;
    for (const fd of m.fds) libc.close(fd); // a backend sends pier no fds
    if (this.asked === 0) return this.end(new Disconnect('protocol', `unexpected ${codec.requestName(m.req)} from the backend (pier asked nothing)`), now);
    const problem = codec.replyProblem({ req: m.req, flags: m.flags, size: m.payload.byteLength }, this.asked, nfds);
    if (problem) return this.end(new Disconnect('protocol', problem), now);
    const v = codec.readU64(m.payload);
    this.asked = 0;
    const pairs = this.opts.queuePairs;
    if (this.phase === 'features') {
      this.offered = v;
      if ((v & bit(VIRTIO_F_VERSION_1)) === 0n) return this.end(new Disconnect('refused', 'the backend does not offer VIRTIO_F_VERSION_1 (legacy virtio is not supported)'), now);
      if (pairs > 1 && (v & bit(NET_F.MQ)) === 0n) {
        return this.end(new Disconnect('refused', `queues=${pairs} needs VIRTIO_NET_F_MQ and the backend does not offer it: use queues=1, or give the backend queues (DPDK net_vhost: queues=${pairs})`), now);
      }
      if ((v & bit(P.F_PROTOCOL_FEATURES)) === 0n) return this.discovered(0, now);
      this.phase = 'protocol';
      this.ask(P.Req.GET_PROTOCOL_FEATURES, now);
    } else if (this.phase === 'protocol') {
      // pier sends no NEED_REPLY, so it needs no REPLY_ACK; with several queue pairs it asks for
      // MQ, which is what makes GET_QUEUE_NUM an answerable question.
      const mq = pairs > 1 ? v & bit(P.PF_MQ) : 0n;
      this.send(P.Req.SET_PROTOCOL_FEATURES, codec.u64(mq));
      if (mq === 0n) return this.discovered(0, now);
      this.phase = 'queues';
      this.ask(P.Req.GET_QUEUE_NUM, now);
    } else if (this.phase === 'queues') {
      const got = v > 0xffffn ? 0xffff : Number(v);
      if (got < pairs) {
        return this.end(new Disconnect('refused', `the backend has ${got} queue pair(s) (GET_QUEUE_NUM) and queues=${pairs} asks for more: use queues=${Math.max(1, got)}, or give the backend more queues`), now);
      }
      this.discovered(got, now);
    }
  }

  private discovered(queuePairs: number, now: number): void {
    if (!this.conn) return;
    this.phase = 'running';
    this.hooks.ready({ features: this.offered, queuePairs });
    void now;
  }

  // ---- the set-up sequence's messages (no answers) ----

  setOwner(): void {
    this.send(P.Req.SET_OWNER);
  }

  setFeatures(f: bigint): void {
    this.acked = f;
    this.send(P.Req.SET_FEATURES, codec.u64(f));
  }

  setMemTable(regions: readonly codec.MemRegion[], fds: readonly number[]): void {
    this.send(P.Req.SET_MEM_TABLE, codec.memTable(regions), fds);
  }

  setVringNum(q: number, num: number): void {
    this.send(P.Req.SET_VRING_NUM, codec.vringState(q, num));
  }

  setVringBase(q: number, base: number): void {
    this.send(P.Req.SET_VRING_BASE, codec.vringState(q, base));
  }

  setVringAddr(a: codec.VringAddr): void {
    this.send(P.Req.SET_VRING_ADDR, codec.vringAddr(a));
  }

  setVringKick(q: number, fd: number): void {
    this.send(P.Req.SET_VRING_KICK, codec.vringFile(q), [fd]);
  }

  setVringCall(q: number, fd: number): void {
    this.send(P.Req.SET_VRING_CALL, codec.vringFile(q), [fd]);
  }

  /**
   * With protocol features rings start disabled, so each is enabled. A backend with a control
   * queue of its own never sees one from pier: like DPDK's virtio-user and QEMU, pier does not
   * ask for CTRL_VQ, and the pairs in use are the enabled ones.
   */
  enableVring(q: number): void {
    if ((this.acked & bit(P.F_PROTOCOL_FEATURES)) !== 0n) this.send(P.Req.SET_VRING_ENABLE, codec.vringState(q, 1));
  }
}
