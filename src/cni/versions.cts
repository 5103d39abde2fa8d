// CNI versions: which pier-cni speaks, and results moved between them. Inside, a result has the
// 1.1.0 shape; it is read from and written to the version a request (or a delegated plugin) uses.
// 0.4.0 tags each IP with its family (`version`), 1.0.0 drops that, 1.1.0 adds an interface's
// `mtu`, `socketPath` and `pciID`.
export const SUPPORTED = ['0.4.0', '1.0.0', '1.1.0'] as const;
export const CURRENT = '1.1.0';

export interface Iface { name: string; mac?: string; mtu?: number; sandbox?: string; socketPath?: string; pciID?: string }
export interface IpConfig { address: string; gateway?: string; interface?: number }
export interface Route { dst: string; gw?: string; [extra: string]: unknown }
export interface Dns { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] }
export interface Result { interfaces: Iface[]; ips: IpConfig[]; routes: Route[]; dns: Dns }

/** -1, 0, 1 as a is older than, the same as, newer than b (x.y.z numbers only). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

export function isSupported(v: string): boolean {
  return (SUPPORTED as readonly string[]).includes(v);
}

/** The newest of `offered` that is not newer than `wanted` (what a delegated plugin is spoken to in). */
export function bestVersion(offered: readonly string[], wanted: string): string | undefined {
  let best: string | undefined;
  for (const v of offered) {
    if (!/^\d+\.\d+\.\d+$/.test(v) || compareVersions(v, wanted) > 0) continue;
    if (best === undefined || compareVersions(v, best) > 0) best = v;
  }
  return best;
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/**
 * A result read off the wire (a prevResult, an IPAM plugin's answer) in the 1.1.0 shape. Throws
 * a message naming the first field that is not what the spec says; the caller adds the context.
 */
export function readResult(raw: unknown): Result {
  if (!isObj(raw)) throw new Error('is not a JSON object');
  const list = (k: string): unknown[] => {
    const v = raw[k];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) throw new Error(`${k} is not a list`);
    return v;
  };
  const interfaces = list('interfaces').map((i, n) => {
    if (!isObj(i) || typeof i.name !== 'string') throw new Error(`interfaces[${n}] has no name`);
    return i as unknown as Iface;
  });
  const ips = list('ips').map((i, n) => {
    if (!isObj(i) || typeof i.address !== 'string') throw new Error(`ips[${n}] has no address`);
    if (i.interface !== undefined && !(Number.isInteger(i.interface) && (i.interface as number) >= 0)) throw new Error(`ips[${n}].interface is not an index`);
    const { version: _family, ...ip } = i; // 0.4.0's family tag: implied by the address
    return ip as unknown as IpConfig;
  });
  const routes = list('routes').map((r, n) => {
    if (!isObj(r) || typeof r.dst !== 'string') throw new Error(`routes[${n}] has no dst`);
    return r as Route;
  });
  const dns = raw.dns === undefined || raw.dns === null ? {} : raw.dns;
  if (!isObj(dns)) throw new Error('dns is not an object');
  return { interfaces, ips, routes, dns };
}

/** A result as version `v` writes it (empty lists and an empty dns left out, as libcni does). */
export function writeResult(r: Result, v: string): Record<string, unknown> {
  const v11 = compareVersions(v, '1.1.0') >= 0;
  const v04 = compareVersions(v, '1.0.0') < 0;
  const out: Record<string, unknown> = { cniVersion: v };
  if (r.interfaces.length > 0) {
    out.interfaces = r.interfaces.map((i) => {
      if (v11) return i;
      const { mtu: _m, socketPath: _s, pciID: _p, ...older } = i;
      return older;
    });
  }
  if (r.ips.length > 0) out.ips = v04 ? r.ips.map((i) => ({ version: i.address.includes(':') ? '6' : '4', ...i })) : r.ips;
  if (r.routes.length > 0) out.routes = r.routes;
  if (Object.keys(r.dns).length > 0) out.dns = r.dns;
  return out;
}
