// AF_XDP sockets (uapi linux/if_xdp.h, Documentation/networking/af_xdp.rst): the UMEM registration,
// the four rings' sizes and their mmap, bind (copy / zero-copy, need_wakeup, a shared UMEM), the
// kernel's counters, and the wake-ups. The rings themselves are ProducerRing / ConsumerRing:
// plain index arithmetic over one Uint32Array per ring, made once when the ring is mapped.
//
// Memory ordering (as libxdp's xsk.h): a consumer reads the producer index with acquire
// (Atomics.load) before it reads the descriptors; a producer writes its descriptors, then publishes
// the producer index with release (Atomics.store, a full barrier on x86). A consumer's release of
// the consumer index comes after it has read the descriptors it gives back. Both ends of a ring
// keep a cached copy of the other end's index and read the shared one only when the cache says
// the ring is empty (consumer) or full (producer): one shared read per batch, not per entry.
import { libcHandle } from './libc.ts';
import * as c from './libc.ts';

// ---- constants ----
export const AF_XDP = 44;
export const SOL_XDP = 283;
export const XDP_MMAP_OFFSETS = 1;
export const XDP_RX_RING = 2;
export const XDP_TX_RING = 3;
export const XDP_UMEM_REG = 4;
export const XDP_UMEM_FILL_RING = 5;
export const XDP_UMEM_COMPLETION_RING = 6;
export const XDP_STATISTICS = 7;
export const XDP_OPTIONS = 8;
export const XDP_OPTIONS_ZEROCOPY = 1;
export const XDP_SHARED_UMEM = 1 << 0;
export const XDP_COPY = 1 << 1;
export const XDP_ZEROCOPY = 1 << 2;
export const XDP_USE_NEED_WAKEUP = 1 << 3;
export const XDP_UMEM_UNALIGNED_CHUNK_FLAG = 1 << 0;
export const XDP_RING_NEED_WAKEUP = 1 << 0;
export const XDP_PGOFF_RX_RING = 0;
export const XDP_PGOFF_TX_RING = 0x80000000;
export const XDP_UMEM_PGOFF_FILL_RING = 0x100000000;
export const XDP_UMEM_PGOFF_COMPLETION_RING = 0x180000000;
/** Unaligned chunk mode: a descriptor's address carries an offset in its upper 16 bits. */
export const XSK_UNALIGNED_BUF_OFFSET_SHIFT = 48;
/** The headroom the kernel leaves in front of a received frame (XDP_PACKET_HEADROOM). */
export const XDP_PACKET_HEADROOM = 256;
export const XDP_UMEM_MIN_CHUNK_SIZE = 2048;

// ---- struct layouts, checked below ----
export const sockaddr_xdp = c.koffi.struct('pier_sockaddr_xdp', {
  sxdp_family: 'uint16_t', sxdp_flags: 'uint16_t', sxdp_ifindex: 'uint32_t', sxdp_queue_id: 'uint32_t', sxdp_shared_umem_fd: 'uint32_t',
});
export const xdp_umem_reg = c.koffi.struct('pier_xdp_umem_reg', {
  addr: 'uint64_t', len: 'uint64_t', chunk_size: 'uint32_t', headroom: 'uint32_t', flags: 'uint32_t', tx_metadata_len: 'uint32_t',
});
const xdp_ring_offset = c.koffi.struct('pier_xdp_ring_offset', { producer: 'uint64_t', consumer: 'uint64_t', desc: 'uint64_t', flags: 'uint64_t' });
export const xdp_mmap_offsets = c.koffi.struct('pier_xdp_mmap_offsets', { rx: xdp_ring_offset, tx: xdp_ring_offset, fr: xdp_ring_offset, cr: xdp_ring_offset });
export const xdp_desc = c.koffi.struct('pier_xdp_desc', { addr: 'uint64_t', len: 'uint32_t', options: 'uint32_t' });
export const xdp_statistics = c.koffi.struct('pier_xdp_statistics', {
  rx_dropped: 'uint64_t', rx_invalid_descs: 'uint64_t', tx_invalid_descs: 'uint64_t',
  rx_ring_full: 'uint64_t', rx_fill_ring_empty_descs: 'uint64_t', tx_ring_empty_descs: 'uint64_t',
});
export const SIZEOF_SOCKADDR_XDP = 16;
export const SIZEOF_XDP_UMEM_REG = 32;
export const SIZEOF_XDP_MMAP_OFFSETS = 128;
export const SIZEOF_XDP_DESC = 16;
export const SIZEOF_XDP_STATISTICS = 48;

