// Runs inside ../shared/tools/vmrun (a stock Debian kernel with /dev/vhost-net): pier-cni with
// portType virtio-user, invoked directly as a runtime does, attaches two network namespaces to a
// private daemon (pier drives the kernel's vhost-net; the container gets the kernel's tap), they
// ping each other and the gateway, then DEL takes everything away. Prints one JSON line with what
// happened; test/cni-virtio-user.vm.root.test.ts runs it and asserts.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { delNetns, makeNetns, must, pingUntil, sh, TestDaemon } from '../helpers.ts';
import { CNI_PLUGINS, cniExec, PIER_CNI } from '../cni-rootfs.ts';

const out: Record<string, unknown> = {};
const d = new TestDaemon();
const [a, b] = makeNetns(2) as [string, string];
const ipamDir = join(d.dir, 'ipam');
const NETWORK = 'pier-vm';
const conf = {
  cniVersion: '1.0.0', name: NETWORK, type: 'pier-cni', bridge: 'cnivm', socket: d.socket, portType: 'virtio-user', isGateway: true,
  ipam: { type: 'host-local', ranges: [[{ subnet: '10.96.0.0/24', gateway: '10.96.0.1' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: ipamDir },
};
const cni = (command: 'ADD' | 'DEL', id: string, ns: string): { code: number; result: any; stderr: string; ms: number } => {
  const r = cniExec(PIER_CNI, { command, containerId: id, ifname: 'eth0', netns: `/var/run/netns/${ns}`, path: CNI_PLUGINS }, conf);
  return { code: r.code, result: r.result ?? r.stdout, stderr: r.stderr.slice(-2000), ms: Math.round(r.ms) };
};
const held = (): string[] => {
  const dir = join(ipamDir, NETWORK);
  return existsSync(dir) ? readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)) : [];
};
const ports = (): any[] => ((d.json('show').bridges as any[]).find((x) => x.name === 'cnivm')?.ports ?? []) as any[];
const link = (ns: string): any => {
  const r = sh('ip', ['-n', ns, '-j', '-d', 'addr', 'show', 'dev', 'eth0']);
  return r.code === 0 ? JSON.parse(r.stdout)[0] : null;
};
try {
  out.vhostNet = must('stat', ['-c', '%t:%T %F', '/dev/vhost-net']).trim();
  await d.start();
  out.addA = cni('ADD', 'vm-a', a);
  out.addB = cni('ADD', 'vm-b', b);
  out.linkA = link(a);
  out.routeA = must('ip', ['-n', a, '-4', 'route', 'show', 'default']).trim();
  out.ports = ports().map((p) => ({ name: p.name, type: p.options.type, path: p.options.path, owner: p.owner, state: p.state, backend: p.peer?.backend, link: p.peer?.link }));
  out.held = held();
  const ipA = String((out.addA as any).result.ips[0].address).split('/')[0]!;
  const ipB = String((out.addB as any).result.ips[0].address).split('/')[0]!;
  out.pingAB = (await pingUntil(a, ipB, ['-W', '5'], 120_000)).includes('2 received');
  out.pingBA = (await pingUntil(b, ipA, ['-W', '5'], 120_000)).includes('2 received');
  out.pingGw = (await pingUntil(a, '10.96.0.1', ['-W', '5'], 120_000)).includes('2 received');
  out.delA = cni('DEL', 'vm-a', a);
  out.delB = cni('DEL', 'vm-b', b);
  out.delAgain = cni('DEL', 'vm-a', a);
  out.portsAfter = ports().map((p) => p.name);
  out.heldAfter = held();
  out.linkAfter = link(a);
} catch (e) {
  out.error = String((e as Error).stack ?? e);
  out.log = d.log.slice(-3000);
} finally {
  await d.cleanup();
  delNetns([a, b]);
}
process.stdout.write('RESULT ' + JSON.stringify(out) + '\n');
