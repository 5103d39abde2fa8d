// The one place pier touches koffi. Every syscall the project makes is declared here, with the
// constants and struct layouts it needs, and checked against the kernel ABI when this module loads.
// Hot-path calls take raw addresses (JS numbers: x86_64 user addresses fit in 47 bits) so a call
// allocates nothing on the JavaScript side.
import koffi from 'koffi';
import { readlinkSync } from 'node:fs';

const lib = koffi.load('libc.so.6');

/**
 * For the other files of src/sys that declare their own syscalls (packet, xsk, bpf, udp): the
 * one libc handle and koffi itself, so koffi is still imported in this file only.
 */
export { koffi, lib as libcHandle };

// ---- constants (x86_64 Linux) ----
export const O_RDONLY = 0;
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

export const IFNAMSIZ = 16;
export const IFF_UP = 0x1;
export const IFF_TAP = 0x0002;
export const IFF_MULTI_QUEUE = 0x0100;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;
export const IFF_TUN_EXCL = 0x8000;

export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;

export const EPOLLIN = 0x001;
export const EPOLLOUT = 0x004;
export const EPOLLERR = 0x008;
export const EPOLLHUP = 0x010;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLL_CTL_MOD = 3;
export const EPOLL_CLOEXEC = 0o2000000;

export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;

export const CLONE_NEWNET = 0x40000000;

export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_FIXED = 0x10;
export const MAP_NORESERVE = 0x4000;
export const PROT_NONE = 0x0;
export const PROT_EXEC = 0x4;
export const MFD_CLOEXEC = 0x1;
export const MFD_ALLOW_SEALING = 0x2;

export const F_GETFL = 3;
export const F_SETFL = 4;
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const F_SEAL_WRITE = 0x8;

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;

export const SIGBUS = 7;
export const SIGURG = 23;
export const SA_SIGINFO = 0x4;
export const SA_ONSTACK = 0x08000000;
export const SA_RESTART = 0x10000000;
export const SA_NODEFER = 0x40000000;
/** Set by glibc's sigaction() itself, with its own __restore_rt as sa_restorer. */
export const SA_RESTORER = 0x04000000;
export const BUS_ADRERR = 2;

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SCM_RIGHTS = 1;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const MSG_CTRUNC = 0x8;
export const MSG_TRUNC = 0x20;
export const SO_RCVTIMEO = 20; // struct timeval (x86_64: the 64-bit one)

export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const NETLINK_ROUTE = 0;
export const SOL_NETLINK = 270;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_EXT_ACK = 11;

export const EAGAIN = 11;
export const EINTR = 4;
export const EPERM = 1;
export const EBADF = 9;
export const EINVAL = 22;
export const ENODEV = 19;

// ---- ioctl numbers, derived from the _IOC encoding and checked against the uapi values ----
const IOC_WRITE = 1;
const IOC_READ = 2;
function ioc(dir: number, type: string, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type.charCodeAt(0) << 8) | nr) >>> 0;
}
export const TUNSETIFF = ioc(IOC_WRITE, 'T', 202, 4);
export const TUNSETPERSIST = ioc(IOC_WRITE, 'T', 203, 4);
export const TUNSETOFFLOAD = ioc(IOC_WRITE, 'T', 208, 4);
export const TUNGETIFF = ioc(IOC_READ, 'T', 210, 4);
export const TUNGETSNDBUF = ioc(IOC_READ, 'T', 211, 4);
export const TUNSETSNDBUF = ioc(IOC_WRITE, 'T', 212, 4);
export const TUNSETVNETHDRSZ = ioc(IOC_WRITE, 'T', 216, 4);
const expectedIoctls: Record<string, [number, number]> = {
  TUNSETIFF: [TUNSETIFF, 0x400454ca],
  TUNSETPERSIST: [TUNSETPERSIST, 0x400454cb],
  TUNSETOFFLOAD: [TUNSETOFFLOAD, 0x400454d0],
  TUNGETIFF: [TUNGETIFF, 0x800454d2],
  TUNGETSNDBUF: [TUNGETSNDBUF, 0x800454d3],
  TUNSETSNDBUF: [TUNSETSNDBUF, 0x400454d4],
  TUNSETVNETHDRSZ: [TUNSETVNETHDRSZ, 0x400454d8],
};

