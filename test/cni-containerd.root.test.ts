// pier-cni under a real runtime (issue 10, requirement 7): containerd 1.6 and runc from Debian,
// containers run by `ctr run --rm --cni` from a busybox-static root filesystem, on the network
// { type: pier-cni, isGateway, ipMasq, ipam: host-local 10.99.0.0/24 } of a private pier daemon.
// Two containers ping each other and the gateway, the host pings them, iperf3 runs between them,
// `pier show` marks their ports; ipMasq is checked against an "outside" namespace the host routes
// to over a veth pair (198.51.100.0/24, a documentation range: no test traffic leaves this
// machine), which must see the host's address; removal (the task ends, ctr runs DEL) frees the
// port and the address, and the last one takes the gateway port and the nftables table with it.
// The harness (private containerd, ctr in a mount namespace of its own so the host's
// /etc/cni/net.d and /opt/cni/bin are never touched): test/cni-rootfs.ts.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { listening, must, NEEDS, requires, sh, TestDaemon, waitFor } from './helpers.ts';
import { buildRootfs, CNI_NEEDS, Containerd, PIER_CNI, type Conflist, type Container } from './cni-rootfs.ts';

const NETWORK = 'pier-test';
const SUBNET = '10.99.0.0/24';
const GATEWAY = '10.99.0.1';
/** The "outside" network: host side .1, the outside namespace .2 (RFC 5737 TEST-NET-2). */
const OUTSIDE = { subnet: '198.51.100.0/24', host: '198.51.100.1', peer: '198.51.100.2' };

/** The port name of an attachment, as docs/design/cni.md fixes it. */
function attachmentPort(containerId: string, ifname = 'eth0'): string {
  return 'cni-' + createHash('sha256').update(`${NETWORK}\0${containerId}\0${ifname}`).digest('hex').slice(0, 12);
}

/** Every port of `bridge` in `pier show --json`, by name. */
function portsOf(show: any, bridge: string): Map<string, any> {
  const b = (show.bridges as any[]).find((x) => x.name === bridge);
  return new Map(((b?.ports ?? []) as any[]).map((p) => [p.name as string, p]));
}

