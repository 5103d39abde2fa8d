// GC (1.1.0): the daemon removes every port of this network whose attachment is not in
// cni.dev/valid-attachments, then the IPAM plugin's GC runs with the same list if it has one
// (host-local 1.1.1 does not: skipped). Both run whatever the other did; errors are all reported.
import type { NetConf } from './config.cts';
import { daemonError, request } from './control.cts';
import type { CniEnv } from './env.cts';
import { ipamOf } from './ipam.cts';
import { CniError, CODE } from './errors.cts';
import { log } from './log.cts';

export async function gc(env: CniEnv, conf: NetConf): Promise<void> {
  // Without the list every attachment would look stale: nothing is removed on a guess.
  const valid = conf.validAttachments;
  if (valid === undefined) {
    throw new CniError(CODE.badConfig, 'GC needs cni.dev/valid-attachments: without it every attachment of the network would look stale, so nothing was removed',
      'the runtime passes the list of attachments still in use (CNI 1.1.0); an empty list removes them all');
  }
  const errors: Error[] = [];
  try {
    const r = await request(conf.socket, 'cni-gc', { network: conf.name, valid }) as { removed: string[] };
    log.debug(`removed ${r.removed.length > 0 ? r.removed.join(', ') : 'nothing'}`);
  } catch (e) {
    errors.push(daemonError(e));
  }
  try {
    const ipam = ipamOf(env, conf);
    if (ipam && !ipam.gc()) log.debug(`the IPAM plugin ${ipam.path} has no GC (CNI 1.1.0): skipped`);
  } catch (e) {
    errors.push(e instanceof Error ? e : new Error(String(e)));
  }
  const [first, ...rest] = errors;
  if (first === undefined) return;
  if (rest.length === 0 || !(first instanceof CniError)) throw first;
  throw new CniError(first.code, first.message, [first.details, ...rest.map((e) => `also: ${e.message}`)].join('; '));
}