// ---- struct layouts ----
export const ifreq = koffi.struct('pier_ifreq', {
  ifr_name: koffi.array('char', IFNAMSIZ, 'Array'),
  ifr_flags: 'short',
  _pad: koffi.array('uint8_t', 22, 'Array'),
});
export const epoll_event = koffi.pack('pier_epoll_event', { events: 'uint32_t', data: 'uint64_t' });
export const iovec = koffi.struct('pier_iovec', { iov_base: 'uintptr_t', iov_len: 'size_t' });
export const SIZEOF_IFREQ = 40;
export const SIZEOF_EPOLL_EVENT = 12; // packed on x86_64 (__EPOLL_PACKED)
export const SIZEOF_IOVEC = 16;
export const msghdr = koffi.struct('pier_msghdr', {
  msg_name: 'uintptr_t', msg_namelen: 'uint32_t', msg_iov: 'uintptr_t', msg_iovlen: 'size_t',
  msg_control: 'uintptr_t', msg_controllen: 'size_t', msg_flags: 'int',
});
export const cmsghdr = koffi.struct('pier_cmsghdr', { cmsg_len: 'size_t', cmsg_level: 'int', cmsg_type: 'int' });
export const sockaddr_un = koffi.struct('pier_sockaddr_un', { sun_family: 'uint16_t', sun_path: koffi.array('char', 108, 'Array') });
export const SIZEOF_MSGHDR = 56;
export const SIZEOF_CMSGHDR = 16;
export const SIZEOF_SOCKADDR_UN = 110;
export const SUN_PATH_MAX = 107; // 108 bytes with the terminating NUL
/** rtnetlink's fixed headers (uapi linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h); src/sys/netlink.ts encodes them. */
export const nlmsghdr = koffi.struct('pier_nlmsghdr', { nlmsg_len: 'uint32_t', nlmsg_type: 'uint16_t', nlmsg_flags: 'uint16_t', nlmsg_seq: 'uint32_t', nlmsg_pid: 'uint32_t' });
export const nlmsgerr = koffi.struct('pier_nlmsgerr', { error: 'int', msg: nlmsghdr });
export const nlattr = koffi.struct('pier_nlattr', { nla_len: 'uint16_t', nla_type: 'uint16_t' });
export const ifinfomsg = koffi.struct('pier_ifinfomsg', {
  ifi_family: 'uint8_t', _pad: 'uint8_t', ifi_type: 'uint16_t', ifi_index: 'int', ifi_flags: 'uint32_t', ifi_change: 'uint32_t',
});
export const ifaddrmsg = koffi.struct('pier_ifaddrmsg', { ifa_family: 'uint8_t', ifa_prefixlen: 'uint8_t', ifa_flags: 'uint8_t', ifa_scope: 'uint8_t', ifa_index: 'uint32_t' });
export const rtmsg = koffi.struct('pier_rtmsg', {
  rtm_family: 'uint8_t', rtm_dst_len: 'uint8_t', rtm_src_len: 'uint8_t', rtm_tos: 'uint8_t',
  rtm_table: 'uint8_t', rtm_protocol: 'uint8_t', rtm_scope: 'uint8_t', rtm_type: 'uint8_t', rtm_flags: 'uint32_t',
});
export const SIZEOF_NLMSGHDR = 16;
export const SIZEOF_NLMSGERR = 20;
export const SIZEOF_NLATTR = 4;
export const SIZEOF_IFINFOMSG = 16;
export const SIZEOF_IFADDRMSG = 8;
export const SIZEOF_RTMSG = 12;
/** glibc's struct sigaction (not the kernel's): handler, sigset_t of 1024 bits, flags, restorer. */
export const sigaction_t = koffi.struct('pier_sigaction', {
  sa_handler: 'uintptr_t', sa_mask: koffi.array('uint64_t', 16, 'Array'), sa_flags: 'int', sa_restorer: 'uintptr_t',
});
export const SIZEOF_SIGACTION = 152;
export const SIGACTION_FLAGS = 136;
export const SIGACTION_RESTORER = 144;
/** struct stat (x86_64): the fields pier reads. */
export const SIZEOF_STAT = 144;
const STAT_MODE = 24;
const STAT_RDEV = 40;
const STAT_SIZE = 48;
const STAT_BLKSIZE = 56;

