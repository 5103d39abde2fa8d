// Runs inside ../shared/tools/vmrun (a stock Debian kernel with /dev/vhost-net): two containers
// on virtio-user ports over vhost-net and one on a tap port, joined by pier. Prints one JSON line
// with what happened; test/virtio-user-vhost-net.vm.test.ts runs it and asserts.
import { delNetns, iperf, makeNetns, must, ping, TestDaemon } from '../helpers.ts';

const out: Record<string, unknown> = {};
const d = new TestDaemon();
const [a, b, c] = makeNetns(3) as [string, string, string];
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
  out.stats = d.json('stats');
  // A restart brings the vhost-net ports back: the persistent taps are re-attached.
  await d.stop('SIGTERM');
  await d.start();
  out.afterRestart = ping(a, '10.82.0.2', ['-c', '3', '-W', '5']).code;
} catch (e) {
  out.error = String((e as Error).stack ?? e);
  out.log = d.log.slice(-3000);
} finally {
  await d.cleanup();
  delNetns([a, b, c]);
}
process.stdout.write('RESULT ' + JSON.stringify(out) + '\n');
