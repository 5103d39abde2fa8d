// The VXLAN header (RFC 7348, 5): 8 bytes in front of the inner Ethernet frame, in the UDP payload.
//   flags (8 bits: R R R R I R R R) | reserved (24) | VNI (24) | reserved (8)
// The I flag must be set for a valid VNI; the other bits are reserved, sent as zero and ignored on
// receipt, as the RFC says. Port numbers, overhead and the source-port mapping live here too.

export const VXLAN_HLEN = 8;
export const VXLAN_FLAG_I = 0x08;
export const VXLAN_PORT = 4789;
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
