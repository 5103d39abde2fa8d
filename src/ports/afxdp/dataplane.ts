// The dataplane half of an AF_XDP port: one socket per rx queue, all sharing one UMEM: a memfd
// of 4096-byte frames mapped into pier's arena beside the packet pool, so a frame moves between
// the UMEM and a pool buffer with one copyWithin over the arena (no syscall, no allocation).
//
// Why not the pool itself as the UMEM (it works: pier registered it, unaligned chunks posted 244
// bytes before each buffer's frame, until measured): the kernel pins every page of a UMEM when it
// is registered, and the pool is 4096 buffers of 66 KiB whose memory is otherwise touched only as
// used; registering it made the daemon resident at 355 MB instead of ~80. And every buffer posted
// to a fill ring held a 66 KiB pool buffer for a 3840-byte frame, so the fill rings could not be
// deep enough to absorb the bursts a segmented 64 KiB super-frame makes (44 frames at once, from
// the other pier) without emptying the pool: the kernel counted thousands of fill-ring-empty drops
// per iperf3 run. A dedicated UMEM is 12 MiB for one queue, every frame of it always posted, and
// costs one copy per frame of at most 1514 bytes (at MTU 1500), which the syscalls dwarf.
//
// UMEM layout (aligned chunks of CHUNK_SIZE): queue q's rx frames are [q*RX_FRAMES, (q+1)*RX_FRAMES),
// every one of them in queue q's fill ring or rx ring (the kernel's) except while pier copies it
// out, after which it goes straight back to the fill ring; the tx frames come after all queues',
// TX_FRAMES of them, taken from a free stack, filled by copy, given to queue 0's tx ring and
// back on the free stack when the completion ring returns them. A received frame starts
// XDP_PACKET_HEADROOM (256) bytes into its chunk, so frames are at most 3840 bytes in (larger
// ones the kernel counts in rx_dropped) and 4096 out (pier counts larger ones in
// tx_dropped_too_big): the port takes neither TSO super-frames nor partial checksums, and the
// engine segments and checksums for it, as for a tap with offloads=off.
//
// Every descriptor the kernel writes (rx, completion) is checked against the frames the kernel
// holds: an address outside the queue's frames, not at a chunk the kernel has, or a length past
// the chunk is counted and dropped, never followed. The port sends on queue 0's socket; every
// socket receives.
import { C } from '../../dataplane/counters.ts';
import { TcpCoalescer } from '../../dataplane/gro.ts';
import { VNET_HDR, type PacketPool } from '../../dataplane/pool.ts';
import { Port } from '../../dataplane/port.ts';
import { mapDelete, mapUpdate } from '../../sys/bpf.ts';
import { libc, memfd, withNetns } from '../../sys/index.ts';
import * as xsk from '../../sys/xsk.ts';
import type { DataplaneHalf, PortBase } from '../kind.ts';
import type { AfXdpSpec } from './options.ts';
import type { AfXdpView } from './view.ts';

export const CHUNK_SIZE = 4096;
/** Rx frames per queue: the fill and rx rings' size, every frame posted. */
export const RX_FRAMES = 2048;
/** Tx frames (queue 0): the tx and completion rings' size. */
export const TX_FRAMES = 1024;
/** The largest frame a socket receives (the chunk less the kernel's headroom). */
export const RX_FRAME_MAX = CHUNK_SIZE - xsk.XDP_PACKET_HEADROOM;
/** The largest frame sent: a descriptor may not cross its chunk. */
export const TX_FRAME_MAX = CHUNK_SIZE;
const ETH_HLEN = 14;
/** Retry a send the kernel put off this much later. */
const RETRY_MS = 2;
/** Most sendto() wake-ups per burst (the kernel sends 32 descriptors per call in copy mode). */
const MAX_KICKS = 16;
/** How often the port asks whether its sockets are still bound (a vanished device does not wake epoll). */
const HEALTH_MS = 1000;
const ENXIO = 6;

/** UMEM bytes for `queues` sockets. */
export function umemSize(queues: number): number {
  return (queues * RX_FRAMES + TX_FRAMES) * CHUNK_SIZE;
}

/** One socket and the views over its four mmapped rings, made once. */
export class XskQueue {
  constructor(
    readonly fd: number,
    readonly fill: xsk.ProducerRing,
    readonly comp: xsk.ConsumerRing,
    readonly rx: xsk.ConsumerRing,
    readonly tx: xsk.ProducerRing,
    readonly maps: readonly xsk.RingMap[],
  ) {}
}

