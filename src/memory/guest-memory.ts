// A peer's memory as vhost-user describes it (SET_MEM_TABLE): regions of guest-physical address
// space, each backed by an fd the peer passed us, mapped into pier's arena. Translation of a
// guest-physical address (descriptors) or of a frontend virtual address (ring addresses) to an
// arena offset, with a one-entry cache because consecutive descriptors are nearly always in the
// same region.
import { libc } from '../sys/index.ts';
import type { Arena } from './arena.ts';
import type { AddressSpace } from './types.ts';

export const MAX_REGIONS = 8;

export interface RegionSpec {
  gpa: number;
  size: number;
  uva: number;
  mmapOffset: number;
  fd: number;
}

export class GuestMemory implements AddressSpace {
  /** Regions in use; 0 until a memory table is set. One object per port for its whole life, so
   * the queues hold it directly and a new table is a swap of its arrays, not a new object. */
  n = 0;
  private gpa = new Float64Array(MAX_REGIONS);
  private uva = new Float64Array(MAX_REGIONS);
  private size = new Float64Array(MAX_REGIONS);
  private off = new Float64Array(MAX_REGIONS);
  private last = 0;

  constructor(private readonly arena: Arena) {}

  /**
   * Map every region into the arena and make them the current table, releasing the previous
   * one. All or nothing: on failure the regions mapped so far are released and the old table
   * stays. The fds are the caller's to close (a mapping keeps the memory alive without them).
   */
  replace(regions: RegionSpec[]): void {
    const offsets: number[] = [];
    try {
      for (const r of regions) offsets.push(this.arena.place(r.fd, r.mmapOffset, r.size));
    } catch (e) {
      for (const o of offsets) this.arena.release(o);
      throw e;
    }
    this.unmap();
    regions.forEach((r, i) => {
      this.gpa[i] = r.gpa;
      this.uva[i] = r.uva;
      this.size[i] = r.size;
      this.off[i] = offsets[i]!;
    });
    this.n = regions.length;
    this.last = 0;
  }

  /** Validate a region list before mapping: sizes, overflow, overlap. Returns a problem or undefined. */
  static check(regions: RegionSpec[]): string | undefined {
    if (regions.length === 0 || regions.length > MAX_REGIONS) return `${regions.length} regions (1..${MAX_REGIONS} allowed)`;
    for (const r of regions) {
      if (!(r.size > 0) || r.size >= 2 ** 40) return `region size ${r.size} out of range`;
      for (const v of [r.gpa, r.uva, r.mmapOffset]) if (!Number.isSafeInteger(v) || v < 0 || v + r.size >= 2 ** 53) return 'region address out of range';
    }
    const byGpa = [...regions].sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < byGpa.length; i++) if (byGpa[i - 1]!.gpa + byGpa[i - 1]!.size > byGpa[i]!.gpa) return 'regions overlap in guest-physical space';
    return undefined;
  }

  translate(addr: number, len: number): number {
    let i = this.last;
    if (!(i < this.n && addr >= this.gpa[i]! && addr + len <= this.gpa[i]! + this.size[i]!)) {
      for (i = 0; i < this.n; i++) if (addr >= this.gpa[i]! && addr + len <= this.gpa[i]! + this.size[i]!) break;
      if (i === this.n) return -1;
      this.last = i;
    }
    return this.off[i]! + (addr - this.gpa[i]!);
  }

  /** The same for a frontend virtual address (vhost-user ring addresses). */
  translateUva(addr: number, len: number): number {
    for (let i = 0; i < this.n; i++) {
      if (addr >= this.uva[i]! && addr + len <= this.uva[i]! + this.size[i]!) return this.off[i]! + (addr - this.uva[i]!);
    }
    return -1;
  }

  unmap(): void {
    for (let i = 0; i < this.n; i++) this.arena.release(this.off[i]!);
    this.n = 0;
  }
}

/** Close fds that arrived with a message, whatever happens to it. */
export function closeAll(fds: readonly number[]): void {
  for (const fd of fds) if (fd >= 0) libc.close(fd);
}
