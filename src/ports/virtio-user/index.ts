// The virtio-user port kind: pier is the virtio driver over vhost-net or a vhost-user socket
// (docs/design/virtio-user.md, docs/design/ports.md).
import type { PortKind } from '../kind.ts';
import { VIRTIO_USER_LIVE, virtioUserOptions, type VirtioUserOptions, type VirtioUserSpec } from './options.ts';
import { renderVirtioUser, type VirtioUserView } from './view.ts';

export const virtioUser: PortKind<VirtioUserOptions, VirtioUserSpec, VirtioUserView> = {
  types: ['virtio-user'],
  options: virtioUserOptions,
  live: VIRTIO_USER_LIVE,
  render: renderVirtioUser,
  control: async () => (await import('./control.ts')).virtioUserControl,
  dataplane: async () => (await import('./dataplane.ts')).virtioUserDataplane,
};