describe('pier-cni under containerd: ctr run --cni (root)', requires(NEEDS.tun, NEEDS.iperf3, CNI_NEEDS.containerd, CNI_NEEDS.ctr, CNI_NEEDS.runc,
  CNI_NEEDS.unshare, CNI_NEEDS.nft, CNI_NEEDS.busybox, CNI_NEEDS.plugins, CNI_NEEDS.pierCni), () => {
  const d = new TestDaemon();
  const ctd = new Containerd();
  const bridge = `ct${process.pid % 100000}`;
  const gwPort = `${bridge}-gw`;
  const ipamDir = join(ctd.dir, 'ipam');
  const outsideNs = `pco${process.pid % 100000}`;
  const vethHost = `pco${process.pid % 100000}h`;
  let rootfs = '';
  let nftBefore = false;
  const running: Record<string, Container> = {};

  const conflist = (): Conflist => ({
    cniVersion: '1.0.0', name: NETWORK,
    plugins: [{
      type: 'pier-cni', bridge, socket: d.socket, isGateway: true, ipMasq: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: SUBNET, gateway: GATEWAY }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: ipamDir },
    }],
  });

  /** Addresses host-local holds for this network (its files named by address). */
  const held = (): string[] => {
    const dir = join(ipamDir, NETWORK);
    return existsSync(dir) ? readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)).sort() : [];
  };
  const show = (): any => d.json('show');
  const nftTable = (): { code: number; text: string } => {
    const r = sh('nft', ['list', 'table', 'inet', 'pier']);
    return { code: r.code, text: r.stdout + r.stderr };
  };

  /** ping from inside a container until one echo is answered (ARP, a port still coming up), then 3 that must all be. */
  async function pingFrom(c: Container, addr: string): Promise<string> {
    let last = '';
    await waitFor(() => {
      const r = ctd.exec(c, ['/bin/ping', '-c', '1', '-W', '1', addr]);
      last = r.stdout + r.stderr;
      return r.code === 0;
    }, 20_000, () => `${c.name} to reach ${addr}: ${last}`, 200);
    const r = ctd.exec(c, ['/bin/ping', '-c', '3', '-i', '0.2', '-W', '2', addr]);
    assert.equal(r.code, 0, `ping ${addr} from ${c.name}: ${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /3 packets transmitted, 3 packets received/);
    return r.stdout;
  }

  before(async () => {
    // Addresses this test routes on the host must be free: another network using them would be disturbed.
    for (const net of [SUBNET, OUTSIDE.subnet]) {
      const routes = must('ip', ['-4', 'route', 'show', 'to', 'match', net.split('/')[0]!]).split('\n').filter((l) => l && !l.startsWith('default'));
      if (routes.length) throw new Error(`${net} is already routed on this host (${routes.join('; ')}): this test needs it free (another test or network uses it)`);
    }
    nftBefore = nftTable().code === 0;
    await d.start();
    rootfs = buildRootfs(join(ctd.dir, 'rootfs')).dir;
    ctd.linkReferencePlugins(); // host-local (and loopback) from Debian's containernetworking-plugins
    ctd.linkPlugin('pier-cni', PIER_CNI);
    ctd.setConflist(conflist());
    await ctd.start();
  });

  after(async () => {
    const problems = await ctd.cleanup();
    sh('ip', ['link', 'del', vethHost]);
    sh('ip', ['netns', 'del', outsideNs]);
    await d.cleanup();
    assert.deepEqual(problems, [], 'the containers were removed cleanly');
  });

  it('two containers get host-local addresses and a default route, ping each other and the gateway; the host pings them', { timeout: 120_000 }, async () => {
    running.c1 = await ctd.run('c1', undefined, rootfs);
    running.c2 = await ctd.run('c2', undefined, rootfs);
    const [c1, c2] = [running.c1, running.c2];
    const [a1, a2] = [ctd.addresses(c1), ctd.addresses(c2)];
    for (const a of [a1, a2]) {
      assert.equal(a.length, 1, `one address on eth0: ${a}`);
      assert.match(a[0]!, /^10\.99\.0\.\d+\/24$/);
      assert.notEqual(a[0], `${GATEWAY}/24`);
    }
    assert.notEqual(a1[0], a2[0]);
    const route = ctd.inNetns(c1, 'ip', ['-4', 'route', 'show', 'default']).stdout;
    assert.match(route, new RegExp(`default via ${GATEWAY.replaceAll('.', '\\.')} dev eth0`));
    assert.deepEqual(held(), [ctd.ip(c1), ctd.ip(c2)].sort(), 'host-local holds exactly the two addresses');
    await pingFrom(c1, ctd.ip(c2));
    await pingFrom(c2, ctd.ip(c1));
    await pingFrom(c1, GATEWAY);
    await pingFrom(c2, GATEWAY);
    for (const c of [c1, c2]) {
      const r = sh('ping', ['-c', '3', '-i', '0.2', '-W', '2', ctd.ip(c)]);
      assert.equal(r.code, 0, `the host pings ${c.name}: ${r.stdout}${r.stderr}`);
    }
  });

  it('iperf3 between the two containers moves data', { timeout: 120_000 }, async () => {
    const { c1, c2 } = running;
    assert.ok(c1 && c2, 'the containers of the first test');
    const srv = ctd.execBackground(c2, ['/usr/bin/iperf3', '-s', '-1']);
    try {
      await waitFor(() => {
        if (srv.exitCode !== null) throw new Error(`iperf3 -s in c2 exited (${srv.exitCode}): ${srv.out}`);
        return ctd.inNetns(c2, 'ss', ['-Hltn', 'sport = :5201']).stdout.trim() !== '';
      }, 20_000, 'iperf3 -s in c2 to listen');
      const r = ctd.exec(c1, ['/usr/bin/iperf3', '-c', ctd.ip(c2), '-t', '3', '-J'], 60_000);
      assert.equal(r.code, 0, `iperf3 -c: ${r.stdout.slice(-1000)}${r.stderr}`);
      const j = JSON.parse(r.stdout);
      assert.ok(j.end.sum_received.bytes > 1_000_000, `bytes received: ${j.end.sum_received.bytes}`);
      console.log(`# iperf3 c1 -> c2 through pier: ${(j.end.sum_received.bits_per_second / 1e9).toFixed(2)} Gbit/s, ${j.end.sum_received.bytes} bytes`);
    } finally {
      // iperf3 -s -1 exits after its one test; a server left waiting dies with its container.
      await waitFor(() => srv.exitCode !== null || srv.signalCode !== null, 10_000, 'iperf3 -s to exit').catch(() => srv.kill('SIGKILL'));
    }
  });

  it('pier show marks the ports with network, container id and ifname; the gateway port carries the gateway', () => {
    const { c1, c2 } = running;
    assert.ok(c1 && c2, 'the containers of the first test');
    const ports = portsOf(show(), bridge);
    for (const c of [c1, c2]) {
      const p = ports.get(attachmentPort(c.cniId));
      assert.ok(p, `port ${attachmentPort(c.cniId)} for ${c.cniId} in ${[...ports.keys()].join(' ')}`);
      assert.equal(p.owner?.kind, 'cni');
      assert.equal(p.owner.network, NETWORK);
      assert.equal(p.owner.containerId, c.cniId, 'ctr passes <namespace>-<name> as CNI_CONTAINERID');
      assert.equal(p.owner.ifname, 'eth0');
      assert.equal(p.options.type, 'tap');
      assert.equal(p.state, 'up');
      assert.deepEqual(p.options.ip, ctd.addresses(c));
    }
    const gw = ports.get(gwPort);
    assert.ok(gw, `gateway port ${gwPort}`);
    assert.equal(gw.owner?.kind, 'cni-gateway');
    assert.deepEqual(gw.options.ip, [`${GATEWAY}/24`]);
    assert.equal(ports.size, 3, `two containers and the gateway: ${[...ports.keys()].join(' ')}`);
    const text = d.ok('show');
    for (const c of [c1, c2]) assert.ok(text.includes(`cni: network ${NETWORK} container ${c.cniId} ifname eth0`), text);
  });

  it('ipMasq: an outside namespace routed through the host sees the host\'s address, not the container\'s', { timeout: 120_000 }, async () => {
    const { c1 } = running;
    assert.ok(c1, 'the container of the first test');
    const t = nftTable();
    assert.equal(t.code, 0, `nft table inet pier: ${t.text}`);
    assert.match(t.text, /10\.99\.0\.0\/24/);
    assert.match(t.text, /masquerade/);
    // The outside: a namespace behind a veth pair, with no route back to the containers' subnet
    // (only a masqueraded connection can be answered).
    must('ip', ['netns', 'add', outsideNs]);
    must('ip', ['link', 'add', vethHost, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outsideNs]);
    must('ip', ['addr', 'add', `${OUTSIDE.host}/24`, 'dev', vethHost]);
    must('ip', ['link', 'set', vethHost, 'up']);
    must('ip', ['-n', outsideNs, 'addr', 'add', `${OUTSIDE.peer}/24`, 'dev', 'eth0']);
    must('ip', ['-n', outsideNs, 'link', 'set', 'eth0', 'up']);
    must('ip', ['-n', outsideNs, 'link', 'set', 'lo', 'up']);
    await pingFrom(c1, OUTSIDE.peer);
    const srv = spawn('ip', ['netns', 'exec', outsideNs, 'iperf3', '-s', '-1', '-J'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    srv.stdout.on('data', (x) => (out += x));
    srv.stderr.on('data', (x) => (out += x));
    try {
      await waitFor(() => {
        if (srv.exitCode !== null) throw new Error(`iperf3 -s in ${outsideNs} exited (${srv.exitCode}): ${out}`);
        return listening(outsideNs, 5201);
      }, 20_000, `iperf3 -s in ${outsideNs} to listen`);
      const r = ctd.exec(c1, ['/usr/bin/iperf3', '-c', OUTSIDE.peer, '-t', '1', '-J'], 60_000);
      assert.equal(r.code, 0, `iperf3 -c ${OUTSIDE.peer} from c1: ${r.stdout.slice(-1000)}${r.stderr}`);
      const client = JSON.parse(r.stdout);
      assert.equal(client.start.connected[0].local_host, ctd.ip(c1), 'the container sends from its own address');
      await waitFor(() => srv.exitCode !== null, 20_000, () => `iperf3 -s to finish: ${out}`);
      const server = JSON.parse(out);
      assert.equal(server.start.connected[0].remote_host, OUTSIDE.host, 'the outside sees the host\'s address');
      assert.ok(server.end.sum_received.bytes > 0);
    } finally {
      srv.kill();
    }
  });

  it('a detached container (ctr runs no DEL for it) is removed by the DEL a runtime would run, with the namespace gone', { timeout: 120_000 }, async () => {
    const c = ctd.runDetached('d1', ['/bin/sleep', '3600'], rootfs);
    const ip = ctd.ip(c);
    assert.ok(held().includes(ip));
    await pingFrom(c, GATEWAY);
    assert.ok(portsOf(show(), bridge).has(attachmentPort(c.cniId)));
    const r = await ctd.remove(c); // task killed and deleted first: DEL finds no namespace
    assert.equal(r.code, 0, `DEL: ${r.log}`);
    assert.ok(!portsOf(show(), bridge).has(attachmentPort(c.cniId)), 'port gone');
    assert.ok(!held().includes(ip), `address ${ip} released: ${held()}`);
    const again = ctd.cniDel(c);
    assert.deepEqual(again.map((x) => x.code), [0], `a second DEL succeeds too: ${again.map((x) => x.stdout + x.stderr).join('')}`);
  });

  it('removal: the task ends, ctr runs DEL, the port and the address are freed; the last one takes the gateway port and the nftables table', { timeout: 120_000 }, async () => {
    const { c1, c2 } = running;
    assert.ok(c1 && c2, 'the containers of the first test');
    const [ip1, ip2] = [ctd.ip(c1), ctd.ip(c2)];
    const r1 = await ctd.remove(c1);
    assert.equal(r1.code, 137, `ctr run exits with the task's status (SIGKILL): ${r1.log}`);
    assert.doesNotMatch(r1.log, /level=error|failed/i, 'ctr reported no error (its DEL succeeded)');
    assert.ok(!ctd.containerNames().includes('c1'), 'ctr deleted the container');
    let ports = portsOf(show(), bridge);
    assert.ok(!ports.has(attachmentPort(c1.cniId)), 'c1\'s port is gone');
    assert.ok(ports.has(attachmentPort(c2.cniId)) && ports.has(gwPort), 'c2\'s port and the gateway stay');
    assert.deepEqual(held(), [ip2], `host-local released ${ip1}`);
    await pingFrom(c2, GATEWAY);

    const r2 = await ctd.remove(c2);
    assert.equal(r2.code, 137, r2.log);
    assert.doesNotMatch(r2.log, /level=error|failed/i);
    ports = portsOf(show(), bridge);
    assert.deepEqual([...ports.keys()], [], 'no port left on the bridge (the gateway port went with the last attachment)');
    assert.deepEqual(held(), [], 'no address held');
    assert.equal(sh('ip', ['link', 'show', gwPort]).code !== 0, true, `the host's ${gwPort} interface is gone`);
    assert.doesNotMatch(must('ip', ['-4', 'route', 'show']), /10\.99\.0\.0\/24/, 'no route to the subnet left on the host');
    const t = nftTable();
    if (nftBefore) assert.doesNotMatch(t.text, /10\.99\.0\.0\/24/, 'no masquerade rule for the subnet is left (the table belonged to another pier before this test)');
    else assert.notEqual(t.code, 0, `nft list table inet pier fails once the last attachment is gone: ${t.text}`);
  });

  it('a failed ADD under ctr (the daemon is down) leaves nothing: ctr shows pier-cni\'s error, no address is held, no port once the daemon is back', { timeout: 120_000 }, async () => {
    await d.stop();
    let log = '';
    try {
      await assert.rejects(ctd.run('f1', undefined, rootfs), (e: Error) => {
        log = e.message;
        return true;
      });
      assert.match(log, /plugin type="pier-cni" failed \(add\): the pier daemon at \S+ is not reachable/, `ctr passes on pier-cni's error: ${log}`);
      assert.deepEqual(held(), [], 'the address host-local gave was released');
    } finally {
      await d.start();
    }
    assert.ok(!portsOf(show(), bridge).has(attachmentPort(`${ctd.namespace}-f1`)), 'no port for it once the daemon is back');
  });
});
