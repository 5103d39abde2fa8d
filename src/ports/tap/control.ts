// The control-plane half of a tap port: create (or re-attach to) the tap inside the container's
// namespace and bring it to the configured name, MAC, MTU and addresses. Undone completely on error.
import { ablated } from '../ablate.ts';
import { existsSync } from 'node:fs';
import { PierError } from '../../errors.ts';
import { closeFd, configureLink, getSndbuf, ip, IpError, libc, openTap, setOffload, setPersist, setSndbuf, linkInfo, type LinkInfo } from '../../sys/index.ts';
import { IFNAME_MAX, randomMac } from '../fields.ts';
import { resolveNetns } from '../netns.ts';
import type { ControlHalf, OtherPort, Realized } from '../kind.ts';
import type { TapOptions, TapSpec } from './options.ts';

/** What a tap needs to be made (a tap port's options, or those of a vhost-net port's tap). */
export type TapConfig = Pick<TapOptions, 'netns' | 'ip' | 'mac' | 'mtu' | 'ifname' | 'offloads'>;

export interface RealizedTap {
  /** The tap's fd (its first queue's, with several). */
  fd: number;
  /** One fd per queue (IFF_MULTI_QUEUE when more than one); fds[0] === fd. */
  fds: number[];
  ifname: string;
  netnsPath: string | undefined;
}

const OFFLOADS = libc.TUN_F_CSUM | libc.TUN_F_TSO4 | libc.TUN_F_TSO6 | libc.TUN_F_TSO_ECN;


export function checkTunDevice(): void {
  if (!existsSync('/dev/net/tun')) {
    throw new PierError('ENOTUN', '/dev/net/tun is missing, so no tap can be created',
      'load the tun module (modprobe tun) or create the node: mkdir -p /dev/net && mknod /dev/net/tun c 10 200');
  }
}

/**
 * Create (or re-attach to) the tap of a port in its container and configure it. With `queues`
 * over 1 the tap is a multiqueue tap (IFF_MULTI_QUEUE) opened once per queue: every open of the
 * same name attaches one more queue. A persistent tap keeps its kind: a multiqueue tap and a
 * single-queue one of the same name cannot be attached to each other (EINVAL).
 *
 * Only with `restore` (a port of the state the daemon started with, not yet made by this run) is
 * an existing tap taken over: it is the persistent tap the stopped daemon left. Otherwise the
 * first open is exclusive (IFF_TUN_EXCL), so pier never takes over, reconfigures and later
 * deletes an interface someone else made: no mark on the device is needed, the daemon's state
 * says which taps are pier's.
 */
export function realizeTap(portName: string, o: TapConfig, queues = 1, restore = false): RealizedTap {
  checkTunDevice();
  const ns = resolveNetns(o.netns);
  const ifname = o.ifname ?? portName;
  const fds: number[] = [];
  try {
    for (let q = 0; q < queues; q++) {
      fds.push(openTap({ ifname, netnsPath: ns, offloads: o.offloads === false ? 0 : OFFLOADS, multiQueue: queues > 1, exclusive: !restore && q === 0 }).fd);
    }
  } catch (e) {
    for (const fd of fds) closeFd(fd);
    const code = (e as libc.SysError).code;
    if (code === 'EBUSY' && !restore && fds.length === 0) {
      const where = o.netns ? ` in netns ${o.netns}` : '';
      const del = o.netns === undefined ? `: ip link del ${ifname}` : /^[^/:]+$/.test(o.netns) ? `: ip -n ${o.netns} link del ${ifname}` : ` (ip link del ${ifname} in that namespace)`;
      throw new PierError('EEXIST', `interface ${ifname} already exists${where} and pier did not make it`, `choose another ifname=NAME, or remove that interface${del}`);
    }
    if (code === 'EBUSY' || code === 'EINVAL' || code === 'EPERM') {
      throw new PierError('EBUSY', `cannot create tap ${ifname}${o.netns ? ` in netns ${o.netns}` : ''}: ${(e as Error).message}`,
        `an interface named ${ifname} probably exists there already and is not a free pier tap: choose another ifname=NAME or remove it`);
    }
    throw new PierError('ETAP', `cannot create tap ${ifname}: ${(e as Error).message}`, 'check that pier runs as root with CAP_NET_ADMIN');
  }
  try {
    setPersist(fds[0]!, true);
    configureLink(ns, ifname, { mac: o.mac, mtu: o.mtu, addresses: o.ip ?? [] });
  } catch (e) {
    destroyTap(fds);
    const msg = e instanceof IpError ? e.message : (e as Error).message;
    throw new PierError('ECONFIG', `cannot configure ${ifname}: ${msg}`, 'fix the option the message names and add the port again');
  }
  return { fd: fds[0]!, fds, ifname, netnsPath: ns };
}

