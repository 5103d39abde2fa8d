// The control-plane half of a vxlan port: the UDP sockets in the underlay's namespace (netns=, by
// default pier's own): one bound to dstport that receives, and SENDERS more bound to source ports
// spread over 49152..65535 that send (the inner flow's hash picks one, so the outer source port
// follows the flow, as RFC 7348 asks for ECMP). The underlay MTU is `mtu=` or the MTU of the route
// to the remotes (the smallest), read when the port is made and again every 5 s (refresh()): a
// change rebuilds the dataplane half with the new limit.
import { PierError } from '../../errors.ts';
import { closeFd, libc } from '../../sys/index.ts';
import { closeVniSelector, createVniSelector, mapDelete as bpfMapDelete, mapUpdate as bpfMapUpdate, type VniSelector } from '../../sys/bpf.ts';
import { attachReuseportProgram, boundPort, hasUdpSegment, ipFamily, routeMtu, trySetInt, udpSocket, EADDRINUSE, EADDRNOTAVAIL, SOL_UDP, UDP_GRO } from '../../sys/udp.ts';
import type { ControlHalf, Realized } from '../kind.ts';
import { resolveNetns } from '../netns.ts';
import { OVERHEAD_V4, OVERHEAD_V6, SRC_PORT_MAX, SRC_PORT_MIN, VXLAN_PORT } from './header.ts';
import type { VxlanOptions, VxlanSpec } from './options.ts';

/** Sending sockets per port: 16 outer source ports, one per 1024-port block of 49152..65535. */
export const SENDERS = 16;
const BLOCK = (SRC_PORT_MAX - SRC_PORT_MIN + 1) / SENDERS;
/** Socket buffers (forced, as root): room for bursts of 64 KiB trains at line rate. */
const RCVBUF = 8 << 20;
const SNDBUF = 4 << 20;

export interface RealizedVxlan {
  rxFd: number;
  txFds: number[];
  txPorts: number[];
  netnsPath: string | undefined;
  /** The receiving socket's reuseport group (groupKey). */
  rxGroup: string;
}

/**
 * How datagrams are sent: `PIER_VXLAN_SEND=sendmmsg` turns UDP_SEGMENT trains off (for measuring
 * one against the other); the default uses them where the kernel has UDP_SEGMENT.
 */
// `PIER_VXLAN_GRO=off` leaves received TCP segments as they came (gro.ts), likewise.
function gsoWanted(): boolean {
  return process.env.PIER_VXLAN_SEND !== 'sendmmsg';
}

/** A bind to local= that the namespace has no such address for: the same refusal whichever socket found it. */
function noLocal(o: VxlanOptions, e: unknown): PierError | undefined {
  if (o.local === undefined || (e as libc.SysError).syscall !== 'bind' || (e as libc.SysError).errno !== EADDRNOTAVAIL) return undefined;
  return new PierError('EADDRNOTAVAIL', `local=${o.local} is not an address of ${o.netns ? `netns ${o.netns}` : 'pier\'s network namespace'}`,
    `add it there first (ip${o.netns ? ` -n ${o.netns}` : ''} addr add ${o.local}/PREFIX dev DEV), or leave local= out to send from the address of the route to the remote`);
}

function underlayMtu(ns: string | undefined, o: VxlanOptions): { mtu: number; from: string } {
  if (o.mtu !== undefined) return { mtu: o.mtu, from: 'mtu=' };
  let best = Infinity;
  let from = '';
  for (const r of o.remote) {
    let m: number;
    try {
      m = routeMtu(ns, r, o.local);
    } catch (e) {
      throw noLocal(o, e) ?? new PierError('ENOROUTE', `no route to remote ${r}${o.netns ? ` in netns ${o.netns}` : ''}: ${(e as Error).message}`,
        'give the underlay an address and a route to every remote first (ip addr add ... dev ...), or pass the underlay MTU with mtu=N');
    }
    if (m < best) {
      best = m;
      from = `the route to ${r}`;
    }
  }
  return { mtu: best, from };
}

function closeAll(fds: number[]): void {
  for (const fd of fds) closeFd(fd);
}