function assertAbi(): void {
  for (const [name, got, want] of [
    ['struct sockaddr_xdp', c.koffi.sizeof(sockaddr_xdp), SIZEOF_SOCKADDR_XDP],
    ['struct xdp_umem_reg', c.koffi.sizeof(xdp_umem_reg), SIZEOF_XDP_UMEM_REG],
    ['struct xdp_mmap_offsets', c.koffi.sizeof(xdp_mmap_offsets), SIZEOF_XDP_MMAP_OFFSETS],
    ['struct xdp_desc', c.koffi.sizeof(xdp_desc), SIZEOF_XDP_DESC],
    ['struct xdp_statistics', c.koffi.sizeof(xdp_statistics), SIZEOF_XDP_STATISTICS],
  ] as const) {
    if (got !== want) throw new Error(`ABI check failed: sizeof(${name}) is ${got}, expected ${want}`);
  }
  for (const [t, f, o] of [
    [sockaddr_xdp, 'sxdp_flags', 2], [sockaddr_xdp, 'sxdp_ifindex', 4], [sockaddr_xdp, 'sxdp_queue_id', 8], [sockaddr_xdp, 'sxdp_shared_umem_fd', 12],
    [xdp_umem_reg, 'len', 8], [xdp_umem_reg, 'chunk_size', 16], [xdp_umem_reg, 'headroom', 20], [xdp_umem_reg, 'flags', 24],
    [xdp_mmap_offsets, 'tx', 32], [xdp_mmap_offsets, 'fr', 64], [xdp_mmap_offsets, 'cr', 96],
    [xdp_desc, 'len', 8], [xdp_desc, 'options', 12],
  ] as const) {
    if (c.koffi.offsetof(t, f) !== o) throw new Error(`ABI check failed: ${f} offset is ${c.koffi.offsetof(t, f)}, expected ${o}`);
  }
}
assertAbi();

// ---- functions ----
const getsockopt = libcHandle.func('int getsockopt(int fd, int level, int name, _Out_ void *val, _Inout_ uint32_t *len)');
/** Hot path: a wake-up carries no data, so no buffer and no address (raw numbers, nothing allocated). */
const sendto = libcHandle.func('intptr_t sendto(int fd, uintptr_t buf, size_t len, int flags, uintptr_t addr, uint32_t alen)');
const recvfrom = libcHandle.func('intptr_t recvfrom(int fd, uintptr_t buf, size_t len, int flags, uintptr_t addr, uintptr_t alen)');

/** An AF_XDP socket in the calling thread's network namespace (withNetns for another). */
export function xskSocket(): number {
  return c.check(c.socket(AF_XDP, c.SOCK_RAW | c.SOCK_CLOEXEC, 0), 'socket', 'AF_XDP');
}

export interface UmemConfig {
  /** Page-aligned address and length of the memory. */
  addr: number;
  len: number;
  chunkSize: number;
  headroom: number;
  unaligned: boolean;
}

/** XDP_UMEM_REG: the kernel pins the memory and takes descriptors as offsets into it. */
export function registerUmem(fd: number, u: UmemConfig): void {
  const b = new Uint8Array(SIZEOF_XDP_UMEM_REG);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, BigInt(u.addr), true);
  dv.setBigUint64(8, BigInt(u.len), true);
  dv.setUint32(16, u.chunkSize, true);
  dv.setUint32(20, u.headroom, true);
  dv.setUint32(24, u.unaligned ? XDP_UMEM_UNALIGNED_CHUNK_FLAG : 0, true);
  c.check(c.setsockopt(fd, SOL_XDP, XDP_UMEM_REG, b, b.length), 'setsockopt', `XDP_UMEM_REG ${u.len} bytes, chunk ${u.chunkSize}${u.unaligned ? ' unaligned' : ''}`);
}

const RING_NAMES: Record<number, string> = { [XDP_RX_RING]: 'XDP_RX_RING', [XDP_TX_RING]: 'XDP_TX_RING', [XDP_UMEM_FILL_RING]: 'XDP_UMEM_FILL_RING', [XDP_UMEM_COMPLETION_RING]: 'XDP_UMEM_COMPLETION_RING' };

/** Size one ring (a power of two); before bind. */
export function setRingSize(fd: number, ring: number, entries: number): void {
  c.check(c.setsockopt(fd, SOL_XDP, ring, new Uint32Array([entries]), 4), 'setsockopt', `${RING_NAMES[ring] ?? ring} ${entries}`);
}