export interface AfXdpInfo {
  dev: string;
  mode: 'native' | 'generic';
  zeroCopy: boolean;
  mapFd: number;
  /** Coalesce received TCP segments into super-frames (PIER_AFXDP_GRO=off: not, for measuring). */
  gro?: boolean;
  /** The UMEM's arena offset and size; its memfd (closed with the port; -1 in tests). */
  umemOff: number;
  umemBytes: number;
  umemFd: number;
}

export class AfXdpPort extends Port {
  readonly fds: readonly number[];
  /** Per UMEM frame: 1 while the kernel has it (fill, rx, tx or completion ring), 0 while pier does. */
  private readonly kern: Uint8Array;
  /** Free tx frames, a stack. */
  private readonly txFree: Int32Array;
  private txTop = 0;
  private readonly txBase: number;
  /** Rx frames of one burst, to post back once it is read. */
  private readonly repost = new Int32Array(RX_FRAMES);
  txInFlight = 0;
  /** Descriptors from the kernel that named no frame it held, or a bad length (rx and completion rings). */
  badRxDescs = 0;
  badCompletions = 0;
  /**
   * Received TCP segments of one flow leave a burst as one super-frame (gro.ts): a tap port then
   * hands its container's kernel one write instead of forty. undefined when off.
   */
  private readonly gro: TcpCoalescer | undefined;
  private closed = false;
  private healthAt = 0;
  /**
   * A pipe whose read end is polled after the sockets: an AF_XDP socket whose device goes away
   * reports nothing to epoll (it is just unbound), so when the port finds it so it closes the
   * write end, and the read end's EPOLLHUP takes the port down the way a tap's does.
   */
  private alarmW: number;
  private readonly alarmR: number;

  constructor(base: PortBase, pool: PacketPool, readonly queues: readonly XskQueue[], readonly info: AfXdpInfo, alarm: readonly [number, number] = [-1, -1]) {
    super(base.index, base.name, base.bridge, base.counters, pool, false, false);
    this.acceptsExternal = true; // transmit() copies each frame into the UMEM and is done with it
    this.stormPause = false; // an uplink's queue carries every tenant's traffic
    this.rxOffloads = false; // set per burst when segments were coalesced into a super-frame
    this.gro = info.gro === false ? undefined : new TcpCoalescer(pool);
    this.alarmR = alarm[0];
    this.alarmW = alarm[1];
    this.fds = this.alarmR >= 0 ? [...queues.map((q) => q.fd), this.alarmR] : queues.map((q) => q.fd);
    this.txBase = queues.length * RX_FRAMES;
    this.kern = new Uint8Array(this.txBase + TX_FRAMES);
    this.txFree = new Int32Array(TX_FRAMES);
    for (let i = 0; i < TX_FRAMES; i++) this.txFree[this.txTop++] = this.txBase + TX_FRAMES - 1 - i;
  }

  /** Post every rx frame and put the sockets in the program's map (-1: none, tests): frames start arriving. */
  start(mapFd: number): void {
    for (let qi = 0; qi < this.queues.length; qi++) {
      const q = this.queues[qi]!;
      const n = q.fill.free(RX_FRAMES);
      for (let i = 0; i < n; i++) {
        const f = qi * RX_FRAMES + i;
        this.kern[f] = 1;
        const w = q.fill.slotW(i, 2);
        q.fill.u32[w] = f * CHUNK_SIZE;
        q.fill.u32[w + 1] = 0;
      }
      q.fill.submit(n);
      this.counters[C.rx_buffers_posted]! += n;
      if (q.fill.needWakeup()) xsk.kickRx(q.fd);
    }
    if (mapFd >= 0) for (let i = 0; i < this.queues.length; i++) mapUpdate(mapFd, i, this.queues[i]!.fd);
    this.healthAt = Date.now() + HEALTH_MS;
    this.timerAt = this.healthAt;
  }

