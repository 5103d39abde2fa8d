// A driver side for tests and benchmarks, after rust-vmm's virtio-queue mock.rs: one plain
// ArrayBuffer holding a split queue and a data area, an AddressSpace over it (driver address =
// base + offset, valid only inside configurable regions), a DriverQueue to post well-formed
// chains, and raw writers for hostile ones (any descriptor, any avail entry, any avail.idx).
//
// Layout of the buffer (offsets):
//   [0, 64)                guard, never mapped by default rings
//   descOff = 64           descriptor table, 16 * size
//   availOff               available ring, 6 + 2 * size   (aligned 2)
//   usedOff                used ring, 6 + 8 * size       (aligned 4)
//   dataOff .. end         data area: buffers and indirect tables (bump-allocated)

import type { AddressSpace, ByteSpace } from '../memory/types.ts';
import { DriverQueue } from './driver-queue.ts';
import type { DeviceQueueConfig } from './split-queue.ts';
import { DESC_SIZE, availRingSize, descTableSize, usedRingSize } from './ring.ts';
import { PackedDriverQueue } from './packed-driver-queue.ts';
import type { PackedDeviceQueueConfig } from './packed-queue.ts';
import { EVENT_FLAGS, EVENT_OFF_WRAP, availFlags, packedRingSize } from './packed-ring.ts';

const TWO_32 = 4294967296;

/** Identity-with-base translation over a list of valid offset ranges. */
export class MockAddressSpace implements AddressSpace {
  /** Driver address of offset 0. */
  base: number;
  /** Valid [start, end) offset ranges, flattened. */
  private ranges: number[];
  translations: number;

  constructor(base: number, ranges: ReadonlyArray<readonly [number, number]>) {
    this.base = base;
    this.ranges = [];
    this.translations = 0;
    this.setRegions(ranges);
  }

  setRegions(ranges: ReadonlyArray<readonly [number, number]>): void {
    this.ranges = [];
    for (const [s, e] of ranges) this.ranges.push(s, e);
  }

  translate(addr: number, len: number): number {
    this.translations++;
    if (!(len > 0)) return -1;
    const off = addr - this.base;
    if (!(off >= 0)) return -1;
    const r = this.ranges;
    for (let i = 0; i + 1 < r.length; i += 2) {
      if (off >= r[i]! && off + len <= r[i + 1]!) return off;
    }
    return -1;
  }

  /** Whether [off, off + len) lies inside one valid region (for checking popped segments). */
  containsOffset(off: number, len: number): boolean {
    const r = this.ranges;
    for (let i = 0; i + 1 < r.length; i += 2) {
      if (off >= r[i]! && off + len <= r[i + 1]!) return true;
    }
    return false;
  }
}

export interface MockSegment {
  len: number;
  writable?: boolean;
  /** Content of a readable buffer (len bytes; shorter is zero-padded). */
  data?: Uint8Array;
}

export interface MockDriverOptions {
  size: number;
  eventIdx?: boolean;
  indirect?: boolean;
  /** Driver address of offset 0 (a guest-physical base); default 0. */
  base?: number;
  /** Bytes of the data area; default 256 KiB. */
  dataBytes?: number;
}

export class MockDriver {
  readonly buffer: ArrayBuffer;
  readonly space: ByteSpace;
  readonly mem: MockAddressSpace;
  readonly queue: DriverQueue;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly base: number;
  readonly descOff: number;
  readonly availOff: number;
  readonly usedOff: number;
  readonly dataOff: number;
  readonly end: number;
  private next: number;
  // Scratch for DriverQueue.add.
  private readonly offs: Float64Array;
  private readonly lens: Uint32Array;
  private readonly wr: Uint8Array;

