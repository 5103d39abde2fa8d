// The daemon's side of pier-cni (docs/design/cni.md): the requests the plugin sends, the port an
// attachment maps to, and the state derived from all attachments together (gateway ports, the
// masquerade table). Pure functions; daemon.ts applies what they compute.
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';
import { PierError } from '../errors.ts';
import { IFNAME_MAX } from '../ports/fields.ts';

const id = z.string().min(1).max(256);
const cidr = z.string().min(3).max(64);
const addr = z.string().min(2).max(46).refine((s) => isIPv4(s) || isIPv6(s), { message: 'not an IPv4 or IPv6 address' });

/** Who made a port: an attachment (network, container, interface) of the CNI plugin. */
export const cniOwner = z.object({
  kind: z.literal('cni'),
  network: id,
  containerId: id,
  ifname: z.string().min(1).max(IFNAME_MAX),
  netns: z.string().max(4096).optional(),
  /**
   * The namespace's identity (`dev:inode` of the nsfs file) when it was attached: a path such as
   * /proc/PID/ns/net can name another process's namespace once the PID is reused, and a port must
   * never be made again in a namespace that is not its container's.
   */
  netnsId: z.string().max(64).optional(),
  routes: z.array(z.object({ dst: cidr, gw: addr.optional() })).default([]),
  /** `gateway/prefix` addresses the host takes on the bridge's gateway port (isGateway). */
  gateways: z.array(cidr).default([]),
  /** Subnets masqueraded when traffic from them leaves the host (ipMasq). */
  masquerade: z.array(cidr).default([]),
  /** The IPAM plugin's config and CNI_PATH, so the daemon can free the addresses of a port it reaps. */
  ipam: z.object({ conf: z.record(z.string(), z.unknown()), cniPath: z.string().max(4096) }).optional(),
});
export type CniOwner = z.output<typeof cniOwner>;

/** The host's gateway port of a bridge, made and removed as its attachments need it. */
export const gatewayOwner = z.object({ kind: z.literal('cni-gateway'), bridge: id });
export type GatewayOwner = z.output<typeof gatewayOwner>;

export const portOwner = z.discriminatedUnion('kind', [cniOwner, gatewayOwner]);
export type PortOwner = z.output<typeof portOwner>;

const key = { network: id, containerId: id, ifname: z.string().min(1).max(IFNAME_MAX) };

export const cniAddRequest = z.strictObject({
  ...key,
  netns: z.string().max(4096).optional(),
  bridge: z.string().min(1).max(64),
  portType: z.enum(['tap', 'virtio-user', 'vhost-user']).default('tap'),
  mtu: z.number().int().optional(),
  mac: z.string().optional(),
  options: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
  ips: z.array(z.object({ address: cidr, gateway: addr.optional() })).default([]),
  routes: z.array(z.object({ dst: cidr, gw: addr.optional() })).default([]),
  isGateway: z.boolean().default(false),
  ipMasq: z.boolean().default(false),
  /** Secure the port (docs/design/port-security.md); absent: off, as before the key existed. */
  portSecurity: z.boolean().default(false),
  /** Addresses the port may send from besides IPAM's (a chained plugin's). */
  allowed: z.array(addr).max(64).optional(),
  socketDir: z.string().max(80).optional(),
  ipam: z.object({ conf: z.record(z.string(), z.unknown()), cniPath: z.string().max(4096) }).optional(),
});
export type CniAddRequest = z.output<typeof cniAddRequest>;

export const cniKeyRequest = z.object({ ...key, ips: z.array(cidr).optional(), portSecurity: z.boolean().optional() });
export const cniGcRequest = z.object({ network: id, valid: z.array(z.object({ containerId: id, ifname: z.string() })).max(1 << 20) });

/** Parse the one JSON argument of a cni-* command; EINVAL names what is wrong. */
export function parseRequest<T extends z.ZodType>(schema: T, cmd: string, arg: string | undefined): z.output<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(arg ?? '');
  } catch {
    throw new PierError('EINVAL', `${cmd}: its argument is not JSON`, 'pier-cni sends one JSON object; see docs/design/cni.md');
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new PierError('EINVAL', `${cmd}: ${i.path.join('.') || 'request'}: ${i.message}`, 'see docs/design/cni.md for the request');
  }
  return r.data;
}

/** The port of an attachment: stable, found again from the triple alone by every verb. */
export function attachmentPort(network: string, containerId: string, ifname: string): string {
  return 'cni-' + createHash('sha256').update(`${network}\0${containerId}\0${ifname}`).digest('hex').slice(0, 12);
}

/** The gateway port of a bridge, which is also its interface name in the host's namespace. */
export function gatewayPort(bridge: string): string {
  const n = `${bridge}-gw`;
  return Buffer.byteLength(n) <= IFNAME_MAX && /^[A-Za-z0-9_.][A-Za-z0-9_.-]*$/.test(n) ? n : 'gw-' + createHash('sha256').update(bridge).digest('hex').slice(0, 12);
}

