// UDP sockets for tunnel ports (VXLAN): opened inside a network namespace, bound, and driven with
// recvmmsg/sendmmsg over iovecs that point into pier's packet memory, so a datagram moves between
// the kernel and a pool buffer without a copy in JavaScript and without an object per packet.
// `MmsgBatch` holds the mmsghdr array, its iovecs, addresses and control buffers, allocated once;
// callers fill entries with plain numbers (addresses are split into two 32-bit halves: no BigInt).
import { isIPv4, isIPv6 } from 'node:net';
import { addressOf, check, close, errno, koffi, libcHandle, setsockopt, socket, SysError, bind, connect, O_NONBLOCK, SOCK_CLOEXEC, SOL_SOCKET } from './libc.ts';
import { withNetns } from './netns.ts';

export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_DGRAM = 2;
export const IPPROTO_IP = 0;
export const IPPROTO_IPV6 = 41;
export const SOL_UDP = 17;
/** linux/udp.h: segmentation offload on send (a u16 gso_size, as a sockopt or a cmsg). */
export const UDP_SEGMENT = 103;
/** linux/udp.h: receive coalesced datagrams (the segment size arrives as a UDP_GRO cmsg). */
export const UDP_GRO = 104;
export const SO_REUSEADDR = 2;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const SO_REUSEPORT = 15;
export const SO_ATTACH_REUSEPORT_EBPF = 52;
export const SO_RCVBUF = 8;
export const SO_SNDBUF = 7;
export const IP_MTU = 14;
export const IPV6_MTU = 24;
export const IPV6_V6ONLY = 26;
export const MSG_TRUNC = 0x20;
export const MSG_DONTWAIT = 0x40;
export const EMSGSIZE = 90;
export const EADDRINUSE = 98;
export const EADDRNOTAVAIL = 99;
export const ECONNREFUSED = 111;

export const SIZEOF_SOCKADDR_IN = 16;
export const SIZEOF_SOCKADDR_IN6 = 28;
export const SIZEOF_MMSGHDR = 64;
const SIZEOF_MSGHDR = 56;
const SIZEOF_IOVEC = 16;
/** cmsghdr (16) + a u16 payload, padded to 8: CMSG_SPACE(sizeof(uint16_t)). */
export const CMSG_SPACE_U16 = 24;

const sockaddr_in = koffi.struct('pier_sockaddr_in', { sin_family: 'uint16_t', sin_port: 'uint16_t', sin_addr: 'uint32_t', sin_zero: koffi.array('uint8_t', 8, 'Array') });
const sockaddr_in6 = koffi.struct('pier_sockaddr_in6', {
  sin6_family: 'uint16_t', sin6_port: 'uint16_t', sin6_flowinfo: 'uint32_t', sin6_addr: koffi.array('uint8_t', 16, 'Array'), sin6_scope_id: 'uint32_t',
});
const msghdr_ = koffi.struct('pier_udp_msghdr', {
  msg_name: 'uintptr_t', msg_namelen: 'uint32_t', msg_iov: 'uintptr_t', msg_iovlen: 'size_t',
  msg_control: 'uintptr_t', msg_controllen: 'size_t', msg_flags: 'int',
});
const mmsghdr = koffi.struct('pier_mmsghdr', { msg_hdr: msghdr_, msg_len: 'uint32_t' });
for (const [name, got, want] of [
  ['struct sockaddr_in', koffi.sizeof(sockaddr_in), SIZEOF_SOCKADDR_IN],
  ['struct sockaddr_in6', koffi.sizeof(sockaddr_in6), SIZEOF_SOCKADDR_IN6],
  ['struct mmsghdr', koffi.sizeof(mmsghdr), SIZEOF_MMSGHDR],
  ['mmsghdr.msg_len', koffi.offsetof(mmsghdr, 'msg_len'), SIZEOF_MSGHDR],
  ['sockaddr_in6.sin6_addr', koffi.offsetof(sockaddr_in6, 'sin6_addr'), 8],
] as const) {
  if (got !== want) throw new Error(`ABI check failed: ${name} is ${got}, expected ${want}`);
}

export const recvmmsg = libcHandle.func('int recvmmsg(int fd, uintptr_t msgvec, unsigned int vlen, int flags, uintptr_t timeout)');
export const sendmmsg = libcHandle.func('int sendmmsg(int fd, uintptr_t msgvec, unsigned int vlen, int flags)');
const getsockopt = libcHandle.func('int getsockopt(int fd, int level, int name, _Out_ void *val, _Inout_ uint32_t *len)');
const getsockname = libcHandle.func('int getsockname(int fd, _Out_ void *addr, _Inout_ uint32_t *len)');
const fcntl3 = libcHandle.func('int fcntl(int fd, int cmd, int arg)');

