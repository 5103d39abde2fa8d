// The Linux vhost-net ioctl interface (include/uapi/linux/vhost.h): the kernel's vhost worker
// thread moves packets between a tap and virtqueues in pier's memory.
import * as c from './libc.ts';

const VHOST = 0xaf;
function ioc(dir: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (VHOST << 8) | nr) >>> 0;
}
const W = 1;
const R = 2;
export const VHOST_GET_FEATURES = ioc(R, 0x00, 8);
export const VHOST_SET_FEATURES = ioc(W, 0x00, 8);
export const VHOST_SET_OWNER = ioc(0, 0x01, 0);
export const VHOST_SET_MEM_TABLE = ioc(W, 0x03, 8);
export const VHOST_SET_VRING_NUM = ioc(W, 0x10, 8);
export const VHOST_SET_VRING_ADDR = ioc(W, 0x11, 40);
export const VHOST_SET_VRING_BASE = ioc(W, 0x12, 8);
export const VHOST_SET_VRING_KICK = ioc(W, 0x20, 8);
export const VHOST_SET_VRING_CALL = ioc(W, 0x21, 8);
export const VHOST_NET_SET_BACKEND = ioc(W, 0x30, 8);
const expected: Record<string, [number, number]> = {
  VHOST_GET_FEATURES: [VHOST_GET_FEATURES, 0x8008af00], VHOST_SET_FEATURES: [VHOST_SET_FEATURES, 0x4008af00],
  VHOST_SET_OWNER: [VHOST_SET_OWNER, 0x0000af01], VHOST_SET_MEM_TABLE: [VHOST_SET_MEM_TABLE, 0x4008af03],
  VHOST_SET_VRING_NUM: [VHOST_SET_VRING_NUM, 0x4008af10], VHOST_SET_VRING_ADDR: [VHOST_SET_VRING_ADDR, 0x4028af11],
  VHOST_SET_VRING_BASE: [VHOST_SET_VRING_BASE, 0x4008af12], VHOST_SET_VRING_KICK: [VHOST_SET_VRING_KICK, 0x4008af20],
  VHOST_SET_VRING_CALL: [VHOST_SET_VRING_CALL, 0x4008af21], VHOST_NET_SET_BACKEND: [VHOST_NET_SET_BACKEND, 0x4008af30],
};
for (const [name, [got, want]] of Object.entries(expected)) {
  if (got !== want) throw new Error(`ABI check failed: ${name} is 0x${got.toString(16)}, expected 0x${want.toString(16)}`);
}

export function openVhostNet(): number {
  return c.check(c.open('/dev/vhost-net', c.O_RDWR | c.O_CLOEXEC, 0), 'open', '/dev/vhost-net');
}

function ioctl(fd: number, req: number, arg: Uint8Array, name: string): void {
  c.check(c.ioctlPtr(fd, req, arg), `ioctl(${name})`);
}

export class VhostKernel {
  constructor(readonly fd: number) {}

  setOwner(): void {
    c.check(c.ioctlInt(this.fd, VHOST_SET_OWNER, 0), 'ioctl(VHOST_SET_OWNER)');
  }

  getFeatures(): bigint {
    const b = new BigUint64Array(1);
    ioctl(this.fd, VHOST_GET_FEATURES, new Uint8Array(b.buffer), 'VHOST_GET_FEATURES');
    return b[0]!;
  }

  setFeatures(f: bigint): void {
    ioctl(this.fd, VHOST_SET_FEATURES, new Uint8Array(new BigUint64Array([f]).buffer), 'VHOST_SET_FEATURES');
  }

  /** A struct vhost_memory, encoded by the caller (src/vhost/codec.ts memTable). */
  setMemTable(table: Uint8Array): void {
    ioctl(this.fd, VHOST_SET_MEM_TABLE, table, 'VHOST_SET_MEM_TABLE');
  }

  private state(req: number, name: string, index: number, num: number): void {
    const b = new Uint8Array(8);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, index, true);
    dv.setUint32(4, num, true);
    ioctl(this.fd, req, b, name);
  }

  setVringNum(i: number, n: number): void {
    this.state(VHOST_SET_VRING_NUM, 'VHOST_SET_VRING_NUM', i, n);
  }

  setVringBase(i: number, n: number): void {
    this.state(VHOST_SET_VRING_BASE, 'VHOST_SET_VRING_BASE', i, n);
  }

  setVringAddr(i: number, desc: number, used: number, avail: number): void {
    const b = new Uint8Array(40);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, i, true);
    dv.setBigUint64(8, BigInt(desc), true);
    dv.setBigUint64(16, BigInt(used), true);
    dv.setBigUint64(24, BigInt(avail), true);
    ioctl(this.fd, VHOST_SET_VRING_ADDR, b, 'VHOST_SET_VRING_ADDR');
  }

  private file(req: number, name: string, i: number, fd: number): void {
    const b = new Uint8Array(8);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, i, true);
    dv.setInt32(4, fd, true);
    ioctl(this.fd, req, b, name);
  }

  setVringKick(i: number, fd: number): void {
    this.file(VHOST_SET_VRING_KICK, 'VHOST_SET_VRING_KICK', i, fd);
  }

  setVringCall(i: number, fd: number): void {
    this.file(VHOST_SET_VRING_CALL, 'VHOST_SET_VRING_CALL', i, fd);
  }

  setBackend(i: number, tapFd: number): void {
    this.file(VHOST_NET_SET_BACKEND, 'VHOST_NET_SET_BACKEND', i, tapFd);
  }
}
