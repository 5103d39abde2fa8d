// The dataplane half of a vxlan port (RFC 7348): pier encapsulates and decapsulates itself over
// UDP sockets the control half opened (in netns=). The kernel builds the outer IP and UDP headers;
// pier adds and checks the 8-byte VXLAN header, learns inner source MAC -> outer source address,
// and replicates broadcast, multicast and unknown unicast to every remote (head-end replication).
//
// Receive: recvmmsg straight into pool buffers. Each datagram lands 4 bytes into the buffer, so its
// VXLAN header fills the last 8 bytes of the virtio-net header's place and the inner frame lands
// where the pool keeps frames: no copy. The header is checked, then the 12 bytes are zeroed.
//
// Transmit: sendmmsg with two iovecs per datagram, the port's VXLAN header (the same 8 bytes for
// every packet of a VNI, or with rco=on one of the 256 remote-checksum-offload headers built
// when the port is made, the one that says where a frame's partial checksum is) and the frame in
// its pool buffer, so a packet shared with other
// ports (flooding) is never written to. The outer UDP source port is the port of one of the
// sending sockets, picked by the inner flow's hash: every frame of a flow leaves from one port,
// flows spread over the range for the underlay's ECMP. A TSO super-frame is cut here, not by the
// engine: each segment is the VXLAN header and the segment's own headers, written into a scratch
// slot, then a slice of the super-frame's payload where it lies (no copy, no pool buffer per
// segment). A run of equal-size datagrams of one flow to one VTEP (a super-frame's segments)
// becomes one sendmmsg entry with a UDP_SEGMENT control message: the kernel sends them as one GSO
// packet and cuts it into datagrams as late as it can.
//
// Measured (2 cores, Linux 6.18; pier to pier, each host a namespace with its own daemon, a veth as
// the wire, containers on tap ports at MTU 1450; iperf3 -t 5, Gbit/s of two runs A->B / two runs B->A):
//   sendmmsg, one datagram per entry:              0.89 1.14 / 0.86 1.13   (receive coalescing on)
//   sendmmsg, UDP_SEGMENT trains as entries:       1.72 2.37 / 2.26 1.79   (receive coalescing on)
//   the same two without receive coalescing:       0.73 0.81 / 0.86 0.87  against  0.92 0.99 / 1.06 1.32
// UDP_SEGMENT is kept (PIER_VXLAN_SEND=sendmmsg turns it off, for measuring). The segments of a
// super-frame cross the sender's stack once per train instead of once per datagram; the receiver
// (the kernel cuts the train again before pier's socket, which does not ask for UDP_GRO) is the
// same either way. The larger step is on the receiving side: gro.ts hands the container's kernel
// one super-frame per train rather than one write per 1464-byte frame.
// Through pier to a Linux vxlan device behind a Linux bridge: pier -> Linux 2.2-2.5, Linux -> pier 4.3-4.9.
import { C } from '../../dataplane/counters.ts';
import { Fdb } from '../../dataplane/fdb.ts';
import { flowHash } from '../../dataplane/flow-hash.ts';
import { finishChecksum, SEG_OK, TcpSegments } from '../../dataplane/offload.ts';
import type { PacketPool } from '../../dataplane/pool.ts';
import { BUF_SIZE, VNET_HDR } from '../../dataplane/pool.ts';
import { Port, type PortContext } from '../../dataplane/port.ts';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../../dataplane/vnet.ts';
import { libc } from '../../sys/index.ts';
import { ipBytes, MmsgBatch, recvmmsg, sendmmsg, sockaddr, sockaddrText, socketDrops, EMSGSIZE, MSG_TRUNC, MSG_DONTWAIT, SOL_UDP, UDP_GRO } from '../../sys/udp.ts';
import type { DataplaneHalf } from '../kind.ts';
import {
  DECAP_NO_I, DECAP_OK, DECAP_SHORT, DECAP_WRONG_VNI, decodeVxlan, encodeVxlan, encodeVxlanRco, ETH_HLEN, OVERHEAD_V4, OVERHEAD_V6, rcoByte, rcoOffset, rcoStart,
  sourcePort, SRC_PORT_MIN, VXLAN_HLEN,
} from './header.ts';
import { markPartialChecksum } from './csum.ts';
import { markSuperFrame, TcpCoalescer } from '../../dataplane/gro.ts';
import type { VxlanSpec } from './options.ts';
import type { VxlanView } from './view.ts';

