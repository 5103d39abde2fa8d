// Software fallbacks for offloads a port does not accept: completing a partial checksum
// (VIRTIO_NET_HDR_F_NEEDS_CSUM) and TCP segmentation of a GSO super-frame (RFC 9293 sequence
// numbers, IPv4 ID increment, flags FIN/PSH on the last segment and CWR on the first only).
import { checksum, fold, sumWords } from './checksum.ts';
import { C } from './counters.ts';
import { PacketPool } from './pool.ts';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
} from './vnet.ts';

export const SEG_OK = 0;
export const SEG_BAD = -1; // the super-frame does not parse as what its header says
export const SEG_NOBUF = -2; // the pool ran dry
/** Most segments a super-frame may have: a tun device's gso_max_segs. */
export const SEG_MAX = 65535;
/** Segments produced per call; a larger super-frame is cut in several calls (see `first`). */
export const SEG_BURST = 256;
/**
 * The smallest gso_size pier takes or segments for: Linux's smallest TCP send MSS (48) less the
 * 12 bytes of the timestamp option, which a sender's kernel subtracts after that floor (a peer
 * advertising an MSS near 48 gets segments of 36). A 64 KiB super-frame is then at most 1821
 * segments; a sender's gso_size of 1 would make one frame 65535 of them, and the dataplane
 * thread every other port's hostage while it cuts them.
 */
export const MIN_GSO_SIZE = 36;

/**
 * Fill in the checksum a sender left partial: ones'-complement of the sum from csum_start to the
 * end of the frame (the field already holds the pseudo-header sum), stored at csum_start +
 * csum_offset. Returns false when those offsets do not fit inside the frame.
 */
export function completeChecksum(pool: PacketPool, h: number): boolean {
  const b = pool.bytes;
  const ho = pool.hdrOffset(h);
  const fo = ho + 12;
  const len = pool.len[h]!;
  const start = b[ho + 6]! | (b[ho + 7]! << 8);
  const off = b[ho + 8]! | (b[ho + 9]! << 8);
  if (start + off + 2 > len || off > 0xffff) return false;
  const at = fo + start + off;
  const c = checksum(b, fo + start, fo + len) || 0xffff;
  // The field held the pseudo-header sum, included above; the result replaces it.
  b[at] = c >>> 8;
  b[at + 1] = c & 0xff;
  b[ho] = b[ho]! & ~VIRTIO_NET_HDR_F_NEEDS_CSUM;
  return true;
}

/**
 * Finish packet h's partial checksum for a port that cannot take it, on a packet the caller may
 * write: h itself, or a pool copy when h is lent (its sender's memory is read-only) or shared (a
 * flood's other outputs may still read the partial checksum; h's reference is then released).
 * Returns the handle that goes on; -1 when it cannot, counted in `counters` and released.
 */
export function finishChecksum(pool: PacketPool, h: number, counters: Float64Array): number {
  if ((pool.isExternal(h) || pool.refs[h]! > 1) && (h = pool.materialize(h)) < 0) {
    counters[C.tx_dropped_no_buffer]!++;
    return -1;
  }
  if (!completeChecksum(pool, h)) {
    counters[C.tx_dropped_bad_gso]!++;
    pool.release(h);
    return -1;
  }
  counters[C.tx_csum_sw]!++;
  return h;
}

/**
 * A TCP super-frame parsed once for segmenting, and its segments' headers written one by one into
 * any buffer: the pool's (segmentTcp) or a port's own, whose segments then go out as headers and
 * a slice of the super-frame's payload, with no copy of it (vxlan). Every offset comes from the
 * parse, which checks the frame is what its virtio-net header says.
 */
