// The control-plane half of a vxlan port: the UDP sockets in the underlay's namespace (netns=, by
// default pier's own): one bound to dstport that receives, and SENDERS more bound to source ports
// spread over 49152..65535 that send (the inner flow's hash picks one, so the outer source port
// follows the flow, as RFC 7348 asks for ECMP). The underlay MTU is `mtu=` or the MTU of the route
// to the remotes (the smallest), read when the port is made and again every 5 s (refresh()): a
// change rebuilds the dataplane half with the new limit.
import { PierError } from '../../errors.ts';
import { closeFd, libc } from '../../sys/index.ts';
import { boundPort, hasUdpSegment, ipFamily, routeMtu, trySetInt, udpSocket, EADDRINUSE, SOL_UDP, UDP_GRO } from '../../sys/udp.ts';
import type { ControlHalf, Realized } from '../kind.ts';
import { resolveNetns } from '../tap/control.ts';
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
}

/**
 * How datagrams are sent: `PIER_VXLAN_SEND=sendmmsg` turns UDP_SEGMENT trains off (for measuring
 * one against the other); the default uses them where the kernel has UDP_SEGMENT.
 */
// `PIER_VXLAN_GRO=off` leaves received TCP segments as they came (gro.ts), likewise.
function gsoWanted(): boolean {
  return process.env.PIER_VXLAN_SEND !== 'sendmmsg';
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
      throw new PierError('ENOROUTE', `no route to remote ${r}${o.netns ? ` in netns ${o.netns}` : ''}: ${(e as Error).message}`,
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

function open(name: string, o: VxlanOptions): { r: RealizedVxlan; spec: VxlanSpec } {
  const ns = resolveNetns(o.netns);
  const family = ipFamily(o.remote[0]!) as 4 | 6;
  const dstport = o.dstport ?? VXLAN_PORT;
  const { mtu, from } = underlayMtu(ns, o);
  const fds: number[] = [];
  try {
    let rxFd: number;
    try {
      rxFd = udpSocket({ netnsPath: ns, family, local: o.local, port: dstport, rcvbuf: RCVBUF });
    } catch (e) {
      const err = e as libc.SysError;
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
          if ((e as libc.SysError).errno !== EADDRINUSE) throw new PierError('EVXLAN', `cannot open a sending socket of vxlan port ${name}: ${(e as Error).message}`, 'check local= and that pier runs as root');
        }
      }
    }
    if (txFds.length === 0) throw new PierError('EVXLAN', `no free UDP source port in ${SRC_PORT_MIN}..${SRC_PORT_MAX}`, 'free some ports in that range');
    const spec: VxlanSpec = {
      rxFd, txFds, txPorts, family, vni: o.vni, dstport, local: o.local, remotes: o.remote,
      underlayMtu: mtu, mtuFrom: from, gso: gsoWanted() && hasUdpSegment(txFds[0]!),
      gro: process.env.PIER_VXLAN_GRO !== 'off',
      udpGro: process.env.PIER_VXLAN_UDP_GRO !== 'off' && trySetInt(rxFd, SOL_UDP, UDP_GRO, 1),
    };
    return { r: { rxFd, txFds, txPorts, netnsPath: ns }, spec };
  } catch (e) {
    closeAll(fds);
    throw e;
  }
}

export const vxlanControl: ControlHalf<VxlanOptions, VxlanSpec, RealizedVxlan> = {
  prepare(name, o, others) {
    const dstport = o.dstport ?? VXLAN_PORT;
    for (const p of others) {
      const po = p.options as Partial<VxlanOptions>;
      if (po.type !== 'vxlan') continue;
      if (po.netns === o.netns && (po.dstport ?? VXLAN_PORT) === dstport && (po.local === undefined || o.local === undefined || po.local === o.local)) {
        throw new PierError('EEXIST', `port ${p.name} already receives on UDP port ${dstport}${o.netns ? ` in netns ${o.netns}` : ''}`,
          `a vxlan port owns its UDP port: give ${name} another dstport=N (and its remotes the same), or another local=ADDRESS`);
      }
    }
    return o;
  },
  realize(name, o): Realized<VxlanSpec, RealizedVxlan> {
    const { r, spec } = open(name, o);
    const fds = [r.rxFd, ...r.txFds];
    const real: Realized<VxlanSpec, RealizedVxlan> = {
      spec,
      handle: r,
      destroy: () => closeAll(fds),
      detach: () => closeAll(fds),
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
    const { mtu, from } = underlayMtu(real.handle.netnsPath, next);
    const spec: VxlanSpec = { ...real.spec, remotes: next.remote, underlayMtu: mtu, mtuFrom: from };
    real.spec = spec;
    return spec;
  },
};
