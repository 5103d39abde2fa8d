// The virtio-net header of a frame entering the switch, checked once, before anything trusts it.
// Whoever is behind a port writes it: a vhost-user peer directly, a container through its kernel
// (an AF_PACKET socket with PACKET_VNET_HDR), a kernel behind a tap or an uplink. Its fields
// travel with the packet to every output: a GSO type is segmented for, or handed to another
// guest or kernel as is; a partial checksum is completed where csum_start and csum_offset say.
// So a header asking for what pier cannot carry, or what does not fit its own frame, stops here
// (rx_dropped_bad_offload: a GSO type other than TCPv4, TCPv6 and UDP_L4, a gso_size under
// MIN_GSO_SIZE, a checksum field past the frame), and flags no driver may set (DATA_VALID, RSC_INFO: a receiving guest
// would skip its checksum check) are cleared. Port security then checks that a secured port's
// request names the frame's own TCP or UDP checksum (src/dataplane/port-guard.ts).
import { C } from './counters.ts';
import { MIN_GSO_SIZE } from './offload.ts';
import type { PacketPool } from './pool.ts';
import {
  VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP_L4,
} from './vnet.ts';

/**
 * Check the headers of batch[0..n) in place: keep what may go on (compacted, in order), release
 * and count the rest in counters. A lent packet (peer memory, read-only) with flags to clear is
 * copied into the pool first. Returns the new count.
 */
/**
 * The GSO types any port may bring in, a bit per type. UDP_L4: a UDP_SEGMENT train that crossed a
 * veth whole, as an AF_PACKET uplink's kernel hands it over; a tap or uplink output gives it back
 * to the kernel, other outputs drop it.
 */
export const INGRESS_GSO = (1 << VIRTIO_NET_HDR_GSO_TCPV4) | (1 << VIRTIO_NET_HDR_GSO_TCPV6) | (1 << VIRTIO_NET_HDR_GSO_UDP_L4);

export function checkHeaders(pool: PacketPool, batch: Int32Array, n: number, counters: Float64Array): number {
  const b = pool.bytes;
  let kept = 0;
  for (let i = 0; i < n; i++) {
    let h = batch[i]!;
    let ho = pool.hdrOffset(h);
    let flags = b[ho]!;
    if ((flags | b[ho + 1]!) === 0 || pool.deferredJudge(h) !== undefined) {
      // A deferred frame (a secured port's, lent) is checked on the copy made of it (deferred.ts):
      // its sender can still rewrite what this would read.
      batch[kept++] = h;
      continue;
    }
    if ((flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && pool.isExternal(h)) {
      // Flags to clear in a lent packet (the peer's memory, read-only): checked and cleared on a
      // copy, whose header is what goes on, not the one just read.
      h = pool.materialize(h);
      if (h < 0) {
        counters[C.rx_dropped_no_buffer]!++;
        continue;
      }
      ho = pool.hdrOffset(h);
      flags = b[ho]!;
    }
    if (!headerFits(b, ho, pool.len[h]!, INGRESS_GSO, true)) {
      counters[C.rx_dropped_bad_offload]!++;
      pool.release(h);
      continue;
    }
    if ((flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) b[ho] = flags & VIRTIO_NET_HDR_F_NEEDS_CSUM;
    batch[kept++] = h;
  }
  return kept;
}

/**
 * A header copied for an output peer (at b[at..], in pier's scratch or the peer's own buffer, so
 * the sender can no longer change it) asks only for what that peer takes and what fits the
 * frame of `flen` bytes: a GSO type in `gsoTypes` (a bit per type) with a gso_size of at least
 * MIN_GSO_SIZE, NEEDS_CSUM only when it `acceptsCsum`, with its field inside the frame (the
 * caller clears the other flags where it may write). checkHeaders() saw the header at ingress, but a lent packet's
 * header is still in the sending peer's memory, which a second vCPU of it can rewrite until the
 * output copies it: a vhost-user port checks its copy with this before it gives the buffer back.
 */
export function headerFits(b: Uint8Array, at: number, flen: number, gsoTypes: number, acceptsCsum: boolean): boolean {
  const flags = b[at]!;
  if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 &&
    (!acceptsCsum || (b[at + 6]! | (b[at + 7]! << 8)) + (b[at + 8]! | (b[at + 9]! << 8)) + 2 > flen)) return false;
  const type = b[at + 1]!;
  const gso = type & ~VIRTIO_NET_HDR_GSO_ECN;
  return type === 0 || (gso !== 0 && gso < 32 && (gsoTypes & (1 << gso)) !== 0 && (b[at + 4]! | (b[at + 5]! << 8)) >= MIN_GSO_SIZE);
}