export class TcpSegments {
  /** Frame offset in the arena, length, L3 and L4 offsets, headers' length, MSS, segment count. */
  fo = 0;
  len = 0;
  l3 = 0;
  l4 = 0;
  hl = 0;
  mss = 0;
  count = 0;
  v4 = false;
  private doff = 0;
  private seq0 = 0;
  private flags0 = 0;
  private id0 = 0;
  /** The pseudo-header's address words, the same for every segment. */
  private addrSum = 0;
  /** The IPv4 header's words but its length, ID and checksum: each segment's checksum is this plus its own two. */
  private ipSum = 0;

  /** Parse super-frame h: SEG_OK, or SEG_BAD when it is not what its header says. */
  parse(pool: PacketPool, h: number): number {
    const b = pool.bytes;
    const dv = pool.dv;
    const ho = pool.hdrOffset(h);
    const fo = ho + 12;
    const len = pool.len[h]!;
    const gso = b[ho + 1]! & ~VIRTIO_NET_HDR_GSO_ECN;
    const mss = dv.getUint16(ho + 4, true);
    if (mss < MIN_GSO_SIZE || len < 14) return SEG_BAD;
    let l3 = 12;
    let etype = dv.getUint16(fo + l3);
    if (etype === 0x8100 || etype === 0x88a8) {
      l3 += 4;
      etype = dv.getUint16(fo + l3);
    }
    l3 += 2;
    let l4: number;
    const v4 = gso === VIRTIO_NET_HDR_GSO_TCPV4;
    if (v4) {
      if (etype !== 0x0800 || l3 + 20 > len) return SEG_BAD;
      const ihl = (b[fo + l3]! & 0x0f) * 4;
      if (ihl < 20 || b[fo + l3 + 9] !== 6) return SEG_BAD;
      l4 = l3 + ihl;
    } else if (gso === VIRTIO_NET_HDR_GSO_TCPV6) {
      if (etype !== 0x86dd || l3 + 40 > len || b[fo + l3 + 6] !== 6) return SEG_BAD;
      l4 = l3 + 40;
    } else {
      return SEG_BAD;
    }
    if (l4 + 20 > len) return SEG_BAD;
    const doff = (b[fo + l4 + 12]! >> 4) * 4;
    const hl = l4 + doff;
    if (doff < 20 || hl > len) return SEG_BAD;
    const count = Math.max(1, Math.ceil((len - hl) / mss));
    if (count > SEG_MAX) return SEG_BAD;
    this.fo = fo;
    this.len = len;
    this.l3 = l3;
    this.l4 = l4;
    this.hl = hl;
    this.doff = doff;
    this.mss = mss;
    this.count = count;
    this.v4 = v4;
    this.seq0 = dv.getUint32(fo + l4 + 4);
    this.flags0 = b[fo + l4 + 13]!;
    this.id0 = v4 ? dv.getUint16(fo + l3 + 4) : 0;
    this.addrSum = v4 ? sumWords(b, fo + l3 + 12, fo + l3 + 20, 0) : sumWords(b, fo + l3 + 8, fo + l3 + 40, 0);
    // (A plain sum of the header's at most 30 words, so the three can be taken out again.)
    this.ipSum = v4 ? sumWords(b, fo + l3, fo + l4, 0) - dv.getUint16(fo + l3 + 2) - dv.getUint16(fo + l3 + 4) - dv.getUint16(fo + l3 + 10) : 0;
    return SEG_OK;
  }

  /** Segment i's payload: it starts at b[fo + payloadAt(i)] and is payloadLen(i) bytes long. */
  payloadAt(i: number): number {
    return this.hl + i * this.mss;
  }

  payloadLen(i: number): number {
    const at = this.hl + i * this.mss;
    return this.len - at < this.mss ? this.len - at : this.mss;
  }

