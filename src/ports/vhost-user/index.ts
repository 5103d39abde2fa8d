// The vhost-user port kind: pier is the virtio-net device for a DPDK application or a VM
// (docs/design/vhost-user.md, docs/design/ports.md).
import type { PortKind } from '../kind.ts';
import { VHOST_USER_LIVE, vhostUserOptions, type VhostUserOptions, type VhostUserSpec } from './options.ts';
import { renderVhostUser, type VhostUserView } from './view.ts';

export const vhostUser: PortKind<VhostUserOptions, VhostUserSpec, VhostUserView> = {
  types: ['vhost-user', 'vhost-user-client'],
  options: vhostUserOptions,
  live: VHOST_USER_LIVE,
  render: renderVhostUser,
  control: async () => (await import('./control.ts')).vhostUserControl,
  dataplane: async () => (await import('./dataplane.ts')).vhostUserDataplane,
};