/**
 * The receiving sockets of this daemon's vxlan ports that share a UDP port (same namespace,
 * family, local address, dstport), as one SO_REUSEPORT group. Once a second VNI joins, an
 * SK_REUSEPORT program (vniSelectProgram in src/sys/bpf.ts) hands each datagram to the socket of
 * its VNI: VNI -> slot in one map, slot -> socket in a REUSEPORT_SOCKARRAY, so several VNIs share
 * 4789 as Linux vxlan devices do, each port still reading a socket of its own, and a socket that
 * joins or leaves moves no other (the sockets are named by pier's slots, not their places in the
 * group). A VNI no port has, and everything while one socket is alone, goes where the kernel's
 * hash says: that port counts a VNI not its own.
 */
interface RxGroup {
  /** Socket fd -> its VNI and slot. */
  members: Map<number, { vni: number; slot: number }>;
  /** The maps and the program, from the second member on (BPF is not needed for one socket). */
  sel: VniSelector | undefined;
  /**
   * UDP_GRO is wanted and the kernel has it. It is on only while the group has one socket: GRO
   * merges datagrams by addresses and ports, never by VNI, so with two VNIs a train could hold
   * both, and the program, which sees its first datagram, would give all of it to one port.
   */
  gro: boolean;
}
const rxGroups = new Map<string, RxGroup>();
/** Sockets a group's selector holds (ports of one UDP port in one namespace). */
const GROUP_MAX = 1024;

function groupKey(ns: string | undefined, family: number, local: string | undefined, dstport: number): string {
  return `${ns ?? ''}|${family}|${local ?? ''}|${dstport}`;
}

/** UDP_GRO on while one socket is alone in the group, off otherwise. */
function setGroupGro(g: RxGroup): void {
  const on = g.gro && g.members.size === 1 ? 1 : 0;
  for (const fd of g.members.keys()) trySetInt(fd, SOL_UDP, UDP_GRO, on);
}

/** Put member fd in the group's selector: its slot -> the socket, its VNI -> its slot. */
function select(sel: VniSelector, fd: number, m: { vni: number; slot: number }): void {
  bpfMapUpdate(sel.socksFd, m.slot, fd);
  bpfMapUpdate(sel.vnisFd, m.vni, m.slot);
}

/**
 * Open the receiving socket of a port with `vni` on dstport, joining the daemon's group there.
 * The first socket of a group first checks that nobody else holds the port (a bind without
 * SO_REUSEPORT), so the group is this daemon's. Throws PierError; leaves nothing on failure.
 */
function joinRx(ns: string | undefined, family: 4 | 6, local: string | undefined, dstport: number, vni: number): number {
  const key = groupKey(ns, family, local, dstport);
  let g = rxGroups.get(key);
  if (g === undefined) {
    closeFd(udpSocket({ netnsPath: ns, family, local, port: dstport })); // EADDRINUSE when taken
    g = { members: new Map(), sel: undefined, gro: false };
  }
  const fd = udpSocket({ netnsPath: ns, family, local, port: dstport, rcvbuf: RCVBUF, reuseport: true });
  if (g.members.size === 0) g.gro = process.env.PIER_VXLAN_UDP_GRO !== 'off' && trySetInt(fd, SOL_UDP, UDP_GRO, 0);
  const used = new Set([...g.members.values()].map((m) => m.slot));
  let slot = 0;
  while (used.has(slot)) slot++;
  const m = { vni, slot };
  try {
    if (g.members.size + 1 > GROUP_MAX) throw new PierError('EBUSY', `${GROUP_MAX} vxlan ports already share this UDP port`, 'give this one another dstport=N');
    if (g.members.size >= 1) {
      if (g.sel === undefined) {
        // The second VNI: the selector, attached to the group (through any member), with the first one in it.
        const sel = createVniSelector(GROUP_MAX);
        try {
          const [first, fm] = [...g.members][0]!;
          select(sel, first, fm);
          attachReuseportProgram(first, sel.progFd);
        } catch (e) {
          closeVniSelector(sel);
          throw e;
        }
        g.sel = sel;
      }
      select(g.sel, fd, m);
    }
  } catch (e) {
    closeFd(fd);
    if (g.members.size === 0) rxGroups.delete(key);
    if (e instanceof PierError) throw e;
    throw new PierError('EVXLAN', `cannot share UDP port ${dstport} between VNIs ${[...g.members.values()].map((x) => x.vni).join(', ')} and ${vni}: ${(e as Error).message}`,
      'give this port another dstport=N (and its remotes the same), or let pier load BPF programs (CAP_BPF or CAP_SYS_ADMIN)');
  }
  g.members.set(fd, m);
  rxGroups.set(key, g);
  setGroupGro(g);
  return fd;
}

