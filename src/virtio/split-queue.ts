// The device side of a split virtqueue (virtio 1.2, 2.7): pier as a vhost-user backend consumes
// the available ring, walks each descriptor chain into a preallocated DescriptorChain, and
// returns buffers through a shadow used array published once per burst.
//
// Everything in the rings and descriptors is written by the guest and is validated here: a bad
// value never throws, it counts an error under a reason code, marks the queue broken (every
// later pop returns false) and leaves the rest of the switch running. The rules and the spec
// section each comes from are listed in docs/design/virtqueue.md.
//
// Memory ordering (see the design note): avail.idx is read with Atomics.load (acquire: the ring
// entries and descriptors are read after it); used.idx is written with Atomics.store (release:
// the used elements are written before it). The reads that decide a notification (used_event or
// avail.flags after a flush, avail.idx after re-enabling notifications) come after a
// sequentially consistent Atomics.store, which is the store-load fence the spec asks for.
//
// Names follow the spec and Linux vhost: last_avail_idx, signalled_used, enable_notify.

import type { AddressSpace, ByteSpace } from '../memory/types.ts';
import type { DescriptorChain } from './chain.ts';
import type { DeviceVirtqueue } from './queue.ts';
import {
  AVAIL_ALIGN, AVAIL_FLAGS, AVAIL_IDX, AVAIL_RING, DESC_ALIGN, USED_ALIGN, USED_FLAGS, USED_IDX,
  USED_RING, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY, availEventOffset, availRingSize, descTableSize,
  isValidQueueSize, usedEventOffset, usedRingSize, vringNeedEvent,
} from './ring.ts';

/** Reason codes for a broken queue, in counter order (QueueError.x indexes DeviceQueue.errors). */
export const QUEUE_ERROR_NAMES = [
  'avail_idx_ahead', // avail.idx more than the queue size ahead of last_avail_idx
  'head_out_of_range', // avail ring entry >= queue size
  'next_out_of_range', // next >= queue size (or >= entries of the indirect table)
  'chain_loop', // more descriptors than the table holds: a loop, or a chain longer than the queue
  'chain_too_long', // more buffer descriptors than the chain capacity (pier's limit)
  'chain_len_overflow', // total bytes of the chain >= 2^32
  'readable_after_writable', // a device-readable descriptor after a device-writable one
  'desc_unmapped', // a buffer outside the address space
  'indirect_not_negotiated', // INDIRECT flag without VIRTIO_F_INDIRECT_DESC
  'indirect_with_next', // INDIRECT and NEXT both set
  'indirect_nested', // INDIRECT inside an indirect table
  'indirect_bad_len', // indirect table length 0 or not a multiple of 16
  'indirect_unmapped', // indirect table outside the address space
  // Packed ring only (packed-queue.ts); appended so the split ring's counters keep their order.
  'desc_not_avail', // a descriptor inside a list is not available under the wrap counter in force
] as const;
export type QueueErrorName = (typeof QUEUE_ERROR_NAMES)[number];

export const QueueError = {
  avail_idx_ahead: 0,
  head_out_of_range: 1,
  next_out_of_range: 2,
  chain_loop: 3,
  chain_too_long: 4,
  chain_len_overflow: 5,
  readable_after_writable: 6,
  desc_unmapped: 7,
  indirect_not_negotiated: 8,
  indirect_with_next: 9,
  indirect_nested: 10,
  indirect_bad_len: 11,
  indirect_unmapped: 12,
  desc_not_avail: 13,
} as const satisfies Record<QueueErrorName, number>;

export interface DeviceQueueConfig {
  /** Queue size: a power of two, 1..32768. */
  size: number;
  /** Offsets in ByteSpace.bytes (already translated by the vhost layer) of the three parts. */
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** Where to resume consuming the available ring (VHOST_USER_SET_VRING_BASE); default 0. */
  lastAvailIdx?: number;
  /**
   * Where to resume filling the used ring; default: the used.idx currently in memory (what
   * Linux vhost_vq_init_access does), which is 0 for a freshly initialised ring.
   */
  usedIdx?: number;
  /**
   * Start at used.idx instead of lastAvailIdx when the two differ: a driver that kept its ring
   * across a reconnect (DPDK virtio-user in server mode sends base 0 while its ring has moved
   * on), resumed as DPDK's vhost library does. vringBase says where the queue started.
   */
  resumeAtUsed?: boolean;
}

/** Addresses at or above this upper word (2^53 - 2^32) cannot be exact doubles with len added. */
const ADDR_HI_LIMIT = 0x1fffff;
const TWO_32 = 4294967296;

