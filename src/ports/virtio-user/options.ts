// virtio-user ports (pier is the virtio driver): `path` is /dev/vhost-net (a kernel tap in the
// container, configured like a tap port) or a vhost-user socket (pier connects, or listens
// with server=true).
import { z } from 'zod';
import { ifname, intIn, ipList, mac, mtu, netns, onOff, sockPath } from '../fields.ts';

export const virtioUserOptions = z.strictObject({
  type: z.literal('virtio-user'),
  path: sockPath,
  server: onOff.optional(),
  'queue-size': intIn(64, 32768, 'ring size', true).optional(),
  queues: intIn(1, 16, 'queue pairs').optional(),
  /** Ask a vhost-user backend for the packed virtqueue (VIRTIO_F_RING_PACKED); vhost-net has none. */
  packed: onOff.optional(),
  // for path=/dev/vhost-net: the kernel's tap, in the container
  netns: netns.optional(),
  ip: ipList.optional(),
  mac: mac.optional(),
  mtu: mtu.optional(),
  ifname: ifname.optional(),
});
export type VirtioUserOptions = z.output<typeof virtioUserOptions>;


/** What the dataplane half is built from. */
export interface VirtioUserSpec {
  /** vhost-user: pier speaks the protocol on path; vhost-kernel: ioctls on vhostFds, taps tapFds. */
  backend: 'vhost-user' | 'vhost-kernel';
  path: string;
  server: boolean;
  listenFd: number;
  queueSize: number;
  /** Queue pairs (rx 2k, tx 2k+1). */
  queuePairs: number;
  /** Ask for VIRTIO_F_RING_PACKED (vhost-user only). */
  packed: boolean;
  /** vhost-kernel: one /dev/vhost-net fd per queue pair, and the tap queue fd each moves packets for. */
  vhostFds: number[];
  tapFds: number[];
}