/** Close a receiving socket and take it out of its group's selector. */
function leaveRx(key: string, fd: number): void {
  const g = rxGroups.get(key);
  const m = g?.members.get(fd);
  if (g && m) {
    g.members.delete(fd);
    // (The socket's slot empties itself when the socket closes; the VNI's entry is pier's to remove.)
    if (g.sel) bpfMapDelete(g.sel.vnisFd, m.vni);
    if (g.members.size === 0) {
      if (g.sel) closeVniSelector(g.sel);
      rxGroups.delete(key);
    }
  }
  closeFd(fd);
  if (g && g.members.size > 0) setGroupGro(g);
}

function open(name: string, o: VxlanOptions): { r: RealizedVxlan; spec: VxlanSpec } {
  const ns = resolveNetns(o.netns);
  const family = ipFamily(o.remote[0]!) as 4 | 6;
  const dstport = o.dstport ?? VXLAN_PORT;
  const { mtu, from } = underlayMtu(ns, o);
  const key = groupKey(ns, family, o.local, dstport);
  const fds: number[] = [];
  try {
    let rxFd: number;
    try {
      rxFd = joinRx(ns, family, o.local, dstport, o.vni);
    } catch (e) {
      const err = e as libc.SysError;
      const local = noLocal(o, e);
      if (local) throw local;
      if (err.errno === EADDRINUSE) {
        throw new PierError('EBUSY', `UDP port ${dstport}${o.local ? ` on ${o.local}` : ''} is taken${o.netns ? ` in netns ${o.netns}` : ''}: ${err.message}`,
          'another vxlan port (pier\'s or a Linux vxlan device) uses it there: choose another dstport=N, or local=ADDRESS');
      }
      throw new PierError('EVXLAN', `cannot open the UDP socket of vxlan port ${name}: ${err.message}`, 'check local= (an address of this namespace) and that pier runs as root');
    }
    fds.push(rxFd);
    const txFds: number[] = [];
    const txPorts: number[] = [];
    for (let s = 0; s < SENDERS; s++) {
      // One port in block s: the first free one, so a port taken by someone else is stepped over.
      for (let p = SRC_PORT_MIN + s * BLOCK; p < SRC_PORT_MIN + (s + 1) * BLOCK; p++) {
        try {
          const fd = udpSocket({ netnsPath: ns, family, local: o.local, port: p, sndbuf: SNDBUF });
          fds.push(fd);
          txFds.push(fd);
          txPorts.push(boundPort(fd));
          break;
        } catch (e) {
          if ((e as libc.SysError).errno !== EADDRINUSE) throw noLocal(o, e) ?? new PierError('EVXLAN', `cannot open a sending socket of vxlan port ${name}: ${(e as Error).message}`, 'check local= and that pier runs as root');
        }
      }
    }
    if (txFds.length === 0) throw new PierError('EVXLAN', `no free UDP source port in ${SRC_PORT_MIN}..${SRC_PORT_MAX}`, 'free some ports in that range');
    const spec: VxlanSpec = {
      rxFd, txFds, txPorts, family, vni: o.vni, dstport, local: o.local, remotes: o.remote,
      underlayMtu: mtu, mtuFrom: from, gso: gsoWanted() && hasUdpSegment(txFds[0]!),
      gro: process.env.PIER_VXLAN_GRO !== 'off',
      rco: o.rco === true,
      // (Whether trains may come at all: the group turns UDP_GRO on and off as VNIs join and leave.)
      udpGro: rxGroups.get(key)?.gro === true,
    };
    return { r: { rxFd, txFds, txPorts, netnsPath: ns, rxGroup: key }, spec };
  } catch (e) {
    if (fds.length > 0) leaveRx(key, fds[0]!);
    closeAll(fds.slice(1));
    throw e;
  }
}