/**
 * Send buffer of the tap behind a vhost-net (virtio-user) port: 1 MiB, the value QEMU's
 * documentation gives for turning flow control on (`-netdev tap,sndbuf=1048576`).
 *
 * The send buffer bounds the bytes of frames vhost-net has written into the tap for the
 * container (pier -> container) and that the kernel still holds charged to the tap's socket:
 * frames in a backlog queue (RPS), in a qdisc when the container forwards them on, ... The
 * kernel's default for a tap, and QEMU's (its sndbuf=0 means INT_MAX), is no bound: vhost-net
 * then empties pier's transmit ring as fast as it can copy whatever the container keeps up with,
 * and the excess is dropped later inside the container's kernel, where neither pier nor the
 * tap's counters see it. With a bound, the tap answers vhost-net with EAGAIN, vhost-net stops
 * taking from pier's ring until there is room again, and an overload shows as pier's
 * tx_dropped_full: counted, on pier's side of the tap.
 *
 * 1 MiB is ~15 TSO super-frames (64 KiB + overhead) or ~450 MTU-sized frames in flight. In the
 * common case it is never reached (vhost-net hands frames to the container's stack in its own
 * thread and the stack releases them from the tap's socket on entry to IP), so it costs no
 * throughput, and it is 2000 times below the unbounded default. Frames vhost-net sends through
 * its batched path for small frames are not charged to the socket, so the bound is mostly one on
 * large frames, which carry most of the bytes.
 */
export const VHOST_TAP_SNDBUF = 1 << 20;

/**
 * The tap of a vhost-net (virtio-user) port: a tap port's tap with one queue per queue pair (each
 * the backend of one vhost-net fd), and a bounded send buffer on every queue.
 */
export function realizeVhostTap(portName: string, o: TapConfig, queues = 1, restore = false): RealizedTap {
  const t = realizeTap(portName, o, queues, restore);
  try {
    if (!ablated('tap-sndbuf')) for (const fd of t.fds) setSndbuf(fd, VHOST_TAP_SNDBUF);
  } catch (e) {
    destroyTap(t.fds);
    throw new PierError('ETAP', `cannot set the send buffer of tap ${t.ifname}: ${(e as Error).message}`, 'check that pier runs as root with CAP_NET_ADMIN');
  }
  return t;
}

/** The send buffer of a tap queue (TUNGETSNDBUF), for `pier stats`; undefined if it cannot be read. */
export function tapSndbuf(fd: number): number | undefined {
  try {
    return getSndbuf(fd);
  } catch {
    return undefined;
  }
}

/** Remove the device: drop persistence so closing the last fd (of every queue) deletes it. */
export function destroyTap(fds: number | number[]): void {
  const all = typeof fds === 'number' ? [fds] : fds;
  try {
    setPersist(all[0]!, false);
  } catch {
    /* already gone with its namespace */
  }
  for (const fd of all) closeFd(fd);
}

/** Detach without deleting: the container keeps its interface while pier restarts. */
export function detachTap(fds: number | number[]): void {
  for (const fd of typeof fds === 'number' ? [fds] : fds) closeFd(fd);
}

