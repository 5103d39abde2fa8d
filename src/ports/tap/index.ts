// The tap port kind: a tap with virtio-net headers inside a container (docs/design/ports.md).
import type { PortKind } from '../kind.ts';
import { TAP_LIVE, tapOptions, type TapOptions, type TapSpec } from './options.ts';

export const tap: PortKind<TapOptions, TapSpec, undefined> = {
  types: ['tap'],
  options: tapOptions,
  live: TAP_LIVE,
  render: () => '',
  control: async () => (await import('./control.ts')).tapControl,
  dataplane: async () => (await import('./dataplane.ts')).tapDataplane,
};
