// virtio-user ports over the kernel's vhost-net, the setup of the DPDK thread, run for real in
// a VM with a stock Debian kernel (../shared/tools/vmrun; this host's kernel has no vhost-net).
// The scenario (test/vm/vhost-net-scenario.ts) runs inside; this test asserts on what it saw.
// Software emulation makes it slow (minutes) and its throughput figures meaningless. The VM gets
// a clean environment: the test runner's own variables (NODE_TEST_CONTEXT, ...) stay outside.
// Without ../shared/tools/vmrun (this repository checked out alone) the test is skipped, saying so.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NEEDS, requires, sh, VMRUN } from './helpers.ts';

describe('virtio-user over /dev/vhost-net in a VM (root, vmrun)', requires(NEEDS.vmrun), () => {
  it('two containers on vhost-net virtio-user ports and one on a tap port talk through pier, also after a restart', (t) => {
    const r = sh(VMRUN, ['--timeout', '1800', '--mem', '3072', '--clean-env', '--', 'node', '--import', 'tsx', 'test/vm/vhost-net-scenario.ts'],
      { timeout: 1_900_000, env: { ...process.env, VMRUN_ACCEL: process.env.VMRUN_ACCEL ?? 'tcg' } });
    const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    assert.ok(line, `no result from the VM (exit ${r.code}): ${r.stdout.slice(-2000)} ${r.stderr.slice(-2000)}`);
    const out = JSON.parse(line.slice(7));
    // What the VM saw, in the test log (throughput under software emulation means little).
    t.diagnostic(`iperf3 Gbit/s: up ${out.iperfUp?.toFixed(2)} down ${out.iperfDown?.toFixed(2)} tap ${out.iperfTap?.toFixed(2)}; ` +
      `queues=2: -P 4 up ${out.mqIperfUp?.toFixed(2)} down ${out.mqIperfDown?.toFixed(2)}, ` +
      `pairs ${JSON.stringify(out.mqShow?.peer?.pairs?.map((p: any) => ({ pair: p.pair, rx: p.rxPackets, tx: p.txPackets })))}, tap queues ${out.mqQueues}`);
    assert.equal(out.error, undefined, `${out.error}\n${out.log ?? ''}`);
    assert.equal(out.vhostNet, 'a:ee character special file', 'the VM has /dev/vhost-net (10:238)');
    // max_mem_regions below pier's two regions: refused with the parameter and the fix named.
    assert.equal(out.memRegionsParam, '1');
    assert.notEqual(out.memRegionsRefused.code, 0);
    assert.match(out.memRegionsRefused.stderr, /vhost-net accepts at most 1 memory regions \(\/sys\/module\/vhost\/parameters\/max_mem_regions=1\)/);
    assert.match(out.memRegionsRefused.stderr, /hint: .*modprobe vhost max_mem_regions=64/);
    assert.deepEqual(JSON.parse(out.memRegionsRefused.links).map((l: any) => l.ifname), ['lo'], 'no tap left behind');
    assert.equal(out.memRegionsAfter, '64');
    // The kernel's tap is in the container, named, addressed and sized as asked.
    assert.equal(out.link.ifname, 'eth0');
    assert.equal(out.link.mtu, 9000);
    assert.ok(out.link.addr_info.some((x: any) => x.local === '10.82.0.1'));
    assert.equal(out.show.peer.backend, 'vhost-kernel');
    assert.equal(out.show.peer.link, 'up');
    assert.ok(out.show.peer.features.negotiated.includes('MRG_RXBUF'));
    assert.ok(out.show.peer.features.negotiated.includes('EVENT_IDX'), `EVENT_IDX with vhost-net: ${out.show.peer.features.negotiated}`);
    assert.equal(out.ping12, 0, 'ping c1 -> c2 over vhost-net both ends');
    assert.equal(out.ping21, 0, 'ping c2 -> c1');
    assert.equal(out.ping13, 0, 'ping from a vhost-net container to a tap container');
    assert.equal(out.jumbo, 0, 'ping -M do -s 8900 with MTU 9000');
    for (const k of ['iperfUp', 'iperfDown', 'iperfTap']) assert.ok(out[k] > 0, `${k}: ${out[k]}`);
    const s = Object.fromEntries(out.stats.map((x: any) => [x.port, x]));
    assert.ok(s.c1.counters.rx_gso_packets > 0 && s.c1.counters.tx_gso_packets > 0, 'TSO super-frames cross the vhost-net rings');
    assert.equal(s.c1.counters.tx_segmented + s.c2.counters.tx_segmented, 0);
    // Both sides of the exception path are counted: pier's rings and the kernel tap's own.
    assert.equal(s.c1.kernel.ifname, 'eth0');
    assert.ok(s.c1.kernel.rx_packets > 0 && s.c1.kernel.tx_packets > 0);
    assert.equal(s.c1.kernel.sndbuf, 1048576, 'the tap\'s send buffer is bounded (TUNSETSNDBUF)');
    assert.equal(out.afterRestart, 0, 'after a daemon restart the vhost-net containers talk again');
    // queues=2 over vhost-net: the container's tap has 2 rx and 2 tx queues, both pairs carry
    // packets both ways, ping and iperf3 -P 4 work, and so does a restart.
    assert.deepEqual(out.mqQueues, ['rx-0', 'rx-1', 'tx-0', 'tx-1']);
    assert.ok(out.mqLink.linkinfo.info_data.multi_queue, 'a multiqueue tap');
    assert.deepEqual(out.mqPing, [0, 0, 0, 0], `ping from ${out.mqAddrs}`);
    assert.ok(out.mqIperfUp > 0 && out.mqIperfDown > 0, `iperf3 -P 4: ${out.mqIperfUp} / ${out.mqIperfDown}`);
    const mq = out.mqShow.peer;
    assert.equal(mq.backend, 'vhost-kernel');
    assert.equal(mq.link, 'up');
    assert.equal(mq.queuePairs, 2);
    assert.equal(mq.rxPostLimit, 256, 'a port posts at most an eighth of the 4096-buffer pool: 256 per ring with 2 pairs');
    for (const p of mq.pairs) assert.ok(p.txPackets > 0 && p.rxPackets > 0, `pair ${p.pair}: rx ${p.rxPackets} tx ${p.txPackets}`);
    assert.match(out.mqShowText, /virtio driver over vhost-net \(\/dev\/vhost-net\), link up, queue size 1024, queue pairs 2/);
    assert.equal(s.c4.kernel.sndbuf, 1048576);
    assert.equal(out.afterRestartMq, 0, 'the multiqueue port comes back after a restart');
    assert.deepEqual(out.afterRestartMqQueues, ['rx-0', 'rx-1', 'tx-0', 'tx-1']);
  });
});