  constructor(opts: MockDriverOptions) {
    const size = opts.size;
    this.size = size;
    this.eventIdx = opts.eventIdx ?? false;
    this.indirect = opts.indirect ?? false;
    this.base = opts.base ?? 0;
    const l = MockDriver.layout(size, opts.dataBytes);
    this.descOff = l.descOff;
    this.availOff = l.availOff;
    this.usedOff = l.usedOff;
    this.dataOff = l.dataOff;
    this.end = l.end;
    this.buffer = new ArrayBuffer(this.end);
    this.space = {
      bytes: new Uint8Array(this.buffer),
      dv: new DataView(this.buffer),
      u16: new Uint16Array(this.buffer),
    };
    this.mem = new MockAddressSpace(this.base, [[0, this.end]]);
    this.queue = new DriverQueue(this.space);
    const err = this.queue.configure({
      size, descOff: this.descOff, availOff: this.availOff, usedOff: this.usedOff,
      eventIdx: this.eventIdx, addrBase: this.base,
    });
    if (err !== null) throw new Error(`MockDriver: ${err}`);
    this.next = this.dataOff;
    this.offs = new Float64Array(Math.max(size, 1024));
    this.lens = new Uint32Array(Math.max(size, 1024));
    this.wr = new Uint8Array(Math.max(size, 1024));
  }

  /** Where the parts of a mock queue of this size go (see the layout at the top of the file). */
  static layout(size: number, dataBytes = 256 * 1024): { descOff: number; availOff: number; usedOff: number; dataOff: number; end: number } {
    const descOff = 64;
    const availOff = descOff + descTableSize(size);
    const usedOff = align(availOff + availRingSize(size), 4);
    const dataOff = align(usedOff + usedRingSize(size), 64);
    return { descOff, availOff, usedOff, dataOff, end: align(dataOff + dataBytes, 8) };
  }

  /** The configuration a DeviceQueue needs to serve this queue. */
  deviceConfig(extra: Partial<DeviceQueueConfig> = {}): DeviceQueueConfig {
    return {
      size: this.size, descAddr: this.descOff, availAddr: this.availOff, usedAddr: this.usedOff,
      eventIdx: this.eventIdx, indirect: this.indirect, ...extra,
    };
  }

  /** Driver address of a ByteSpace offset. */
  addr(off: number): number {
    return this.base + off;
  }

  /** Bump-allocate len bytes in the data area; wraps to the start when it runs out. */
  alloc(len: number, alignTo = 8): number {
    let off = align(this.next, alignTo);
    if (off + len > this.end) off = align(this.dataOff, alignTo);
    if (off + len > this.end) throw new RangeError(`MockDriver: ${len} bytes do not fit the data area`);
    this.next = off + len;
    return off;
  }

  resetAlloc(): void {
    this.next = this.dataOff;
  }

  private fill(segs: ReadonlyArray<MockSegment>): number[] {
    const offsets: number[] = [];
    segs.forEach((s, k) => {
      const off = this.alloc(Math.max(s.len, 1));
      offsets.push(off);
      if (!s.writable && s.data) this.space.bytes.set(s.data.subarray(0, s.len), off);
      this.offs[k] = off;
      this.lens[k] = s.len;
      this.wr[k] = s.writable ? 1 : 0;
    });
    return offsets;
  }

  /**
   * Post a chain of direct descriptors through the DriverQueue and publish it. Returns the head
   * (or ADD_FULL / ADD_INVALID) and the offsets of the buffers it allocated.
   */
  post(segs: ReadonlyArray<MockSegment>, publish = true): { head: number; offsets: number[] } {
    const offsets = this.fill(segs);
    const head = this.queue.add(this.offs, this.lens, this.wr, segs.length);
    if (publish) this.queue.publish();
    return { head, offsets };
  }

  /** Post a chain as one descriptor pointing at an indirect table in the data area. */
  postIndirect(segs: ReadonlyArray<MockSegment>, publish = true): { head: number; offsets: number[]; table: number } {
    const offsets = this.fill(segs);
    const table = this.alloc(DESC_SIZE * Math.max(segs.length, 1), 16);
    const head = this.queue.addIndirect(table, this.offs, this.lens, this.wr, segs.length);
    if (publish) this.queue.publish();
    return { head, offsets, table };
  }

  // ---- raw access, for hostile drivers (bypasses the DriverQueue bookkeeping) ----

  /** Write descriptor `index` of the table at ByteSpace offset `tableOff` (default: the ring's). */
  writeDesc(index: number, addr: number, len: number, flags: number, next: number, tableOff = this.descOff): void {
    const d = tableOff + DESC_SIZE * index;
    const dv = this.space.dv;
    dv.setUint32(d, addr % TWO_32, true);
    dv.setUint32(d + 4, Math.floor(addr / TWO_32) >>> 0, true);
    dv.setUint32(d + 8, len >>> 0, true);
    dv.setUint16(d + 12, flags & 0xffff, true);
    dv.setUint16(d + 14, next & 0xffff, true);
  }

