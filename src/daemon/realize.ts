// What the control plane does for each port kind: make the device or socket exist (realise),
// describe it to the dataplane, and undo it (destroy on del-port, detach on daemon stop).
import type { VhostUserSpec, TapSpec, VirtioUserSpec } from '../dataplane/protocol.ts';
import { DRIVER_MEM_REGIONS, memTableProblem, readMaxMemRegions } from '../vhost/mem-table.ts';
import { classifyPath, PathError } from '../vhost/path-class.ts';
import { PierError } from './errors.ts';
import { libc, openVhostNet } from '../sys/index.ts';
import type { StoredPort } from './state.ts';
import { destroyTap, detachTap, realizeTap, realizeVhostTap, tapKernelInfo, tapSndbuf } from './tap-control.ts';
import { closeListener, listenVhostUser } from './vhost-control.ts';

type Base = 'index' | 'name' | 'bridge' | 'counters';
type KindSpec = Omit<TapSpec, Base> | Omit<VhostUserSpec, Base> | Omit<VirtioUserSpec, Base>;

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
      const spec: KindSpec = { kind: 'vhost-user', path: o.path, server, listenFd: fd, queuePairs: o.queues ?? 1, mtu: o.mtu ?? 0, maxQueueSize: o['queue-size'] ?? 32768, busyPoll: o['busy-poll'] === true, requireSealedMemory: o['strict-memory'] === true };
      return {
        spec,
        destroy: () => server && closeListener(fd, o.path),
        detach: () => server && closeListener(fd, o.path),
      };
    }
    case 'virtio-user': {
      let cls;
      try {
        cls = classifyPath(o.path, o.server === true);
      } catch (e) {
        if (e instanceof PathError) throw new PierError('EPATH', e.message, e.hint);
        throw e;
      }
      const queueSize = o['queue-size'] ?? 1024;
      const queuePairs = o.queues ?? 1;
      if (cls.kind === 'vhost-kernel') {
        // vhost-net's limit on the memory table, checked before anything is made.
        const mem = memTableProblem(DRIVER_MEM_REGIONS, readMaxMemRegions().value);
        if (mem) throw new PierError('EVHOST', mem.message, mem.hint);
        // The kernel's tap goes into the container exactly as a tap port's does, with a bounded
        // send buffer (see VHOST_TAP_SNDBUF).
        // One tap queue and one vhost-net fd (its own kernel worker) per queue pair.
        const t = realizeVhostTap(name, { type: 'tap', netns: o.netns, ip: o.ip, mac: o.mac, mtu: o.mtu, ifname: o.ifname, offloads: true }, queuePairs);
        const vfds: number[] = [];
        try {
          for (let q = 0; q < queuePairs; q++) vfds.push(openVhostNet());
        } catch (e) {
          for (const fd of vfds) libc.close(fd);
          destroyTap(t.fds);
          throw new PierError('EVHOST', `cannot open ${o.path}: ${(e as Error).message}`, 'pier must run as root, and the vhost_net module must be loaded');
        }
        const closeVhost = (): void => { for (const fd of vfds) libc.close(fd); };
        return {
          spec: { kind: 'virtio-user', backend: 'vhost-kernel', path: o.path, server: false, listenFd: -1, queueSize, queuePairs, vhostFds: vfds, tapFds: t.fds },
          destroy: () => { closeVhost(); destroyTap(t.fds); },
          detach: () => { closeVhost(); detachTap(t.fds); },
          ifname: t.ifname,
          kernel: () => {
            const k = tapKernelInfo(t);
            if (!k) return undefined;
            const sndbuf = tapSndbuf(t.fd);
            return { ifname: k.ifname, rx_packets: k.rxPackets, tx_packets: k.txPackets, rx_dropped: k.rxDropped, tx_dropped: k.txDropped, ...(sndbuf === undefined ? {} : { sndbuf }) };
          },
        };
      }
      for (const k of ['netns', 'ip', 'mac', 'mtu', 'ifname'] as const) {
        if (o[k] !== undefined) throw new PierError('EINVAL', `${k}= is for path=/dev/vhost-net (a kernel tap in a container); ${o.path} is a vhost-user socket`, `drop ${k}=`);
      }
      const fd = cls.server ? listenVhostUser(o.path) : -1;
      return {
        spec: { kind: 'virtio-user', backend: 'vhost-user', path: o.path, server: cls.server, listenFd: fd, queueSize, queuePairs, vhostFds: [], tapFds: [] },
        destroy: () => cls.server && closeListener(fd, o.path),
        detach: () => cls.server && closeListener(fd, o.path),
      };
    }
  }
}
