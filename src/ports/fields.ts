// The option fields port kinds share. Each is one zod schema that takes either the word a user
// typed (`mtu=9000`) or the value stored in state.json (9000) and yields the value: so a kind's
// one schema parses the CLI and validates the stored state alike, with the same messages.
import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';

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

export const ifname = z.string().superRefine((s, ctx) => {
  const bytes = Buffer.byteLength(s);
  if (bytes > IFNAME_MAX) ctx.addIssue({ code: 'custom', message: `'${s}' is ${bytes} bytes; Linux interface names are at most ${IFNAME_MAX} bytes: choose a shorter ifname=NAME` });
  else if (!/^[A-Za-z0-9_.][A-Za-z0-9_.-]*$/.test(s) || s === '.' || s === '..') ctx.addIssue({ code: 'custom', message: `'${s}' is not a usable interface name: use letters, digits, '_', '.', '-'` });
});

/** A word that is a number, whole or not, signed or not: anything else is "not a number", not "out of range". */
const numeral = /^-?\d+(\.\d+)?$/;

/** An integer in lo..hi (a power of two if asked): a word of digits, or the stored number. Refused, never clamped. */
export const intIn = (lo: number, hi: number, what: string, pow2 = false) => z.union([z.number(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'string' && !numeral.test(v)) {
    ctx.addIssue({ code: 'custom', message: `'${v}' is not a number: expected ${pow2 ? 'a power of two in ' : ''}${lo}..${hi} (${what})` });
    return z.NEVER;
  }
  const n = typeof v === 'number' ? v : /^\d+$/.test(v) ? Number(v) : NaN;
  if (!(Number.isInteger(n) && n >= lo && n <= hi) || (pow2 && (n & (n - 1)) !== 0)) {
    ctx.addIssue({ code: 'custom', message: `${v} is not ${pow2 ? 'a power of two ' : ''}in ${lo}..${hi} (${what}; pier refuses rather than clamps)` });
    return z.NEVER;
  }
  return n;
});

export const mtu = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : /^\d+$/.test(v) ? Number(v) : NaN;
  if (!(Number.isInteger(n) && n >= TAP_MTU_MIN && n <= TAP_MTU_MAX)) {
    ctx.addIssue({ code: 'custom', message: `${typeof v === 'string' && !numeral.test(v) ? `'${v}' is not a number` : `${v} is out of range`}: a tap port's MTU is ${TAP_MTU_MIN}..${TAP_MTU_MAX}` });
    return z.NEVER;
  }
  return n;
});

export const mac = z.string().superRefine((s, ctx) => {
  if (!macRe.test(s)) ctx.addIssue({ code: 'custom', message: `'${s}' is not a MAC address: expected six hex pairs such as 02:00:00:00:00:01` });
  else if (parseInt(s.slice(0, 2), 16) & 1) ctx.addIssue({ code: 'custom', message: `${s} is a multicast address: the first octet must be even (02:... is a safe local choice)` });
}).transform((s) => s.toLowerCase());

/** Addresses with prefix: `a/n,b/m` as typed, or the stored list. */
export const ipList = z.union([z.array(z.string()), z.string()]).transform((v, ctx) => {
  const list = typeof v === 'string' ? v.split(',').filter((x) => x.length > 0) : v;
  for (const a of list) {
    const p = cidrProblem(a);
    if (p) {
      ctx.addIssue({ code: 'custom', message: `'${a}': ${p}` });
      return z.NEVER;
    }
  }
  return list;
});

/**
 * on/off (true/false) as typed, or the stored boolean. A bad word's issue carries the words to
 * use (params.use), which the message's hint names with the key (parse.ts).
 */
export const onOff = z.union([z.boolean(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'boolean') return v;
  if (v === 'on' || v === 'true') return true;
  if (v === 'off' || v === 'false') return false;
  ctx.addIssue({ code: 'custom', message: `'${v}' is not on or off`, params: { use: 'on|off' } });
  return z.NEVER;
});

export const netns = z.string().min(1);

export const sockPath = z.string().superRefine((s, ctx) => {
  const n = Buffer.byteLength(s);
  if (!s.startsWith('/')) ctx.addIssue({ code: 'custom', message: `'${s}' is not an absolute path` });
  else if (n > 107) ctx.addIssue({ code: 'custom', message: `'${s}' is ${n} bytes; unix socket paths are at most 107 bytes: choose a shorter path` });
});

