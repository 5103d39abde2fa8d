// STATUS (1.1.0): ready when the daemon answers (and the IPAM plugin, if it has STATUS, says so);
// code 50 otherwise.
import type { NetConf } from './config.cts';
import { request } from './control.cts';
import type { CniEnv } from './env.cts';
import { ipamOf } from './ipam.cts';
import { CniError, CODE } from './errors.cts';
import { log } from './log.cts';

export async function status(env: CniEnv, conf: NetConf): Promise<void> {
  try {
    await request(conf.socket, 'ping');
  } catch (e) {
    throw new CniError(CODE.unavailable, `the pier daemon is not available: ${(e as Error).message}`,
      `pier-cni cannot add containers until it answers on ${conf.socket}: start it (pier daemon, or the pier DaemonSet)`);
  }
  // CNI_PATH is optional for STATUS: without it the IPAM plugin cannot be found, and is not asked.
  if (conf.ipamType === undefined || env.path.length === 0) return;
  try {
    const ipam = ipamOf(env, conf);
    if (ipam && !ipam.status()) log.debug(`the IPAM plugin ${ipam.path} has no STATUS (CNI 1.1.0): not asked`);
  } catch (e) {
    throw new CniError(CODE.unavailable, `the IPAM plugin ${conf.ipamType} is not available: ${(e as Error).message}`, e instanceof CniError ? e.details : '');
  }
}
