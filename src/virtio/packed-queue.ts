// The device side of a packed virtqueue (virtio 1.2, 2.8): pier as a vhost-user backend polls the
// descriptor at its avail position, walks each available list into a preallocated
// DescriptorChain, and returns buffers as used descriptors written over the ring, a batch per
// flush(). The same interface as the split ring's DeviceQueue (DeviceVirtqueue), so a port holds
// either.
//
// Every value in the ring, the tables and the driver's event area is the guest's and is checked:
// a bad one counts an error under a reason code shared with the split ring (QUEUE_ERROR_NAMES),
// marks the queue broken and leaves the rest of the switch running. The rules, and the memory
// ordering (acquire load of the flags polled, release store of the first used flags of a batch),
// are in docs/design/virtqueue.md, "The packed virtqueue".

import type { AddressSpace, ByteSpace } from '../memory/types.ts';
import type { DescriptorChain } from './chain.ts';
import {
  EVENT_FLAGS, EVENT_OFF_WRAP, EVENT_SUPPRESS_ALIGN, EVENT_SUPPRESS_SIZE, PACKED_DESC_ALIGN,
  RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, isAvail,
  isValidPackedQueueSize, packedCounter, packedNeedEvent, packedRingSize, usedFlags,
} from './packed-ring.ts';
import type { DeviceVirtqueue } from './queue.ts';
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from './ring.ts';
import { QUEUE_ERROR_NAMES, QueueError, type QueueErrorName } from './split-queue.ts';

export interface PackedDeviceQueueConfig {
  /** Queue size: 1..32768. */
  size: number;
  /** Offsets in ByteSpace.bytes of the descriptor ring and the two event suppression areas. */
  descAddr: number;
  /** Driver Event Suppression (vhost-user's `avail` address): read by the device. */
  driverAddr: number;
  /** Device Event Suppression (vhost-user's `used` address): written by the device. */
  deviceAddr: number;
  eventIdx: boolean;
  indirect: boolean;
  /**
   * VHOST_USER_SET_VRING_BASE: bits 0-14 the next avail index, 15 its wrap counter; bits 16-30
   * and 31 the used index and wrap counter, or 0 for "same as avail" (see the design note).
   * Default: a fresh ring, 0x8000.
   */
  vringBase?: number;
}

/** Addresses at or above this upper word (2^53 - 2^32) cannot be exact doubles with len added. */
const ADDR_HI_LIMIT = 0x1fffff;
const TWO_32 = 4294967296;
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Buffer IDs are le16: the table of list lengths has one entry per possible ID. */
const BUFFER_IDS = 65536;

export class PackedDeviceQueue implements DeviceVirtqueue {
  readonly layout = 'packed';
  readonly space: ByteSpace;
  readonly mem: AddressSpace;
  readonly errors: Float64Array;
  broken: QueueErrorName | null;
  ready: boolean;
  size: number;
  eventIdx: boolean;
  indirect: boolean;
  descOff: number;
  driverOff: number;
  deviceOff: number;
  /** Ring index of the next descriptor to poll, and the avail wrap counter (0/1). */
  lastAvailIdx: number;
  availWrapCounter: number;
  /** Where the next pushed used descriptor goes, and the used wrap counter. */
  usedIdx: number;
  usedWrapCounter: number;
  /** Where the first shadow entry goes: everything before it is written to the ring. */
  publishedIdx: number;
  publishedWrap: number;
  /** Counter (packedCounter) of the published used position at the last notification decision. */
  signalledUsed: number;
  signalledUsedValid: boolean;
  notifyEnabled: boolean;
  /** Indirect tables with WRITE flags out of order, read as all device-readable (see walk()). */
  tablesReadOnly: number;
  shadowCount: number;
  private shadowId: Uint16Array;
  private shadowLen: Uint32Array;
  private shadowDescs: Uint16Array;
  /** Ring descriptors taken by the list last popped with each Buffer ID. */
  private listDescs: Uint16Array;
  /** Index in space.u16 of descriptor 0's flags; descriptor i's is 8 * i further. */
  private flagsU16: number;
  private deviceOffWrapU16: number;
  private deviceFlagsU16: number;