  receive(queue: number, out: Int32Array, max: number): number {
    const q = this.queues[queue];
    if (!q || this.closed) return 0;
    if (this.txInFlight > 0) this.reclaim();
    const rx = q.rx;
    const n = rx.peek(max);
    if (n === 0) return 0;
    const pool = this.pool;
    const bytes = pool.bytes;
    const dv = pool.dv;
    const kern = this.kern;
    const u32 = rx.u32;
    const c = this.counters;
    const first = queue * RX_FRAMES;
    const umem = this.info.umemOff;
    const repost = this.repost;
    const gro = this.gro;
    const made0 = gro?.superFrames ?? 0;
    let k = 0;
    let back = 0;
    for (let i = 0; i < n; i++) {
      const w = rx.slotW(i, 4);
      const addr = u32[w]!;
      const len = u32[w + 2]!;
      const f = (addr / CHUNK_SIZE) | 0;
      const off = addr - f * CHUNK_SIZE;
      if (u32[w + 1]! !== 0 || f < first || f >= first + RX_FRAMES || kern[f] !== 1) {
        // Not a frame of this queue the kernel holds (or one it gave twice): nothing to give back.
        this.badRxDescs++;
        c[C.rx_dropped_malformed]!++;
        continue;
      }
      kern[f] = 0;
      repost[back++] = f;
      if (len < ETH_HLEN || off + len > CHUNK_SIZE) {
        this.badRxDescs++;
        c[C.rx_dropped_malformed]!++;
        continue;
      }
      const h = pool.alloc();
      if (h < 0) {
        c[C.rx_dropped_no_buffer]!++;
        continue;
      }
      const ho = pool.hdrOffset(h);
      dv.setUint32(ho, 0, true);
      dv.setUint32(ho + 4, 0, true);
      dv.setUint32(ho + 8, 0, true);
      const src = umem + addr;
      bytes.copyWithin(ho + VNET_HDR, src, src + len);
      pool.len[h] = len;
      c[C.rx_packets]!++;
      c[C.rx_bytes]! += len;
      if (gro !== undefined) k = gro.push(h, out, k);
      else out[k++] = h;
    }
    let made = 0;
    if (gro !== undefined) {
      gro.close();
      made = gro.superFrames - made0;
      c[C.rx_gso_packets]! += made;
    }
    this.rxOffloads = made > 0;
    rx.release(n);
    // The frames go straight back to the kernel. The fill ring has room for them: they came from it.
    if (back > 0) {
      const fill = q.fill;
      const fu32 = fill.u32;
      fill.free(back);
      for (let i = 0; i < back; i++) {
        const f = repost[i]!;
        kern[f] = 1;
        const fw = fill.slotW(i, 2);
        fu32[fw] = f * CHUNK_SIZE;
        fu32[fw + 1] = 0;
      }
      fill.submit(back);
      if (fill.needWakeup()) xsk.kickRx(q.fd);
    }
    return k;
  }

  /** Take back the tx frames the kernel has finished sending. */
  private reclaim(): void {
    const comp = this.queues[0]!.comp;
    const n = comp.peek(TX_FRAMES);
    if (n === 0) return;
    const kern = this.kern;
    const u32 = comp.u32;
    const lo = this.txBase;
    for (let i = 0; i < n; i++) {
      const w = comp.slotW(i, 2);
      const addr = u32[w]!;
      const f = (addr / CHUNK_SIZE) | 0;
      if (u32[w + 1]! !== 0 || addr !== f * CHUNK_SIZE || f < lo || f >= lo + TX_FRAMES || kern[f] !== 1) {
        this.badCompletions++;
        continue;
      }
      kern[f] = 0;
      this.txFree[this.txTop++] = f;
      this.txInFlight--;
    }
    comp.release(n);
  }

  transmit(qh: Int32Array, n: number): void {
    const pool = this.pool;
    const c = this.counters;
    if (this.closed) {
      for (let i = 0; i < n; i++) pool.release(qh[i]!);
      return;
    }
    if (this.txInFlight > 0) this.reclaim();
    const q = this.queues[0]!;
    const tx = q.tx;
    const u32 = tx.u32;
    const bytes = pool.bytes;
    const umem = this.info.umemOff;
    let free = tx.free(n);
    if (free > this.txTop) free = this.txTop;
    let k = 0;
    for (let i = 0; i < n; i++) {
      const h = qh[i]!;
      const len = pool.len[h]!;
      if (len > TX_FRAME_MAX || len < ETH_HLEN) c[C.tx_dropped_too_big]!++;
      else if (k >= free) c[C.tx_dropped_full]!++;
      else {
        const f = this.txFree[--this.txTop]!;
        this.kern[f] = 1;
        const dst = umem + f * CHUNK_SIZE;
        const src = pool.frameOffset(h);
        bytes.copyWithin(dst, src, src + len);
        const w = tx.slotW(k, 4);
        u32[w] = f * CHUNK_SIZE;
        u32[w + 1] = 0;
        u32[w + 2] = len;
        u32[w + 3] = 0;
        k++;
        c[C.tx_packets]!++;
        c[C.tx_bytes]! += len;
      }
      pool.release(h);
    }
    if (k === 0) return;
    tx.submit(k);
    this.txInFlight += k;
    this.kick();
  }

