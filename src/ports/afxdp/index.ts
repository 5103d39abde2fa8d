// The afxdp port kind: an uplink on a network device through AF_XDP sockets, the XDP program
// pier loads itself, and a UMEM in pier's arena (docs/design/uplinks.md).
import type { PortKind } from '../kind.ts';
import type { AfXdpOptions, AfXdpSpec } from './options.ts';
import { renderAfXdp, type AfXdpView } from './view.ts';

export const afxdp: PortKind<AfXdpOptions, AfXdpSpec, AfXdpView> = {
  types: ['afxdp'],
  options: async () => (await import('./options.ts')).afxdpOptions,
  live: [],
  render: renderAfXdp,
  control: async () => (await import('./control.ts')).afxdpControl,
  dataplane: async () => (await import('./dataplane.ts')).afxdpDataplane,
};
