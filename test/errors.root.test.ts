// Bad input, as root: each gets a message that names the problem and the fix, a non-zero exit,
// and leaves no partial state (neither in `pier show` nor in the container).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { delNetns, makeNetns, must, NEEDS, PIER, requires, sh, TestDaemon } from './helpers.ts';

describe('bad input (root)', requires(NEEDS.tun), () => {
  const d = new TestDaemon();
  let ns = '';

  before(async () => {
    [ns] = makeNetns(1) as [string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'p1', 'type=tap', `netns=${ns}`, 'ip=10.78.0.1/24', 'ifname=eth0');
  });

  after(async () => {
    await d.cleanup();
    delNetns([ns]);
  });

  function links(): string[] {
    return JSON.parse(must('ip', ['-n', ns, '-j', 'link'])).map((l: any) => l.ifname).sort();
  }

  /** Run a command that must fail with `message` and a hint, changing nothing. */
  function refused(args: string[], message: RegExp, hint: RegExp = /./): void {
    const show = d.json('show').bridges;
    const state = must('cat', [`${d.stateDir}/state.json`]);
    const ifs = links();
    const r = d.pier(...args);
    assert.notEqual(r.code, 0, `pier ${args.join(' ')} should fail`);
    assert.match(r.stderr, message);
    const h = /pier: hint: (.*)/.exec(r.stderr);
    assert.ok(h, `no hint in: ${r.stderr}`);
    assert.match(h[1]!, hint);
    assert.deepEqual(d.json('show').bridges, show, 'pier show changed');
    assert.equal(must('cat', [`${d.stateDir}/state.json`]), state, 'state file changed');
    assert.deepEqual(links(), ifs, 'interfaces in the container changed');
  }

  it('unknown bridge', () => {
    refused(['add-port', 'br9', 'px', 'type=tap', `netns=${ns}`], /bridge br9 does not exist/, /pier add-br br9/);
    refused(['del-br', 'br9'], /bridge br9 does not exist/);
  });

  it('unknown port', () => {
    refused(['del-port', 'br0', 'nope'], /port nope does not exist on bridge br0/, /pier show/);
    refused(['stats', 'nope'], /no port named nope/);
  });

  it('duplicate names', () => {
    refused(['add-br', 'br0'], /bridge br0 already exists/);
    refused(['add-port', 'br0', 'p1', 'type=tap', `netns=${ns}`, 'ifname=eth1'], /port p1 already exists/, /del-port br0 p1/);
    refused(['add-port', 'br0', 'p2', 'type=tap', `netns=${ns}`, 'ifname=eth0'], /already uses interface eth0/, /ifname/);
  });

  it('an interface that already exists in the container and is not pier\'s', () => {
    must('ip', ['-n', ns, 'link', 'add', 'taken0', 'type', 'veth', 'peer', 'name', 'taken1']);
    try {
      refused(['add-port', 'br0', 'p3', 'type=tap', `netns=${ns}`, 'ifname=taken0'], /interface taken0 already exists in netns .* and pier did not make it/, /another ifname=NAME, or remove that interface: ip -n \S+ link del taken0/);
    } finally {
      must('ip', ['-n', ns, 'link', 'del', 'taken0']);
    }
  });

  it('a tap someone else made in the container is refused, not taken over (with or without vnet_hdr)', () => {
    for (const extra of [['vnet_hdr'], []]) {
      must('ip', ['-n', ns, 'tuntap', 'add', 'mode', 'tap', 'name', 'ft1', ...extra]);
      try {
        const link = (): unknown => JSON.parse(must('ip', ['-n', ns, '-j', 'addr', 'show', 'dev', 'ft1']))[0];
        const before = link();
        refused(['add-port', 'br0', 'p3', 'type=tap', `netns=${ns}`, 'ifname=ft1', 'ip=10.78.0.9/24'], /interface ft1 already exists in netns .* and pier did not make it/, /another ifname=NAME, or remove that interface/);
        refused(['add-port', 'br0', 'ft1', 'type=tap', `netns=${ns}`], /interface ft1 already exists/, /ifname=NAME/);
        assert.deepEqual(link(), before, 'the tap\'s MAC, addresses and flags are untouched');
      } finally {
        must('ip', ['-n', ns, 'link', 'del', 'ft1']);
      }
    }
  });

  it('a socket path under a file or on a read-only file system', () => {
    must('sh', ['-c', `echo log > ${d.dir}/d1.log && mkdir -p ${d.dir}/ro`]);
    must('mount', ['-t', 'tmpfs', '-o', 'ro', 'none', `${d.dir}/ro`]);
    try {
      const notDir = new RegExp(`${d.dir}/d1\\.log is not a directory, so socket .* cannot be made under it`);
      refused(['add-port', 'br0', 'q3', 'type=vhost-user', `path=${d.dir}/d1.log/x.sock`], notDir, /choose another path=, or remove .*d1\.log/);
      refused(['add-port', 'br0', 'q3', 'type=vhost-user', `path=${d.dir}/d1.log/a/b/x.sock`], notDir, /choose another path=/);
      refused(['add-port', 'br0', 'q3', 'type=virtio-user', `path=${d.dir}/d1.log/x.sock`, 'server=true'], notDir, /choose another path=/);
      refused(['add-port', 'br0', 'q3', 'type=vhost-user', `path=${d.dir}/ro/sub/x.sock`], /ro\/sub for socket .*: the file system is read-only/, /choose another path= on a writable file system/);
      const r = sh(PIER, ['daemon', '--socket', `${d.dir}/d1.log/pier.sock`, '--state-dir', `${d.dir}/other`], { timeout: 20_000 });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /d1\.log is not a directory, so control socket .* cannot be made under it/);
      assert.match(r.stderr, /hint: choose another --socket/);
    } finally {
      must('umount', [`${d.dir}/ro`]);
    }
  });

  it('interface name over 15 bytes', () => {
    refused(['add-port', 'br0', 'p4', 'type=tap', `netns=${ns}`, 'ifname=abcdefghijklmnop'], /16 bytes.*at most 15 bytes/, /ifname/);
    refused(['add-port', 'br0', 'a-very-long-port-name', 'type=tap', `netns=${ns}`], /interface name a-very-long-port-name is 21 bytes/, /ifname=NAME/);
  });

  it('MTU out of range', () => {
    for (const m of ['67', '65522', '9k', '0']) refused(['add-port', 'br0', 'p5', 'type=tap', `netns=${ns}`, `mtu=${m}`], /bad mtu/, /mtu=/);
  });

  it('bad CIDR', () => {
    for (const ip of ['10.0.0.1', '10.0.0.1/33', '300.1.1.1/24', 'fe80::1/129', 'x/24']) {
      refused(['add-port', 'br0', 'p6', 'type=tap', `netns=${ns}`, `ip=${ip}`], /bad ip/, /ip=/);
    }
  });

  it('bad MAC', () => {
    refused(['add-port', 'br0', 'p7', 'type=tap', `netns=${ns}`, 'mac=zz:00:00:00:00:01'], /not a MAC address/);
    refused(['add-port', 'br0', 'p7', 'type=tap', `netns=${ns}`, 'mac=01:00:5e:00:00:01'], /multicast/);
  });

  it('missing network namespace', () => {
    refused(['add-port', 'br0', 'p8', 'type=tap', 'netns=no-such-ns'], /network namespace no-such-ns not found/, /ip netns add no-such-ns/);
    refused(['add-port', 'br0', 'p8', 'type=tap', 'netns=pid:999999999'], /not found/, /no process/);
  });

  it('unknown option key, missing or unknown type, malformed words', () => {
    refused(['add-port', 'br0', 'p9', 'type=tap', 'colour=blue'], /unknown option key colour/, /valid keys: type, netns, ip, mac, mtu, ifname/);
    refused(['add-port', 'br0', 'p9', `netns=${ns}`], /no type/, /type=/);
    refused(['add-port', 'br0', 'p9', 'type=frobnicate'], /unknown port type 'frobnicate'/, /types: tap, /);
    refused(['add-port', 'br0', 'p9', 'type=vxlan', 'remote=192.0.2.2'], /a vxlan port needs vni=/, /add vni=/);
    refused(['add-port', 'br0', 'p9', 'type=tap', 'mtu'], /'mtu' is not an option/, /KEY=VALUE/);
  });

  it('the daemon not running', () => {
    const r = sh(PIER, ['show'], { env: { ...process.env, PIER_SOCKET: `${d.dir}/nothing.sock` } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /pier daemon is not running/);
    assert.match(r.stderr, /hint: start it with: pier daemon/);
    const r2 = sh(PIER, ['--socket', `${d.dir}/nothing.sock`, 'add-br', 'x']);
    assert.match(r2.stderr, /nothing\.sock/, 'a global --socket is honoured');
  });

  it('a second daemon on the same socket', () => {
    const r = sh(PIER, ['daemon', '--socket', d.socket, '--state-dir', `${d.dir}/other`], { timeout: 20_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /already running/);
    assert.equal(d.pier('show').code, 0, 'the first daemon is unharmed');
  });

  // Capabilities are dropped from root rather than switching to a user such as nobody, so the
  // test does not depend on whether the checkout is readable by other users.
  it('no CAP_NET_ADMIN: the daemon refuses to start and says why', () => {
    const r = sh('setpriv', ['--bounding-set=-net_admin', '--inh-caps=-net_admin', PIER, 'daemon', '--socket', `${d.dir}/nocap.sock`, '--state-dir', `${d.dir}/nocap`], { timeout: 20_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /needs CAP_NET_ADMIN/);
    assert.match(r.stderr, /hint: run it as root/);
  });

  it('not allowed on the control socket: the CLI says it is root-only', () => {
    must('chown', ['65534', d.socket]); // the socket now belongs to someone else, mode 0600
    try {
      const r = sh('setpriv', ['--bounding-set=-dac_override,-dac_read_search', '--inh-caps=-dac_override,-dac_read_search', 'env', `PIER_SOCKET=${d.socket}`, PIER, 'show']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /permission denied on .*pier\.sock/);
      assert.match(r.stderr, /hint: run the command as root/);
    } finally {
      must('chown', ['0', d.socket]);
    }
  });

  it('the control socket is mode 0600', () => {
    assert.equal(must('stat', ['-c', '%a', d.socket]).trim(), '600');
  });

  it('/dev/net/tun missing', () => {
    // A private mount namespace where /dev/net is an empty tmpfs: the real node stays untouched.
    const r = sh('unshare', ['-m', 'sh', '-c', `mount -t tmpfs none /dev/net && exec ${PIER} daemon --socket ${d.dir}/notun.sock --state-dir ${d.dir}/notun`], { timeout: 20_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /\/dev\/net\/tun is missing/);
    assert.match(r.stderr, /modprobe tun|mknod/);
  });
});
