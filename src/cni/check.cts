// CHECK: the attachment is as the ADD's result (prevResult) says: the daemon checks the port, its
// interface and addresses (cni-check), the IPAM plugin its reservation.
import type { NetConf } from './config.cts';
import { DaemonRefused, daemonError, request } from './control.cts';
import type { CniEnv } from './env.cts';
import { ipamOf } from './ipam.cts';
import { CniError, CODE } from './errors.cts';

export async function check(env: CniEnv, conf: NetConf): Promise<void> {
  const prev = conf.prevResult;
  if (!prev) throw new CniError(CODE.badConfig, 'invalid pier-cni config: prevResult is missing', 'CHECK needs the result of the ADD as prevResult; runtimes pass it (libcni caches it)');
  // pier's interface: by name, and in the container unless it is a vhost-user socket.
  const index = prev.interfaces.findIndex((i) => i.name === env.ifname && (conf.portType === 'vhost-user' || i.sandbox === env.netns));
  if (index < 0) {
    throw new CniError(CODE.notAttached, `prevResult has no interface ${env.ifname}${conf.portType === 'vhost-user' ? '' : ` in ${env.netns}`}`,
      'the ADD made one: was the result changed by a later plugin, or is this CHECK for another attachment?');
  }
  const ips = prev.ips.filter((i) => i.interface === index).map((i) => i.address);
  // The port first: a missing attachment says more than the missing reservation that goes with it.
  try {
    await request(conf.socket, 'cni-check', { network: conf.name, containerId: env.containerId, ifname: env.ifname, ips, portSecurity: conf.portSecurity });
  } catch (e) {
    if (e instanceof DaemonRefused) throw new CniError(CODE.notAttached, `not attached as the ADD left it: ${e.message}`, `${e.pierCode}${e.hint ? `: ${e.hint}` : ''}`);
    throw daemonError(e);
  }
  ipamOf(env, conf)?.check();
}