/** A stable locally administered unicast MAC, so a restarted port keeps its address. */
export function randomMac(): string {
  const b = Buffer.alloc(6);
  for (let i = 0; i < 6; i++) b[i] = Math.floor(Math.random() * 256);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** VLAN ids a port may name: 0 is "no VLAN", 4095 is reserved (IEEE 802.1Q). */
export const VLAN_ID_MIN = 1;
export const VLAN_ID_MAX = 4094;

/** Most dataplane threads a daemon runs (`pier daemon --dataplane-threads`). */
export const MAX_DATAPLANE_THREADS = 16;

/** `thread=N`: the dataplane thread a port runs on (checked against the running daemon's count there). */
export const dataplaneThread = intIn(0, MAX_DATAPLANE_THREADS - 1, 'a dataplane thread');

/** `tag=N`: an access port's VLAN, a word of digits or the stored number. */
export const vlanTag = intIn(VLAN_ID_MIN, VLAN_ID_MAX, 'a VLAN id');

/**
 * `trunks=10,20,30-40`: the VLANs of a trunk port, as typed (ids and ranges) or the stored list;
 * yields the ids sorted, each once.
 */
export const vlanTrunks = z.union([z.array(z.number()), z.string()]).transform((v, ctx) => {
  const ids = new Set<number>();
  const bad = (what: string): typeof z.NEVER => {
    ctx.addIssue({ code: 'custom', message: `${what}: expected VLAN ids and ranges such as 10,20,30-40, each in ${VLAN_ID_MIN}..${VLAN_ID_MAX}` });
    return z.NEVER;
  };
  const parts = typeof v === 'string' ? v.split(',') : v.map(String);
  if (parts.length === 0 || (parts.length === 1 && parts[0] === '')) return bad('no VLAN given');
  for (const part of parts) {
    const m = /^(\d{1,4})(?:-(\d{1,4}))?$/.exec(part);
    if (!m) return bad(`'${part}' is not a VLAN id or range`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (lo < VLAN_ID_MIN || hi > VLAN_ID_MAX) return bad(`${part} is not in ${VLAN_ID_MIN}..${VLAN_ID_MAX}`);
    if (hi < lo) return bad(`${part} is a range that ends before it starts`);
    for (let i = lo; i <= hi; i++) ids.add(i);
  }
  return [...ids].sort((a, b) => a - b);
});

// ---- port security (docs/design/port-security.md) ----

/** An allowed address: an IP, an IP prefix, a MAC, or MAC/IP (the IP only from that MAC). */
export interface AllowedAddress {
  mac?: string;
  ip?: string;
}

function allowedProblem(s: string): string | undefined {
  const m = /^([0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5})(?:\/(.+))?$/.exec(s);
  const ipPart = m ? m[2] : s;
  if (m && parseInt(m[1]!.slice(0, 2), 16) & 1) return `${m[1]} is a multicast address: a port never sends from one`;
  if (ipPart === undefined) return undefined;
  const [addr, len, extra] = ipPart.split('/');
  const max = isIPv4(addr ?? '') ? 32 : isIPv6(addr ?? '') ? 128 : -1;
  if (max < 0 || extra !== undefined) return 'expected IP, IP/PREFIX, MAC or MAC/IP, for example 10.0.0.100, fd00::/64 or 02:00:00:00:00:01/10.0.0.101';
  if (len !== undefined && (!/^\d{1,3}$/.test(len) || Number(len) > max)) return `prefix length ${len} is not in 0..${max}`;
  if (m && len !== undefined) return 'a MAC/IP pair takes one address, not a prefix';
  return undefined;
}

/** `allowed-addresses=`: a comma list as typed, or the stored list; each entry checked, MACs lower-cased. */
export const allowedAddresses = z.union([z.array(z.string()), z.string()]).transform((v, ctx) => {
  const list = typeof v === 'string' ? v.split(',').filter((x) => x.length > 0) : v;
  for (const a of list) {
    const p = allowedProblem(a);
    if (p) {
      ctx.addIssue({ code: 'custom', message: `'${a}': ${p}` });
      return z.NEVER;
    }
  }
  return list.map((a) => (macRe.test(a.slice(0, 17)) ? a.slice(0, 17).toLowerCase() + a.slice(17) : a));
});

/** One allowed-addresses entry as parts. */
export function splitAllowed(a: string): AllowedAddress {
  if (macRe.test(a.slice(0, 17)) && (a.length === 17 || a[17] === '/')) {
    const ip = a.length > 17 ? a.slice(18) : undefined;
    return ip === undefined ? { mac: a.slice(0, 17).toLowerCase() } : { mac: a.slice(0, 17).toLowerCase(), ip };
  }
  return { ip: a };
}

/** `mac-limit=`: addresses a port may have learned at once (0: only the table's size). */
export const macLimit = intIn(0, 1 << 20, 'addresses learned on the port; 0 for no limit but the table');
/** `storm-limit=`: broadcast + multicast + unknown unicast into the switch, packets/s (0: none). */
export const stormLimit = intIn(0, 100_000_000, 'packets/s of broadcast, multicast and unknown unicast; 0 for no limit');
