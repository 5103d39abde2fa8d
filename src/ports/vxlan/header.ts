// The VXLAN header (RFC 7348, 5): 8 bytes in front of the inner Ethernet frame, in the UDP payload.
//   flags (8 bits: R R R R I R R R) | reserved (24) | VNI (24) | reserved (8)
// The I flag must be set for a valid VNI; the other bits are reserved, sent as zero and ignored on
// receipt, as the RFC says. Port numbers, overhead and the source-port mapping live here too.
// Remote checksum offload (draft-herbert-vxlan-rco, Linux's remcsumtx/remcsumrx) uses two of the
// reserved fields: flag C (bit 21 of the first word) says the inner checksum is partial, and the
// VNI word's low byte says where: checksum start / 2 (7 bits, from the inner Ethernet header) and
// bit 7 for a UDP checksum field (start + 6) rather than TCP's (start + 16).

export const VXLAN_HLEN = 8;
export const VXLAN_FLAG_I = 0x08;
export const VXLAN_PORT = 4789;
/** Flag C, in the header's second byte. */
const VXLAN_FLAG_RCO = 0x20;
const RCO_UDP = 0x80;
/** The largest checksum start RCO can say (0x7f << 1). */
const RCO_START_MAX = 254;
const TCP_CSUM_OFF = 16;
const UDP_CSUM_OFF = 6;
export const VNI_MAX = 0xffffff;
export const ETH_HLEN = 14;
/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14): underlay MTU - 50 = inner MTU. */
export const OVERHEAD_V4 = 50;
/** Outer IPv6 (40) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
export const OVERHEAD_V6 = 70;
/** The outer UDP source port range (RFC 7348 5: the dynamic/private range, for ECMP entropy). */
export const SRC_PORT_MIN = 49152;
export const SRC_PORT_MAX = 65535;

/** Write the 8-byte header for `vni` at b[off..]. */
export function encodeVxlan(b: Uint8Array, off: number, vni: number): void {
  b[off] = VXLAN_FLAG_I;
  b[off + 1] = 0;
  b[off + 2] = 0;
  b[off + 3] = 0;
  b[off + 4] = (vni >>> 16) & 0xff;
  b[off + 5] = (vni >>> 8) & 0xff;
  b[off + 6] = vni & 0xff;
  b[off + 7] = 0;
}

/**
 * The RCO byte for a partial checksum at `start` (from the inner Ethernet header), field at
 * start + `offset`; -1 when RCO cannot say it (odd start, past 254, not TCP's or UDP's field).
 */
export function rcoByte(start: number, offset: number): number {
  if ((start & 1) !== 0 || start > RCO_START_MAX || (offset !== TCP_CSUM_OFF && offset !== UDP_CSUM_OFF)) return -1;
  return (start >> 1) | (offset === UDP_CSUM_OFF ? RCO_UDP : 0);
}

/** Write the header for `vni` with flag C and RCO byte `rco` (rcoByte()) at b[off..]. */
export function encodeVxlanRco(b: Uint8Array, off: number, vni: number, rco: number): void {
  encodeVxlan(b, off, vni);
  b[off + 1] = VXLAN_FLAG_RCO;
  b[off + 7] = rco;
}

/** The checksum start an RCO header at b[off..] says (-1: flag C is clear). */
export function rcoStart(b: Uint8Array, off: number): number {
  return (b[off + 1]! & VXLAN_FLAG_RCO) === 0 ? -1 : (b[off + 7]! & 0x7f) << 1;
}

/** The checksum field's offset from the start that an RCO header at b[off..] says. */
export function rcoOffset(b: Uint8Array, off: number): number {
  return (b[off + 7]! & RCO_UDP) !== 0 ? UDP_CSUM_OFF : TCP_CSUM_OFF;
}

export const DECAP_OK = 0;
/** Shorter than the header plus an Ethernet header. */
export const DECAP_SHORT = 1;
/** The I flag is clear: no valid VNI. */
export const DECAP_NO_I = 2;
/** A VNI that is not the port's. */
export const DECAP_WRONG_VNI = 3;

/**
 * Check a received UDP payload of `len` bytes at b[off..] for the port's `vni`: DECAP_OK when the
 * inner frame (at off + 8, len - 8 bytes) may go to the bridge, else why not.
 */
export function decodeVxlan(b: Uint8Array, off: number, len: number, vni: number): number {
  if (len < VXLAN_HLEN + ETH_HLEN) return DECAP_SHORT;
  if ((b[off]! & VXLAN_FLAG_I) === 0) return DECAP_NO_I;
  if (((b[off + 4]! << 16) | (b[off + 5]! << 8) | b[off + 6]!) !== vni) return DECAP_WRONG_VNI;
  return DECAP_OK;
}

/** The VNI of a header (whatever its flags say). */
export function vniOf(b: Uint8Array, off: number): number {
  return (b[off + 4]! << 16) | (b[off + 5]! << 8) | b[off + 6]!;
}

/** A 32-bit flow hash mapped into SRC_PORT_MIN..SRC_PORT_MAX. */
export function sourcePort(hash: number): number {
  return SRC_PORT_MIN + ((hash >>> 0) % (SRC_PORT_MAX - SRC_PORT_MIN + 1));
}
