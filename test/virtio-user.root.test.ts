// virtio-user ports (pier as the virtio driver) over vhost-user, as root: against pier's own
// vhost-user port in the same daemon and against DPDK testpmd's net_vhost backend, both socket
// modes; and every class of `path` with its message.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { delNetns, icmpPair, iperf, makeNetns, must, NEEDS, ping, pingUntil, requires, sh, TestDaemon, waitFor } from './helpers.ts';
import { Testpmd } from './testpmd.ts';

/** Two source addresses in 10.81.0.20..99 for each of the pairs, by where pier hashes them. */
function sourcesPerPair(dst: string, pairs: number): string[][] {
  const out: string[][] = Array.from({ length: pairs }, () => []);
  for (let i = 20; i < 100; i++) {
    const a = `10.81.0.${i}`;
    const k = icmpPair(a, dst, pairs);
    if (out[k]!.length < 2) out[k]!.push(a);
  }
  assert.ok(out.every((l) => l.length === 2), `addresses for every pair: ${JSON.stringify(out)}`);
  return out;
}

/** Ping dst from each source address; every reply must come back with the pattern intact. */
async function pingFrom(ns: string, dst: string, sources: string[], count = 5): Promise<void> {
  const whole = (r: { code: number; stdout: string }): boolean => r.code === 0 && r.stdout.includes(`${count} received, 0% packet loss`);
  for (const src of sources) {
    // A first round may lose its first echo to ARP or to testpmd starting up; a later one may not.
    const round = (): { code: number; stdout: string; stderr: string } => ping(ns, dst, ['-c', String(count), '-I', src, '-p', 'a5c3e1f0', '-s', '1200']);
    let r = round();
    if (!whole(r)) await waitFor(() => whole((r = round())), 15_000, () => `a whole round of ${count} echoes to ${dst} from ${src}: ${r.stdout}${r.stderr}`, 300);
    assert.equal(r.code, 0, `ping ${dst} from ${src}: ${r.stdout}${r.stderr}`);
    assert.match(r.stdout, new RegExp(`${count} received, 0% packet loss`), r.stdout);
    assert.doesNotMatch(r.stdout, /wrong data|DUP!/, 'echoed contents intact');
  }
}

