// Memory that can be shared: a memfd mapped MAP_SHARED, so a vhost backend can map the same pages.
import * as c from './libc.ts';

export interface Mapping {
  fd: number;
  addr: number;
  size: number;
  buffer: ArrayBuffer;
}

export function mapShared(name: string, size: number): Mapping {
  const fd = c.check(c.memfd_create(name, c.MFD_CLOEXEC), 'memfd_create', name);
  try {
    c.check(c.ftruncate(fd, size), 'ftruncate', `${size} bytes`);
    const addr = Number(c.mmap(0, size, c.PROT_READ | c.PROT_WRITE, c.MAP_SHARED, fd, 0));
    if (addr === 0 || addr >= 2 ** 53 || addr === 2 ** 64 - 1) throw new c.SysError('mmap', c.errno(), `${size} bytes`);
    return { fd, addr, size, buffer: c.view(addr, size) };
  } catch (e) {
    c.close(fd);
    throw e;
  }
}

export function unmap(m: Mapping): void {
  c.munmap(m.addr, m.size);
  c.close(m.fd);
}

/** An anonymous shared-memory file of `size` bytes (to be mapped, and handed to peers). */
export function memfd(name: string, size: number): number {
  const fd = c.check(c.memfd_create(name, c.MFD_CLOEXEC), 'memfd_create', name);
  if (c.ftruncate(fd, size) < 0) {
    const e = new c.SysError('ftruncate', c.errno(), `${size} bytes`);
    c.close(fd);
    throw e;
  }
  return fd;
}
