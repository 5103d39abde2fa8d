// The dataplane half of an AF_XDP port: one socket per rx queue, all sharing one UMEM that is the
// packet pool itself, so a received frame lands in a pool buffer and a sent one leaves from it.
//
// UMEM layout. The pool's memory (buffers of BUF_SIZE = 66 560 bytes: a 12-byte virtio-net header,
// then the frame) is registered whole, in unaligned-chunk mode with 4096-byte chunks (the largest
// the kernel takes without huge pages). A pool buffer h is posted to a fill ring at UMEM address
// h*BUF_SIZE + 12 - 256: the kernel writes the frame XDP_PACKET_HEADROOM (256) bytes after the
// address, which puts it exactly where the pool keeps frames, right after the header's 12 bytes.
// The 244 bytes of headroom before it are the tail of buffer h-1, which no frame reaches (a
// 64 KiB super-frame ends ~1000 bytes before it) and which the kernel does not write (pier's
// program adds no metadata); buffer 0 has no such room and is kept out of the fill rings. A frame
// is sent from h*BUF_SIZE + 12. Frames are at most 4096 - 256 = 3840 bytes in (larger ones the
// kernel counts in rx_dropped) and 4096 out (larger ones pier counts in tx_dropped_too_big), so
// the port takes neither TSO super-frames nor partial checksums: the engine segments and
// checksums for it, as for a tap with offloads=off.
//
// Ownership: a buffer posted to a fill ring, or sent and not yet completed, belongs to the port
// (owner[h]); the kernel's descriptors are checked against it, so an address or a length the
// kernel should never give is counted and dropped, never followed. The port sends on queue 0's
// socket; every socket receives.
import { C } from '../../dataplane/counters.ts';
import { BUF_SIZE, VNET_HDR, type PacketPool } from '../../dataplane/pool.ts';
import { Port } from '../../dataplane/port.ts';
import { mapDelete, mapUpdate } from '../../sys/bpf.ts';
import { libc, withNetns } from '../../sys/index.ts';
import * as xsk from '../../sys/xsk.ts';
import type { DataplaneHalf, PortBase } from '../kind.ts';
import type { AfXdpSpec } from './options.ts';
import type { AfXdpView } from './view.ts';

/** Entries of each of the four rings of every socket. */
export const RING_SIZE = 512;
export const CHUNK_SIZE = 4096;
/** The largest frame a socket receives (the chunk less the kernel's headroom). */
export const RX_FRAME_MAX = CHUNK_SIZE - xsk.XDP_PACKET_HEADROOM;
/** The largest frame sent: a descriptor may not be longer than a chunk. */
export const TX_FRAME_MAX = CHUNK_SIZE;
/** Posted buffers' address relative to their frame. */
export const FILL_BIAS = VNET_HDR - xsk.XDP_PACKET_HEADROOM;
const ETH_HLEN = 14;
/** owner[h] for a buffer sent and not completed; 1+q for one posted to queue q's fill ring. */
const OWNER_TX = 255;
/** Retry a refill the pool could not give, or a send the kernel put off, this much later. */
const RETRY_MS = 2;
/** Most sendto() wake-ups per burst (the kernel sends 32 descriptors per call in copy mode). */
const MAX_KICKS = 16;

/** One socket and the views over its four mmapped rings, made once. */
export class XskQueue {
  /** Buffers this queue has in its fill ring (or in the kernel's hands, not yet received). */
  posted = 0;
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
  umemBytes: number;
}

export class AfXdpPort extends Port {
  readonly fds: readonly number[];
  /** Per pool buffer: 0, 1+q (posted to queue q), OWNER_TX (sent, not completed). */
  private readonly owner: Uint8Array;
  /** Buffer 0 when this port drew it (its chunk would begin before the UMEM): held, never posted. */
  private parked = -1;
  private readonly fillTarget: number;
  /** Keep this many pool buffers free for the other ports when refilling. */
  private readonly poolReserve: number;
  txInFlight = 0;
  /** Descriptors from the kernel that named no buffer of this port (rx and completion rings). */
  badRxDescs = 0;
  badCompletions = 0;
  private closed = false;

