// Packet capture, the dataplane's half (docs/design/observability.md, section 1): copies of the
// packets a port receives or sends, written into a byte ring that the main thread drains into a
// pcapng stream. The ring's bytes are a memfd the main thread made and the engine placed in its
// arena, so a copy is one copyWithin from the packet's buffer, with no object made per packet.
// The producer never waits: a record that does not fit is counted as lost for its interface and
// forwarding goes on. A port without a capture pays one length test per burst.
import type { PacketPool } from './pool.ts';
import { VNET_HDR } from './pool.ts';

export const CAPTURE_IN = 1;
export const CAPTURE_OUT = 2;

/** Ports one capture may name (pcapng interfaces, one per port). */
export const CAPTURE_MAX_PORTS = 64;
/** The largest snapshot length (pcapng's usual maximum; larger than any pool buffer). */
export const CAPTURE_MAX_SNAPLEN = 262144;

// A record, 8-byte aligned, little-endian: the record's length, the interface (the port's place
// in the capture's list), the direction, the time (CLOCK_REALTIME as seconds and nanoseconds),
// the frame's length and the bytes kept, then the 12-byte virtio-net header and the frame.
export const REC_LEN = 0;
export const REC_IFACE = 4;
export const REC_DIR = 6;
export const REC_SEC = 8;
export const REC_NSEC = 12;
export const REC_ORIG_LEN = 16;
export const REC_CAP_LEN = 20;
export const REC_VNET = 24;
export const REC_DATA = REC_VNET + VNET_HDR;
/** A length with this bit set: the rest of the ring up to its end is padding. */
export const REC_PAD = 0x80000000;

// The control block, a SharedArrayBuffer: the producer's and the consumer's byte positions
// (free-running, modulo 2^32), then per interface the packets seen and those lost.
export const CTL_HEAD = 0;
export const CTL_TAIL = 1;
const STATS_AT = 8;
export const CTL_BYTES = STATS_AT + 16 * CAPTURE_MAX_PORTS;

export function captureControl(): SharedArrayBuffer {
  return new SharedArrayBuffer(CTL_BYTES);
}

/** Per interface: [2i] packets the capture saw, [2i + 1] those it lost (the ring was full). */
export function captureStats(ctl: SharedArrayBuffer): Float64Array {
  return new Float64Array(ctl, STATS_AT, 2 * CAPTURE_MAX_PORTS);
}

export class CaptureTap {
  private readonly ctl: Int32Array;
  private readonly stats: Float64Array;
  private readonly bytes: Uint8Array;
  private readonly dv: DataView;
  private readonly mask: number;

  constructor(
    readonly id: number,
    ctl: SharedArrayBuffer,
    /** Arena offset of the ring's first byte, and its size (a power of two). */
    readonly offset: number,
    readonly size: number,
    readonly snaplen: number,
    pool: PacketPool,
  ) {
    if (size < 65536 || (size & (size - 1)) !== 0) throw new Error(`capture ring of ${size} bytes: a power of two of at least 64 KiB`);
    this.ctl = new Int32Array(ctl, 0, 2);
    this.stats = captureStats(ctl);
    this.bytes = pool.bytes;
    this.dv = pool.dv;
    this.mask = size - 1;
  }