  /** avail.idx as in memory. */
  get availIdx(): number {
    return Atomics.load(this.space.u16, (this.availOff + 2) >> 1);
  }
  set availIdx(v: number) {
    Atomics.store(this.space.u16, (this.availOff + 2) >> 1, v & 0xffff);
  }

  /** Write avail.ring[slot mod size]. */
  setAvailEntry(slot: number, head: number): void {
    this.space.dv.setUint16(this.availOff + 4 + 2 * (slot & (this.size - 1)), head & 0xffff, true);
  }

  /** Raw post: ring[avail.idx] = head, avail.idx += 1. */
  pushAvail(head: number): void {
    const idx = this.availIdx;
    this.setAvailEntry(idx, head);
    this.availIdx = idx + 1;
  }

  get availFlags(): number {
    return this.space.dv.getUint16(this.availOff, true);
  }
  set availFlags(v: number) {
    this.space.dv.setUint16(this.availOff, v, true);
  }
  get usedEvent(): number {
    return this.space.dv.getUint16(this.availOff + 4 + 2 * this.size, true);
  }
  set usedEvent(v: number) {
    this.space.dv.setUint16(this.availOff + 4 + 2 * this.size, v & 0xffff, true);
  }
  get usedFlags(): number {
    return this.space.dv.getUint16(this.usedOff, true);
  }
  get usedIdx(): number {
    return Atomics.load(this.space.u16, (this.usedOff + 2) >> 1);
  }
  get availEvent(): number {
    return this.space.dv.getUint16(this.usedOff + 4 + 8 * this.size, true);
  }
  set availEvent(v: number) {
    this.space.dv.setUint16(this.usedOff + 4 + 8 * this.size, v & 0xffff, true);
  }
  /** used.ring[slot mod size] as [id, len]. */
  usedElem(slot: number): [number, number] {
    const e = this.usedOff + 4 + 8 * (slot & (this.size - 1));
    return [this.space.dv.getUint32(e, true), this.space.dv.getUint32(e + 4, true)];
  }
}

