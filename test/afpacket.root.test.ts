// End to end, as root: two hosts (namespaces, each with its own pier) joined by a veth wire, an
// afpacket uplink on each end of the wire, a container on a tap port of each pier. Containers
// reach each other across the wire: ping, the MTU edge, iperf3 both ways with TSO super-frames
// crossing the uplinks unsegmented; promiscuous mode while attached; the wire deleted and made
// again, and the uplinks coming back by themselves.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { iperf, must, NEEDS, PIER, ping, pingUntil, requires, waitFor } from './helpers.ts';
import { TwoHosts, WIRE } from './two-hosts.ts';

interface Counters { [k: string]: number }
interface Stats { port: string; state: string; counters: Counters; kernel?: Record<string, number | string> }

// Everything with the default paths (recvmmsg into pool buffers, sendmmsg out of them); the core
// again with the TPACKET_V3 rx and tx rings, which PIER_AFPACKET_RX=ring and PIER_AFPACKET_TX=ring
// select for measuring.
uplinks('recvmmsg');
uplinks('ring');

function uplinks(mode: 'recvmmsg' | 'ring'): void {
const full = mode === 'recvmmsg';
const title = full ? 'afpacket uplinks between two hosts (root)' : 'afpacket uplinks with the TPACKET_V3 rings, PIER_AFPACKET_RX=ring PIER_AFPACKET_TX=ring (root)';
describe(title, requires(NEEDS.tun, NEEDS.iperf3), () => {
  const lab = new TwoHosts();
  let ca = '';
  let cb = '';

  const stats = (h: 'a' | 'b', port: string): Stats => lab[h].pier.json<Stats[]>('stats', port)[0]!;

  before(async () => {
    // The daemons read it when they start.
    if (mode === 'ring') process.env.PIER_AFPACKET_RX = process.env.PIER_AFPACKET_TX = 'ring';
    try {
      await lab.setup();
    } finally {
      delete process.env.PIER_AFPACKET_RX;
      delete process.env.PIER_AFPACKET_TX;
    }
    ca = lab.container(lab.a, 'c1', '10.81.0.1/24');
    cb = lab.container(lab.b, 'c2', '10.81.0.2/24');
    lab.a.pier.ok('add-port', 'br0', 'up0', 'type=afpacket', `dev=${WIRE}`);
    lab.b.pier.ok('add-port', 'br0', 'up0', 'type=afpacket', `dev=${WIRE}`);
  });

  after(async () => {
    await lab.cleanup();
  });

  it('pings across the wire both ways', async () => {
    await pingUntil(ca, '10.81.0.2', [], 15_000);
    assert.equal(ping(ca, '10.81.0.2').code, 0);
    assert.equal(ping(cb, '10.81.0.1').code, 0);
    const s = stats('a', 'up0');
    assert.ok(s.counters.rx_packets! > 0 && s.counters.tx_packets! > 0, JSON.stringify(s.counters));
  });

  it('carries 1500-byte packets unfragmented and no more (ping -M do -s 1472 / 1473)', () => {
    const ok = ping(ca, '10.81.0.2', ['-M', 'do', '-s', '1472']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /1480 bytes from 10\.81\.0\.2/);
    const big = ping(ca, '10.81.0.2', ['-M', 'do', '-s', '1473', '-c', '1']);
    assert.notEqual(big.code, 0, big.stdout);
  });

  it('carries TCP both ways (iperf3), TSO super-frames crossing the uplinks unsegmented', async (t) => {
    const a0 = stats('a', 'up0').counters;
    const b0 = stats('b', 'up0').counters;
    const up = await iperf(cb, ca, '10.81.0.2');
    const down = await iperf(cb, ca, '10.81.0.2', { reverse: true });
    t.diagnostic(`a->b ${up.gbps.toFixed(2)} Gbit/s (${up.retransmits} retransmits), b->a ${down.gbps.toFixed(2)} Gbit/s (${down.retransmits} retransmits)`);
    assert.ok(up.bytes > 20e6, `a->b moved only ${up.bytes} bytes`);
    assert.ok(down.bytes > 20e6, `b->a moved only ${down.bytes} bytes`);
    const a1 = stats('a', 'up0').counters;
    const b1 = stats('b', 'up0').counters;
    assert.ok(a1.tx_gso_packets! - a0.tx_gso_packets! > 0, 'host a sent no super-frame on its uplink');
    assert.ok(b1.rx_gso_packets! - b0.rx_gso_packets! > 0, 'host b received no super-frame on its uplink');
    assert.ok(b1.tx_gso_packets! - b0.tx_gso_packets! > 0, 'host b sent no super-frame on its uplink');
    assert.ok(a1.rx_gso_packets! - a0.rx_gso_packets! > 0, 'host a received no super-frame on its uplink');
    assert.equal(a1.tx_segmented, 0, 'nothing segmented in software with offloads on');
    assert.equal(a1.rx_dropped_malformed, 0);
  });

  it('shows the device and the kernel\'s counters of the socket', () => {
    const show = lab.a.pier.json<{ port: { state: string; ifname: string; kernel: Record<string, number | string>; peer: { dev: string; rx: { mode: string; retired: number; badBlocks: number; truncated: number }; tx: { mode: string; kicks: number; kickErrors: number; full: number } } } }>('show', 'up0');
    assert.equal(show.port.state, 'up');
    assert.equal(show.port.ifname, WIRE);
    assert.equal(show.port.kernel.operstate, 'UP');
    assert.equal(show.port.peer.dev, WIRE);
    assert.equal(show.port.peer.rx.mode, mode);
    if (mode === 'ring') assert.ok(show.port.peer.rx.retired > 0);
    else assert.equal(show.port.peer.rx.retired, 0, 'no ring to walk');
    assert.equal(show.port.peer.rx.badBlocks, 0);
    assert.equal(show.port.peer.rx.truncated, 0);
    assert.match(lab.a.pier.ok('show', 'up0'), mode === 'ring' ? /rx ring: 32 blocks of 256 KiB/ : /rx: recvmmsg into pool buffers/);
    assert.equal(show.port.peer.tx.mode, mode === 'ring' ? 'ring' : 'sendmmsg');
    assert.ok(show.port.peer.tx.kicks > 0, 'frames were sent');
    assert.equal(show.port.peer.tx.kickErrors, 0);
    assert.equal(show.port.peer.tx.full, 0);
    assert.match(lab.a.pier.ok('show', 'up0'), mode === 'ring' ? /tx ring: 96 frames of 87376 bytes/ : /tx: sendmmsg from pool buffers/);
    const s = stats('a', 'up0');
    assert.equal(typeof s.kernel?.tp_drops, 'number');
    assert.ok(Number(s.kernel?.tp_packets) > 0, 'PACKET_STATISTICS accumulated across reads');
    assert.match(lab.a.pier.ok('show', 'up0'), /AF_PACKET on wire0/);
  });

  if (full) it('pier doctor reports AF_PACKET sockets', () => {
    const fs = JSON.parse(must('ip', ['netns', 'exec', lab.a.ns, PIER, 'doctor', '--json', '--socket', lab.a.pier.socket])) as Array<{ check: string; level: string; detail: string }>;
    const f = fs.find((x) => x.check === 'AF_PACKET sockets');
    assert.equal(f?.level, 'ok', JSON.stringify(f));
    assert.match(f.detail, /TPACKET_V3 tx ring, virtio-net headers, auxdata and PACKET_IGNORE_OUTGOING/);
  });

  if (full) it('segments in software for an uplink with offloads=off (set live)', async () => {
    lab.a.pier.ok('set-port', 'up0', 'offloads=off');
    try {
      const before = stats('a', 'up0').counters;
      const r = await iperf(cb, ca, '10.81.0.2');
      assert.ok(r.bytes > 10e6, `moved only ${r.bytes} bytes`);
      const c = stats('a', 'up0').counters;
      assert.ok(c.tx_segmented! - before.tx_segmented! > 0, 'super-frames segmented by pier');
      assert.equal(c.tx_gso_packets! - before.tx_gso_packets!, 0, 'no super-frame sent to the device');
    } finally {
      lab.a.pier.ok('set-port', 'up0', 'offloads=on');
    }
    assert.equal(ping(ca, '10.81.0.2').code, 0, 'the rebuilt dataplane half goes on with the same rings');
  });

  if (full) it('keeps the device promiscuous while attached, and not after del-port', async () => {
    assert.ok(lab.promiscuity(lab.a) >= 1, 'promiscuous while the uplink is attached');
    lab.a.pier.ok('del-port', 'br0', 'up0');
    assert.equal(lab.promiscuity(lab.a), 0, 'the kernel drops the membership with the socket');
    lab.a.pier.ok('add-port', 'br0', 'up0', 'type=afpacket', `dev=${WIRE}`);
    assert.ok(lab.promiscuity(lab.a) >= 1);
    await pingUntil(ca, '10.81.0.2', [], 15_000);
  });

  if (full) it('opens the socket in the device\'s namespace (netns=)', async () => {
    // A station behind a second device of host a that lives in a namespace of its own.
    const [dev, station] = lab.netns(2) as [string, string];
    must('ip', ['link', 'add', 'name', 'side0', 'netns', dev, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', station]);
    must('ip', ['-n', dev, 'link', 'set', 'side0', 'up']);
    must('ip', ['-n', station, 'addr', 'add', '10.81.0.9/24', 'dev', 'eth0']);
    must('ip', ['-n', station, 'link', 'set', 'eth0', 'up']);
    lab.a.pier.ok('add-port', 'br0', 'up1', 'type=afpacket', 'dev=side0', `netns=${dev}`);
    try {
      await pingUntil(ca, '10.81.0.9', [], 15_000);
      assert.ok(lab.promiscuity({ ...lab.a, ns: dev }, 'side0') >= 1);
      const refused = lab.a.pier.pier('add-port', 'br0', 'up2', 'type=afpacket', 'dev=side0', `netns=${dev}`);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /already an uplink on side0/);
      // Whichever kind came first: an AF_XDP port on the same device is refused alike.
      const xdp = lab.a.pier.pier('add-port', 'br0', 'up2', 'type=afxdp', 'dev=side0', `netns=${dev}`);
      assert.notEqual(xdp.code, 0);
      assert.match(xdp.stderr, /port up1 is already an uplink on side0/);
      const lo = lab.a.pier.pier('add-port', 'br0', 'up2', 'type=afpacket', 'dev=lo');
      assert.notEqual(lo.code, 0);
      assert.match(lo.stderr, /dev=lo is the loopback device/);
      const missing = lab.a.pier.pier('add-port', 'br0', 'up3', 'type=afpacket', 'dev=nosuch0');
      assert.notEqual(missing.code, 0);
      assert.match(missing.stderr, /no device nosuch0/);
    } finally {
      lab.a.pier.ok('del-port', 'br0', 'up1');
    }
    assert.equal(lab.promiscuity({ ...lab.a, ns: dev }, 'side0'), 0);
  });

  if (full) it('takes the uplink down while its device is down, and back up with it', async () => {
    must('ip', ['-n', lab.a.ns, 'link', 'set', WIRE, 'down']);
    try {
      await lab.waitPortState(lab.a, 'up0', 'error');
      await waitFor(() => /is down/.test(lab.a.pier.json<{ port: { error: string } }>('show', 'up0').port.error ?? ''), 15_000, 'the retry to say the device is down');
    } finally {
      must('ip', ['-n', lab.a.ns, 'link', 'set', WIRE, 'up']);
    }
    await lab.waitPortState(lab.a, 'up0', 'up', 20_000);
    await pingUntil(ca, '10.81.0.2', [], 15_000);
  });

  if (full) it('leaves the device as it was when pier dies (SIGKILL), and the restarted daemon makes the uplink again', async () => {
    await lab.a.pier.stop('SIGKILL');
    assert.equal(lab.promiscuity(lab.a), 0, 'the kernel dropped the membership with the dead process\'s socket');
    rmSync(lab.a.pier.socket, { force: true });
    await lab.a.pier.start();
    await lab.waitPortState(lab.a, 'up0', 'up');
    assert.ok(lab.promiscuity(lab.a) >= 1);
    await pingUntil(ca, '10.81.0.2', [], 15_000);
  });

  if (full) it('takes the uplinks down when the wire is deleted, and back up when it returns', async () => {
    lab.deleteWire();
    await lab.waitPortState(lab.a, 'up0', 'error');
    await lab.waitPortState(lab.b, 'up0', 'error');
    assert.notEqual(ping(ca, '10.81.0.2', ['-c', '1', '-W', '1']).code, 0);
    lab.makeWire();
    await lab.waitPortState(lab.a, 'up0', 'up', 20_000);
    await lab.waitPortState(lab.b, 'up0', 'up', 20_000);
    await pingUntil(ca, '10.81.0.2', [], 15_000);
    assert.equal(ping(cb, '10.81.0.1').code, 0);
    assert.ok(lab.promiscuity(lab.a) >= 1, 'promiscuous again on the new device');
  });

  it('carries 802.1Q trunks: the tag the receiving kernel takes out of the frame is put back', async () => {
    const va = lab.container(lab.a, 'v1', '10.83.0.1/24', ['tag=10']);
    lab.container(lab.b, 'v2', '10.83.0.2/24', ['tag=10']);
    for (const h of [lab.a, lab.b]) h.pier.ok('set-port', 'up0', 'trunks=10');
    await pingUntil(va, '10.83.0.2', [], 15_000);
    const r = ping(va, '10.83.0.2', ['-M', 'do', '-s', '1472']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(ping(ca, '10.81.0.2').code, 0, 'untagged traffic still crosses the trunk');
    // The veth hands the tag over out of band (VLAN offload): the path that puts it back ran.
    const rx = lab.b.pier.json<{ port: { peer: { rx: { tagsRestored: number } } } }>('show', 'up0').port.peer.rx;
    assert.ok(rx.tagsRestored > 0, `tags put back: ${JSON.stringify(rx)}`);
  });
});
}
