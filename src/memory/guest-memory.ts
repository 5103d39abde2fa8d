// A peer's memory as vhost-user describes it (SET_MEM_TABLE): regions of guest-physical address
// space, each backed by an fd the peer passed us, mapped into pier's arena. Translation of a
// guest-physical address (descriptors) or of a frontend virtual address (ring addresses) to an
// arena offset, with a one-entry cache because consecutive descriptors are nearly always in the
// same region.
//
// The peer is not trusted (docs/design/peer-memory.md). Before anything is mapped, every region
// is checked against its file: a regular file (never a device or a socket), mmap_offset page
// aligned, no overflow, no overlap (guest-physical or frontend-virtual), and mmap_offset + size
// within the file. The file is sealed against shrinking first, where the kernel allows it, so the
// size checked is the size for good; memory that cannot be sealed is covered by the arena's
// SIGBUS guard instead (or refused in strict mode).
import { libc } from '../sys/index.ts';
import { ARENA_ALIGN, type Arena } from './arena.ts';
import type { AddressSpace } from './types.ts';

export const MAX_REGIONS = 8;
const PAGE = 4096;

export interface RegionSpec {
  gpa: number;
  size: number;
  uva: number;
  mmapOffset: number;
  fd: number;
}

/**
 * 'sealed': the file already had F_SEAL_SHRINK (QEMU's memory-backend-memfd, pier's own memfds);
 * 'sealed by pier': pier added it (a memfd created with MFD_ALLOW_SEALING and left unsealed);
 * 'unsealed': the kernel refuses (F_SEAL_SEAL set: DPDK's memfds, hugetlbfs and tmpfs files; or
 * a file system without seals): the file can shrink under pier, the SIGBUS guard covers it.
 */
export type SealState = 'sealed' | 'sealed by pier' | 'unsealed';

export interface MemoryPolicy {
  /** Strict mode: refuse every region whose file is not sealed against shrinking. */
  requireSealed?: boolean;
  /**
   * Whether the SIGBUS guard covers the mapping (GuestMemory.replace uses its arena's; the
   * static check assumes it unless told). Unsealed memory without the guard is refused.
   */
  guarded?: boolean;
}

/** What `pier show PORT` says about one region. */
export interface RegionInfo {
  index: number;
  gpa: number;
  uva: number;
  size: number;
  mmapOffset: number;
  /** Arena offset of the region's first byte. */
  arenaOffset: number;
  /** What the fd was (/proc/self/fd/N before it was closed): "/memfd:dpdk-mem (deleted)", a hugetlbfs path, ... */
  file: string;
  /** File size when checked, and its page size (st_blksize: the huge page size on hugetlbfs). */
  fileSize: number;
  pageSize: number;
  seal: SealState;
  /** Why it is unsealed. */
  sealDetail?: string;
  /** A shrink under pier costs a zero page and a port reset, not the daemon (SIGBUS guard). */
  guarded: boolean;
}

interface Checked {
  file: string;
  fileSize: number;
  pageSize: number;
  seal: SealState;
  sealDetail?: string;
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
  private info: RegionInfo[] = [];

  constructor(private readonly arena: Arena, private readonly policy: MemoryPolicy = {}) {}

  /**
   * Check every region against its file (GuestMemory.check, with this arena's SIGBUS guard),
   * map them into the arena and make them the current table, releasing the previous one. All or
   * nothing: a refused table, or a failure while mapping, throws and leaves the old table in
   * place. The fds are the caller's to close (a mapping keeps the memory alive without them).
   */
  replace(regions: RegionSpec[], policy: MemoryPolicy = this.policy): void {
    const checked: Checked[] = [];
    const problem = GuestMemory.checkAll(regions, { ...policy, guarded: this.arena.guarded }, checked);
    if (problem) throw new Error(problem);
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
    this.info = regions.map((r, i) => {
      const c = checked[i]!;
      return {
        index: i, gpa: r.gpa, uva: r.uva, size: r.size, mmapOffset: r.mmapOffset, arenaOffset: offsets[i]!, ...c,
        guarded: this.arena.guarded && c.pageSize <= ARENA_ALIGN,
      };
    });
    this.n = regions.length;
    this.last = 0;
  }

