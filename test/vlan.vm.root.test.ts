// VLANs against Linux's own 802.1Q (issue 11, requirement 4): a container whose interface on a pier
// trunk port carries Linux VLAN subinterfaces (eth0.10, eth0.20) talks to pier's access ports of
// the same VLAN and to nobody else. This host's kernel has no 802.1Q, so the file runs itself
// inside ../shared/tools/vmrun (a stock Debian kernel, 8021q as a module): outside the VM it boots
// the VM and asserts that the run inside passed; inside, it is the scenario.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { checkBuild, delNetns, IN_VM, iperf, makeNetns, must, NEEDS, ping, pingUntil, requires, sh, TestDaemon, VMRUN } from './helpers.ts';

if (!IN_VM) {
  describe('VLANs against Linux 802.1Q subinterfaces, in a VM (root, vmrun)', requires(NEEDS.vmrun), () => {
    it('the scenario passes inside vmrun', (t) => {
      checkBuild();
      // The VM gets this environment; without the outer runner's NODE_TEST_CONTEXT, the inner
      // node --test runs its tests instead of reporting to a parent that is not there.
      const env = { ...process.env };
      delete env.NODE_TEST_CONTEXT;
      const r = sh(VMRUN, ['--timeout', '1200', '--mem', '2048', '--', 'node', '--import', 'tsx', '--test', '--test-reporter', 'tap', 'test/vlan.vm.root.test.ts'], { timeout: 1_300_000, env });
      const out = r.stdout + r.stderr;
      for (const l of r.stdout.split('\n').filter((x) => /^\s*(not )?ok \d|^# (pass|fail)/.test(x))) t.diagnostic(l.trim());
      assert.equal(r.code, 0, `the VM run failed (exit ${r.code}): ${out.slice(-4000)}`);
      assert.match(r.stdout, /^# pass [1-9]/m, out.slice(-2000));
      assert.match(r.stdout, /^# fail 0$/m, out.slice(-4000));
    });
  });
} else {
  describe('a Linux VLAN subinterface on a pier trunk (inside the VM)', requires(NEEDS.tun, NEEDS.iperf3), () => {
    const d = new TestDaemon();
    let h = ''; // the "host" side of the trunk: eth0 with eth0.10
    let h20 = ''; // eth0.20, moved out of h so both can use one subnet
    let a = ''; // access tag=10
    let b = ''; // access tag=20
    let untagged = ''; // no VLAN

    before(async () => {
      [h, h20, a, b, untagged] = makeNetns(5) as [string, string, string, string, string];
      for (const n of [h, h20, a, b, untagged]) must('ip', ['netns', 'exec', n, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
      await d.start();
      d.ok('add-br', 'br0');
      d.ok('add-port', 'br0', 'trunk', 'type=tap', `netns=${h}`, 'ifname=eth0', 'trunks=10,20');
      d.ok('add-port', 'br0', 'a', 'type=tap', `netns=${a}`, 'ifname=eth0', 'ip=10.60.0.2/24', 'tag=10');
      d.ok('add-port', 'br0', 'b', 'type=tap', `netns=${b}`, 'ifname=eth0', 'ip=10.60.0.4/24', 'tag=20');
      d.ok('add-port', 'br0', 'u', 'type=tap', `netns=${untagged}`, 'ifname=eth0', 'ip=10.60.0.5/24');
      // The kernel's 802.1Q: subinterfaces on the trunk's tap (8021q loads on demand).
      must('ip', ['-n', h, 'link', 'add', 'link', 'eth0', 'name', 'eth0.10', 'type', 'vlan', 'id', '10']);
      must('ip', ['-n', h, 'link', 'add', 'link', 'eth0', 'name', 'eth0.20', 'type', 'vlan', 'id', '20']);
      must('ip', ['-n', h, 'link', 'set', 'eth0.20', 'netns', h20]);
      must('ip', ['-n', h, 'addr', 'add', '10.60.0.1/24', 'dev', 'eth0.10']);
      must('ip', ['-n', h, 'link', 'set', 'eth0.10', 'up']);
      must('ip', ['-n', h20, 'addr', 'add', '10.60.0.3/24', 'dev', 'eth0.20']);
      must('ip', ['-n', h20, 'link', 'set', 'eth0.20', 'up']);
    });

    after(async () => {
      await d.cleanup();
      delNetns([h, h20, a, b, untagged]);
    });

    it('eth0.10 and the access port of VLAN 10 ping each other', async () => {
      await pingUntil(h, '10.60.0.2', ['-W', '5'], 120_000);
      await pingUntil(a, '10.60.0.1', ['-W', '5'], 120_000);
    });

    it('eth0.20 reaches VLAN 20 only: the access port of VLAN 20, never VLAN 10 or the untagged port', async () => {
      await pingUntil(h20, '10.60.0.4', ['-W', '5'], 120_000);
      for (const to of ['10.60.0.2', '10.60.0.5']) assert.notEqual(ping(h20, to, ['-c', '2', '-W', '2']).code, 0, `eth0.20 reached ${to}`);
      for (const to of ['10.60.0.2', '10.60.0.3', '10.60.0.4']) assert.notEqual(ping(untagged, to, ['-c', '2', '-W', '2']).code, 0, `the untagged port reached ${to}`);
    });

    it('TCP between eth0.10 and the access port, both ways (the kernel\'s tagged super-frames)', async () => {
      const up = await iperf(a, h, '10.60.0.2', { seconds: 3 });
      const down = await iperf(a, h, '10.60.0.2', { seconds: 3, reverse: true });
      assert.ok(up.bytes > 1e6, `eth0.10 -> a moved only ${up.bytes} bytes`);
      assert.ok(down.bytes > 1e6, `a -> eth0.10 moved only ${down.bytes} bytes`);
    });

    it('set-port trunks=20: VLAN 10 no longer crosses, VLAN 20 still does', async () => {
      d.ok('set-port', 'trunk', 'trunks=20');
      assert.notEqual(ping(h, '10.60.0.2', ['-c', '2', '-W', '2']).code, 0, 'VLAN 10 crossed a trunk of VLAN 20 only');
      await pingUntil(h20, '10.60.0.4', ['-W', '5'], 120_000);
      const drops = (d.json('stats', 'trunk')[0].counters as { rx_dropped_vlan: number }).rx_dropped_vlan;
      assert.ok(drops > 0, 'the trunk counted the VLAN 10 frames it refused');
      assert.equal(sh('ip', ['-n', h, 'link', 'show', 'eth0']).code, 0);
    });
  });
}