export function tapKernelInfo(t: RealizedTap): LinkInfo | undefined {
  return linkInfo(t.netnsPath, t.ifname);
}

/**
 * Refuse an interface name that is too long or that another port already uses in the same
 * namespace; give the port a MAC kept in the stored options, so a restart brings it back.
 */
export function prepareInterface<O extends TapConfig>(name: string, o: O, others: readonly OtherPort[]): O {
  const ifname = o.ifname ?? name;
  if (Buffer.byteLength(ifname) > IFNAME_MAX) {
    throw new PierError('EINVAL', `interface name ${ifname} is ${Buffer.byteLength(ifname)} bytes; Linux interface names are at most ${IFNAME_MAX} bytes`,
      o.ifname ? 'pass a shorter ifname=NAME' : `the interface is named after the port by default: pass ifname=NAME (at most ${IFNAME_MAX} bytes)`);
  }
  for (const p of others) {
    const po = p.options as TapConfig;
    if (p.ifname === ifname && po.netns === o.netns) {
      throw new PierError('EEXIST', `port ${p.name} already uses interface ${ifname}${o.netns ? ` in netns ${o.netns}` : ''}`, 'choose another ifname=NAME');
    }
  }
  return o.mac ? o : { ...o, mac: randomMac() };
}

/**
 * Bring a running tap's link to `next` from `prev`: MAC, MTU (back to 1500 when dropped), and
 * addresses (those dropped removed, the others replaced). The interface is never removed.
 */
export function updateLink(t: RealizedTap, prev: TapConfig, next: TapConfig): void {
  try {
    if (next.mac && next.mac !== prev.mac) ip(t.netnsPath, ['link', 'set', 'dev', t.ifname, 'address', next.mac]);
    if (next.mtu !== prev.mtu) ip(t.netnsPath, ['link', 'set', 'dev', t.ifname, 'mtu', String(next.mtu ?? 1500)]);
    const keep = new Set(next.ip ?? []);
    for (const a of prev.ip ?? []) if (!keep.has(a)) ip(t.netnsPath, ['addr', 'del', a, 'dev', t.ifname]);
    for (const a of next.ip ?? []) ip(t.netnsPath, ['addr', 'replace', a, 'dev', t.ifname]);
  } catch (e) {
    throw new PierError('ECONFIG', `cannot change ${t.ifname}: ${(e as Error).message}`, 'fix the option the message names and run set-port again');
  }
}

export function tapInfo(t: RealizedTap): Record<string, number | string> | undefined {
  const k = tapKernelInfo(t);
  return k ? { ifname: k.ifname, rx_packets: k.rxPackets, tx_packets: k.txPackets, rx_dropped: k.rxDropped, tx_dropped: k.txDropped } : undefined;
}

export const tapControl: ControlHalf<TapOptions, TapSpec, RealizedTap> = {
  preflight: checkTunDevice,
  prepare: (name, o, others) => prepareInterface(name, o, others),
  realize(name, o, restore): Realized<TapSpec, RealizedTap> {
    const t = realizeTap(name, o, 1, restore);
    return {
      spec: { fd: t.fd, offloads: o.offloads !== false },
      handle: t,
      destroy: () => destroyTap(t.fd),
      detach: () => detachTap(t.fd),
      ifname: t.ifname,
      kernel: () => tapInfo(t),
    };
  },
  update(_name, r, prev, next) {
    const t = r.handle;
    updateLink(t, prev, next);
    const on = next.offloads !== false;
    if (on === (prev.offloads !== false)) return undefined;
    try {
      setOffload(t.fd, on ? OFFLOADS : 0);
    } catch (e) {
      throw new PierError('ETAP', `cannot change the offloads of tap ${t.ifname}: ${(e as Error).message}`, 'check that pier runs as root');
    }
    return { fd: t.fd, offloads: on };
  },
};