  constructor(space: ByteSpace, mem: AddressSpace) {
    this.space = space;
    this.mem = mem;
    this.errors = new Float64Array(QUEUE_ERROR_NAMES.length);
    this.broken = null;
    this.ready = false;
    this.size = 0;
    this.eventIdx = false;
    this.indirect = false;
    this.descOff = 0;
    this.driverOff = 0;
    this.deviceOff = 0;
    this.lastAvailIdx = 0;
    this.availWrapCounter = 1;
    this.usedIdx = 0;
    this.usedWrapCounter = 1;
    this.publishedIdx = 0;
    this.publishedWrap = 1;
    this.signalledUsed = 0;
    this.signalledUsedValid = false;
    this.notifyEnabled = true;
    this.tablesReadOnly = 0;
    this.shadowCount = 0;
    this.shadowId = new Uint16Array(0);
    this.shadowLen = new Uint32Array(0);
    this.shadowDescs = new Uint16Array(0);
    this.listDescs = new Uint16Array(0);
    this.flagsU16 = 0;
    this.deviceOffWrapU16 = 0;
    this.deviceFlagsU16 = 0;
  }

  /** Set the queue up; null when ready, else a one-line reason. Not a hot path (allocates once). */
  configure(cfg: PackedDeviceQueueConfig): string | null {
    this.ready = false;
    const { size, descAddr, driverAddr, deviceAddr } = cfg;
    if (!HOST_LITTLE_ENDIAN) return 'big-endian hosts are not supported';
    if (!isValidPackedQueueSize(size)) return `queue size ${size} is not in 1..32768`;
    const bytesLen = this.space.bytes.length;
    const parts: Array<[string, number, number, number]> = [
      ['descriptor ring', descAddr, PACKED_DESC_ALIGN, packedRingSize(size)],
      ['driver event suppression area', driverAddr, EVENT_SUPPRESS_ALIGN, EVENT_SUPPRESS_SIZE],
      ['device event suppression area', deviceAddr, EVENT_SUPPRESS_ALIGN, EVENT_SUPPRESS_SIZE],
    ];
    for (const [name, off, align, len] of parts) {
      if (!Number.isSafeInteger(off) || off < 0) return `${name} offset ${off} is not a valid offset`;
      if (off % align !== 0) return `${name} offset ${off} is not aligned to ${align}`;
      if (off + len > bytesLen) return `${name} [${off}, ${off + len}) lies outside the memory`;
    }
    const base = cfg.vringBase ?? 0x8000;
    if (!Number.isInteger(base) || base < 0 || base > 0xffffffff) return `vring base ${base} is not a 32-bit value`;
    const avail = base & 0x7fff;
    const used = base >>> 16 === 0 ? base & 0xffff : base >>> 16;
    if (avail >= size) return `next avail index ${avail} (vring base 0x${base.toString(16)}) is not below the queue size ${size}`;
    if ((used & 0x7fff) >= size) return `next used index ${used & 0x7fff} (vring base 0x${base.toString(16)}) is not below the queue size ${size}`;
    const u16 = this.space.u16;
    const b = this.space.bytes.byteOffset - u16.byteOffset;
    if (u16.buffer !== this.space.bytes.buffer || (b & 1) !== 0) return 'ByteSpace.u16 does not view the same buffer as bytes at an even offset';
    const flagsU16 = (b + descAddr + 14) / 2;
    const deviceOffWrapU16 = (b + deviceAddr + EVENT_OFF_WRAP) / 2;
    const lastFlags = flagsU16 + 8 * (size - 1);
    if (flagsU16 < 0 || deviceOffWrapU16 < 0 || lastFlags >= u16.length || deviceOffWrapU16 + 1 >= u16.length) {
      return 'ByteSpace.u16 does not cover the ring';
    }

    this.size = size;
    this.eventIdx = cfg.eventIdx;
    this.indirect = cfg.indirect;
    this.descOff = descAddr;
    this.driverOff = driverAddr;
    this.deviceOff = deviceAddr;
    this.flagsU16 = flagsU16;
    this.deviceOffWrapU16 = deviceOffWrapU16;
    this.deviceFlagsU16 = (b + deviceAddr + EVENT_FLAGS) / 2;
    if (this.shadowId.length < size) {
      this.shadowId = new Uint16Array(size);
      this.shadowLen = new Uint32Array(size);
      this.shadowDescs = new Uint16Array(size);
    }
    if (this.listDescs.length === 0) this.listDescs = new Uint16Array(BUFFER_IDS);
    this.lastAvailIdx = avail;
    this.availWrapCounter = base >>> 15 & 1;
    this.usedIdx = used & 0x7fff;
    this.usedWrapCounter = used >>> 15 & 1;
    this.publishedIdx = this.usedIdx;
    this.publishedWrap = this.usedWrapCounter;
    this.signalledUsed = packedCounter(this.usedIdx, this.usedWrapCounter, size);
    this.signalledUsedValid = false;
    this.notifyEnabled = true;
    this.shadowCount = 0;
    this.broken = null;
    this.ready = true;
    return null;
  }

