// pier-cni with portType virtio-user (issue 10, requirement 7), run for real in a VM with a stock
// Debian kernel (../shared/tools/vmrun; this host's kernel has no vhost-net): ADD for two network
// namespaces, each gets the kernel's tap with its host-local address while pier is the virtio
// driver over /dev/vhost-net; they ping each other and the gateway; DEL removes port, interface
// and address. The scenario (test/vm/cni-virtio-user-scenario.ts) runs inside; this test asserts
// on what it saw. Software emulation makes it slow (minutes). Without ../shared/tools/vmrun the
// test is skipped, saying so.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkBuild, NEEDS, requires, sh, VMRUN } from './helpers.ts';
import { CNI_NEEDS } from './cni-rootfs.ts';

describe('pier-cni portType virtio-user over /dev/vhost-net in a VM (root, vmrun)', requires(NEEDS.vmrun, CNI_NEEDS.plugins, CNI_NEEDS.pierCni), () => {
  it('ADD for two namespaces, ping between them and the gateway, DEL', (t) => {
    checkBuild();
    const r = sh(VMRUN, ['--timeout', '1200', '--mem', '2048', '--clean-env', '--', 'node', '--import', 'tsx', 'test/vm/cni-virtio-user-scenario.ts'],
      { timeout: 1_300_000, env: { ...process.env, VMRUN_ACCEL: process.env.VMRUN_ACCEL ?? 'tcg' } });
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    assert.ok(line, `no result from the VM (exit ${r.code}): ${r.stdout.slice(-2000)} ${r.stderr.slice(-2000)}`);
    const out = JSON.parse(line.slice(7));
    t.diagnostic(`pier-cni under emulation: ADD ${out.addA?.ms} / ${out.addB?.ms} ms, DEL ${out.delA?.ms} / ${out.delB?.ms} ms`);
    assert.equal(out.error, undefined, `${out.error}\n${out.log ?? ''}`);
    assert.equal(out.vhostNet, 'a:ee character special file', 'the VM has /dev/vhost-net (10:238)');
    for (const k of ['addA', 'addB']) {
      assert.equal(out[k].code, 0, `${k}: ${JSON.stringify(out[k].result)} ${out[k].stderr}`);
      assert.match(out[k].result.ips[0].address, /^10\.96\.0\.\d+\/24$/);
    }
    // The kernel's tap, in the container, named and addressed as the runtime asked.
    assert.equal(out.linkA.ifname, 'eth0');
    assert.equal(out.linkA.linkinfo?.info_kind, 'tun');
    assert.ok(out.linkA.addr_info.some((x: any) => `${x.local}/${x.prefixlen}` === out.addA.result.ips[0].address));
    assert.match(out.routeA, /default via 10\.96\.0\.1 dev eth0/);
    const cniPorts = out.ports.filter((p: any) => p.owner?.kind === 'cni');
    assert.equal(cniPorts.length, 2);
    for (const p of cniPorts) {
      assert.equal(p.type, 'virtio-user');
      assert.equal(p.path, '/dev/vhost-net');
      assert.equal(p.backend, 'vhost-kernel');
      assert.equal(p.link, 'up');
      assert.equal(p.state, 'up');
    }
    assert.deepEqual(out.held.sort(), [out.addA.result.ips[0].address, out.addB.result.ips[0].address].map((x: string) => x.split('/')[0]).sort());
    assert.equal(out.pingAB, true, 'a pings b over vhost-net both ends');
    assert.equal(out.pingBA, true, 'b pings a');
    assert.equal(out.pingGw, true, 'a pings the gateway (a tap port in the host namespace)');
    for (const k of ['delA', 'delB', 'delAgain']) assert.equal(out[k].code, 0, `${k}: ${JSON.stringify(out[k].result)} ${out[k].stderr}`);
    assert.deepEqual(out.portsAfter, [], 'no port left (the gateway port went with the last attachment)');
    assert.deepEqual(out.heldAfter, [], 'no address held');
    assert.equal(out.linkAfter, null, 'the interface is gone from the container');
  });
});
