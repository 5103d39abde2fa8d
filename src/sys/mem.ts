// Memory that can be shared: a memfd mapped MAP_SHARED, so a vhost backend can map the same pages.
//
// pier hands these files to peers it does not trust (a vhost-user backend maps the packet pool
// and the rings of a virtio-user port). A peer that could ftruncate() one smaller would make
// pier's next access to the lost pages a SIGBUS, so every memfd pier makes is created with
// MFD_ALLOW_SEALING, sized, and sealed against shrinking, growing and further sealing: the size
// is fixed for good, for every holder of the fd.
import * as c from './libc.ts';

export interface Mapping {
  fd: number;
  addr: number;
  size: number;
  buffer: ArrayBuffer;
}

/** Seals every pier memfd carries: its size can never change again, nor its seals. */
export const PIER_SEALS = c.F_SEAL_SHRINK | c.F_SEAL_GROW | c.F_SEAL_SEAL;

export function mapShared(name: string, size: number): Mapping {
  const fd = memfd(name, size);
  const addr = Number(c.mmap(0, size, c.PROT_READ | c.PROT_WRITE, c.MAP_SHARED, fd, 0));
  if (addr === 0 || addr >= 2 ** 53 || addr === 2 ** 64 - 1) {
    const e = new c.SysError('mmap', c.errno(), `${size} bytes`);
    c.close(fd);
    throw e;
  }
  return { fd, addr, size, buffer: c.view(addr, size) };
}

export function unmap(m: Mapping): void {
  c.munmap(m.addr, m.size);
  c.close(m.fd);
}

/** An anonymous shared-memory file of `size` bytes, sealed at that size (to be mapped, and handed to peers). */
export function memfd(name: string, size: number): number {
  const fd = c.check(c.memfd_create(name, c.MFD_CLOEXEC | c.MFD_ALLOW_SEALING), 'memfd_create', name);
  try {
    c.check(c.ftruncate(fd, size), 'ftruncate', `${size} bytes`);
    c.check(c.fcntlInt(fd, c.F_ADD_SEALS, PIER_SEALS), 'fcntl(F_ADD_SEALS)', name);
  } catch (e) {
    c.close(fd);
    throw e;
  }
  return fd;
}
