// virtio-user ports (pier as the virtio driver) over vhost-user, as root: against pier's own
// vhost-user port in the same daemon and against DPDK testpmd's net_vhost backend, both socket
// modes; and every class of `path` with its message.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { delNetns, iperf, makeNetns, ping, sleep, TestDaemon } from './helpers.ts';
import { Testpmd } from './testpmd.ts';

async function pingOk(ns: string, addr: string, extra: string[] = []): Promise<void> {
  let last = '';
  for (let i = 0; i < 10; i++) {
    const r = ping(ns, addr, ['-c', '2', ...extra]);
    if (r.code === 0) return;
    last = r.stdout + r.stderr;
    await sleep(500);
  }
  throw new Error(`ping ${addr} never answered: ${last}`);
}

describe('virtio-user ports over vhost-user (root)', () => {
  const d = new TestDaemon();
  let c1 = '';
  let c2 = '';
  before(async () => {
    [c1, c2] = makeNetns(2) as [string, string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${c1}`, 'ip=10.81.0.1/24');
  });
  after(async () => {
    await d.cleanup();
    delNetns([c1, c2]);
  });

  it('drives pier\'s own vhost-user port: ping and TCP both ways, TSO end to end, zero copies in the driver', async () => {
    d.ok('add-br', 'br1');
    d.ok('add-port', 'br1', 'c2', 'type=tap', `netns=${c2}`, 'ip=10.81.0.2/24');
    d.ok('add-port', 'br0', 'vu', 'type=vhost-user', `path=${d.dir}/vu.sock`);
    d.ok('add-port', 'br1', 'vuc', 'type=virtio-user', `path=${d.dir}/vu.sock`, 'queue-size=256');
    await pingOk(c1, '10.81.0.2', ['-p', '1234abcd']);
    const peer = d.json('show', 'vuc').port.peer;
    assert.equal(peer.link, 'up');
    for (const f of ['VERSION_1', 'MRG_RXBUF', 'HOST_TSO4', 'GUEST_TSO4', 'CSUM', 'GUEST_CSUM', 'EVENT_IDX']) assert.ok(peer.features.negotiated.includes(f), f);
    const up = await iperf(c2, c1, '10.81.0.2');
    const down = await iperf(c2, c1, '10.81.0.2', { reverse: true });
    assert.ok(up.bytes > 50e6 && down.bytes > 50e6);
    const s = Object.fromEntries(d.json('stats').map((x: any) => [x.port, x.counters]));
    assert.ok(s.vuc.tx_gso_packets > 0 && s.vuc.rx_gso_packets > 0, 'super-frames cross the rings both ways');
    assert.equal(s.c2.tx_segmented + s.c1.tx_segmented, 0);
    d.ok('del-port', 'br1', 'vuc');
    d.ok('del-port', 'br0', 'vu');
  });

  it('against DPDK testpmd net_vhost (testpmd listens): ping answered by icmpecho, contents checked', async () => {
    const sock = `${d.dir}/tp.sock`;
    const t = new Testpmd([`net_vhost0,iface=${sock},queues=1`], 'icmpecho');
    const started = t.start();
    for (let i = 0; i < 50 && !existsSync(sock); i++) await sleep(100);
    try {
      d.ok('add-port', 'br0', 'tp', 'type=virtio-user', `path=${sock}`);
      await started;
      await pingOk(c1, '10.81.0.9', ['-p', 'feedface', '-s', '1200']);
      const peer = d.json('show', 'tp').port.peer;
      assert.equal(peer.link, 'up');
      assert.ok(peer.features.negotiated.includes('EVENT_IDX'), `EVENT_IDX negotiated with DPDK's vhost: ${peer.features.negotiated}`);
      const s = d.json('stats', 'tp')[0].counters;
      assert.ok(s.rx_packets > 0 && s.tx_packets > 0);
    } finally {
      await t.kill();
      d.pier('del-port', 'br0', 'tp');
    }
  });

  it('counts its receive ring running empty when testpmd (txonly) sends faster than pier refills a 64-entry ring', async () => {
    const sock = `${d.dir}/tx.sock`;
    const t = new Testpmd([`net_vhost0,iface=${sock},queues=1`], 'txonly', ['--txpkts=128']);
    const started = t.start();
    for (let i = 0; i < 50 && !existsSync(sock); i++) await sleep(100);
    try {
      d.ok('add-port', 'br0', 'tx', 'type=virtio-user', `path=${sock}`, 'queue-size=64');
      await started;
      await sleep(2000);
      const c = d.json('stats', 'tx')[0].counters;
      assert.ok(c.rx_packets > 1000, `rx_packets ${c.rx_packets}`);
      assert.ok(c.rx_buffers_posted >= c.rx_packets, `every received frame was in a posted buffer: ${c.rx_buffers_posted} >= ${c.rx_packets}`);
      assert.ok(c.rx_ring_empty > 0, `rx_ring_empty ${c.rx_ring_empty}`);
      const text = d.ok('stats', 'tx');
      assert.match(text, /rx ring: rx_buffers_posted: \d+ {2}rx_ring_empty: [1-9]\d* {2}rx_post_short: \d+/);
      const show = d.ok('show', 'tx');
      assert.match(show, /virtio driver over vhost-user client on .*tx\.sock: backend connected, link up, queue size 64/);
      assert.match(show, /receive ring: \d+ buffers posted now, \d+ in all; ran empty [1-9]\d* times/);
      // A port with a kernel tap shows the tap's own counters and drops next to pier's.
      assert.match(d.ok('show', 'c1'), /kernel c1: rx \d+ tx \d+ rx_dropped \d+ tx_dropped \d+/);
    } finally {
      await t.kill();
      d.pier('del-port', 'br0', 'tx');
    }
  });

  it('server=true: pier listens and testpmd net_vhost connects (client=1)', async () => {
    const sock = `${d.dir}/tps.sock`;
    d.ok('add-port', 'br0', 'tps', 'type=virtio-user', `path=${sock}`, 'server=true');
    const t = new Testpmd([`net_vhost0,iface=${sock},queues=1,client=1`], 'icmpecho');
    try {
      await t.start();
      await pingOk(c1, '10.81.0.9');
      assert.equal(d.json('show', 'tps').port.peer.mode, 'server');
    } finally {
      await t.kill();
      d.pier('del-port', 'br0', 'tps');
    }
  });

  it('every class of path gets its own answer, and nothing is left behind', () => {
    const file = `${d.dir}/plain-file`;
    writeFileSync(file, 'x');
    mkdirSync(`${d.dir}/adir`, { recursive: true });
    const cases: Array<[string, RegExp]> = [
      [`${d.dir}/nobody.sock`, /does not exist, so it is neither the vhost-net device nor a vhost-user socket/],
      [file, /is a regular file, neither the vhost-net device nor a unix socket/],
      [`${d.dir}/adir`, /is a directory/],
      ['/dev/null', /is a character device 1:3, not vhost-net \(10:238\)/],
    ];
    if (!existsSync('/dev/vhost-net')) cases.push(['/dev/vhost-net', /this kernel has no vhost-net loaded or built in/]);
    const before = d.json('show').bridges;
    for (const [path, message] of cases) {
      const r = d.pier('add-port', 'br0', 'vx', 'type=virtio-user', `path=${path}`);
      assert.notEqual(r.code, 0, path);
      assert.match(r.stderr, message);
      assert.match(r.stderr, /hint: /);
    }
    assert.deepEqual(d.json('show').bridges, before);
  });
});