function align(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

/**
 * The packed ring's mock driver: one plain ArrayBuffer holding a packed queue and a data area,
 * a PackedDriverQueue to post well-formed lists, and raw writers for hostile ones.
 *
 *   [0, 64)        guard
 *   descOff = 64   descriptor ring, 16 * size
 *   driverOff      driver event suppression area, 4 bytes (aligned 4)
 *   deviceOff      device event suppression area, 4 bytes
 *   dataOff .. end data area (bump-allocated)
 */
export class MockPackedDriver {
  readonly buffer: ArrayBuffer;
  readonly space: ByteSpace;
  readonly mem: MockAddressSpace;
  readonly queue: PackedDriverQueue;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly base: number;
  readonly descOff: number;
  readonly driverOff: number;
  readonly deviceOff: number;
  readonly dataOff: number;
  readonly end: number;
  private next: number;
  private readonly offs: Float64Array;
  private readonly lens: Uint32Array;
  private readonly wr: Uint8Array;

  constructor(opts: MockDriverOptions) {
    const size = opts.size;
    this.size = size;
    this.eventIdx = opts.eventIdx ?? false;
    this.indirect = opts.indirect ?? false;
    this.base = opts.base ?? 0;
    this.descOff = 64;
    this.driverOff = this.descOff + packedRingSize(size);
    this.deviceOff = this.driverOff + 4;
    this.dataOff = align(this.deviceOff + 4, 64);
    this.end = align(this.dataOff + (opts.dataBytes ?? 256 * 1024), 8);
    this.buffer = new ArrayBuffer(this.end);
    this.space = { bytes: new Uint8Array(this.buffer), dv: new DataView(this.buffer), u16: new Uint16Array(this.buffer) };
    this.mem = new MockAddressSpace(this.base, [[0, this.end]]);
    this.queue = new PackedDriverQueue(this.space);
    const err = this.queue.configure({
      size, descOff: this.descOff, driverOff: this.driverOff, deviceOff: this.deviceOff, eventIdx: this.eventIdx, addrBase: this.base,
    });
    if (err !== null) throw new Error(`MockPackedDriver: ${err}`);
    this.next = this.dataOff;
    this.offs = new Float64Array(Math.max(size, 1024));
    this.lens = new Uint32Array(Math.max(size, 1024));
    this.wr = new Uint8Array(Math.max(size, 1024));
  }

  /** The configuration a PackedDeviceQueue needs to serve this queue. */
  deviceConfig(extra: Partial<PackedDeviceQueueConfig> = {}): PackedDeviceQueueConfig {
    return {
      size: this.size, descAddr: this.descOff, driverAddr: this.driverOff, deviceAddr: this.deviceOff,
      eventIdx: this.eventIdx, indirect: this.indirect, ...extra,
    };
  }

  addr(off: number): number {
    return this.base + off;
  }

  alloc(len: number, alignTo = 8): number {
    let off = align(this.next, alignTo);
    if (off + len > this.end) off = align(this.dataOff, alignTo);
    if (off + len > this.end) throw new RangeError(`MockPackedDriver: ${len} bytes do not fit the data area`);
    this.next = off + len;
    return off;
  }

  private fill(segs: ReadonlyArray<MockSegment>): number[] {
    const offsets: number[] = [];
    segs.forEach((s, k) => {
      const off = this.alloc(Math.max(s.len, 1));
      offsets.push(off);
      if (!s.writable && s.data) this.space.bytes.set(s.data.subarray(0, s.len), off);
      this.offs[k] = off;
      this.lens[k] = s.len;
      this.wr[k] = s.writable ? 1 : 0;
    });
    return offsets;
  }

  /** Post a list of direct descriptors through the PackedDriverQueue. Returns the Buffer ID (or ADD_*). */
  post(segs: ReadonlyArray<MockSegment>, publish = true): { head: number; offsets: number[] } {
    const offsets = this.fill(segs);
    const head = this.queue.add(this.offs, this.lens, this.wr, segs.length);
    if (publish) this.queue.publish();
    return { head, offsets };
  }

  /** Post a list as one descriptor pointing at an indirect table in the data area. */
  postIndirect(segs: ReadonlyArray<MockSegment>, publish = true): { head: number; offsets: number[]; table: number } {
    const offsets = this.fill(segs);
    const table = this.alloc(16 * Math.max(segs.length, 1), 16);
    const head = this.queue.addIndirect(table, this.offs, this.lens, this.wr, segs.length);
    if (publish) this.queue.publish();
    return { head, offsets, table };
  }

  // ---- raw access, for hostile drivers (bypasses the PackedDriverQueue) ----

  /** Write ring descriptor `index` (or entry `index` of a table at `tableOff`) with these exact flags. */
  writeDesc(index: number, addr: number, len: number, id: number, flags: number, tableOff = this.descOff): void {
    const d = tableOff + 16 * index;
    const dv = this.space.dv;
    dv.setUint32(d, addr % TWO_32, true);
    dv.setUint32(d + 4, Math.floor(addr / TWO_32) >>> 0, true);
    dv.setUint32(d + 8, len >>> 0, true);
    dv.setUint16(d + 12, id & 0xffff, true);
    Atomics.store(this.space.u16, (d + 14) >> 1, flags & 0xffff);
  }

  /** AVAIL/USED bits of an available descriptor under wrap counter `wrap`. */
  static avail(wrap: number): number {
    return availFlags(wrap);
  }

  descFlags(index: number): number {
    return this.space.dv.getUint16(this.descOff + 16 * index + 14, true);
  }
  descId(index: number): number {
    return this.space.dv.getUint16(this.descOff + 16 * index + 12, true);
  }
  descLen(index: number): number {
    return this.space.dv.getUint32(this.descOff + 16 * index + 8, true);
  }

  /** The driver event suppression area (what the driver asks of the device). */
  setDriverEvent(offWrap: number, flags: number): void {
    this.space.dv.setUint16(this.driverOff + EVENT_OFF_WRAP, offWrap, true);
    this.space.dv.setUint16(this.driverOff + EVENT_FLAGS, flags, true);
  }
  /** The device event suppression area (what the device asks of the driver). */
  get deviceEvent(): { offWrap: number; flags: number } {
    return { offWrap: this.space.dv.getUint16(this.deviceOff + EVENT_OFF_WRAP, true), flags: this.space.dv.getUint16(this.deviceOff + EVENT_FLAGS, true) };
  }
}
