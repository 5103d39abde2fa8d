// The vxlan port kind: a bridge that spans hosts over VXLAN (RFC 7348), pier encapsulating and
// decapsulating itself over UDP sockets (docs/design/uplinks.md, docs/design/ports.md).
import type { PortKind } from '../kind.ts';
import type { VxlanOptions, VxlanSpec } from './options.ts';
import { renderVxlan, type VxlanView } from './view.ts';

/** What `pier set-port` changes on a running vxlan port: the sockets stay, the dataplane half is rebuilt. */
const VXLAN_LIVE = ['remote', 'mtu', 'rco'] as const;

export const vxlan: PortKind<VxlanOptions, VxlanSpec, VxlanView> = {
  types: ['vxlan'],
  options: async () => (await import('./options.ts')).vxlanOptions,
  live: VXLAN_LIVE,
  render: renderVxlan,
  control: async () => (await import('./control.ts')).vxlanControl,
  dataplane: async () => (await import('./dataplane.ts')).vxlanDataplane,
};
