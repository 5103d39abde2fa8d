// ADD: addresses from the IPAM plugin, then one cni-add request that makes the port; the result
// is prevResult with pier's interface appended. Whatever fails after IPAM ADD releases the
// addresses again (IPAM DEL), so a failed ADD leaves nothing: the daemon undoes its own part.
import { mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { DEFAULT_SOCKET_DIR, type NetConf } from './config.cts';
import { DaemonUnreachable, daemonError, request } from './control.cts';
import type { CniEnv } from './env.cts';
import { CniError, CODE } from './errors.cts';
import { ipamOf } from './ipam.cts';
import { log } from './log.cts';
import { mergeResult } from './result.cts';
import { writeResult, type Iface, type Result } from './versions.cts';

/** The daemon's answer to cni-add (docs/design/cni.md). */
interface AddReply { port: string; bridge: string; type: string; ifname: string; mac: string; mtu: number; sandbox?: string; socketPath?: string }

export async function add(env: CniEnv, conf: NetConf): Promise<Record<string, unknown>> {
  if (conf.portType !== 'vhost-user') checkNetns(env.netns);
  const ipam = ipamOf(env, conf);
  const attachment = { network: conf.name, containerId: env.containerId, ifname: env.ifname };
  let addrs: Result = { interfaces: [], ips: [], routes: [], dns: {} };
  let given: Record<string, unknown> | undefined;
  let made = false;
  try {
    // Inside the try: a result that cannot be read after the plugin allocated still gets its DEL.
    if (ipam) ({ result: addrs, given } = ipam.add());
    const t0 = performance.now();
    const reply = await request(conf.socket, 'cni-add', {
      ...attachment,
      netns: env.netns,
      bridge: conf.bridge,
      portType: conf.portType,
      ...(conf.mtu !== undefined ? { mtu: conf.mtu } : {}),
      ...(conf.mac !== undefined ? { mac: conf.mac } : {}),
      ...(Object.keys(conf.options).length > 0 ? { options: conf.options } : {}),
      ips: addrs.ips.map((i) => (i.gateway !== undefined ? { address: i.address, gateway: i.gateway } : { address: i.address })),
      routes: addrs.routes.map((r) => (typeof r.gw === 'string' ? { dst: r.dst, gw: r.gw } : { dst: r.dst })),
      isGateway: conf.isGateway,
      ipMasq: conf.ipMasq,
      portSecurity: conf.portSecurity,
      // Chained after a plugin that gave the addresses: they are what the port may send from.
      ...(!ipam && conf.prevResult && conf.prevResult.ips.length > 0 ? { allowed: conf.prevResult.ips.map((i) => i.address.split('/')[0]!) } : {}),
      ...(conf.portType === 'vhost-user' ? { socketDir: conf.socketDir ?? DEFAULT_SOCKET_DIR } : {}),
      ...(ipam && given ? { ipam: { conf: given, cniPath: env.path.join(':') } } : {}),
    }) as AddReply;
    made = true;
    log.debug(`port ${reply.port} on bridge ${reply.bridge} (${reply.type}), mac ${reply.mac}: ${(performance.now() - t0).toFixed(1)} ms`);
    const iface: Iface = { name: reply.ifname || env.ifname, mac: reply.mac };
    if (typeof reply.mtu === 'number') iface.mtu = reply.mtu;
    if (conf.portType === 'vhost-user') {
      if (reply.socketPath) iface.socketPath = reply.socketPath;
      if (reply.socketPath && conf.deviceInfoFile) writeDeviceInfo(conf.deviceInfoFile, reply.socketPath);
    } else {
      iface.sandbox = env.netns;
    }
    return writeResult(mergeResult(conf.prevResult, iface, addrs, conf.isGateway), conf.cniVersion);
  } catch (e) {
    // The port exists when what failed came after the daemon's answer: it goes first.
    // So may it when the daemon got the request and did not answer in time.
    if (made || (e instanceof DaemonUnreachable && !e.notRunning)) await request(conf.socket, 'cni-del', attachment).catch((d: Error) => log.error(`the port of the failed ADD could not be removed: ${d.message}`));
    if (ipam) {
      try {
        ipam.del();
        log.debug('addresses released after the failed ADD');
      } catch (d) {
        log.error(`the addresses of the failed ADD could not be released: ${(d as Error).message}`);
      }
    }
    throw daemonError(e);
  }
}

/** A tap is made inside CNI_NETNS: it must exist, and must not be the namespace pier-cni runs in. */
function checkNetns(netns: string): void {
  let ns;
  try {
    ns = statSync(netns);
  } catch (e) {
    throw new CniError(CODE.badEnv, `CNI_NETNS ${netns} cannot be opened: ${(e as NodeJS.ErrnoException).code}`, 'CNI_NETNS names the container\'s network namespace, such as /run/netns/NAME');
  }
  const own = statSync('/proc/self/ns/net');
  if (ns.dev === own.dev && ns.ino === own.ino) {
    throw new CniError(CODE.badNetns, 'plugin\'s netns and netns from CNI_NETNS should not be the same', `${netns} is the host's network namespace; CNI_NETNS names the container's`);
  }
}

/**
 * Multus copies this file into the pod's network-status annotation, which is how a DPDK
 * application finds its socket (Multus does not copy a result's socketPath). Device-info spec
 * 1.1.0; mode "client": pier made the socket, the application connects. Written whole (rename).
 */
function writeDeviceInfo(file: string, socketPath: string): void {
  const info = { type: 'vhost-user', version: '1.1.0', 'vhost-user': { mode: 'client', path: socketPath } };
  try {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(`${file}.tmp`, JSON.stringify(info) + '\n');
    renameSync(`${file}.tmp`, file);
  } catch (e) {
    throw new CniError(CODE.io, `cannot write the device-info file ${file}: ${(e as Error).message}`, 'check that the directory Multus names is writable by the plugin');
  }
}