  /** Wake the kernel to send what the tx ring holds, when it asks to be (always, in copy mode). */
  private kick(): void {
    const q = this.queues[0]!;
    if (!q.tx.needWakeup()) return;
    for (let i = 0; i < MAX_KICKS; i++) {
      if (xsk.kickTx(q.fd) >= 0) {
        // Zero-copy: the call only wakes the driver, which sends on its own. Copy mode: the call
        // sends (32 at a time, EAGAIN while more are left); what is left now waits for the timer.
        if (this.info.zeroCopy || q.tx.outstanding() === 0) return;
        continue;
      }
      const e = libc.errno();
      if (e !== libc.EAGAIN && e !== libc.EINTR) break; // EBUSY, ENOBUFS: the device is busy
    }
    this.timerAt = Date.now() + RETRY_MS;
  }

  override onTimer(): void {
    if (this.closed) return;
    if (this.txInFlight > 0) this.reclaim();
    if (this.queues[0]!.tx.outstanding() > 0) this.kick();
    const now = Date.now();
    if (now >= this.healthAt) {
      this.healthAt = now + HEALTH_MS;
      // recvfrom on a socket whose device was unregistered: ENXIO (it is no longer bound).
      if (this.alarmW >= 0 && xsk.kickRx(this.queues[0]!.fd) < 0 && libc.errno() === ENXIO) {
        libc.close(this.alarmW);
        this.alarmW = -1;
      }
    }
    this.timerAt = this.txInFlight > 0 ? now + RETRY_MS : this.healthAt;
  }

  override describe(): AfXdpView {
    const k = { rxDropped: 0, rxInvalidDescs: 0, txInvalidDescs: 0, rxRingFull: 0, rxFillRingEmpty: 0, txRingEmpty: 0 };
    for (const q of this.queues) {
      try {
        const s = xsk.xskStatistics(q.fd);
        for (const key of Object.keys(k) as Array<keyof typeof k>) k[key] += s[key];
      } catch {
        /* not a socket (tests) */
      }
    }
    let posted = 0;
    for (let f = 0; f < this.txBase; f++) posted += this.kern[f]!;
    return {
      dev: this.info.dev, mode: this.info.mode, zeroCopy: this.info.zeroCopy, queues: this.queues.length,
      umem: { bytes: this.info.umemBytes, chunkSize: CHUNK_SIZE, rxFrameMax: RX_FRAME_MAX },
      rings: { fill: RX_FRAMES, completion: TX_FRAMES, rx: RX_FRAMES, tx: TX_FRAMES },
      posted, txInFlight: this.txInFlight,
      badRxDescs: this.badRxDescs, badCompletions: this.badCompletions, kernel: k,
    };
  }

