// An afpacket port's options: the device (`dev=`) whose traffic the port carries, the namespace it
// lives in (`netns=`, default pier's own), and whether super-frames and partial checksums go to
// it as they are (`offloads=on`, the default) or are segmented and checksummed by pier first.
import { z } from 'zod';
import { ifname, netns, onOff } from '../fields.ts';

export const afpacketOptions = z.strictObject({
  type: z.literal('afpacket'),
  dev: ifname,
  netns: netns.optional(),
  offloads: onOff.optional(),
});
export type AfPacketOptions = z.output<typeof afpacketOptions>;

/** One ring as the socket was given it (struct tpacket_req3). */
export interface RingSpec {
  blockSize: number;
  blockNr: number;
  frameSize: number;
  frameNr: number;
}

/** What the dataplane half is built from: the socket and its mapped rings, made by the control half. */
export interface AfPacketSpec {
  fd: number;
  dev: string;
  ifindex: number;
  /** Address of the mapping: rx ring (if any), then tx ring (if any). Owned by the control half. */
  addr: number;
  length: number;
  /** The TPACKET_V3 rx ring; undefined: frames are read with recvmmsg (rxmsg.ts). */
  rx: RingSpec | undefined;
  /** The TPACKET_V3 tx ring; undefined: frames are sent with sendmmsg (txmsg.ts). */
  tx: RingSpec | undefined;
  /** The kernel lacks PACKET_IGNORE_OUTGOING: skip frames whose sll_pkttype is PACKET_OUTGOING. */
  filterOutgoing: boolean;
  offloads: boolean;
  /** Ring positions (ring.ts POS_*), shared so a rebuilt dataplane half goes on where the last one stopped. */
  positions: Int32Array;
}