/** `10.88.0.5/16` -> `10.88.0.0/16` (IPv4 and IPv6). */
export function subnetOf(c: string): string {
  const [a, lenText] = c.split('/');
  const len = Number(lenText);
  if (isIPv4(a!)) {
    const n = a!.split('.').reduce((v, o) => (v << 8) | Number(o), 0) >>> 0;
    const mask = len === 0 ? 0 : (~0 << (32 - len)) >>> 0;
    const m = (n & mask) >>> 0;
    return `${[24, 16, 8, 0].map((s) => (m >>> s) & 255).join('.')}/${len}`;
  }
  const words = expandV6(a!);
  let bits = len;
  const out = words.map((w) => {
    const keep = Math.max(0, Math.min(16, bits));
    bits -= 16;
    return keep === 0 ? 0 : w & ((0xffff << (16 - keep)) & 0xffff);
  });
  return `${out.map((w) => w.toString(16)).join(':').replace(/(^|:)0(:0)+(:|$)/, '::')}/${len}`;
}

function expandV6(a: string): number[] {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail.length > 0 ? tail.split(':') : [];
  const fill = tail === undefined ? [] : new Array<string>(8 - h.length - t.length).fill('0');
  return [...h, ...fill, ...t].map((x) => parseInt(x, 16));
}

/** The routes the container gets: IPAM's, with the gateway of their family where none is named, plus the default route through the gateway (isGateway). */
export function containerRoutes(req: CniAddRequest): Array<{ dst: string; gw?: string }> {
  const gwOf = (dst: string): string | undefined => req.ips.find((i) => i.gateway && isIPv4(i.gateway) === isIPv4(dst.split('/')[0]!))?.gateway;
  const out = req.routes.map((r) => ({ dst: r.dst, gw: r.gw ?? gwOf(r.dst) }));
  if (req.isGateway) {
    for (const def of ['0.0.0.0/0', '::/0']) {
      const gw = gwOf(def);
      if (gw && !out.some((r) => r.dst === def)) out.push({ dst: def, gw });
    }
  }
  return out.map((r) => (r.gw ? r : { dst: r.dst }));
}

/** What the owner record of an attachment keeps (see cniOwner). */
export function ownerOf(req: CniAddRequest, netnsId: string | undefined): CniOwner {
  const gateways = req.isGateway ? req.ips.filter((i) => i.gateway).map((i) => `${i.gateway}/${i.address.split('/')[1]}`) : [];
  return {
    kind: 'cni', network: req.network, containerId: req.containerId, ifname: req.ifname, netns: req.netns, netnsId,
    routes: req.portType === 'vhost-user' ? [] : containerRoutes(req),
    gateways, masquerade: req.ipMasq ? [...new Set(req.ips.map((i) => subnetOf(i.address)))] : [], ipam: req.ipam,
  };
}

/**
 * The port options of an attachment, as words the kind's schema checks (so a key a kind does
 * not take, `offloads` on a vhost-user port, is refused with the schema's message).
 */
export function portOptionsOf(req: CniAddRequest, socketPath: string): Record<string, unknown> {
  const o: Record<string, unknown> = { ...req.options };
  const ips = req.ips.map((i) => i.address);
  if (req.mtu !== undefined) o.mtu = req.mtu;
  // Secured: the container interface's MAC (pier makes it) and the addresses IPAM gave it; a
  // vhost-user application's MAC comes with the request (config.cts refuses one without).
  if (req.portSecurity) o['port-security'] = true;
  const extra = [...(req.portType === 'vhost-user' ? ips.map((a) => a.split('/')[0]!) : []), ...(req.allowed ?? [])];
  if (req.portSecurity && extra.length > 0) o['allowed-addresses'] = extra;
  if (req.mac) o.mac = req.mac;
  if (req.portType === 'vhost-user') return { ...o, type: 'vhost-user', path: socketPath };
  const link = { netns: req.netns, ifname: req.ifname, ...(ips.length ? { ip: ips } : {}) };
  if (req.portType === 'virtio-user') return { ...o, type: 'virtio-user', path: '/dev/vhost-net', ...link };
  return { ...o, type: 'tap', ...link };
}

/** `/run/pier/vhost-user/<containerId:12>-<ifname>.sock`: short enough for sun_path, one per attachment. */
export function socketPathOf(req: CniAddRequest): string {
  const dir = req.socketDir ?? '/run/pier/vhost-user';
  const p = `${dir.replace(/\/+$/, '')}/${req.containerId.slice(0, 12)}-${req.ifname}.sock`;
  if (!dir.startsWith('/') || Buffer.byteLength(p) > 107) {
    throw new PierError('EINVAL', `socketDir ${dir} gives the socket path ${p}, which is not absolute or over 107 bytes`, 'choose a shorter absolute socketDir');
  }
  return p;
}

/** `dev:inode` of a namespace file, undefined when there is none (see cniOwner.netnsId). */
export function namespaceId(path: string): string | undefined {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/** The nftables transaction that makes table `inet pier` masquerade exactly `rules` (none: the table goes). */
export function masqueradeRuleset(rules: ReadonlyArray<{ network: string; subnet: string }>): string {
  const lines = ['table inet pier', 'delete table inet pier'];
  if (rules.length === 0) return lines.join('\n') + '\n';
  lines.push('table inet pier {', '  chain postrouting {', '    type nat hook postrouting priority srcnat; policy accept;');
  for (const r of rules) {
    const fam = r.subnet.includes(':') ? 'ip6' : 'ip';
    lines.push(`    ${fam} saddr ${r.subnet} ${fam} daddr != ${r.subnet} masquerade comment ${JSON.stringify(`pier-cni network ${r.network}`.replace(/"/g, "'"))}`);
  }
  lines.push('  }', '}');
  return lines.join('\n') + '\n';
}
