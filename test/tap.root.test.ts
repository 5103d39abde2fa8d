// End to end, as root: two network namespaces ("containers") joined by pier through tap ports,
// with the kernel's own stack, ping and iperf3 on both ends.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { delNetns, iperf, makeNetns, must, NEEDS, nsExec, ping, requires, TestDaemon, waitFor } from './helpers.ts';

describe('two containers on tap ports (root)', requires(NEEDS.tun, NEEDS.iperf3), () => {
  const d = new TestDaemon();
  let a = '';
  let b = '';

  before(async () => {
    [a, b] = makeNetns(2) as [string, string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'pa', 'type=tap', `netns=${a}`, 'ip=10.77.0.1/24', 'ifname=eth0', 'mtu=9000');
    d.ok('add-port', 'br0', 'pb', 'type=tap', `netns=${b}`, 'ip=10.77.0.2/24', 'ifname=eth0', 'mtu=9000');
  });

  after(async () => {
    await d.cleanup();
    delNetns([a, b]);
  });

  it('puts the interface in the namespace, up, with the name, address and MTU asked for', () => {
    const link = JSON.parse(must('ip', ['-n', a, '-j', 'addr', 'show', 'dev', 'eth0']))[0];
    assert.equal(link.ifname, 'eth0');
    assert.equal(link.mtu, 9000);
    assert.ok(link.flags.includes('UP'));
    assert.ok(link.addr_info.some((x: any) => x.local === '10.77.0.1' && x.prefixlen === 24));
  });

  it('pings both ways', () => {
    assert.equal(ping(a, '10.77.0.2').code, 0);
    assert.equal(ping(b, '10.77.0.1').code, 0);
  });

  it('carries 9000-byte frames unfragmented (ping -M do -s 8900)', () => {
    const r = ping(a, '10.77.0.2', ['-M', 'do', '-s', '8900']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /8908 bytes from 10\.77\.0\.2/);
  });

  it('carries TCP both ways (iperf3), TSO super-frames crossing unsegmented', async () => {
    const before = d.json('stats');
    const up = await iperf(b, a, '10.77.0.2');
    const down = await iperf(b, a, '10.77.0.2', { reverse: true });
    assert.ok(up.bytes > 50e6, `a->b moved only ${up.bytes} bytes`);
    assert.ok(down.bytes > 50e6, `b->a moved only ${down.bytes} bytes`);
    const after = d.json('stats');
    for (const i of [0, 1]) {
      const c = after[i].counters;
      assert.ok(c.rx_gso_packets - before[i].counters.rx_gso_packets > 0, `${after[i].port} received no GSO frames`);
      assert.equal(c.tx_segmented, 0, 'nothing should need software segmentation');
    }
  });

  it('shows the ports and counts them', () => {
    assert.equal(ping(a, '10.77.0.2').code, 0, 'traffic both ways, for the counters and the FDB');
    const show = d.json('show');
    assert.deepEqual(show.bridges.map((x: any) => x.name), ['br0']);
    assert.deepEqual(show.bridges[0].ports.map((p: any) => [p.name, p.state]), [['pa', 'up'], ['pb', 'up']]);
    const one = d.json('stats', 'pa');
    assert.equal(one.length, 1);
    assert.ok(one[0].counters.rx_packets > 0 && one[0].counters.tx_packets > 0);
    assert.equal(one[0].kernel.ifname, 'eth0');
    assert.match(d.ok('show'), /Bridge br0/);
    assert.match(d.ok('stats'), /pa \(bridge br0, up\)/);
    const fdb = d.json('fdb', 'br0');
    assert.deepEqual(fdb.map((e: any) => e.port).sort(), ['pa', 'pb']);
  });

  it('segments and checksums in software for a port with offloads=off', async () => {
    const [c] = makeNetns(1) as [string];
    try {
      d.ok('add-port', 'br0', 'pc', 'type=tap', `netns=${c}`, 'ip=10.77.0.3/24', 'offloads=off');
      const r = await iperf(c, a, '10.77.0.3');
      assert.ok(r.bytes > 20e6, `moved only ${r.bytes} bytes`);
      const s = d.json('stats', 'pc')[0].counters;
      assert.ok(s.tx_segmented > 0, 'super-frames from pa should be segmented for pc');
      assert.equal(s.rx_gso_packets, 0, 'a port without offloads must not hand pier GSO frames');
      assert.equal(s.tx_dropped_bad_gso, 0);
      const back = await iperf(a, c, '10.77.0.1');
      assert.ok(back.bytes > 20e6);
    } finally {
      d.pier('del-port', 'br0', 'pc');
      delNetns([c]);
    }
  });

  it('accepts netns as pid:PID and as a /proc path', async () => {
    const [c, e] = makeNetns(2) as [string, string];
    const holder = spawn('ip', ['netns', 'exec', c, 'sleep', '60'], { stdio: 'ignore' });
    try {
      const pid = holder.pid!;
      // ip netns exec enters the namespace, then becomes sleep (same pid).
      const inode = statSync(`/var/run/netns/${c}`).ino;
      await waitFor(() => statSync(`/proc/${pid}/ns/net`, { throwIfNoEntry: false })?.ino === inode, 5000, `pid ${pid} to be in netns ${c}`);
      d.ok('add-port', 'br0', 'pp', 'type=tap', `netns=pid:${pid}`, 'ip=10.77.0.4/24');
      d.ok('add-port', 'br0', 'pq', 'type=tap', `netns=/var/run/netns/${e}`, 'ip=10.77.0.5/24');
      assert.equal(ping(c, '10.77.0.1').code, 0);
      assert.equal(ping(e, '10.77.0.4').code, 0);
    } finally {
      d.pier('del-port', 'br0', 'pp');
      d.pier('del-port', 'br0', 'pq');
      holder.kill();
      delNetns([c, e]);
    }
  });

  it('brings every port back after a restart, same name, address and MAC, and traffic resumes', async () => {
    const macBefore = JSON.parse(must('ip', ['-n', a, '-j', 'link', 'show', 'dev', 'eth0']))[0].address;
    try {
      await d.stop('SIGKILL'); // the harshest restart: no clean shutdown at all
      assert.notEqual(ping(a, '10.77.0.2', ['-c', '1']).code, 0, 'with pier down nothing should forward');
      await d.start();
      const link = JSON.parse(must('ip', ['-n', a, '-j', 'addr', 'show', 'dev', 'eth0']))[0];
      assert.equal(link.address, macBefore);
      assert.equal(link.mtu, 9000);
      assert.ok(link.addr_info.some((x: any) => x.local === '10.77.0.1'));
      assert.equal(ping(a, '10.77.0.2').code, 0);
      const r = await iperf(b, a, '10.77.0.2');
      assert.ok(r.bytes > 50e6);
      // and after a clean stop too
      await d.stop('SIGTERM');
      await d.start();
      assert.equal(ping(b, '10.77.0.1').code, 0);
    } finally {
      if (!d.proc) await d.start(); // the next test finds the daemon running
    }
  });

  it('del-port removes the interface from the container, del-br its bridge\'s', () => {
    // A bridge and containers of its own: the others' stay as they are.
    const [x, y] = makeNetns(2) as [string, string];
    try {
      d.ok('add-br', 'br9');
      d.ok('add-port', 'br9', 'px', 'type=tap', `netns=${x}`, 'ifname=eth0');
      d.ok('add-port', 'br9', 'py', 'type=tap', `netns=${y}`, 'ifname=eth0');
      d.ok('del-port', 'br9', 'py');
      assert.notEqual(nsExec(y, 'ip', ['link', 'show', 'eth0']).code, 0, 'eth0 should be gone');
      assert.deepEqual(d.json('show', 'br9').bridges[0].ports.map((p: any) => p.name), ['px']);
      d.ok('del-br', 'br9');
      assert.notEqual(nsExec(x, 'ip', ['link', 'show', 'eth0']).code, 0, 'del-br removes its ports');
      assert.ok(!d.json('show').bridges.some((br: any) => br.name === 'br9'), 'the bridge is gone');
    } finally {
      d.pier('del-br', 'br9');
      delNetns([x, y]);
    }
  });
});
