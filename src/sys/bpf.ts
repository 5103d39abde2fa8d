// The bpf() syscall, as much of it as pier needs: for an AF_XDP port an XSKMAP and the XDP program
// that redirects into it (assembled here: six instruction slots), for vxlan ports that share a UDP
// port the SK_REUSEPORT program that picks a socket by VNI (vniSelectProgram, below), map updates,
// and what the kernel says about a loaded program. No libbpf: pier is its own loader
// (docs/design/uplinks.md).
//
// The program, per received frame:
//   r2 = ctx->rx_queue_index             ldxw r2, [r1 + 16]
//   r1 = &xskmap                         lddw r1, map_fd (BPF_PSEUDO_MAP_FD: the verifier swaps in the map)
//   r3 = XDP_PASS                        mov64 r3, 2     (flags: the action when no socket is at that key)
//   return bpf_redirect_map(r1, r2, r3)  call 51; exit
// bpf_redirect_map is not a GPL-only helper, so the program's license is pier's own (MIT).
import { libcHandle } from './libc.ts';
import * as c from './libc.ts';
import { linkChannels } from './iproute.ts';
import { attrs, attrString, NLM_F_ACK, NLM_F_REQUEST, RTM_GETLINK, RTM_NEWLINK, withRtnl, IFLA_IFNAME, NetlinkError } from './netlink.ts';

// ---- uapi linux/bpf.h ----
export const BPF_MAP_CREATE = 0;
export const BPF_MAP_UPDATE_ELEM = 2;
export const BPF_MAP_DELETE_ELEM = 3;
export const BPF_PROG_LOAD = 5;
export const BPF_PROG_GET_FD_BY_ID = 13;
export const BPF_OBJ_GET_INFO_BY_FD = 15;
export const BPF_MAP_TYPE_XSKMAP = 17;
export const BPF_PROG_TYPE_XDP = 6;
export const BPF_PSEUDO_MAP_FD = 1;
export const BPF_FUNC_redirect_map = 51;
export const BPF_ANY = 0;
export const XDP_ABORTED = 0;
export const XDP_DROP = 1;
export const XDP_PASS = 2;
/** Offset of rx_queue_index in struct xdp_md (data, data_end, data_meta, ingress_ifindex, rx_queue_index). */
export const XDP_MD_RX_QUEUE_INDEX = 16;
/** The program's name as `bpftool prog` and `ip -d link` show it: how pier knows its own. */
export const PIER_PROG_NAME = 'pier_xsk';
export const PIER_MAP_NAME = 'pier_xsks';
const LICENSE = 'MIT';
const SYS_bpf = 321; // x86_64
/** Bytes of union bpf_attr pier passes (the kernel wants whatever it does not know zeroed). */
const ATTR_SIZE = 128;
/** struct bpf_prog_info: the fields read here end at 80 (name); the kernel fills up to the size passed. */
const PROG_INFO_SIZE = 256;
const PROG_INFO_ID = 4;
const PROG_INFO_NAME = 64;
const OBJ_NAME_LEN = 16;

const syscall = libcHandle.func('long syscall(long number, ...)');

function bpf(cmd: number, attr: Uint8Array): number {
  return Number(syscall(SYS_bpf, 'int', cmd, 'void *', attr, 'unsigned int', attr.length));
}

/** One BPF instruction: code, dst (low nibble) and src (high nibble) registers, offset, immediate. */
function insn(out: DataView, i: number, code: number, dst: number, src: number, off: number, imm: number): void {
  out.setUint8(i * 8, code);
  out.setUint8(i * 8 + 1, (src << 4) | dst);
  out.setInt16(i * 8 + 2, off, true);
  out.setInt32(i * 8 + 4, imm, true);
}

/** The XDP program's instructions for the XSKMAP whose fd is `mapFd` (8 bytes each). */
export function xskRedirectProgram(mapFd: number): Uint8Array {
  const b = new Uint8Array(6 * 8);
  const dv = new DataView(b.buffer);
  insn(dv, 0, 0x61, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0); // BPF_LDX | BPF_MEM | BPF_W
  insn(dv, 1, 0x18, 1, BPF_PSEUDO_MAP_FD, 0, mapFd); // BPF_LD | BPF_DW | BPF_IMM, low half
  insn(dv, 2, 0x00, 0, 0, 0, 0); //                    ... high half
  insn(dv, 3, 0xb7, 3, 0, 0, XDP_PASS); //              BPF_ALU64 | BPF_MOV | BPF_K
  insn(dv, 4, 0x85, 0, 0, 0, BPF_FUNC_redirect_map); // BPF_JMP | BPF_CALL
  insn(dv, 5, 0x95, 0, 0, 0, 0); //                    BPF_JMP | BPF_EXIT
  return b;
}