function assertAbi(): void {
  if (process.arch !== 'x64' || process.platform !== 'linux') {
    throw new Error(`pier supports linux/x64 only (this is ${process.platform}/${process.arch})`);
  }
  const sizes: Array<[string, number, number]> = [
    ['struct ifreq', koffi.sizeof(ifreq), SIZEOF_IFREQ],
    ['struct epoll_event', koffi.sizeof(epoll_event), SIZEOF_EPOLL_EVENT],
    ['struct iovec', koffi.sizeof(iovec), SIZEOF_IOVEC],
    ['struct msghdr', koffi.sizeof(msghdr), SIZEOF_MSGHDR],
    ['struct cmsghdr', koffi.sizeof(cmsghdr), SIZEOF_CMSGHDR],
    ['struct sockaddr_un', koffi.sizeof(sockaddr_un), SIZEOF_SOCKADDR_UN],
    ['struct sigaction (glibc)', koffi.sizeof(sigaction_t), SIZEOF_SIGACTION],
    ['struct nlmsghdr', koffi.sizeof(nlmsghdr), SIZEOF_NLMSGHDR],
    ['struct nlmsgerr', koffi.sizeof(nlmsgerr), SIZEOF_NLMSGERR],
    ['struct nlattr', koffi.sizeof(nlattr), SIZEOF_NLATTR],
    ['struct ifinfomsg', koffi.sizeof(ifinfomsg), SIZEOF_IFINFOMSG],
    ['struct ifaddrmsg', koffi.sizeof(ifaddrmsg), SIZEOF_IFADDRMSG],
    ['struct rtmsg', koffi.sizeof(rtmsg), SIZEOF_RTMSG],
    ['size_t', koffi.sizeof('size_t'), 8],
    ['off_t', koffi.sizeof('int64_t'), 8],
  ];
  for (const [name, got, want] of sizes) {
    if (got !== want) throw new Error(`ABI check failed: sizeof(${name}) is ${got}, expected ${want}`);
  }
  if (koffi.offsetof(ifreq, 'ifr_flags') !== 16) throw new Error('ABI check failed: ifreq.ifr_flags offset');
  if (koffi.offsetof(epoll_event, 'data') !== 4) throw new Error('ABI check failed: epoll_event.data offset');
  for (const [f, o] of [['sa_handler', 0], ['sa_mask', 8], ['sa_flags', SIGACTION_FLAGS], ['sa_restorer', SIGACTION_RESTORER]] as const) {
    if (koffi.offsetof(sigaction_t, f) !== o) throw new Error(`ABI check failed: sigaction.${f} offset`);
  }
  for (const [f, o] of [['msg_iov', 16], ['msg_iovlen', 24], ['msg_control', 32], ['msg_controllen', 40], ['msg_flags', 48]] as const) {
    if (koffi.offsetof(msghdr, f) !== o) throw new Error(`ABI check failed: msghdr.${f} offset`);
  }
  // The offsets src/sys/netlink.ts writes at.
  for (const [t, f, o] of [
    [nlmsghdr, 'nlmsg_type', 4], [nlmsghdr, 'nlmsg_flags', 6], [nlmsghdr, 'nlmsg_seq', 8], [nlmsghdr, 'nlmsg_pid', 12],
    [ifinfomsg, 'ifi_type', 2], [ifinfomsg, 'ifi_index', 4], [ifinfomsg, 'ifi_flags', 8], [ifinfomsg, 'ifi_change', 12],
    [ifaddrmsg, 'ifa_prefixlen', 1], [ifaddrmsg, 'ifa_scope', 3], [ifaddrmsg, 'ifa_index', 4],
    [rtmsg, 'rtm_dst_len', 1], [rtmsg, 'rtm_table', 4], [rtmsg, 'rtm_protocol', 5], [rtmsg, 'rtm_scope', 6], [rtmsg, 'rtm_type', 7], [rtmsg, 'rtm_flags', 8],
  ] as const) {
    if (koffi.offsetof(t, f) !== o) throw new Error(`ABI check failed: ${f} offset is ${koffi.offsetof(t, f)}, expected ${o}`);
  }
  for (const [name, [got, want]] of Object.entries(expectedIoctls)) {
    if (got !== want) throw new Error(`ABI check failed: ${name} is 0x${got.toString(16)}, expected 0x${want.toString(16)}`);
  }
}
assertAbi();