  /**
   * Out of the program's map, rings unmapped, sockets closed (the kernel unbinds and stops writing
   * before close() returns), then the UMEM is unmapped.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (let i = 0; i < this.queues.length; i++) mapDelete(this.info.mapFd, i);
    for (const q of this.queues) {
      for (const m of q.maps) xsk.unmapRing(m);
      if (q.fd >= 0) libc.close(q.fd);
    }
    if (this.alarmW >= 0) libc.close(this.alarmW);
    if (this.alarmR >= 0) libc.close(this.alarmR);
    this.alarmW = -1;
    if (this.info.umemFd >= 0) {
      this.pool.arena.release(this.info.umemOff);
      libc.close(this.info.umemFd);
    }
    this.txInFlight = 0;
  }
}

/** Make the UMEM and the sockets (in the device's namespace), register it, map the rings, bind. */
export function openAfXdp(base: PortBase, spec: AfXdpSpec, pool: PacketPool): AfXdpPort {
  const fds: number[] = [];
  const maps: xsk.RingMap[] = [];
  let port: AfXdpPort | undefined;
  const bytes = umemSize(spec.queues);
  let umemFd = -1;
  let umemOff = -1;
  const alarm = new Int32Array([-1, -1]);
  try {
    libc.check(libc.pipe2(alarm, libc.O_CLOEXEC | libc.O_NONBLOCK), 'pipe2');
    umemFd = memfd(`pier-umem-${spec.dev}`, bytes);
    umemOff = pool.arena.place(umemFd, 0, bytes);
    for (let i = 0; i < spec.queues; i++) fds.push(withNetns(spec.netnsPath, () => xsk.xskSocket()));
    xsk.registerUmem(fds[0]!, { addr: pool.arena.base + umemOff, len: bytes, chunkSize: CHUNK_SIZE, headroom: 0, unaligned: false });
    const queues: XskQueue[] = [];
    for (const fd of fds) {
      xsk.setRingSize(fd, xsk.XDP_UMEM_FILL_RING, RX_FRAMES);
      xsk.setRingSize(fd, xsk.XDP_RX_RING, RX_FRAMES);
      xsk.setRingSize(fd, xsk.XDP_UMEM_COMPLETION_RING, TX_FRAMES);
      xsk.setRingSize(fd, xsk.XDP_TX_RING, TX_FRAMES);
      const off = xsk.mmapOffsets(fd);
      // mmap before bind: a bound socket's rings cannot be mapped.
      const fr = xsk.mapRing(fd, xsk.XDP_UMEM_PGOFF_FILL_RING, off.fr, RX_FRAMES, 8);
      maps.push(fr);
      const cr = xsk.mapRing(fd, xsk.XDP_UMEM_PGOFF_COMPLETION_RING, off.cr, TX_FRAMES, 8);
      maps.push(cr);
      const rx = xsk.mapRing(fd, xsk.XDP_PGOFF_RX_RING, off.rx, RX_FRAMES, xsk.SIZEOF_XDP_DESC);
      maps.push(rx);
      const tx = xsk.mapRing(fd, xsk.XDP_PGOFF_TX_RING, off.tx, TX_FRAMES, xsk.SIZEOF_XDP_DESC);
      maps.push(tx);
      queues.push(new XskQueue(fd, new xsk.ProducerRing(fr.u32, off.fr, RX_FRAMES), new xsk.ConsumerRing(cr.u32, off.cr, TX_FRAMES),
        new xsk.ConsumerRing(rx.u32, off.rx, RX_FRAMES), new xsk.ProducerRing(tx.u32, off.tx, TX_FRAMES), [fr, cr, rx, tx]));
    }
    // zero-copy=auto: neither flag, and the kernel tries zero-copy, then falls back to copy.
    const zc = spec.zeroCopy === 'on' ? xsk.XDP_ZEROCOPY : spec.zeroCopy === 'off' ? xsk.XDP_COPY : 0;
    try {
      xsk.bindXsk(fds[0]!, spec.ifindex, 0, zc | xsk.XDP_USE_NEED_WAKEUP);
    } catch (e) {
      if (spec.zeroCopy === 'on') throw new Error(`zero-copy=on, but ${spec.dev} (XDP ${spec.mode}) does not offer it: ${(e as Error).message}`, { cause: e });
      throw e;
    }
    // Other queues share the first socket's UMEM, each with its own fill and completion rings.
    for (let i = 1; i < fds.length; i++) xsk.bindXsk(fds[i]!, spec.ifindex, i, xsk.XDP_SHARED_UMEM, fds[0]);
    port = new AfXdpPort(base, pool, queues, { dev: spec.dev, mode: spec.mode, zeroCopy: xsk.isZeroCopy(fds[0]!), mapFd: spec.mapFd, gro: spec.gro, umemOff, umemBytes: bytes, umemFd }, [alarm[0]!, alarm[1]!]);
    port.start(spec.mapFd);
    return port;
  } catch (e) {
    if (port) port.close();
    else {
      for (const m of maps) xsk.unmapRing(m);
      for (const fd of fds) libc.close(fd);
      if (umemOff >= 0) pool.arena.release(umemOff);
      if (umemFd >= 0) libc.close(umemFd);
      for (const fd of alarm) if (fd >= 0) libc.close(fd);
    }
    throw new Error(`AF_XDP on ${spec.dev}: ${(e as Error).message}`, { cause: e });
  }
}

export const afxdpDataplane: DataplaneHalf<AfXdpSpec> = {
  create: (b, spec, pool) => openAfXdp(b, spec, pool),
};
