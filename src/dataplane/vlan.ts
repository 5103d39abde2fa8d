// 802.1Q VLANs (docs/design/uplinks.md): a port's VLAN membership, and the tag pushed on the way
// out of a trunk and popped on the way in. The VLAN of a packet between the two travels beside it
// (a Uint16Array indexed by handle, the engine's `vlanOf`), never in the frame.
//
// A tag is 4 bytes after the two MAC addresses: TPID 0x8100, then PCP(3) DEI(1) VID(12). The
// frame starts at a fixed place in its buffer (after the virtio-net header), so push and pop move
// the bytes after the MAC addresses by 4. A virtio-net header that asks for a partial checksum
// (NEEDS_CSUM) has its csum_start moved with them, and a GSO super-frame's hdr_len too, so an
// offload request stays valid across push and pop (segmentTcp reads one tag itself).
import { BUF_SIZE, VNET_HDR, type PacketPool } from './pool.ts';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM } from './vnet.ts';

export const TPID_8021Q = 0x8100;
export const TPID_8021AD = 0x88a8;
/** The pre-standard QinQ TPID some switches still send: never forwarded on a VLAN-aware bridge. */
export const TPID_QINQ_OLD = 0x9100;
export const VLAN_HLEN = 4;
/** VIDs a port may name (0 is "no VLAN", 4095 reserved). */
export const VID_MIN = 1;
export const VID_MAX = 4094;
export const VLAN_IDS = 4096;

/** A port's VLAN mode: in VLAN 0 untagged (no tag=/trunks=), access (tag=N), trunk (trunks=...). */
export const VLAN_NONE = 0;
export const VLAN_ACCESS = 1;
export const VLAN_TRUNK = 2;

/** What the control plane sends for a port: no key is VLAN 0, untagged. */
export interface VlanConfig {
  tag?: number | undefined;
  trunks?: number[] | undefined;
}

/** The dataplane's form of a VlanConfig: mode, the VLAN of untagged frames, and membership per VID. */
export interface PortVlan {
  vlanMode: number;
  vlanUntagged: number;
  readonly vlanMember: Uint8Array;
}

/**
 * Set `p`'s VLAN fields from `cfg`. An access port is a member of its tag only; a trunk of its
 * listed VLANs and of VLAN 0 (untagged frames on a trunk are in no VLAN, as the design says); a
 * port with neither of VLAN 0 only. Throws on a VID outside 1..4094 (the daemon has checked).
 */
export function applyVlan(p: PortVlan, cfg: VlanConfig | undefined): void {
  const tag = cfg?.tag;
  const trunks = cfg?.trunks;
  if (tag !== undefined && trunks !== undefined) throw new Error('a port is an access port (tag) or a trunk (trunks), not both');
  for (const v of [...(tag === undefined ? [] : [tag]), ...(trunks ?? [])]) {
    if (!Number.isInteger(v) || v < VID_MIN || v > VID_MAX) throw new Error(`VLAN ${v} is not in ${VID_MIN}..${VID_MAX}`);
  }
  const m = p.vlanMember;
  m.fill(0);
  if (tag !== undefined) {
    p.vlanMode = VLAN_ACCESS;
    p.vlanUntagged = tag;
    m[tag] = 1;
  } else if (trunks !== undefined) {
    p.vlanMode = VLAN_TRUNK;
    p.vlanUntagged = 0;
    m[0] = 1;
    for (const v of trunks) m[v] = 1;
  } else {
    p.vlanMode = VLAN_NONE;
    p.vlanUntagged = 0;
    m[0] = 1;
  }
}

/** Destination and source MAC addresses: a tag goes right after them. */
const ETH_ADDRS = 12;

/** pushTag's answer for a frame a tag would make longer than a pool buffer. */
export const PUSH_TOO_BIG = -2;

