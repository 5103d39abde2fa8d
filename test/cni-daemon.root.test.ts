// The daemon's side of pier-cni (docs/design/cni.md), driven through the control socket as the
// plugin drives it: restarts keep attachments, a vanished or replaced namespace and a DEL left
// while the daemon was down are reaped (addresses back to host-local), GC, the gateway port and
// the masquerade table follow the attachments, and a refused ADD leaves nothing.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { delNetns, makeNetns, must, NEEDS, pingUntil, requires, sh, TestDaemon, waitFor } from './helpers.ts';

const HOST_LOCAL = '/usr/lib/cni/host-local';

interface Reply { ok: boolean; result?: any; error?: { code: string; message: string } }

function call(socket: string, cmd: string, arg: unknown): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const s = createConnection(socket);
    let buf = '';
    s.setEncoding('utf8');
    s.once('connect', () => s.write(JSON.stringify({ cmd, args: [JSON.stringify(arg)] }) + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      if (buf.includes('\n')) { s.end(); resolve(JSON.parse(buf) as Reply); }
    });
    s.once('error', reject);
  });
}

async function ok(socket: string, cmd: string, arg: unknown): Promise<any> {
  const r = await call(socket, cmd, arg);
  if (!r.ok) throw new Error(`${cmd}: ${r.error?.code} ${r.error?.message}`);
  return r.result;
}

function nftTable(): string | undefined {
  const r = sh('nft', ['list', 'table', 'inet', 'pier']);
  return r.code === 0 ? r.stdout : undefined;
}

function addrs(ns: string | undefined, dev: string): string[] {
  const j = JSON.parse(must('ip', [...(ns ? ['-n', ns] : []), '-j', 'addr', 'show', 'dev', dev]))[0];
  return j.addr_info.filter((a: any) => a.family === 'inet').map((a: any) => `${a.local}/${a.prefixlen}`);
}

