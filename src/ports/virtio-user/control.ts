// The control half of a virtio-user port: classify `path` by stat(); for /dev/vhost-net make
// the container's tap (as a tap port's, with one queue per queue pair and a bounded send buffer)
// and open one vhost-net fd per queue pair; for a socket with server=true, listen.
import { PierError } from '../../errors.ts';
import { libc, openVhostNet } from '../../sys/index.ts';
import { DRIVER_MEM_REGIONS, memTableProblem, readMaxMemRegions } from '../../vhost/mem-table.ts';
import { classifyPath, PathError } from '../../vhost/path-class.ts';
import type { ControlHalf, Realized } from '../kind.ts';
import { destroyTap, detachTap, prepareInterface, type RealizedTap, realizeVhostTap, tapInfo, tapSndbuf, updateLink } from '../tap/control.ts';
import { checkSocketPath, closeListener, listenVhostUser } from '../vhost-user/control.ts';
import type { VirtioUserOptions, VirtioUserSpec } from './options.ts';

/** The kernel's tap of a vhost-net port (null on a vhost-user socket). */
type Handle = RealizedTap | null;

function isVhostNet(path: string): boolean {
  try {
    return classifyPath(path).kind === 'vhost-kernel';
  } catch {
    return false;
  }
}

function realize(name: string, o: VirtioUserOptions, restore = false): Realized<VirtioUserSpec, Handle> {
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
    if (o.packed === true) throw new PierError('EINVAL', `packed=on: vhost-net (${o.path}) has no packed virtqueue`, 'drop packed=, or use a vhost-user backend');
    // vhost-net's limit on the memory table, checked before anything is made.
    const mem = memTableProblem(DRIVER_MEM_REGIONS, readMaxMemRegions().value);
    if (mem) throw new PierError('EVHOST', mem.message, mem.hint);
    // The kernel's tap goes into the container exactly as a tap port's does, with a bounded
    // send buffer (see VHOST_TAP_SNDBUF).
    // One tap queue and one vhost-net fd (its own kernel worker) per queue pair.
    const t = realizeVhostTap(name, { netns: o.netns, ip: o.ip, mac: o.mac, mtu: o.mtu, ifname: o.ifname, offloads: true }, queuePairs, restore);
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
      spec: { backend: 'vhost-kernel', path: o.path, server: false, listenFd: -1, queueSize, queuePairs, packed: false, vhostFds: vfds, tapFds: t.fds },
      handle: t,
      destroy: () => { closeVhost(); destroyTap(t.fds); },
      detach: () => { closeVhost(); detachTap(t.fds); },
      ifname: t.ifname,
      kernel: () => {
        const k = tapInfo(t);
        const sndbuf = tapSndbuf(t.fd);
        return k && { ...k, ...(sndbuf === undefined ? {} : { sndbuf }) };
      },
    };
  }
  for (const k of ['netns', 'ip', 'mac', 'mtu', 'ifname'] as const) {
    if (o[k] !== undefined) throw new PierError('EINVAL', `${k}= is for path=/dev/vhost-net (a kernel tap in a container); ${o.path} is a vhost-user socket`, `drop ${k}=`);
  }
  const fd = cls.server ? listenVhostUser(o.path) : -1;
  return {
    spec: { backend: 'vhost-user', path: o.path, server: cls.server, listenFd: fd, queueSize, queuePairs, packed: o.packed === true, vhostFds: [], tapFds: [] },
    handle: null,
    destroy: () => cls.server && closeListener(fd, o.path),
    detach: () => cls.server && closeListener(fd, o.path),
  };
}

export const virtioUserControl: ControlHalf<VirtioUserOptions, VirtioUserSpec, Handle> = {
  prepare(name, o, others) {
    // /dev/vhost-net is opened once per port: any number of ports share the device, and the
    // container's tap is checked like a tap port's.
    if (isVhostNet(o.path)) return prepareInterface(name, o, others);
    checkSocketPath(o, others);
    return o;
  },
  realize,
  update(name, r, prev, next) {
    if (r.handle) {
      if (next['queue-size'] !== prev['queue-size']) {
        throw new PierError('EBUSY', `queue-size of ${name} cannot change live over /dev/vhost-net: the kernel holds its rings`, `run: pier set-port ${name} queue-size=${next['queue-size'] ?? 1024} --recreate (the container's interface is re-created)`);
      }
      if (next.packed === true) throw new PierError('EINVAL', `packed=on: vhost-net (${next.path}) has no packed virtqueue`, 'drop packed=');
      updateLink(r.handle, prev, next);
      return undefined;
    }
    for (const k of ['ip', 'mac', 'mtu'] as const) {
      if (JSON.stringify(prev[k]) !== JSON.stringify(next[k])) throw new PierError('EINVAL', `${k}= is for path=/dev/vhost-net (a kernel tap in a container); ${next.path} is a vhost-user socket`, `drop ${k}=`);
    }
    return { ...r.spec, queueSize: next['queue-size'] ?? 1024, packed: next.packed === true };
  },
};
