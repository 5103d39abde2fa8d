// More than one dataplane thread, as root (issue 13, docs/design/threads.md): a daemon with two
// threads, four containers on tap ports, two per thread; traffic within a thread and across the
// link between them (ping, a broadcast every container answers once, iperf3 both ways); the FDB
// shown once per station on its real port; a port moved between threads while its container
// talks; a vhost-user port (pier the client of testpmd) moved, its session made again there; VLANs kept apart across threads; a capture over two threads refused with the fix; the
// assignment kept across a daemon restart.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { existsSync, rmSync } from 'node:fs';
import { delNetns, iperf, makeNetns, NEEDS, nsExec, ping, pingUntil, requires, TestDaemon, waitFor } from './helpers.ts';
import { Testpmd } from './testpmd.ts';

interface Link { thread: number; peer: number; tx_packets: number; rx_packets: number; tx_dropped_full: number; waiting: number }

describe('dataplane threads (root)', requires(NEEDS.tun, NEEDS.iperf3), () => {
  const d = new TestDaemon();
  let ns: string[] = [];
  const ip = (i: number): string => `10.71.0.${i + 1}`;
  const threadOf = (port: string): number | undefined => d.json('show', port).port.thread;
  const links = (): Link[] => d.json('show').dataplane.links;

  before(async () => {
    await d.start(['--dataplane-threads', '2', '--pool', '512']);
    ns = makeNetns(4);
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c0', 'type=tap', `netns=${ns[0]}`, `ip=${ip(0)}/24`, 'thread=0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${ns[1]}`, `ip=${ip(1)}/24`, 'thread=1');
    // No thread=: each goes to the thread with the fewest ports.
    d.ok('add-port', 'br0', 'c2', 'type=tap', `netns=${ns[2]}`, `ip=${ip(2)}/24`);
    d.ok('add-port', 'br0', 'c3', 'type=tap', `netns=${ns[3]}`, `ip=${ip(3)}/24`);
    for (const n of ns) nsExec(n, 'sysctl', ['-qw', 'net.ipv4.icmp_echo_ignore_broadcasts=0']);
  });

  after(async () => {
    await d.cleanup();
    delNetns(ns);
  });

  it('places ports on threads and says where', () => {
    const show = d.json('show');
    assert.equal(show.dataplane.threads.length, 2);
    assert.deepEqual(show.dataplane.threads.map((t: { ports: number }) => t.ports), [2, 2]);
    assert.equal(threadOf('c0'), 0);
    assert.equal(threadOf('c1'), 1);
    assert.notEqual(threadOf('c2'), threadOf('c3'));
    assert.match(d.ok('show', 'c1'), /dataplane thread 1/);
    // One link each way for the bridge.
    assert.deepEqual(links().map((l) => [l.thread, l.peer]).sort(), [[0, 1], [1, 0]]);
  });

  it('forwards within a thread and across the link', async () => {
    const same = ns[threadOf('c2') === 0 ? 2 : 3]!;
    const sameIp = ip(threadOf('c2') === 0 ? 2 : 3);
    await pingUntil(ns[0]!, sameIp);
    await pingUntil(ns[0]!, ip(1));
    await pingUntil(ns[1]!, sameIp);
    await pingUntil(same, ip(1));
    const l = links();
    assert.ok(l.every((x) => x.tx_packets > 0 && x.rx_packets > 0), JSON.stringify(l));
  });

  it('floods a broadcast to every container once, never round the links', () => {
    // ping stops at its count of first answers: the last request's others may not be in.
    const r = nsExec(ns[0]!, 'ping', ['-b', '-c', '3', '-i', '0.3', '-w', '5', '10.71.0.255']);
    const replies = r.stdout.split('\n').filter((x) => x.includes('bytes from') && !x.includes(`from ${ip(0)}:`));
    // Three answers per request, one from each other container: a frame looping between the
    // threads would come back as more.
    for (const seq of [1, 2]) {
      const from = replies.filter((x) => x.includes(`icmp_seq=${seq} `)).map((x) => /from ([\d.]+)/.exec(x)![1]).sort();
      assert.deepEqual(from, [ip(1), ip(2), ip(3)], r.stdout);
    }
  });

  it('shows each station once, on its own port', () => {
    const fdb = d.json<Array<{ mac: string; port: string }>>('fdb', 'br0');
    const macs = fdb.map((e) => e.mac);
    assert.equal(new Set(macs).size, macs.length, JSON.stringify(fdb));
    assert.deepEqual([...new Set(fdb.map((e) => e.port))].sort(), ['c0', 'c1', 'c2', 'c3']);
  });

  it('carries TCP across threads both ways', async () => {
    const before = links();
    const there = await iperf(ns[1]!, ns[0]!, ip(1), { seconds: 2 });
    const back = await iperf(ns[1]!, ns[0]!, ip(1), { seconds: 2, reverse: true });
    assert.ok(there.bytes > 50e6 && back.bytes > 50e6, `${there.gbps} / ${back.gbps} Gbit/s`);
    const now = links();
    assert.ok(now.every((l, i) => l.tx_packets > before[i]!.tx_packets));
    // Nothing left behind on a ring once the flows end.
    await waitFor(() => links().every((l) => l.waiting === 0), 5000, 'the links to drain');
  });

  it('moves a vhost-user port to the other thread: its session is made again there and the peer answers', requires(NEEDS.testpmd), async () => {
    // pier as the vhost-user client of testpmd (net_virtio_user server=1, icmpecho: answers ARP
    // and pings for any address), so pier reconnects after the move, as it would to QEMU's server.
    const sock = `${d.dir}/vm-move.sock`;
    const t = new Testpmd([`net_virtio_user0,path=${sock},server=1,queues=1`], 'icmpecho');
    try {
      const started = t.start(); // testpmd waits for pier before it forwards
      started.catch(() => undefined); // awaited below
      await waitFor(() => existsSync(sock), 30_000, `testpmd to listen on ${sock}`);
      d.ok('add-port', 'br0', 'vm', 'type=vhost-user-client', `path=${sock}`, 'thread=1');
      await started;
      await pingUntil(ns[0]!, '10.71.0.99', [], 15_000);
      d.ok('set-port', 'vm', 'thread=0');
      assert.equal(threadOf('vm'), 0);
      // A fresh address: its ARP and pings can only be answered through thread 0's new session.
      await pingUntil(ns[0]!, '10.71.0.98', [], 20_000);
      assert.equal(threadOf('vm'), 0);
      const [port0] = await t.stats();
      assert.ok(port0!.rx > 0 && port0!.tx > 0, `testpmd moved no packets: ${JSON.stringify(port0)}`);
    } finally {
      d.pier('del-port', 'br0', 'vm');
      await t.kill();
      rmSync(sock, { force: true });
    }
  });

  it('moves a port to the other thread while its container talks', async () => {
    // c1's station is known on thread 0 as "behind the link"; after the move it is local there.
    d.ok('set-port', 'c1', 'thread=0');
    assert.equal(threadOf('c1'), 0);
    await pingUntil(ns[0]!, ip(1), [], 10_000);
    const r = ping(ns[1]!, ip(3));
    assert.equal(r.code, 0, r.stdout);
    d.ok('set-port', 'c1', 'thread=1');
    await pingUntil(ns[0]!, ip(1), [], 10_000);
  });

  it('refuses a thread the daemon does not run, and changes nothing', () => {
    const r = d.pier('set-port', 'c1', 'thread=2');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /runs 2 dataplane threads/);
    assert.match(r.stderr, /--dataplane-threads 3/);
    assert.equal(threadOf('c1'), 1);
    assert.equal(d.json('show', 'c1').port.options.thread, 1);
    const a = d.pier('add-port', 'br0', 'c9', 'type=tap', 'thread=7');
    assert.notEqual(a.code, 0);
    assert.equal(d.pier('show', 'c9').code === 0, false);
  });

  it('keeps VLANs apart across threads', async () => {
    const t3 = threadOf('c3')!;
    // c0 (thread 0) and c1 (thread 1) in VLAN 10; c3 stays untagged (VLAN 0).
    d.ok('set-port', 'c0', 'tag=10');
    d.ok('set-port', 'c1', 'tag=10');
    await pingUntil(ns[0]!, ip(1), [], 10_000);
    nsExec(ns[0]!, 'ip', ['neigh', 'flush', 'all']);
    assert.notEqual(ping(ns[0]!, ip(3), ['-c', '2']).code, 0, `VLAN 10 reached VLAN 0 on thread ${t3}`);
    d.ok('set-port', 'c0', 'tag=');
    d.ok('set-port', 'c1', 'tag=');
    await pingUntil(ns[0]!, ip(3), [], 10_000);
    await pingUntil(ns[0]!, ip(1), [], 10_000);
  });

  it('refuses a capture over two threads, with the fix', () => {
    const r = d.pier('capture', 'c0', 'c1', '-c', '1');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /run on dataplane threads 0 and 1/);
    assert.match(r.stderr, /pier set-port c1 thread=0/);
  });

  it('keeps each port on its thread across a restart', async () => {
    const was = ['c0', 'c1', 'c2', 'c3'].map(threadOf);
    await d.stop();
    await d.start(['--dataplane-threads', '2', '--pool', '512']);
    assert.deepEqual(['c0', 'c1'].map(threadOf), [0, 1]);
    assert.deepEqual(['c0', 'c1', 'c2', 'c3'].map(threadOf).sort(), was.sort());
    await pingUntil(ns[0]!, ip(1));
  });
});
