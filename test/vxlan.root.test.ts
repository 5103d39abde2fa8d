// VXLAN tunnel ports end to end, as root (issue 11, requirements 3 and 5): two or three "hosts"
// (namespaces, each with its own pier daemon) joined by veth wires with underlay addresses in
// 192.0.2.0/24 and 198.51.100.0/24, containers on tap ports in 10.42.0.0/24. Pier to pier, pier to
// a Linux vxlan device behind a Linux bridge, head-end replication to two remotes, and both again
// over an IPv6 underlay (2001:db8::/64 wires).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { iperf, must, NEEDS, nsExec, ping, pingUntil, requires, TestDaemon, waitFor } from './helpers.ts';
import { Lab, linkPackets, portCounters, wire, type HostDaemon } from './vxlan-hosts.ts';

const VNI = '42';

/** A host's pier: bridge br0, container `c` on tap c1 (ADDR/24, MTU 1450), vxlan port vx0 to `remotes`. */
function pierHost(d: HostDaemon, container: string, addr: string, remotes: string[], local: string, mtu = 1450): void {
  d.ok('add-br', 'br0');
  d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${container}`, `ip=${addr}/24`, 'ifname=eth0', `mtu=${mtu}`);
  d.ok('add-port', 'br0', 'vx0', 'type=vxlan', `vni=${VNI}`, `remote=${remotes.join(',')}`, `local=${local}`);
}

describe('vxlan: pier to pier across a wire (root)', requires(NEEDS.tun, NEEDS.iperf3), () => {
  const lab = new Lab();
  let hA = '', hB = '', cA = '', cB = '';
  let dA: HostDaemon;
  let dB: HostDaemon;

  before(async () => {
    [hA, hB, cA, cB] = lab.netns(4) as [string, string, string, string];
    wire(hA, 'wire0', '192.0.2.1/24', hB, 'wire0', '192.0.2.2/24');
    dA = await lab.daemon(hA);
    dB = await lab.daemon(hB);
    pierHost(dA, cA, '10.42.0.1', ['192.0.2.2'], '192.0.2.1');
    pierHost(dB, cB, '10.42.0.2', ['192.0.2.1'], '192.0.2.2');
  });

  after(() => lab.cleanup());

  it('pings both ways', async () => {
    await pingUntil(cA, '10.42.0.2');
    const r = ping(cB, '10.42.0.1');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // Each pier learned the other container behind the other host.
    const v = dA.json<{ port: { peer: { vteps: Array<{ address: string; macs: number }> } } }>('show', 'vx0').port.peer;
    assert.deepEqual(v.vteps.map((t) => [t.address, t.macs]), [['192.0.2.2', 1]]);
  });

  it('carries TCP both ways (iperf3), super-frames segmented for the tunnel', async () => {
    const up = await iperf(cB, cA, '10.42.0.2');
    const down = await iperf(cB, cA, '10.42.0.2', { reverse: true });
    console.log(`pier-pier vxlan: A->B ${up.gbps.toFixed(2)} Gbit/s, B->A ${down.gbps.toFixed(2)} Gbit/s`);
    assert.ok(up.bytes > 10e6, `A->B moved only ${up.bytes} bytes`);
    assert.ok(down.bytes > 10e6, `B->A moved only ${down.bytes} bytes`);
    for (const d of [dA, dB]) {
      const c = portCounters(d, 'vx0');
      assert.ok(c.tx_segmented! > 0, 'TSO super-frames from the container were segmented for the tunnel');
      assert.equal(c.tx_dropped_too_big, 0);
      assert.equal(c.rx_dropped_malformed, 0);
      // The other pier's UDP_SEGMENT trains crossed the veth whole and arrived as one message each.
      const v = d.json<{ port: { peer: { udpGro: boolean; counters: Record<string, number> } } }>('show', 'vx0').port.peer;
      assert.equal(v.udpGro, true);
      assert.ok(v.counters.rx_gro_datagrams! > 0, `datagrams split from UDP_GRO trains: ${JSON.stringify(v.counters)}`);
      assert.equal(v.counters.rx_dropped_truncated, 0);
    }
  });

  it('remote checksum offload (set-port rco=on): TCP both ways with inner checksums left partial end to end', async () => {
    for (const d of [dA, dB]) d.ok('set-port', 'vx0', 'rco=on');
    try {
      assert.match(dA.ok('show', 'vx0'), /remote checksum offload: on/);
      const before = [dA, dB].map((d) => d.json<{ port: { peer: { counters: Record<string, number> } } }>('show', 'vx0').port.peer.counters);
      await pingUntil(cA, '10.42.0.2');
      const up = await iperf(cB, cA, '10.42.0.2');
      const down = await iperf(cB, cA, '10.42.0.2', { reverse: true });
      console.log(`pier-pier vxlan rco=on: A->B ${up.gbps.toFixed(2)} Gbit/s, B->A ${down.gbps.toFixed(2)} Gbit/s`);
      assert.ok(up.bytes > 10e6 && down.bytes > 10e6, `moved ${up.bytes} and ${down.bytes} bytes`);
      [dA, dB].forEach((d, i) => {
        const x = d.json<{ port: { peer: { counters: Record<string, number> } } }>('show', 'vx0').port.peer.counters;
        const c = portCounters(d, 'vx0');
        // Segments of the container's super-frames left with their checksums partial, said so in
        // the header, and the other pier took them as partial without summing them.
        assert.ok(x.tx_rco! - before[i]!.tx_rco! > 1000, `tx_rco ${JSON.stringify(x)}`);
        assert.ok(x.rx_rco! - before[i]!.rx_rco! > 1000, `rx_rco ${JSON.stringify(x)}`);
        assert.equal(x.rx_csum_partial, before[i]!.rx_csum_partial, 'nothing left to find by summing');
        assert.equal(x.rx_gro_bad_checksum, 0);
        assert.equal(x.rx_dropped_bad_rco, 0);
        assert.equal(c.rx_dropped_malformed, 0);
      });
    } finally {
      for (const d of [dA, dB]) d.ok('set-port', 'vx0', 'rco=off');
    }
    assert.match(dA.ok('show', 'vx0'), /remote checksum offload: off/);
  });

  it('UDP_GRO is off while a second VNI shares the UDP port (a train could mix VNIs), and on again after', async () => {
    const groDatagrams = (): number => dA.json<{ port: { peer: { counters: Record<string, number> } } }>('show', 'vx0').port.peer.counters.rx_gro_datagrams!;
    dA.ok('add-br', 'br9');
    try {
      dA.ok('add-port', 'br9', 'vx9', 'type=vxlan', 'vni=99', 'remote=192.0.2.2', 'local=192.0.2.1');
      const g0 = groDatagrams();
      // B sends its trains to A, four flows (four outer source ports, so the kernel's hash alone
      // would give some to vx9): every one must reach vx0.
      const shared = await iperf(cB, cA, '10.42.0.2', { reverse: true, seconds: 2, parallel: 4 });
      assert.ok(shared.bytes > 10e6, `B->A moved only ${shared.bytes} bytes`);
      assert.equal(groDatagrams(), g0, 'no train reached vx0 while its UDP port was shared');
    } finally {
      dA.ok('del-br', 'br9');
    }
    const g1 = groDatagrams();
    await iperf(cB, cA, '10.42.0.2', { reverse: true, seconds: 2 });
    assert.ok(groDatagrams() > g1, 'trains again with the port to itself');
  });

  it('shows the inner MTU that works', () => {
    const text = dA.ok('show', 'vx0');
    assert.match(text, /inner MTU 1450 \(underlay MTU 1500 from the route to 192\.0\.2\.2/);
    const v = dA.json<{ port: { peer: { innerMtu: number; socketDrops: number; sourcePorts: number[] } } }>('show', 'vx0').port.peer;
    assert.equal(v.innerMtu, 1450);
    assert.ok(v.socketDrops >= 0, 'the receiving socket\'s kernel drops are read');
    assert.ok(v.sourcePorts.length > 1 && v.sourcePorts.every((p) => p >= 49152 && p <= 65535), `source ports ${v.sourcePorts}`);
  });

  it('MTU edge: inner 1450 at underlay 1500; a larger frame is dropped and counted', async () => {
    dA.ok('set-port', 'c1', 'mtu=1500'); // the container may send what the tunnel cannot carry
    const ok = ping(cA, '10.42.0.2', ['-M', 'do', '-s', '1422', '-c', '2']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /1430 bytes from 10\.42\.0\.2/);
    const before = portCounters(dA, 'vx0').tx_dropped_too_big!;
    const big = ping(cA, '10.42.0.2', ['-M', 'do', '-s', '1423', '-c', '2', '-W', '1']);
    assert.notEqual(big.code, 0, 'a 1451-byte inner packet must not cross an underlay of 1500');
    await waitFor(() => portCounters(dA, 'vx0').tx_dropped_too_big! - before >= 2, 5000, 'two frames counted in tx_dropped_too_big');
    const stats = dA.ok('stats', 'vx0');
    assert.match(stats, /tx_dropped_too_big: \d+/);
  });

  it('set-port changes the underlay MTU live (mtu=): the inner MTU follows', async () => {
    dA.ok('set-port', 'vx0', 'mtu=1400');
    assert.match(dA.ok('show', 'vx0'), /inner MTU 1350 \(underlay MTU 1400 from mtu=/);
    await pingUntil(cA, '10.42.0.2', ['-M', 'do', '-s', '1322']);
    const big = ping(cA, '10.42.0.2', ['-M', 'do', '-s', '1323', '-c', '1', '-W', '1']);
    assert.notEqual(big.code, 0);
    dA.ok('set-port', 'vx0', 'mtu=');
    assert.match(dA.ok('show', 'vx0'), /inner MTU 1450 \(underlay MTU 1500 from the route/);
  });

  it('follows the underlay: a smaller MTU on the wire shows (and limits) within the 5 s check, and back', async () => {
    must('ip', ['-n', hA, 'link', 'set', 'wire0', 'mtu', '1400']);
    try {
      await waitFor(() => /inner MTU 1350 \(underlay MTU 1400 from the route to 192\.0\.2\.2/.test(dA.ok('show', 'vx0')), 15_000, 'pier show to say inner MTU 1350');
      const big = ping(cA, '10.42.0.2', ['-M', 'do', '-s', '1323', '-c', '1', '-W', '1']);
      assert.notEqual(big.code, 0);
      const ev = dA.events();
      assert.ok(ev.some((e) => e.type === 'port-changed' && e.port === 'vx0' && /underlay MTU 1500 -> 1400/.test(e.detail ?? '')), JSON.stringify(ev.slice(-5)));
    } finally {
      must('ip', ['-n', hA, 'link', 'set', 'wire0', 'mtu', '1500']);
    }
    await waitFor(() => /inner MTU 1450 \(underlay MTU 1500 from the route/.test(dA.ok('show', 'vx0')), 15_000, 'pier show to say inner MTU 1450 again');
    // Relearned after the rebuild: pings go on.
    await pingUntil(cA, '10.42.0.2', ['-M', 'do', '-s', '1422']);
  });
});

describe('vxlan: pier to a Linux vxlan device behind a Linux bridge (root)', requires(NEEDS.tun, NEEDS.iperf3), () => {
  const lab = new Lab();
  let hA = '', hB = '', cA = '', cB = '';
  const dA = new TestDaemon();

  before(async () => {
    [hA, hB, cA, cB] = lab.netns(4) as [string, string, string, string];
    wire(hA, 'wire0', '192.0.2.1/24', hB, 'wire0', '192.0.2.2/24');
    // Host A's pier runs in this namespace; its tunnel's socket lives in hA (netns=).
    await dA.start();
    dA.ok('add-br', 'br0');
    dA.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${cA}`, 'ip=10.42.0.1/24', 'ifname=eth0', 'mtu=1450');
    dA.ok('add-port', 'br0', 'vx0', 'type=vxlan', `vni=${VNI}`, 'remote=192.0.2.2', 'local=192.0.2.1', `netns=${hA}`);
    // Host B: Linux all the way.
    must('ip', ['-n', hB, 'link', 'add', 'vx42', 'type', 'vxlan', 'id', VNI, 'dstport', '4789', 'remote', '192.0.2.1', 'local', '192.0.2.2', 'dev', 'wire0']);
    must('ip', ['-n', hB, 'link', 'add', 'br0', 'type', 'bridge']);
    must('ip', ['link', 'add', 'name', 'vc0', 'netns', hB, 'mtu', '1450', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', cB, 'mtu', '1450']);
    for (const l of ['vx42', 'vc0']) must('ip', ['-n', hB, 'link', 'set', l, 'master', 'br0']);
    for (const l of ['vx42', 'vc0', 'br0']) must('ip', ['-n', hB, 'link', 'set', l, 'up']);
    must('ip', ['-n', cB, 'addr', 'add', '10.42.0.2/24', 'dev', 'eth0']);
    must('ip', ['-n', cB, 'link', 'set', 'eth0', 'up']);
  });

  after(async () => {
    await dA.cleanup();
    await lab.cleanup();
  });

  it('pings both ways', async () => {
    await pingUntil(cA, '10.42.0.2');
    const r = ping(cB, '10.42.0.1');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // Linux learned pier's container behind 192.0.2.1.
    const fdb = must('bridge', ['-n', hB, 'fdb', 'show', 'dev', 'vx42']);
    assert.match(fdb, /dst 192\.0\.2\.1/);
  });

  it('carries TCP both ways (iperf3)', async () => {
    const up = await iperf(cB, cA, '10.42.0.2');
    const down = await iperf(cB, cA, '10.42.0.2', { reverse: true });
    console.log(`pier-linux vxlan: pier->linux ${up.gbps.toFixed(2)} Gbit/s, linux->pier ${down.gbps.toFixed(2)} Gbit/s`);
    assert.ok(up.bytes > 10e6, `pier->linux moved only ${up.bytes} bytes`);
    assert.ok(down.bytes > 10e6, `linux->pier moved only ${down.bytes} bytes`);
    const c = portCounters(dA, 'vx0');
    assert.equal(c.rx_dropped_malformed, 0, 'every datagram from Linux decapsulated');
  });

  it('remote checksum offload with a Linux device (udpcsum remcsumtx remcsumrx): TCP both ways, each end leaving checksums to the other', async () => {
    // Linux cannot change these flags on a device: make it again with them.
    must('ip', ['-n', hB, 'link', 'del', 'vx42']);
    must('ip', ['-n', hB, 'link', 'add', 'vx42', 'type', 'vxlan', 'id', VNI, 'dstport', '4789', 'remote', '192.0.2.1', 'local', '192.0.2.2', 'dev', 'wire0',
      'udpcsum', 'remcsumtx', 'remcsumrx']);
    must('ip', ['-n', hB, 'link', 'set', 'vx42', 'master', 'br0']);
    must('ip', ['-n', hB, 'link', 'set', 'vx42', 'up']);
    dA.ok('set-port', 'vx0', 'rco=on');
    try {
      const x0 = dA.json<{ port: { peer: { counters: Record<string, number> } } }>('show', 'vx0').port.peer.counters;
      await pingUntil(cA, '10.42.0.2');
      const up = await iperf(cB, cA, '10.42.0.2');
      const down = await iperf(cB, cA, '10.42.0.2', { reverse: true });
      console.log(`pier-linux vxlan rco: pier->linux ${up.gbps.toFixed(2)} Gbit/s, linux->pier ${down.gbps.toFixed(2)} Gbit/s`);
      assert.ok(up.bytes > 10e6 && down.bytes > 10e6, `moved ${up.bytes} and ${down.bytes} bytes`);
      const x = dA.json<{ port: { peer: { counters: Record<string, number> } } }>('show', 'vx0').port.peer.counters;
      assert.ok(x.tx_rco! - x0.tx_rco! > 1000, `pier sent RCO frames: ${JSON.stringify(x)}`);
      assert.ok(x.rx_rco! - x0.rx_rco! > 1000, `Linux sent RCO frames and pier took them: ${JSON.stringify(x)}`);
      assert.equal(x.rx_dropped_bad_rco, 0);
      assert.equal(portCounters(dA, 'vx0').rx_dropped_malformed, 0);
    } finally {
      dA.ok('set-port', 'vx0', 'rco=off');
      must('ip', ['-n', hB, 'link', 'del', 'vx42']);
      must('ip', ['-n', hB, 'link', 'add', 'vx42', 'type', 'vxlan', 'id', VNI, 'dstport', '4789', 'remote', '192.0.2.1', 'local', '192.0.2.2', 'dev', 'wire0']);
      must('ip', ['-n', hB, 'link', 'set', 'vx42', 'master', 'br0']);
      must('ip', ['-n', hB, 'link', 'set', 'vx42', 'up']);
    }
  });

  it('drops and counts datagrams of another VNI', async () => {
    // A second Linux device on the same UDP port with VNI 43: its ARP requests reach pier's socket.
    must('ip', ['-n', hB, 'link', 'add', 'vx43', 'type', 'vxlan', 'id', '43', 'dstport', '4789', 'remote', '192.0.2.1', 'local', '192.0.2.2', 'dev', 'wire0']);
    must('ip', ['-n', hB, 'addr', 'add', '10.43.0.2/24', 'dev', 'vx43']);
    must('ip', ['-n', hB, 'link', 'set', 'vx43', 'up']);
    const before = portCounters(dA, 'vx0').rx_dropped_malformed!;
    nsExec(hB, 'ping', ['-c', '2', '-i', '0.2', '-W', '1', '10.43.0.1']);
    await waitFor(() => portCounters(dA, 'vx0').rx_dropped_malformed! > before, 5000, 'a VNI 43 datagram counted as malformed');
    const v = dA.json<{ port: { peer: { counters: Record<string, number> } } }>('show', 'vx0').port.peer;
    assert.ok(v.counters.rx_dropped_wrong_vni! >= 1, JSON.stringify(v.counters));
    assert.match(dA.ok('show', 'vx0'), /rx_dropped_wrong_vni: \d+/);
  });

  it('a second port with VNI 43 on the same UDP port takes VNI 43, as a second Linux device does; the same VNI twice is refused', async () => {
    const [c43] = lab.netns(1) as [string];
    dA.ok('add-br', 'br1');
    try {
      dA.ok('add-port', 'br1', 'c43', 'type=tap', `netns=${c43}`, 'ip=10.43.0.1/24', 'ifname=eth0', 'mtu=1450');
      dA.ok('add-port', 'br1', 'vx1', 'type=vxlan', 'vni=43', 'remote=192.0.2.2', 'local=192.0.2.1', `netns=${hA}`);
      const wrong0 = portCounters(dA, 'vx0').rx_dropped_malformed!;
      await pingUntil(c43, '10.43.0.2');
      const r = ping(c43, '10.43.0.2', ['-c', '20', '-i', '0.05']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      // Both directions of VNI 42 still work beside it.
      assert.equal(ping(cA, '10.42.0.2').code, 0);
      // The kernel handed every VNI 43 datagram to vx1's socket: none reached vx0 any more.
      assert.equal(portCounters(dA, 'vx0').rx_dropped_malformed, wrong0, 'VNI 43 datagrams reached vx0');
      assert.ok(portCounters(dA, 'vx1').rx_packets! >= 20);
      assert.equal(portCounters(dA, 'vx1').rx_dropped_malformed, 0);
      const twice = dA.pier('add-port', 'br1', 'vx2', 'type=vxlan', 'vni=43', 'remote=192.0.2.2', 'local=192.0.2.1', `netns=${hA}`);
      assert.notEqual(twice.code, 0);
      assert.match(twice.stderr, /port vx1 already carries VNI 43 on UDP port 4789/);
      const wild = dA.pier('add-port', 'br1', 'vx2', 'type=vxlan', 'vni=44', 'remote=192.0.2.2', `netns=${hA}`);
      assert.notEqual(wild.code, 0);
      assert.match(wild.stderr, /give both the same local=/);
      // A third port (VNI 44), then vx1 leaves the middle of the group: the kernel moves the last
      // socket (vx2's) into its place, and the group's program must follow.
      const [c44] = lab.netns(1) as [string];
      must('ip', ['-n', hB, 'link', 'add', 'vx44', 'type', 'vxlan', 'id', '44', 'dstport', '4789', 'remote', '192.0.2.1', 'local', '192.0.2.2', 'dev', 'wire0']);
      must('ip', ['-n', hB, 'addr', 'add', '10.44.0.2/24', 'dev', 'vx44']);
      must('ip', ['-n', hB, 'link', 'set', 'vx44', 'up']);
      dA.ok('add-br', 'br2');
      dA.ok('add-port', 'br2', 'c44', 'type=tap', `netns=${c44}`, 'ip=10.44.0.1/24', 'ifname=eth0', 'mtu=1450');
      dA.ok('add-port', 'br2', 'vx2', 'type=vxlan', 'vni=44', 'remote=192.0.2.2', 'local=192.0.2.1', `netns=${hA}`);
      await pingUntil(c44, '10.44.0.2');
      dA.ok('del-port', 'br1', 'vx1');
      const wrong2 = portCounters(dA, 'vx2').rx_dropped_malformed!;
      const vx0Before = portCounters(dA, 'vx0').rx_dropped_malformed!;
      const r44 = ping(c44, '10.44.0.2', ['-c', '20', '-i', '0.05']);
      // Every answer came back: none went to vx0's socket (a program left stale would send about
      // half there). Linux's vx43 may still send the odd neighbour probe, which is VNI 43's and
      // now no port's: vx0 may count one or two of those, not the twenty answers.
      assert.match(r44.stdout, / 0% packet loss/, r44.stdout + r44.stderr);
      assert.ok(portCounters(dA, 'vx0').rx_dropped_malformed! - vx0Before < 10, 'VNI 44 datagrams reached vx0');
      assert.ok(portCounters(dA, 'vx2').rx_dropped_malformed! - wrong2 < 10);
      assert.equal(ping(cA, '10.42.0.2').code, 0);
      // VNI 43 has no port now: its datagrams land on one of the others and are counted there.
      const others = (): number => portCounters(dA, 'vx0').rx_dropped_malformed! + portCounters(dA, 'vx2').rx_dropped_malformed!;
      const others0 = others();
      nsExec(hB, 'ping', ['-c', '2', '-i', '0.2', '-W', '1', '10.43.0.1']);
      await waitFor(() => others() > others0, 5000, 'VNI 43 datagrams counted as another VNI\'s');
    } finally {
      dA.pier('del-br', 'br2');
      dA.ok('del-br', 'br1');
    }
  });
});