function setName(b: Uint8Array, off: number, name: string): void {
  const n = Buffer.from(name, 'ascii');
  if (n.length >= OBJ_NAME_LEN) throw new Error(`BPF object name ${name} over ${OBJ_NAME_LEN - 1} bytes`);
  b.set(n, off);
}

export class BpfError extends c.SysError {
  constructor(what: string, err: number, readonly verifierLog?: string) {
    super('bpf', err, what);
    if (verifierLog) this.message += `\nverifier log:\n${verifierLog}`;
  }
}

/** An XSKMAP of `entries` slots (key: rx queue index, value: an AF_XDP socket's fd). Returns its fd. */
export function createXskMap(entries: number): number {
  return createMap(BPF_MAP_TYPE_XSKMAP, entries, PIER_MAP_NAME, 'XSKMAP');
}

/** A map of u32 keys and u32 values (`type`, `entries` of them). Throws BpfError. */
function createMap(type: number, entries: number, name: string, what: string): number {
  const a = new Uint8Array(ATTR_SIZE);
  const dv = new DataView(a.buffer);
  dv.setUint32(0, type, true);
  dv.setUint32(4, 4, true); // key_size
  dv.setUint32(8, 4, true); // value_size
  dv.setUint32(12, entries, true); // max_entries
  setName(a, 28, name); // map_name (after map_flags, inner_map_fd, numa_node)
  const fd = bpf(BPF_MAP_CREATE, a);
  if (fd < 0) throw new BpfError(`BPF_MAP_CREATE ${what} of ${entries}`, c.errno());
  return fd;
}

/**
 * Load the redirect program for `mapFd`; returns its fd. On a refusal the verifier's log is in
 * the error (it is asked for only then: the load is repeated with a log buffer). `name` is pier's
 * (how a restarted daemon knows its own program); tests load it under another to stand for a
 * program that is not pier's.
 */
export function loadXskProgram(mapFd: number, name = PIER_PROG_NAME): number {
  return loadProgram(BPF_PROG_TYPE_XDP, xskRedirectProgram(mapFd), name, 0, 'XDP');
}

/** Load `insns` as a program of `type` (the verifier's log in the error when refused). */
function loadProgram(type: number, insns: Uint8Array, name: string, expectedAttachType: number, what: string): number {
  const license = Buffer.from(`${LICENSE}\0`, 'ascii');
  const load = (log: Uint8Array | undefined): number => {
    const a = new Uint8Array(ATTR_SIZE);
    const dv = new DataView(a.buffer);
    dv.setUint32(0, type, true);
    dv.setUint32(68, expectedAttachType, true); // after prog_name (48..64) and prog_ifindex
    dv.setUint32(4, insns.length / 8, true);
    dv.setBigUint64(8, BigInt(c.addressOf(insns)), true);
    dv.setBigUint64(16, BigInt(c.addressOf(license)), true);
    if (log) {
      dv.setUint32(24, 1, true); // log_level
      dv.setUint32(28, log.length, true);
      dv.setBigUint64(32, BigInt(c.addressOf(log)), true);
    }
    setName(a, 48, name);
    return bpf(BPF_PROG_LOAD, a);
  };
  let fd = load(undefined);
  if (fd >= 0) return fd;
  const err = c.errno();
  const log = new Uint8Array(64 << 10);
  fd = load(log);
  if (fd >= 0) return fd;
  const text = Buffer.from(log).toString('utf8').replace(/\0.*$/s, '').trim();
  throw new BpfError(`BPF_PROG_LOAD ${what}`, err, text || undefined);
}

