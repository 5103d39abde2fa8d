// The driver side of a split virtqueue (virtio 1.2, 2.7.13 and 2.7.14): pier as a virtio-user
// driver owns the descriptor table, fills the available ring and reclaims used buffers. Also
// the base of the mock driver the device tests run against.
//
// The free list and the shape of every chain in flight are kept in driver-private arrays, never
// read back from the descriptor table, so a device scribbling on the table cannot corrupt them.
// What the device writes (used.idx, used elements) is checked: a bad value counts an error and
// marks the queue broken, as on the device side.
//
// Ordering: descriptors and avail ring entries are written with plain stores, then avail.idx with
// Atomics.store (release; 2.7.13.3.1); the read of avail_event / used.flags in kickNeeded()
// follows that seq-cst store (the fence of 2.7.13.4.1). used.idx is read with Atomics.load
// (acquire) before the used elements.

import type { ByteSpace } from '../memory/types.ts';
import type { DriverVirtqueue } from './queue.ts';
import {
  AVAIL_ALIGN, AVAIL_FLAGS, AVAIL_IDX, AVAIL_RING, DESC_ALIGN, DESC_SIZE, USED_ALIGN, USED_FLAGS,
  USED_IDX, USED_RING, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY, availEventOffset, availRingSize, descTableSize,
  isValidQueueSize, usedEventOffset, usedRingSize, vringNeedEvent,
} from './ring.ts';

/** add() results that are not a head index. */
export const ADD_FULL = -1; // not enough free descriptors: reclaim used buffers first
export const ADD_INVALID = -2; // no segments, too many, readable after writable, or queue not ready/broken

export const DRIVER_ERROR_NAMES = [
  'used_idx_ahead', // used.idx more than the queue size ahead of what the driver consumed
  'used_id_invalid', // used element id not the head of a chain in flight
  'used_len_invalid', // used element len larger than the writable bytes of the chain
] as const;
export type DriverErrorName = (typeof DRIVER_ERROR_NAMES)[number];
export const DriverError = {
  used_idx_ahead: 0,
  used_id_invalid: 1,
  used_len_invalid: 2,
} as const satisfies Record<DriverErrorName, number>;

export interface DriverQueueConfig {
  size: number;
  /** Offsets in ByteSpace.bytes of the three parts. */
  descOff: number;
  availOff: number;
  usedOff: number;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** Added to a ByteSpace offset to form the address written into descriptors; default 0. */
  addrBase?: number;
}

const TWO_32 = 4294967296;

export class DriverQueue implements DriverVirtqueue {
  readonly layout = 'split';
  readonly space: ByteSpace;
  readonly errors: Float64Array;
  broken: DriverErrorName | null;
  ready: boolean;
  size: number;
  mask: number;
  eventIdx: boolean;
  addrBase: number;
  descOff: number;
  availOff: number;
  usedOff: number;
  /** Next avail index to fill (shadow of avail.idx, ahead of it until publish()). */
  availIdx: number;
  /** avail.idx as last published. */
  publishedAvail: number;
  /** avail.idx at the last kick decision (Linux: avail_idx_shadow - num_added). */
  kickedAvail: number;
  /** Next used element to consume. */
  lastUsedIdx: number;
  /** used.idx as last read. */
  usedIdxShadow: number;
  numFree: number;
  freeHead: number;
  /** Results of the last getUsed(): the chain's head and the bytes the device wrote. */
  usedId: number;
  usedLen: number;
  private freeNext: Uint16Array;
  private chainNext: Uint16Array;
  private chainCount: Uint32Array;
  private chainWritable: Float64Array;
  private availRingOff: number;
  private usedRingOff: number;
  private usedEventOff: number;
  private availEventOff: number;
  private availIdxU16: number;
  private availFlagsU16: number;
  private usedEventU16: number;
  private usedIdxU16: number;

  constructor(space: ByteSpace) {
    this.space = space;
    this.errors = new Float64Array(DRIVER_ERROR_NAMES.length);
    this.broken = null;
    this.ready = false;
    this.size = 0;
    this.mask = 0;
    this.eventIdx = false;
    this.addrBase = 0;
    this.descOff = 0;
    this.availOff = 0;
    this.usedOff = 0;
    this.availIdx = 0;
    this.publishedAvail = 0;
    this.kickedAvail = 0;
    this.lastUsedIdx = 0;
    this.usedIdxShadow = 0;
    this.numFree = 0;
    this.freeHead = 0;
    this.usedId = -1;
    this.usedLen = 0;
    this.freeNext = new Uint16Array(0);
    this.chainNext = new Uint16Array(0);
    this.chainCount = new Uint32Array(0);
    this.chainWritable = new Float64Array(0);
    this.availRingOff = 0;
    this.usedRingOff = 0;
    this.usedEventOff = 0;
    this.availEventOff = 0;
    this.availIdxU16 = 0;
    this.availFlagsU16 = 0;
    this.usedEventU16 = 0;
    this.usedIdxU16 = 0;
  }