  /**
   * Write segment i's headers (hl bytes) at d[at..], d's view `dv`: the super-frame's headers
   * (read from `src`, the pool's bytes; or, with `copied`, already there: another segment's, which
   * the caller copied) with this segment's lengths, IPv4 ID and header checksum, sequence number
   * and flags. Its TCP checksum is left partial (the pseudo-header sum) when `partial`; else it is
   * computed over these headers and the payload in `src`, where it stays.
   */
  header(src: Uint8Array, d: Uint8Array, dv: DataView, at: number, i: number, partial: boolean, copied = false): void {
    const l3 = this.l3;
    const l4 = this.l4;
    const hl = this.hl;
    const doff = this.doff;
    const pLen = this.payloadLen(i);
    const fo = this.fo;
    if (copied) {
      // Every field below is written afresh.
    } else if (d === src) {
      d.copyWithin(at, fo, fo + hl);
    } else {
      for (let k = 0; k < hl; k++) d[at + k] = src[fo + k]!; // at most 146 bytes; no subarray to allocate
    }
    if (this.v4) {
      const tot = l4 - l3 + doff + pLen;
      const id = (this.id0 + i) & 0xffff;
      dv.setUint16(at + l3 + 2, tot);
      dv.setUint16(at + l3 + 4, id);
      dv.setUint16(at + l3 + 10, ~fold(this.ipSum + tot + id) & 0xffff);
    } else {
      dv.setUint16(at + l3 + 4, doff + pLen);
    }
    dv.setUint32(at + l4 + 4, (this.seq0 + i * this.mss) >>> 0);
    let fl = this.flags0;
    if (i !== this.count - 1) fl &= ~0x09; // FIN, PSH only on the last segment
    if (i !== 0) fl &= ~0x80; // CWR only on the first
    d[at + l4 + 13] = fl;
    const pseudo = this.addrSum + 6 + doff + pLen;
    if (partial) {
      dv.setUint16(at + l4 + 16, fold(pseudo));
    } else {
      // The TCP header's words, then the payload's where it lies (doff is a multiple of 4, so
      // the two sums join as one).
      dv.setUint16(at + l4 + 16, 0);
      const p = this.fo + this.payloadAt(i);
      dv.setUint16(at + l4 + 16, checksum(src, p, p + pLen, sumWords(d, at + l4, at + hl, pseudo)) || 0xffff);
    }
  }
}

const segs = new TcpSegments();

/**
 * Cut TCP super-frame h into segments of at most gso_size payload bytes, each with complete
 * checksums and a zero virtio-net header; with `partial`, for a port that takes partial checksums
 * but no TSO, each TCP checksum is left partial instead (the pseudo-header sum, NEEDS_CSUM with
 * its start and offset in the segment's header): the payload is then never summed. Produces
 * segments first .. first+out.length-1 (as many as exist) into out[0..n) and returns n: 0 once
 * `first` is past the last segment, so a caller loops `first += n` until n < out.length, and the
 * pool never needs more than out.length free buffers at once (a 64 KiB frame at MSS 48 has 1366
 * segments). Returns SEG_BAD when the frame is not what its header says, SEG_NOBUF when the pool
 * cannot hold this chunk; then nothing is allocated. Does not release h.
 */
export function segmentTcp(pool: PacketPool, h: number, out: Int32Array, first = 0, partial = false): number {
  if (segs.parse(pool, h) !== SEG_OK) return SEG_BAD;
  const b = pool.bytes;
  const dv = pool.dv;
  const last = Math.min(segs.count, first + out.length);
  if (first >= last) return 0;
  if (pool.available() < last - first) return SEG_NOBUF;
  const { fo, hl, l4 } = segs;
  for (let i = first; i < last; i++) {
    const s = pool.alloc();
    out[i - first] = s;
    const so = pool.hdrOffset(s);
    const sf = so + 12;
    const pStart = fo + segs.payloadAt(i);
    const pLen = segs.payloadLen(i);
    b.fill(0, so, so + 12);
    b.copyWithin(sf + hl, pStart, pStart + pLen);
    pool.len[s] = hl + pLen;
    segs.header(b, b, dv, sf, i, partial);
    if (partial) {
      b[so] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      dv.setUint16(so + 6, l4, true);
      dv.setUint16(so + 8, 16, true);
    }
  }
  return last - first;
}