  reset(): void {
    this.ready = false;
    this.broken = null;
    this.lastAvailIdx = 0;
    this.availWrapCounter = 1;
    this.usedIdx = 0;
    this.usedWrapCounter = 1;
    this.publishedIdx = 0;
    this.publishedWrap = 1;
    this.signalledUsed = 0;
    this.signalledUsedValid = false;
    this.notifyEnabled = true;
    this.shadowCount = 0;
  }

  /** index | wrap << 15 of the next descriptor to poll. */
  get nextAvail(): number {
    return this.lastAvailIdx | this.availWrapCounter << 15;
  }

  /** GET_VRING_BASE: the avail position in bits 0-15, the used position in bits 16-31. */
  get vringBase(): number {
    return (this.nextAvail | (this.usedIdx | this.usedWrapCounter << 15) << 16) >>> 0;
  }

  unpop(nextAvail: number): void {
    this.lastAvailIdx = nextAvail & 0x7fff;
    this.availWrapCounter = nextAvail >>> 15 & 1;
  }

  private fail(code: number): false {
    this.errors[code]! += 1;
    if (this.broken === null) this.broken = QUEUE_ERROR_NAMES[code]!;
    return false;
  }

  /**
   * Lists available from the avail position on, by walking their flags (at most size
   * descriptors): for gauges and `pier show`, not the hot path. Never breaks the queue; pop()
   * judges what it finds.
   */
  available(): number {
    if (!this.ready || this.broken !== null) return 0;
    const u16 = this.space.u16;
    const size = this.size;
    let i = this.lastAvailIdx;
    let wrap = this.availWrapCounter;
    let lists = 0;
    for (let k = 0; k < size; k++) {
      const flags = Atomics.load(u16, this.flagsU16 + 8 * i);
      if (!isAvail(flags, wrap)) break;
      if ((flags & VRING_DESC_F_NEXT) === 0) lists++;
      if (++i === size) {
        i = 0;
        wrap ^= 1;
      }
    }
    return lists;
  }