/** The family of an address (4 or 6), or 0 when it is neither. */
export function ipFamily(addr: string): 4 | 6 | 0 {
  return isIPv4(addr) ? 4 : isIPv6(addr) ? 6 : 0;
}

/** struct sockaddr_in / sockaddr_in6 for `addr` (undefined: the wildcard of `family`) and `port`. */
export function sockaddr(family: 4 | 6, addr: string | undefined, port: number): Uint8Array {
  const sa = new Uint8Array(new ArrayBuffer(family === 4 ? SIZEOF_SOCKADDR_IN : SIZEOF_SOCKADDR_IN6));
  const dv = new DataView(sa.buffer);
  dv.setUint16(0, family === 4 ? AF_INET : AF_INET6, true);
  dv.setUint16(2, port, false);
  if (addr !== undefined) sa.set(ipBytes(addr), family === 4 ? 4 : 8);
  return sa;
}

/** The 4 or 16 bytes of an IPv4 or IPv6 address in network order. */
export function ipBytes(addr: string): Uint8Array {
  if (isIPv4(addr)) return Uint8Array.from(addr.split('.').map(Number));
  if (!isIPv6(addr)) throw new Error(`${addr} is not an IP address`);
  let s = addr;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const b = v4[1]!.split('.').map(Number);
    s = s.slice(0, -v4[1]!.length) + `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const words = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    const n = parseInt(w, 16);
    out[2 * i] = n >> 8;
    out[2 * i + 1] = n & 0xff;
  });
  return out;
}

/** Text of the address in a sockaddr_in/in6 at b[off..]. */
export function sockaddrText(b: Uint8Array, off: number): string {
  const fam = b[off]! | (b[off + 1]! << 8);
  if (fam === AF_INET) return `${b[off + 4]}.${b[off + 5]}.${b[off + 6]}.${b[off + 7]}`;
  const w: string[] = [];
  for (let i = 0; i < 8; i++) w.push(((b[off + 8 + 2 * i]! << 8) | b[off + 9 + 2 * i]!).toString(16));
  return new URL(`http://[${w.join(':')}]/`).hostname.slice(1, -1); // the URL parser writes the canonical form
}

export interface UdpSocketOptions {
  /** Namespace to open the socket in (a path); undefined: the caller's. */
  netnsPath: string | undefined;
  family: 4 | 6;
  /** Address to bind; undefined: any. */
  local: string | undefined;
  port: number;
  /** Socket buffer sizes to force (SO_RCVBUFFORCE/SO_SNDBUFFORCE, root), bytes. */
  rcvbuf?: number;
  sndbuf?: number;
  /** SO_REUSEPORT: join the group of sockets bound to the same address and port. */
  reuseport?: boolean;
}

/** A non-blocking, close-on-exec UDP socket made inside `netnsPath` and bound there. Throws SysError. */
export function udpSocket(o: UdpSocketOptions): number {
  const fd = withNetns(o.netnsPath, () => check(socket(o.family === 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0), 'socket', 'udp'));
  try {
    check(fcntl3(fd, 4 /* F_SETFL */, O_NONBLOCK), 'fcntl', 'O_NONBLOCK');
    if (o.family === 6) setInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, 'IPV6_V6ONLY');
    if (o.rcvbuf) setInt(fd, SOL_SOCKET, SO_RCVBUFFORCE, o.rcvbuf, 'SO_RCVBUFFORCE');
    if (o.sndbuf) setInt(fd, SOL_SOCKET, SO_SNDBUFFORCE, o.sndbuf, 'SO_SNDBUFFORCE');
    if (o.reuseport) setInt(fd, SOL_SOCKET, SO_REUSEPORT, 1, 'SO_REUSEPORT');
    const sa = sockaddr(o.family, o.local, o.port);
    check(bind(fd, sa, sa.length), 'bind', `${o.local ?? (o.family === 4 ? '0.0.0.0' : '::')}:${o.port}`);
    return fd;
  } catch (e) {
    close(fd);
    throw e;
  }
}