// ---- VXLAN: several VNIs on one UDP port (src/ports/vxlan/control.ts) ----
const BPF_MAP_TYPE_HASH = 1;
const BPF_MAP_TYPE_REUSEPORT_SOCKARRAY = 20;
const BPF_PROG_TYPE_SK_REUSEPORT = 21;
const BPF_SK_REUSEPORT_SELECT = 39;
const BPF_FUNC_map_lookup_elem = 1;
const BPF_FUNC_skb_load_bytes = 26;
const BPF_FUNC_sk_select_reuseport = 82;
const SK_PASS = 1;

/**
 * The SK_REUSEPORT program that gives a VXLAN datagram to the socket of its VNI. Per datagram
 * (ctx: struct sk_reuseport_md; offsets from the UDP header):
 *   if bpf_skb_load_bytes(ctx, 12, &w, 4): pass   (too short: the kernel's hash picks)
 *   vni = be32(w) >> 8                             (the UDP header, the VXLAN flags word, then the VNI)
 *   slot = vnis[vni]; if none: pass                (a VNI no port has: the kernel's hash picks)
 *   bpf_sk_select_reuseport(ctx, socks, &slot, 0); pass
 * The VNI is read with the helper, not through ctx->data: a train another pier sent with
 * UDP_SEGMENT arrives with only its headers in the skb's linear part, where direct access ends.
 * The sockets are named by slots pier gives them (socks[slot] = socket), not by their places in
 * the group, so a socket joining or leaving moves nothing else.
 */
export function vniSelectProgram(vnisFd: number, socksFd: number): Uint8Array {
  const b = new Uint8Array(new ArrayBuffer(28 * 8));
  const dv = new DataView(b.buffer);
  insn(dv, 0, 0xbf, 6, 1, 0, 0); //        r6 = r1 (ctx)
  insn(dv, 1, 0xb7, 2, 0, 0, 12); //       r2 = 12 (offset)
  insn(dv, 2, 0xbf, 3, 10, 0, 0); //       r3 = r10
  insn(dv, 3, 0x07, 3, 0, 0, -4); //       r3 += -4 (to)
  insn(dv, 4, 0xb7, 4, 0, 0, 4); //        r4 = 4 (len)
  insn(dv, 5, 0x85, 0, 0, 0, BPF_FUNC_skb_load_bytes);
  insn(dv, 6, 0x55, 0, 0, 19, 0); //       if r0 != 0 goto pass
  insn(dv, 7, 0x61, 5, 10, -4, 0); //      r5 = *(u32 *)(r10 - 4)
  insn(dv, 8, 0xdc, 5, 0, 0, 32); //       r5 = be32 r5
  insn(dv, 9, 0x77, 5, 0, 0, 8); //        r5 >>= 8
  insn(dv, 10, 0x63, 10, 5, -4, 0); //     *(u32 *)(r10 - 4) = r5
  insn(dv, 11, 0x18, 1, BPF_PSEUDO_MAP_FD, 0, vnisFd); // r1 = &vnis
  insn(dv, 12, 0x00, 0, 0, 0, 0);
  insn(dv, 13, 0xbf, 2, 10, 0, 0); //      r2 = r10
  insn(dv, 14, 0x07, 2, 0, 0, -4); //      r2 += -4
  insn(dv, 15, 0x85, 0, 0, 0, BPF_FUNC_map_lookup_elem);
  insn(dv, 16, 0x15, 0, 0, 9, 0); //       if r0 == 0 goto pass
  insn(dv, 17, 0x61, 5, 0, 0, 0); //       r5 = *(u32 *)r0 (the slot)
  insn(dv, 18, 0x63, 10, 5, -8, 0); //     *(u32 *)(r10 - 8) = r5
  insn(dv, 19, 0xbf, 1, 6, 0, 0); //       r1 = ctx
  insn(dv, 20, 0x18, 2, BPF_PSEUDO_MAP_FD, 0, socksFd); // r2 = &socks
  insn(dv, 21, 0x00, 0, 0, 0, 0);
  insn(dv, 22, 0xbf, 3, 10, 0, 0); //      r3 = r10
  insn(dv, 23, 0x07, 3, 0, 0, -8); //      r3 += -8
  insn(dv, 24, 0xb7, 4, 0, 0, 0); //       r4 = 0
  insn(dv, 25, 0x85, 0, 0, 0, BPF_FUNC_sk_select_reuseport);
  insn(dv, 26, 0xb7, 0, 0, 0, SK_PASS); // pass: r0 = SK_PASS
  insn(dv, 27, 0x95, 0, 0, 0, 0); //       exit
  return b;
}

