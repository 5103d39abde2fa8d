// What the control plane does for each port kind: make the device or socket exist (realise),
// describe it to the dataplane, and undo it (destroy on del-port, detach on daemon stop).
import type { VhostUserSpec, TapSpec } from '../dataplane/protocol.ts';
import type { StoredPort } from './state.ts';
import { destroyTap, detachTap, realizeTap, tapKernelInfo } from './tap-control.ts';
import { closeListener, listenVhostUser } from './vhost-control.ts';

type KindSpec = Omit<TapSpec, 'index' | 'name' | 'bridge' | 'counters'> | Omit<VhostUserSpec, 'index' | 'name' | 'bridge' | 'counters'>;

export interface Realized {
  spec: KindSpec;
  /** Remove what the port made (del-port). */
  destroy(): void;
  /** Let go without removing (daemon stop: a tap stays for the container). */
  detach(): void;
  /** Interface name in the container, for `pier show`. */
  ifname?: string;
  /** The kernel's counters for the device, when there is one. */
  kernel?(): Record<string, number | string> | undefined;
}

export function realize(name: string, o: StoredPort): Realized {
  switch (o.type) {
    case 'tap': {
      const t = realizeTap(name, o);
      return {
        spec: { kind: 'tap', fd: t.fd, offloads: o.offloads !== false },
        destroy: () => destroyTap(t.fd),
        detach: () => detachTap(t.fd),
        ifname: t.ifname,
        kernel: () => {
          const k = tapKernelInfo(t);
          return k ? { ifname: k.ifname, rx_packets: k.rxPackets, tx_packets: k.txPackets, rx_dropped: k.rxDropped, tx_dropped: k.txDropped } : undefined;
        },
      };
    }
    case 'vhost-user':
    case 'vhost-user-client': {
      const server = o.type === 'vhost-user';
      const fd = server ? listenVhostUser(o.path) : -1;
      const spec: KindSpec = { kind: 'vhost-user', path: o.path, server, listenFd: fd, queuePairs: o.queues ?? 1, mtu: o.mtu ?? 0, maxQueueSize: o['queue-size'] ?? 32768, busyPoll: o['busy-poll'] === true };
      return {
        spec,
        destroy: () => server && closeListener(fd, o.path),
        detach: () => server && closeListener(fd, o.path),
      };
    }
  }
}