  /**
   * Lay the queue out and initialise it as a driver does before DRIVER_OK: descriptor table
   * zeroed, avail and used rings zeroed (used.flags = 0, 2.7.10.1), every descriptor free.
   * Returns null, or a one-line reason.
   */
  configure(cfg: DriverQueueConfig): string | null {
    this.ready = false;
    const { size, descOff, availOff, usedOff } = cfg;
    if (!isValidQueueSize(size)) return `queue size ${size} is not a power of two in 1..32768`;
    const addrBase = cfg.addrBase ?? 0;
    if (!Number.isSafeInteger(addrBase) || addrBase < 0) return `address base ${addrBase} is not valid`;
    const bytes = this.space.bytes;
    const parts: Array<[string, number, number, number]> = [
      ['descriptor table', descOff, DESC_ALIGN, descTableSize(size)],
      ['available ring', availOff, AVAIL_ALIGN, availRingSize(size)],
      ['used ring', usedOff, USED_ALIGN, usedRingSize(size)],
    ];
    for (const [name, off, align, len] of parts) {
      if (!Number.isSafeInteger(off) || off < 0) return `${name} offset ${off} is not a valid offset`;
      if (off % align !== 0) return `${name} offset ${off} is not aligned to ${align}`;
      if (off + len > bytes.length) return `${name} [${off}, ${off + len}) lies outside the memory`;
    }
    const u16 = this.space.u16;
    const base = bytes.byteOffset - u16.byteOffset;
    if (u16.buffer !== bytes.buffer || (base & 1) !== 0) {
      return 'ByteSpace.u16 does not view the same buffer as bytes at an even offset';
    }
    const top = (base + usedOff + availEventOffset(size)) / 2;
    if ((base + descOff) / 2 < 0 || top >= u16.length || (base + availOff + usedEventOffset(size)) / 2 >= u16.length) {
      return 'ByteSpace.u16 does not cover the rings';
    }

    this.size = size;
    this.mask = size - 1;
    this.eventIdx = cfg.eventIdx;
    this.addrBase = addrBase;
    this.descOff = descOff;
    this.availOff = availOff;
    this.usedOff = usedOff;
    this.availRingOff = availOff + AVAIL_RING;
    this.usedRingOff = usedOff + USED_RING;
    this.usedEventOff = availOff + usedEventOffset(size);
    this.availEventOff = usedOff + availEventOffset(size);
    this.availIdxU16 = (base + availOff + AVAIL_IDX) / 2;
    this.availFlagsU16 = (base + availOff + AVAIL_FLAGS) / 2;
    this.usedEventU16 = (base + this.usedEventOff) / 2;
    this.usedIdxU16 = (base + usedOff + USED_IDX) / 2;
    bytes.fill(0, descOff, descOff + descTableSize(size));
    bytes.fill(0, availOff, availOff + availRingSize(size));
    bytes.fill(0, usedOff, usedOff + usedRingSize(size));
    if (this.freeNext.length < size) {
      this.freeNext = new Uint16Array(size);
      this.chainNext = new Uint16Array(size);
      this.chainCount = new Uint32Array(size);
      this.chainWritable = new Float64Array(size);
    }
    for (let i = 0; i < size; i++) {
      this.freeNext[i] = (i + 1) & 0xffff;
      this.chainCount[i] = 0;
    }
    this.freeHead = 0;
    this.numFree = size;
    this.availIdx = 0;
    this.publishedAvail = 0;
    this.kickedAvail = 0;
    this.lastUsedIdx = 0;
    this.usedIdxShadow = 0;
    this.usedId = -1;
    this.usedLen = 0;
    this.broken = null;
    this.ready = true;
    return null;
  }

  private fail(code: number): number {
    this.errors[code]! += 1;
    if (this.broken === null) this.broken = DRIVER_ERROR_NAMES[code]!;
    return -1;
  }