/** Attach the SK_REUSEPORT program `progFd` to the reuseport group of `fd` (replacing the group's program). Throws SysError. */
export function attachReuseportProgram(fd: number, progFd: number): void {
  check(setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, new Int32Array([progFd]), 4), 'setsockopt', 'SO_ATTACH_REUSEPORT_EBPF');
}

export function setInt(fd: number, level: number, name: number, value: number, what: string): void {
  const v = new Int32Array([value]);
  check(setsockopt(fd, level, name, v, 4), 'setsockopt', what);
}

/** setsockopt of an int that may be missing from the kernel: true when it took. */
export function trySetInt(fd: number, level: number, name: number, value: number): boolean {
  return setsockopt(fd, level, name, new Int32Array([value]), 4) === 0;
}

export function getInt(fd: number, level: number, name: number, what: string): number {
  const v = new Int32Array(1);
  const len = new Uint32Array([4]);
  check(getsockopt(fd, level, name, v, len), 'getsockopt', what);
  return v[0]!;
}

export const SO_MEMINFO = 55;
const SK_MEMINFO_VARS = 9;
const SK_MEMINFO_DROPS = 8;

/** Datagrams the kernel dropped at a socket (its receive buffer was full): SO_MEMINFO's drops. -1 when unreadable. */
export function socketDrops(fd: number): number {
  const v = new Uint32Array(SK_MEMINFO_VARS);
  const len = new Uint32Array([v.byteLength]);
  if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, v, len) < 0) return -1;
  return v[SK_MEMINFO_DROPS]!;
}

/** The port a socket is bound to. */
export function boundPort(fd: number): number {
  const sa = new Uint8Array(SIZEOF_SOCKADDR_IN6);
  const len = new Uint32Array([sa.length]);
  check(getsockname(fd, sa, len), 'getsockname');
  return (sa[2]! << 8) | sa[3]!;
}

/** Whether the kernel takes UDP_SEGMENT on a socket of this family (Linux 4.18+). */
export function hasUdpSegment(fd: number): boolean {
  try {
    setInt(fd, SOL_UDP, UDP_SEGMENT, 0, 'UDP_SEGMENT');
    return true;
  } catch {
    return false;
  }
}

/**
 * The MTU of the route to `remote` as seen from `netnsPath` (IP_MTU / IPV6_MTU of a connected
 * UDP socket: the route's MTU, else its device's). Throws SysError when there is no route.
 */
export function routeMtu(netnsPath: string | undefined, remote: string, local?: string): number {
  const family = ipFamily(remote);
  if (family === 0) throw new Error(`${remote} is not an IP address`);
  const fd = withNetns(netnsPath, () => check(socket(family === 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0), 'socket', 'udp'));
  try {
    if (local) {
      const la = sockaddr(family, local, 0);
      check(bind(fd, la, la.length), 'bind', local);
    }
    const sa = sockaddr(family, remote, 4789);
    if (connect(fd, sa, sa.length) < 0) throw new SysError('connect', errno(), `route to ${remote}`);
    return family === 4 ? getInt(fd, IPPROTO_IP, IP_MTU, 'IP_MTU') : getInt(fd, IPPROTO_IPV6, IPV6_MTU, 'IPV6_MTU');
  } finally {
    close(fd);
  }
}

/**
 * A reusable array of `capacity` mmsghdrs with `iovCapacity` iovecs, an address slot (28 bytes)
 * and a control slot (CMSG_SPACE_U16) per message, in memory that never moves. Fill entries with
 * setIov/setMsg, then hand `addr` to recvmmsg/sendmmsg.
 */
export class MmsgBatch {
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  /** Address of the first mmsghdr. */
  readonly addr: number;
  private readonly iovOff: number;
  private readonly nameOff: number;
  private readonly ctrlOff: number;

  /** Bytes of each message's control slot (at least CMSG_SPACE_U16; a multiple of 8). */
  readonly ctrlSpace: number;

  constructor(readonly capacity: number, readonly iovCapacity: number, ctrlSpace = CMSG_SPACE_U16) {
    this.ctrlSpace = Math.max(CMSG_SPACE_U16, (ctrlSpace + 7) & ~7);
    this.iovOff = capacity * SIZEOF_MMSGHDR;
    this.nameOff = this.iovOff + iovCapacity * SIZEOF_IOVEC;
    this.ctrlOff = this.nameOff + capacity * 32;
    this.bytes = new Uint8Array(new ArrayBuffer(this.ctrlOff + capacity * this.ctrlSpace));
    this.dv = new DataView(this.bytes.buffer);
    this.addr = addressOf(this.bytes);
  }

