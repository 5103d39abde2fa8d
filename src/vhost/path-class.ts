// What a virtio-user port's `path` is, decided by stat() and never by trying: the vhost-net
// character device means the kernel backend (ioctls), a unix socket means a vhost-user backend
// (connect, or listen with server=true). The failure of the DPDK thread — connect() on
// /dev/vhost-net, ECONNREFUSED — cannot happen: a device is never connected to, a missing path is
// never taken for a socket.
import { lstatSync, statSync, type Stats } from 'node:fs';

export const VHOST_NET_MAJOR = 10;
export const VHOST_NET_MINOR = 238;

export type PathClass =
  | { kind: 'vhost-kernel'; path: string }
  | { kind: 'vhost-user'; path: string; server: boolean };

export class PathError extends Error {
  constructor(message: string, readonly hint: string) {
    super(message);
  }
}

function describe(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFile()) return 'a regular file';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isBlockDevice()) return `a block device ${Math.floor(st.rdev / 256)}:${st.rdev % 256}`;
  if (st.isCharacterDevice()) return `a character device ${Math.floor(st.rdev / 256)}:${st.rdev % 256}`;
  if (st.isSymbolicLink()) return 'a dangling symbolic link';
  return 'an unknown file type';
}

/**
 * Classify `path` for a virtio-user port. With `server`, pier will listen there: the path may
 * be missing (pier creates the socket) or a stale socket, but never a device or another file.
 */
export function classifyPath(path: string, server = false): PathClass {
  if (!path.startsWith('/')) throw new PathError(`path ${path} is not absolute`, 'give the full path, for example path=/dev/vhost-net');
  let st: Stats;
  try {
    st = statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // ENOTDIR: a part of the path is a file; missing all the same (a listener says which part).
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw new PathError(`cannot stat ${path}: ${(e as Error).message}`, 'check the path and its permissions');
    let dangling = false;
    try {
      dangling = lstatSync(path).isSymbolicLink();
    } catch { /* nothing there at all */ }
    if (dangling) throw new PathError(`${path} is a symbolic link to nothing`, 'point it at /dev/vhost-net or a vhost-user socket');
    if (path === '/dev/vhost-net') {
      throw new PathError('/dev/vhost-net does not exist: this kernel has no vhost-net loaded or built in',
        'load it with modprobe vhost_net (a kernel built with CONFIG_VHOST_NET), or use type=tap for this container');
    }
    if (server) return { kind: 'vhost-user', path, server: true };
    throw new PathError(`${path} does not exist, so it is neither the vhost-net device nor a vhost-user socket`,
      'start the vhost-user backend that listens there first, or pass server=true to have pier listen and the backend connect');
  }
  if (st.isCharacterDevice()) {
    const major = Math.floor(st.rdev / 256);
    const minor = st.rdev % 256;
    if (major === VHOST_NET_MAJOR && minor === VHOST_NET_MINOR) {
      if (server) throw new PathError(`${path} is the vhost-net device; server=true applies to vhost-user sockets only`, 'drop server=true');
      return { kind: 'vhost-kernel', path };
    }
    throw new PathError(`${path} is a character device ${major}:${minor}, not vhost-net (${VHOST_NET_MAJOR}:${VHOST_NET_MINOR})`,
      'use path=/dev/vhost-net for the kernel backend or the path of a vhost-user socket');
  }
  if (st.isSocket()) return { kind: 'vhost-user', path, server };
  throw new PathError(`${path} is ${describe(st)}, neither the vhost-net device nor a unix socket`,
    'use path=/dev/vhost-net or the path of a vhost-user socket');
}
