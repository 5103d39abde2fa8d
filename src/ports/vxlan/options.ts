// A vxlan port's options: `pier add-port br0 vx0 type=vxlan vni=42 remote=192.0.2.2[,192.0.2.3..]
// [local=192.0.2.1] [dstport=4789] [netns=NS] [mtu=N] [rco=on|off]`. `mtu` is the underlay's MTU (default: the
// MTU of the route to the first remote, read when the port is made); the inner MTU is 50 less over
// IPv4, 70 over IPv6.
import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';
import { intIn, netns, onOff } from '../fields.ts';

/** Most remotes a port replicates to (head-end replication sends one copy each). */
export const REMOTES_MAX = 64;

const family = (a: string): number => (isIPv4(a) ? 4 : isIPv6(a) ? 6 : 0);

const address = z.string().superRefine((s, ctx) => {
  if (family(s) === 0) ctx.addIssue({ code: 'custom', message: `'${s}' is not an IPv4 or IPv6 address` });
});

/** `a,b,c` as typed, or the stored list: unicast addresses of one family, no duplicates. */
const remotes = z.union([z.array(z.string()), z.string()]).transform((v, ctx) => {
  const list = typeof v === 'string' ? v.split(',').filter((x) => x.length > 0) : v;
  if (list.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'at least one remote address is needed (remote=A[,B..])' });
    return z.NEVER;
  }
  if (list.length > REMOTES_MAX) {
    ctx.addIssue({ code: 'custom', message: `${list.length} remotes; a vxlan port replicates to at most ${REMOTES_MAX}` });
    return z.NEVER;
  }
  for (const a of list) {
    if (family(a) === 0) {
      ctx.addIssue({ code: 'custom', message: `'${a}' is not an IPv4 or IPv6 address` });
      return z.NEVER;
    }
    if (family(a) !== family(list[0]!)) {
      ctx.addIssue({ code: 'custom', message: `${a} and ${list[0]} are of different families: a port's remotes are all IPv4 or all IPv6` });
      return z.NEVER;
    }
  }
  if (new Set(list).size !== list.length) {
    ctx.addIssue({ code: 'custom', message: `${list.join(',')} names a remote twice` });
    return z.NEVER;
  }
  return list;
});

export const vxlanOptions = z.strictObject({
  type: z.literal('vxlan'),
  vni: intIn(0, 0xffffff, 'VXLAN network identifier, 24 bits'),
  remote: remotes,
  local: address.optional(),
  dstport: intIn(1, 65535, 'UDP port').optional(),
  netns: netns.optional(),
  mtu: intIn(576, 65535, 'the underlay MTU').optional(),
  /** Send partial inner checksums as they are, with remote checksum offload (header.ts). */
  rco: onOff.optional(),
}).superRefine((o, ctx) => {
  if (o.local !== undefined && family(o.local) !== family(o.remote[0]!)) {
    ctx.addIssue({ code: 'custom', path: ['local'], message: `local ${o.local} and remote ${o.remote[0]} are of different families` });
  }
});
export type VxlanOptions = z.output<typeof vxlanOptions>;

/** What the dataplane half is built from. */
export interface VxlanSpec {
  /** The socket bound to dstport: receives every tunnel's datagrams. */
  rxFd: number;
  /** Sending sockets, each bound to its own source port (the flow hash picks one). */
  txFds: number[];
  txPorts: number[];
  family: 4 | 6;
  vni: number;
  dstport: number;
  local: string | undefined;
  remotes: string[];
  underlayMtu: number;
  /** Where underlayMtu came from: `mtu=` or the route's device. */
  mtuFrom: string;
  /** Send trains of equal-size datagrams with one UDP_SEGMENT sendmmsg entry each. */
  gso: boolean;
  /** Coalesce received TCP segments of a flow into TSO super-frames (gro.ts). */
  gro: boolean;
  /** Remote checksum offload on send: the port takes partial checksums and says where they are. */
  rco: boolean;
  /** The receiving socket has UDP_GRO: a UDP_SEGMENT train that crossed a veth whole arrives as one message. */
  udpGro: boolean;
}
