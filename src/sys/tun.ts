// Tap devices with virtio-net headers (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).
import * as c from './libc.ts';
import { withNetns } from './netns.ts';

export const VNET_HDR_LEN = 12; // struct virtio_net_hdr_v1 (with num_buffers), the virtio 1.x layout

export interface TapOptions {
  /** Interface name inside its namespace (at most 15 bytes). */
  ifname: string;
  /** Network namespace path to create/attach the tap in; undefined = pier's own namespace. */
  netnsPath?: string | undefined;
  /** Offloads pier accepts from the kernel (TUN_F_* bits): the tap then advertises TSO/csum. */
  offloads: number;
  multiQueue?: boolean;
  /** Only create: fail with EBUSY if an interface of that name exists (IFF_TUN_EXCL). */
  exclusive?: boolean;
}

export interface Tap {
  fd: number;
  ifname: string;
}

/**
 * Open (or re-attach to) a tap. The tun file takes the network namespace of the thread that opens
 * /dev/net/tun, so opening it inside the container's namespace makes the device appear there
 * directly, under its final name; a persistent tap of the same name is re-attached (unless
 * `exclusive`), which is how a daemon restart finds its ports again.
 */
export function openTap(opts: TapOptions): Tap {
  const fd = withNetns(opts.netnsPath, () =>
    c.check(c.open('/dev/net/tun', c.O_RDWR | c.O_NONBLOCK | c.O_CLOEXEC, 0), 'open', '/dev/net/tun'));
  try {
    const req = new Uint8Array(c.SIZEOF_IFREQ);
    const name = Buffer.from(opts.ifname, 'utf8');
    if (name.length >= c.IFNAMSIZ) throw new Error(`interface name ${opts.ifname} is longer than 15 bytes`);
    req.set(name, 0);
    let flags = c.IFF_TAP | c.IFF_NO_PI | c.IFF_VNET_HDR;
    if (opts.multiQueue) flags |= c.IFF_MULTI_QUEUE;
    if (opts.exclusive) flags |= c.IFF_TUN_EXCL;
    new DataView(req.buffer).setInt16(16, flags, true);
    c.check(c.ioctlPtr(fd, c.TUNSETIFF, req), 'ioctl(TUNSETIFF)', opts.ifname);
    const hdr = new Int32Array([VNET_HDR_LEN]);
    c.check(c.ioctlPtr(fd, c.TUNSETVNETHDRSZ, hdr), 'ioctl(TUNSETVNETHDRSZ)');
    c.check(c.ioctlInt(fd, c.TUNSETOFFLOAD, opts.offloads), 'ioctl(TUNSETOFFLOAD)');
    return { fd, ifname: opts.ifname };
  } catch (e) {
    c.close(fd);
    throw e;
  }
}

/** A persistent tap outlives pier's fd, so the container keeps its interface across restarts. */
export function setPersist(fd: number, on: boolean): void {
  c.check(c.ioctlInt(fd, c.TUNSETPERSIST, on ? 1 : 0), 'ioctl(TUNSETPERSIST)');
}

export function setOffload(fd: number, offloads: number): void {
  c.check(c.ioctlInt(fd, c.TUNSETOFFLOAD, offloads), 'ioctl(TUNSETOFFLOAD)');
}

/**
 * TUNSETSNDBUF: the most bytes of frames written into the tap (by pier's write(), or by vhost-net
 * on pier's behalf) that may be in flight inside the kernel before the writer is told to wait
 * (EAGAIN; vhost-net then stops taking from its ring until the tap has room). The kernel's
 * default for a tap is INT_MAX: no bound at all. Applies to every queue attached so far.
 */
export function setSndbuf(fd: number, bytes: number): void {
  if (!Number.isInteger(bytes) || bytes <= 0 || bytes > 0x7fffffff) throw new RangeError(`send buffer ${bytes} is not in 1..INT_MAX`);
  c.check(c.ioctlPtr(fd, c.TUNSETSNDBUF, new Int32Array([bytes])), 'ioctl(TUNSETSNDBUF)');
}

/** TUNGETSNDBUF: the send buffer of this queue's socket, in bytes. */
export function getSndbuf(fd: number): number {
  const v = new Int32Array(1);
  c.check(c.ioctlPtr(fd, c.TUNGETSNDBUF, v), 'ioctl(TUNGETSNDBUF)');
  return v[0]!;
}

export function closeFd(fd: number): void {
  c.close(fd);
}