  /** iovec i = { base, len }. */
  setIov(i: number, base: number, len: number): void {
    const o = this.iovOff + i * SIZEOF_IOVEC;
    const dv = this.dv;
    dv.setUint32(o, base % 0x100000000, true);
    dv.setUint32(o + 4, Math.floor(base / 0x100000000), true);
    dv.setUint32(o + 8, len, true);
    dv.setUint32(o + 12, 0, true);
  }

  /** Message m's iovec count, once setMsg has written the rest (a train grows by a datagram). */
  setIovLen(m: number, iovlen: number): void {
    this.dv.setUint32(m * SIZEOF_MMSGHDR + 24, iovlen, true);
  }

  /**
   * Message m: iovecs [iov, iov + iovlen); its name slot as the address (namelen 0: none; for
   * receive, pass the slot's size); a UDP_SEGMENT control message when gsoSize > 0.
   */
  setMsg(m: number, iov: number, iovlen: number, namelen: number, gsoSize = 0): void {
    const o = m * SIZEOF_MMSGHDR;
    const dv = this.dv;
    const base = this.addr;
    setAddr(dv, o, namelen > 0 ? base + this.nameOff + m * 32 : 0);
    dv.setUint32(o + 8, namelen, true);
    dv.setUint32(o + 12, 0, true);
    setAddr(dv, o + 16, base + this.iovOff + iov * SIZEOF_IOVEC);
    dv.setUint32(o + 24, iovlen, true);
    dv.setUint32(o + 28, 0, true);
    if (gsoSize > 0) {
      const c = this.ctrlOff + m * this.ctrlSpace;
      setAddr(dv, o + 32, base + c);
      dv.setUint32(o + 40, CMSG_SPACE_U16, true);
      dv.setUint32(c, 18, true); // CMSG_LEN(sizeof(uint16_t))
      dv.setUint32(c + 4, 0, true);
      dv.setInt32(c + 8, SOL_UDP, true);
      dv.setInt32(c + 12, UDP_SEGMENT, true);
      dv.setUint16(c + 16, gsoSize, true);
    } else {
      setAddr(dv, o + 32, 0);
      dv.setUint32(o + 40, 0, true);
    }
    dv.setUint32(o + 44, 0, true);
    dv.setInt32(o + 48, 0, true);
    dv.setUint32(o + 56, 0, true);
  }

  /** For recvmmsg: message m's whole control slot is offered (msg_controllen, which the kernel rewrites). */
  offerControl(m: number): void {
    const o = m * SIZEOF_MMSGHDR;
    setAddr(this.dv, o + 32, this.addr + this.ctrlOff + m * this.ctrlSpace);
    this.dv.setUint32(o + 40, this.ctrlSpace, true);
    this.dv.setUint32(o + 44, 0, true);
  }

  /** msg_controllen of message m after recvmmsg: the bytes of control messages the kernel wrote. */
  controlLen(m: number): number {
    return this.dv.getUint32(m * SIZEOF_MMSGHDR + 40, true);
  }

  /** Offset in `bytes` of message m's control slot (its first cmsghdr after recvmmsg). */
  controlOffset(m: number): number {
    return this.ctrlOff + m * this.ctrlSpace;
  }

  /** Copy a sockaddr (16 or 28 bytes) into message m's name slot. */
  setName(m: number, sa: Uint8Array): void {
    this.bytes.set(sa, this.nameOff + m * 32);
  }

  /** Offset in `bytes` of message m's name slot (the sender's address after recvmmsg). */
  nameOffset(m: number): number {
    return this.nameOff + m * 32;
  }

  /** Bytes message m carried (msg_len after recvmmsg/sendmmsg). */
  msgLen(m: number): number {
    return this.dv.getUint32(m * SIZEOF_MMSGHDR + SIZEOF_MSGHDR, true);
  }

  /** msg_flags of message m after recvmmsg (MSG_TRUNC: the datagram did not fit). */
  msgFlags(m: number): number {
    return this.dv.getInt32(m * SIZEOF_MMSGHDR + 48, true);
  }

  /** Address of message m's mmsghdr (to send from the middle of a batch). */
  msgAddr(m: number): number {
    return this.addr + m * SIZEOF_MMSGHDR;
  }
}

function setAddr(dv: DataView, o: number, a: number): void {
  dv.setUint32(o, a % 0x100000000, true);
  dv.setUint32(o + 4, Math.floor(a / 0x100000000), true);
}
