// pier-cni with portType vhost-user (issue 10, requirement 7): a DPDK application in a pod gets a
// vhost-user socket instead of an interface. pier-cni is invoked directly as a runtime does
// (CNI_* environment, a cniVersion 1.1.0 config on stdin): ADD returns the socket in
// interfaces[].socketPath (CNI 1.1), DPDK testpmd's virtio-user attaches to it, pier shows the
// peer connected, a container on a tap port of the same bridge (also made by pier-cni) pings
// testpmd (icmpecho answers ARP and ICMP for any address) and testpmd's counters move; DEL
// removes the port, the socket and the address.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { delNetns, makeNetns, must, NEEDS, pingUntil, requires, TestDaemon, waitFor } from './helpers.ts';
import { CNI_NEEDS, CNI_PLUGINS, cniExec, PIER_CNI, type CniRun } from './cni-rootfs.ts';
import { Testpmd } from './testpmd.ts';

const NETWORK = 'pier-vu';
const SUBNET = '10.97.0.0/24';

describe('pier-cni portType vhost-user with DPDK testpmd (root)', requires(NEEDS.tun, NEEDS.testpmd, CNI_NEEDS.plugins, CNI_NEEDS.pierCni), () => {
  const d = new TestDaemon();
  const bridge = `vu${process.pid % 100000}`;
  const socketDir = join(d.dir, 'vu');
  const ipamDir = join(d.dir, 'ipam');
  let appNs = '';
  let tapNs = '';
  let testpmd: Testpmd | undefined;
  const app = { containerId: `vu-app-${process.pid}`, ifname: 'net1' };
  const tap = { containerId: `vu-tap-${process.pid}`, ifname: 'eth0' };
  let socketPath = '';
  let appIp = '';

  // Port options pass through to the daemon: queues and queue-size for the vhost-user port,
  // offloads and mtu for the tap.
  const conf = (portType: string): object => ({
    cniVersion: '1.1.0', name: NETWORK, type: 'pier-cni', bridge, socket: d.socket, portType, socketDir,
    ...(portType === 'vhost-user' ? { queues: 2, 'queue-size': 1024 } : { offloads: false, mtu: 1400 }),
    ipam: { type: 'host-local', ranges: [[{ subnet: SUBNET }]], dataDir: ipamDir },
  });
  const cni = (command: 'ADD' | 'DEL' | 'CHECK', portType: string, a: { containerId: string; ifname: string }, ns: string): CniRun =>
    cniExec(PIER_CNI, { command, containerId: a.containerId, ifname: a.ifname, netns: `/var/run/netns/${ns}`, path: CNI_PLUGINS }, conf(portType));
  const held = (): string[] => {
    const dir = join(ipamDir, NETWORK);
    return existsSync(dir) ? readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)) : [];
  };
  const portOf = (containerId: string): any => {
    const b = (d.json('show').bridges as any[]).find((x) => x.name === bridge);
    return (b?.ports as any[] | undefined)?.find((p) => p.owner?.kind === 'cni' && p.owner.containerId === containerId);
  };

  before(async () => {
    [appNs, tapNs] = makeNetns(2) as [string, string];
    await d.start();
  });

  after(async () => {
    await testpmd?.kill();
    cni('DEL', 'vhost-user', app, appNs);
    cni('DEL', 'tap', tap, tapNs);
    await d.cleanup();
    delNetns([appNs, tapNs]);
  });

  it('ADD (cniVersion 1.1.0) returns the vhost-user socket in interfaces[].socketPath, and no interface in the pod', () => {
    const r = cni('ADD', 'vhost-user', app, appNs);
    assert.equal(r.code, 0, `ADD: ${r.stdout}${r.stderr}`);
    const res = r.result;
    assert.equal(res.cniVersion, '1.1.0');
    const withSocket = (res.interfaces as any[]).filter((i) => i.socketPath);
    assert.equal(withSocket.length, 1, `one interface with a socketPath: ${r.stdout}`);
    socketPath = withSocket[0].socketPath;
    assert.ok(socketPath.startsWith(socketDir + '/'), `${socketPath} is in socketDir ${socketDir}`);
    assert.ok(statSync(socketPath).isSocket(), `${socketPath} is a socket pier listens on`);
    appIp = String(res.ips[0].address).split('/')[0]!;
    assert.match(appIp, /^10\.97\.0\.\d+$/);
    assert.deepEqual(held(), [appIp]);
    const p = portOf(app.containerId);
    assert.ok(p, 'pier show has the port');
    assert.equal(p.options.type, 'vhost-user');
    assert.equal(p.options.path, socketPath);
    assert.equal(p.owner.ifname, app.ifname);
    const links = JSON.parse(must('ip', ['-n', appNs, '-j', 'link', 'show'])) as Array<{ ifname: string }>;
    assert.deepEqual(links.map((l) => l.ifname), ['lo'], 'no interface made in the pod\'s namespace');
    assert.equal(p.options.queues, 2, 'queues passed through');
    assert.equal(p.options['queue-size'], 1024, 'queue-size passed through');
    const t = cni('ADD', 'tap', tap, tapNs);
    assert.equal(t.code, 0, `ADD of the tap container: ${t.stdout}${t.stderr}`);
    const tp = portOf(tap.containerId);
    assert.equal(tp.options.offloads, false, 'offloads passed through');
    assert.equal(tp.options.mtu, 1400, 'mtu passed through');
    const eth0 = JSON.parse(must('ip', ['-n', tapNs, '-j', 'link', 'show', 'eth0']))[0] as { mtu: number };
    assert.equal(eth0.mtu, 1400, 'the container\'s interface has the MTU');
  });

  it('testpmd attaches to the returned socket; pier shows the peer connected; a tap container on the same bridge pings it', { timeout: 120_000 }, async () => {
    assert.ok(socketPath, 'the socket of the first test');
    testpmd = new Testpmd([`net_virtio_user0,path=${socketPath}`], 'icmpecho');
    await testpmd.start();
    await waitFor(() => portOf(app.containerId)?.peer?.connected === true, 10_000, () => `pier to show the peer connected: ${JSON.stringify(portOf(app.containerId)?.peer)}`);
    const peer = portOf(app.containerId).peer;
    assert.equal(peer.link, 'up');
    const out = await pingUntil(tapNs, appIp);
    assert.match(out, /2 received/);
    const [s] = await testpmd.stats();
    assert.ok(s && s.rx > 0 && s.tx > 0, `testpmd's port counted the frames: ${JSON.stringify(s)}`);
    const c = d.json<any[]>('stats', portOf(app.containerId).name)[0].counters;
    assert.ok(c.rx_packets > 0 && c.tx_packets > 0, `pier's port counters: ${JSON.stringify(c)}`);
  });

  it('DEL removes the port, the socket and the address; a second DEL succeeds', { timeout: 60_000 }, async () => {
    assert.ok(socketPath, 'the socket of the first test');
    const r = cni('DEL', 'vhost-user', app, appNs);
    assert.equal(r.code, 0, `DEL: ${r.stdout}${r.stderr}`);
    assert.equal(portOf(app.containerId), undefined, 'port gone');
    await waitFor(() => !existsSync(socketPath), 5000, `${socketPath} to be removed`);
    assert.ok(!held().includes(appIp), `address ${appIp} released: ${held()}`);
    await testpmd?.kill();
    testpmd = undefined;
    assert.equal(cni('DEL', 'vhost-user', app, appNs).code, 0, 'DEL again');
    const t = cni('DEL', 'tap', tap, tapNs);
    assert.equal(t.code, 0, `DEL of the tap container: ${t.stdout}${t.stderr}`);
    assert.deepEqual(held(), []);
  });
});
