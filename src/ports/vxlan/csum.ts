// Inner checksums left partial by a sender on this machine. A kernel that sends a TCP or UDP packet
// through its own vxlan device with checksum offload leaves the inner checksum for the "NIC" to
// finish (CHECKSUM_PARTIAL: the field holds the pseudo-header sum). A real NIC finishes it; a veth
// never does, and the skb crosses into the next namespace still partial, where the kernel trusts it
// and so does its own vxlan device. pier reads the UDP payload as bytes and cannot see that mark, so
// it looks for it: a TCP/UDP checksum field equal to the folded pseudo-header sum. A complete
// checksum has that value about once in 65536 frames, so a match is verified before it is believed;
// a frame that is partial gets VIRTIO_NET_HDR_F_NEEDS_CSUM (csum_start, csum_offset), and the
// ports downstream treat it as every partial checksum (a tap hands it to its kernel, others get it
// finished by the engine). One comparison per frame otherwise; a corrupted frame is left as it is,
// for its receiver to drop.
import { checksum, fold, sumWords } from '../../dataplane/checksum.ts';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../../dataplane/vnet.ts';

const TCP = 6;
const UDP = 17;

/**
 * Look at the frame of `len` bytes at b[fo..] whose virtio-net header is at b[ho..]: when its
 * TCP/UDP checksum is partial, mark the header NEEDS_CSUM and return true.
 */
export function markPartialChecksum(b: Uint8Array, ho: number, fo: number, len: number): boolean {
  if (len < 14 + 20) return false;
  let l3 = fo + 14;
  let et = (b[fo + 12]! << 8) | b[fo + 13]!;
  if (et === 0x8100) {
    et = (b[fo + 16]! << 8) | b[fo + 17]!;
    l3 += 4;
  }
  const end = fo + len;
  let l4: number;
  let proto: number;
  let l4len: number;
  let sum: number;
  if (et === 0x0800) {
    if (l3 + 20 > end) return false; // a tagged frame of 34-37 bytes: no whole IPv4 header
    const ihl = (b[l3]! & 0x0f) * 4;
    if (ihl < 20 || ((b[l3 + 6]! & 0x3f) | b[l3 + 7]!) !== 0) return false; // fragments keep theirs
    proto = b[l3 + 9]!;
    l4 = l3 + ihl;
    l4len = ((b[l3 + 2]! << 8) | b[l3 + 3]!) - ihl;
    sum = sumWords(b, l3 + 12, l3 + 20, 0);
  } else if (et === 0x86dd) {
    if (l3 + 40 > end) return false;
    proto = b[l3 + 6]!;
    l4 = l3 + 40;
    l4len = (b[l3 + 4]! << 8) | b[l3 + 5]!;
    sum = sumWords(b, l3 + 8, l3 + 40, 0);
  } else {
    return false;
  }
  const off = proto === TCP ? 16 : proto === UDP ? 6 : -1;
  if (off < 0 || l4len < off + 2 || l4 + l4len > end) return false;
  sum += proto + l4len;
  const field = (b[l4 + off]! << 8) | b[l4 + off + 1]!;
  const p = fold(sum);
  if (field !== p) return false;
  // Equal to the pseudo-header sum: partial, unless it happens to be the complete checksum.
  if (checksum(b, l4, l4 + l4len, sum) === 0) return false;
  b[ho] = b[ho]! | VIRTIO_NET_HDR_F_NEEDS_CSUM;
  const start = l4 - fo;
  b[ho + 6] = start & 0xff;
  b[ho + 7] = start >> 8;
  b[ho + 8] = off;
  b[ho + 9] = 0;
  return true;
}