export interface RingOffsets { producer: number; consumer: number; desc: number; flags: number }
export interface MmapOffsets { rx: RingOffsets; tx: RingOffsets; fr: RingOffsets; cr: RingOffsets }

/** Where each ring's indexes, flags and descriptors lie in its mapping. */
export function mmapOffsets(fd: number): MmapOffsets {
  const b = new BigUint64Array(SIZEOF_XDP_MMAP_OFFSETS / 8);
  const len = new Uint32Array([SIZEOF_XDP_MMAP_OFFSETS]);
  c.check(getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, b, len), 'getsockopt', 'XDP_MMAP_OFFSETS');
  // A kernel older than 5.4 answers without the flags fields (need_wakeup): pier needs them.
  if (len[0] !== SIZEOF_XDP_MMAP_OFFSETS) throw new Error(`XDP_MMAP_OFFSETS answered ${len[0]} bytes, expected ${SIZEOF_XDP_MMAP_OFFSETS} (a kernel with need_wakeup, 5.4 or later)`);
  const r = (i: number): RingOffsets => ({ producer: Number(b[i * 4]!), consumer: Number(b[i * 4 + 1]!), desc: Number(b[i * 4 + 2]!), flags: Number(b[i * 4 + 3]!) });
  return { rx: r(0), tx: r(1), fr: r(2), cr: r(3) };
}

/** A ring's mapping: unmap() it before the socket is closed, or the socket lives on. */
export interface RingMap {
  addr: number;
  len: number;
  u32: Uint32Array;
}

/** mmap one ring of `entries` descriptors of `descSize` bytes (8: fill/completion, 16: rx/tx). */
export function mapRing(fd: number, pgoff: number, off: RingOffsets, entries: number, descSize: number): RingMap {
  const len = off.desc + entries * descSize;
  const addr = Number(c.mmap(0, len, c.PROT_READ | c.PROT_WRITE, c.MAP_SHARED | 0x8000 /* MAP_POPULATE */, fd, pgoff));
  if (addr === 0 || addr === 2 ** 64 - 1 || addr >= 2 ** 53) throw new c.SysError('mmap', c.errno(), `XDP ring at page offset 0x${pgoff.toString(16)}`);
  return { addr, len, u32: new Uint32Array(c.view(addr, len)) };
}

export function unmapRing(r: RingMap): void {
  c.munmap(r.addr, r.len);
}

/**
 * Bind to queue `queue` of device `ifindex` (in the socket's namespace). `flags`: XDP_COPY or
 * XDP_ZEROCOPY (neither: the kernel tries zero-copy and falls back to copy), XDP_USE_NEED_WAKEUP,
 * XDP_SHARED_UMEM with the socket that registered the UMEM in `sharedFd`.
 */
export function bindXsk(fd: number, ifindex: number, queue: number, flags: number, sharedFd = 0): void {
  const b = new Uint8Array(SIZEOF_SOCKADDR_XDP);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, AF_XDP, true);
  dv.setUint16(2, flags, true);
  dv.setUint32(4, ifindex, true);
  dv.setUint32(8, queue, true);
  dv.setUint32(12, sharedFd, true);
  c.check(c.bind(fd, b, b.length), 'bind', `AF_XDP ifindex ${ifindex} queue ${queue} flags 0x${flags.toString(16)}`);
}

/** Whether the bound socket runs zero-copy (XDP_OPTIONS). */
export function isZeroCopy(fd: number): boolean {
  const b = new Uint32Array(1);
  const len = new Uint32Array([4]);
  c.check(getsockopt(fd, SOL_XDP, XDP_OPTIONS, b, len), 'getsockopt', 'XDP_OPTIONS');
  return (b[0]! & XDP_OPTIONS_ZEROCOPY) !== 0;
}

export interface XskStats {
  rxDropped: number;
  rxInvalidDescs: number;
  txInvalidDescs: number;
  rxRingFull: number;
  rxFillRingEmpty: number;
  txRingEmpty: number;
}

/** The kernel's counters of one socket (XDP_STATISTICS); control path (`pier show`). */
export function xskStatistics(fd: number): XskStats {
  const b = new BigUint64Array(SIZEOF_XDP_STATISTICS / 8);
  const len = new Uint32Array([SIZEOF_XDP_STATISTICS]);
  c.check(getsockopt(fd, SOL_XDP, XDP_STATISTICS, b, len), 'getsockopt', 'XDP_STATISTICS');
  const v = (i: number): number => (i * 8 < len[0]! ? Number(b[i]!) : 0);
  return { rxDropped: v(0), rxInvalidDescs: v(1), txInvalidDescs: v(2), rxRingFull: v(3), rxFillRingEmpty: v(4), txRingEmpty: v(5) };
}