/** What selects a group's sockets by VNI: the VNI -> slot map, the slot -> socket map, the program. */
export interface VniSelector { vnisFd: number; socksFd: number; progFd: number }

/** Maps for up to `entries` sockets and the program over them. Throws BpfError (nothing left open). */
export function createVniSelector(entries: number): VniSelector {
  const vnisFd = createMap(BPF_MAP_TYPE_HASH, entries, 'pier_vnis', 'HASH');
  let socksFd = -1;
  try {
    socksFd = createMap(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, entries, 'pier_vni_socks', 'REUSEPORT_SOCKARRAY');
    const progFd = loadProgram(BPF_PROG_TYPE_SK_REUSEPORT, vniSelectProgram(vnisFd, socksFd), 'pier_vni', BPF_SK_REUSEPORT_SELECT, 'SK_REUSEPORT');
    return { vnisFd, socksFd, progFd };
  } catch (e) {
    c.close(vnisFd);
    if (socksFd >= 0) c.close(socksFd);
    throw e;
  }
}

export function closeVniSelector(s: VniSelector): void {
  c.close(s.progFd);
  c.close(s.socksFd);
  c.close(s.vnisFd);
}

/** Put socket `xskFd` at `key` (an rx queue index). */
export function mapUpdate(mapFd: number, key: number, value: number): void {
  const kv = new Uint32Array([key, value]);
  const a = new Uint8Array(ATTR_SIZE);
  const dv = new DataView(a.buffer);
  dv.setUint32(0, mapFd, true);
  const addr = c.addressOf(kv);
  dv.setBigUint64(8, BigInt(addr), true);
  dv.setBigUint64(16, BigInt(addr + 4), true);
  dv.setBigUint64(24, BigInt(BPF_ANY), true);
  if (bpf(BPF_MAP_UPDATE_ELEM, a) < 0) throw new BpfError(`BPF_MAP_UPDATE_ELEM key ${key}`, c.errno());
}

/** Remove `key`; false when it was not there (ENOENT) or the map is gone. */
export function mapDelete(mapFd: number, key: number): boolean {
  const k = new Uint32Array([key]);
  const a = new Uint8Array(ATTR_SIZE);
  const dv = new DataView(a.buffer);
  dv.setUint32(0, mapFd, true);
  dv.setBigUint64(8, BigInt(c.addressOf(k)), true);
  return bpf(BPF_MAP_DELETE_ELEM, a) === 0;
}

export interface ProgInfo {
  id: number;
  name: string;
}

/** The kernel's id and name of the program behind `fd`. */
export function progInfo(fd: number): ProgInfo {
  const info = new Uint8Array(PROG_INFO_SIZE);
  const a = new Uint8Array(ATTR_SIZE);
  const dv = new DataView(a.buffer);
  dv.setUint32(0, fd, true);
  dv.setUint32(4, info.length, true);
  dv.setBigUint64(8, BigInt(c.addressOf(info)), true);
  if (bpf(BPF_OBJ_GET_INFO_BY_FD, a) < 0) throw new BpfError('BPF_OBJ_GET_INFO_BY_FD', c.errno());
  const idv = new DataView(info.buffer);
  const name = Buffer.from(info.subarray(PROG_INFO_NAME, PROG_INFO_NAME + OBJ_NAME_LEN)).toString('ascii').replace(/\0.*$/s, '');
  return { id: idv.getUint32(PROG_INFO_ID, true), name };
}

/** An fd for the loaded program with id `id` (one attached to a device); throws ENOENT when it is gone. */
export function progFdById(id: number): number {
  const a = new Uint8Array(ATTR_SIZE);
  new DataView(a.buffer).setUint32(0, id, true);
  const fd = bpf(BPF_PROG_GET_FD_BY_ID, a);
  if (fd < 0) throw new BpfError(`BPF_PROG_GET_FD_BY_ID ${id}`, c.errno());
  return fd;
}

