// pier's arena: 4 GiB of reserved address space (PROT_NONE, no memory behind it) with one
// Uint8Array, one DataView and one Uint16Array over all of it, made once. The packet pool and
// every peer's shared memory regions are mapped *into* it (MAP_FIXED), so any copy between a
// guest buffer and a packet buffer is `bytes.copyWithin(dst, src, end)`: a memmove with no
// object created, whatever memory the two sides live in. 4 GiB is the largest typed array V8
// (Node 20) accepts over foreign memory.
import { guardRange, libc } from '../sys/index.ts';
import type { ByteSpace } from './types.ts';

export const ARENA_SIZE = 2 ** 32;
/** Placement granularity: 2 MiB keeps hugetlbfs-backed regions mappable. */
export const ARENA_ALIGN = 2 * 1024 * 1024;

export class Arena implements ByteSpace {
  readonly base: number;
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  readonly u16: Uint16Array;
  /** Whole words, for copies of small frames (see PacketPool.copy). */
  readonly i32: Int32Array;
  /**
   * The SIGBUS guard covers the arena (src/sys/signals.ts): a peer's file that shrinks under a
   * mapping costs a zero page and a counted fault, not the process. False only when the guard
   * could not be installed (another SIGBUS handler) or its range table is full.
   */
  readonly guarded: boolean;
  /** Free ranges [offset, length], sorted by offset, merged on release. */
  private readonly free: Array<[number, number]>;

  constructor() {
    const a = Number(libc.mmap(0, ARENA_SIZE, libc.PROT_NONE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE, -1, 0));
    if (a === 0 || a >= 2 ** 53) throw new libc.SysError('mmap', libc.errno(), 'reserving the 4 GiB arena');
    this.base = a;
    const ab = libc.view(a, ARENA_SIZE);
    this.bytes = new Uint8Array(ab);
    this.dv = new DataView(ab);
    this.u16 = new Uint16Array(ab);
    this.i32 = new Int32Array(ab);
    this.free = [[0, ARENA_SIZE]];
    this.guarded = guardRange(a, ARENA_SIZE);
  }

  /**
   * Map `size` bytes of `fd` from `fileOffset` into the arena; returns the arena offset of
   * the first mapped byte. Throws when the arena has no room (the caller reports it).
   */
  place(fd: number, fileOffset: number, size: number, writable = true): number {
    // The same range of the same file is mapped once: two ports of one DPDK process (or a
    // frontend that reconnects) send the same memory, and keeping the arena small keeps offsets
    // below 2^31, where V8 passes them to copyWithin as small integers (measured: a 76-byte
    // copy costs 55 ns there and 125 ns above, with a heap number allocated per argument).
    const id = libc.fileIdentity(fd);
    const key = id === null ? null : `${id}:${fileOffset}:${size}:${writable ? 'rw' : 'r'}`;
    if (key !== null) {
      const shared = this.byKey.get(key);
      if (shared !== undefined) {
        this.placed.get(shared)!.refs++;
        return shared;
      }
    }
    // mmap needs a page-aligned file offset: map from the page below and point past the slack.
    const slack = fileOffset % 4096;
    const len = Math.ceil((size + slack) / ARENA_ALIGN) * ARENA_ALIGN;
    const i = this.free.findIndex(([, l]) => l >= len);
    if (i < 0) throw new Error(`pier's 4 GiB arena has no room left for ${size} bytes of shared memory`);
    const [off, l] = this.free[i]!;
    const prot = libc.PROT_READ | (writable ? libc.PROT_WRITE : 0);
    const r = Number(libc.mmap(this.base + off, size + slack, prot, libc.MAP_SHARED | libc.MAP_FIXED, fd, fileOffset - slack));
    if (r !== this.base + off) {
      const err = new libc.SysError('mmap', libc.errno(), `${size} bytes at file offset ${fileOffset}`);
      this.reserve(off, len); // mmap may have replaced part of the reservation before failing
      throw err;
    }
    if (l === len) this.free.splice(i, 1);
    else this.free[i] = [off + len, l - len];
    this.placed.set(off + slack, { off, len, refs: 1, key });
    if (key !== null) this.byKey.set(key, off + slack);
    return off + slack;
  }

  /** Unmap what place() returned, giving the address space back to the reservation. */
  release(offset: number): void {
    const p = this.placed.get(offset);
    if (!p || --p.refs > 0) return;
    this.placed.delete(offset);
    if (p.key !== null) this.byKey.delete(p.key);
    const { off, len } = p;
    this.reserve(off, len);
    this.free.push([off, len]);
    this.free.sort((x, y) => x[0] - y[0]);
    for (let j = 0; j + 1 < this.free.length;) {
      const a = this.free[j]!;
      const b = this.free[j + 1]!;
      if (a[0] + a[1] === b[0]) {
        a[1] += b[1];
        this.free.splice(j + 1, 1);
      } else j++;
    }
  }

  /**
   * A fault hit the mapping that holds arena offset `offset` (part of it may now be a zero page):
   * it is never handed to another place() of the same file range; its holders keep it until
   * they release it. Returns whether such a mapping exists.
   */
  forget(offset: number): boolean {
    for (const [start, p] of this.placed) {
      if (offset >= p.off && offset < p.off + p.len) {
        if (p.key !== null && this.byKey.get(p.key) === start) this.byKey.delete(p.key);
        p.key = null;
        return true;
      }
    }
    return false;
  }

  /** Mappings currently placed (for leak checks in tests); a shared mapping counts once. */
  get placedCount(): number {
    return this.placed.size;
  }

  private readonly placed = new Map<number, { off: number; len: number; refs: number; key: string | null }>();
  private readonly byKey = new Map<string, number>();

  private reserve(off: number, len: number): void {
    libc.mmap(this.base + off, len, libc.PROT_NONE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE | libc.MAP_FIXED, -1, 0);
  }
}
