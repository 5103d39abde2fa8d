// pier-cni invoked as a runtime invokes it (CNI spec 1.1.0, section 2): the environment, the
// config on stdin, the exit code, and stdout holding one JSON value (the result or the error) and
// nothing else. Every verb and every error code: the spec's (1, 4, 6, 7, 8, 11, 50) without a
// daemon or against a fake one (a unix socket server in this process), pier's (100, 101, 102);
// then against a real daemon with host-local IPAM: addresses and interfaces, results in each
// version, chains with Debian's loopback before and tuning after, a failed ADD that leaves
// nothing, DEL that always succeeds (twice, namespace gone, daemon stopped), GC, vhost-user, and
// 20 concurrent ADDs and DELs with no port or address lost or doubled, and ADDs and DELs mixed.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, isIP, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkBuild, delNetns, makeNetns, must, NEEDS, nsExec, requires, ROOT, sh, TestDaemon, waitFor, type Prerequisite } from './helpers.ts';

const PIER_CNI = join(ROOT, 'bin', 'pier-cni');
const CNI_DIR = '/usr/lib/cni';

function cniPlugin(name: string): Prerequisite {
  const path = join(CNI_DIR, name);
  return { name, missing: () => (existsSync(path) ? undefined : `${path} is missing: apt-get install containernetworking-plugins (scripts/setup.sh installs it)`) };
}

interface CniRun { code: number; stdout: string; stderr: string; json: any }

/** The environment without the test runner's CNI_* (and log file), so each call sets its own. */
const BASE_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CNI_') && k !== 'PIER_CNI_LOG'));

/**
 * Run a CNI plugin as a runtime does; asynchronously, so a fake daemon in this process can answer.
 * stdout must be empty or exactly one JSON value; a failure must be the spec's error object.
 */
