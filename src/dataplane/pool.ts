// The packet pool: one memfd mapped into the arena, cut into fixed-size buffers, named by integer handles.
// A buffer holds the 12-byte virtio_net_hdr_v1 followed by the frame, so a tap read() or write()
// moves header and frame in one syscall and the header travels with the packet to every port.
import { Arena } from '../memory/arena.ts';
import { memfd } from '../sys/index.ts';

export const VNET_HDR = 12;
/** Room for a 64 KiB TSO super-frame plus Ethernet, VLAN and the virtio-net header. */
export const BUF_SIZE = 65536 + 1024;

/**
 * Copies up to this many bytes between 4-byte aligned offsets go word by word in copy(): below it
 * the builtin's fixed cost is most of the copy (bench/guard.ts, "copy only").
 */
export const COPY_WORDS_MAX = 256;

/** Most packets that may live in a peer's memory at once (one burst is BURST = 32). */
export const EXTERNAL_MAX = 256;

/** PacketPool.settledCopy() of a deferred packet whose copy was refused. */
export const REFUSED_COPY = -2;

/**
 * Who lends the pool a buffer in its own shared memory (a vhost-user port: the frame stays in the
 * driver's transmit buffer). `returnBuffer(tag)` runs when the last reference is released.
 */
export interface BufferLender {
  returnBuffer(tag: number): void;
}

/**
 * Port security's judgment of a lent frame, made where it is copied out of the lender's memory
 * (PacketPool.defer; src/dataplane/deferred.ts): `judge(pool, h)` checks pool packet h, a copy of
 * the frame, by every rule and counts a refusal on the sending port (`counters`);
 * `passesAt(w, i, flen)` is the fast verdict on a header and frame at 32-bit word i of the arena
 * (false says only "not by the fast path"); copyJudged() the same verdict on a copy it makes.
 */
export interface LentJudge {
  readonly counters: Float64Array | null;
  judge(pool: PacketPool, h: number): boolean;
  passesAt(w: Int32Array, i: number, flen: number): boolean;
  /** Copy header and frame (`bytes`, both offsets 4-byte aligned, JUDGED_COPY_MIN..JUDGED_COPY_MAX) and give passesAt()'s verdict on what it wrote. */
  copyJudged(b: Uint8Array, w: Int32Array, dst: number, src: number, bytes: number): boolean;
}

export class PacketPool {
  readonly count: number;
  readonly arena: Arena;
  /** The memfd behind the pool, for peers that map it (virtio-user). */
  readonly fd: number;
  /** Arena offset of buffer 0. */
  readonly offset: number;
  /** Address of buffer 0, for syscalls. */
  readonly base: number;
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  /** Frame length (without the virtio-net header) of each packet, pool and external handles. */
  readonly len: Uint32Array;
  /** Outstanding references (flooding hands one packet to several ports). */
  readonly refs: Uint32Array;
  /**
   * 16 bytes of scratch in the arena (after the buffers) for a port that must build a header
   * next to a packet it may not write: one thread, used and done within one call.
   */
  readonly scratch: number;
  private readonly free: Int32Array;
  private top: number;
  // External handles count .. count+EXTERNAL_MAX-1: a header offset in the arena, the lender
  // and its tag, a free stack.
  private readonly extOff = new Float64Array(EXTERNAL_MAX);
  private readonly extTag = new Int32Array(EXTERNAL_MAX);
  private readonly extLender: Array<BufferLender | undefined> = new Array(EXTERNAL_MAX).fill(undefined);
  private readonly extFree = new Int32Array(EXTERNAL_MAX);
  private extTop = EXTERNAL_MAX;
  /**
   * Per external handle of a deferred frame (defer()): its judge until the last release, and
   * what copying it out of the lender's memory came to (deferred.ts): the judged pool copy (one
   * reference held here, so a flood's other outputs take the same copy), -1 before the first,
   * or REFUSED_COPY.
   */
  private readonly extJudge: Array<LentJudge | undefined> = new Array(EXTERNAL_MAX).fill(undefined);
  private readonly extCopy = new Int32Array(EXTERNAL_MAX).fill(-1);
  allocFailures = 0;

  constructor(count: number, arena: Arena = new Arena()) {
    this.count = count;
    this.arena = arena;
    this.fd = memfd('pier-packets', count * BUF_SIZE + 4096);
    this.offset = arena.place(this.fd, 0, count * BUF_SIZE + 4096);
    this.base = arena.base + this.offset;
    this.scratch = this.offset + count * BUF_SIZE;
    // ownFrameOffset() relies on it: every pool buffer lies below 2^31 in the arena.
    if (this.scratch + 4096 > 2 ** 31) throw new Error(`packet pool: ${count} buffers do not fit below 2 GiB of the arena; use a smaller --pool`);
    this.bytes = arena.bytes;
    this.dv = arena.dv;
    this.len = new Uint32Array(count + EXTERNAL_MAX);
    this.refs = new Uint32Array(count + EXTERNAL_MAX);
    this.free = new Int32Array(count);
    for (let i = 0; i < count; i++) this.free[i] = count - 1 - i;
    this.top = count;
    for (let i = 0; i < EXTERNAL_MAX; i++) this.extFree[i] = EXTERNAL_MAX - 1 - i;
  }

  /**
   * A handle for a packet that stays where it is: header at arena offset `hdrOff`, frame of
   * `len` bytes right after it, lent by `lender` until the last release (then
   * lender.returnBuffer(tag)). -1 when every external handle is taken (the caller copies).
   * Such a packet is read-only: whoever must change it takes a copy (materialize()).
   */
  lend(hdrOff: number, len: number, lender: BufferLender, tag: number): number {
    if (this.extTop === 0) return -1;
    const e = this.extFree[--this.extTop]!;
    this.extOff[e] = hdrOff;
    this.extTag[e] = tag;
    this.extLender[e] = lender;
    const h = this.count + e;
    this.refs[h] = 1;
    this.len[h] = len;
    return h;
  }

