// Interface configuration inside a namespace: rtnetlink for what a port's set-up does (link,
// addresses, routes, counters; src/sys/netlink.ts says why), iproute2's `ip` for anything else.
// Errors name the step as the `ip` command line that would do it, with the kernel's text, e.g.
// "ip route replace 10.1.0.0/16 via 10.9.0.1 dev eth0: Network is unreachable (Nexthop has
// invalid gateway)": what a network engineer reads, and a line a user can paste to try again.
// `ip` runs under `nsenter --net=PATH`, which accepts every namespace form (named, /proc/PID/ns/net).
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as c from './libc.ts';
import { ENODEV } from './libc.ts';
import { withNetns } from './netns.ts';
import { SOCK_DGRAM } from './udp.ts';
import { NetlinkError, parseAddr, parseMac, parsePrefix, withRtnl, AF_INET, AF_INET6, type IpAddr, type IpPrefix, type Rtnl } from './netlink.ts';

export class IpError extends Error {
  /** The errno the kernel refused the step with, when it was the kernel (not a parse error, not `ip`'s exit). */
  readonly errno: number | undefined;
  constructor(readonly args: string[], readonly stderr: string, errno?: number) {
    super(`ip ${args.join(' ')}: ${stderr.trim() || 'failed'}`);
    this.errno = errno;
  }
}

export function ip(netnsPath: string | undefined, args: string[]): string {
  const [cmd, argv] = netnsPath === undefined
    ? ['ip', args]
    : ['nsenter', [`--net=${netnsPath}`, 'ip', ...args]];
  try {
    return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new IpError(args, err.stderr ?? err.message);
  }
}

function ipError(args: string[], e: unknown): IpError {
  if (e instanceof IpError) return e;
  if (e instanceof NetlinkError) return new IpError(args, e.message, e.errno);
  return new IpError(args, (e as Error).message);
}

/** Run one netlink step; a failure becomes an IpError naming the step as `ip ARGS`. */
function step<T>(args: string[], fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw ipError(args, e);
  }
}

/** A socket in the namespace, for the steps named by `args` (the first one, if entering fails). */
function session<T>(netnsPath: string | undefined, args: string[], fn: (s: Rtnl) => T): T {
  let opened = false;
  try {
    return withRtnl(netnsPath, (s) => {
      opened = true;
      return fn(s);
    });
  } catch (e) {
    if (opened) throw e;
    throw new IpError(args, `cannot open a netlink socket${netnsPath ? ` in ${netnsPath}` : ''}: ${(e as Error).message}`);
  }
}

function ifindex(s: Rtnl, ifname: string, args: string[]): number {
  try {
    return s.link(ifname).index;
  } catch (e) {
    if (e instanceof NetlinkError && e.errno === ENODEV) throw new IpError(args, `Cannot find device "${ifname}" (${e.message})`, e.errno);
    throw ipError(args, e);
  }
}

function prefixOf(a: string, args: string[]): IpPrefix {
  const p = parsePrefix(a);
  if (!p) throw new IpError(args, `"${a}" is not an address with a prefix length (like 10.0.0.1/24 or fd00::1/64)`);
  return p;
}

export interface LinkConfig {
  mac?: string | undefined;
  mtu?: number | undefined;
  addresses: string[];
}

/**
 * Bring an interface to the configured state: MAC and MTU, the addresses (replaced), up, and `lo`
 * up in a container's namespace. Every step is idempotent, so re-applying is safe; the input is
 * checked before the first change.
 */
export function configureLink(netnsPath: string | undefined, ifname: string, cfg: LinkConfig): void {
  const linkArgs = ['link', 'set', 'dev', ifname];
  if (cfg.mac) linkArgs.push('address', cfg.mac);
  if (cfg.mtu) linkArgs.push('mtu', String(cfg.mtu));
  const mac = cfg.mac ? parseMac(cfg.mac) : undefined;
  if (cfg.mac && !mac) throw new IpError(linkArgs, `"${cfg.mac}" is not a MAC address (like 02:00:00:00:00:01)`);
  const addrs = cfg.addresses.map((a) => {
    const args = ['addr', 'replace', a, 'dev', ifname];
    return { args, p: prefixOf(a, args) };
  });
  session(netnsPath, linkArgs, (s) => {
    const index = ifindex(s, ifname, linkArgs);
    if (mac || cfg.mtu) step(linkArgs, () => s.setLink(index, undefined, { mac, mtu: cfg.mtu || undefined }));
    for (const { args, p } of addrs) step(args, () => s.replaceAddress(index, p));
    step(['link', 'set', 'dev', ifname, 'up'], () => s.setLink(index, undefined, { up: true }));
    if (netnsPath !== undefined) step(['link', 'set', 'dev', 'lo', 'up'], () => s.setLink(0, 'lo', { up: true }));
  });
}

export interface LinkInfo {
  ifname: string;
  mac: string;
  mtu: number;
  operstate: string;
  rxDropped: number;
  txDropped: number;
  rxPackets: number;
  txPackets: number;
}

/** What `ip -s -j link show dev IF` shows that pier uses; undefined when the link (or namespace) is not there. */
export function linkInfo(netnsPath: string | undefined, ifname: string): LinkInfo | undefined {
  let l;
  try {
    l = withRtnl(netnsPath, (s) => s.link(ifname, true));
  } catch {
    return undefined;
  }
  const st = l.stats;
  return {
    ifname: l.ifname, mac: l.mac, mtu: l.mtu, operstate: l.operstate,
    rxPackets: st?.rxPackets ?? 0, txPackets: st?.txPackets ?? 0,
    rxDropped: st?.rxDropped ?? 0, txDropped: st?.txDropped ?? 0,
  };
}

