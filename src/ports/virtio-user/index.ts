// The virtio-user port kind: pier is the virtio driver over vhost-net or a vhost-user socket
// (docs/design/virtio-user.md, docs/design/ports.md).
import type { PortKind } from '../kind.ts';
import type { VirtioUserOptions, VirtioUserSpec } from './options.ts';
import { renderVirtioUser, type VirtioUserView } from './view.ts';

/**
 * What `pier set-port` changes on a running virtio-user port: the container tap's link (vhost-net
 * ports), and the ring size of a port on a vhost-user socket (the dataplane half is rebuilt and
 * reconnects; over vhost-net the rings belong to fds the kernel has taken: --recreate).
 */
const VIRTIO_USER_LIVE = ['ip', 'mac', 'mtu', 'queue-size', 'packed'] as const;

export const virtioUser: PortKind<VirtioUserOptions, VirtioUserSpec, VirtioUserView> = {
  types: ['virtio-user'],
  options: async () => (await import('./options.ts')).virtioUserOptions,
  live: VIRTIO_USER_LIVE,
  render: renderVirtioUser,
  control: async () => (await import('./control.ts')).virtioUserControl,
  dataplane: async () => (await import('./dataplane.ts')).virtioUserDataplane,
};