// ---- attaching to a device: rtnetlink IFLA_XDP (uapi linux/if_link.h) ----
export const IFLA_XDP = 43;
const IFLA_NUM_RX_QUEUES = 32;
const IFLA_LINKINFO = 18;
const IFLA_INFO_KIND = 1;
const IFLA_XDP_FD = 1;
const IFLA_XDP_ATTACHED = 2;
const IFLA_XDP_FLAGS = 3;
const IFLA_XDP_PROG_ID = 4;
const IFLA_XDP_EXPECTED_FD = 8;
const NLA_F_NESTED = 0x8000;
export const XDP_FLAGS_UPDATE_IF_NOEXIST = 1;
export const XDP_FLAGS_SKB_MODE = 2;
export const XDP_FLAGS_DRV_MODE = 4;
export const XDP_FLAGS_REPLACE = 16;
/** IFLA_XDP_ATTACHED: how the attached program runs. */
export const XDP_ATTACHED = ['none', 'native', 'generic', 'offload', 'multi'] as const;
export type XdpMode = 'native' | 'generic';

export interface XdpState {
  ifindex: number;
  /** 'none' when no program is attached. */
  attached: (typeof XDP_ATTACHED)[number];
  progId: number;
  /** IFLA_NUM_RX_QUEUES: the queues a socket can bind to are 0..numRxQueues-1. */
  numRxQueues: number;
  /** IFLA_INFO_KIND of a virtual device ('veth', 'bridge', ...); '' for a physical one. */
  kind: string;
}

/** The device's index and its XDP attachment (RTM_GETLINK), in the namespace at `netnsPath`. */
export function xdpState(netnsPath: string | undefined, ifname: string): XdpState {
  return withRtnl(netnsPath, (s) => {
    let out: XdpState | undefined;
    s.transact((w, seq) => w.begin(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, seq, c.SIZEOF_IFINFOMSG).attrStr(IFLA_IFNAME, ifname).end(), (buf, m) => {
      if (m.type !== RTM_NEWLINK) return;
      const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      const top = attrs(buf, m.off + c.SIZEOF_IFINFOMSG, m.end);
      const x = top.get(IFLA_XDP);
      const nested = x ? attrs(buf, x[0], x[0] + x[1]) : new Map<number, [number, number]>();
      const u = (t: number): number => {
        const a = nested.get(t);
        return a === undefined ? 0 : a[1] >= 4 ? dv.getUint32(a[0], true) : buf[a[0]]!;
      };
      const rxq = top.get(IFLA_NUM_RX_QUEUES);
      const li = top.get(IFLA_LINKINFO);
      const k = li ? attrs(buf, li[0], li[0] + li[1]).get(IFLA_INFO_KIND) : undefined;
      out = {
        ifindex: dv.getInt32(m.off + 4, true), attached: XDP_ATTACHED[u(IFLA_XDP_ATTACHED)] ?? 'multi', progId: u(IFLA_XDP_PROG_ID),
        numRxQueues: rxq && rxq[1] >= 4 ? dv.getUint32(rxq[0], true) : 1,
        kind: k ? attrString(buf, k) : '',
      };
    });
    if (!out) throw new NetlinkError(c.ENODEV);
    return out;
  });
}

// Generic netlink: the controller resolves the "netdev" family (Linux 6.3), whose DEV_GET says
// which XDP features a device's driver has (uapi linux/genetlink.h, linux/netdev.h).
const NETLINK_GENERIC = 16;
const GENL_ID_CTRL = 0x10;
const GENL_HDRLEN = 4;
const CTRL_CMD_GETFAMILY = 3;
const CTRL_ATTR_FAMILY_ID = 1;
const CTRL_ATTR_FAMILY_NAME = 2;
const NETDEV_CMD_DEV_GET = 1;
const NETDEV_A_DEV_IFINDEX = 1;
const NETDEV_A_DEV_XDP_FEATURES = 3;
/** enum netdev_xdp_act. */
export const NETDEV_XDP_ACT_BASIC = 1;
export const NETDEV_XDP_ACT_REDIRECT = 2;
export const NETDEV_XDP_ACT_XSK_ZEROCOPY = 8;
export const NETDEV_XDP_ACT_RX_SG = 32;

/**
 * The XDP features of device `ifindex` (NETDEV_XDP_ACT_* bits): BASIC and REDIRECT mean native
 * XDP that can feed an XSK socket, XSK_ZEROCOPY zero-copy AF_XDP. undefined when the kernel has no
 * netdev family (before 6.3) or the device is gone. Generic mode needs no feature: every device has it.
 */
