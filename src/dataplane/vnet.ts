// struct virtio_net_hdr_v1 (virtio 1.2, 5.1.6): the per-packet offload metadata.
//   u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size; le16 csum_start; le16 csum_offset;
//   le16 num_buffers
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

export interface VnetHdr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  numBuffers: number;
}

export function readVnetHdr(dv: DataView, off: number): VnetHdr {
  return {
    flags: dv.getUint8(off),
    gsoType: dv.getUint8(off + 1),
    hdrLen: dv.getUint16(off + 2, true),
    gsoSize: dv.getUint16(off + 4, true),
    csumStart: dv.getUint16(off + 6, true),
    csumOffset: dv.getUint16(off + 8, true),
    numBuffers: dv.getUint16(off + 10, true),
  };
}

export function writeVnetHdr(dv: DataView, off: number, h: VnetHdr): void {
  dv.setUint8(off, h.flags);
  dv.setUint8(off + 1, h.gsoType);
  dv.setUint16(off + 2, h.hdrLen, true);
  dv.setUint16(off + 4, h.gsoSize, true);
  dv.setUint16(off + 6, h.csumStart, true);
  dv.setUint16(off + 8, h.csumOffset, true);
  dv.setUint16(off + 10, h.numBuffers, true);
}

// Hot-path accessors: no object per packet.
export function vnetFlags(bytes: Uint8Array, off: number): number {
  return bytes[off]!;
}
export function vnetGsoType(bytes: Uint8Array, off: number): number {
  return bytes[off + 1]! & ~VIRTIO_NET_HDR_GSO_ECN;
}
export function clearVnetHdr(bytes: Uint8Array, off: number): void {
  bytes.fill(0, off, off + 12);
}
