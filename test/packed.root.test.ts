// Packed virtqueues (VIRTIO_F_RING_PACKED) against real peers, as root: DPDK testpmd's virtio-user
// with packed_vq=1 on a pier vhost-user port (pier the device), then the same port with a split
// testpmd; pier's virtio-user with packed=on over testpmd's net_vhost (pier the driver); and pier
// driving its own vhost-user port packed, TCP both ways.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { delNetns, iperf, makeNetns, NEEDS, ping, pingUntil, requires, TestDaemon, waitFor } from './helpers.ts';
import { Testpmd } from './testpmd.ts';

// testpmd asks virtio-user for checksum and TSO offloads, scatter and 9018-byte frames, so
// MRG_RXBUF spreads a jumbo frame over several of testpmd's 2 KiB receive buffers: several
// lists per packet, each skipped over by its own used descriptor.
const OFFLOADS = ['--rx-offloads=0x201c', '--tx-offloads=0x802c', '--max-pkt-len=9018'];

describe('packed virtqueues with DPDK testpmd (root)', requires(NEEDS.tun, NEEDS.testpmd), () => {
  const d = new TestDaemon();
  let c1 = '';
  let c2 = '';

  before(async () => {
    [c1, c2] = makeNetns(2) as [string, string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${c1}`, 'ip=10.86.0.1/24', 'mtu=9000');
    d.ok('add-br', 'br1');
    d.ok('add-port', 'br1', 'c2', 'type=tap', `netns=${c2}`, 'ip=10.86.0.2/24', 'mtu=9000');
  });

  after(async () => {
    await d.cleanup();
    delNetns([c1, c2]);
  });

   
  const counters = (port: string): any => d.json('stats', port)[0].counters;

  it('testpmd virtio-user packed_vq=1 on a vhost-user port: two queue pairs, jumbo frames over MRG_RXBUF; then the same port split', async () => {
    const sock = `${d.dir}/pk.sock`;
    const packed = new Testpmd([`net_virtio_user0,path=${sock},queues=2,packed_vq=1`], 'icmpecho', ['--rxq=2', '--txq=2', ...OFFLOADS]);
    const split = new Testpmd([`net_virtio_user0,path=${sock},queues=2`], 'icmpecho', ['--rxq=2', '--txq=2', ...OFFLOADS]);
    try {
      d.ok('add-port', 'br0', 'pk', 'type=vhost-user', `path=${sock}`, 'queues=2', 'mtu=9000', 'packed=on');
      await packed.start();
      for (const pattern of ['00', 'ff', '5aa5', 'deadbeef']) await pingUntil(c1, '10.86.0.9', ['-p', pattern, '-s', '1400']);
      const big = await pingUntil(c1, '10.86.0.9', ['-M', 'do', '-s', '8900', '-p', 'a5c3']).catch(async (e: Error) => {
        throw new Error(`${e.message}\npier: ${JSON.stringify(d.json('show', 'pk').port.peer)}\n${JSON.stringify(counters('pk'))}\ntestpmd: ${JSON.stringify(await packed.stats())}`);
      });
      assert.doesNotMatch(big, /wrong data|DUP!/, 'echoed contents intact');
      let peer = d.json('show', 'pk').port.peer;
      assert.equal(peer.ring, 'packed');
      assert.ok(peer.features.negotiated.includes('RING_PACKED'), `${peer.features.negotiated}`);
      assert.ok(peer.features.negotiated.includes('MRG_RXBUF'));
      assert.deepEqual(peer.queuePairs, { configured: 2, enabled: 2 });
      assert.ok(peer.vrings.length >= 4 && peer.vrings.every((v: { layout: string }) => v.layout === 'packed'), JSON.stringify(peer.vrings));
      assert.match(d.ok('show', 'pk'), /packed rings/);
      let s = counters('pk');
      assert.ok(s.rx_packets >= 10 && s.tx_packets >= 10, JSON.stringify(s));
      assert.equal(s.rx_errors, 0, 'no ring broke');
      assert.ok((await packed.stats())[0]!.rx >= 10, 'testpmd counted what pier sent');

      // The same port, a split driver next: the vrings start with the other layout.
      await packed.kill();
      await waitFor(() => d.json('show', 'pk').port.peer.connected === false, 5000, 'pier to see the packed testpmd gone');
      await split.start();
      await pingUntil(c1, '10.86.0.9', ['-M', 'do', '-s', '8900', '-p', '3c5a']);
      peer = d.json('show', 'pk').port.peer;
      assert.equal(peer.ring, 'split');
      assert.ok(!peer.features.negotiated.includes('RING_PACKED'));
      assert.ok(peer.vrings.every((v: { layout: string }) => v.layout === 'split'));
      s = counters('pk');
      assert.equal(s.rx_errors, 0);
      assert.equal(ping(c2, '10.86.0.2').code, 0, 'the other bridge carried on');
    } finally {
      await packed.kill();
      await split.kill();
      d.pier('del-port', 'br0', 'pk');
    }
  });

  it('a vhost-user port without packed=on does not offer packed rings: testpmd packed_vq=1 runs split on it', async () => {
    const sock = `${d.dir}/dflt.sock`;
    const tp = new Testpmd([`net_virtio_user0,path=${sock},queues=1,packed_vq=1`], 'icmpecho', OFFLOADS);
    try {
      d.ok('add-port', 'br0', 'dflt', 'type=vhost-user', `path=${sock}`);
      await tp.start();
      await pingUntil(c1, '10.86.0.9', ['-p', '5a']);
      const peer = d.json('show', 'dflt').port.peer;
      assert.equal(peer.ring, 'split');
      assert.ok(!peer.features.negotiated.includes('RING_PACKED'), `${peer.features.negotiated}`);
    } finally {
      await tp.kill();
      d.pier('del-port', 'br0', 'dflt');
    }
  });

  it('pier\'s virtio-user packed=on over testpmd net_vhost (testpmd listens): ping answered by icmpecho, contents checked', async () => {
    const sock = `${d.dir}/tpk.sock`;
    const t = new Testpmd([`net_vhost0,iface=${sock},queues=1`], 'icmpecho');
    try {
      const started = t.start();
      started.catch(() => undefined); // awaited below; a failure meanwhile is not unhandled
      await waitFor(() => existsSync(sock), 30_000, () => `testpmd to listen on ${sock}: ${t.log.slice(-2000)}`, 50);
      d.ok('add-port', 'br0', 'tpk', 'type=virtio-user', `path=${sock}`, 'packed=on', 'queue-size=256');
      await started;
      for (const pattern of ['feedface', '00', 'ff']) {
        const out = await pingUntil(c1, '10.86.0.7', ['-p', pattern, '-s', '1200']);
        assert.doesNotMatch(out, /wrong data|DUP!/);
      }
      const peer = d.json('show', 'tpk').port.peer;
      assert.equal(peer.link, 'up');
      assert.equal(peer.ring, 'packed', `DPDK's vhost offers RING_PACKED: ${peer.features.negotiated}`);
      assert.ok(peer.features.negotiated.includes('RING_PACKED'));
      assert.match(d.ok('show', 'tpk'), /packed rings/);
      // Enough round trips to go round a 256-entry ring more than once in each direction.
      for (let k = 0; k < 3; k++) assert.equal(ping(c1, '10.86.0.7', ['-c', '100', '-i', '0.002', '-s', '64']).code, 0);
      const s = counters('tpk');
      assert.ok(s.rx_packets > 300 && s.tx_packets > 300, JSON.stringify(s));
      assert.equal(s.rx_dropped_malformed, 0);
      assert.equal(d.json('show', 'tpk').port.peer.lastError, undefined, 'no ring broke');
    } finally {
      await t.kill();
      d.pier('del-port', 'br0', 'tpk');
    }
  });

  it('packed=on over /dev/vhost-net is refused with the reason', { skip: existsSync('/dev/vhost-net') ? undefined : 'no /dev/vhost-net on this host' }, () => {
    const r = d.pier('add-port', 'br0', 'vn', 'type=virtio-user', 'path=/dev/vhost-net', `netns=${c1}`, 'packed=on');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr + r.stdout, /vhost-net .*has no packed virtqueue/);
  });

  it('pier drives its own vhost-user port packed: TCP both ways between two bridges', requires(NEEDS.iperf3), async () => {
    try {
      d.ok('add-port', 'br0', 'dev', 'type=vhost-user', `path=${d.dir}/self.sock`, 'packed=on');
      d.ok('add-port', 'br1', 'drv', 'type=virtio-user', `path=${d.dir}/self.sock`, 'packed=on', 'queue-size=256');
      await pingUntil(c1, '10.86.0.2', ['-p', '1234abcd']);
      assert.equal(d.json('show', 'drv').port.peer.ring, 'packed');
      assert.equal(d.json('show', 'dev').port.peer.ring, 'packed');
      const up = await iperf(c2, c1, '10.86.0.2');
      const down = await iperf(c2, c1, '10.86.0.2', { reverse: true });
      assert.ok(up.bytes > 50e6 && down.bytes > 50e6, `${up.bytes} / ${down.bytes}`);
      const s = Object.fromEntries(d.json('stats').map((x: { port: string; counters: unknown }) => [x.port, x.counters])) as Record<string, Record<string, number>>;
      assert.equal(s.dev!.rx_errors, 0, 'the device side never broke');
      assert.equal(s.drv!.rx_dropped_malformed, 0);
      assert.equal(d.json('show', 'drv').port.peer.lastError, undefined, 'the driver side never broke');
      assert.ok(s.drv!.tx_gso_packets! > 0 && s.drv!.rx_gso_packets! > 0, 'super-frames cross the packed rings both ways');
    } finally {
      d.pier('del-port', 'br1', 'drv');
      d.pier('del-port', 'br0', 'dev');
    }
  });
});
