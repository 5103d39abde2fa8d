// `pier doctor` on this machine (no vhost-net here) and, through ../shared/tools/vmrun, on a
// stock Debian kernel that has it. Root.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { NEEDS, PIER, requires, sh, TestDaemon, VMRUN } from './helpers.ts';

interface Finding { check: string; level: string; detail: string; fix?: string }
const find = (fs: Finding[], check: string): Finding => {
  const f = fs.find((x) => x.check === check);
  assert.ok(f, `no finding for ${check}`);
  return f;
};

describe('pier doctor (root)', requires(NEEDS.tun), () => {
  const d = new TestDaemon();
  before(async () => d.start());
  after(async () => d.cleanup());

  it('with the daemon running: all is well, exit 0, each warning with its fix', () => {
    const r = d.pier('doctor');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /all is well/);
    const fs = JSON.parse(d.ok('doctor', '--json')) as Finding[];
    assert.match(find(fs, '/dev/net/tun').detail, /character device 10:200/);
    assert.match(find(fs, 'daemon').detail, /running \(pid \d+\)/);
    const vn = find(fs, '/dev/vhost-net');
    if (existsSync('/dev/vhost-net')) assert.equal(vn.level, 'ok');
    else {
      assert.equal(vn.level, 'warn');
      assert.match(vn.fix ?? '', /modprobe vhost_net.*type=tap/);
    }
    assert.equal(find(fs, 'CAP_NET_ADMIN').level, 'ok');
    assert.equal(find(fs, 'memfd').level, 'ok');
  });

  it('without a daemon: says how to start it, exit 1', () => {
    const r = sh(PIER, ['doctor', '--socket', `${d.dir}/none.sock`]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /FAIL\] daemon: the pier daemon is not running/);
    assert.match(r.stdout, /fix: start it with: pier daemon/);
  });

  it('without /dev/net/tun and without CAP_NET_ADMIN: both named, with fixes', () => {
    const r = sh('unshare', ['-m', 'sh', '-c', `mount -t tmpfs none /dev/net && exec setpriv --bounding-set=-net_admin --inh-caps=-net_admin ${PIER} doctor --socket ${d.socket} --json`]);
    assert.equal(r.code, 1);
    const fs = JSON.parse(r.stdout) as Finding[];
    assert.equal(find(fs, '/dev/net/tun').level, 'fail');
    assert.match(find(fs, '/dev/net/tun').fix ?? '', /modprobe tun|mknod/);
    assert.equal(find(fs, 'CAP_NET_ADMIN').level, 'fail');
  });

  it('a socket path over 107 bytes is named', () => {
    const long = `/tmp/${'x'.repeat(110)}.sock`;
    const fs = JSON.parse(sh(PIER, ['doctor', '--json', '--socket', long]).stdout) as Finding[];
    assert.equal(find(fs, 'unix socket paths').level, 'fail');
  });

  it('in a VM with a stock Debian kernel (vmrun): /dev/vhost-net is found, 10:238, with the vhost module parameters', requires(NEEDS.vmrun), () => {
    const r = sh(VMRUN, ['--timeout', '300', '--clean-env', '--', PIER, 'doctor', '--json'], { timeout: 400_000, env: { ...process.env, VMRUN_ACCEL: process.env.VMRUN_ACCEL ?? 'tcg' } });
    // exit 1 is expected: no daemon runs in the VM
    assert.ok(r.code === 0 || r.code === 1, `vmrun failed (${r.code}): ${r.stderr.slice(-2000)}`);
    const fs = JSON.parse(r.stdout) as Finding[];
    const vn = find(fs, '/dev/vhost-net');
    assert.equal(vn.level, 'ok', JSON.stringify(vn));
    assert.match(vn.detail, /character device 10:238/);
    assert.match(find(fs, 'vhost module parameters').detail, /max_mem_regions=\d+/);
  });
});