export const vxlanControl: ControlHalf<VxlanOptions, VxlanSpec, RealizedVxlan> = {
  prepare(name, o, others) {
    const dstport = o.dstport ?? VXLAN_PORT;
    const where = `UDP port ${dstport}${o.netns ? ` in netns ${o.netns}` : ''}`;
    for (const p of others) {
      const po = p.options as Partial<VxlanOptions>;
      if (po.type !== 'vxlan' || po.netns !== o.netns || (po.dstport ?? VXLAN_PORT) !== dstport) continue;
      if (po.remote?.[0] !== undefined && ipFamily(po.remote[0]) !== ipFamily(o.remote[0]!)) continue;
      // Ports on one address share its socket group, one VNI each; a port on every address
      // (no local=) and one on a single address would split the datagrams between them.
      if (po.local === o.local) {
        if (po.vni === o.vni) {
          throw new PierError('EEXIST', `port ${p.name} already carries VNI ${o.vni} on ${where}`,
            'one port per VNI and UDP port: add the remotes to that port (pier set-port ' + p.name + ' remote=...), or give this one another vni=');
        }
      } else if (po.local === undefined || o.local === undefined) {
        throw new PierError('EEXIST', `port ${p.name} receives on ${where} ${po.local === undefined ? 'on every address' : `on ${po.local}`}, and ${name} would ${o.local === undefined ? 'on every address' : `on ${o.local}`}`,
          `give both the same local= (ports on one address share its UDP port, one VNI each), or ${name} another dstport=N`);
      }
    }
    return o;
  },
  realize(name, o): Realized<VxlanSpec, RealizedVxlan> {
    const { r, spec } = open(name, o);
    const close = (): void => {
      leaveRx(r.rxGroup, r.rxFd);
      closeAll(r.txFds);
    };
    const real: Realized<VxlanSpec, RealizedVxlan> = {
      spec,
      handle: r,
      destroy: close,
      detach: close,
      refresh() {
        const s = real.spec;
        if (s.mtuFrom === 'mtu=') return undefined;
        let now: { mtu: number; from: string };
        try {
          now = underlayMtu(r.netnsPath, { ...o, remote: s.remotes, local: s.local, mtu: undefined });
        } catch {
          return undefined; // no route now: the last MTU stands, and the kernel says what it refuses
        }
        if (now.mtu === s.underlayMtu) return undefined;
        const why = `underlay MTU ${s.underlayMtu} -> ${now.mtu} (${now.from}): inner MTU ${now.mtu - (s.family === 4 ? OVERHEAD_V4 : OVERHEAD_V6)}`;
        real.spec = { ...s, underlayMtu: now.mtu, mtuFrom: now.from };
        return { spec: real.spec, why };
      },
    };
    return real;
  },
  update(_name, real, prev, next) {
    if (ipFamily(next.remote[0]!) !== ipFamily(prev.remote[0]!)) {
      throw new PierError('EINVAL', `remote ${next.remote[0]} is of another family than ${prev.remote[0]}: the port's sockets are IPv${ipFamily(prev.remote[0]!)}`,
        'make the port again: pier set-port NAME remote=... --recreate');
    }
    // The underlay MTU is looked up again only when what it depends on changed: set-port rco=
    // needs no route (refresh() keeps a route's MTU current on its own).
    const same = next.mtu === prev.mtu && next.remote.length === prev.remote.length && next.remote.every((r, i) => r === prev.remote[i]);
    const { mtu, from } = same ? { mtu: real.spec.underlayMtu, from: real.spec.mtuFrom } : underlayMtu(real.handle.netnsPath, next);
    const spec: VxlanSpec = { ...real.spec, remotes: next.remote, underlayMtu: mtu, mtuFrom: from, rco: next.rco === true };
    real.spec = spec;
    return spec;
  },
};