/** Ask the kernel to send what the tx ring holds (need_wakeup set on it). -1 + errno; EAGAIN/EBUSY/ENOBUFS mean "later". */
export function kickTx(fd: number): number {
  return Number(sendto(fd, 0, 0, c.MSG_DONTWAIT, 0, 0));
}

/** Ask the kernel to take buffers from the fill ring (need_wakeup set on it). */
export function kickRx(fd: number): number {
  return Number(recvfrom(fd, 0, 0, c.MSG_DONTWAIT, 0, 0));
}

// ---- the rings ----

/**
 * One end of a ring whose other end the kernel holds. `u32` covers the mapping; the indexes
 * are word offsets in it. Free-running u32 indexes: `(a - b) >>> 0` is the distance even across
 * the wrap at 2^32; an entry's slot is `index & mask`.
 */
abstract class Ring {
  readonly mask: number;
  /** Word index of the producer and consumer indexes, the flags word, the first descriptor. */
  readonly prodW: number;
  readonly consW: number;
  readonly flagsW: number;
  readonly descW: number;
  /** This end's index, and its cached copy of the other end's. */
  cachedProd = 0;
  cachedCons = 0;

  constructor(readonly u32: Uint32Array, off: RingOffsets, readonly size: number) {
    if (size < 1 || (size & (size - 1)) !== 0) throw new Error(`ring size ${size} is not a power of two`);
    this.mask = size - 1;
    this.prodW = off.producer / 4;
    this.consW = off.consumer / 4;
    this.flagsW = off.flags / 4;
    this.descW = off.desc / 4;
    this.cachedProd = Atomics.load(u32, this.prodW);
    this.cachedCons = Atomics.load(u32, this.consW);
  }

  /** The kernel asks to be woken (a sendto / recvfrom) before it looks at this ring again. */
  needWakeup(): boolean {
    return (Atomics.load(this.u32, this.flagsW) & XDP_RING_NEED_WAKEUP) !== 0;
  }
}

/** The end pier produces on: the fill ring (addresses) and the tx ring (descriptors). */
export class ProducerRing extends Ring {
  constructor(u32: Uint32Array, off: RingOffsets, size: number) {
    super(u32, off, size);
    // The producer's view of the consumer is "consumer + size": the first index it may not write.
    this.cachedCons = (this.cachedCons + size) >>> 0;
  }

  /** Free entries, at least `want` if the ring has them (the consumer index is read only when the cache says fewer). */
  free(want: number): number {
    const n = (this.cachedCons - this.cachedProd) >>> 0;
    if (n >= want) return n;
    this.cachedCons = (Atomics.load(this.u32, this.consW) + this.size) >>> 0;
    return (this.cachedCons - this.cachedProd) >>> 0;
  }

  /** Word index of the descriptor `i` entries after the producer (for a write). */
  slotW(i: number, words: number): number {
    return this.descW + ((this.cachedProd + i) & this.mask) * words;
  }

  /** Publish `n` written entries (release). */
  submit(n: number): void {
    this.cachedProd = (this.cachedProd + n) >>> 0;
    Atomics.store(this.u32, this.prodW, this.cachedProd);
  }

  /** Entries written and not yet taken by the kernel. */
  outstanding(): number {
    return (this.cachedProd - Atomics.load(this.u32, this.consW)) >>> 0;
  }
}

/** The end pier consumes on: the rx ring (descriptors) and the completion ring (addresses). */
export class ConsumerRing extends Ring {
  /** Entries ready, at most `max` (the producer index is read, acquire, only when the cache is empty). */
  peek(max: number): number {
    let n = (this.cachedProd - this.cachedCons) >>> 0;
    if (n === 0) {
      this.cachedProd = Atomics.load(this.u32, this.prodW);
      n = (this.cachedProd - this.cachedCons) >>> 0;
    }
    // A producer index further ahead than the ring is big is the kernel's bug or a torn read: take none.
    if (n > this.size) return 0;
    return n < max ? n : max;
  }

  /** Word index of the descriptor `i` entries after the consumer (for a read). */
  slotW(i: number, words: number): number {
    return this.descW + ((this.cachedCons + i) & this.mask) * words;
  }

  /** Give `n` read entries back (release). */
  release(n: number): void {
    this.cachedCons = (this.cachedCons + n) >>> 0;
    Atomics.store(this.u32, this.consW, this.cachedCons);
  }
}