// Atomics on a Uint16Array use the host's byte order; the rings are little-endian.
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export class DeviceQueue implements DeviceVirtqueue {
  readonly layout = 'split';
  readonly space: ByteSpace;
  readonly mem: AddressSpace;
  /** Guest errors by reason (indexes from QueueError); cumulative across reset(). */
  readonly errors: Float64Array;
  /** Reason of the first guest error since configure()/reset(), or null while healthy. */
  broken: QueueErrorName | null;
  ready: boolean;
  size: number;
  mask: number;
  eventIdx: boolean;
  indirect: boolean;
  /** Offsets in bytes of the descriptor table, the available ring and the used ring. */
  descOff: number;
  availOff: number;
  usedOff: number;
  /** Next available ring entry to consume (free-running, mod 2^16). */
  lastAvailIdx: number;
  /** avail.idx as last read: entries up to it may be popped without reading it again. */
  availIdxShadow: number;
  /** Shadow used index: where the next pushed element goes (free-running, mod 2^16). */
  usedIdx: number;
  /** used.idx as last published. */
  publishedUsed: number;
  /** used.idx at the last notification decision (Linux signalled_used), for EVENT_IDX. */
  signalledUsed: number;
  signalledUsedValid: boolean;
  /** Whether available buffer notifications are currently enabled (Linux !used_flags). */
  notifyEnabled: boolean;
  /** Shadow used elements not yet written to the used ring. */
  shadowCount: number;
  private shadowId: Uint32Array;
  private shadowLen: Uint32Array;
  // Precomputed positions.
  private availRingOff: number;
  private usedRingOff: number;
  private usedEventOff: number;
  private availIdxU16: number;
  private usedIdxU16: number;
  private usedFlagsU16: number;
  private availEventU16: number;

  constructor(space: ByteSpace, mem: AddressSpace) {
    this.space = space;
    this.mem = mem;
    this.errors = new Float64Array(QUEUE_ERROR_NAMES.length);
    this.broken = null;
    this.ready = false;
    this.size = 0;
    this.mask = 0;
    this.eventIdx = false;
    this.indirect = false;
    this.descOff = 0;
    this.availOff = 0;
    this.usedOff = 0;
    this.lastAvailIdx = 0;
    this.availIdxShadow = 0;
    this.usedIdx = 0;
    this.publishedUsed = 0;
    this.signalledUsed = 0;
    this.signalledUsedValid = false;
    this.notifyEnabled = true;
    this.shadowCount = 0;
    this.shadowId = new Uint32Array(0);
    this.shadowLen = new Uint32Array(0);
    this.availRingOff = 0;
    this.usedRingOff = 0;
    this.usedEventOff = 0;
    this.availIdxU16 = 0;
    this.usedIdxU16 = 0;
    this.usedFlagsU16 = 0;
    this.availEventU16 = 0;
  }

  /**
   * Set the queue up over rings already located in ByteSpace. Returns null when the queue is
   * ready, or a one-line reason (and the queue stays unconfigured). Not a hot path: it may
   * allocate the shadow used array.
   */
  configure(cfg: DeviceQueueConfig): string | null {
    this.ready = false;
    const { size, descAddr, availAddr, usedAddr } = cfg;
    if (!HOST_LITTLE_ENDIAN) return 'big-endian hosts are not supported';
    if (!isValidQueueSize(size)) return `queue size ${size} is not a power of two in 1..32768`;
    const bytesLen = this.space.bytes.length;
    const parts: Array<[string, number, number, number]> = [
      ['descriptor table', descAddr, DESC_ALIGN, descTableSize(size)],
      ['available ring', availAddr, AVAIL_ALIGN, availRingSize(size)],
      ['used ring', usedAddr, USED_ALIGN, usedRingSize(size)],
    ];
    for (const [name, off, align, len] of parts) {
      if (!Number.isSafeInteger(off) || off < 0) return `${name} offset ${off} is not a valid offset`;
      if (off % align !== 0) return `${name} offset ${off} is not aligned to ${align}`;
      if (off + len > bytesLen) return `${name} [${off}, ${off + len}) lies outside the memory`;
    }
    const last = cfg.lastAvailIdx ?? 0;
    if (!Number.isInteger(last) || last < 0 || last > 0xffff) return `last avail index ${last} is not a 16-bit value`;
    const usedIdxArg = cfg.usedIdx;
    if (usedIdxArg !== undefined && (!Number.isInteger(usedIdxArg) || usedIdxArg < 0 || usedIdxArg > 0xffff)) {
      return `used index ${usedIdxArg} is not a 16-bit value`;
    }
    const u16 = this.space.u16;
    const base = this.space.bytes.byteOffset - u16.byteOffset;
    if (this.space.u16.buffer !== this.space.bytes.buffer || (base & 1) !== 0) {
      return 'ByteSpace.u16 does not view the same buffer as bytes at an even offset';
    }
    const availIdxU16 = (base + availAddr + AVAIL_IDX) / 2;
    const usedIdxU16 = (base + usedAddr + USED_IDX) / 2;
    const availEventU16 = (base + usedAddr + availEventOffset(size)) / 2;
    if (availIdxU16 < 0 || usedIdxU16 < 0 || availEventU16 < 0 || availIdxU16 >= u16.length ||
        usedIdxU16 >= u16.length || availEventU16 >= u16.length) {
      return 'ByteSpace.u16 does not cover the ring indexes';
    }

    this.size = size;
    this.mask = size - 1;
    this.eventIdx = cfg.eventIdx;
    this.indirect = cfg.indirect;
    this.descOff = descAddr;
    this.availOff = availAddr;
    this.usedOff = usedAddr;
    this.availRingOff = availAddr + AVAIL_RING;
    this.usedRingOff = usedAddr + USED_RING;
    this.usedEventOff = availAddr + usedEventOffset(size);
    this.availIdxU16 = availIdxU16;
    this.usedIdxU16 = usedIdxU16;
    this.usedFlagsU16 = (base + usedAddr + USED_FLAGS) / 2;
    this.availEventU16 = availEventU16;
    if (this.shadowId.length < size) {
      this.shadowId = new Uint32Array(size);
      this.shadowLen = new Uint32Array(size);
    }
    const used = usedIdxArg ?? Atomics.load(u16, usedIdxU16);
    // (used.idx is the guest's to write: it only moves where consuming starts; every pop is still
    // checked against the ring's size.)
    const start = cfg.resumeAtUsed === true ? used : last;
    this.lastAvailIdx = start;
    this.availIdxShadow = start;
    this.usedIdx = used;
    this.publishedUsed = used;
    this.signalledUsed = used;
    this.signalledUsedValid = false;
    this.notifyEnabled = true;
    this.shadowCount = 0;
    this.broken = null;
    this.ready = true;
    return null;
  }

  /** Stop the queue and forget its indexes (VHOST_USER_GET_VRING_BASE / RESET_OWNER). */
  reset(): void {
    this.ready = false;
    this.broken = null;
    this.lastAvailIdx = 0;
    this.availIdxShadow = 0;
    this.usedIdx = 0;
    this.publishedUsed = 0;
    this.signalledUsed = 0;
    this.signalledUsedValid = false;
    this.notifyEnabled = true;
    this.shadowCount = 0;
  }

  /** The index to report for VHOST_USER_GET_VRING_BASE: the next available entry to consume. */
  get vringBase(): number {
    return this.lastAvailIdx;
  }

  /** Position of the next pop: last_avail_idx. */
  get nextAvail(): number {
    return this.lastAvailIdx;
  }

  /** Un-pop: chains popped since `nextAvail` was read, and not pushed, are available again. */
  unpop(nextAvail: number): void {
    this.lastAvailIdx = nextAvail;
  }

  /** Count a guest error, mark the queue broken with its reason, and return false. */
  private fail(code: number): false {
    this.errors[code]! += 1;
    if (this.broken === null) this.broken = QUEUE_ERROR_NAMES[code]!;
    return false;
  }

  /**
   * Entries the driver has made available and the device has not popped. Reads avail.idx with
   * Atomics.load (acquire). More than the queue size is a driver error (the ring holds at most
   * size buffers, 2.7 and 2.7.13): the queue is marked broken and 0 returned.
   */
  available(): number {
    if (!this.ready || this.broken !== null) return 0;
    const idx = Atomics.load(this.space.u16, this.availIdxU16);
    const n = (idx - this.lastAvailIdx) & 0xffff;
    if (n > this.size) {
      this.fail(QueueError.avail_idx_ahead);
      return 0;
    }
    this.availIdxShadow = idx;
    return n;
  }

  /**
   * Pop the next available chain into `chain`. Returns false when nothing is available or the
   * chain is invalid (then `broken` holds the reason and the queue stays stopped).
   */
  pop(chain: DescriptorChain): boolean {
    if (!this.ready || this.broken !== null) return false;
    const last = this.lastAvailIdx;
    if (last === this.availIdxShadow && this.available() === 0) return false;
    const head = this.space.dv.getUint16(this.availRingOff + 2 * (last & this.mask), true);
    if (head >= this.size) return this.fail(QueueError.head_out_of_range);
    chain.clear(head);
    if (!this.walkOne(chain, head) && !this.walk(chain, head)) return false;
    this.lastAvailIdx = (last + 1) & 0xffff;
    return true;
  }

  /**
   * The common chain, one direct descriptor (DPDK and Linux put header and frame in one buffer):
   * the rules of walk() that can apply to it, checked here without the loop. Returns false,
   * having recorded nothing, for anything else (walk() then does the general case, errors too).
   */
  private walkOne(chain: DescriptorChain, head: number): boolean {
    const dv = this.space.dv;
    const d = this.descOff + 16 * head;
    const flags = dv.getUint16(d + 12, true);
    if ((flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT)) !== 0) return false;
    const addrLo = dv.getUint32(d, true);
    const addrHi = dv.getUint32(d + 4, true);
    const len = dv.getUint32(d + 8, true);
    if (len === 0 || addrHi >= ADDR_HI_LIMIT) return false;
    const off = this.mem.translate(addrHi * TWO_32 + addrLo, len);
    if (off < 0 || off + len > this.space.bytes.length) return false;
    chain.descriptors = 1;
    chain.count = 1;
    chain.offset[0] = off;
    chain.len[0] = len;
    if ((flags & VRING_DESC_F_WRITE) !== 0) {
      chain.writable[0] = 1;
      chain.writableBytes = len;
    } else {
      chain.writable[0] = 0;
      chain.readable = 1;
      chain.readableBytes = len;
    }
    return true;
  }

  /**
   * Walk the chain starting at `head` (2.7.5). Each descriptor is read once into locals, so a
   * driver rewriting the table meanwhile cannot make the checks and the use disagree. At most
   * size descriptors of the main table, entries of the indirect table, and chain.capacity
   * buffer descriptors in total are read: the loop is bounded whatever the table holds.
   */
  private walk(chain: DescriptorChain, head: number): boolean {
    const dv = this.space.dv;
    const bytesLen = this.space.bytes.length;
    const mem = this.mem;
    const cap = chain.capacity;
    const offs = chain.offset;
    const lens = chain.len;
    const wr = chain.writable;
    let table = this.descOff;
    let entries = this.size;
    let ttl = entries;
    let i = head;
    let inIndirect = false;
    let sawWritable = false;
    let total = 0;
    for (;;) {
      if (ttl === 0) return this.fail(QueueError.chain_loop);
      ttl--;
      const d = table + 16 * i;
      const addrLo = dv.getUint32(d, true);
      const addrHi = dv.getUint32(d + 4, true);
      const len = dv.getUint32(d + 8, true);
      const flags = dv.getUint16(d + 12, true);
      const next = dv.getUint16(d + 14, true);

      if ((flags & VRING_DESC_F_INDIRECT) !== 0) {
        // 2.7.5.3: only with the feature, never nested, never with NEXT (so it ends the main
        // chain), len a whole number of descriptors; its WRITE flag is ignored (2.7.5.3.2).
        if (!this.indirect) return this.fail(QueueError.indirect_not_negotiated);
        if (inIndirect) return this.fail(QueueError.indirect_nested);
        if ((flags & VRING_DESC_F_NEXT) !== 0) return this.fail(QueueError.indirect_with_next);
        if (len === 0 || (len & 15) !== 0) return this.fail(QueueError.indirect_bad_len);
        if (addrHi >= ADDR_HI_LIMIT) return this.fail(QueueError.indirect_unmapped);
        const t = mem.translate(addrHi * TWO_32 + addrLo, len);
        if (t < 0 || t + len > bytesLen) return this.fail(QueueError.indirect_unmapped);
        table = t;
        entries = len >>> 4;
        ttl = entries;
        i = 0;
        inIndirect = true;
        chain.indirect = true;
        continue;
      }

      if (chain.descriptors === cap) return this.fail(QueueError.chain_too_long);
      chain.descriptors++;
      const writable = (flags & VRING_DESC_F_WRITE) !== 0;
      if (writable) sawWritable = true;
      else if (sawWritable) return this.fail(QueueError.readable_after_writable); // 2.7.4.2

      if (len !== 0) {
        total += len;
        if (total >= TWO_32) return this.fail(QueueError.chain_len_overflow); // 2.7.5.2
        if (addrHi >= ADDR_HI_LIMIT) return this.fail(QueueError.desc_unmapped);
        const off = mem.translate(addrHi * TWO_32 + addrLo, len);
        if (off < 0 || off + len > bytesLen) return this.fail(QueueError.desc_unmapped);
        const k = chain.count++;
        offs[k] = off;
        lens[k] = len;
        if (writable) {
          wr[k] = 1;
          chain.writableBytes += len;
        } else {
          wr[k] = 0;
          chain.readable++;
          chain.readableBytes += len;
        }
      }

      if ((flags & VRING_DESC_F_NEXT) === 0) return true;
      if (next >= entries) return this.fail(QueueError.next_out_of_range);
      i = next;
    }
  }

  /**
   * Return a chain to the driver: `id` is chain.head, `len` the bytes written into its writable
   * buffers. Goes to the shadow used array; nothing is visible until flush().
   */
  push(id: number, len: number): void {
    // A driver can only have `size` buffers outstanding, so the shadow holds every push between
    // two flushes; a driver that breaks that rule gets its elements written early (and may see
    // them overwritten before used.idx covers them), which only hurts itself.
    if (this.shadowCount === this.size) this.writeShadow();
    const n = this.shadowCount++;
    this.shadowId[n] = id;
    this.shadowLen[n] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
  }

  private writeShadow(): void {
    const dv = this.space.dv;
    const n = this.shadowCount;
    const mask = this.mask;
    const ring = this.usedRingOff;
    let idx = this.usedIdx - n;
    for (let k = 0; k < n; k++, idx++) {
      const e = ring + 8 * (idx & mask);
      dv.setUint32(e, this.shadowId[k]!, true);
      dv.setUint32(e + 4, this.shadowLen[k]!, true);
    }
    this.shadowCount = 0;
  }

  /**
   * Write the shadow used elements into the used ring, publish used.idx (Atomics.store:
   * release, and a full fence), then decide whether the driver wants a used buffer
   * notification (2.7.7.2). Returns true when the caller should write the call eventfd.
   */
  flush(): boolean {
    if (!this.ready) return false;
    if (this.shadowCount > 0) this.writeShadow();
    const newUsed = this.usedIdx;
    if (newUsed === this.publishedUsed) return false;
    Atomics.store(this.space.u16, this.usedIdxU16, newUsed);
    this.publishedUsed = newUsed;
    // The reads below come after the seq-cst store above: the driver either sees the new
    // used.idx or we see its new used_event / flags (no lost wakeup).
    if (!this.eventIdx) {
      return (this.space.dv.getUint16(this.availOff + AVAIL_FLAGS, true) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
    }
    const old = this.signalledUsed;
    const valid = this.signalledUsedValid;
    this.signalledUsed = newUsed;
    this.signalledUsedValid = true;
    if (!valid) return true;
    const usedEvent = this.space.dv.getUint16(this.usedEventOff, true);
    return vringNeedEvent(usedEvent, newUsed, old);
  }

  /**
   * Ask the driver not to send available buffer notifications (2.7.10.2): used.flags =
   * NO_NOTIFY; with EVENT_IDX nothing is written (as Linux vhost_disable_notify): avail_event
   * stays where it was, so the driver kicks at most once more.
   */
  disableNotifications(): void {
    // Already off: write nothing. The flags share a cache line with used.idx, which the
    // driver polls; a store of the same value still takes the line away from it.
    if (!this.notifyEnabled) return;
    this.notifyEnabled = false;
    if (!this.ready || this.eventIdx) return;
    this.space.dv.setUint16(this.usedOff + USED_FLAGS, VRING_USED_F_NO_NOTIFY, true);
  }

  /**
   * Ask for available buffer notifications again: clear used.flags (or with EVENT_IDX set
   * avail_event = last_avail_idx), then read avail.idx once more. Returns true when entries are
   * already waiting ("they have slipped one in"): the caller must poll again rather than sleep.
   */
  enableNotifications(): boolean {
    this.notifyEnabled = true;
    if (!this.ready) return false;
    // Seq-cst stores: the write is globally visible before the load of avail.idx below.
    if (this.eventIdx) Atomics.store(this.space.u16, this.availEventU16, this.lastAvailIdx);
    else Atomics.store(this.space.u16, this.usedFlagsU16, 0);
    const idx = Atomics.load(this.space.u16, this.availIdxU16);
    return idx !== this.lastAvailIdx;
  }
}
