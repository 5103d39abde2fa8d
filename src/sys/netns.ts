// Network namespaces: resolving what a user names, and running a few syscalls inside one.
import { existsSync, statSync } from 'node:fs';
import * as c from './libc.ts';

export const NETNS_RUN_DIR = '/var/run/netns';

/** `c1` -> /var/run/netns/c1; `pid:123` -> /proc/123/ns/net; a path stays a path. */
export function netnsPath(spec: string): string {
  if (spec.startsWith('pid:')) return `/proc/${spec.slice(4)}/ns/net`;
  if (spec.includes('/')) return spec;
  return `${NETNS_RUN_DIR}/${spec}`;
}

export function netnsExists(path: string): boolean {
  try {
    return existsSync(path) && statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Run `fn` with the calling thread inside the namespace at `path`, then return to where it was.
 * setns(CLONE_NEWNET) moves only this thread; fds opened meanwhile (a tun file, a netlink socket)
 * keep the namespace they were opened in. `fn` must be synchronous.
 */
export function withNetns<T>(path: string | undefined, fn: () => T): T {
  if (path === undefined) return fn();
  const self = c.check(c.open('/proc/thread-self/ns/net', c.O_RDONLY | c.O_CLOEXEC, 0), 'open', 'own netns');
  let target = -1;
  try {
    target = c.check(c.open(path, c.O_RDONLY | c.O_CLOEXEC, 0), 'open', path);
    c.check(c.setns(target, c.CLONE_NEWNET), 'setns', path);
    try {
      return fn();
    } finally {
      if (c.setns(self, c.CLONE_NEWNET) < 0) {
        // Staying in a container's namespace would misplace every later port: fail hard.
        process.stderr.write('pier: fatal: cannot return to its own network namespace\n');
        process.exit(70);
      }
    }
  } finally {
    if (target >= 0) c.close(target);
    c.close(self);
  }
}