// ---- functions ----
export const open = lib.func('int open(const char *path, int flags, int mode)');
export const flock = lib.func('int flock(int fd, int operation)');
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const close = lib.func('int close(int fd)');
export const read = lib.func('intptr_t read(int fd, uintptr_t buf, size_t count)');
export const write = lib.func('intptr_t write(int fd, uintptr_t buf, size_t count)');
export const readBuf = lib.func('intptr_t read(int fd, _Out_ void *buf, size_t count)');
export const writeBuf = lib.func('intptr_t write(int fd, const void *buf, size_t count)');
export const readv = lib.func('intptr_t readv(int fd, uintptr_t iov, int iovcnt)');
export const writev = lib.func('intptr_t writev(int fd, uintptr_t iov, int iovcnt)');
export const ioctlPtr = lib.func('int ioctl(int fd, unsigned long req, _Inout_ void *arg)');
export const ioctlInt = lib.func('int ioctl(int fd, unsigned long req, unsigned long arg)');
export const epoll_create1 = lib.func('int epoll_create1(int flags)');
export const epoll_ctl = lib.func('int epoll_ctl(int epfd, int op, int fd, _Inout_ void *event)');
export const epoll_wait = lib.func('int epoll_wait(int epfd, uintptr_t events, int maxevents, int timeout)');
export const eventfd = lib.func('int eventfd(unsigned int initval, int flags)');
export const setns = lib.func('int setns(int fd, int nstype)');
export const mmap = lib.func('uintptr_t mmap(uintptr_t addr, size_t len, int prot, int flags, int fd, int64_t off)');
export const munmap = lib.func('int munmap(uintptr_t addr, size_t len)');
export const memfd_create = lib.func('int memfd_create(const char *name, unsigned int flags)');
export const ftruncate = lib.func('int ftruncate(int fd, int64_t len)');
export const socket = lib.func('int socket(int domain, int type, int protocol)');
export const bind = lib.func('int bind(int fd, const void *addr, uint32_t len)');
export const listen = lib.func('int listen(int fd, int backlog)');
export const accept4 = lib.func('int accept4(int fd, uintptr_t addr, uintptr_t len, int flags)');
export const connect = lib.func('int connect(int fd, const void *addr, uint32_t len)');
export const recvmsg = lib.func('intptr_t recvmsg(int fd, uintptr_t msg, int flags)');
export const sendmsg = lib.func('intptr_t sendmsg(int fd, uintptr_t msg, int flags)');
export const sendBuf = lib.func('intptr_t send(int fd, const void *buf, size_t len, int flags)');
export const recvBuf = lib.func('intptr_t recv(int fd, _Out_ void *buf, size_t len, int flags)');
export const setsockopt = lib.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)');
export const shutdown = lib.func('int shutdown(int fd, int how)');
export const dup = lib.func('int dup(int fd)');
export const fstatSize = lib.func('int fstat(int fd, _Out_ void *statbuf)');
export const fcntl = lib.func('int fcntl(int fd, int cmd, ...)');
export const mprotect = lib.func('int mprotect(uintptr_t addr, size_t len, int prot)');
export const sigaction = lib.func('int sigaction(int sig, const void *act, _Out_ void *oact)');
export const tgkill = lib.func('int tgkill(int tgid, int tid, int sig)');
export const pipe2 = lib.func('int pipe2(_Out_ int *fds, int flags)');
export const sched_setaffinity = lib.func('int sched_setaffinity(int pid, size_t size, const void *mask)');
export const getpid = lib.func('int getpid()');
export const gettid = lib.func('int gettid()');
const strerror_ = lib.func('const char *strerror(int errnum)');