export function xdpFeatures(netnsPath: string | undefined, ifindex: number): number | undefined {
  try {
    return withRtnl(netnsPath, (s) => {
      let family = 0;
      s.transact((w, seq) => w.begin(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, GENL_HDRLEN).u8(0, CTRL_CMD_GETFAMILY).u8(1, 1).attrStr(CTRL_ATTR_FAMILY_NAME, 'netdev').end(), (buf, m) => {
        const a = attrs(buf, m.off + GENL_HDRLEN, m.end).get(CTRL_ATTR_FAMILY_ID);
        if (a && a[1] >= 2) family = buf[a[0]]! | (buf[a[0] + 1]! << 8);
      });
      if (family === 0) return undefined;
      let features: number | undefined;
      s.transact((w, seq) => w.begin(family, NLM_F_REQUEST | NLM_F_ACK, seq, GENL_HDRLEN).u8(0, NETDEV_CMD_DEV_GET).u8(1, 1).attrU32(NETDEV_A_DEV_IFINDEX, ifindex).end(), (buf, m) => {
        const a = attrs(buf, m.off + GENL_HDRLEN, m.end).get(NETDEV_A_DEV_XDP_FEATURES);
        // A u64; the defined bits are in the low word.
        if (a && a[1] >= 4) features = new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(a[0], true);
      });
      return features;
    }, NETLINK_GENERIC);
  } catch {
    return undefined;
  }
}

/** What a device's XDP features mean for an afxdp port, in words (pier doctor, pier show). */
export function xdpModes(features: number | undefined): string {
  if (features === undefined) return 'modes unknown (kernel before 6.3): generic always works';
  const native = (features & NETDEV_XDP_ACT_BASIC) !== 0 && (features & NETDEV_XDP_ACT_REDIRECT) !== 0;
  const zc = (features & NETDEV_XDP_ACT_XSK_ZEROCOPY) !== 0;
  return `${native ? 'native and generic' : 'generic only'}${zc ? ', zero-copy' : ', no zero-copy'}${(features & NETDEV_XDP_ACT_RX_SG) !== 0 ? ', multi-buffer' : ''}`;
}

/**
 * The queues an XSK socket can bind to on the device: those it runs in both directions (the
 * driver's channel counts, `ethtool -l`), else what netlink says it allocated (a driver without
 * get_channels; the bind then says EINVAL for a queue that does not run).
 */
export function runningQueues(netnsPath: string | undefined, ifname: string, st: XdpState): number {
  const ch = linkChannels(netnsPath, ifname);
  return ch ? Math.min(ch.rx, ch.tx, st.numRxQueues) : st.numRxQueues;
}

function nest(parts: Array<[number, number]>): Uint8Array {
  const b = new Uint8Array(parts.length * 8);
  const dv = new DataView(b.buffer);
  parts.forEach(([type, v], i) => {
    dv.setUint16(i * 8, 8, true);
    dv.setUint16(i * 8 + 2, type, true);
    dv.setInt32(i * 8 + 4, v, true);
  });
  return b;
}

/**
 * Attach program `progFd` to device `ifindex` in `mode` (`ip link set dev IF xdpgeneric|xdpdrv
 * fd N`), or detach with progFd -1. With `expectedFd` (XDP_FLAGS_REPLACE) the kernel swaps
 * atomically only if that program is the one attached (EEXIST otherwise): a restarted daemon
 * replaces its predecessor's program, never stacks on it or removes someone else's.
 * Throws NetlinkError (the kernel's extended ack says why: "native and generic XDP can't be active at the same time").
 */
export function attachXdp(netnsPath: string | undefined, ifindex: number, progFd: number, mode: XdpMode, expectedFd = -1): void {
  let flags = mode === 'generic' ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
  const parts: Array<[number, number]> = [[IFLA_XDP_FD, progFd]];
  if (expectedFd >= 0) {
    flags |= XDP_FLAGS_REPLACE;
    parts.push([IFLA_XDP_EXPECTED_FD, expectedFd]);
  }
  parts.push([IFLA_XDP_FLAGS, flags]);
  withRtnl(netnsPath, (s) => s.transact((w, seq) => w.begin(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, c.SIZEOF_IFINFOMSG)
    .u32(4, ifindex).attr(IFLA_XDP | NLA_F_NESTED, nest(parts)).end()));
}