  constructor(base: PortBase, pool: PacketPool, readonly queues: readonly XskQueue[], readonly info: AfXdpInfo) {
    super(base.index, base.name, base.bridge, base.counters, pool, false, false);
    this.acceptsExternal = false; // a sent buffer stays in flight past transmit()
    this.rxOffloads = false; // received frames carry no offload request: their headers are zeroed
    this.fds = queues.map((q) => q.fd);
    this.owner = new Uint8Array(pool.count);
    this.fillTarget = Math.max(1, Math.min(RING_SIZE / 2, Math.floor(pool.count / (4 * queues.length))));
    this.poolReserve = Math.floor(pool.count / 4);
  }

  /** Post the first buffers and put the sockets in the program's map: frames start arriving. */
  start(mapFd: number): void {
    for (let i = 0; i < this.queues.length; i++) this.refill(this.queues[i]!, i);
    for (let i = 0; i < this.queues.length; i++) mapUpdate(mapFd, i, this.queues[i]!.fd);
  }

  private refill(q: XskQueue, qi: number): void {
    const want = this.fillTarget - q.posted;
    if (want > 0) {
      const pool = this.pool;
      const u32 = q.fill.u32;
      let n = q.fill.free(want);
      if (n > want) n = want;
      let k = 0;
      while (k < n) {
        if (pool.available() <= this.poolReserve) {
          this.counters[C.rx_post_short]!++;
          break;
        }
        let h = pool.alloc();
        if (h === 0) {
          this.parked = 0;
          h = pool.alloc();
        }
        if (h < 0) break;
        this.owner[h] = qi + 1;
        const w = q.fill.slotW(k, 2);
        u32[w] = h * BUF_SIZE + FILL_BIAS;
        u32[w + 1] = 0;
        k++;
      }
      if (k > 0) {
        q.fill.submit(k);
        q.posted += k;
        this.counters[C.rx_buffers_posted]! += k;
      }
      if (q.fill.needWakeup()) xsk.kickRx(q.fd);
    }
    if (q.posted < this.fillTarget && this.timerAt === 0) this.timerAt = Date.now() + RETRY_MS;
  }

  receive(queue: number, out: Int32Array, max: number): number {
    const q = this.queues[queue];
    if (!q || this.closed) return 0;
    if (this.txInFlight > 0) this.reclaim();
    const rx = q.rx;
    const n = rx.peek(max);
    if (n === 0) {
      this.refill(q, queue);
      return 0;
    }
    const pool = this.pool;
    const dv = pool.dv;
    const owner = this.owner;
    const u32 = rx.u32;
    const c = this.counters;
    const mine = queue + 1;
    let k = 0;
    for (let i = 0; i < n; i++) {
      const w = rx.slotW(i, 4);
      const hi = u32[w + 1]!;
      const len = u32[w + 2]!;
      // Unaligned mode: the kernel's offset into the chunk is in the top 16 bits; the base is
      // below 2^32 because the UMEM is.
      const addr = u32[w]! + (hi >>> 16);
      const rel = addr - VNET_HDR;
      const h = rel / BUF_SIZE;
      if ((hi & 0xffff) !== 0 || rel < 0 || rel % BUF_SIZE !== 0 || h >= pool.count || owner[h] !== mine) {
        this.badRxDescs++;
        c[C.rx_dropped_malformed]!++;
        continue;
      }
      owner[h] = 0;
      q.posted--;
      if (len < ETH_HLEN || len > RX_FRAME_MAX) {
        this.badRxDescs++;
        c[C.rx_dropped_malformed]!++;
        pool.release(h);
        continue;
      }
      const ho = pool.hdrOffset(h);
      dv.setUint32(ho, 0, true);
      dv.setUint32(ho + 4, 0, true);
      dv.setUint32(ho + 8, 0, true);
      pool.len[h] = len;
      c[C.rx_packets]!++;
      c[C.rx_bytes]! += len;
      out[k++] = h;
    }
    rx.release(n);
    this.refill(q, queue);
    return k;
  }