describe('virtio-user ports over vhost-user (root)', requires(NEEDS.tun, NEEDS.iperf3), () => {
  const d = new TestDaemon();
  let c1 = '';
  let c2 = '';
  before(async () => {
    [c1, c2] = makeNetns(2) as [string, string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${c1}`, 'ip=10.81.0.1/24');
    // A second bridge with a container, reached from br0 through a vhost-user/virtio-user pair.
    d.ok('add-br', 'br1');
    d.ok('add-port', 'br1', 'c2', 'type=tap', `netns=${c2}`, 'ip=10.81.0.2/24');
  });
  after(async () => {
    await d.cleanup();
    delNetns([c1, c2]);
  });

  /**
   * Start testpmd with a net_vhost vdev that listens on `sock` and wait for the socket; its
   * forwarding starts once pier connects: `started` (wrapped, or awaiting this would await it).
   */
  async function listeningTestpmd(t: Testpmd, sock: string): Promise<{ started: Promise<void> }> {
    const started = t.start();
    started.catch(() => undefined); // awaited by the caller; a failure meanwhile is not unhandled
    await waitFor(() => existsSync(sock), 30_000, () => `testpmd to listen on ${sock}: ${t.log.slice(-2000)}`, 50);
    return { started };
  }

  it('drives pier\'s own vhost-user port: ping and TCP both ways, TSO end to end, zero copies in the driver', async () => {
    try {
      d.ok('add-port', 'br0', 'vu', 'type=vhost-user', `path=${d.dir}/vu.sock`);
      d.ok('add-port', 'br1', 'vuc', 'type=virtio-user', `path=${d.dir}/vu.sock`, 'queue-size=256');
      await pingUntil(c1, '10.81.0.2', ['-p', '1234abcd']);
      const peer = d.json('show', 'vuc').port.peer;
      assert.equal(peer.link, 'up');
      for (const f of ['VERSION_1', 'MRG_RXBUF', 'HOST_TSO4', 'GUEST_TSO4', 'CSUM', 'GUEST_CSUM', 'EVENT_IDX']) assert.ok(peer.features.negotiated.includes(f), f);
      const up = await iperf(c2, c1, '10.81.0.2');
      const down = await iperf(c2, c1, '10.81.0.2', { reverse: true });
      assert.ok(up.bytes > 50e6 && down.bytes > 50e6);
      const s = Object.fromEntries(d.json('stats').map((x: any) => [x.port, x.counters]));
      assert.ok(s.vuc.tx_gso_packets > 0 && s.vuc.rx_gso_packets > 0, 'super-frames cross the rings both ways');
      assert.equal(s.c2.tx_segmented + s.c1.tx_segmented, 0);
      // Once traffic stops, housekeeping gives the pool back what the backend has sent, and every
      // buffer is either free or posted on the receive ring: none leaked, none held.
      const quiet = (): { show: any; vuc: any } => {
        const show = d.json('show');
        return { show, vuc: show.bridges.flatMap((b: any) => b.ports).find((p: any) => p.name === 'vuc').peer };
      };
      await waitFor(() => {
        const q = quiet();
        return q.vuc.txInFlight === 0 && q.show.dataplane.available + q.vuc.rxPosted === q.show.dataplane.size;
      }, 5000, () => `housekeeping to give the sent buffers back: ${JSON.stringify(quiet().show.dataplane)}, vuc ${JSON.stringify(quiet().vuc)}`, 50);
      assert.equal(quiet().vuc.rxPostLimit, 256, 'the whole 256-entry ring (a port may post an eighth of the 4096-buffer pool: 512)');
    } finally {
      d.pier('del-port', 'br1', 'vuc');
      d.pier('del-port', 'br0', 'vu');
    }
  });

  it('against DPDK testpmd net_vhost (testpmd listens): ping answered by icmpecho, contents checked', requires(NEEDS.testpmd), async () => {
    const sock = `${d.dir}/tp.sock`;
    const t = new Testpmd([`net_vhost0,iface=${sock},queues=1`], 'icmpecho');
    try {
      const { started } = await listeningTestpmd(t, sock);
      d.ok('add-port', 'br0', 'tp', 'type=virtio-user', `path=${sock}`);
      await started;
      await pingUntil(c1, '10.81.0.9', ['-p', 'feedface', '-s', '1200']);
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

  it('counts its receive ring running empty when testpmd (txonly) sends faster than pier refills a 64-entry ring', requires(NEEDS.testpmd), async () => {
    const sock = `${d.dir}/tx.sock`;
    const t = new Testpmd([`net_vhost0,iface=${sock},queues=1`], 'txonly', ['--txpkts=128']);
    try {
      const { started } = await listeningTestpmd(t, sock);
      d.ok('add-port', 'br0', 'tx', 'type=virtio-user', `path=${sock}`, 'queue-size=64');
      await started;
      const counters = (): any => d.json('stats', 'tx')[0].counters;
      await waitFor(() => counters().rx_packets > 1000 && counters().rx_ring_empty > 0, 20_000, () => `over 1000 frames received and the ring run empty: ${JSON.stringify(counters())}`, 100);
      const c = counters();
      assert.ok(c.rx_buffers_posted >= c.rx_packets, `every received frame was in a posted buffer: ${c.rx_buffers_posted} >= ${c.rx_packets}`);
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

  it('queues=2 against DPDK testpmd net_vhost queues=2: flows spread over both pairs, echoed on the pair they came in on, contents checked', requires(NEEDS.testpmd), async () => {
    const sock = `${d.dir}/mq.sock`;
    const t = new Testpmd([`net_vhost0,iface=${sock},queues=2`], 'icmpecho', ['--rxq=2', '--txq=2']);
    const per = sourcesPerPair('10.81.0.9', 2);
    const all = per.flat();
    try {
      const { started } = await listeningTestpmd(t, sock);
      for (const a of all) must('ip', ['-n', c1, 'addr', 'add', `${a}/24`, 'dev', 'c1']);
      d.ok('add-port', 'br0', 'mq', 'type=virtio-user', `path=${sock}`, 'queues=2', 'queue-size=256');
      await started;
      await pingUntil(c1, '10.81.0.9');
      await pingFrom(c1, '10.81.0.9', all);
      const peer = d.json('show', 'mq').port.peer;
      assert.equal(peer.link, 'up');
      assert.equal(peer.queuePairs, 2);
      assert.ok(peer.backendQueuePairs >= 2, `GET_QUEUE_NUM: ${peer.backendQueuePairs}`);
      assert.ok(peer.features.negotiated.includes('MQ'));
      assert.ok(!peer.features.negotiated.includes('CTRL_VQ'), 'pier enables pairs with SET_VRING_ENABLE, as DPDK virtio-user does');
      // 2 sources x 5 pings hashed to each pair: pier sent at least 10 on each and got the echoes back there.
      for (const p of peer.pairs) {
        assert.ok(p.txPackets >= 10, `pair ${p.pair} sent ${p.txPackets}`);
        assert.ok(p.rxPackets >= 10, `pair ${p.pair} received ${p.rxPackets}`);
      }
      // DPDK's own per-queue counters agree: both of its rx queues got packets.
      const x = await t.ask('show port xstats 0', (o) => /rx_q0_packets: \d+\n/.test(o) && /rx_q1_packets: \d+\n/.test(o));
      for (const q of [0, 1]) {
        const m = x.match(new RegExp(`rx_q${q}_packets: (\\d+)`));
        assert.ok(m && Number(m[1]) >= 10, `testpmd rx_q${q}_packets: ${m?.[1]}`);
      }
      assert.match(d.ok('show', 'mq'), /queue pairs 2 \(backend has \d+\)[\s\S]*pair 0: rx [1-9]\d* packets[\s\S]*pair 1: rx [1-9]\d* packets/);
    } finally {
      await t.kill();
      d.pier('del-port', 'br0', 'mq');
      for (const a of all) sh('ip', ['-n', c1, 'addr', 'del', `${a}/24`, 'dev', 'c1']);
    }
  });

  it('queues=N beyond the backend: refused with the reason (no MQ offered; GET_QUEUE_NUM too small), link down', async () => {
    const refusal = (port: string): Promise<any> => waitFor(() => {
      const peer = d.json('show', port).port.peer;
      return peer.lastError ? peer : undefined;
    }, 5000, () => `an error on ${port}: ${JSON.stringify(d.json('show', port).port.peer)}`, 50);
    try {
      d.ok('add-port', 'br0', 'vq1', 'type=vhost-user', `path=${d.dir}/vq1.sock`);
      d.ok('add-port', 'br1', 'vqc1', 'type=virtio-user', `path=${d.dir}/vq1.sock`, 'queues=2');
      const p1 = await refusal('vqc1');
      assert.equal(p1.link, 'down');
      assert.match(p1.lastError, /refused: queues=2 needs VIRTIO_NET_F_MQ and the backend does not offer it: use queues=1/);
      d.ok('add-port', 'br0', 'vq2', 'type=vhost-user', `path=${d.dir}/vq2.sock`, 'queues=2');
      d.ok('add-port', 'br1', 'vqc4', 'type=virtio-user', `path=${d.dir}/vq2.sock`, 'queues=4');
      const p4 = await refusal('vqc4');
      assert.equal(p4.link, 'down');
      assert.match(p4.lastError, /refused: the backend has 2 queue pair\(s\) \(GET_QUEUE_NUM\) and queues=4 asks for more: use queues=2/);
      assert.match(d.ok('show', 'vqc4'), /last error: refused: the backend has 2 queue pair/);
    } finally {
      for (const [br, p] of [['br1', 'vqc1'], ['br1', 'vqc4'], ['br0', 'vq1'], ['br0', 'vq2']]) d.pier('del-port', br!, p!);
    }
  });

  it('queues=2 against pier\'s own vhost-user port with queues=2: both pairs both ways, iperf3 -P 4 both directions', async () => {
    const per = sourcesPerPair('10.81.0.1', 2);
    const all = per.flat();
    try {
      for (const a of all) must('ip', ['-n', c2, 'addr', 'add', `${a}/24`, 'dev', 'c2']);
      d.ok('add-port', 'br0', 'vu2', 'type=vhost-user', `path=${d.dir}/vu2.sock`, 'queues=2');
      d.ok('add-port', 'br1', 'vuc2', 'type=virtio-user', `path=${d.dir}/vu2.sock`, 'queues=2', 'queue-size=256');
      await pingUntil(c2, '10.81.0.1');
      await pingFrom(c2, '10.81.0.1', all);
      const vu = d.json('show', 'vu2').port.peer;
      assert.deepEqual(vu.queuePairs, { configured: 2, enabled: 2 }, 'pier\'s device side sees both pairs enabled');
      const peer = d.json('show', 'vuc2').port.peer;
      assert.ok(peer.features.negotiated.includes('MQ'));
      assert.equal(peer.backendQueuePairs, 2);
      for (const p of peer.pairs) {
        assert.ok(p.txPackets >= 10, `pair ${p.pair} sent ${p.txPackets}`);
        assert.ok(p.rxPackets > 0, `pair ${p.pair} received ${p.rxPackets}`);
      }
      const up = await iperf(c1, c2, '10.81.0.1', { parallel: 4 });
      const down = await iperf(c1, c2, '10.81.0.1', { parallel: 4, reverse: true });
      assert.ok(up.bytes > 50e6 && down.bytes > 50e6, `iperf3 -P 4: ${up.bytes} / ${down.bytes} bytes`);
      const s = d.json('stats', 'vuc2')[0].counters;
      assert.ok(s.tx_gso_packets > 0 && s.rx_gso_packets > 0, 'super-frames cross both ways');
    } finally {
      d.pier('del-port', 'br1', 'vuc2');
      d.pier('del-port', 'br0', 'vu2');
      for (const a of all) sh('ip', ['-n', c2, 'addr', 'del', `${a}/24`, 'dev', 'c2']);
    }
  });

  it('server=true: pier listens and testpmd net_vhost connects (client=1)', requires(NEEDS.testpmd), async () => {
    const sock = `${d.dir}/tps.sock`;
    const t = new Testpmd([`net_vhost0,iface=${sock},queues=1,client=1`], 'icmpecho');
    try {
      d.ok('add-port', 'br0', 'tps', 'type=virtio-user', `path=${sock}`, 'server=true');
      await t.start();
      await pingUntil(c1, '10.81.0.9');
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
