// Port options: parsed from `key=value` words, validated completely before anything is changed.
import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';
import { PierError } from './errors.ts';

export const TAP_MTU_MIN = 68;
export const TAP_MTU_MAX = 65521; // tun: 65535 - Ethernet header
export const IFNAME_MAX = 15;

const macRe = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i;

function cidrProblem(s: string): string | undefined {
  const [addr, len, extra] = s.split('/');
  if (!addr || len === undefined || extra !== undefined || !/^\d{1,3}$/.test(len)) return 'expected ADDRESS/PREFIX, for example 10.0.0.1/24';
  const max = isIPv4(addr) ? 32 : isIPv6(addr) ? 128 : -1;
  if (max < 0) return `${addr} is not an IPv4 or IPv6 address`;
  if (Number(len) > max) return `prefix length ${len} is over ${max}`;
  return undefined;
}

const ifname = z.string().superRefine((s, ctx) => {
  const bytes = Buffer.byteLength(s);
  if (bytes > IFNAME_MAX) ctx.addIssue({ code: 'custom', message: `'${s}' is ${bytes} bytes; Linux interface names are at most ${IFNAME_MAX} bytes: choose a shorter ifname=NAME` });
  else if (!/^[A-Za-z0-9_.][A-Za-z0-9_.-]*$/.test(s) || s === '.' || s === '..') ctx.addIssue({ code: 'custom', message: `'${s}' is not a usable interface name: use letters, digits, '_', '.', '-'` });
});

const mtu = z.string().transform((s, ctx) => {
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!(n >= TAP_MTU_MIN && n <= TAP_MTU_MAX)) {
    ctx.addIssue({ code: 'custom', message: `${s} is out of range: a tap port's MTU is ${TAP_MTU_MIN}..${TAP_MTU_MAX}` });
    return z.NEVER;
  }
  return n;
});

const mac = z.string().superRefine((s, ctx) => {
  if (!macRe.test(s)) ctx.addIssue({ code: 'custom', message: `'${s}' is not a MAC address: expected six hex pairs such as 02:00:00:00:00:01` });
  else if (parseInt(s.slice(0, 2), 16) & 1) ctx.addIssue({ code: 'custom', message: `${s} is a multicast address: the first octet must be even (02:... is a safe local choice)` });
}).transform((s) => s.toLowerCase());

const ipList = z.string().transform((s, ctx) => {
  const list = s.split(',').filter((x) => x.length > 0);
  for (const a of list) {
    const p = cidrProblem(a);
    if (p) {
      ctx.addIssue({ code: 'custom', message: `'${a}': ${p}` });
      return z.NEVER;
    }
  }
  return list;
});

const onOff = z.enum(['on', 'off', 'true', 'false']).transform((s) => s === 'on' || s === 'true');

export const tapOptions = z.strictObject({
  type: z.literal('tap'),
  netns: z.string().min(1).optional(),
  ip: ipList.optional(),
  mac: mac.optional(),
  mtu: mtu.optional(),
  ifname: ifname.optional(),
  offloads: onOff.optional(),
});
export type TapOptions = z.output<typeof tapOptions>;

const sockPath = z.string().superRefine((s, ctx) => {
  const n = Buffer.byteLength(s);
  if (!s.startsWith('/')) ctx.addIssue({ code: 'custom', message: `'${s}' is not an absolute path` });
  else if (n > 107) ctx.addIssue({ code: 'custom', message: `'${s}' is ${n} bytes; unix socket paths are at most 107 bytes: choose a shorter path` });
});

const intIn = (lo: number, hi: number, what: string, pow2 = false) => z.string().transform((s, ctx) => {
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!(n >= lo && n <= hi) || (pow2 && (n & (n - 1)) !== 0)) {
    ctx.addIssue({ code: 'custom', message: `${s} is not ${pow2 ? 'a power of two ' : ''}in ${lo}..${hi} (${what}; pier refuses rather than clamps)` });
    return z.NEVER;
  }
  return n;
});