const RX_BATCH = 32;
/** Messages per sendmmsg call and iovecs behind them. */
const TX_MSGS = 64;
const TX_IOVS = 1024;
/** UDP_SEGMENT: at most this many datagrams per GSO packet (the kernel's UDP_MAX_SEGMENTS is 64 or 128). */
const GSO_SEGS_MAX = 64;
/** ... and at most this many UDP payload bytes (65507 over IPv4). */
const GSO_BYTES_MAX = 65000;
/** Remotes plus VTEPs learned from other source addresses. */
const VTEPS_MAX = 256;
const AGING_INTERVAL_MS = 10_000;
/** A datagram's headers in `scratch`: VXLAN (8) + Ethernet and a tag (18) + IPv4 or IPv6 (60) + TCP (60), rounded up. */
const SCRATCH_SLOT = 160;
const ENOBUFS = 105;
const EIO = 5;

/** Per-port counters beyond the shared ones, shown by `pier show` (describe()). */
const X = {
  rx_dropped_short: 0,
  rx_dropped_no_i_flag: 1,
  rx_dropped_wrong_vni: 2,
  rx_dropped_truncated: 3,
  vtep_table_full: 4,
  tx_dropped_too_big: 5,
  tx_flooded_copies: 6,
  tx_sendmmsg_calls: 7,
  tx_gso_messages: 8,
  tx_datagrams: 9,
  gso_failures: 10,
  rx_csum_partial: 11,
  rx_gro_datagrams: 12,
  vteps_reclaimed: 13,
  tx_rco: 14,
  rx_rco: 15,
  rx_dropped_bad_rco: 16,
} as const;

/** Where a frame too large for the tunnel goes to be dropped when the pool is empty. */
const dropBuf = new Uint8Array(BUF_SIZE);

export class VxlanPort extends Port {
  readonly fds: readonly number[];
  readonly extra = new Float64Array(Object.keys(X).length);
  readonly maxFrame: number;
  private readonly rx = new MmsgBatch(RX_BATCH, RX_BATCH);
  private readonly tx = new MmsgBatch(TX_MSGS, TX_IOVS);
  /**
   * The VXLAN header every datagram of this port starts with, then (rco=on) the RCO header for
   * each value r of the RCO byte at (1 + r) * 8; and the address of the first.
   */
  private readonly hdr = new Uint8Array(new ArrayBuffer(VXLAN_HLEN * 257));
  private readonly hdrAddr: number;
  /** VTEP i's sockaddr (remotes first), and its 4 or 16 address bytes for matching senders. */
  private readonly vtepSa: Uint8Array[] = [];
  private readonly vtepAddr: Uint8Array;
  /** 1 where slot i holds a VTEP (remotes always; learned ones until reclaimVteps() frees them). */
  private readonly vtepLive = new Uint8Array(VTEPS_MAX);
  private vteps: number;
  private readonly addrLen: number;
  private readonly addrAt: number;
  /** Inner MAC -> the VTEP index it was last seen behind: the bridge's FDB, with VTEPs for ports (learned, aged, bounded alike). */
  readonly table = new Fdb(4096);
  private readonly rxHandles = new Int32Array(RX_BATCH);
  /**
   * Messages received and not yet walked (receive()): buffer, length (-1 truncated), VTEP index
   * (-2 until resolved) and the sender's address bytes, segment size (0: one datagram), offset of
   * the next datagram.
   */
  private readonly stageH = new Int32Array(RX_BATCH);
  private readonly stageLen = new Int32Array(RX_BATCH);
  private readonly stageVtep = new Int32Array(RX_BATCH);
  private readonly stageAddr = new Uint8Array(RX_BATCH * 16);
  private readonly stageSeg = new Int32Array(RX_BATCH);
  private readonly stageOff = new Int32Array(RX_BATCH);
  private stageNext = 0;
  private stageEnd = 0;
  private ctx: PortContext | undefined;
  // The batch being built: per message its packets, bytes, first iovec, datagram length, VTEP.
  private readonly msgPkts = new Int32Array(TX_MSGS);
  private readonly msgBytes = new Float64Array(TX_MSGS);
  private readonly msgIov = new Int32Array(TX_MSGS);
  private readonly msgSeg = new Int32Array(TX_MSGS);
  private readonly msgVtep = new Int32Array(TX_MSGS);
  private readonly msgOpen = new Uint8Array(TX_MSGS);
  private nmsg = 0;
  private niov = 0;
  private sock = -1;
  private readonly held = new Int32Array(TX_IOVS);
  private nheld = 0;
  gso: boolean;
  /** Coalesces decapsulated TCP segments into super-frames (gro.ts); undefined when spec.gro is off. */
  private readonly gro: TcpCoalescer | undefined;
  /** The super-frame being segmented (superFrame()), and the slots its datagrams' headers are written in, one per iovec pair. */
  private readonly segs = new TcpSegments();
  private readonly scratch = new Uint8Array(new ArrayBuffer((TX_IOVS / 2) * SCRATCH_SLOT));
  private readonly scratchDv = new DataView(this.scratch.buffer);
  private readonly scratchAddr = libc.addressOf(this.scratch);