  /**
   * Validate a region list before mapping: count, sizes, alignment, overflow, overlap; then each
   * fd: a regular file, sealed against shrinking where possible (before its size is read), and
   * large enough for mmap_offset + size. Returns the problem (naming the region and the
   * numbers) or undefined. Sealing is the only side effect, and it is idempotent.
   */
  static check(regions: RegionSpec[], policy: MemoryPolicy = {}): string | undefined {
    return GuestMemory.checkAll(regions, policy, []);
  }

  private static checkAll(regions: RegionSpec[], policy: MemoryPolicy, out: Checked[]): string | undefined {
    if (regions.length === 0 || regions.length > MAX_REGIONS) return `${regions.length} regions (1..${MAX_REGIONS} allowed)`;
    for (const [i, r] of regions.entries()) {
      if (!Number.isSafeInteger(r.size) || r.size <= 0 || r.size >= 2 ** 40) return `region ${i}: size ${r.size} out of range (1 byte..1 TiB)`;
      for (const [name, v] of [['guest address', r.gpa], ['frontend address', r.uva], ['mmap_offset', r.mmapOffset]] as const) {
        if (!Number.isSafeInteger(v) || v < 0) return `region ${i}: ${name} ${v} is not below 2^53`;
        if (v + r.size >= 2 ** 53) return `region ${i}: ${name} ${hex(v)} + size ${hex(r.size)} overflows 2^53`;
      }
      if (r.mmapOffset % PAGE !== 0) return `region ${i}: mmap_offset ${hex(r.mmapOffset)} is not a multiple of the page size (4096)`;
    }
    const overlap = (key: 'gpa' | 'uva', what: string): string | undefined => {
      const order = regions.map((r, i) => ({ r, i })).sort((a, b) => a.r[key] - b.r[key]);
      for (let k = 1; k < order.length; k++) {
        const a = order[k - 1]!;
        const b = order[k]!;
        if (a.r[key] + a.r.size > b.r[key]) {
          return `regions ${a.i} and ${b.i} overlap in ${what} space ([${hex(a.r[key])}, ${hex(a.r[key] + a.r.size)}) and [${hex(b.r[key])}, ${hex(b.r[key] + b.r.size)}))`;
        }
      }
      return undefined;
    };
    const o = overlap('gpa', 'guest-physical') ?? overlap('uva', 'frontend-virtual');
    if (o) return o;
    for (const [i, r] of regions.entries()) {
      const file = libc.fdTarget(r.fd) ?? `fd ${r.fd}`;
      const st = libc.fstat(r.fd);
      if (st === null) return `region ${i}: fstat of fd ${r.fd} failed: ${new libc.SysError('fstat', libc.errno()).code}`;
      if ((st.mode & libc.S_IFMT) !== libc.S_IFREG) return `region ${i}: fd ${r.fd} is ${fileKind(st.mode, file)}, not a regular file: pier maps only memory files`;
      // Seal first: once F_SEAL_SHRINK is on, the size read below holds for good.
      const seal = sealAgainstShrinking(r.fd);
      const now = libc.fstat(r.fd);
      if (now === null) return `region ${i}: fstat of fd ${r.fd} failed: ${new libc.SysError('fstat', libc.errno()).code}`;
      if (r.mmapOffset + r.size > now.size) {
        return `region ${i}: mmap_offset ${hex(r.mmapOffset)} + size ${hex(r.size)} = ${hex(r.mmapOffset + r.size)} is past the end of its file (${hex(now.size)} bytes, ${file})`;
      }
      if (seal.state === 'unsealed') {
        if (policy.requireSealed) {
          return `region ${i} (${file}) cannot be sealed against shrinking (${seal.detail}) and strict mode requires sealed memory: ` +
            'give pier a memfd it can seal (QEMU: -object memory-backend-memfd,...,seal=on, the default); ' +
            "DPDK's memory (hugepages or --no-huge) can never be sealed: serve DPDK peers with strict mode off, where the SIGBUS guard covers it";
        }
        const guarded = (policy.guarded ?? true) && now.blksize <= ARENA_ALIGN;
        if (!guarded) {
          return `region ${i} (${file}) cannot be sealed against shrinking (${seal.detail}) and the SIGBUS guard does not cover it ` +
            `(${now.blksize > ARENA_ALIGN ? `${now.blksize}-byte pages` : 'the guard is not installed'}): a shrink would kill the daemon`;
        }
      }
      out.push({ file, fileSize: now.size, pageSize: now.blksize, seal: seal.state, ...(seal.detail ? { sealDetail: seal.detail } : {}) });
    }
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

  /** Whether [arenaOffset, arenaOffset + len) lies in this table's mappings (a memory fault there is this peer's). */
  containsOffset(arenaOffset: number, len = 1): boolean {
    for (let i = 0; i < this.n; i++) {
      if (arenaOffset >= this.off[i]! && arenaOffset + len <= this.off[i]! + this.size[i]!) return true;
    }
    return false;
  }

  /** Per region: addresses, file, seal state, guard (for `pier show PORT`). Empty without a table. */
  regions(): RegionInfo[] {
    return this.info.slice(0, this.n).map((r) => ({ ...r }));
  }

  unmap(): void {
    for (let i = 0; i < this.n; i++) this.arena.release(this.off[i]!);
    this.n = 0;
    this.info = [];
  }
}

/** Files pier sealed (dev:ino), so a later look tells 'sealed by pier' from 'sealed'. */
const sealedByPier = new Set<string>();

/**
 * Make sure `fd`'s file cannot shrink: F_SEAL_SHRINK already there, or added now. Where the
 * kernel refuses, say why. Growing stays allowed (it cannot hurt pier) and no other seal is added.
 */
export function sealAgainstShrinking(fd: number): { state: SealState; detail?: string } {
  const st = libc.fstat(fd);
  const key = st ? `${st.dev}:${st.ino}` : '';
  const seals = libc.fcntlInt(fd, libc.F_GET_SEALS);
  if (seals < 0) {
    const e = libc.errno();
    return { state: 'unsealed', detail: e === libc.EINVAL ? 'its file system has no seals' : `F_GET_SEALS failed: ${new libc.SysError('fcntl', e).code}` };
  }
  if ((seals & libc.F_SEAL_SHRINK) !== 0) return { state: sealedByPier.has(key) ? 'sealed by pier' : 'sealed' };
  if (libc.fcntlInt(fd, libc.F_ADD_SEALS, libc.F_SEAL_SHRINK) === 0) {
    if (sealedByPier.size >= 4096) sealedByPier.clear(); // a label only: bounded, never wrong about safety
    sealedByPier.add(key);
    return { state: 'sealed by pier' };
  }
  const e = libc.errno();
  return {
    state: 'unsealed',
    detail: e === libc.EPERM ? 'F_SEAL_SEAL is set: the file was made without MFD_ALLOW_SEALING, or is a hugetlbfs/tmpfs file' : `F_ADD_SEALS failed: ${new libc.SysError('fcntl', e).code}`,
  };
}

function fileKind(mode: number, target: string): string {
  const kinds: Record<number, string> = { 0: 'an anonymous inode', 0o140000: 'a socket', 0o120000: 'a symlink', 0o060000: 'a block device', 0o020000: 'a character device', 0o040000: 'a directory', 0o010000: 'a pipe' };
  return `${kinds[mode & libc.S_IFMT] ?? `of type 0${(mode & libc.S_IFMT).toString(8)}`} (${target})`;
}

function hex(v: number): string {
  return `0x${v.toString(16)}`;
}

/** Close fds that arrived with a message, whatever happens to it. */
export function closeAll(fds: readonly number[]): void {
  for (const fd of fds) if (fd >= 0) libc.close(fd);
}