/** Remove an interface (`ip link del`); false when there is none. */
export function deleteLink(netnsPath: string | undefined, ifname: string): boolean {
  return session(netnsPath, ['link', 'del', 'dev', ifname], (s) => {
    let index: number;
    try {
      index = s.link(ifname).index;
    } catch (e) {
      if (e instanceof NetlinkError && e.errno === ENODEV) return false;
      throw ipError(['link', 'del', 'dev', ifname], e);
    }
    step(['link', 'del', 'dev', ifname], () => s.deleteLink(index));
    return true;
  });
}

export function linkExists(netnsPath: string | undefined, ifname: string): boolean {
  try {
    return withRtnl(netnsPath, (s) => s.link(ifname).index > 0);
  } catch {
    return false;
  }
}

export interface RouteConfig {
  /** Destination prefix, `0.0.0.0/0` (or `default`) for the default route. */
  dst: string;
  /** Next hop; none: the destination is on the link. */
  gw?: string | undefined;
}

/** Add (or replace) routes through `ifname` (`ip route replace`); idempotent like configureLink. */
export function addRoutes(netnsPath: string | undefined, ifname: string, routes: readonly RouteConfig[]): void {
  if (routes.length === 0) return;
  const steps = routes.map((r) => {
    const args = ['route', 'replace', r.dst];
    if (r.gw) args.push('via', r.gw);
    args.push('dev', ifname);
    let gw: IpAddr | undefined;
    if (r.gw) {
      gw = parseAddr(r.gw);
      if (!gw) throw new IpError(args, `gateway "${r.gw}" is not an IPv4 or IPv6 address`);
    }
    const dst: IpPrefix = r.dst === 'default' ? { family: gw?.family ?? AF_INET, bytes: new Uint8Array(gw?.family === AF_INET6 ? 16 : 4), len: 0 } : prefixOf(r.dst, args);
    if (gw && gw.family !== dst.family) {
      throw new IpError(args, `gateway ${r.gw} is ${gw.family === AF_INET ? 'IPv4' : 'IPv6'} and ${r.dst} is not`);
    }
    return { args, dst, gw };
  });
  session(netnsPath, steps[0]!.args, (s) => {
    const index = ifindex(s, ifname, steps[0]!.args);
    for (const { args, dst, gw } of steps) step(args, () => s.replaceRoute(index, dst, gw));
  });
}

/**
 * Write a sysctl: `net.ipv4.ip_forward` or its path under /proc/sys. With `netnsPath`, the
 * namespace's own value (/proc/sys/net is per network namespace, resolved when the file is opened).
 */
export function setSysctl(key: string, value: string | number, netnsPath?: string): void {
  const path = key.startsWith('/') ? key : `/proc/sys/${key.replaceAll('.', '/')}`;
  if (!path.startsWith('/proc/sys/') || path.includes('/../')) throw new Error(`${key} is not a sysctl`);
  withNetns(netnsPath, () => writeFileSync(path, `${value}\n`));
}

/** SIOCETHTOOL and ETHTOOL_GCHANNELS (uapi linux/sockios.h, linux/ethtool.h). */
const SIOCETHTOOL = 0x8946;
const ETHTOOL_GCHANNELS = 0x3c;
/** struct ethtool_channels: cmd, then max_rx, max_tx, max_other, max_combined, rx_count, tx_count, other_count, combined_count (u32 each). */
const SIZEOF_ETHTOOL_CHANNELS = 36;
/** struct ifreq: the name, then a union whose ifr_data pointer is at offset 16. */
const SIZEOF_IFREQ = 40;

/**
 * The queues a device runs (`ethtool -l`): rx + combined and tx + combined, as the driver reports
 * them; undefined when it reports none (no get_channels: EOPNOTSUPP) or the device is not there.
 * Netlink's IFLA_NUM_RX_QUEUES is what was allocated, which can be more (a veth allocates one per
 * CPU and runs one).
 */
export function linkChannels(netnsPath: string | undefined, ifname: string): { rx: number; tx: number } | undefined {
  return withNetns(netnsPath, () => {
    const fd = c.socket(AF_INET, SOCK_DGRAM | c.SOCK_CLOEXEC, 0);
    if (fd < 0) return undefined;
    try {
      // Both off the V8 heap, so the addresses handed to the kernel stay put.
      const ch = new Uint8Array(new ArrayBuffer(SIZEOF_ETHTOOL_CHANNELS));
      const cv = new DataView(ch.buffer);
      cv.setUint32(0, ETHTOOL_GCHANNELS, true);
      const req = new Uint8Array(new ArrayBuffer(SIZEOF_IFREQ));
      const name = Buffer.from(ifname);
      if (name.length >= 16) return undefined;
      req.set(name, 0);
      const rv = new DataView(req.buffer);
      const a = c.addressOf(ch);
      rv.setUint32(16, a % 0x100000000, true);
      rv.setUint32(20, Math.floor(a / 0x100000000), true);
      if (c.ioctlPtr(fd, SIOCETHTOOL, req) !== 0) return undefined;
      const combined = cv.getUint32(32, true);
      return { rx: cv.getUint32(20, true) + combined, tx: cv.getUint32(24, true) + combined };
    } finally {
      c.close(fd);
    }
  });
}
