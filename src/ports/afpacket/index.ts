// The afpacket port kind: an uplink on a network device through an AF_PACKET socket with
// memory-mapped TPACKET_V3 rings (docs/design/uplinks.md, docs/design/ports.md).
import type { PortKind } from '../kind.ts';
import type { AfPacketOptions, AfPacketSpec } from './options.ts';
import { renderAfPacket, type AfPacketView } from './view.ts';

/** What `pier set-port` changes on a running afpacket port: the socket stays, the dataplane half is rebuilt. */
const AFPACKET_LIVE = ['offloads'] as const;

export const afpacket: PortKind<AfPacketOptions, AfPacketSpec, AfPacketView> = {
  types: ['afpacket'],
  options: async () => (await import('./options.ts')).afpacketOptions,
  live: AFPACKET_LIVE,
  render: renderAfPacket,
  control: async () => (await import('./control.ts')).afpacketControl,
  dataplane: async () => (await import('./dataplane.ts')).afpacketDataplane,
};
