// Runs inside ../shared/tools/vmrun (a stock Debian kernel with /dev/vhost-net): two containers
// on virtio-user ports over vhost-net and one on a tap port, joined by pier. Prints one JSON line
// with what happened; test/virtio-user-vhost-net.vm.test.ts runs it and asserts.
import { delNetns, icmpPair, iperf, makeNetns, must, nsExec, ping, TestDaemon } from '../helpers.ts';

const out: Record<string, unknown> = {};
const d = new TestDaemon();
const [a, b, c, e] = makeNetns(4) as [string, string, string, string];
// Addresses of the multiqueue container whose echo replies pier sends on pair 0 and on pair 1.
const mqAddrs: string[] = [];
for (let i = 40, want = [2, 2]; i < 100 && want.some((n) => n > 0); i++) {
  const k = icmpPair('10.82.0.1', `10.82.0.${i}`, 2);
  if (want[k]! > 0) {
    want[k]!--;
    mqAddrs.push(`10.82.0.${i}`);
  }
}
try {
  out.vhostNet = must('stat', ['-c', '%t:%T %F', '/dev/vhost-net']).trim();
  await d.start();
  d.ok('add-br', 'br0');
  // vhost loaded again with max_mem_regions below pier's two regions: add-port is refused with
  // the parameter named, and nothing is left behind; then back to the default.
  must('modprobe', ['-r', 'vhost_net', 'vhost']);
  must('modprobe', ['vhost', 'max_mem_regions=1']);
  must('modprobe', ['vhost_net']);
  out.memRegionsParam = must('cat', ['/sys/module/vhost/parameters/max_mem_regions']).trim();
  const refused = d.pier('add-port', 'br0', 'c1', 'type=virtio-user', 'path=/dev/vhost-net', `netns=${a}`, 'ip=10.82.0.1/24', 'ifname=eth0');
  out.memRegionsRefused = { code: refused.code, stderr: refused.stderr, links: must('ip', ['-n', a, '-j', 'link', 'show']) };
  must('modprobe', ['-r', 'vhost_net', 'vhost']);
  must('modprobe', ['vhost_net']);
  out.memRegionsAfter = must('cat', ['/sys/module/vhost/parameters/max_mem_regions']).trim();
  d.ok('add-port', 'br0', 'c1', 'type=virtio-user', 'path=/dev/vhost-net', `netns=${a}`, 'ip=10.82.0.1/24', 'ifname=eth0', 'mtu=9000');
  d.ok('add-port', 'br0', 'c2', 'type=virtio-user', 'path=/dev/vhost-net', `netns=${b}`, 'ip=10.82.0.2/24', 'ifname=eth0', 'mtu=9000');
  d.ok('add-port', 'br0', 'c3', 'type=tap', `netns=${c}`, 'ip=10.82.0.3/24', 'mtu=9000');
  out.link = JSON.parse(must('ip', ['-n', a, '-j', 'addr', 'show', 'dev', 'eth0']))[0];
  out.show = d.json('show', 'c1').port;
  out.ping12 = ping(a, '10.82.0.2', ['-c', '3', '-W', '5']).code;
  out.ping21 = ping(b, '10.82.0.1', ['-c', '3', '-W', '5']).code;
  out.ping13 = ping(a, '10.82.0.3', ['-c', '3', '-W', '5']).code;
  out.jumbo = ping(a, '10.82.0.2', ['-c', '2', '-W', '5', '-M', 'do', '-s', '8900']).code;
  out.iperfUp = (await iperf(b, a, '10.82.0.2', { seconds: 3 })).gbps;
  out.iperfDown = (await iperf(b, a, '10.82.0.2', { seconds: 3, reverse: true })).gbps;
  out.iperfTap = (await iperf(c, a, '10.82.0.3', { seconds: 3 })).gbps;
  // A third vhost-net container with queues=2: a multiqueue tap with 2 rx / 2 tx queues in the
  // container, one vhost-net fd per pair; pings whose replies pier hashes to each pair, then
  // iperf3 -P 4 both ways.
  d.ok('add-port', 'br0', 'c4', 'type=virtio-user', 'path=/dev/vhost-net', `netns=${e}`, `ip=${mqAddrs.map((x) => `${x}/24`).join(',')}`, 'ifname=eth0', 'queues=2');
  out.mqAddrs = mqAddrs;
  out.mqQueues = nsExec(e, 'ls', ['/sys/class/net/eth0/queues']).stdout.split(/\s+/).filter(Boolean).sort();
  out.mqLink = JSON.parse(must('ip', ['-n', e, '-d', '-j', 'link', 'show', 'dev', 'eth0']))[0];
  out.mqPing = mqAddrs.map((x) => ping(e, '10.82.0.1', ['-c', '5', '-W', '5', '-I', x]).code);
  out.mqIperfUp = (await iperf(a, e, '10.82.0.1', { seconds: 3, parallel: 4 })).gbps;
  out.mqIperfDown = (await iperf(a, e, '10.82.0.1', { seconds: 3, parallel: 4, reverse: true })).gbps;
  out.mqShow = d.json('show', 'c4').port;
  out.mqShowText = d.ok('show', 'c4');
  out.stats = d.json('stats');
  // A restart brings the vhost-net ports back: the persistent taps are re-attached.
  await d.stop('SIGTERM');
  await d.start();
  out.afterRestart = ping(a, '10.82.0.2', ['-c', '3', '-W', '5']).code;
  out.afterRestartMq = ping(e, '10.82.0.1', ['-c', '3', '-W', '5', '-I', mqAddrs[0]!]).code;
  out.afterRestartMqQueues = nsExec(e, 'ls', ['/sys/class/net/eth0/queues']).stdout.split(/\s+/).filter(Boolean).sort();
} catch (e) {
  out.error = String((e as Error).stack ?? e);
  out.log = d.log.slice(-3000);
} finally {
  await d.cleanup();
  delNetns([a, b, c, e]);
}
process.stdout.write('RESULT ' + JSON.stringify(out) + '\n');
