// The control half of a vhost-user port: the listening socket of a server port (made here, in
// the daemon's thread, so path problems reach the user as the answer to add-port), and the
// clash check on socket paths.
import { existsSync, lstatSync, rmdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { libc, unixConnect, unixListen } from '../../sys/index.ts';
import { makeDir, PierError } from '../../errors.ts';
import type { ControlHalf, KindOptions, OtherPort, Realized } from '../kind.ts';
import { type VhostUserOptions, type VhostUserSpec, vhostUserSpec } from './options.ts';

/**
 * Directories pier made for sockets (a path= under a directory that did not exist): the socket's
 * close removes them again once empty, innermost first, so del-port leaves the tree as add-port
 * found it. A directory that was there before, or that holds anything else, stays.
 */
const madeDirs = new Set<string>();

export function listenVhostUser(path: string): number {
  const len = Buffer.byteLength(path);
  if (len > libc.SUN_PATH_MAX) {
    throw new PierError('EINVAL', `socket path ${path} is ${len} bytes; unix socket paths are at most ${libc.SUN_PATH_MAX}`, 'choose a shorter path=');
  }
  for (const d of makeDir(dirname(path), 0o755, `socket ${path}`, 'choose another path=')) madeDirs.add(d);
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
    removeMadeDirs(path);
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
  removeMadeDirs(path);
}

/** Remove the empty directories pier made above socket `path`, innermost first. */
function removeMadeDirs(path: string): void {
  for (let d = dirname(path); madeDirs.has(d); d = dirname(d)) {
    try {
      rmdirSync(d);
    } catch {
      return; // not empty (another port's socket, a user's file): it and its parents stay
    }
    madeDirs.delete(d);
  }
}

/** A port that listens on `path` (a vhost-user server port, a virtio-user port with server=true). */
function listens(o: KindOptions): boolean {
  return o.type === 'vhost-user' || (o.type === 'virtio-user' && (o as { server?: boolean }).server === true);
}

/**
 * Two listeners, or two connectors, on one socket path clash; one of each is pier talking to
 * itself (a virtio-user port on a vhost-user port), which is fine.
 */
export function checkSocketPath(o: KindOptions & { path: string }, others: readonly OtherPort[]): void {
  for (const p of others) {
    const po = p.options as KindOptions & { path?: string };
    if (po.path === o.path && (po.type === 'vhost-user' || po.type === 'vhost-user-client' || po.type === 'virtio-user') && listens(po) === listens(o)) {
      throw new PierError('EEXIST', `port ${p.name} already ${listens(o) ? 'listens on' : 'connects to'} socket ${o.path}`, 'choose another path=');
    }
  }
}

export const vhostUserControl: ControlHalf<VhostUserOptions, VhostUserSpec, number> = {
  prepare(_name, o, others) {
    checkSocketPath(o, others);
    return o;
  },
  realize(_name, o): Realized<VhostUserSpec, number> {
    const server = o.type === 'vhost-user';
    const fd = server ? listenVhostUser(o.path) : -1;
    const close = (): void => {
      if (server) closeListener(fd, o.path);
    };
    return { spec: vhostUserSpec(o, fd), handle: fd, destroy: close, detach: close };
  },
  // Every live key is the dataplane half's: rebuild it on the same listening socket.
  update: (_name, r, _prev, next) => {
    // A change that leaves the dataplane half as it is (mac=: port security's, not the device's) rebuilds nothing.
    const spec = vhostUserSpec(next, r.handle);
    return JSON.stringify(spec) === JSON.stringify(r.spec) ? undefined : spec;
  },
};
