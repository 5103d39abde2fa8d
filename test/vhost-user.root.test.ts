// vhost-user ports against the reference peer, DPDK testpmd (virtio-user), as root: a kernel
// container on a tap port pings testpmd in icmpecho mode through pier; a testpmd forwards between
// two pier bridges to another testpmd; both socket modes; offloads and two queue pairs
// negotiated; MTU 9000; the peer killed with SIGKILL and restarted.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { delNetns, makeNetns, NEEDS, ping, pingUntil, requires, TestDaemon, waitFor } from './helpers.ts';
import { Testpmd } from './testpmd.ts';

// testpmd asks virtio-user for checksum and TSO offloads (rx: TCP/UDP csum, LRO, scatter; tx:
// TCP/UDP csum, TSO, multi-segment), so the virtio features pier offers are really negotiated.
const OFFLOADS = ['--rx-offloads=0x201c', '--tx-offloads=0x802c', '--max-pkt-len=9018'];

function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function memfdMappings(pid: number): number {
  return readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes('/memfd:')).length;
}

describe('vhost-user ports with DPDK testpmd (root)', requires(NEEDS.tun, NEEDS.testpmd), () => {
  const d = new TestDaemon();
  let c1 = '';
  let c2 = '';

  before(async () => {
    [c1, c2] = makeNetns(2) as [string, string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${c1}`, 'ip=10.79.0.1/24', 'mtu=9000');
    // A second container, to show the other ports carry on while a peer comes and goes.
    d.ok('add-port', 'br0', 'c2', 'type=tap', `netns=${c2}`, 'ip=10.79.0.3/24', 'mtu=9000');
  });

  after(async () => {
    await d.cleanup();
    delNetns([c1, c2]);
  });

  /** Kill the testpmds, delete the ports and bridges a test made (each may not exist). */
  async function cleanup(peers: Testpmd[], ports: Array<[string, string]>, bridges: string[] = []): Promise<void> {
    for (const p of peers) await p.kill();
    for (const [br, port] of ports) d.pier('del-port', br, port);
    for (const br of bridges) d.pier('del-br', br);
  }

  it('server mode: a container pings testpmd (icmpecho) with offloads, two queue pairs and MTU 9000', async () => {
    const t = new Testpmd([`net_virtio_user0,path=${d.dir}/app1.sock,queues=2`], 'icmpecho', ['--rxq=2', '--txq=2', ...OFFLOADS]);
    try {
      d.ok('add-port', 'br0', 'app1', 'type=vhost-user', `path=${d.dir}/app1.sock`, 'queues=2', 'mtu=9000');
      await t.start();
      const out = await pingUntil(c1, '10.79.0.2', ['-p', 'a5c3']); // ping checks the echoed pattern
      assert.match(out, /2 received/);
      await pingUntil(c1, '10.79.0.2', ['-M', 'do', '-s', '8900']);
      const peer = d.json('show', 'app1').port.peer;
      assert.equal(peer.connected, true);
      assert.equal(peer.link, 'up');
      for (const f of ['VERSION_1', 'MRG_RXBUF', 'CSUM', 'GUEST_CSUM', 'HOST_TSO4', 'HOST_TSO6', 'GUEST_TSO4', 'GUEST_TSO6', 'MQ']) {
        assert.ok(peer.features.negotiated.includes(f), `${f} not negotiated: ${peer.features.negotiated}`);
      }
      assert.deepEqual(peer.queuePairs, { configured: 2, enabled: 2 });
      const s = d.json('stats', 'app1')[0].counters;
      assert.ok(s.rx_packets > 0 && s.tx_packets > 0);
      assert.match(d.ok('show', 'app1'), /type=vhost-user/);
    } finally {
      await cleanup([t], [['br0', 'app1']]);
    }
  });

  it('set-port busy-poll= on a running port is applied in place: the peer\'s session goes on, and it keeps answering', async () => {
    const t = new Testpmd([`net_virtio_user0,path=${d.dir}/bp.sock`], 'icmpecho');
    try {
      d.ok('add-port', 'br0', 'bp', 'type=vhost-user', `path=${d.dir}/bp.sock`);
      await t.start();
      await pingUntil(c1, '10.79.0.2');
      for (const mode of ['on', 'off', 'on']) {
        assert.equal(d.ok('set-port', 'bp', `busy-poll=${mode}`).trim(), '', 'set-port said something although nothing ended');
        const v = d.json('show', 'bp').port;
        assert.equal(v.options['busy-poll'], mode === 'on');
        assert.equal(v.peer.connected, true, `busy-poll=${mode}: the peer is still connected`);
        assert.deepEqual([v.peer.connects, v.peer.disconnects], [1, 0], `busy-poll=${mode}: the same session (no reconnect)`);
        const out = ping(c1, '10.79.0.2');
        assert.match(out.stdout, / 3 received/, `busy-poll=${mode}: ${out.stdout}`);
      }
    } finally {
      await cleanup([t], [['br0', 'bp']]);
    }
  });

  it('set-port of a key that makes the device again says the frontend\'s session ended, and the events show it', async () => {
    const t = new Testpmd([`net_virtio_user0,path=${d.dir}/rb.sock`], 'icmpecho');
    try {
      d.ok('add-port', 'br0', 'rb', 'type=vhost-user', `path=${d.dir}/rb.sock`);
      await t.start();
      await pingUntil(c1, '10.79.0.2');
      const out = d.ok('set-port', 'rb', 'mtu=4000');
      assert.match(out, /^rb: the device was made again to apply this, which ended its frontend's session/);
      assert.equal(d.json('show', 'rb').port.options.mtu, 4000);
      await waitFor(() => d.events().some((e) => e.type === 'peer-disconnected' && e.port === 'rb'), 5000, 'a peer-disconnected event for rb');
      assert.ok(d.events().some((e) => e.type === 'port-changed' && e.port === 'rb' && /made again/.test(e.detail ?? '')), 'the port-changed event says the device was made again');
    } finally {
      await cleanup([t], [['br0', 'rb']]);
    }
  });

  it('a testpmd forwards through pier to another testpmd, contents intact', async () => {
    // c1 -> br0 -> fwd port 0 -> testpmd io -> fwd port 1 -> br1 -> echo (testpmd icmpecho) and back
    const echo = new Testpmd([`net_virtio_user0,path=${d.dir}/echo.sock`], 'icmpecho');
    const fwd = new Testpmd([`net_virtio_user0,path=${d.dir}/fwd0.sock`, `net_virtio_user1,path=${d.dir}/fwd1.sock`], 'io');
    try {
      d.ok('add-br', 'br1');
      d.ok('add-port', 'br0', 'fwd0', 'type=vhost-user', `path=${d.dir}/fwd0.sock`);
      d.ok('add-port', 'br1', 'fwd1', 'type=vhost-user', `path=${d.dir}/fwd1.sock`);
      d.ok('add-port', 'br1', 'echo', 'type=vhost-user', `path=${d.dir}/echo.sock`);
      await echo.start();
      await fwd.start();
      for (const pattern of ['00', 'ff', '5aa5', 'deadbeef']) await pingUntil(c1, '10.79.0.2', ['-p', pattern, '-s', '1400']);
      const stats = Object.fromEntries(d.json('stats').map((s: any) => [s.port, s.counters]));
      assert.ok(stats.fwd1.rx_packets > 0 && stats.echo.tx_packets > 0 && stats.echo.rx_packets > 0);
    } finally {
      await cleanup([fwd, echo], [['br0', 'fwd0']], ['br1']);
    }
  });

  it('client mode: pier connects to testpmd (server=1), and reconnects after testpmd is killed', async () => {
    const sock = `${d.dir}/vm1.sock`;
    const mk = (): Testpmd => new Testpmd([`net_virtio_user0,path=${sock},server=1,queues=1`], 'icmpecho', OFFLOADS);
    const peers = [mk()];
    try {
      const started = peers[0]!.start(); // testpmd waits for pier to connect before it starts forwarding
      started.catch(() => undefined); // awaited below; a failure meanwhile is not unhandled
      await waitFor(() => existsSync(sock), 30_000, `testpmd to listen on ${sock}`);
      d.ok('add-port', 'br0', 'vm1', 'type=vhost-user-client', `path=${sock}`);
      await started;
      await pingUntil(c1, '10.79.0.2', ['-p', 'c0ffee']);
      assert.equal(d.json('show', 'vm1').port.peer.mode, 'client');
      // The other container keeps talking to the first while the peer is away.
      await peers[0]!.kill();
      assert.equal(ping(c1, '10.79.0.3').code, 0, 'other ports are unaffected');
      // A killed testpmd leaves its socket file behind and refuses to bind over it next time.
      rmSync(sock, { force: true });
      peers.push(mk());
      await peers[1]!.start();
      await pingUntil(c1, '10.79.0.2');
      const peer = d.json('show', 'vm1').port.peer;
      assert.ok(peer.connects >= 2, `connects ${peer.connects}`);
    } finally {
      await cleanup(peers, [['br0', 'vm1']]);
    }
  });

  it('server mode: testpmd killed with SIGKILL and restarted, traffic resumes, no fd or mapping leaks', async () => {
    const mk = (): Testpmd => new Testpmd([`net_virtio_user0,path=${d.dir}/app2.sock`], 'icmpecho');
    const peers: Testpmd[] = [];
    try {
      d.ok('add-port', 'br0', 'app2', 'type=vhost-user', `path=${d.dir}/app2.sock`);
      const pid = d.json('show').pid as number;
      let fds0 = -1;
      let maps0 = -1;
      for (let round = 0; round < 3; round++) {
        const t = mk();
        peers.push(t);
        await t.start();
        await pingUntil(c1, '10.79.0.2');
        assert.equal(ping(c1, '10.79.0.3').code, 0, 'the tap ports are unaffected');
        await t.kill();
        await waitFor(() => d.json('show', 'app2').port.peer.connected === false, 5000, 'pier to see the killed testpmd gone');
        if (round === 0) {
          fds0 = openFds(pid);
          maps0 = memfdMappings(pid);
        } else {
          // A leak never settles back: wait for the count of the first round, not a fixed time.
          await waitFor(() => openFds(pid) === fds0, 5000, () => `open fds back to ${fds0} (now ${openFds(pid)}): they grow with reconnects`);
          await waitFor(() => memfdMappings(pid) === maps0, 5000, () => `memfd mappings back to ${maps0} (now ${memfdMappings(pid)}): they grow with reconnects`);
        }
      }
      assert.equal(d.json('show', 'app2').port.peer.disconnects, 3);
    } finally {
      await cleanup(peers, [['br0', 'app2']]);
    }
  });
});