  /** Copy packets q[0..n) of interface `iface`, seen in direction `dir`, into the ring. */
  write(pool: PacketPool, q: Int32Array, n: number, iface: number, dir: number): void {
    const ctl = this.ctl;
    const dv = this.dv;
    const base = this.offset;
    let head = Atomics.load(ctl, CTL_HEAD) >>> 0;
    const tail = Atomics.load(ctl, CTL_TAIL) >>> 0;
    // One clock reading per burst; performance.now() is monotonic, timeOrigin ties it to the epoch.
    const t = performance.timeOrigin + performance.now();
    const sec = Math.floor(t / 1000);
    const nsec = Math.min(999_999_999, Math.floor((t - sec * 1000) * 1e6));
    let lost = 0;
    for (let i = 0; i < n; i++) {
      const h = q[i]!;
      const len = pool.len[h]!;
      const cap = len < this.snaplen ? len : this.snaplen;
      const rec = (REC_DATA + cap + 7) & ~7;
      let pos = head & this.mask;
      const room = this.size - pos;
      const need = rec <= room ? rec : room + rec;
      if (need > this.size - ((head - tail) >>> 0)) {
        lost++;
        continue;
      }
      if (rec > room) {
        dv.setUint32(base + pos, REC_PAD, true);
        head = (head + room) >>> 0;
        pos = 0;
      }
      const o = base + pos;
      dv.setUint32(o + REC_LEN, rec, true);
      dv.setUint16(o + REC_IFACE, iface, true);
      dv.setUint8(o + REC_DIR, dir);
      dv.setUint32(o + REC_SEC, sec, true);
      dv.setUint32(o + REC_NSEC, nsec, true);
      dv.setUint32(o + REC_ORIG_LEN, len, true);
      dv.setUint32(o + REC_CAP_LEN, cap, true);
      // The virtio-net header sits right before the frame in every buffer: one copy takes both.
      const ho = pool.hdrOffset(h);
      this.bytes.copyWithin(o + REC_VNET, ho, ho + VNET_HDR + cap);
      head = (head + rec) >>> 0;
    }
    // Published once per burst, after the bytes (Atomics.store orders the plain stores before it).
    Atomics.store(ctl, CTL_HEAD, head | 0);
    this.stats[2 * iface] = this.stats[2 * iface]! + n;
    if (lost > 0) this.stats[2 * iface + 1] = this.stats[2 * iface + 1]! + lost;
  }
}

/** A port's membership in one capture: the tap and the port's interface number in it. */
export interface CaptureBinding {
  readonly tap: CaptureTap;
  readonly iface: number;
}

/** A record as the reader hands it over: where its fields and bytes are in the ring. */
export interface CaptureRecord {
  /** Ring offset of the record (REC_* fields are relative to it). */
  at: number;
  iface: number;
  dir: number;
  sec: number;
  nsec: number;
  origLen: number;
  capLen: number;
}

/**
 * The consumer of a capture ring (the main thread): reads records between its position and the
 * producer's, then gives the space back. Checks every length it reads, so a ring that is not
 * what it should be ends the reading instead of a loop or a read past the ring.
 */
export class CaptureReader {
  private readonly ctl: Int32Array;
  private readonly dv: DataView;
  private readonly mask: number;
  /** Set when a record's length was impossible; nothing more is read. */
  corrupt = false;
  private readonly rec: CaptureRecord = { at: 0, iface: 0, dir: 0, sec: 0, nsec: 0, origLen: 0, capLen: 0 };

  constructor(ctl: SharedArrayBuffer, readonly ring: Uint8Array) {
    this.ctl = new Int32Array(ctl, 0, 2);
    this.dv = new DataView(ring.buffer, ring.byteOffset, ring.byteLength);
    this.mask = ring.byteLength - 1;
  }

  /** Hand each waiting record to `take` until it returns false; returns how many it took. */
  read(take: (r: CaptureRecord) => boolean): number {
    const size = this.ring.byteLength;
    const dv = this.dv;
    const head = Atomics.load(this.ctl, CTL_HEAD) >>> 0;
    let tail = Atomics.load(this.ctl, CTL_TAIL) >>> 0;
    let n = 0;
    while (tail !== head && !this.corrupt) {
      const pos = tail & this.mask;
      const len = dv.getUint32(pos + REC_LEN, true);
      if (len & REC_PAD) {
        tail = (tail + size - pos) >>> 0;
        continue;
      }
      const cap = len >= REC_DATA ? dv.getUint32(pos + REC_CAP_LEN, true) : 0;
      if (len < REC_DATA || len > size - pos || (len & 7) !== 0 || REC_DATA + cap > len) {
        this.corrupt = true;
        break;
      }
      const r = this.rec;
      r.at = pos;
      r.iface = dv.getUint16(pos + REC_IFACE, true);
      r.dir = dv.getUint8(pos + REC_DIR);
      r.sec = dv.getUint32(pos + REC_SEC, true);
      r.nsec = dv.getUint32(pos + REC_NSEC, true);
      r.origLen = dv.getUint32(pos + REC_ORIG_LEN, true);
      r.capLen = cap;
      if (!take(r)) break;
      tail = (tail + len) >>> 0;
      n++;
    }
    Atomics.store(this.ctl, CTL_TAIL, tail | 0);
    return n;
  }
}
