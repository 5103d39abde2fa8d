// vhost-user ports (pier is the virtio-net device): `vhost-user` listens on `path`,
// `vhost-user-client` connects to a frontend that listens there.
import { z } from 'zod';
import { intIn, mac, onOff, sockPath } from '../fields.ts';

export const vhostUserOptions = z.strictObject({
  type: z.enum(['vhost-user', 'vhost-user-client']),
  path: sockPath,
  queues: intIn(1, 16, 'queue pairs').optional(),
  mtu: intIn(68, 65521, 'MTU').optional(),
  'queue-size': intIn(64, 32768, 'largest ring the peer may use', true).optional(),
  'busy-poll': onOff.optional(),
  /** Refuse peer memory that cannot be sealed against shrinking (docs/design/peer-memory.md). */
  'strict-memory': onOff.optional(),
  /**
   * Offer the packed virtqueue (VIRTIO_F_RING_PACKED). Default off: pier's device side moves
   * fewer packets per second on packed rings than on split ones (bench/results/vhost.md).
   */
  packed: onOff.optional(),
  /** The MAC the guest or application sends from: its identity for port-security=on (pier cannot learn it from a peer it does not configure). */
  mac: mac.optional(),
});
export type VhostUserOptions = z.output<typeof vhostUserOptions>;


/** What the dataplane half is built from. */
export interface VhostUserSpec {
  path: string;
  /** Server: pier listens (fd made by the control plane); client: pier connects and reconnects. */
  server: boolean;
  /** The listening socket (server mode); -1 in client mode. */
  listenFd: number;
  queuePairs: number;
  mtu: number;
  /** Largest queue size pier accepts from the frontend. */
  maxQueueSize: number;
  /** Poll the rings every turn (no kicks needed) instead of sleeping until a kick. */
  busyPoll: boolean;
  /** Strict mode: refuse peer memory that cannot be sealed against shrinking. */
  requireSealedMemory: boolean;
  /** Offer VIRTIO_F_RING_PACKED. */
  packed: boolean;
}

export function vhostUserSpec(o: VhostUserOptions, listenFd: number): VhostUserSpec {
  return {
    path: o.path, server: o.type === 'vhost-user', listenFd, queuePairs: o.queues ?? 1, mtu: o.mtu ?? 0,
    maxQueueSize: o['queue-size'] ?? 32768, busyPoll: o['busy-poll'] === true, requireSealedMemory: o['strict-memory'] === true,
    packed: o.packed === true,
  };
}
