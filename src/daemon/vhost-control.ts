// The control-plane half of a vhost-user server port: the listening socket. Made here, in the
// daemon's thread, so path problems reach the user as the answer to add-port.
import { existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { libc, unixConnect, unixListen } from '../sys/index.ts';
import { PierError } from './errors.ts';

export function listenVhostUser(path: string): number {
  const len = Buffer.byteLength(path);
  if (len > libc.SUN_PATH_MAX) {
    throw new PierError('EINVAL', `socket path ${path} is ${len} bytes; unix socket paths are at most ${libc.SUN_PATH_MAX}`, 'choose a shorter path=');
  }
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  if (existsSync(path)) {
    const st = lstatSync(path);
    if (!st.isSocket()) throw new PierError('EEXIST', `${path} exists and is not a socket`, 'remove it or choose another path=');
    let live = false;
    try {
      libc.close(unixConnect(path));
      live = true;
    } catch {
      /* nobody listens: a stale socket from an earlier run */
    }
    if (live) throw new PierError('EBUSY', `something already listens on ${path}`, 'choose another path=, or stop what listens there');
    unlinkSync(path);
  }
  try {
    return unixListen(path);
  } catch (e) {
    throw new PierError('ESOCKET', `cannot listen on ${path}: ${(e as Error).message}`, 'check the directory is writable');
  }
}

export function closeListener(fd: number, path: string): void {
  libc.close(fd);
  try {
    unlinkSync(path);
  } catch {
    /* already gone */
  }
}