  /** Take back the buffers the kernel has finished sending. */
  private reclaim(): void {
    const comp = this.queues[0]!.comp;
    const n = comp.peek(RING_SIZE);
    if (n === 0) return;
    const pool = this.pool;
    const owner = this.owner;
    const u32 = comp.u32;
    for (let i = 0; i < n; i++) {
      const w = comp.slotW(i, 2);
      const rel = u32[w]! - VNET_HDR;
      const h = rel / BUF_SIZE;
      if (u32[w + 1]! !== 0 || rel < 0 || rel % BUF_SIZE !== 0 || h >= pool.count || owner[h] !== OWNER_TX) {
        this.badCompletions++;
        continue;
      }
      owner[h] = 0;
      this.txInFlight--;
      pool.release(h);
    }
    comp.release(n);
  }

  transmit(qh: Int32Array, n: number): void {
    const pool = this.pool;
    const c = this.counters;
    const q = this.queues[0]!;
    if (this.closed) {
      for (let i = 0; i < n; i++) pool.release(qh[i]!);
      return;
    }
    if (this.txInFlight > 0) this.reclaim();
    const tx = q.tx;
    const u32 = tx.u32;
    const owner = this.owner;
    const free = tx.free(n);
    let k = 0;
    for (let i = 0; i < n; i++) {
      const h = qh[i]!;
      const len = pool.len[h]!;
      if (h >= pool.count || owner[h] !== 0) {
        // A lent buffer (the engine copies those for this port) or one already in flight: not sendable.
        c[C.tx_dropped_error]!++;
        pool.release(h);
      } else if (len > TX_FRAME_MAX || len < ETH_HLEN) {
        c[C.tx_dropped_too_big]!++;
        pool.release(h);
      } else if (k >= free) {
        c[C.tx_dropped_full]!++;
        pool.release(h);
      } else {
        const w = tx.slotW(k, 4);
        u32[w] = h * BUF_SIZE + VNET_HDR;
        u32[w + 1] = 0;
        u32[w + 2] = len;
        u32[w + 3] = 0;
        owner[h] = OWNER_TX;
        k++;
        c[C.tx_packets]!++;
        c[C.tx_bytes]! += len;
      }
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
        if (q.tx.outstanding() === 0) return;
        continue;
      }
      const e = libc.errno();
      if (e !== libc.EAGAIN && e !== libc.EINTR) break; // EBUSY, ENOBUFS: the device is busy
    }
    if (this.timerAt === 0) this.timerAt = Date.now() + RETRY_MS;
  }

  override onTimer(): void {
    if (this.closed) return;
    if (this.txInFlight > 0) this.reclaim();
    if (this.queues[0]!.tx.outstanding() > 0) this.kick();
    for (let i = 0; i < this.queues.length; i++) this.refill(this.queues[i]!, i);
    if (this.txInFlight > 0 && this.timerAt === 0) this.timerAt = Date.now() + RETRY_MS;
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
    return {
      dev: this.info.dev, mode: this.info.mode, zeroCopy: this.info.zeroCopy, queues: this.queues.length,
      umem: { bytes: this.info.umemBytes, chunkSize: CHUNK_SIZE, rxFrameMax: RX_FRAME_MAX },
      rings: { fill: RING_SIZE, completion: RING_SIZE, rx: RING_SIZE, tx: RING_SIZE },
      posted: this.queues.reduce((s, q) => s + q.posted, 0), txInFlight: this.txInFlight,
      badRxDescs: this.badRxDescs, badCompletions: this.badCompletions, kernel: k,
    };
  }

  /**
   * Out of the program's map, rings unmapped, sockets closed (the kernel unbinds and stops writing
   * before close() returns), then every buffer the port held goes back to the pool.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (let i = 0; i < this.queues.length; i++) mapDelete(this.info.mapFd, i);
    for (const q of this.queues) {
      for (const m of q.maps) xsk.unmapRing(m);
      if (q.fd >= 0) libc.close(q.fd);
    }
    const owner = this.owner;
    for (let h = 0; h < owner.length; h++) {
      if (owner[h] !== 0) {
        owner[h] = 0;
        this.pool.release(h);
      }
    }
    if (this.parked >= 0) this.pool.release(this.parked);
    this.parked = -1;
    this.txInFlight = 0;
  }
}

/** The UMEM: the pool's buffers, whole pages (the scratch page after them stays out). */
export function umemBytes(pool: PacketPool): number {
  return Math.ceil((pool.count * BUF_SIZE) / 4096) * 4096;
}

