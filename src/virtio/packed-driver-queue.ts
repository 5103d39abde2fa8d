// The driver side of a packed virtqueue (virtio 1.2, 2.8, "Supplying Buffers to The Device" and
// "Receiving Used Buffers From The Device"): pier as a virtio-user driver writes lists into the
// ring and reclaims them from the used descriptors the device writes back. The same interface as
// the split ring's DriverQueue (DriverVirtqueue).
//
// Buffer IDs are 0..size-1, from a driver-private free stack; the shape of each list in flight
// (ring descriptors, writable bytes) lives in driver-private arrays indexed by ID, never read back
// from the ring. What the device writes (the flags at the used position, the ID, the length) is
// checked: a bad value counts an error (DRIVER_ERROR_NAMES, shared with the split ring) and marks
// the queue broken.
//
// Ordering: a batch's descriptors are written with plain stores, the flags of its first list
// last with Atomics.store in publish(); the flags at the used position are read with
// Atomics.load before the ID and length. docs/design/virtqueue.md, "The packed virtqueue".

import type { ByteSpace } from '../memory/types.ts';
import { ADD_FULL, ADD_INVALID, DRIVER_ERROR_NAMES, DriverError, type DriverErrorName } from './driver-queue.ts';
import {
  EVENT_FLAGS, EVENT_OFF_WRAP, EVENT_SUPPRESS_ALIGN, EVENT_SUPPRESS_SIZE, PACKED_DESC_ALIGN,
  RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, availFlags,
  isUsed, isValidPackedQueueSize, packedCounter, packedNeedEvent, packedRingSize,
} from './packed-ring.ts';
import type { DriverVirtqueue } from './queue.ts';
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from './ring.ts';

export interface PackedDriverQueueConfig {
  size: number;
  /** Offsets in ByteSpace.bytes of the descriptor ring and the two event suppression areas. */
  descOff: number;
  driverOff: number;
  deviceOff: number;
  eventIdx: boolean;
  /** Added to a ByteSpace offset to form the address written into descriptors; default 0. */
  addrBase?: number;
}

/** What SET_VRING_BASE says of a fresh packed ring: avail and used at index 0, wrap counters 1. */
export const PACKED_FRESH_BASE = 0x80008000;

const TWO_32 = 4294967296;

export class PackedDriverQueue implements DriverVirtqueue {
  readonly layout = 'packed';
  readonly space: ByteSpace;
  readonly errors: Float64Array;
  broken: DriverErrorName | null;
  ready: boolean;
  size: number;
  eventIdx: boolean;
  addrBase: number;
  descOff: number;
  driverOff: number;
  deviceOff: number;
  /** Where the next descriptor goes, and the driver's avail wrap counter. */
  nextAvailIdx: number;
  availWrapCounter: number;
  /** The first list added since the last publish(): its ring index and its flags, not yet written. */
  pendingIdx: number;
  pendingFlags: number;
  /** Counters (packedCounter) of the avail position at the last publish() and at the last kick decision. */
  publishedAvail: number;
  kickedAvail: number;
  /** Where the next used descriptor will be, and the driver's used wrap counter. */
  lastUsedIdx: number;
  usedWrapCounter: number;
  /** Free ring descriptors. */
  numFree: number;
  /** Lists in flight, and those added since the last publish(). */
  inFlight: number;
  unpublished: number;
  usedId: number;
  usedLen: number;
  private freeIds: Uint16Array;
  private freeTop: number;
  /** Ring descriptors of the list with each ID (0: the ID is free), and its writable bytes. */
  private idDescs: Uint16Array;
  private idWritable: Float64Array;
  private flagsU16: number;
  private driverOffWrapU16: number;
  private driverFlagsU16: number;

  constructor(space: ByteSpace) {
    this.space = space;
    this.errors = new Float64Array(DRIVER_ERROR_NAMES.length);
    this.broken = null;
    this.ready = false;
    this.size = 0;
    this.eventIdx = false;
    this.addrBase = 0;
    this.descOff = 0;
    this.driverOff = 0;
    this.deviceOff = 0;
    this.nextAvailIdx = 0;
    this.availWrapCounter = 1;
    this.pendingIdx = -1;
    this.pendingFlags = 0;
    this.publishedAvail = 0;
    this.kickedAvail = 0;
    this.lastUsedIdx = 0;
    this.usedWrapCounter = 1;
    this.numFree = 0;
    this.inFlight = 0;
    this.unpublished = 0;
    this.usedId = -1;
    this.usedLen = 0;
    this.freeIds = new Uint16Array(0);
    this.freeTop = 0;
    this.idDescs = new Uint16Array(0);
    this.idWritable = new Float64Array(0);
    this.flagsU16 = 0;
    this.driverOffWrapU16 = 0;
    this.driverFlagsU16 = 0;
  }

