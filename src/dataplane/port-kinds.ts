// Builds the dataplane object for each port kind; new kinds plug in here.
import { TapPort } from '../ports/tap-dataplane.ts';
import { VhostUserPort } from '../ports/vhost-user.ts';
import { VirtioUserPort } from '../ports/virtio-user.ts';
import type { PacketPool } from './pool.ts';
import type { Port } from './port.ts';
import type { PortSpec } from './protocol.ts';

export function createPort(spec: PortSpec, pool: PacketPool): Port {
  switch (spec.kind) {
    case 'tap':
      return new TapPort(spec.index, spec.name, spec.bridge, spec.counters, pool, spec.fd, spec.offloads);
    case 'vhost-user':
      return new VhostUserPort(spec.index, spec.name, spec.bridge, spec.counters, pool, spec);
    case 'virtio-user':
      return new VirtioUserPort(spec.index, spec.name, spec.bridge, spec.counters, pool, spec);
  }
}