  constructor(index: number, name: string, bridge: number, counters: Float64Array, pool: PacketPool, readonly spec: VxlanSpec) {
    // TSO and partial checksums: the port cuts super-frames itself (superFrame(): no copy of the
    // payload, as the engine's segmentation would make) and finishes checksums where it must;
    // with rco=on a partial checksum crosses the tunnel as it is, and the header says where.
    super(index, name, bridge, counters, pool, true, true);
    this.acceptsExternal = true; // sendmmsg copies into the kernel and is done
    this.stormPause = false; // an uplink's queue carries every tenant's traffic
    this.fds = [spec.rxFd];
    this.gso = spec.gso;
    this.gro = spec.gro ? new TcpCoalescer(pool) : undefined;
    encodeVxlan(this.hdr, 0, spec.vni);
    if (spec.rco) for (let r = 0; r < 256; r++) encodeVxlanRco(this.hdr, (1 + r) * VXLAN_HLEN, spec.vni, r);
    this.hdrAddr = libc.addressOf(this.hdr);
    const v4 = spec.family === 4;
    this.addrLen = v4 ? 4 : 16;
    this.addrAt = v4 ? 4 : 8;
    this.maxFrame = spec.underlayMtu - (v4 ? OVERHEAD_V4 : OVERHEAD_V6) + ETH_HLEN;
    this.vtepAddr = new Uint8Array(VTEPS_MAX * this.addrLen);
    spec.remotes.forEach((r, i) => this.setVtep(i, ipBytes(r)));
    this.vteps = spec.remotes.length;
    this.timerAt = Date.now() + AGING_INTERVAL_MS;
  }

  private addVtep(addr: Uint8Array): number {
    // A slot freed by reclaimVteps() first, else a new one.
    let i = this.spec.remotes.length;
    while (i < this.vteps && this.vtepLive[i] === 1) i++;
    this.setVtep(i, addr);
    if (i === this.vteps) this.vteps = i + 1;
    return i;
  }

  private setVtep(i: number, addr: Uint8Array): void {
    const text = addr.length === 4 ? addr.join('.') : undefined;
    const sa = sockaddr(this.spec.family, text, this.spec.dstport);
    if (addr.length === 16) sa.set(addr, 8);
    this.vtepSa[i] = sa;
    this.vtepAddr.set(addr, i * this.addrLen);
    this.vtepLive[i] = 1;
  }

  /**
   * Free the slots of learned VTEPs behind which no MAC is left (aged out of the table), so that
   * 256 senders seen over the port's life do not fill it for good. Not while datagrams are staged:
   * they carry VTEP indexes resolved when they were read.
   */
  private reclaimVteps(now: number): void {
    const first = this.spec.remotes.length;
    if (this.vteps === first || this.stageNext < this.stageEnd) return;
    const refs = new Uint32Array(this.vteps);
    for (const e of this.table.entries(now)) refs[e.port]!++;
    for (let i = first; i < this.vteps; i++) {
      if (this.vtepLive[i] === 1 && refs[i] === 0) {
        this.vtepLive[i] = 0;
        this.extra[X.vteps_reclaimed]!++;
      }
    }
    while (this.vteps > first && this.vtepLive[this.vteps - 1] === 0) this.vteps--;
    this.vtepSa.length = this.vteps;
  }

  /** The VTEP index of the sender whose 4 or 16 address bytes are at b[at..]; learned if new; -1 when the table is full. */
  private vtepOf(b: Uint8Array, at: number): number {
    const a = this.vtepAddr;
    const len = this.addrLen;
    for (let v = 0; v < this.vteps; v++) {
      if (this.vtepLive[v] === 0) continue;
      const base = v * len;
      let k = 0;
      while (k < len && a[base + k] === b[at + k]) k++;
      if (k === len) return v;
    }
    if (this.vteps >= VTEPS_MAX && this.vtepLive.indexOf(0, this.spec.remotes.length) < 0) {
      this.extra[X.vtep_table_full]!++;
      return -1;
    }
    return this.addVtep(b.slice(at, at + len)); // a new VTEP: rare, not per packet
  }

