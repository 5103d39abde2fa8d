// The control-plane half of a tap port: create (or re-attach to) the tap inside the container's
// namespace and bring it to the configured name, MAC, MTU and addresses. Undone completely on error.
import { existsSync } from 'node:fs';
import { closeFd, configureLink, IpError, libc, netnsExists, netnsPath, openTap, setPersist, linkInfo, type LinkInfo } from '../sys/index.ts';
import { PierError } from './errors.ts';
import type { StoredTap } from './state.ts';

export interface RealizedTap {
  fd: number;
  ifname: string;
  netnsPath: string | undefined;
}

const OFFLOADS = libc.TUN_F_CSUM | libc.TUN_F_TSO4 | libc.TUN_F_TSO6 | libc.TUN_F_TSO_ECN;

export function resolveNetns(spec: string | undefined): string | undefined {
  if (spec === undefined) return undefined;
  const path = netnsPath(spec);
  if (!netnsExists(path)) {
    const how = spec.startsWith('pid:') ? `no process ${spec.slice(4)} (or it has no network namespace)`
      : path.startsWith('/var/run/netns/') ? `create it with: ip netns add ${spec}` : 'pass a name under /var/run/netns, pid:PID, or /proc/PID/ns/net';
    throw new PierError('ENONETNS', `network namespace ${spec} not found (${path})`, how);
  }
  return path;
}

export function checkTunDevice(): void {
  if (!existsSync('/dev/net/tun')) {
    throw new PierError('ENOTUN', '/dev/net/tun is missing, so no tap can be created',
      'load the tun module (modprobe tun) or create the node: mkdir -p /dev/net && mknod /dev/net/tun c 10 200');
  }
}

export function realizeTap(portName: string, o: StoredTap): RealizedTap {
  checkTunDevice();
  const ns = resolveNetns(o.netns);
  const ifname = o.ifname ?? portName;
  let fd = -1;
  try {
    fd = openTap({ ifname, netnsPath: ns, offloads: o.offloads === false ? 0 : OFFLOADS }).fd;
  } catch (e) {
    const code = (e as libc.SysError).code;
    if (code === 'EBUSY' || code === 'EINVAL' || code === 'EPERM') {
      throw new PierError('EBUSY', `cannot create tap ${ifname}${o.netns ? ` in netns ${o.netns}` : ''}: ${(e as Error).message}`,
        `an interface named ${ifname} probably exists there already and is not a free pier tap: choose another ifname=NAME or remove it`);
    }
    throw new PierError('ETAP', `cannot create tap ${ifname}: ${(e as Error).message}`, 'check that pier runs as root with CAP_NET_ADMIN');
  }
  try {
    setPersist(fd, true);
    configureLink(ns, ifname, { mac: o.mac, mtu: o.mtu, addresses: o.ip ?? [] });
  } catch (e) {
    destroyTap(fd);
    const msg = e instanceof IpError ? e.message : (e as Error).message;
    throw new PierError('ECONFIG', `cannot configure ${ifname}: ${msg}`, 'fix the option the message names and add the port again');
  }
  return { fd, ifname, netnsPath: ns };
}

/** Remove the device: drop persistence so closing the last fd deletes it. */
export function destroyTap(fd: number): void {
  try {
    setPersist(fd, false);
  } catch {
    /* already gone with its namespace */
  }
  closeFd(fd);
}

/** Detach without deleting: the container keeps its interface while pier restarts. */
export function detachTap(fd: number): void {
  closeFd(fd);
}

export function tapKernelInfo(t: RealizedTap): LinkInfo | undefined {
  return linkInfo(t.netnsPath, t.ifname);
}