describe('vxlan: head-end replication to two remotes (root)', requires(NEEDS.tun), () => {
  const lab = new Lab();
  let hA = '', hB = '', hC = '', cA = '', cB = '', cC = '';
  let dA: HostDaemon;

  before(async () => {
    [hA, hB, hC, cA, cB, cC] = lab.netns(6) as [string, string, string, string, string, string];
    wire(hA, 'toB', '192.0.2.1/24', hB, 'wire0', '192.0.2.2/24');
    wire(hA, 'toC', '198.51.100.1/24', hC, 'wire0', '198.51.100.3/24');
    dA = await lab.daemon(hA);
    const dB = await lab.daemon(hB);
    const dC = await lab.daemon(hC);
    dA.ok('add-br', 'br0');
    dA.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${cA}`, 'ip=10.42.0.1/24', 'ifname=eth0', 'mtu=1450');
    dA.ok('add-port', 'br0', 'vx0', 'type=vxlan', `vni=${VNI}`, 'remote=192.0.2.2,198.51.100.3'); // local: any
    pierHost(dB, cB, '10.42.0.2', ['192.0.2.1'], '192.0.2.2');
    pierHost(dC, cC, '10.42.0.3', ['198.51.100.1'], '198.51.100.3');
  });

  after(() => lab.cleanup());

  it('a broadcast (ARP) reaches both remotes; after learning, unicast goes to one only', async () => {
    const b0 = linkPackets(hA, 'toB').tx;
    const c0 = linkPackets(hA, 'toC').tx;
    // The first ping's ARP request is a broadcast: one copy down each wire.
    await pingUntil(cA, '10.42.0.2');
    assert.ok(linkPackets(hA, 'toC').tx - c0 >= 1, 'the ARP broadcast went to remote 198.51.100.3 too');
    assert.ok(linkPackets(hA, 'toB').tx - b0 >= 3, 'ARP and echoes went to 192.0.2.2');
    // Host C's container saw the request: its kernel answered nothing, but C's pier received it.
    const b1 = linkPackets(hA, 'toB').tx;
    const c1 = linkPackets(hA, 'toC').tx;
    const r = nsExec(cA, 'ping', ['-c', '20', '-i', '0.05', '-W', '2', '10.42.0.2']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(linkPackets(hA, 'toB').tx - b1 >= 20, '20 echo requests down the wire to B');
    assert.equal(linkPackets(hA, 'toC').tx - c1, 0, 'nothing to C once B\'s container was learned');
    const v = dA.json<{ port: { peer: { vteps: Array<{ address: string; macs: number }> } } }>('show', 'vx0').port.peer;
    assert.deepEqual(v.vteps.map((t) => [t.address, t.macs]), [['192.0.2.2', 1], ['198.51.100.3', 0]]);
  });

  it('the third host is reached too (its own VTEP learned)', async () => {
    await pingUntil(cA, '10.42.0.3');
    await pingUntil(cB, '10.42.0.1');
    const v = dA.json<{ port: { peer: { vteps: Array<{ address: string; macs: number }> } } }>('show', 'vx0').port.peer;
    assert.deepEqual(v.vteps.map((t) => [t.address, t.macs]), [['192.0.2.2', 1], ['198.51.100.3', 1]]);
  });
});

describe('vxlan over an IPv6 underlay: pier to pier, and pier to Linux vxlan (root)', requires(NEEDS.tun, NEEDS.iperf3), () => {
  // Host A (pier) in the middle: a wire to host B (pier) and one to host C (Linux vxlan + bridge),
  // one vxlan port towards each, on two bridges so each pair is a network of its own.
  const lab = new Lab();
  let hA = '', hB = '', hC = '', cA = '', cA2 = '', cB = '', cC = '';
  let dA: HostDaemon;
  let dB: HostDaemon;

  /** A veth wire with IPv6 on (the lab turns it off), addresses without duplicate detection (usable at once). */
  function wire6(a: string, ifA: string, addrA: string, b: string, ifB: string, addrB: string): void {
    for (const ns of [a, b]) must('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=0', 'net.ipv6.conf.default.disable_ipv6=0']);
    must('ip', ['link', 'add', 'name', ifA, 'netns', a, 'type', 'veth', 'peer', 'name', ifB, 'netns', b]);
    must('ip', ['-n', a, 'addr', 'add', addrA, 'dev', ifA, 'nodad']);
    must('ip', ['-n', b, 'addr', 'add', addrB, 'dev', ifB, 'nodad']);
    must('ip', ['-n', a, 'link', 'set', ifA, 'up']);
    must('ip', ['-n', b, 'link', 'set', ifB, 'up']);
  }

  before(async () => {
    [hA, hB, hC, cA, cA2, cB, cC] = lab.netns(7) as [string, string, string, string, string, string, string];
    wire6(hA, 'wireb', '2001:db8::1/64', hB, 'wirea', '2001:db8::2/64');
    wire6(hA, 'wirec', '2001:db8:1::1/64', hC, 'wirea', '2001:db8:1::3/64');
    dA = await lab.daemon(hA);
    dB = await lab.daemon(hB);
    // Inner MTU over IPv6: 1500 - 70.
    dA.ok('add-br', 'br0');
    dA.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${cA}`, 'ip=10.46.0.1/24', 'ifname=eth0', 'mtu=1430');
    dA.ok('add-port', 'br0', 'vx0', 'type=vxlan', `vni=${VNI}`, 'remote=2001:db8::2', 'local=2001:db8::1');
    dB.ok('add-br', 'br0');
    dB.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${cB}`, 'ip=10.46.0.2/24', 'ifname=eth0', 'mtu=1430');
    dB.ok('add-port', 'br0', 'vx0', 'type=vxlan', `vni=${VNI}`, 'remote=2001:db8::1', 'local=2001:db8::2');
    dA.ok('add-br', 'br1');
    dA.ok('add-port', 'br1', 'c2', 'type=tap', `netns=${cA2}`, 'ip=10.47.0.1/24', 'ifname=eth0', 'mtu=1430');
    dA.ok('add-port', 'br1', 'vx1', 'type=vxlan', 'vni=43', 'remote=2001:db8:1::3', 'local=2001:db8:1::1');
    // Host C: Linux all the way (IPv6 vxlan sends UDP checksums: udp6zerocsumtx is off by default).
    must('ip', ['-n', hC, 'link', 'add', 'vx43', 'type', 'vxlan', 'id', '43', 'dstport', '4789', 'remote', '2001:db8:1::1', 'local', '2001:db8:1::3', 'dev', 'wirea']);
    must('ip', ['-n', hC, 'link', 'add', 'br0', 'type', 'bridge']);
    must('ip', ['link', 'add', 'name', 'vc0', 'netns', hC, 'mtu', '1430', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', cC, 'mtu', '1430']);
    for (const l of ['vx43', 'vc0']) must('ip', ['-n', hC, 'link', 'set', l, 'master', 'br0']);
    for (const l of ['vx43', 'vc0', 'br0']) must('ip', ['-n', hC, 'link', 'set', l, 'up']);
    must('ip', ['-n', cC, 'addr', 'add', '10.47.0.3/24', 'dev', 'eth0']);
    must('ip', ['-n', cC, 'link', 'set', 'eth0', 'up']);
  });

  after(() => lab.cleanup());

  it('shows the inner MTU of an IPv6 underlay (70 bytes of headers)', () => {
    const v = dA.json<{ port: { peer: { innerMtu: number; family: number } } }>('show', 'vx0').port.peer;
    assert.equal(v.family, 6);
    assert.equal(v.innerMtu, 1430);
  });

  it('pier to pier: pings both ways, the MTU edge, TCP both ways', async () => {
    await pingUntil(cA, '10.46.0.2');
    assert.equal(ping(cB, '10.46.0.1').code, 0);
    const v = dA.json<{ port: { peer: { vteps: Array<{ address: string; macs: number }> } } }>('show', 'vx0').port.peer;
    assert.deepEqual(v.vteps.map((t) => [t.address, t.macs]), [['2001:db8::2', 1]]);
    const edge = ping(cA, '10.46.0.2', ['-M', 'do', '-s', '1402']);
    assert.equal(edge.code, 0, edge.stdout + edge.stderr);
    const up = await iperf(cB, cA, '10.46.0.2');
    const down = await iperf(cB, cA, '10.46.0.2', { reverse: true });
    console.log(`pier-pier vxlan over IPv6: A->B ${up.gbps.toFixed(2)} Gbit/s, B->A ${down.gbps.toFixed(2)} Gbit/s`);
    assert.ok(up.bytes > 10e6 && down.bytes > 10e6, `moved ${up.bytes} / ${down.bytes} bytes`);
    for (const d of [dA, dB]) {
      const c = portCounters(d, 'vx0');
      assert.equal(c.tx_dropped_too_big, 0);
      assert.equal(c.rx_dropped_malformed, 0);
    }
  });

  it('pier to Linux vxlan: pings both ways and TCP both ways; Linux learned pier behind its IPv6 address', async () => {
    await pingUntil(cA2, '10.47.0.3');
    assert.equal(ping(cC, '10.47.0.1').code, 0);
    assert.match(must('bridge', ['-n', hC, 'fdb', 'show', 'dev', 'vx43']), /dst 2001:db8:1::1/);
    const up = await iperf(cC, cA2, '10.47.0.3');
    const down = await iperf(cC, cA2, '10.47.0.3', { reverse: true });
    console.log(`pier-linux vxlan over IPv6: pier->linux ${up.gbps.toFixed(2)} Gbit/s, linux->pier ${down.gbps.toFixed(2)} Gbit/s`);
    assert.ok(up.bytes > 10e6 && down.bytes > 10e6, `moved ${up.bytes} / ${down.bytes} bytes`);
    assert.equal(portCounters(dA, 'vx1').rx_dropped_malformed, 0, 'every datagram from Linux decapsulated');
  });
});