const vhostCommon = {
  path: sockPath,
  queues: intIn(1, 16, 'queue pairs').optional(),
  mtu: intIn(68, 65521, 'MTU').optional(),
  'queue-size': intIn(64, 32768, 'largest ring the peer may use', true).optional(),
  'busy-poll': onOff.optional(),
  /** Refuse peer memory that cannot be sealed against shrinking (docs/design/peer-memory.md). */
  'strict-memory': onOff.optional(),
};
export const vhostUserOptions = z.strictObject({ type: z.literal('vhost-user'), ...vhostCommon });
export const vhostUserClientOptions = z.strictObject({ type: z.literal('vhost-user-client'), ...vhostCommon });
export type VhostUserOptions = z.output<typeof vhostUserOptions> | z.output<typeof vhostUserClientOptions>;
export const virtioUserOptions = z.strictObject({
  type: z.literal('virtio-user'),
  path: sockPath,
  server: onOff.optional(),
  'queue-size': intIn(64, 32768, 'ring size', true).optional(),
  queues: intIn(1, 16, 'queue pairs').optional(),
  // for path=/dev/vhost-net: the kernel's tap, in the container
  netns: z.string().min(1).optional(),
  ip: ipList.optional(),
  mac: mac.optional(),
  mtu: mtu.optional(),
  ifname: ifname.optional(),
});
export type VirtioUserOptions = z.output<typeof virtioUserOptions>;
export type PortOptions = TapOptions | VhostUserOptions | VirtioUserOptions;

export const PORT_TYPES: Record<string, z.ZodType> = {
  tap: tapOptions,
  'vhost-user': vhostUserOptions,
  'vhost-user-client': vhostUserClientOptions,
  'virtio-user': virtioUserOptions,
};

/** `['type=tap', 'netns=c1']` -> `{ type: 'tap', netns: 'c1' }`, every word checked. */
export function parseKeyValues(words: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const w of words) {
    const eq = w.indexOf('=');
    if (eq <= 0) throw new PierError('EINVAL', `'${w}' is not an option`, 'options are KEY=VALUE words, for example type=tap netns=c1');
    const k = w.slice(0, eq);
    if (k in out) throw new PierError('EINVAL', `option ${k} is given twice`, 'give each option once');
    out[k] = w.slice(eq + 1);
  }
  return out;
}

export function validatePortOptions(raw: Record<string, string>): PortOptions {
  const type = raw.type;
  if (type === undefined) throw new PierError('EINVAL', 'the port has no type', `add type=TYPE; types: ${Object.keys(PORT_TYPES).join(', ')}`);
  const schema = PORT_TYPES[type];
  if (!schema) throw new PierError('EINVAL', `unknown port type '${type}'`, `types: ${Object.keys(PORT_TYPES).join(', ')}`);
  const r = schema.safeParse(raw);
  if (r.success) return r.data as PortOptions;
  const issue = r.error.issues[0]!;
  const keys = Object.keys((schema as unknown as { shape: Record<string, unknown> }).shape);
  if (issue.code === 'unrecognized_keys') {
    const k = issue.keys.join(', ');
    throw new PierError('EINVAL', `unknown option key ${k} for a ${type} port`, `valid keys: ${keys.join(', ')}`);
  }
  const key = String(issue.path[0] ?? '');
  if (issue.code === 'invalid_type' && issue.input === undefined) throw new PierError('EINVAL', `a ${type} port needs ${key}=`, `add ${key}=...`);
  throw new PierError('EINVAL', `bad ${key}: ${issue.message}`, `fix ${key}=... and run the command again`);
}

/** A stable locally administered unicast MAC, so a restarted port keeps its address. */
export function randomMac(): string {
  const b = Buffer.alloc(6);
  for (let i = 0; i < 6; i++) b[i] = Math.floor(Math.random() * 256);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
