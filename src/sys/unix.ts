// AF_UNIX stream sockets with file descriptors passed as SCM_RIGHTS ancillary data: the
// transport of the vhost-user protocol. Node's net module cannot pass fds, so this is raw.
import * as c from './libc.ts';

export const MAX_FDS = 16;
const CMSG_SPACE = c.SIZEOF_CMSGHDR + MAX_FDS * 4;

function sockaddr(path: string): Uint8Array {
  const p = Buffer.from(path, 'utf8');
  if (p.length > c.SUN_PATH_MAX) {
    throw new Error(`unix socket path ${path} is ${p.length} bytes; the kernel allows at most ${c.SUN_PATH_MAX}`);
  }
  const sa = new Uint8Array(c.SIZEOF_SOCKADDR_UN);
  new DataView(sa.buffer).setUint16(0, c.AF_UNIX, true);
  sa.set(p, 2);
  return sa;
}

export function unixListen(path: string): number {
  const sa = sockaddr(path);
  const fd = c.check(c.socket(c.AF_UNIX, c.SOCK_STREAM | c.SOCK_NONBLOCK | c.SOCK_CLOEXEC, 0), 'socket');
  try {
    c.check(c.bind(fd, sa, sa.length), 'bind', path);
    // A deep backlog: a burst of connections waits to be accepted (and sorted out by the port) rather than refused.
    c.check(c.listen(fd, 1024), 'listen', path);
    return fd;
  } catch (e) {
    c.close(fd);
    throw e;
  }
}

/** Non-blocking connect; returns the fd (connected; unix stream connects complete at once) or throws. */
export function unixConnect(path: string): number {
  const sa = sockaddr(path);
  const fd = c.check(c.socket(c.AF_UNIX, c.SOCK_STREAM | c.SOCK_NONBLOCK | c.SOCK_CLOEXEC, 0), 'socket');
  if (c.connect(fd, sa, sa.length) < 0) {
    const e = new c.SysError('connect', c.errno(), path);
    c.close(fd);
    throw e;
  }
  return fd;
}

/** accept4 on a non-blocking listener: the new fd, or -1 when nothing is pending. */
export function unixAccept(fd: number): number {
  const r = c.accept4(fd, 0, 0, c.SOCK_NONBLOCK | c.SOCK_CLOEXEC);
  // EINTR (the peer-write watchdog's wake-up landing here) is as harmless as EAGAIN: try later.
  if (r < 0 && c.errno() !== c.EAGAIN && c.errno() !== c.EINTR) throw new c.SysError('accept4', c.errno());
  return r;
}

/**
 * One reusable receive context per connection: recvmsg into a caller's buffer, collecting any
 * file descriptors that come with the bytes (close-on-exec, never leaked: a truncated control
 * message is reported so the caller can drop the connection).
 */
export class FdReceiver {
  private readonly msg = new Uint8Array(c.SIZEOF_MSGHDR);
  private readonly iov = new Uint8Array(c.SIZEOF_IOVEC);
  private readonly ctrl = new Uint8Array(CMSG_SPACE);
  private readonly msgDv = new DataView(this.msg.buffer);
  private readonly iovDv = new DataView(this.iov.buffer);
  private readonly ctrlDv = new DataView(this.ctrl.buffer);
  /** fds received by the last call. */
  readonly fds: number[] = [];
  truncated = false;

  /** Receive up to `len` bytes at buf[off..]; returns bytes read, 0 at EOF, -1 on EAGAIN; throws on error. */
  recv(fd: number, buf: Uint8Array, off: number, len: number): number {
    this.fds.length = 0;
    this.truncated = false;
    this.iovDv.setBigUint64(0, BigInt(c.addressOf(buf) + off), true);
    this.iovDv.setBigUint64(8, BigInt(len), true);
    this.msgDv.setBigUint64(0, 0n, true);
    this.msgDv.setUint32(8, 0, true);
    this.msgDv.setBigUint64(16, BigInt(c.addressOf(this.iov)), true);
    this.msgDv.setBigUint64(24, 1n, true);
    this.msgDv.setBigUint64(32, BigInt(c.addressOf(this.ctrl)), true);
    this.msgDv.setBigUint64(40, BigInt(CMSG_SPACE), true);
    this.msgDv.setInt32(48, 0, true);
    const n = c.recvmsg(fd, c.addressOf(this.msg), c.MSG_CMSG_CLOEXEC | c.MSG_DONTWAIT);
    if (n < 0) {
      if (c.errno() === c.EAGAIN || c.errno() === c.EINTR) return -1;
      throw new c.SysError('recvmsg', c.errno());
    }
    const controllen = Number(this.msgDv.getBigUint64(40, true));
    let p = 0;
    while (p + c.SIZEOF_CMSGHDR <= controllen) {
      const clen = Number(this.ctrlDv.getBigUint64(p, true));
      if (clen < c.SIZEOF_CMSGHDR || p + clen > controllen) break;
      if (this.ctrlDv.getInt32(p + 8, true) === c.SOL_SOCKET && this.ctrlDv.getInt32(p + 12, true) === c.SCM_RIGHTS) {
        for (let q = p + c.SIZEOF_CMSGHDR; q + 4 <= p + clen; q += 4) this.fds.push(this.ctrlDv.getInt32(q, true));
      }
      p += (clen + 7) & ~7;
    }
    if ((this.msgDv.getInt32(48, true) & c.MSG_CTRUNC) !== 0) this.truncated = true;
    return n;
  }
}

/** Send bytes with optional fds (SCM_RIGHTS). Returns bytes sent, -1 on EAGAIN; throws on error. */
export function sendWithFds(fd: number, buf: Uint8Array, len: number, fds: readonly number[] = []): number {
  const msg = new Uint8Array(c.SIZEOF_MSGHDR);
  const iov = new Uint8Array(c.SIZEOF_IOVEC);
  const mdv = new DataView(msg.buffer);
  const idv = new DataView(iov.buffer);
  idv.setBigUint64(0, BigInt(c.addressOf(buf)), true);
  idv.setBigUint64(8, BigInt(len), true);
  mdv.setBigUint64(16, BigInt(c.addressOf(iov)), true);
  mdv.setBigUint64(24, 1n, true);
  let ctrl: Uint8Array | undefined;
  if (fds.length > 0) {
    if (fds.length > MAX_FDS) throw new Error(`at most ${MAX_FDS} fds per message`);
    const clen = c.SIZEOF_CMSGHDR + fds.length * 4;
    ctrl = new Uint8Array((clen + 7) & ~7);
    const cdv = new DataView(ctrl.buffer);
    cdv.setBigUint64(0, BigInt(clen), true);
    cdv.setInt32(8, c.SOL_SOCKET, true);
    cdv.setInt32(12, c.SCM_RIGHTS, true);
    fds.forEach((f, i) => cdv.setInt32(16 + i * 4, f, true));
    mdv.setBigUint64(32, BigInt(c.addressOf(ctrl)), true);
    mdv.setBigUint64(40, BigInt(ctrl.length), true);
  }
  const n = c.sendmsg(fd, c.addressOf(msg), c.MSG_NOSIGNAL | c.MSG_DONTWAIT);
  if (n < 0) {
    if (c.errno() === c.EAGAIN || c.errno() === c.EINTR) return -1;
    throw new c.SysError('sendmsg', c.errno());
  }
  return n;
}