  /**
   * Receive up to `max` frames. Datagrams are read with recvmmsg into pool buffers, then walked
   * from the stage: a message that is one datagram is decapsulated in place (no copy); one that
   * the kernel coalesced (UDP_GRO: a sender's UDP_SEGMENT train that crossed a veth whole, the
   * segment size in a control message) has each of its datagrams copied into a buffer of its own
   * first, and its buffer is released once the last is out. What the budget leaves on the stage
   * is walked on the next turn (ctx.again), before anything new is read.
   */
  receive(_queue: number, out: Int32Array, max: number): number {
    const pool = this.pool;
    const c = this.counters;
    const rx = this.rx;
    const hs = this.rxHandles;
    this.rxOffloads = false; // whole frames; set again when one carries a partial checksum (csum.ts)
    if (this.stageNext === this.stageEnd) {
      const want = max < RX_BATCH ? max : RX_BATCH;
      let k = 0;
      while (k < want) {
        const h = pool.alloc();
        if (h < 0) break;
        hs[k] = h;
        rx.setIov(k, pool.hdrAddr(h) + VNET_HDR - VXLAN_HLEN, BUF_SIZE - VNET_HDR + VXLAN_HLEN);
        rx.setMsg(k, k, 1, 28);
        if (this.spec.udpGro) rx.offerControl(k);
        k++;
      }
      if (k === 0) {
        // Take a datagram anyway and drop it: left in the socket, it would wake epoll forever.
        if (libc.recvBuf(this.spec.rxFd, dropBuf, dropBuf.length, MSG_DONTWAIT) >= 0) c[C.rx_dropped_no_buffer]!++;
        return 0;
      }
      const r = recvmmsg(this.spec.rxFd, rx.addr, k, MSG_DONTWAIT, 0);
      if (r < 0) {
        for (let i = 0; i < k; i++) pool.release(hs[i]!);
        const e = libc.errno();
        if (e !== libc.EAGAIN && e !== libc.EINTR) c[C.rx_errors]!++;
        return 0;
      }
      for (let i = r; i < k; i++) pool.release(hs[i]!);
      // Stage the messages: the sender's VTEP (its address is in the name slot, which the next
      // recvmmsg overwrites), the length, and the segment size of a coalesced one.
      const rv = rx.dv;
      for (let i = 0; i < r; i++) {
        this.stageH[i] = hs[i]!;
        this.stageLen[i] = (rx.msgFlags(i) & MSG_TRUNC) !== 0 ? -1 : rx.msgLen(i);
        // Resolved (and learned) only when a frame of it is learned from: a datagram that does not
        // decapsulate takes no slot in the VTEP table.
        this.stageVtep[i] = -2;
        const na = rx.nameOffset(i) + this.addrAt;
        for (let k = 0; k < this.addrLen; k++) this.stageAddr[i * 16 + k] = rx.bytes[na + k]!;
        let seg = 0;
        if (this.spec.udpGro && rx.controlLen(i) >= 20) {
          const co = rx.controlOffset(i);
          if (rv.getInt32(co + 8, true) === SOL_UDP && rv.getInt32(co + 12, true) === UDP_GRO) seg = rv.getInt32(co + 16, true);
        }
        this.stageSeg[i] = seg > 0 && seg < this.stageLen[i]! ? seg : 0;
        this.stageOff[i] = 0;
      }
      this.stageNext = 0;
      this.stageEnd = r;
    }
    const gro = this.gro;
    const made0 = gro?.superFrames ?? 0;
    const now = Date.now() / 1000;
    let n = 0;
    this.lastSrc = -1;
    while (n < max && this.stageNext < this.stageEnd) {
      const i = this.stageNext;
      const h = this.stageH[i]!;
      const len = this.stageLen[i]!;
      const seg = this.stageSeg[i]!;
      if (seg === 0) {
        // One datagram, in place.
        this.stageNext++;
        n = this.deliver(h, len, i, now, out, n);
        continue;
      }
      // A coalesced message: the next of its datagrams into a buffer of its own.
      const off = this.stageOff[i]!;
      const dlen = len - off < seg ? len - off : seg;
      const nextOff = off + dlen;
      this.stageOff[i] = nextOff;
      if (nextOff >= len) {
        this.stageNext++;
      }
      this.extra[X.rx_gro_datagrams]!++;
      const d = pool.alloc();
      if (d < 0) {
        c[C.rx_dropped_no_buffer]!++;
      } else {
        const src = pool.hdrOffset(h) + VNET_HDR - VXLAN_HLEN + off;
        const dst = pool.hdrOffset(d) + VNET_HDR - VXLAN_HLEN;
        pool.bytes.copyWithin(dst, src, src + dlen);
        n = this.deliver(d, dlen, i, now, out, n);
      }
      if (nextOff >= len) pool.release(h);
    }
    if (gro !== undefined) {
      // Super-frames made in this burst, the last one closed here.
      gro.close();
      const made = gro.superFrames - made0;
      c[C.rx_gso_packets]! += made;
      if (made > 0) this.rxOffloads = true;
    }
    // The budget ran out with datagrams staged: come back next turn, before epoll says anything.
    if (this.stageNext < this.stageEnd) this.ctx?.again(this, 0);
    return n;
  }

