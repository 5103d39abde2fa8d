// Receive coalescing (a small GRO) for decapsulated TCP: consecutive segments of one flow in a
// received burst are appended to the first one's buffer, which leaves pier as one TSO super-frame
// (gso_size = the first segment's payload, checksum partial). A tap port hands it to its container's
// kernel in one write, as a NIC's GRO would; a port that takes no TSO gets it cut again by the
// engine. Only what Linux's tcp_gro_receive would merge is merged: same Ethernet, IP and TCP
// headers apart from lengths, IPv4 ID and checksums; the next sequence number; flags ACK (PSH ends
// a super-frame); equal options (timestamps); every segment the first one's size but the last.
// Each segment's own TCP checksum is verified before it is merged (the super-frame leaves with a
// fresh partial checksum, which its receiver trusts): the outer UDP checksum cannot be relied on,
// since Linux vxlan over IPv4 sends none by default. A segment whose checksum is wrong is not
// merged; it leaves alone, for its receiver to drop. A segment whose checksum its sender left
// partial (NEEDS_CSUM: a sender on this machine whose skb crossed a veth, csum.ts, or one that
// said so with VXLAN remote checksum offload) is merged as it is, when the request names its own
// TCP checksum; one that names another place is not merged, since merging would rewrite it.
import { checksum, fold, sumWords } from './checksum.ts';
import { MIN_GSO_SIZE } from './offload.ts';
import type { PacketPool } from './pool.ts';
import { VNET_HDR } from './pool.ts';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from './vnet.ts';

const ACK = 0x10;
const PSH = 0x08;
/** Largest super-frame built: IP's 64 KiB less room for the headers. */
const MAX_FRAME = 65000;

/**
 * The layout of the TCP segment at b[fo, fo+len): sets l3/l4/hl/v4 in `out` and returns the
 * payload length, or -1 when it is not a plain TCP segment with data (no VLAN, no IP options
 * over IPv4, no IPv6 extension headers, not a fragment).
 */
function parseTcp(b: Uint8Array, fo: number, len: number, out: Int32Array): number {
  if (len < 54) return -1;
  const et = (b[fo + 12]! << 8) | b[fo + 13]!;
  const l3 = 14;
  let l4: number;
  let ipEnd: number;
  if (et === 0x0800) {
    if (b[fo + l3] !== 0x45 || b[fo + l3 + 9] !== 6 || ((b[fo + l3 + 6]! & 0x3f) | b[fo + l3 + 7]!) !== 0) return -1;
    l4 = l3 + 20;
    ipEnd = l3 + ((b[fo + l3 + 2]! << 8) | b[fo + l3 + 3]!);
    out[3] = 1;
  } else if (et === 0x86dd) {
    if (len < 74 || b[fo + l3 + 6] !== 6) return -1;
    l4 = l3 + 40;
    ipEnd = l4 + ((b[fo + l3 + 4]! << 8) | b[fo + l3 + 5]!);
    out[3] = 0;
  } else {
    return -1;
  }
  const doff = (b[fo + l4 + 12]! >> 4) * 4;
  const hl = l4 + doff;
  if (doff < 20 || ipEnd > len || hl > ipEnd) return -1;
  out[0] = l3;
  out[1] = l4;
  out[2] = hl;
  return ipEnd - hl;
}