describe('pier-cni, the daemon side (root)', requires(NEEDS.tun,
  { name: 'nft', missing: () => (existsSync('/usr/sbin/nft') ? undefined : 'nft is missing: apt-get install nftables (scripts/setup.sh installs it)') },
  { name: 'host-local', missing: () => (existsSync(HOST_LOCAL) ? undefined : `${HOST_LOCAL} is missing: apt-get install containernetworking-plugins (scripts/setup.sh installs it)`) }), () => {
  const d = new TestDaemon();
  const ipamDir = mkdtempSync(join(tmpdir(), 'pier-ipam-'));
  const network = `t${process.pid}`;
  const netns: string[] = [];

  const add = (ns: string, id: string, ip: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    network, containerId: id, ifname: 'eth0', netns: `/var/run/netns/${ns}`, bridge: 'cbr0',
    ips: [{ address: ip, gateway: '10.77.0.1' }], routes: [{ dst: '0.0.0.0/0' }], isGateway: true, ipMasq: true, ...extra,
  });

  before(async () => {
    // Stale state from an earlier run would hide what this one checks.
    assert.equal(nftTable(), undefined, 'table inet pier exists before the test: another pier uses it; stop it first');
    await d.start();
  });

  after(async () => {
    await d.cleanup();
    delNetns(netns);
    sh('nft', ['delete', 'table', 'inet', 'pier']);
    sh('ip', ['link', 'del', 'cbr0-gw']);
    rmSync(ipamDir, { recursive: true, force: true });
  });

  it('two attachments: interfaces, routes, gateway port and masquerade; restart keeps them; the last DEL takes gateway and rules away', async () => {
    const [a, b] = makeNetns(2) as [string, string];
    netns.push(a, b);
    const ra = await ok(d.socket, 'cni-add', add(a, 'ca', '10.77.0.2/24'));
    await ok(d.socket, 'cni-add', add(b, 'cb', '10.77.0.3/24'));
    assert.equal(ra.ifname, 'eth0');
    assert.equal(ra.sandbox, `/var/run/netns/${a}`);
    assert.match(ra.mac, /^[0-9a-f:]{17}$/);
    assert.deepEqual(addrs(a, 'eth0'), ['10.77.0.2/24']);
    assert.match(must('ip', ['-n', a, 'route', 'show', 'default']), /default via 10\.77\.0\.1 dev eth0/);
    assert.deepEqual(addrs(undefined, 'cbr0-gw'), ['10.77.0.1/24']);
    assert.match(nftTable() ?? '', /ip saddr 10\.77\.0\.0\/24 ip daddr != 10\.77\.0\.0\/24 masquerade/);
    // Another pier daemon on the host (its own state dir, no attachments) leaves the table alone.
    const other = new TestDaemon();
    try {
      await other.start();
    } finally {
      await other.cleanup();
    }
    assert.match(nftTable() ?? '', /10\.77\.0\.0\/24/, 'a second daemon starting and stopping kept this one\'s masquerade rules');
    await pingUntil(a, '10.77.0.3');
    await pingUntil(a, '10.77.0.1');
    const show = d.json('show');
    const ports = show.bridges.find((x: any) => x.name === 'cbr0').ports;
    const pa = ports.find((p: any) => p.name === ra.port);
    assert.deepEqual({ ...pa.owner, netns: undefined }, { kind: 'cni', network, containerId: 'ca', ifname: 'eth0', netns: undefined });
    assert.match(d.ok('show'), new RegExp(`cni: network ${network} container ca ifname eth0`));

    // A restart: taps detached and re-attached, the containers keep their interfaces.
    await d.stop();
    assert.deepEqual(addrs(a, 'eth0'), ['10.77.0.2/24']);
    await d.start();
    await pingUntil(a, '10.77.0.3');
    assert.ok(nftTable(), 'the masquerade table stays over a restart');

    // CHECK: what runs is what was asked; a container that never attached is an error.
    const c = await ok(d.socket, 'cni-check', { network, containerId: 'ca', ifname: 'eth0', ips: ['10.77.0.2/24'] });
    assert.equal(c.state, 'up');
    const miss = await call(d.socket, 'cni-check', { network, containerId: 'zz', ifname: 'eth0' });
    assert.equal(miss.error?.code, 'ENOATTACH');
    const wrong = await call(d.socket, 'cni-check', { network, containerId: 'ca', ifname: 'eth0', ips: ['10.77.0.9/24'] });
    assert.equal(wrong.error?.code, 'EMISMATCH');

    assert.deepEqual(await ok(d.socket, 'cni-del', { network, containerId: 'ca', ifname: 'eth0' }), { removed: ra.port });
    assert.equal(sh('ip', ['-n', a, 'link', 'show', 'eth0']).code, 1, 'the interface goes with the port');
    assert.ok(nftTable(), 'one attachment left: the rules stay');
    // DEL again, and DEL of a container whose namespace is gone: no error.
    assert.deepEqual(await ok(d.socket, 'cni-del', { network, containerId: 'ca', ifname: 'eth0' }), { removed: null });
    delNetns([b]);
    await ok(d.socket, 'cni-del', { network, containerId: 'cb', ifname: 'eth0' });
    assert.equal(nftTable(), undefined, 'the last attachment took the masquerade table');
    assert.equal(sh('ip', ['link', 'show', 'cbr0-gw']).code, 1, 'and the gateway port');
  });

  it('a refused ADD leaves nothing: no port, no interface, no bridge it made', async () => {
    const [a] = makeNetns(1) as [string];
    netns.push(a);
    const r = await call(d.socket, 'cni-add', { ...add(a, 'cx', '10.77.0.4/24'), bridge: 'newbr', options: { queues: 2 } });
    assert.equal(r.ok, false);
    assert.match(r.error!.message, /queues/);
    assert.equal(sh('ip', ['-n', a, 'link', 'show', 'eth0']).code, 1);
    const show = d.json('show');
    assert.equal(show.bridges.find((x: any) => x.name === 'newbr'), undefined);
    assert.equal(nftTable(), undefined);
  });

  it('GC removes the attachments of its network the runtime no longer lists, and only those', async () => {
    const ns = makeNetns(3);
    netns.push(...ns);
    const ports = [];
    for (const [i, n] of ns.entries()) ports.push((await ok(d.socket, 'cni-add', add(n, `g${i}`, `10.77.0.${10 + i}/24`, { isGateway: false, ipMasq: false }))).port);
    const other = (await ok(d.socket, 'cni-add', { ...add(ns[0]!, 'g0', '10.77.0.20/24', { isGateway: false, ipMasq: false }), network: `${network}-other`, ifname: 'eth1' })).port;
    const r = await ok(d.socket, 'cni-gc', { network, valid: [{ containerId: 'g1', ifname: 'eth0' }] });
    assert.deepEqual([...r.removed].sort(), [ports[0], ports[2]].sort());
    const names = d.json('show').bridges.flatMap((b: any) => b.ports.map((p: any) => p.name));
    assert.ok(names.includes(ports[1]) && names.includes(other));
    await ok(d.socket, 'cni-gc', { network, valid: [] });
    await ok(d.socket, 'cni-gc', { network: `${network}-other`, valid: [] });
  });

  it('after a restart: a namespace that vanished or was replaced, and a DEL the plugin left, remove their ports and free their addresses', async () => {
    const [gone, replaced, tomb] = makeNetns(3) as [string, string, string];
    netns.push(gone, replaced, tomb);
    const ipamConf = { cniVersion: '1.0.0', name: network, ipam: { type: 'host-local', ranges: [[{ subnet: '10.77.0.0/24' }]], dataDir: ipamDir } };
    const attach = async (ns: string, id: string): Promise<string> => {
      // The plugin's IPAM ADD, as pier-cni runs it, so there is an address to free.
      const r = spawnSync(HOST_LOCAL, [], { encoding: 'utf8', input: JSON.stringify(ipamConf), env: { ...process.env, CNI_COMMAND: 'ADD', CNI_CONTAINERID: id, CNI_NETNS: `/var/run/netns/${ns}`, CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' } });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      const ip = JSON.parse(r.stdout).ips[0].address as string;
      return (await ok(d.socket, 'cni-add', { ...add(ns, id, ip, { isGateway: false, ipMasq: false }), ipam: { conf: ipamConf, cniPath: '/usr/lib/cni' } })).port;
    };
    const leased = (): string[] => readdirSync(join(ipamDir, network)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
    const pGone = await attach(gone, 'r1');
    const pRepl = await attach(replaced, 'r2');
    const pTomb = await attach(tomb, 'r3');
    assert.equal(leased().length, 3);

    await d.stop();
    delNetns([gone]);
    // The same path, another namespace: pier must not make a port in it.
    delNetns([replaced]);
    must('ip', ['netns', 'add', replaced]);
    const dir = join(dirname(d.socket), 'cni-del');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${pTomb}.json`), JSON.stringify({ network, containerId: 'r3', ifname: 'eth0' }));
    await d.start();

    const names = d.json('show').bridges.flatMap((b: any) => b.ports.map((p: any) => p.name));
    for (const p of [pGone, pRepl, pTomb]) assert.ok(!names.includes(p), `${p} should be gone: ${names.join(' ')}`);
    assert.equal(sh('ip', ['-n', replaced, 'link', 'show', 'eth0']).code, 1, 'no interface in the namespace that replaced the container\'s');
    assert.deepEqual(readdirSync(dir), [], 'the tombstone is consumed');
    // Released by the daemon through host-local's DEL (for the tombstone's a second time: the
    // plugin's own DEL ran when it was written, and IPAM DEL is idempotent).
    await waitFor(() => leased().length === 0, 10_000, () => `host-local to hold no lease: ${leased().join(' ')}`);
    assert.match(d.log, /container gone; port removed/);
  });
  it('after a restart: when the last masquerading attachment is reaped at start, the masquerade table goes with it', async () => {
    const [ns] = makeNetns(1) as [string];
    netns.push(ns);
    const port = (await ok(d.socket, 'cni-add', add(ns, 'm1', '10.77.0.40/24', { isGateway: false }))).port as string;
    await waitFor(() => nftTable()?.includes('10.77.0.0/24'), 10_000, () => `the masquerade rule for 10.77.0.0/24: ${nftTable() ?? 'no table'}`);
    // The daemon stops (its rules stay), the container goes while it is down.
    await d.stop();
    delNetns([ns]);
    assert.ok(nftTable()?.includes('10.77.0.0/24'), 'the rules outlive the daemon');
    await d.start();
    const names = d.json('show').bridges.flatMap((b: any) => b.ports.map((p: any) => p.name));
    assert.ok(!names.includes(port), `${port} should be gone: ${names.join(' ')}`);
    await waitFor(() => nftTable() === undefined, 10_000, () => `table inet pier to be gone: ${nftTable()}`);
  });
});