/** Move a virtio-net header's frame offsets by `delta` bytes (a tag pushed: +4, popped: -4). */
function shiftOffsets(b: Uint8Array, ho: number, delta: number): void {
  if ((b[ho]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
    const cs = (b[ho + 6]! | (b[ho + 7]! << 8)) + delta;
    b[ho + 6] = cs & 0xff;
    b[ho + 7] = cs >>> 8;
  }
  const hl = b[ho + 2]! | (b[ho + 3]! << 8);
  if (hl !== 0) {
    const n = hl + delta;
    b[ho + 2] = n & 0xff;
    b[ho + 3] = n >>> 8;
  }
}

/**
 * Insert an 802.1Q tag with VID `vid` (PCP 0) after the MAC addresses of packet h. In place when
 * h is a pool buffer nobody else holds; otherwise into a new buffer (h's reference released).
 * Returns the tagged packet's handle, or -1 (h released) when the pool is empty, or
 * PUSH_TOO_BIG (h released) when the tagged frame would not fit a buffer.
 */
export function pushTag(pool: PacketPool, h: number, vid: number): number {
  // A peer may send a frame that fills its buffer to the last byte: 4 more would overwrite the
  // next buffer's header.
  if (pool.len[h]! > BUF_SIZE - VNET_HDR - VLAN_HLEN) {
    pool.release(h);
    return PUSH_TOO_BIG;
  }
  const t = moveAfterMacs(pool, h, VLAN_HLEN);
  if (t < 0) return t;
  const fo = pool.frameOffset(t);
  const b = pool.bytes;
  b[fo + 12] = TPID_8021Q >>> 8;
  b[fo + 13] = TPID_8021Q & 0xff;
  b[fo + 14] = vid >>> 8;
  b[fo + 15] = vid & 0xff;
  return t;
}

/**
 * Remove the 4-byte tag after the MAC addresses of packet h (the caller has read it; the frame
 * is at least 18 bytes). In place when h is a pool buffer nobody else holds, otherwise copied
 * (h's reference released). Returns the untagged packet's handle, or -1 (h released) when the
 * pool is empty.
 */
export function popTag(pool: PacketPool, h: number): number {
  return moveAfterMacs(pool, h, -VLAN_HLEN);
}

/**
 * Open (`delta` > 0) or close (< 0) a gap of |delta| bytes after the MAC addresses of packet h,
 * with its length and virtio-net offsets moved to match: in place when h is a pool buffer nobody
 * else holds, otherwise into a new buffer (h's reference released). Returns the handle, or -1
 * (h released) when the pool is empty. The gap's bytes are the caller's to fill.
 */
function moveAfterMacs(pool: PacketPool, h: number, delta: number): number {
  const b = pool.bytes;
  const len = pool.len[h]!;
  const to = ETH_ADDRS + (delta > 0 ? delta : 0);
  const from = ETH_ADDRS + (delta < 0 ? -delta : 0);
  let t = h;
  if (h >= pool.count || pool.refs[h] !== 1) {
    t = pool.alloc();
    if (t < 0) {
      pool.release(h);
      return -1;
    }
    const ho = pool.hdrOffset(h);
    const tho = pool.hdrOffset(t);
    b.copyWithin(tho, ho, ho + VNET_HDR + ETH_ADDRS); // virtio-net header and MAC addresses
    b.copyWithin(tho + VNET_HDR + to, ho + VNET_HDR + from, ho + VNET_HDR + len);
    pool.release(h);
  } else {
    const fo = pool.frameOffset(h);
    b.copyWithin(fo + to, fo + from, fo + len);
  }
  pool.len[t] = len + delta;
  shiftOffsets(b, pool.hdrOffset(t), delta);
  return t;
}

/** `[1,2,3,10,12,13]` -> `1-3,10,12-13`: how show prints a trunk list. */
export function vlanRanges(list: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i < list.length;) {
    let j = i;
    while (j + 1 < list.length && list[j + 1] === list[j]! + 1) j++;
    out.push(j === i ? String(list[i]) : `${list[i]}-${list[j]}`);
    i = j + 1;
  }
  return out.join(',');
}
