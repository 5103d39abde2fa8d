// The result of an ADD: the previous plugins' (prevResult) with pier's interface, addresses and
// routes appended, or pier's alone when it is first in the chain.
import { isIPv4 } from 'node:net';
import type { Dns, Iface, IpConfig, Result, Route } from './versions.cts';

const v4 = (cidrOrAddr: string): boolean => isIPv4(cidrOrAddr.split('/')[0]!);

/**
 * The routes the container gets: the IPAM plugin's, plus a default route through the gateway of
 * each family when isGateway and IPAM gave none for it. The daemon derives the same from the
 * same request (src/daemon/cni.ts containerRoutes): the result says what the container has.
 */
export function containerRoutes(ips: readonly IpConfig[], routes: readonly Route[], isGateway: boolean): Route[] {
  const out = [...routes];
  if (!isGateway) return out;
  for (const def of ['0.0.0.0/0', '::/0']) {
    const gw = ips.find((i) => i.gateway !== undefined && v4(i.gateway) === v4(def))?.gateway;
    if (gw !== undefined && !routes.some((r) => r.dst === def)) out.push({ dst: def, gw });
  }
  return out;
}

function union(a: string[] | undefined, b: string[] | undefined): string[] | undefined {
  if (!a?.length) return b?.length ? b : undefined;
  return b?.length ? [...new Set([...a, ...b])] : a;
}

function mergeDns(a: Dns, b: Dns): Dns {
  const out: Dns = {};
  const nameservers = union(a.nameservers, b.nameservers);
  if (nameservers) out.nameservers = nameservers;
  const domain = a.domain ?? b.domain;
  if (domain !== undefined) out.domain = domain;
  const search = union(a.search, b.search);
  if (search) out.search = search;
  const options = union(a.options, b.options);
  if (options) out.options = options;
  return out;
}

/**
 * `prev` (or nothing) with `iface` appended and the IPAM addresses pointed at it (their
 * `interface` is its index in the merged list), the routes appended, the DNS settings joined.
 */
export function mergeResult(prev: Result | undefined, iface: Iface, ipam: Result, isGateway: boolean): Result {
  const base: Result = prev ?? { interfaces: [], ips: [], routes: [], dns: {} };
  const index = base.interfaces.length;
  const ips = ipam.ips.map((i) => ({ ...i, interface: index }));
  return {
    interfaces: [...base.interfaces, iface],
    ips: [...base.ips, ...ips],
    routes: [...base.routes, ...containerRoutes(ipam.ips, ipam.routes, isGateway)],
    dns: mergeDns(base.dns, ipam.dns),
  };
}
