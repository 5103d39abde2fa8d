// The tap port kind: a tap with virtio-net headers inside a container (docs/design/ports.md).
import type { PortKind } from '../kind.ts';
import type { TapOptions, TapSpec } from './options.ts';

/** What `pier set-port` changes on a running tap port: the container keeps its interface. */
const TAP_LIVE = ['ip', 'mac', 'mtu', 'offloads'] as const;

export const tap: PortKind<TapOptions, TapSpec, undefined> = {
  types: ['tap'],
  options: async () => (await import('./options.ts')).tapOptions,
  live: TAP_LIVE,
  render: () => '',
  control: async () => (await import('./control.ts')).tapControl,
  dataplane: async () => (await import('./dataplane.ts')).tapDataplane,
};