  /** Inner source MAC and staged message of the last frame learned from (one look-up per run of frames of one sender). */
  private lastSrc = -1;
  private lastMsg = -1;

  /**
   * Decapsulate the datagram of `len` bytes (-1: truncated) that sits 4 bytes into buffer h, from
   * staged message m, and put it in out[n] (or merge it into the open super-frame). Returns the
   * new n. Releases h when it is dropped.
   */
  private deliver(h: number, len: number, m: number, now: number, out: Int32Array, n: number): number {
    const pool = this.pool;
    const b = pool.bytes;
    const c = this.counters;
    const x = this.extra;
    const gro = this.gro;
    const ho = pool.hdrOffset(h);
    const d = len < 0 ? -1 : decodeVxlan(b, ho + VNET_HDR - VXLAN_HLEN, len, this.spec.vni);
    if (d !== DECAP_OK) {
      x[d === -1 ? X.rx_dropped_truncated : d === DECAP_SHORT ? X.rx_dropped_short : d === DECAP_NO_I ? X.rx_dropped_no_i_flag : X.rx_dropped_wrong_vni]!++;
      c[C.rx_dropped_malformed]!++;
      pool.release(h);
      return n;
    }
    // A partial inner checksum the sender says it left (RCO): where, before the header is zeroed.
    const rs = rcoStart(b, ho + VNET_HDR - VXLAN_HLEN);
    const ro = rs < 0 ? 0 : rcoOffset(b, ho + VNET_HDR - VXLAN_HLEN);
    // The virtio-net header's place, zeroed (three words: no builtin call per datagram).
    const dv = pool.dv;
    dv.setUint32(ho, 0);
    dv.setUint32(ho + 4, 0);
    dv.setUint32(ho + 8, 0);
    const flen = len - VXLAN_HLEN;
    pool.len[h] = flen;
    const fo = ho + VNET_HDR;
    if (rs >= 0) {
      if (rs < ETH_HLEN || rs + ro + 2 > flen) {
        x[X.rx_dropped_bad_rco]!++;
        c[C.rx_dropped_malformed]!++;
        pool.release(h);
        return n;
      }
      b[ho] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      b[ho + 6] = rs;
      b[ho + 8] = ro;
      this.rxOffloads = true;
      x[X.rx_rco]!++;
    } else if (markPartialChecksum(b, ho, fo, flen)) {
      this.rxOffloads = true;
      x[X.rx_csum_partial]!++;
    }
    const s0 = b[fo + 6]!;
    if ((s0 & 1) === 0) {
      const src = (s0 * 0x10000 + (b[fo + 7]! << 8 | b[fo + 8]!)) * 0x1000000 + ((b[fo + 9]! << 16) | (b[fo + 10]! << 8) | b[fo + 11]!);
      if (src !== this.lastSrc || m !== this.lastMsg) {
        let v = this.stageVtep[m]!;
        if (v === -2) v = this.stageVtep[m] = this.vtepOf(this.stageAddr, m * 16);
        if (v >= 0) this.table.learn(src, v, now);
        this.lastSrc = src;
        this.lastMsg = m;
      }
    }
    c[C.rx_packets]!++;
    c[C.rx_bytes]! += flen;
    if (flen > this.maxFrame && markSuperFrame(pool, h, this.maxFrame)) {
      // Too large to have crossed the underlay: a sender on this machine passed its TSO frame
      // through a veth whole (gro.ts). It leaves pier as the super-frame it is.
      this.rxOffloads = true;
      c[C.rx_gso_packets]!++;
      gro?.close(); // (counted with the burst's others in receive())
      out[n++] = h;
    } else if (gro !== undefined) {
      n = gro.push(h, out, n);
    } else {
      out[n++] = h;
    }
    return n;
  }