  private writeDesc(d: number, addr: number, len: number, flags: number, next: number): void {
    const dv = this.space.dv;
    dv.setUint32(d, addr % TWO_32, true);
    dv.setUint32(d + 4, Math.floor(addr / TWO_32), true);
    dv.setUint32(d + 8, len, true);
    dv.setUint16(d + 12, flags, true);
    dv.setUint16(d + 14, next, true);
  }

  /** Check segment order (all readable before any writable, 2.7.4.2) and sum writable bytes. */
  private checkSegments(lens: Uint32Array, writable: Uint8Array, n: number): number {
    let sawWritable = false;
    let wbytes = 0;
    for (let k = 0; k < n; k++) {
      if (writable[k] !== 0) {
        sawWritable = true;
        wbytes += lens[k]!;
      } else if (sawWritable) return -1;
    }
    return wbytes;
  }

  /**
   * Place a chain of n buffers into free descriptors (2.7.13.1) and its head into the next
   * avail ring entry (2.7.13.2); visible to the device after publish(). offsets are ByteSpace
   * offsets (the descriptor gets addrBase + offset). Returns the head, ADD_FULL or ADD_INVALID.
   */
  add(offsets: Float64Array, lens: Uint32Array, writable: Uint8Array, n: number): number {
    if (!this.ready || this.broken !== null || n <= 0 || n > this.size) return ADD_INVALID;
    if (n > this.numFree) return ADD_FULL;
    const wbytes = this.checkSegments(lens, writable, n);
    if (wbytes < 0) return ADD_INVALID;
    const head = this.freeHead;
    let d = head;
    for (let k = 0; k < n; k++) {
      const next = this.freeNext[d]!;
      const last = k === n - 1;
      const flags = (writable[k] !== 0 ? VRING_DESC_F_WRITE : 0) | (last ? 0 : VRING_DESC_F_NEXT);
      this.writeDesc(this.descOff + DESC_SIZE * d, this.addrBase + offsets[k]!, lens[k]!, flags, last ? 0 : next);
      this.chainNext[d] = next;
      if (!last) d = next;
      else this.freeHead = next;
    }
    this.numFree -= n;
    this.chainCount[head] = n;
    this.chainWritable[head] = wbytes;
    this.space.dv.setUint16(this.availRingOff + 2 * (this.availIdx & this.mask), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    return head;
  }

  /**
   * Like add(), but the n buffers go into an indirect table the caller placed at ByteSpace
   * offset tableOff (16 * n bytes, 2.7.5.3), and the chain takes one ring descriptor.
   * Requires VIRTIO_F_INDIRECT_DESC (not checked here).
   */
  addIndirect(tableOff: number, offsets: Float64Array, lens: Uint32Array, writable: Uint8Array, n: number): number {
    if (!this.ready || this.broken !== null || n <= 0 || n > 65536) return ADD_INVALID;
    if (tableOff < 0 || tableOff + DESC_SIZE * n > this.space.bytes.length) return ADD_INVALID;
    if (this.numFree === 0) return ADD_FULL;
    const wbytes = this.checkSegments(lens, writable, n);
    if (wbytes < 0) return ADD_INVALID;
    for (let k = 0; k < n; k++) {
      const last = k === n - 1;
      const flags = (writable[k] !== 0 ? VRING_DESC_F_WRITE : 0) | (last ? 0 : VRING_DESC_F_NEXT);
      this.writeDesc(tableOff + DESC_SIZE * k, this.addrBase + offsets[k]!, lens[k]!, flags, last ? 0 : k + 1);
    }
    const head = this.freeHead;
    this.freeHead = this.freeNext[head]!;
    this.writeDesc(this.descOff + DESC_SIZE * head, this.addrBase + tableOff, DESC_SIZE * n, VRING_DESC_F_INDIRECT, 0);
    this.numFree -= 1;
    this.chainCount[head] = 1;
    this.chainWritable[head] = wbytes;
    this.space.dv.setUint16(this.availRingOff + 2 * (this.availIdx & this.mask), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    return head;
  }

  /** Expose everything added since the last publish: avail.idx with Atomics.store (release). */
  publish(): void {
    if (!this.ready || this.availIdx === this.publishedAvail) return;
    Atomics.store(this.space.u16, this.availIdxU16, this.availIdx);
    this.publishedAvail = this.availIdx;
  }

  /**
   * After publish(): whether the device wants an available buffer notification (2.7.10.1).
   * With EVENT_IDX, whether avail.idx moved across avail_event since the last decision;
   * otherwise used.flags without NO_NOTIFY. The reads follow publish()'s seq-cst store.
   */
  kickNeeded(): boolean {
    if (!this.ready) return false;
    const newIdx = this.publishedAvail;
    const old = this.kickedAvail;
    if (newIdx === old) return false;
    this.kickedAvail = newIdx;
    const dv = this.space.dv;
    if (this.eventIdx) return vringNeedEvent(dv.getUint16(this.availEventOff, true), newIdx, old);
    return (dv.getUint16(this.usedOff + USED_FLAGS, true) & VRING_USED_F_NO_NOTIFY) === 0;
  }

  /** Used elements the device has published and the driver not consumed (0 when broken). */
  pendingUsed(): number {
    if (!this.ready || this.broken !== null) return 0;
    const idx = Atomics.load(this.space.u16, this.usedIdxU16);
    const n = (idx - this.lastUsedIdx) & 0xffff;
    if (n > this.size) {
      this.fail(DriverError.used_idx_ahead);
      return 0;
    }
    this.usedIdxShadow = idx;
    return n;
  }

  /**
   * Chains published to the device that it had not yet used as of the last read of used.idx
   * (pendingUsed / getUsed). 0 means the device had used every buffer it was given: for a
   * receive queue, it had nowhere to put the next packet.
   */
  deviceHeld(): number {
    return (this.publishedAvail - this.usedIdxShadow) & 0xffff;
  }

  /**
   * Take the next used element (2.7.14): returns its head (and sets usedId / usedLen), or -1
   * when none is pending or the device returned something invalid (then `broken` is set). The
   * chain's descriptors go back to the free list.
   */
  getUsed(): number {
    if (!this.ready || this.broken !== null) return -1;
    const last = this.lastUsedIdx;
    if (last === this.usedIdxShadow && this.pendingUsed() === 0) return -1;
    const dv = this.space.dv;
    const e = this.usedRingOff + 8 * (last & this.mask);
    const id = dv.getUint32(e, true);
    const len = dv.getUint32(e + 4, true);
    if (id >= this.size) return this.fail(DriverError.used_id_invalid);
    const count = this.chainCount[id]!;
    if (count === 0) return this.fail(DriverError.used_id_invalid);
    if (len > this.chainWritable[id]!) return this.fail(DriverError.used_len_invalid);
    let tail = id;
    for (let k = 1; k < count; k++) tail = this.chainNext[tail]!;
    this.freeNext[tail] = this.freeHead;
    this.freeHead = id;
    this.numFree += count;
    this.chainCount[id] = 0;
    this.lastUsedIdx = (last + 1) & 0xffff;
    this.usedId = id;
    this.usedLen = len;
    return id;
  }

  /**
   * Ask the device not to send used buffer notifications: avail.flags = NO_INTERRUPT; with
   * EVENT_IDX (where the device ignores the flag) used_event = last used index - 1, an index the
   * device has already passed, so it notifies again only when its used.idx comes round to it,
   * 65536 completions on (a device notifies when it moves used.idx across used_event, 2.7.10.2).
   */
  disableUsedNotifications(): void {
    if (!this.ready) return;
    if (this.eventIdx) Atomics.store(this.space.u16, this.usedEventU16, (this.lastUsedIdx - 1) & 0xffff);
    else this.space.dv.setUint16(this.availOff + AVAIL_FLAGS, VRING_AVAIL_F_NO_INTERRUPT, true);
  }

  /**
   * Ask for used buffer notifications again (used_event = last used index, or avail.flags = 0),
   * then re-read used.idx. Returns true when used elements are already pending: the caller must
   * process them rather than wait (the loop in 2.7.14). With EVENT_IDX this is also how a driver
   * suppresses notifications while it works: the device notifies once, when it moves used.idx
   * past used_event, and not again until the driver writes used_event anew here, so a receive
   * queue costs one notification per time the driver goes to sleep, not one per batch.
   * The seq-cst store orders the write of used_event before the re-read of used.idx (the
   * device writes used.idx, then reads used_event: one side always sees the other).
   */
  enableUsedNotifications(): boolean {
    if (!this.ready) return false;
    if (this.eventIdx) Atomics.store(this.space.u16, this.usedEventU16, this.lastUsedIdx);
    else Atomics.store(this.space.u16, this.availFlagsU16, 0);
    return Atomics.load(this.space.u16, this.usedIdxU16) !== this.lastUsedIdx;
  }
}
