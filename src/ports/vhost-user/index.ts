// The vhost-user port kind: pier is the virtio-net device for a DPDK application or a VM
// (docs/design/vhost-user.md, docs/design/ports.md).
import type { PortKind } from '../kind.ts';
import type { VhostUserOptions, VhostUserSpec } from './options.ts';
import { renderVhostUser, type VhostUserView } from './view.ts';

/**
 * What `pier set-port` changes without touching the socket: the dataplane half is rebuilt with
 * the new values (the frontend in session reconnects and negotiates them; a listening socket
 * stays where it is).
 */
const VHOST_USER_LIVE = ['mtu', 'queue-size', 'busy-poll', 'strict-memory', 'packed', 'mac'] as const;

export const vhostUser: PortKind<VhostUserOptions, VhostUserSpec, VhostUserView> = {
  types: ['vhost-user', 'vhost-user-client'],
  options: async () => (await import('./options.ts')).vhostUserOptions,
  live: VHOST_USER_LIVE,
  render: renderVhostUser,
  control: async () => (await import('./control.ts')).vhostUserControl,
  dataplane: async () => (await import('./dataplane.ts')).vhostUserDataplane,
};