  isExternal(h: number): boolean {
    return h >= this.count;
  }

  /**
   * Lent packet h came from a secured port and is not judged yet: only a copy out of the
   * lender's memory may be judged, since the lender can rewrite the frame until then
   * (deferred.ts). An output that copies it into its own peer's buffer asks deferredJudge().
   */
  defer(h: number, judge: LentJudge): void {
    this.extJudge[h - this.count] = judge;
  }

  /** The judge of a deferred packet (defer()), or undefined: pool packets and others have none. */
  deferredJudge(h: number): LentJudge | undefined {
    return h < this.count ? undefined : this.extJudge[h - this.count];
  }

  /** What the copy of deferred packet h came to: its judged pool copy, -1 (none made yet) or REFUSED_COPY. */
  settledCopy(h: number): number {
    return this.extCopy[h - this.count]!;
  }

  /** Record what the copy of deferred packet h came to; a pool copy is held (one reference) until h is released. */
  settle(h: number, m: number): void {
    this.extCopy[h - this.count] = m;
    if (m >= 0) this.refs[m]!++;
  }

  /**
   * A pool copy of packet h, which keeps h's other references; the caller's reference to h is
   * released. -1 (and h released) when the pool is empty. Not for a deferred packet: its copy is
   * judged (deferred.ts).
   */
  materialize(h: number): number {
    const m = this.alloc();
    if (m >= 0) {
      this.copy(this.hdrOffset(m), this.hdrOffset(h), VNET_HDR + this.len[h]!);
      this.len[m] = this.len[h]!;
    }
    this.release(h);
    return m;
  }

  /**
   * Copy `len` bytes of the arena from offset `src` to `dst` (ranges that do not overlap). A short
   * copy between 4-byte aligned offsets is a loop of word moves, which V8 compiles inline; a
   * longer or unaligned one the copyWithin builtin (a memmove).
   */
  copy(dst: number, src: number, len: number): void {
    if (len > COPY_WORDS_MAX || ((dst | src) & 3) !== 0) {
      this.bytes.copyWithin(dst, src, src + len);
      return;
    }
    const w = this.arena.i32;
    const d = dst >>> 2; // offsets lie below 2^32: >>> keeps them exact
    const s = src >>> 2;
    // Four words a step: the loop's own cost is most of a short copy's (measured: 19 words in
    // 12 ns unrolled, 20-25 ns one word a step, 20-27 ns by copyWithin).
    const quads = len >>> 4;
    let k = 0;
    for (let q = 0; q < quads; q++, k += 4) {
      w[d + k] = w[s + k]!;
      w[d + k + 1] = w[s + k + 1]!;
      w[d + k + 2] = w[s + k + 2]!;
      w[d + k + 3] = w[s + k + 3]!;
    }
    const words = len >>> 2;
    for (; k < words; k++) w[d + k] = w[s + k]!;
    const b = this.bytes;
    for (let i = words << 2; i < len; i++) b[dst + i] = b[src + i]!;
  }

  /** A handle, or -1 when the pool is empty (the caller counts a drop). */
  alloc(): number {
    if (this.top === 0) {
      this.allocFailures++;
      return -1;
    }
    const h = this.free[--this.top]!;
    this.refs[h] = 1;
    this.len[h] = 0;
    return h;
  }

  /** Drop one reference; the buffer returns to the pool with the last one. */
  release(h: number): void {
    if (--this.refs[h]! !== 0) return;
    if (h < this.count) {
      this.free[this.top++] = h;
      return;
    }
    const e = h - this.count;
    const lender = this.extLender[e]!;
    this.extLender[e] = undefined;
    this.extFree[this.extTop++] = e;
    if (this.extJudge[e] !== undefined) {
      this.extJudge[e] = undefined;
      const m = this.extCopy[e]!;
      this.extCopy[e] = -1;
      if (m >= 0) this.release(m);
    }
    lender.returnBuffer(this.extTag[e]!);
  }

  /** External handles outstanding (for checks: none may outlive the burst that made them). */
  get lent(): number {
    return EXTERNAL_MAX - this.extTop;
  }

  available(): number {
    return this.top;
  }

  /** Offset of the virtio-net header of packet h in `bytes`. */
  hdrOffset(h: number): number {
    return h < this.count ? this.offset + h * BUF_SIZE : this.extOff[h - this.count]!;
  }

  /** Offset of the Ethernet frame of packet h in `bytes`. */
  frameOffset(h: number): number {
    return this.hdrOffset(h) + VNET_HDR;
  }

  /**
   * frameOffset() of a pool handle (h < count, never a lent one), as a 32-bit integer: V8's
   * optimized code then indexes the arena with integer arithmetic instead of doubles, which the
   * mixed result of frameOffset() (a lent packet may lie above 2^31) forces on every read
   * (measured: port security's check of a 64-byte frame, 36 against 25 ns; bench/guard.ts).
   */
  ownFrameOffset(h: number): number {
    return (this.offset + h * BUF_SIZE + VNET_HDR) | 0;
  }

  /** Address of the virtio-net header of packet h, for read()/write(). */
  hdrAddr(h: number): number {
    return this.arena.base + this.hdrOffset(h);
  }

  /** Handle of the packet whose header is at arena offset `off` (driver-side rings), or -1. */
  handleAt(off: number): number {
    const rel = off - this.offset;
    if (rel < 0 || rel % BUF_SIZE !== 0 || rel / BUF_SIZE >= this.count) return -1;
    return rel / BUF_SIZE;
  }
}
