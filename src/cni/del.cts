// DEL: idempotent (spec section 2). The daemon removes the port (nothing to remove is no error);
// a daemon that is not running gets a tombstone it applies when it starts; then the IPAM plugin
// releases the addresses, after the port is gone, so they are never handed to another container
// while this one still has them. A daemon that runs but does not answer fails the DEL (code 11):
// the runtime tries again.
import { rmSync } from 'node:fs';
import { writeTombstone } from './attachment.cts';
import type { NetConf } from './config.cts';
import { DaemonUnreachable, daemonError, request } from './control.cts';
import type { CniEnv } from './env.cts';
import { ipamOf } from './ipam.cts';
import { log } from './log.cts';

export async function del(env: CniEnv, conf: NetConf): Promise<void> {
  const ipam = ipamOf(env, conf);
  const attachment = { network: conf.name, containerId: env.containerId, ifname: env.ifname };
  let failed: unknown;
  try {
    const r = await request(conf.socket, 'cni-del', attachment) as { removed: string | null };
    log.debug(r.removed ? `port ${r.removed} removed` : 'no port to remove');
  } catch (e) {
    // A tombstone only when the daemon is not running: one that is running but did not answer
    // may have removed the port or may not; the runtime retries DEL (code 11).
    if (e instanceof DaemonUnreachable && e.notRunning) {
      let file: string | undefined;
      try {
        file = writeTombstone(conf.socket, attachment);
        log.warn(`${e.message}: the removal is left for it in ${file}`);
      } catch (t) {
        // Without a tombstone the port would come back with the daemon: the runtime must retry.
        log.error(`no tombstone could be written (${(t as Error).message})`);
        failed = e;
      }
      // A daemon that began to listen meanwhile may have read its tombstones already (it reads
      // them at start and once more as it begins to listen): asked once more, it removes the
      // port itself, and the tombstone goes (if the daemon has not taken it first).
      if (file !== undefined) {
        try {
          await request(conf.socket, 'cni-del', attachment);
          rmSync(file, { force: true });
          log.debug('the daemon answered after all: tombstone withdrawn');
        } catch { /* still not running: the tombstone stays for its start */ }
      }
    } else {
      failed = e;
    }
  }
  // The addresses go only once the port is gone (or sure to go): never to another container while
  // this one still has them.
  if (failed) throw daemonError(failed);
  ipam?.del();
}
