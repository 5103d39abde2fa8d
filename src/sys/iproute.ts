// Interface configuration inside a namespace through iproute2.
// Why iproute2 and not our own netlink: this is the control path (a few calls per port, never per
// packet); `ip` is on every machine that has network namespaces, its error text is what network
// engineers already read, and the same command lines can be pasted by a user to inspect or repeat
// what pier did. `nsenter --net=PATH` accepts every namespace form (named, /proc/PID/ns/net).
import { execFileSync } from 'node:child_process';

export class IpError extends Error {
  constructor(readonly args: string[], readonly stderr: string) {
    super(`ip ${args.join(' ')}: ${stderr.trim() || 'failed'}`);
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

export interface LinkConfig {
  mac?: string | undefined;
  mtu?: number | undefined;
  addresses: string[];
}

/** Bring an interface to the configured state; every step is idempotent so re-applying is safe. */
export function configureLink(netnsPath: string | undefined, ifname: string, cfg: LinkConfig): void {
  const link = ['link', 'set', 'dev', ifname];
  if (cfg.mac) link.push('address', cfg.mac);
  if (cfg.mtu) link.push('mtu', String(cfg.mtu));
  ip(netnsPath, link);
  for (const a of cfg.addresses) ip(netnsPath, ['addr', 'replace', a, 'dev', ifname]);
  ip(netnsPath, ['link', 'set', 'dev', ifname, 'up']);
  if (netnsPath !== undefined) ip(netnsPath, ['link', 'set', 'dev', 'lo', 'up']);
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

export function linkInfo(netnsPath: string | undefined, ifname: string): LinkInfo | undefined {
  let out: string;
  try {
    out = ip(netnsPath, ['-s', '-j', 'link', 'show', 'dev', ifname]);
  } catch {
    return undefined;
  }
  type Counters = { packets?: number; dropped?: number };
  const j = (JSON.parse(out) as Array<{ ifname: string; address: string; mtu: number; operstate: string; stats64?: { rx?: Counters; tx?: Counters } }>)[0];
  if (!j) return undefined;
  const s = j.stats64 ?? {};
  return {
    ifname: j.ifname, mac: j.address, mtu: j.mtu, operstate: j.operstate,
    rxPackets: s.rx?.packets ?? 0, txPackets: s.tx?.packets ?? 0,
    rxDropped: s.rx?.dropped ?? 0, txDropped: s.tx?.dropped ?? 0,
  };
}

export function linkExists(netnsPath: string | undefined, ifname: string): boolean {
  return linkInfo(netnsPath, ifname) !== undefined;
}

export interface RouteConfig {
  /** Destination prefix, `0.0.0.0/0` for the default route. */
  dst: string;
  /** Next hop; none: the destination is on the link. */
  gw?: string | undefined;
}

/** Add (or replace) routes through `ifname`; idempotent like configureLink. */
export function addRoutes(netnsPath: string | undefined, ifname: string, routes: readonly RouteConfig[]): void {
  for (const r of routes) {
    const args = ['route', 'replace', r.dst];
    if (r.gw) args.push('via', r.gw);
    args.push('dev', ifname);
    ip(netnsPath, args);
  }
}