/**
 * "dev:ino" of the file behind fd (struct stat starts with st_dev and st_ino, 8 bytes each, on
 * x86_64 and the generic 64-bit layout alike), or null when fstat fails.
 */
export function fileIdentity(fd: number): string | null {
  const st = new BigUint64Array(32); // 256 bytes: more than any 64-bit struct stat
  if (fstatSize(fd, st) !== 0) return null;
  return `${st[0]}:${st[1]}`;
}

export interface FileStat {
  dev: bigint;
  ino: bigint;
  /** st_mode: type (S_IFMT) and permission bits. */
  mode: number;
  rdev: bigint;
  size: number;
  /** st_blksize: the huge page size on hugetlbfs, 4096 on tmpfs and memfds. */
  blksize: number;
}

/** fstat(fd), or null with errno set when it fails. */
export function fstat(fd: number): FileStat | null {
  const st = new BigUint64Array(SIZEOF_STAT / 8);
  if (fstatSize(fd, st) !== 0) return null;
  return {
    dev: st[0]!, ino: st[1]!, mode: Number(st[STAT_MODE / 8]! & 0xffffffffn), rdev: st[STAT_RDEV / 8]!,
    size: Number(BigInt.asIntN(64, st[STAT_SIZE / 8]!)), blksize: Number(st[STAT_BLKSIZE / 8]!),
  };
}

/** fcntl with an int argument (F_SETFL, F_ADD_SEALS) or none (F_GETFL, F_GET_SEALS); -1 + errno on failure. */
export function fcntlInt(fd: number, cmd: number, arg?: number): number {
  return arg === undefined ? fcntl(fd, cmd) : fcntl(fd, cmd, 'int', arg);
}

/** Where /proc/self/fd/N points ("anon_inode:[eventfd]", "pipe:[123]", "/memfd:x (deleted)"), or null. */
export function fdTarget(fd: number): string | null {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
}

/** The C library's text for an errno value ("File exists"), as `ip` and `strerror(3)` print it. */
export function strerror(err: number): string {
  return strerror_(err);
}

export function errno(): number {
  return koffi.errno();
}

/** A view over foreign memory; created once per mapping, never per packet. */
export function view(addr: number, len: number): ArrayBuffer {
  return koffi.view(addr, len);
}

/** The address of a typed array's first byte, for syscalls that take iovecs. */
export function addressOf(buf: ArrayBufferView): number {
  return Number(koffi.address(buf));
}

const errnoNames: Record<number, string> = Object.fromEntries(
  Object.entries(koffi.os.errno).map(([k, v]) => [v, k]),
);

/** "EEXIST" for 17; "E<n>" for a number the table does not know. */
export function errnoName(err: number): string {
  return errnoNames[err] ?? `E${err}`;
}

export class SysError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  constructor(syscall: string, err: number, detail?: string) {
    const code = errnoName(err);
    super(`${syscall}${detail ? ` (${detail})` : ''}: ${strerror_(err)} [${code}]`);
    this.errno = err;
    this.code = code;
    this.syscall = syscall;
  }
}

/** Throw a SysError when a control-path syscall returned -1. Never used on the hot path. */
export function check(ret: number, syscall: string, detail?: string): number {
  if (ret < 0) throw new SysError(syscall, koffi.errno(), detail);
  return ret;
}

/** Pin the calling thread to one CPU. */
export function pinThread(cpu: number): void {
  const mask = new Uint8Array(128); // cpu_set_t
  mask[cpu >> 3] = 1 << (cpu & 7);
  check(sched_setaffinity(0, mask.length, mask), 'sched_setaffinity', `cpu ${cpu}`);
}