  /**
   * Pop the list at the avail position into `chain` (chain.head is its Buffer ID). False when
   * the descriptor there is not available, or the list is invalid (then `broken` says why).
   */
  pop(chain: DescriptorChain): boolean {
    if (!this.ready || this.broken !== null) return false;
    const first = this.lastAvailIdx;
    const flags = Atomics.load(this.space.u16, this.flagsU16 + 8 * first);
    if (!isAvail(flags, this.availWrapCounter)) return false;
    chain.clear(0);
    if ((flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT)) === 0 && this.popOne(chain, first, flags)) return true;
    return this.walk(chain, first, flags);
  }

  /** The common list: one direct descriptor. False, having recorded nothing, for anything walk() must judge. */
  private popOne(chain: DescriptorChain, i: number, flags: number): boolean {
    const dv = this.space.dv;
    const d = this.descOff + 16 * i;
    const addrLo = dv.getUint32(d, true);
    const addrHi = dv.getUint32(d + 4, true);
    const len = dv.getUint32(d + 8, true);
    if (len === 0 || addrHi >= ADDR_HI_LIMIT) return false;
    const off = this.mem.translate(addrHi * TWO_32 + addrLo, len);
    if (off < 0 || off + len > this.space.bytes.length) return false;
    const id = dv.getUint16(d + 12, true);
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
    chain.head = id;
    this.listDescs[id] = 1;
    if (++i === this.size) {
      this.lastAvailIdx = 0;
      this.availWrapCounter ^= 1;
    } else this.lastAvailIdx = i;
    return true;
  }

  /**
   * Walk the list starting at ring index `i`, whose flags (already loaded with acquire) are
   * `flags`. Each descriptor is read once into locals. At most size ring descriptors, the
   * entries of one indirect table and chain.capacity buffer descriptors are read.
   */
  private walk(chain: DescriptorChain, i: number, flags: number): boolean {
    const dv = this.space.dv;
    const bytesLen = this.space.bytes.length;
    const mem = this.mem;
    const size = this.size;
    const cap = chain.capacity;
    let wrap = this.availWrapCounter;
    let ringDescs = 0;
    let sawWritable = false;
    let total = 0;
    let id: number;
    for (;;) {
      if (ringDescs === size) return this.fail(QueueError.chain_loop);
      const d = this.descOff + 16 * i;
      if (ringDescs > 0) {
        flags = dv.getUint16(d + 14, true);
        // Every descriptor of the list carries the flags of an available one (Next Flag, Note).
        if (!isAvail(flags, wrap)) return this.fail(QueueError.desc_not_avail);
      }
      ringDescs++;
      const addrLo = dv.getUint32(d, true);
      const addrHi = dv.getUint32(d + 4, true);
      const len = dv.getUint32(d + 8, true);
      id = dv.getUint16(d + 12, true);

      if ((flags & VRING_DESC_F_INDIRECT) !== 0) {
        // Alone in its list: no NEXT, nothing before it (Driver Requirements: Indirect Descriptors).
        if (!this.indirect) return this.fail(QueueError.indirect_not_negotiated);
        if ((flags & VRING_DESC_F_NEXT) !== 0 || ringDescs > 1) return this.fail(QueueError.indirect_with_next);
        if (len === 0 || (len & 15) !== 0) return this.fail(QueueError.indirect_bad_len);
        if (addrHi >= ADDR_HI_LIMIT) return this.fail(QueueError.indirect_unmapped);
        const t = mem.translate(addrHi * TWO_32 + addrLo, len);
        if (t < 0 || t + len > bytesLen) return this.fail(QueueError.indirect_unmapped);
        chain.indirect = true;
        const entries = len >>> 4;
        // DPDK's virtio PMD marks the first entry (the net header) of its packed transmit tables
        // WRITE and the frame's entries readable. A table whose WRITE flags are out of order is
        // read as all device-readable: the device then never writes into it, and a transmitq,
        // the only place such tables come from, reads it as DPDK's own vhost does.
        let readOnly = false;
        for (let e = 0, w = false; e < entries; e++) {
          if ((dv.getUint16(t + 16 * e + 14, true) & VRING_DESC_F_WRITE) !== 0) w = true;
          else if (w) {
            readOnly = true;
            this.tablesReadOnly++;
            break;
          }
        }
        for (let e = 0; e < entries; e++) {
          const te = t + 16 * e;
          const eLen = dv.getUint32(te + 8, true);
          // Only WRITE means anything in a table; the other flags and the ID are ignored.
          const eWritable = !readOnly && (dv.getUint16(te + 14, true) & VRING_DESC_F_WRITE) !== 0;
          total = this.record(chain, dv.getUint32(te, true), dv.getUint32(te + 4, true), eLen, eWritable, sawWritable, total, cap, bytesLen);
          if (total < 0) return false;
          if (eWritable) sawWritable = true;
        }
        break;
      }

      const writable = (flags & VRING_DESC_F_WRITE) !== 0;
      total = this.record(chain, addrLo, addrHi, len, writable, sawWritable, total, cap, bytesLen);
      if (total < 0) return false;
      if (writable) sawWritable = true;
      if ((flags & VRING_DESC_F_NEXT) === 0) break;
      if (++i === size) {
        i = 0;
        wrap ^= 1;
      }
    }
    if (++i === size) {
      i = 0;
      wrap ^= 1;
    }
    this.lastAvailIdx = i;
    this.availWrapCounter = wrap;
    chain.head = id;
    this.listDescs[id] = ringDescs;
    return true;
  }

  /**
   * Check and record one buffer descriptor (of the ring or of a table): the split ring's rules.
   * Returns the chain's total length so far, or -1 when the queue broke.
   */
  private record(chain: DescriptorChain, addrLo: number, addrHi: number, len: number, writable: boolean,
    sawWritable: boolean, total: number, cap: number, bytesLen: number): number {
    if (chain.descriptors === cap) return this.failed(QueueError.chain_too_long);
    chain.descriptors++;
    if (!writable && sawWritable) return this.failed(QueueError.readable_after_writable);
    if (len === 0) return total; // walked and ordered, not translated (as the split ring)
    total += len;
    if (total >= TWO_32) return this.failed(QueueError.chain_len_overflow);
    if (addrHi >= ADDR_HI_LIMIT) return this.failed(QueueError.desc_unmapped);
    const off = this.mem.translate(addrHi * TWO_32 + addrLo, len);
    if (off < 0 || off + len > bytesLen) return this.failed(QueueError.desc_unmapped);
    const k = chain.count++;
    chain.offset[k] = off;
    chain.len[k] = len;
    if (writable) {
      chain.writable[k] = 1;
      chain.writableBytes += len;
    } else {
      chain.writable[k] = 0;
      chain.readable++;
      chain.readableBytes += len;
    }
    return total;
  }

  private failed(code: number): number {
    this.fail(code);
    return -1;
  }

  /**
   * Return a list: `id` its Buffer ID (chain.head), `len` the bytes written into it. Shadowed
   * until flush(). The used position moves by the ring descriptors the list took.
   */
  push(id: number, len: number): void {
    // A driver has at most size lists outstanding, so the shadow holds every push between two
    // flushes; past that (a driver reusing IDs) the shadow is written early.
    if (this.shadowCount === this.size) this.writeShadow();
    const n = this.shadowCount++;
    const descs = this.listDescs[id & 0xffff] || 1;
    this.shadowId[n] = id;
    this.shadowLen[n] = len;
    this.shadowDescs[n] = descs;
    let u = this.usedIdx + descs;
    if (u >= this.size) {
      u -= this.size;
      this.usedWrapCounter ^= 1;
    }
    this.usedIdx = u;
  }

  /**
   * Write the shadow as used descriptors: ids, lengths and every flags but the first with plain
   * stores, the first flags last with Atomics.store, so the driver sees the batch whole.
   */
  private writeShadow(): void {
    const n = this.shadowCount;
    if (n === 0) return;
    const dv = this.space.dv;
    const size = this.size;
    let i = this.publishedIdx;
    let wrap = this.publishedWrap;
    const firstIdx = i;
    const firstFlags = usedFlags(wrap) | (this.shadowLen[0]! > 0 ? VRING_DESC_F_WRITE : 0);
    for (let k = 0; k < n; k++) {
      const d = this.descOff + 16 * i;
      const len = this.shadowLen[k]!;
      dv.setUint32(d + 8, len, true);
      dv.setUint16(d + 12, this.shadowId[k]!, true);
      if (k > 0) dv.setUint16(d + 14, usedFlags(wrap) | (len > 0 ? VRING_DESC_F_WRITE : 0), true);
      i += this.shadowDescs[k]!;
      if (i >= size) {
        i -= size;
        wrap ^= 1;
      }
    }
    Atomics.store(this.space.u16, this.flagsU16 + 8 * firstIdx, firstFlags);
    this.publishedIdx = i;
    this.publishedWrap = wrap;
    this.shadowCount = 0;
  }

  /**
   * Publish the shadow, then decide whether the driver wants a used buffer notification.
   * Returns true when the caller should write the call eventfd.
   */
  flush(): boolean {
    if (!this.ready) return false;
    this.writeShadow();
    const size = this.size;
    const now = packedCounter(this.publishedIdx, this.publishedWrap, size);
    const old = this.signalledUsed;
    if (now === old) return false; // a flush that publishes nothing decides nothing
    const valid = this.signalledUsedValid;
    this.signalledUsed = now;
    this.signalledUsedValid = true;
    // After the seq-cst store in writeShadow(): either the driver sees the used flags or we see
    // its new event area. Flags first: a driver sets off_wrap before flags = DESC.
    const dv = this.space.dv;
    const flags = dv.getUint16(this.driverOff + EVENT_FLAGS, true) & 3;
    if (!this.eventIdx || flags !== RING_EVENT_FLAGS_DESC) return flags !== RING_EVENT_FLAGS_DISABLE;
    if (!valid) return true;
    return packedNeedEvent(dv.getUint16(this.driverOff + EVENT_OFF_WRAP, true), now, old, size);
  }

  /** Ask the driver for no available buffer notifications: device area flags = DISABLE. */
  disableNotifications(): void {
    if (!this.notifyEnabled) return;
    this.notifyEnabled = false;
    if (!this.ready) return;
    this.space.dv.setUint16(this.deviceOff + EVENT_FLAGS, RING_EVENT_FLAGS_DISABLE, true);
  }

  /**
   * Ask for available buffer notifications again (with EVENT_IDX: at the avail position), then
   * look at the polled descriptor once more: true when one is already available.
   */
  enableNotifications(): boolean {
    this.notifyEnabled = true;
    if (!this.ready) return false;
    const u16 = this.space.u16;
    if (this.eventIdx) {
      Atomics.store(u16, this.deviceOffWrapU16, this.nextAvail);
      Atomics.store(u16, this.deviceFlagsU16, RING_EVENT_FLAGS_DESC);
    } else Atomics.store(u16, this.deviceFlagsU16, RING_EVENT_FLAGS_ENABLE);
    return isAvail(Atomics.load(u16, this.flagsU16 + 8 * this.lastAvailIdx), this.availWrapCounter);
  }
}