/** Make the sockets (in the device's namespace), register the pool, map the rings, bind. */
export function openAfXdp(base: PortBase, spec: AfXdpSpec, pool: PacketPool): AfXdpPort {
  const fds: number[] = [];
  const maps: xsk.RingMap[] = [];
  let port: AfXdpPort | undefined;
  try {
    for (let i = 0; i < spec.queues; i++) fds.push(withNetns(spec.netnsPath, () => xsk.xskSocket()));
    const bytes = umemBytes(pool);
    xsk.registerUmem(fds[0]!, { addr: pool.base, len: bytes, chunkSize: CHUNK_SIZE, headroom: 0, unaligned: true });
    const queues: XskQueue[] = [];
    for (const fd of fds) {
      for (const r of [xsk.XDP_UMEM_FILL_RING, xsk.XDP_UMEM_COMPLETION_RING, xsk.XDP_RX_RING, xsk.XDP_TX_RING]) xsk.setRingSize(fd, r, RING_SIZE);
      const off = xsk.mmapOffsets(fd);
      // mmap before bind: a bound socket's rings cannot be mapped.
      const fr = xsk.mapRing(fd, xsk.XDP_UMEM_PGOFF_FILL_RING, off.fr, RING_SIZE, 8);
      maps.push(fr);
      const cr = xsk.mapRing(fd, xsk.XDP_UMEM_PGOFF_COMPLETION_RING, off.cr, RING_SIZE, 8);
      maps.push(cr);
      const rx = xsk.mapRing(fd, xsk.XDP_PGOFF_RX_RING, off.rx, RING_SIZE, xsk.SIZEOF_XDP_DESC);
      maps.push(rx);
      const tx = xsk.mapRing(fd, xsk.XDP_PGOFF_TX_RING, off.tx, RING_SIZE, xsk.SIZEOF_XDP_DESC);
      maps.push(tx);
      queues.push(new XskQueue(fd, new xsk.ProducerRing(fr.u32, off.fr, RING_SIZE), new xsk.ConsumerRing(cr.u32, off.cr, RING_SIZE),
        new xsk.ConsumerRing(rx.u32, off.rx, RING_SIZE), new xsk.ProducerRing(tx.u32, off.tx, RING_SIZE), [fr, cr, rx, tx]));
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
    port = new AfXdpPort(base, pool, queues, { dev: spec.dev, mode: spec.mode, zeroCopy: xsk.isZeroCopy(fds[0]!), mapFd: spec.mapFd, umemBytes: bytes });
    port.start(spec.mapFd);
    return port;
  } catch (e) {
    if (port) port.close();
    else {
      for (const m of maps) xsk.unmapRing(m);
      for (const fd of fds) libc.close(fd);
    }
    throw new Error(`AF_XDP on ${spec.dev}: ${(e as Error).message}`, { cause: e });
  }
}

export const afxdpDataplane: DataplaneHalf<AfXdpSpec> = {
  create: (b, spec, pool) => openAfXdp(b, spec, pool),
};