  transmit(q: Int32Array, n: number): void {
    const pool = this.pool;
    const b = pool.bytes;
    const c = this.counters;
    const x = this.extra;
    const maxFrame = this.maxFrame;
    const now = Date.now() / 1000;
    for (let i = 0; i < n; i++) {
      let h = q[i]!;
      const len = pool.len[h]!;
      const ho = pool.hdrOffset(h);
      let fo = ho + VNET_HDR;
      if (len < ETH_HLEN) {
        c[C.tx_dropped_bad_gso]!++;
        pool.release(h);
        continue;
      }
      if (b[ho + 1] !== 0) {
        this.superFrame(h, now);
        continue;
      }
      if (len > maxFrame) {
        c[C.tx_dropped_too_big]!++;
        x[X.tx_dropped_too_big]!++;
        pool.release(h);
        continue;
      }
      let hdrAt = this.hdrAddr;
      if ((b[ho]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
        const start = b[ho + 6]! | (b[ho + 7]! << 8);
        const off = b[ho + 8]! | (b[ho + 9]! << 8);
        const r = this.spec.rco && start >= ETH_HLEN && start + off + 2 <= len ? rcoByte(start, off) : -1;
        if (r >= 0) {
          // Left partial: the header says where, the receiver finishes it (or its kernel does).
          hdrAt += (1 + r) * VXLAN_HLEN;
          x[X.tx_rco]!++;
        } else {
          // Finished here (rco=off, or a request RCO cannot say: odd start, past 254, not TCP's
          // or UDP's field), as the engine finishes it for a port that takes none.
          if ((h = finishChecksum(pool, h, c)) < 0) continue;
          fo = pool.frameOffset(h);
        }
      }
      const vtep = this.route(b, fo, len, now);
      this.room(vtep);
      this.held[this.nheld++] = h;
      this.datagram(hdrAt, VXLAN_HLEN, pool.hdrAddr(h) + VNET_HDR, len, vtep);
    }
    if (this.nmsg > 0) this.send();
    this.sock = -1;
  }

  /**
   * Send TSO super-frame h as its segments, with no copy of its payload: each datagram is the
   * VXLAN header and the segment's own headers, written into a slot of `scratch`, then a slice of
   * the super-frame where it lies. Segment checksums are left partial with rco=on (the header
   * says so), else computed over the slot and the slice. The super-frame is held until the last
   * batch that reads it is sent. Releases h.
   */
  private superFrame(h: number, now: number): void {
    const pool = this.pool;
    const c = this.counters;
    const segs = this.segs;
    if (segs.parse(pool, h) !== SEG_OK) {
      c[C.tx_dropped_bad_gso]!++;
      pool.release(h);
      return;
    }
    const hl = segs.hl;
    const maxFrame = this.maxFrame;
    c[C.tx_segmented]!++;
    const rco = this.spec.rco;
    // The segments' TCP checksums, partial: field 16 of the TCP header, which starts at an even
    // offset below 254 (14 + 4 + at most 60).
    const hdr = rco ? (1 + rcoByte(segs.l4, 16)) * VXLAN_HLEN : 0;
    const vtep = this.route(pool.bytes, segs.fo, segs.len, now);
    const base = pool.hdrAddr(h) + VNET_HDR;
    const sc = this.scratch;
    const sdv = this.scratchDv;
    let holding = false;
    let prev = -1;
    for (let i = 0; i < segs.count; i++) {
      const pLen = segs.payloadLen(i);
      if (hl + pLen > maxFrame) {
        // Too large for the tunnel (gso_size above its MTU): counted and left out, as the frames
        // the engine cut used to be; a shorter last segment may still fit.
        c[C.tx_dropped_too_big]!++;
        this.extra[X.tx_dropped_too_big]!++;
        continue;
      }
      if (this.room(vtep)) holding = false;
      if (!holding) {
        // One reference per batch that reads it; the engine's own is given back below.
        pool.refs[h]!++;
        this.held[this.nheld++] = h;
        holding = true;
      }
      const slot = (this.niov >> 1) * SCRATCH_SLOT;
      if (prev < 0) {
        for (let k = 0; k < VXLAN_HLEN; k++) sc[slot + k] = this.hdr[hdr + k]!;
        segs.header(pool.bytes, sc, sdv, slot + VXLAN_HLEN, i, rco);
      } else {
        // The previous segment's headers as the template (one memmove): every field that
        // differs is written afresh.
        if (prev !== slot) sc.copyWithin(slot, prev, prev + VXLAN_HLEN + hl);
        segs.header(pool.bytes, sc, sdv, slot + VXLAN_HLEN, i, rco, true);
      }
      prev = slot;
      if (rco) this.extra[X.tx_rco]!++;
      this.datagram(this.scratchAddr + slot, VXLAN_HLEN + hl, base + segs.payloadAt(i), pLen, vtep);
    }
    pool.release(h);
  }

  /** The VTEP a frame at b[fo..] goes to (-1: every remote), and the socket its flow leaves from. */
  private route(b: Uint8Array, fo: number, len: number, now: number): number {
    // The flow's port in 49152..65535 (header.ts), sent from the socket whose block holds it.
    const sock = ((sourcePort(flowHash(b, fo, len)) - SRC_PORT_MIN) * this.spec.txFds.length) >>> 14;
    if (sock !== this.sock) {
      if (this.nmsg > 0) this.send();
      this.sock = sock;
    }
    const d0 = b[fo]!;
    if ((d0 & 1) !== 0) return -1;
    const dst = (d0 * 0x10000 + (b[fo + 1]! << 8 | b[fo + 2]!)) * 0x1000000 + ((b[fo + 3]! << 16) | (b[fo + 4]! << 8) | b[fo + 5]!);
    return this.table.lookup(dst, now);
  }

  /** Send the batch if one more datagram to `vtep` might not fit; true when it was sent. */
  private room(vtep: number): boolean {
    const copies = vtep >= 0 ? 1 : this.spec.remotes.length;
    if (this.nmsg + copies > TX_MSGS || this.niov + 2 > TX_IOVS || this.nheld === TX_IOVS) {
      this.send();
      return true;
    }
    return false;
  }

  /**
   * Queue one datagram of two iovecs, [a0, a0 + l0) then [a1, a1 + l1) (the VXLAN header first,
   * so the frame is l0 + l1 - 8 bytes), to `vtep` (-1: a copy to every remote). It joins the train being built when it
   * goes to the same VTEP and is no longer than the train's datagrams (a shorter one ends it).
   * room() has made space for it.
   */
  private datagram(a0: number, l0: number, a1: number, l1: number, vtep: number): void {
    const tx = this.tx;
    const dlen = l0 + l1;
    const flen = dlen - VXLAN_HLEN;
    const iov = this.niov;
    tx.setIov(iov, a0, l0);
    tx.setIov(iov + 1, a1, l1);
    this.niov += 2;
    const m = this.nmsg - 1;
    if (vtep >= 0 && this.gso && m >= 0 && this.msgOpen[m] === 1 && this.msgVtep[m] === vtep && dlen <= this.msgSeg[m]! &&
      this.msgPkts[m]! < GSO_SEGS_MAX && this.msgBytes[m]! + this.msgPkts[m]! * VXLAN_HLEN + dlen <= GSO_BYTES_MAX) {
      const p = ++this.msgPkts[m]!;
      this.msgBytes[m]! += flen;
      if (dlen < this.msgSeg[m]!) this.msgOpen[m] = 0; // a shorter one ends the train
      // The second datagram makes it a train (the UDP_SEGMENT control message); later ones
      // only lengthen its iovec list.
      if (p === 2) tx.setMsg(m, this.msgIov[m]!, 4, this.vtepSa[vtep]!.length, this.msgSeg[m]);
      else tx.setIovLen(m, p * 2);
      return;
    }
    const nrem = this.spec.remotes.length;
    const copies = vtep >= 0 ? 1 : nrem;
    if (vtep < 0) this.extra[X.tx_flooded_copies]! += nrem;
    for (let r = 0; r < copies; r++) {
      const v = vtep >= 0 ? vtep : r;
      const k = this.nmsg++;
      const sa = this.vtepSa[v]!;
      tx.setName(k, sa);
      tx.setMsg(k, iov, 2, sa.length);
      this.msgPkts[k] = 1;
      this.msgBytes[k] = flen;
      this.msgIov[k] = iov;
      this.msgSeg[k] = dlen;
      this.msgVtep[k] = v;
      this.msgOpen[k] = vtep >= 0 ? 1 : 0;
    }
  }

  /** sendmmsg the batch on the current socket, count what left and what did not, release the packets. */
  private send(): void {
    const c = this.counters;
    const x = this.extra;
    const tx = this.tx;
    const fd = this.spec.txFds[this.sock]!;
    const total = this.nmsg;
    let sent = 0;
    while (sent < total) {
      x[X.tx_sendmmsg_calls]!++;
      const r = sendmmsg(fd, tx.msgAddr(sent), total - sent, MSG_DONTWAIT);
      if (r > 0) {
        for (let k = sent; k < sent + r; k++) {
          const p = this.msgPkts[k]!;
          c[C.tx_packets]! += p;
          c[C.tx_bytes]! += this.msgBytes[k]!;
          x[X.tx_datagrams]! += p;
          if (p > 1) x[X.tx_gso_messages]!++;
        }
        sent += r;
        continue;
      }
      // Message `sent` failed (r < 0): count its packets by reason and go on with the next.
      const e = libc.errno();
      if (e === libc.EINTR) continue;
      const p = this.msgPkts[sent]!;
      if (e === libc.EAGAIN || e === ENOBUFS) {
        // The socket's buffer is full: the rest would fail alike.
        for (let k = sent; k < total; k++) c[C.tx_dropped_full]! += this.msgPkts[k]!;
        break;
      }
      if (p > 1 && (e === EIO || e === libc.EINVAL)) {
        // The route cannot take UDP GSO (no checksum offload on the device, xfrm, ...): send one
        // datagram per entry until the next aging pass tries again. Not for good: EINVAL also
        // comes from one bad destination (a learned endpoint the kernel refuses), and one sender
        // must not be able to take batching away from the port for its whole life.
        this.gso = false;
        x[X.gso_failures]!++;
      }
      c[e === EMSGSIZE ? C.tx_dropped_too_big : C.tx_dropped_error]! += p;
      sent++;
    }
    const pool = this.pool;
    for (let i = 0; i < this.nheld; i++) pool.release(this.held[i]!);
    this.nheld = 0;
    this.nmsg = 0;
    this.niov = 0;
  }

  override onTimer(): void {
    this.gso = this.spec.gso;
    this.table.age(Date.now() / 1000);
    this.reclaimVteps(Date.now() / 1000);
    this.timerAt = Date.now() + AGING_INTERVAL_MS;
  }

  override describe(): VxlanView {
    const s = this.spec;
    const byVtep = new Array<number>(this.vteps).fill(0);
    for (const e of this.table.entries(Date.now() / 1000)) byVtep[e.port] = (byVtep[e.port] ?? 0) + 1;
    const extra: Record<string, number> = {};
    for (const [k, i] of Object.entries(X)) extra[k] = this.extra[i]!;
    return {
      vni: s.vni,
      dstport: s.dstport,
      local: s.local,
      family: s.family,
      underlayMtu: s.underlayMtu,
      mtuFrom: s.mtuFrom,
      rco: s.rco,
      innerMtu: s.underlayMtu - (s.family === 4 ? OVERHEAD_V4 : OVERHEAD_V6),
      sourcePorts: s.txPorts,
      send: this.gso ? 'sendmmsg+UDP_SEGMENT' : 'sendmmsg',
      vteps: this.vtepSa.flatMap((sa, i) => this.vtepLive[i] === 1 ? [{ address: sockaddrText(sa, 0), remote: i < s.remotes.length, macs: byVtep[i] ?? 0 }] : []),
      learned: this.table.size,
      counters: { ...extra, rx_gro_merged: this.gro?.merged ?? 0, rx_gro_super_frames: this.gro?.superFrames ?? 0, rx_gro_bad_checksum: this.gro?.badChecksum ?? 0 },
      gro: this.gro !== undefined,
      udpGro: s.udpGro,
      socketDrops: socketDrops(s.rxFd),
    };
  }

  override attach(ctx: PortContext): void {
    this.ctx = ctx;
  }

  /** Staged messages go back to the pool with the port. */
  close(): void {
    for (let i = this.stageNext; i < this.stageEnd; i++) this.pool.release(this.stageH[i]!);
    this.stageNext = this.stageEnd = 0;
  }
}

export const vxlanDataplane: DataplaneHalf<VxlanSpec> = {
  create: (b, spec, pool) => new VxlanPort(b.index, b.name, b.bridge, b.counters, pool, spec),
};

// For unit tests: the decap results by name.
export const DECAP = { DECAP_OK, DECAP_SHORT, DECAP_NO_I, DECAP_WRONG_VNI } as const;
