// netns= of every kind: the namespace a port's interface, device or socket lives in, by name
// (/var/run/netns), pid:PID or a path. Checked before anything is made, or unmade.
import { PierError } from '../errors.ts';
import { netnsExists, netnsPath } from '../sys/index.ts';

/** The namespace's path; PierError ENONETNS, with how to make it, when there is none. undefined: pier's own. */
export function resolveNetns(spec: string | undefined): string | undefined {
  if (spec === undefined) return undefined;
  const path = netnsPath(spec);
  if (!netnsExists(path)) {
    const how = spec.startsWith('pid:') ? `no process ${spec.slice(4)} (or it has no network namespace)`
      : path.startsWith('/var/run/netns/') ? `create it with: ip netns add ${spec}` : 'pass a name under /var/run/netns, pid:PID, or /proc/PID/ns/net';
    throw new PierError('ENONETNS', `network namespace ${spec} not found (${path})`, how);
  }
  return path;
}