function cni(verb: string, env: Record<string, string>, conf: unknown, opts: { plugin?: string; keepStdinOpen?: boolean } = {}): Promise<CniRun> {
  return new Promise((resolve, reject) => {
    const p = spawn(opts.plugin ?? PIER_CNI, [], { env: { ...BASE_ENV, CNI_COMMAND: verb, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.once('error', reject);
    p.once('close', (code) => {
      let json: any;
      try {
        json = stdout.trim() === '' ? undefined : JSON.parse(stdout);
      } catch {
        reject(new Error(`${verb}: stdout is not one JSON value: ${JSON.stringify(stdout)} (stderr: ${stderr})`));
        return;
      }
      if (code !== 0 && !(json && typeof json.code === 'number' && typeof json.msg === 'string' && typeof json.cniVersion === 'string')) {
        reject(new Error(`${verb} failed (${code}) without the spec's error object on stdout: ${JSON.stringify(stdout)} (stderr: ${stderr})`));
        return;
      }
      resolve({ code: code ?? -1, stdout, stderr, json });
    });
    if (opts.keepStdinOpen) return; // closed when the test ends, with the process
    p.stdin.end(typeof conf === 'string' ? conf : JSON.stringify(conf));
  });
}

/** A run that must have succeeded; returns its JSON (undefined for verbs that print nothing). */
async function ok(verb: string, env: Record<string, string>, conf: unknown, plugin?: string): Promise<any> {
  const r = await cni(verb, env, conf, plugin ? { plugin } : {});
  if (r.code !== 0) throw new Error(`${verb} failed (${r.code}): ${r.stdout} ${r.stderr}`);
  return r.json;
}

/** A run that must have failed with CNI error `code`, its msg matching `msg`. */
async function fails(verb: string, env: Record<string, string>, conf: unknown, code: number, msg: RegExp): Promise<CniRun> {
  const r = await cni(verb, env, conf);
  assert.notEqual(r.code, 0, `${verb} succeeded: ${r.stdout}`);
  assert.equal(r.json.code, code, `${verb}: ${r.stdout}`);
  assert.match(r.json.msg, msg);
  return r;
}

/** The addresses host-local has handed out on `network` (one file per address in its dataDir). */
function leases(dataDir: string, network: string): string[] {
  try {
    return readdirSync(join(dataDir, network)).filter((f) => isIP(f) !== 0).sort();
  } catch {
    return [];
  }
}

/** A stand-in daemon: `answer` gives the reply line to each request, or undefined to hang up without one. */
/** What a fake daemon's answer function returns to leave a request unanswered. */
const HANG = { hang: true } as const;

class FakeDaemon {
  readonly dir = mkdtempSync(join(tmpdir(), 'pier-cni-fake-'));
  readonly socket = join(this.dir, 'pier.sock');
  readonly requests: Array<{ cmd: string; arg: any }> = [];
  private server: Server | undefined;

  constructor(private readonly answer: (cmd: string, arg: any) => object | undefined) {}

  start(): Promise<void> {
    this.server = createServer((c) => {
      let buf = '';
      c.setEncoding('utf8');
      c.on('data', (d: string) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        const req = JSON.parse(buf.slice(0, nl)) as { cmd: string; args: string[] };
        const arg = req.args[0] === undefined ? undefined : JSON.parse(req.args[0]);
        this.requests.push({ cmd: req.cmd, arg });
        const reply = this.answer(req.cmd, arg);
        if (reply === HANG) return; // a daemon that is stuck: the connection stays open, unanswered
        if (reply) c.end(JSON.stringify(reply) + '\n');
        else c.destroy();
      });
    });
    return new Promise((r) => this.server!.listen(this.socket, r));
  }

  /** Stop answering: the socket goes, the directory (and what pier-cni left in it) stays. */
  close(): Promise<void> {
    return new Promise((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  async cleanup(): Promise<void> {
    await this.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe('pier-cni, invoked as the CNI spec says (root)', requires(NEEDS.tun, cniPlugin('host-local'), cniPlugin('tuning'), cniPlugin('loopback')), () => {
  const network = `pc${process.pid}`;
  const ipamDir = mkdtempSync(join(tmpdir(), 'pier-cni-ipam-'));
  const netns: string[] = [];
  /** A fresh namespace's path (CNI_NETNS), deleted when the tests end. */
  const newNetns = (): string => {
    const [n] = makeNetns(1) as [string];
    netns.push(n);
    return `/run/netns/${n}`;
  };
  const nsName = (path: string): string => path.slice('/run/netns/'.length);
  let nextId = 0;
  const attachment = (ns: string, ifname = 'eth0'): Record<string, string> =>
    ({ CNI_CONTAINERID: `c${process.pid}-${nextId++}`, CNI_NETNS: ns, CNI_IFNAME: ifname, CNI_PATH: CNI_DIR });

  before(() => checkBuild());

  after(() => {
    delNetns(netns);
    rmSync(ipamDir, { recursive: true, force: true });
  });

  describe('without a daemon, or with a fake one', () => {
    const subnet = '10.65.0.0/24';
    const conf = (socket: string, o: Record<string, unknown> = {}): Record<string, unknown> => ({
      cniVersion: '1.1.0', name: network, type: 'pier-cni', socket,
      ipam: { type: 'host-local', dataDir: ipamDir, ranges: [[{ subnet }]] }, ...o,
    });
    const fakes: FakeDaemon[] = [];
    const fake = async (answer: (cmd: string, arg: any) => object | undefined): Promise<FakeDaemon> => {
      const f = new FakeDaemon(answer);
      fakes.push(f);
      await f.start();
      return f;
    };
    const addReply = (a: any): object => ({ ok: true, result: { port: 'cni-000000000000', bridge: a.bridge, type: a.portType, ifname: a.ifname, mac: '02:00:00:00:00:42', mtu: 1500, sandbox: a.netns } });
    const nowhere = join(ipamDir, 'no-daemon', 'pier.sock');

    after(async () => {
      for (const f of fakes) await f.cleanup();
    });

    it('VERSION: the versions pier-cni speaks, without reading stdin', async () => {
      const r = await cni('VERSION', {}, undefined, { keepStdinOpen: true });
      assert.equal(r.code, 0);
      assert.equal(r.stdout, '{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}\n');
    });

    it('a bad environment: code 4 naming the variables', async () => {
      const ns = newNetns();
      const c = conf(nowhere);
      await fails('', {}, c, 4, /\[CNI_COMMAND\] missing/);
      await fails('add', {}, c, 4, /unknown CNI_COMMAND: add/);
      await fails('ADD', { CNI_CONTAINERID: 'x', CNI_PATH: CNI_DIR }, c, 4, /\[CNI_NETNS,CNI_IFNAME\] missing/);
      await fails('DEL', { CNI_CONTAINERID: 'x', CNI_PATH: CNI_DIR }, c, 4, /\[CNI_IFNAME\] missing/);
      await fails('CHECK', { CNI_NETNS: ns, CNI_IFNAME: 'eth0' }, c, 4, /\[CNI_CONTAINERID\] missing/);
      await fails('GC', {}, c, 4, /\[CNI_PATH\] missing/);
      await fails('ADD', { ...attachment(ns), CNI_CONTAINERID: '-x' }, c, 4, /CNI_CONTAINERID/);
      await fails('ADD', { ...attachment(ns), CNI_IFNAME: 'much-too-long-name' }, c, 4, /CNI_IFNAME/);
      await fails('ADD', { ...attachment(ns), CNI_PATH: '' }, c, 4, /\[CNI_PATH\] missing/);
      await fails('ADD', attachment('/run/netns/pier-cni-no-such-ns'), c, 4, /CNI_NETNS .* cannot be opened/);
      await fails('ADD', attachment('/proc/self/ns/net'), c, 8, /netns/);
      assert.deepEqual(leases(ipamDir, network), [], 'refused before any address was taken');
    });

    it('config errors: 6 undecodable, 1 a version pier-cni does not speak (or one without the verb), 7 invalid, naming the key and the fix', async () => {
      const env = attachment(newNetns());
      await fails('ADD', env, '{"cniVersion": "1.1.0", ', 6, /not JSON/);
      await fails('ADD', env, '', 6, /not JSON/);
      await fails('ADD', env, conf(nowhere, { cniVersion: '0.3.1' }), 1, /incompatible CNI versions/);
      await fails('GC', { CNI_PATH: CNI_DIR }, conf(nowhere, { cniVersion: '1.0.0' }), 1, /does not allow GC/);
      await fails('STATUS', {}, conf(nowhere, { cniVersion: '0.4.0' }), 1, /does not allow STATUS/);
      const r = await fails('ADD', env, conf(nowhere, { cniVersion: '1.0.0', portType: 'vhostuser' }), 7, /portType "vhostuser"/);
      assert.equal(r.json.cniVersion, '1.0.0', 'the error in the request\'s version');
      assert.match(r.json.details, /"tap" \(the default\), "virtio-user" or "vhost-user"/);
      await fails('ADD', env, conf(nowhere, { mtu: 20 }), 7, /mtu 20 is out of range/);
      await fails('ADD', env, conf(nowhere, { isgateway: true }), 7, /isgateway is not a key/);
      await fails('ADD', env, conf(nowhere, { name: 'a b' }), 7, /name/);
      await fails('CHECK', env, conf(nowhere), 7, /prevResult is missing/);
      assert.deepEqual(leases(ipamDir, network), []);
    });

    it('STATUS: code 50 while nothing answers, 0 once the daemon does', async () => {
      await fails('STATUS', {}, conf(nowhere), 50, /not available/);
      const f = await fake(() => ({ ok: true, result: '0.1.0' }));
      const r = await cni('STATUS', { CNI_PATH: CNI_DIR }, conf(f.socket));
      assert.equal(r.code, 0, r.stdout);
      assert.equal(r.stdout, '', 'STATUS prints nothing on success');
      assert.deepEqual(f.requests.map((q) => q.cmd), ['ping']);
    });

    it('ADD with no daemon: code 11 (try again), and the address it had taken is given back', async () => {
      const r = await fails('ADD', attachment(newNetns()), conf(nowhere), 11, /not reachable/);
      assert.match(r.json.details, /try again later/);
      assert.deepEqual(leases(ipamDir, network), []);
    });

    it('ADD refused by the daemon: code 100 with pier\'s code and hint, the address given back; a daemon hanging up: 11', async () => {
      const f = await fake((cmd) => (cmd === 'cni-add' ? { ok: false, error: { code: 'EINVAL', message: 'bad mtu', hint: 'use 68..65521' } } : undefined));
      const r = await fails('ADD', attachment(newNetns()), conf(f.socket), 100, /the pier daemon refused: bad mtu/);
      assert.match(r.json.details, /^EINVAL: use 68\.\.65521$/);
      assert.equal(f.requests[0]?.arg.ips.length, 1, 'the daemon was asked with the address IPAM gave');
      assert.deepEqual(leases(ipamDir, network), []);
      const h = await fake(() => undefined);
      await fails('ADD', attachment(newNetns()), conf(h.socket), 11, /closed the connection without answering/);
      assert.deepEqual(leases(ipamDir, network), []);
    });

    it('a daemon that takes the request and never answers: ADD and DEL end with 11 after PIER_CNI_TIMEOUT_MS; ADD gives its address back, DEL writes no tombstone and keeps it', async () => {
      const h = await fake(() => HANG);
      const env = { ...attachment(newNetns()), PIER_CNI_TIMEOUT_MS: '500' };
      await fails('ADD', env, conf(h.socket), 11, /no answer in 0\.5 s/);
      assert.deepEqual(h.requests.map((q) => q.cmd), ['cni-add', 'cni-del'], 'the port the daemon may have made is asked away');
      assert.deepEqual(leases(ipamDir, network), []);
      const held = await fake((_cmd, a) => addReply(a));
      const ok = await cni('ADD', env, conf(held.socket));
      assert.equal(ok.code, 0, ok.stdout);
      await fails('DEL', env, conf(h.socket), 11, /no answer in 0\.5 s/);
      assert.equal(existsSync(join(dirname(h.socket), 'cni-del')), false, 'a running daemon gets no tombstone');
      assert.equal(leases(ipamDir, network).length, 1, 'the address stays while the port may still use it');
      const del = await cni('DEL', env, conf(held.socket));
      assert.equal(del.code, 0, del.stdout);
      assert.deepEqual(leases(ipamDir, network), []);
    });

    it('an IPAM plugin that is not in CNI_PATH, or fails: code 101, nothing asked of the daemon', async () => {
      const f = await fake((_cmd, a) => addReply(a));
      await fails('ADD', attachment(newNetns()), conf(f.socket, { ipam: { type: 'no-such-ipam' } }), 101, /no-such-ipam is not in CNI_PATH/);
      const r = await fails('ADD', attachment(newNetns()), conf(f.socket, { ipam: { type: 'host-local', dataDir: ipamDir, ranges: [[{ subnet: '10.65.0.0/33' }]] } }), 101, /host-local failed ADD/);
      assert.match(r.json.details, /host-local/);
      assert.deepEqual(f.requests, []);
    });

    it('the request the daemon gets; the result in each version; CHECK refused: 102; DEL with no daemon leaves a tombstone and frees the address', async () => {
      const f = await fake((cmd, a) => (cmd === 'cni-add' ? addReply(a) : cmd === 'cni-check' ? { ok: false, error: { code: 'ENOLINK', message: 'interface eth0 is missing', hint: 'DEL and ADD again' } } : { ok: true, result: { removed: null } }));
      const env = attachment(newNetns());
      const c = conf(f.socket, { bridge: 'cbr9', mtu: 1400, mac: '02:00:00:00:00:42', isGateway: true, ipMasq: true, queues: 2, offloads: false });
      const res = await ok('ADD', env, c);
      const req = f.requests.at(-1)!;
      assert.equal(req.cmd, 'cni-add');
      assert.deepEqual({ ...req.arg, ipam: undefined, ips: undefined }, {
        network, containerId: env.CNI_CONTAINERID, ifname: 'eth0', netns: env.CNI_NETNS, bridge: 'cbr9', portType: 'tap', mtu: 1400, mac: '02:00:00:00:00:42',
        options: { queues: 2, offloads: false }, routes: [], isGateway: true, ipMasq: true, portSecurity: true, ipam: undefined, ips: undefined,
      });
      assert.equal(req.arg.ipam.conf.cniVersion, '1.0.0', 'host-local 1.1.1 was spoken to in 1.0.0, its newest');
      assert.equal(req.arg.ipam.cniPath, CNI_DIR);
      const [lease] = leases(ipamDir, network);
      assert.ok(lease, 'one address taken');
      assert.deepEqual(res, {
        cniVersion: '1.1.0',
        interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:42', mtu: 1500, sandbox: env.CNI_NETNS }],
        ips: [{ address: `${lease}/24`, gateway: '10.65.0.1', interface: 0 }],
        routes: [{ dst: '0.0.0.0/0', gw: '10.65.0.1' }],
      });

      const chk = await fails('CHECK', env, { ...c, prevResult: res }, 102, /interface eth0 is missing/);
      assert.match(chk.json.details, /ENOLINK: DEL and ADD again/);
      assert.deepEqual(f.requests.at(-1), { cmd: 'cni-check', arg: { network, containerId: env.CNI_CONTAINERID, ifname: 'eth0', ips: [`${lease}/24`], portSecurity: true } });

      const env04 = attachment(newNetns());
      const r04 = await ok('ADD', env04, { ...c, cniVersion: '0.4.0' });
      assert.equal(r04.cniVersion, '0.4.0');
      assert.equal(r04.ips[0].version, '4', '0.4.0 tags the family');
      assert.equal(r04.interfaces[0].mtu, undefined, 'no mtu before 1.1.0');
      assert.equal(f.requests.at(-1)!.arg.ipam.conf.cniVersion, '0.4.0');
      const env10 = attachment(newNetns());
      const r10 = await ok('ADD', env10, { ...c, cniVersion: '1.0.0' });
      assert.equal(r10.ips[0].version, undefined);
      assert.equal(r10.interfaces[0].mtu, undefined);

      // The daemon is gone: DEL succeeds, the removal waits for it in a tombstone, the address is free.
      await f.close();
      for (const e of [env, env04, env10]) assert.equal((await ok('DEL', e, c)), undefined);
      assert.deepEqual(leases(ipamDir, network), []);
      const tombs = readdirSync(join(f.dir, 'cni-del')).sort();
      assert.equal(tombs.length, 3);
      const t = tombs.map((n) => JSON.parse(readFileSync(join(f.dir, 'cni-del', n), 'utf8')));
      assert.ok(t.some((x) => x.network === network && x.containerId === env.CNI_CONTAINERID && x.ifname === 'eth0'), JSON.stringify(t));
      assert.match(tombs[0]!, /^cni-[0-9a-f]{12}\.json$/);
      assert.equal(await ok('DEL', env, c), undefined, 'and again');
    });

    it('logs go to stderr and PIER_CNI_LOG, never stdout', async () => {
      const log = join(ipamDir, 'pier-cni.log');
      const r = await cni('ADD', { ...attachment(newNetns()), PIER_CNI_LOG: log }, conf(nowhere));
      assert.equal(r.json.code, 11);
      assert.match(r.stderr, /pier-cni\[\d+\] error ADD/);
      assert.match(readFileSync(log, 'utf8'), /debug ADD network=.* host-local ADD \(CNI 1\.0\.0\)/);
      assert.equal(r.stdout.split('\n').filter((l) => l !== '').length, 1, 'one line: the error');
    });
  });

  describe('against a daemon', () => {
    const d = new TestDaemon();
    const bridge = `pc${process.pid % 100000}`;
    const subnet = '10.66.0.0/24';
    const conf = (o: Record<string, unknown> = {}): Record<string, any> => ({
      cniVersion: '1.1.0', name: network, type: 'pier-cni', bridge, socket: d.socket,
      ipam: { type: 'host-local', dataDir: ipamDir, ranges: [[{ subnet, gateway: '10.66.0.1' }]] }, ...o,
    });
    const cniPorts = (): any[] => d.json('show').bridges.flatMap((b: any) => b.ports).filter((p: any) => p.owner?.kind === 'cni');
    const ipv4 = (ns: string, dev: string): string[] => {
      const r = nsExec(nsName(ns), 'ip', ['-j', 'addr', 'show', 'dev', dev]);
      return r.code === 0 ? JSON.parse(r.stdout)[0].addr_info.filter((a: any) => a.family === 'inet').map((a: any) => `${a.local}/${a.prefixlen}`) : [];
    };
    const hasLink = (ns: string, dev: string): boolean => nsExec(nsName(ns), 'ip', ['link', 'show', 'dev', dev]).code === 0;

    before(async () => {
      await d.start();
    });

    after(async () => {
      await d.cleanup();
      sh('ip', ['link', 'del', `${bridge}-gw`]);
    });

    it('ADD: the tap in the container with IPAM\'s address, the MAC of the result, the default route (isGateway); STATUS and CHECK pass; DEL twice', async () => {
      const ns = newNetns();
      const env = attachment(ns);
      const c = conf({ isGateway: true, mtu: 1400 });
      const res = await ok('ADD', env, c);
      const [lease] = leases(ipamDir, network);
      assert.ok(lease);
      assert.equal(res.cniVersion, '1.1.0');
      assert.deepEqual(res.ips, [{ address: `${lease}/24`, gateway: '10.66.0.1', interface: 0 }]);
      assert.deepEqual(res.routes, [{ dst: '0.0.0.0/0', gw: '10.66.0.1' }]);
      assert.equal(res.interfaces.length, 1);
      const i = res.interfaces[0];
      assert.equal(i.name, 'eth0');
      assert.equal(i.sandbox, ns);
      assert.equal(i.mtu, 1400);
      assert.deepEqual(ipv4(ns, 'eth0'), [`${lease}/24`]);
      const link = JSON.parse(nsExec(nsName(ns), 'ip', ['-j', 'link', 'show', 'dev', 'eth0']).stdout)[0];
      assert.equal(link.address, i.mac);
      assert.equal(link.mtu, 1400);
      assert.match(nsExec(nsName(ns), 'ip', ['route', 'show', 'default']).stdout, /default via 10\.66\.0\.1 dev eth0/);
      const ports = cniPorts();
      assert.equal(ports.length, 1);
      assert.deepEqual([ports[0].owner.network, ports[0].owner.containerId, ports[0].owner.ifname], [network, env.CNI_CONTAINERID, 'eth0']);

      assert.equal(await ok('STATUS', { CNI_PATH: CNI_DIR }, c), undefined);
      assert.equal(await ok('CHECK', env, { ...c, prevResult: res }), undefined);

      assert.equal(await ok('DEL', env, { ...c, prevResult: res }), undefined);
      assert.deepEqual(cniPorts(), []);
      assert.equal(hasLink(ns, 'eth0'), false, 'the interface is gone');
      assert.deepEqual(leases(ipamDir, network), []);
      assert.equal(await ok('DEL', env, c), undefined, 'a second DEL succeeds');
      await fails('CHECK', env, { ...c, prevResult: res }, 102, /no interface eth0/);
    });

    it('port security: secured by default with the interface\'s MAC and IPAM\'s address (shown, checked by CHECK); "portSecurity": false leaves it off', async () => {
      const ns = newNetns();
      const env = attachment(ns);
      const c = conf();
      const res = await ok('ADD', env, c);
      const lease = leases(ipamDir, network)[0]!;
      const port = cniPorts()[0];
      assert.deepEqual(port.security, { portSecurity: 'on', macs: [res.interfaces[0].mac], addresses: [{ ip: lease }], macLimit: 1, stormLimit: 1000 });
      assert.match(d.ok('show', port.name), new RegExp(`port security: on \\(from ${res.interfaces[0].mac}; ${lease.replace(/\./g, '\\.')}\\)`));
      assert.equal(await ok('CHECK', env, { ...c, prevResult: res }), undefined);
      // Turned off behind the runtime's back: CHECK says so.
      d.ok('set-port', port.name, 'port-security=off');
      await fails('CHECK', env, { ...c, prevResult: res }, 102, /port security off, the config says on/);
      assert.equal(await ok('DEL', env, { ...c, prevResult: res }), undefined);

      const env2 = attachment(newNetns());
      const off = conf({ portSecurity: false });
      const res2 = await ok('ADD', env2, off);
      assert.equal(cniPorts()[0].security.portSecurity, 'off');
      assert.equal(await ok('CHECK', env2, { ...off, prevResult: res2 }), undefined);
      assert.equal(await ok('DEL', env2, { ...off, prevResult: res2 }), undefined);
      await fails('ADD', attachment(newNetns()), conf({ portSecurity: 'yes' }), 7, /portSecurity "yes" is not a boolean/);
    });

    it('chained: after loopback (its result kept, pier\'s IPs pointing at pier\'s interface), before tuning (1.0.0 conflist); CHECK and DEL in the runtime\'s order', async () => {
      const ns = newNetns();
      const env = attachment(ns);
      const list = { cniVersion: '1.0.0', name: network };
      const lo = await ok('ADD', { ...env, CNI_IFNAME: 'lo' }, { ...list, type: 'loopback' }, join(CNI_DIR, 'loopback'));
      // A runtime runs each plugin of the list with the previous one's result; loopback's interface is lo.
      const pier = { ...conf(), ...list };
      const mine = await ok('ADD', env, { ...pier, prevResult: lo });
      assert.deepEqual(mine.interfaces.map((i: any) => i.name), ['lo', 'eth0']);
      assert.deepEqual(mine.ips.slice(0, 2), lo.ips, 'loopback\'s addresses as they were');
      assert.equal(mine.ips[2].interface, 1, 'pier\'s address on pier\'s interface');
      const tuning = { ...list, type: 'tuning', sysctl: { 'net.ipv4.conf.eth0.accept_local': '1' }, promisc: true };
      const final = await ok('ADD', env, { ...tuning, prevResult: mine }, join(CNI_DIR, 'tuning'));
      assert.deepEqual(final.interfaces, mine.interfaces, 'tuning passes pier\'s result on');
      assert.equal(nsExec(nsName(ns), 'cat', ['/proc/sys/net/ipv4/conf/eth0/accept_local']).stdout.trim(), '1');
      assert.match(nsExec(nsName(ns), 'ip', ['link', 'show', 'dev', 'eth0']).stdout, /PROMISC/);

      assert.equal(await ok('CHECK', env, { ...pier, prevResult: final }), undefined);
      assert.equal(await ok('CHECK', env, { ...tuning, prevResult: final }, join(CNI_DIR, 'tuning')), undefined);
      assert.equal(await ok('DEL', env, { ...tuning, prevResult: final }, join(CNI_DIR, 'tuning')), undefined);
      assert.equal(await ok('DEL', env, { ...pier, prevResult: final }), undefined);
      assert.equal(await ok('DEL', { ...env, CNI_IFNAME: 'lo' }, { ...list, type: 'loopback', prevResult: final }, join(CNI_DIR, 'loopback')), undefined);
      assert.deepEqual(cniPorts(), []);
      assert.deepEqual(leases(ipamDir, network), []);
    });

    it('a failed ADD leaves nothing: an interface of that name already in the container is refused, no port, no address', async () => {
      const ns = newNetns();
      must('ip', ['-n', nsName(ns), 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
      const r = await fails('ADD', attachment(ns), conf(), 100, /refused/);
      assert.ok(r.json.details.length > 0, 'pier\'s code and hint in details');
      assert.deepEqual(cniPorts(), []);
      assert.deepEqual(leases(ipamDir, network), []);
      assert.deepEqual(ipv4(ns, 'eth0'), [], 'the container\'s own interface untouched');
      assert.match(nsExec(nsName(ns), 'ip', ['-d', 'link', 'show', 'dev', 'eth0']).stdout, /veth/);
    });

    it('DEL succeeds once the namespace is gone', async () => {
      const ns = newNetns();
      const env = attachment(ns);
      await ok('ADD', env, conf());
      delNetns([nsName(ns)]);
      assert.equal(await ok('DEL', env, conf()), undefined);
      assert.deepEqual(cniPorts(), []);
      assert.deepEqual(leases(ipamDir, network), []);
      assert.equal(await ok('DEL', env, conf()), undefined);
    });

    /** ADD, stop the daemon, DEL (which must succeed and free the address at once), start the daemon. */
    async function delWhileStopped(): Promise<string> {
      const ns = newNetns();
      const env = attachment(ns);
      await ok('ADD', env, conf());
      await d.stop();
      try {
        assert.equal(await ok('DEL', env, conf()), undefined);
        assert.deepEqual(leases(ipamDir, network), [], 'the address is free at once');
        assert.equal(readdirSync(join(d.dir, 'cni-del')).length, 1, 'a tombstone beside the socket');
      } finally {
        await d.start();
      }
      return ns;
    }

    it('DEL while the daemon is stopped succeeds; the daemon applies the tombstone when it starts, the tap it kept in the container removed', async () => {
      const ns = await delWhileStopped();
      await waitFor(() => cniPorts().length === 0 && !hasLink(ns, 'eth0'), 10_000,
        () => `the daemon to apply the tombstone: ports ${JSON.stringify(cniPorts())}, in the container: ${nsExec(nsName(ns), 'ip', ['-br', 'link']).stdout}`);
      assert.deepEqual(readdirSync(join(d.dir, 'cni-del')), [], 'the tombstone is consumed');
      assert.deepEqual(leases(ipamDir, network), []);
    });

    it('GC removes the attachments not listed, keeps the listed one; host-local without GC is skipped quietly', async () => {
      const [ea, eb] = [attachment(newNetns()), attachment(newNetns())];
      await ok('ADD', ea, conf());
      await ok('ADD', eb, conf());
      const r = await cni('GC', { CNI_PATH: CNI_DIR }, conf({ 'cni.dev/valid-attachments': [{ containerID: ea.CNI_CONTAINERID, ifname: 'eth0' }] }));
      assert.equal(r.code, 0, r.stdout);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, '', 'nothing to say');
      assert.deepEqual(cniPorts().map((p) => p.owner.containerId), [ea.CNI_CONTAINERID]);
      assert.equal(hasLink(eb.CNI_NETNS!, 'eth0'), false);
      for (const e of [ea, eb]) await ok('DEL', e, conf());
      assert.deepEqual(leases(ipamDir, network), []);
    });

    it('GC without cni.dev/valid-attachments removes nothing (code 7); the older name cni.dev/attachments is read too', async () => {
      const [ea, eb] = [attachment(newNetns()), attachment(newNetns())];
      await ok('ADD', ea, conf());
      await ok('ADD', eb, conf());
      try {
        await fails('GC', { CNI_PATH: CNI_DIR }, conf(), 7, /GC needs cni\.dev\/valid-attachments/);
        assert.deepEqual(cniPorts().map((p) => p.owner.containerId).sort(), [ea.CNI_CONTAINERID, eb.CNI_CONTAINERID].sort(), 'both attachments kept');
        await ok('GC', { CNI_PATH: CNI_DIR }, conf({ 'cni.dev/attachments': [{ containerID: ea.CNI_CONTAINERID, ifname: 'eth0' }] }));
        assert.deepEqual(cniPorts().map((p) => p.owner.containerId), [ea.CNI_CONTAINERID]);
      } finally {
        for (const e of [ea, eb]) await ok('DEL', e, conf());
      }
      assert.deepEqual(leases(ipamDir, network), []);
    });

    it('GC frees the addresses of the attachments it removes (host-local 1.1.1 has no GC of its own)', async () => {
      const [ea, eb] = [attachment(newNetns()), attachment(newNetns())];
      const ra = await ok('ADD', ea, conf());
      await ok('ADD', eb, conf());
      try {
        await ok('GC', { CNI_PATH: CNI_DIR }, conf({ 'cni.dev/valid-attachments': [{ containerID: ea.CNI_CONTAINERID, ifname: 'eth0' }] }));
        await waitFor(() => leases(ipamDir, network).length === 1, 5000, () => `only ${ra.ips[0].address} to stay leased: ${leases(ipamDir, network).join(' ')}`);
      } finally {
        for (const e of [ea, eb]) await ok('DEL', e, conf());
      }
    });

    it('vhost-user: the socket pier serves is the result\'s socketPath (1.1.0), and the interface has no sandbox', async () => {
      const socketDir = mkdtempSync(join(tmpdir(), 'pier-cni-vu-'));
      try {
        const env = attachment(newNetns(), 'vu0');
        const c = conf({ portType: 'vhost-user', socketDir, ipam: {} });
        const res = await ok('ADD', env, c);
        const i = res.interfaces[0];
        assert.equal(i.name, 'vu0');
        assert.equal(i.sandbox, undefined);
        assert.ok(i.socketPath.startsWith(socketDir + '/'), i.socketPath);
        await waitFor(() => existsSync(i.socketPath), 5000, `${i.socketPath} to be served`);
        assert.equal(res.ips, undefined, 'no IPAM: no addresses');
        const env10 = attachment(newNetns(), 'vu0');
        const r10 = await ok('ADD', env10, { ...c, cniVersion: '1.0.0' });
        assert.equal(r10.interfaces[0].socketPath, undefined, 'socketPath came with 1.1.0');
        for (const e of [env, env10]) await ok('DEL', e, c);
        assert.deepEqual(cniPorts(), []);
      } finally {
        rmSync(socketDir, { recursive: true, force: true });
      }
    });

    it('vhost-user under Multus: the socket is written to runtimeConfig.CNIDeviceInfoFile (device-info 1.1.0); a file that cannot be written fails the ADD with nothing left', async () => {
      const socketDir = mkdtempSync(join(tmpdir(), 'pier-cni-di-'));
      try {
        const env = attachment(newNetns(), 'net1');
        const info = join(socketDir, 'devinfo', 'net1.json');
        const res = await ok('ADD', env, conf({ cniVersion: '1.1.0', portType: 'vhost-user', socketDir, runtimeConfig: { CNIDeviceInfoFile: info } }));
        assert.deepEqual(JSON.parse(readFileSync(info, 'utf8')), { type: 'vhost-user', version: '1.1.0', 'vhost-user': { mode: 'client', path: res.interfaces[0].socketPath } });
        await ok('DEL', env, conf({ portType: 'vhost-user', socketDir }));
        const bad = attachment(newNetns(), 'net1');
        // A directory where the file should be: the rename fails.
        mkdirSync(join(socketDir, 'taken.json'));
        const r = await cni('ADD', bad, conf({ cniVersion: '1.1.0', portType: 'vhost-user', socketDir, runtimeConfig: { CNIDeviceInfoFile: join(socketDir, 'taken.json') } }));
        assert.equal(r.code, 1, r.stdout);
        assert.equal(r.json.code, 5, r.stdout);
        assert.match(r.json.msg, /device-info file/);
        assert.deepEqual(cniPorts(), [], 'the port of the failed ADD is gone');
        assert.deepEqual(leases(ipamDir, network), [], 'and its address');
      } finally {
        rmSync(socketDir, { recursive: true, force: true });
      }
    });

    it('20 concurrent ADDs, then 20 concurrent DELs: every port and address made once, and all gone after', async () => {
      const envs = Array.from({ length: 20 }, () => attachment(newNetns()));
      const results = await Promise.all(envs.map((e) => cni('ADD', e, conf())));
      for (const r of results) assert.equal(r.code, 0, r.stdout + r.stderr);
      const addresses = results.map((r) => r.json.ips[0].address as string);
      assert.equal(new Set(addresses).size, 20, `distinct addresses: ${addresses.join(' ')}`);
      assert.deepEqual(leases(ipamDir, network), addresses.map((a) => a.split('/')[0]!).sort());
      const ports = cniPorts();
      assert.equal(ports.length, 20);
      assert.deepEqual(new Set(ports.map((p) => p.owner.containerId)), new Set(envs.map((e) => e.CNI_CONTAINERID)));
      envs.forEach((e, n) => assert.deepEqual(ipv4(e.CNI_NETNS!, 'eth0'), [addresses[n]]));

      const dels = await Promise.all(envs.map((e) => cni('DEL', e, conf())));
      for (const r of dels) assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.deepEqual(cniPorts(), []);
      assert.deepEqual(leases(ipamDir, network), []);
      for (const e of envs) assert.equal(hasLink(e.CNI_NETNS!, 'eth0'), false);
    });

    it('10 ADDs and 10 DELs of other containers at once: the new ten attached once each, the old ten gone, no address held twice or left', async () => {
      const old = Array.from({ length: 10 }, () => attachment(newNetns()));
      for (const r of await Promise.all(old.map((e) => cni('ADD', e, conf())))) assert.equal(r.code, 0, r.stdout + r.stderr);
      const fresh = Array.from({ length: 10 }, () => attachment(newNetns()));
      // Interleaved, so the daemon and host-local see them mixed.
      const runs = await Promise.all(old.flatMap((e, n) => [cni('DEL', e, conf()), cni('ADD', fresh[n]!, conf())]));
      for (const r of runs) assert.equal(r.code, 0, r.stdout + r.stderr);
      const added = runs.filter((_, k) => k % 2 === 1).map((r) => r.json.ips[0].address as string);
      assert.equal(new Set(added).size, 10, `distinct addresses: ${added.join(' ')}`);
      assert.deepEqual(leases(ipamDir, network), added.map((a) => a.split('/')[0]!).sort(), 'host-local holds exactly the new ten');
      const ports = cniPorts();
      assert.deepEqual(ports.map((p) => p.owner.containerId).sort(), fresh.map((e) => e.CNI_CONTAINERID).sort());
      fresh.forEach((e, n) => assert.deepEqual(ipv4(e.CNI_NETNS!, 'eth0'), [added[n]]));
      for (const e of old) assert.equal(hasLink(e.CNI_NETNS!, 'eth0'), false);
      for (const r of await Promise.all(fresh.map((e) => cni('DEL', e, conf())))) assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.deepEqual(cniPorts(), []);
      assert.deepEqual(leases(ipamDir, network), []);
    });
  });
});