/** The TCP checksum of the segment at b[fo..] (layout in `lay`, `plen` payload bytes) is complete and right, or left partial by a local sender. */
function checksumOk(b: Uint8Array, fo: number, lay: Int32Array, plen: number): boolean {
  const l3 = lay[0]!;
  const l4 = lay[1]!;
  // The IPv4 header's own checksum first: a merged or re-marked frame leaves with a header
  // checksum pier computed, so a damaged header would otherwise come out looking whole.
  if (lay[3] === 1 && checksum(b, fo + l3, fo + l4) !== 0) return false;
  if ((b[fo - VNET_HDR]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
    // Partial: trusted only as a request for this segment's own TCP checksum (csum_start at the
    // TCP header, csum_offset 16), the only one a merged or re-marked frame can carry.
    const ho = fo - VNET_HDR;
    return (b[ho + 6]! | (b[ho + 7]! << 8)) === l4 && b[ho + 8] === 16 && b[ho + 9] === 0;
  }
  const l4len = lay[2]! - l4 + plen;
  const pseudo = lay[3] === 1 ? sumWords(b, fo + l3 + 12, fo + l3 + 20, 0) : sumWords(b, fo + l3 + 8, fo + l3 + 40, 0);
  return checksum(b, fo + l4, fo + l4 + l4len, pseudo + 6 + l4len) === 0;
}

export class TcpCoalescer {
  /** The super-frame being built (a handle), or -1. */
  private sh = -1;
  private sfo = 0;
  private slen = 0;
  private l3 = 0;
  private l4 = 0;
  private hl = 0;
  private v4 = true;
  private mss = 0;
  private nextSeq = 0;
  private segs = 0;
  private closed = false;
  /** Segments merged into another, and super-frames made. */
  merged = 0;
  superFrames = 0;
  /** Segments not merged because their own TCP (or IPv4 header) checksum was wrong. */
  badChecksum = 0;

  constructor(private readonly pool: PacketPool) {}

  private readonly lay = new Int32Array(4);

  /** Merge packet h (a decapsulated frame) into the open super-frame: true when merged (h released). */
  offer(h: number): boolean {
    if (this.sh < 0 || this.closed) return false;
    const pool = this.pool;
    const b = pool.bytes;
    const fo = pool.frameOffset(h);
    const plen = parseTcp(b, fo, pool.len[h]!, this.lay);
    if (plen <= 0 || plen > this.mss || this.lay[2] !== this.hl || this.lay[1] !== this.l4 || (this.lay[3] === 1) !== this.v4) return false;
    if (this.slen + plen > MAX_FRAME) return false;
    const s = this.sfo;
    const l3 = this.l3;
    const l4 = this.l4;
    const dv = pool.dv;
    // Ethernet header (32 bits at a time: the views are over the same arena, any alignment).
    if (dv.getUint32(s) !== dv.getUint32(fo) || dv.getUint32(s + 4) !== dv.getUint32(fo + 4) ||
      dv.getUint32(s + 8) !== dv.getUint32(fo + 8) || dv.getUint16(s + 12) !== dv.getUint16(fo + 12)) return false;
    if (this.v4) {
      if (b[s + l3 + 1] !== b[fo + l3 + 1] || (b[s + l3 + 6]! & 0xe0) !== (b[fo + l3 + 6]! & 0xe0) || b[s + l3 + 8] !== b[fo + l3 + 8]) return false;
      if (dv.getUint32(s + l3 + 12) !== dv.getUint32(fo + l3 + 12) || dv.getUint32(s + l3 + 16) !== dv.getUint32(fo + l3 + 16)) return false;
    } else {
      if (dv.getUint32(s + l3) !== dv.getUint32(fo + l3) || b[s + l3 + 7] !== b[fo + l3 + 7]) return false;
      for (let i = 8; i < 40; i += 4) if (dv.getUint32(s + l3 + i) !== dv.getUint32(fo + l3 + i)) return false;
    }
    // TCP: ports, ack, data offset equal; flags ACK or ACK|PSH; the next sequence; options equal.
    if (dv.getUint32(s + l4) !== dv.getUint32(fo + l4) || dv.getUint32(s + l4 + 8) !== dv.getUint32(fo + l4 + 8) || b[s + l4 + 12] !== b[fo + l4 + 12]) return false;
    const fl = b[fo + l4 + 13]!;
    if ((fl & ~PSH) !== ACK || b[fo + l4 + 18] !== 0 || b[fo + l4 + 19] !== 0) return false;
    if (dv.getUint32(fo + l4 + 4) !== this.nextSeq) return false;
    // Options: data offset is in 32-bit words, so they are whole words.
    for (let i = l4 + 20; i < this.hl; i += 4) if (dv.getUint32(s + i) !== dv.getUint32(fo + i)) return false;
    if (!checksumOk(b, fo, this.lay, plen)) {
      this.badChecksum++;
      return false;
    }
    // Merge: the payload after the super-frame's, the latest window.
    b.copyWithin(s + this.slen, fo + this.hl, fo + this.hl + plen);
    this.slen += plen;
    b[s + l4 + 14] = b[fo + l4 + 14]!;
    b[s + l4 + 15] = b[fo + l4 + 15]!;
    this.nextSeq = (this.nextSeq + plen) >>> 0;
    this.segs++;
    this.merged++;
    if ((fl & PSH) !== 0) {
      b[s + l4 + 13] = b[s + l4 + 13]! | PSH;
      this.closed = true;
    }
    if (plen < this.mss) this.closed = true;
    pool.release(h);
    return true;
  }

  /**
   * A received packet, in order: merged into the open super-frame (and released), or closing it
   * and put in out[n], where it may start the next one. Returns the new n. The caller closes the
   * last one after the burst; `superFrames` counts those made.
   */
  push(h: number, out: Int32Array, n: number): number {
    const bad = this.badChecksum;
    if (this.offer(h)) return n;
    this.close();
    out[n] = h;
    if (this.badChecksum === bad) this.open(h); // a segment offer() found damaged is not checked (or counted) twice
    return n + 1;
  }

  /** Let packet h (already in the output burst) start a super-frame if it is a TCP data segment. */
  open(h: number): void {
    const pool = this.pool;
    const b = pool.bytes;
    const fo = pool.frameOffset(h);
    const len = pool.len[h]!;
    const plen = parseTcp(b, fo, len, this.lay);
    // Its payload becomes the super-frame's gso_size, which the ingress check refuses under the minimum.
    if (plen < MIN_GSO_SIZE) return;
    const l4 = this.lay[1]!;
    if (b[fo + l4 + 13] !== ACK || this.lay[2]! + plen !== len) return; // PSH alone, or Ethernet padding
    if (!checksumOk(b, fo, this.lay, plen)) {
      this.badChecksum++;
      return;
    }
    this.sh = h;
    this.sfo = fo;
    this.slen = len;
    this.l3 = this.lay[0]!;
    this.l4 = l4;
    this.hl = this.lay[2]!;
    this.v4 = this.lay[3] === 1;
    this.mss = plen;
    this.nextSeq = ((((b[fo + l4 + 4]! << 24) | (b[fo + l4 + 5]! << 16) | (b[fo + l4 + 6]! << 8) | b[fo + l4 + 7]!) >>> 0) + plen) >>> 0;
    this.segs = 1;
    this.closed = false;
  }

  /**
   * Finish the open super-frame, if it grew: lengths, the IPv4 header checksum, a partial TCP
   * checksum and the virtio-net header of a TSO frame. Returns true when one was made.
   */
  close(): boolean {
    const h = this.sh;
    this.sh = -1;
    if (h < 0 || this.segs < 2) return false;
    const pool = this.pool;
    const b = pool.bytes;
    const s = this.sfo;
    const l3 = this.l3;
    const l4 = this.l4;
    const len = this.slen;
    pool.len[h] = len;
    const l4len = len - l4;
    let sum: number;
    if (this.v4) {
      const tot = len - l3;
      b[s + l3 + 2] = tot >> 8;
      b[s + l3 + 3] = tot & 0xff;
      b[s + l3 + 10] = 0;
      b[s + l3 + 11] = 0;
      const c = checksum(b, s + l3, s + l4);
      b[s + l3 + 10] = c >> 8;
      b[s + l3 + 11] = c & 0xff;
      sum = sumWords(b, s + l3 + 12, s + l3 + 20, 0);
    } else {
      b[s + l3 + 4] = l4len >> 8;
      b[s + l3 + 5] = l4len & 0xff;
      sum = sumWords(b, s + l3 + 8, s + l3 + 40, 0);
    }
    const p = fold(sum + 6 + l4len);
    b[s + l4 + 16] = p >> 8;
    b[s + l4 + 17] = p & 0xff;
    const ho = s - VNET_HDR;
    const dv = pool.dv;
    b[ho] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    b[ho + 1] = this.v4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
    dv.setUint16(ho + 2, this.hl, true);
    dv.setUint16(ho + 4, this.mss, true);
    dv.setUint16(ho + 6, l4, true);
    dv.setUint16(ho + 8, 16, true);
    dv.setUint16(ho + 10, 0, true);
    this.superFrames++;
    return true;
  }
}

const layout = new Int32Array(4);

/**
 * A decapsulated TCP frame larger than the tunnel can carry cannot have crossed a wire: a sender's
 * kernel on this machine passed its TSO super-frame through a veth in one piece (a UDP tunnel GSO
 * packet reaches a socket whole). Mark it as the super-frame it is, cut into frames of at most
 * `maxFrame` bytes, with a partial checksum, so a port that takes no TSO gets it cut instead of
 * dropped. Returns false (and leaves it) when it is not a plain TCP segment.
 */
export function markSuperFrame(pool: PacketPool, h: number, maxFrame: number): boolean {
  const b = pool.bytes;
  const fo = pool.frameOffset(h);
  const ho = fo - VNET_HDR;
  const len = pool.len[h]!;
  const plen = parseTcp(b, fo, len, layout);
  const mss = maxFrame - layout[2]!;
  if (mss < MIN_GSO_SIZE || plen <= mss || layout[2]! + plen !== len) return false;
  // Checked before anything is rewritten: a complete TCP checksum is replaced by a partial one
  // below, and a port without TSO gets segments with checksums computed afresh, so a damaged
  // frame would otherwise leave looking whole. Refused, it goes on unchanged for its receiver to drop.
  if (!checksumOk(b, fo, layout, plen)) return false;
  const l3 = layout[0]!;
  const l4 = layout[1]!;
  const v4 = layout[3] === 1;
  if ((b[ho]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0) {
    // A complete checksum: make it partial (the pseudo-header sum), as a TSO frame's is.
    const sum = v4 ? sumWords(b, fo + l3 + 12, fo + l3 + 20, 0) : sumWords(b, fo + l3 + 8, fo + l3 + 40, 0);
    const p = fold(sum + 6 + (len - l4));
    b[fo + l4 + 16] = p >> 8;
    b[fo + l4 + 17] = p & 0xff;
    b[ho] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    pool.dv.setUint16(ho + 6, l4, true);
    pool.dv.setUint16(ho + 8, 16, true);
  }
  b[ho + 1] = v4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
  pool.dv.setUint16(ho + 2, layout[2]!, true);
  pool.dv.setUint16(ho + 4, mss, true);
  return true;
}