  /** Lay the queue out as a driver does before DRIVER_OK: ring and both areas zeroed, wrap counters 1. */
  configure(cfg: PackedDriverQueueConfig): string | null {
    this.ready = false;
    const { size, descOff, driverOff, deviceOff } = cfg;
    if (!isValidPackedQueueSize(size)) return `queue size ${size} is not in 1..32768`;
    const addrBase = cfg.addrBase ?? 0;
    if (!Number.isSafeInteger(addrBase) || addrBase < 0) return `address base ${addrBase} is not valid`;
    const bytes = this.space.bytes;
    const parts: Array<[string, number, number, number]> = [
      ['descriptor ring', descOff, PACKED_DESC_ALIGN, packedRingSize(size)],
      ['driver event suppression area', driverOff, EVENT_SUPPRESS_ALIGN, EVENT_SUPPRESS_SIZE],
      ['device event suppression area', deviceOff, EVENT_SUPPRESS_ALIGN, EVENT_SUPPRESS_SIZE],
    ];
    for (const [name, off, align, len] of parts) {
      if (!Number.isSafeInteger(off) || off < 0) return `${name} offset ${off} is not a valid offset`;
      if (off % align !== 0) return `${name} offset ${off} is not aligned to ${align}`;
      if (off + len > bytes.length) return `${name} [${off}, ${off + len}) lies outside the memory`;
    }
    const u16 = this.space.u16;
    const b = bytes.byteOffset - u16.byteOffset;
    if (u16.buffer !== bytes.buffer || (b & 1) !== 0) return 'ByteSpace.u16 does not view the same buffer as bytes at an even offset';
    const flagsU16 = (b + descOff + 14) / 2;
    const driverOffWrapU16 = (b + driverOff + EVENT_OFF_WRAP) / 2;
    if (flagsU16 < 0 || driverOffWrapU16 < 0 || flagsU16 + 8 * (size - 1) >= u16.length || driverOffWrapU16 + 1 >= u16.length) {
      return 'ByteSpace.u16 does not cover the ring';
    }
    this.size = size;
    this.eventIdx = cfg.eventIdx;
    this.addrBase = addrBase;
    this.descOff = descOff;
    this.driverOff = driverOff;
    this.deviceOff = deviceOff;
    this.flagsU16 = flagsU16;
    this.driverOffWrapU16 = driverOffWrapU16;
    this.driverFlagsU16 = (b + driverOff + EVENT_FLAGS) / 2;
    bytes.fill(0, descOff, descOff + packedRingSize(size));
    bytes.fill(0, driverOff, driverOff + EVENT_SUPPRESS_SIZE);
    bytes.fill(0, deviceOff, deviceOff + EVENT_SUPPRESS_SIZE);
    if (this.freeIds.length < size) {
      this.freeIds = new Uint16Array(size);
      this.idDescs = new Uint16Array(size);
      this.idWritable = new Float64Array(size);
    }
    // IDs are handed out lowest first.
    for (let k = 0; k < size; k++) {
      this.freeIds[k] = size - 1 - k;
      this.idDescs[k] = 0;
    }
    this.freeTop = size;
    this.numFree = size;
    this.inFlight = 0;
    this.unpublished = 0;
    this.nextAvailIdx = 0;
    this.availWrapCounter = 1;
    this.pendingIdx = -1;
    this.pendingFlags = 0;
    this.publishedAvail = 0;
    this.kickedAvail = 0;
    this.lastUsedIdx = 0;
    this.usedWrapCounter = 1;
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

  private writeDesc(d: number, addr: number, len: number, id: number): void {
    const dv = this.space.dv;
    dv.setUint32(d, addr % TWO_32, true);
    dv.setUint32(d + 4, Math.floor(addr / TWO_32), true);
    dv.setUint32(d + 8, len, true);
    dv.setUint16(d + 12, id, true);
  }

  /**
   * Make a list's flags take effect: the first list of a batch waits for publish(); the others
   * are written now (the device reaches them only after the first, which publish() releases).
   */
  private expose(i: number, flags: number): void {
    if (this.pendingIdx < 0) {
      this.pendingIdx = i;
      this.pendingFlags = flags;
    } else this.space.dv.setUint16(this.descOff + 16 * i + 14, flags, true);
  }

  /** Writable bytes of n segments, or -1 when a readable one follows a writable one. */
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

  private takeId(descs: number, wbytes: number): number {
    const id = this.freeIds[--this.freeTop]!;
    this.idDescs[id] = descs;
    this.idWritable[id] = wbytes;
    this.numFree -= descs;
    this.inFlight++;
    this.unpublished++;
    return id;
  }

  /**
   * Place a list of n buffers in the next n ring descriptors (ID in each, flags of all but the
   * first now, the first's at publish()). Returns the Buffer ID, ADD_FULL or ADD_INVALID.
   */
  add(offsets: Float64Array, lens: Uint32Array, writable: Uint8Array, n: number): number {
    if (!this.ready || this.broken !== null || n <= 0 || n > this.size) return ADD_INVALID;
    if (n > this.numFree) return ADD_FULL;
    const wbytes = this.checkSegments(lens, writable, n);
    if (wbytes < 0) return ADD_INVALID;
    const id = this.takeId(n, wbytes);
    const dv = this.space.dv;
    const size = this.size;
    const first = this.nextAvailIdx;
    let i = first;
    let wrap = this.availWrapCounter;
    let firstFlags = 0;
    for (let k = 0; k < n; k++) {
      const d = this.descOff + 16 * i;
      this.writeDesc(d, this.addrBase + offsets[k]!, lens[k]!, id);
      const flags = availFlags(wrap) | (writable[k] !== 0 ? VRING_DESC_F_WRITE : 0) | (k < n - 1 ? VRING_DESC_F_NEXT : 0);
      if (k === 0) firstFlags = flags;
      else dv.setUint16(d + 14, flags, true);
      if (++i === size) {
        i = 0;
        wrap ^= 1;
      }
    }
    this.nextAvailIdx = i;
    this.availWrapCounter = wrap;
    this.expose(first, firstFlags);
    return id;
  }

  /**
   * Like add(), but the n buffers go into an indirect table the caller placed at ByteSpace
   * offset tableOff (16 * n bytes), and the list takes one ring descriptor. Requires
   * VIRTIO_F_INDIRECT_DESC (not checked here).
   */
  addIndirect(tableOff: number, offsets: Float64Array, lens: Uint32Array, writable: Uint8Array, n: number): number {
    if (!this.ready || this.broken !== null || n <= 0 || n > 65536) return ADD_INVALID;
    if (tableOff < 0 || tableOff + 16 * n > this.space.bytes.length) return ADD_INVALID;
    if (this.numFree === 0) return ADD_FULL;
    const wbytes = this.checkSegments(lens, writable, n);
    if (wbytes < 0) return ADD_INVALID;
    const dv = this.space.dv;
    for (let k = 0; k < n; k++) {
      const te = tableOff + 16 * k;
      this.writeDesc(te, this.addrBase + offsets[k]!, lens[k]!, 0);
      dv.setUint16(te + 14, writable[k] !== 0 ? VRING_DESC_F_WRITE : 0, true);
    }
    const id = this.takeId(1, wbytes);
    const i = this.nextAvailIdx;
    this.writeDesc(this.descOff + 16 * i, this.addrBase + tableOff, 16 * n, id);
    const flags = availFlags(this.availWrapCounter) | VRING_DESC_F_INDIRECT;
    if (++this.nextAvailIdx === this.size) {
      this.nextAvailIdx = 0;
      this.availWrapCounter ^= 1;
    }
    this.expose(i, flags);
    return id;
  }

  /** Expose everything added since the last publish: the batch's first flags with Atomics.store. */
  publish(): void {
    if (!this.ready || this.pendingIdx < 0) return;
    Atomics.store(this.space.u16, this.flagsU16 + 8 * this.pendingIdx, this.pendingFlags);
    this.pendingIdx = -1;
    this.unpublished = 0;
    this.publishedAvail = packedCounter(this.nextAvailIdx, this.availWrapCounter, this.size);
  }

  /**
   * After publish(): whether the device wants an available buffer notification. The reads of
   * the device area follow publish()'s seq-cst store.
   */
  kickNeeded(): boolean {
    if (!this.ready) return false;
    const now = this.publishedAvail;
    const old = this.kickedAvail;
    if (now === old) return false;
    this.kickedAvail = now;
    const dv = this.space.dv;
    const flags = dv.getUint16(this.deviceOff + EVENT_FLAGS, true) & 3;
    if (!this.eventIdx || flags !== RING_EVENT_FLAGS_DESC) return flags !== RING_EVENT_FLAGS_DISABLE;
    return packedNeedEvent(dv.getUint16(this.deviceOff + EVENT_OFF_WRAP, true), now, old, this.size);
  }

  /**
   * Used lists the device has written from the used position on, found by following the IDs (at
   * most the lists in flight). For gauges; stops, without breaking the queue, at anything
   * getUsed() would refuse.
   */
  pendingUsed(): number {
    if (!this.ready || this.broken !== null) return 0;
    const dv = this.space.dv;
    const size = this.size;
    let i = this.lastUsedIdx;
    let wrap = this.usedWrapCounter;
    let n = 0;
    while (n < this.inFlight) {
      if (!isUsed(Atomics.load(this.space.u16, this.flagsU16 + 8 * i), wrap)) break;
      const id = dv.getUint16(this.descOff + 16 * i + 12, true);
      if (id >= size || this.idDescs[id] === 0) break;
      n++;
      i += this.idDescs[id]!;
      if (i >= size) {
        i -= size;
        wrap ^= 1;
      }
    }
    return n;
  }

  /**
   * Published lists the device had not used as of the last look at the used position: the lists
   * published and not yet reclaimed. After a getUsed() that found nothing, exactly what the
   * device holds; after one cut short by the caller, an upper bound.
   */
  deviceHeld(): number {
    return this.inFlight - this.unpublished;
  }

  /**
   * Take the used descriptor at the used position: returns its Buffer ID (and sets usedId /
   * usedLen), or -1 when there is none or the device wrote something invalid (then `broken`).
   */
  getUsed(): number {
    if (!this.ready || this.broken !== null || this.inFlight === 0) return -1;
    const i = this.lastUsedIdx;
    const flags = Atomics.load(this.space.u16, this.flagsU16 + 8 * i);
    if (!isUsed(flags, this.usedWrapCounter)) return -1;
    const dv = this.space.dv;
    const d = this.descOff + 16 * i;
    const id = dv.getUint16(d + 12, true);
    if (id >= this.size) return this.fail(DriverError.used_id_invalid);
    const descs = this.idDescs[id]!;
    if (descs === 0) return this.fail(DriverError.used_id_invalid);
    // len means something only with WRITE (Element Address and Length).
    const len = (flags & VRING_DESC_F_WRITE) !== 0 ? dv.getUint32(d + 8, true) : 0;
    if (len > this.idWritable[id]!) return this.fail(DriverError.used_len_invalid);
    let u = i + descs;
    if (u >= this.size) {
      u -= this.size;
      this.usedWrapCounter ^= 1;
    }
    this.lastUsedIdx = u;
    this.idDescs[id] = 0;
    this.freeIds[this.freeTop++] = id;
    this.numFree += descs;
    this.inFlight--;
    this.usedId = id;
    this.usedLen = len;
    return id;
  }

  /** Ask the device for no used buffer notifications: driver area flags = DISABLE. */
  disableUsedNotifications(): void {
    if (!this.ready) return;
    this.space.dv.setUint16(this.driverOff + EVENT_FLAGS, RING_EVENT_FLAGS_DISABLE, true);
  }

  /**
   * Ask for used buffer notifications again (with EVENT_IDX: at the used position, so the device
   * notifies once, when it writes there), then look once more: true when a used descriptor is
   * already there and the caller must process it rather than wait.
   */
  enableUsedNotifications(): boolean {
    if (!this.ready) return false;
    const u16 = this.space.u16;
    if (this.eventIdx) {
      Atomics.store(u16, this.driverOffWrapU16, this.lastUsedIdx | this.usedWrapCounter << 15);
      Atomics.store(u16, this.driverFlagsU16, RING_EVENT_FLAGS_DESC);
    } else Atomics.store(u16, this.driverFlagsU16, RING_EVENT_FLAGS_ENABLE);
    return this.inFlight > 0 && isUsed(Atomics.load(u16, this.flagsU16 + 8 * this.lastUsedIdx), this.usedWrapCounter);
  }
}
