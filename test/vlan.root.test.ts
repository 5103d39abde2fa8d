// VLANs end to end, as root (issue 11, docs/design/uplinks.md): containers on tap ports with the
// same subnet in two VLANs, kept apart; a trunk between two bridges of one pier (two taps in a
// "wire" namespace, joined there by a Linux bridge that passes tagged frames as they are); raw
// 802.1Q frames sent into the trunk and frames captured on each side, so the tags pier pushes
// and pops are seen byte for byte; and set-port moving a port to another VLAN while it runs.
// This kernel has no 802.1Q: nothing here needs it (the VM test does that part).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import type { CounterName } from '../src/dataplane/counters.ts';
import { delNetns, iperf, makeNetns, must, NEEDS, nsExec, ping, pingUntil, requires, TestDaemon, waitFor } from './helpers.ts';

/**
 * python3 over AF_PACKET: `send IFACE HEX...` sends raw frames; `capture IFACE` prints
 * "PKTTYPE HEX" per frame (the first 64 bytes), with a tag the kernel took out of the frame
 * (PACKET_AUXDATA, TP_STATUS_VLAN_VALID) put back where it was on the wire.
 */
const RAW = `
import socket, struct, sys
mode, iface = sys.argv[1], sys.argv[2]
if mode == 'send':
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    for h in sys.argv[3:]:
        s.send(bytes.fromhex(h))
    sys.exit(0)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((iface, 0))
s.setsockopt(263, 8, 1)
print('ready', flush=True)
while True:
    data, anc, _, addr = s.recvmsg(65536, socket.CMSG_SPACE(20))
    for lvl, typ, d in anc:
        if lvl == 263 and typ == 8 and len(d) >= 20:
            st, _, _, _, _, tci, tpid = struct.unpack('IIIHHHH', d[:20])
            if st & 0x10:
                data = data[:12] + struct.pack('!HH', tpid if st & 0x40 else 0x8100, tci) + data[12:]
    print(addr[2], data[:64].hex(), flush=True)
`;

const PACKET_OUTGOING = 4;
const MARK = '88b5'; // IEEE local experimental ethertype: nothing else sends it

/** A capture on `iface` in `ns`: the frames it has seen so far, as hex, received ones only. */
class Capture {
  readonly frames: string[] = [];
  private readonly proc: ChildProcess;
  private buf = '';
  ready = false;

  constructor(readonly ns: string, readonly iface: string) {
    this.proc = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', RAW, 'capture', iface], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.proc.stdout!.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        if (line === 'ready') this.ready = true;
        const [type, hex] = line.split(' ');
        if (hex && Number(type) !== PACKET_OUTGOING) this.frames.push(hex);
      }
    });
  }

  async start(): Promise<this> {
    await waitFor(() => this.ready, 10_000, `a capture on ${this.iface} in ${this.ns} to start`);
    return this;
  }

  /** Frames whose source MAC is `mac` (aa:bb:..). */
  from(mac: string): string[] {
    const m = mac.replace(/:/g, '');
    return this.frames.filter((f) => f.slice(12, 24) === m);
  }

  stop(): void {
    this.proc.kill();
  }
}

function send(ns: string, iface: string, frames: string[]): void {
  must('ip', ['netns', 'exec', ns, 'python3', '-c', RAW, 'send', iface, ...frames]);
}

/** A broadcast frame from `src` with the test's ethertype, optionally 802.1Q-tagged, carrying `n`. */
function marked(src: string, n: number, vid?: number): string {
  const tag = vid === undefined ? '' : `8100${vid.toString(16).padStart(4, '0')}`;
  return `ffffffffffff${src.replace(/:/g, '')}${tag}${MARK}${n.toString(16).padStart(2, '0')}`.padEnd(120, '0');
}

const MAC = (n: number): string => `02:00:00:50:00:0${n}`;

describe('VLANs on tap ports, and a trunk between two bridges (root)', requires(NEEDS.tun, NEEDS.python3, NEEDS.iperf3), () => {
  const d = new TestDaemon();
  let ns: string[] = [];
  const c = (i: number): string => ns[i - 1]!; // c1..c6
  let wire = '';
  const stats = (port: string): Record<CounterName, number> => d.json('stats', port)[0].counters;
  const ifindex = (n: string, dev: string): number => JSON.parse(must('ip', ['-n', n, '-j', 'link', 'show', 'dev', dev]))[0].ifindex;

  before(async () => {
    ns = makeNetns(7);
    wire = ns[6]!;
    // No IPv6: router solicitations and DAD would be traffic the leak checks must tell apart.
    for (const n of ns) must('ip', ['netns', 'exec', n, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-br', 'br1');
    const tags = [10, 10, 20, 20, 10, 20];
    for (let i = 1; i <= 6; i++) {
      d.ok('add-port', i <= 4 ? 'br0' : 'br1', `c${i}`, 'type=tap', `netns=${c(i)}`, `ip=10.50.0.${i}/24`, `mac=${MAC(i)}`, `tag=${tags[i - 1]}`);
    }
    // The trunk: br0's t1 and br1's t2, both taps in `wire`, joined there by a Linux bridge.
    d.ok('add-port', 'br0', 't1', 'type=tap', `netns=${wire}`, 'trunks=10,20');
    d.ok('add-port', 'br1', 't2', 'type=tap', `netns=${wire}`, 'trunks=10,20');
    must('ip', ['-n', wire, 'link', 'add', 'bw', 'type', 'bridge']);
    for (const t of ['t1', 't2']) must('ip', ['-n', wire, 'link', 'set', t, 'master', 'bw']);
    must('ip', ['-n', wire, 'link', 'set', 'bw', 'up']);
  });

  after(async () => {
    await d.cleanup();
    delNetns(ns);
  });

  it('stores and shows tag and trunks', () => {
    assert.equal(d.json('show', 'c1').port.options.tag, 10);
    assert.deepEqual(d.json('show', 't1').port.options.trunks, [10, 20]);
    assert.match(d.ok('show', 't1'), /trunks=10,20/);
    const r = d.pier('set-port', 'c1', 'trunks=30');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /tag= and trunks= together/);
  });

  it('the same subnet in two VLANs: c1<->c2 and c3<->c4 answer, nothing crosses', async () => {
    await pingUntil(c(1), '10.50.0.2');
    await pingUntil(c(3), '10.50.0.4');
    await pingUntil(c(2), '10.50.0.1');
    await pingUntil(c(4), '10.50.0.3');
    for (const [from, to] of [[1, 3], [1, 4], [2, 3], [3, 1], [4, 2]] as const) {
      assert.notEqual(ping(c(from), `10.50.0.${to}`, ['-c', '2', '-W', '1']).code, 0, `c${from} reached c${to} across VLANs`);
    }
  });

  it('a broadcast from c1 reaches its VLAN and never VLAN 20 (captured on every container)', async () => {
    const caps = await Promise.all([2, 3, 4, 5, 6].map((i) => new Capture(c(i), `c${i}`).start()));
    try {
      const before3 = stats('c3').tx_packets;
      send(c(1), 'c1', [1, 2, 3, 4, 5].map((n) => marked(MAC(1), n)));
      // VLAN 10 on both bridges gets all five (c5 through the trunk), untagged.
      for (const cap of [caps[0]!, caps[3]!]) {
        await waitFor(() => cap.from(MAC(1)).length >= 5, 10_000, `c1's broadcasts at ${cap.iface}`);
        for (const f of cap.from(MAC(1))) assert.equal(f.slice(24, 28), MARK, `untagged at ${cap.iface}`);
      }
      // Then a broadcast in VLAN 20 from c4 and from c3: each capture of VLAN 20 prints in order,
      // so once it has shown that later frame, a leaked frame of c1 would be before it.
      send(c(4), 'c4', [marked(MAC(4), 6)]);
      send(c(3), 'c3', [marked(MAC(3), 7)]);
      await waitFor(() => caps[1]!.from(MAC(4)).length > 0 && caps[2]!.from(MAC(3)).length > 0 && caps[4]!.from(MAC(4)).length > 0, 10_000, 'VLAN 20\'s own broadcasts at c3, c4 and c6');
      for (const cap of [caps[1]!, caps[2]!, caps[4]!]) assert.deepEqual(cap.from(MAC(1)), [], `c1's frames leaked to ${cap.iface}`);
      assert.ok(stats('c3').tx_packets > before3, 'pier counts what it sent c3');
    } finally {
      for (const cap of caps) cap.stop();
    }
  });

  it('the trunk carries both VLANs tagged: c1<->c5 (VLAN 10) and c3<->c6 (VLAN 20), never c1<->c6', async () => {
    const cap = await new Capture(wire, 't1').start();
    try {
      await pingUntil(c(1), '10.50.0.5');
      await pingUntil(c(3), '10.50.0.6');
      assert.notEqual(ping(c(1), '10.50.0.6', ['-c', '2', '-W', '1']).code, 0, 'c1 reached c6 across VLANs');
      // What pier sent on the trunk (received on t1 in wire): c1's frames tagged 10, c3's tagged 20.
      const tagOf = (f: string): string => f.slice(24, 32);
      await waitFor(() => cap.from(MAC(1)).length > 0 && cap.from(MAC(3)).length > 0, 10_000, () => `frames of c1 and c3 among the ${cap.frames.length} captured on t1`);
      for (const f of cap.from(MAC(1))) assert.equal(tagOf(f), '8100000a', `c1's frame on the trunk: ${f}`);
      for (const f of cap.from(MAC(3))) assert.equal(tagOf(f), '81000014', `c3's frame on the trunk: ${f}`);
    } finally {
      cap.stop();
    }
  });

  it('TCP crosses the trunk both ways: TSO super-frames tagged, untagged, still valid', async () => {
    const before = stats('t1');
    const up = await iperf(c(5), c(1), '10.50.0.5');
    const down = await iperf(c(5), c(1), '10.50.0.5', { reverse: true });
    assert.ok(up.bytes > 20e6, `c1->c5 moved only ${up.bytes} bytes`);
    assert.ok(down.bytes > 20e6, `c5->c1 moved only ${down.bytes} bytes`);
    const s = stats('t1');
    assert.ok(s.tx_gso_packets - before.tx_gso_packets > 0 || s.rx_gso_packets - before.rx_gso_packets > 0, 'super-frames crossed the trunk');
  });

  it('raw 802.1Q frames into the trunk: a carried VLAN enters untagged, another is dropped and counted', async () => {
    const caps = await Promise.all([1, 2, 3].map((i) => new Capture(c(i), `c${i}`).start()));
    try {
      const drops = stats('t1').rx_dropped_vlan;
      const src = '02:00:00:50:00:99';
      // Sent on t1 in wire: the kernel transmits them into pier's t1 as they are.
      send(wire, 't1', [marked(src, 1, 10), marked(src, 2, 30), marked(src, 3, 4095), marked(src, 4, 20)]);
      await waitFor(() => caps[0]!.from(src).length >= 1 && caps[1]!.from(src).length >= 1 && caps[2]!.from(src).length >= 1, 10_000, 'the VLAN 10 and 20 frames at c1, c2, c3');
      await waitFor(() => stats('t1').rx_dropped_vlan - drops >= 2, 10_000, 't1 to count VLANs 30 and 4095 as dropped');
      assert.equal(stats('t1').rx_dropped_vlan - drops, 2);
      // VLAN 10's frame, popped: the MAC addresses, then the test's ethertype and its marker 01.
      const untagged = marked(src, 1, 10).replace('8100000a', '');
      assert.deepEqual(caps[0]!.from(src), [untagged]);
      assert.deepEqual(caps[1]!.from(src), [untagged]);
      assert.deepEqual(caps[2]!.from(src), [marked(src, 4, 20).replace('81000014', '')], 'c3 saw VLAN 20\'s frame only');
    } finally {
      for (const cap of caps) cap.stop();
    }
  });

  it('tagged frames sent by an access port are dropped and counted', async () => {
    const drops = stats('c2').rx_dropped_vlan;
    send(c(2), 'c2', [marked(MAC(2), 9, 20)]);
    await waitFor(() => stats('c2').rx_dropped_vlan > drops, 10_000, 'c2 to count a tagged frame as dropped');
  });

  it('set-port moves c1 from VLAN 10 to 20 live: same interface, reaches c3, no longer c2', async () => {
    const idx = ifindex(c(1), 'c1');
    d.ok('set-port', 'c1', 'tag=20');
    assert.equal(ifindex(c(1), 'c1'), idx, 'the container keeps its interface');
    assert.equal(d.json('show', 'c1').port.state, 'up');
    await pingUntil(c(1), '10.50.0.3');
    await pingUntil(c(1), '10.50.0.6'); // and across the trunk in VLAN 20
    assert.notEqual(ping(c(1), '10.50.0.2', ['-c', '2', '-W', '1']).code, 0, 'c1 still reaches c2 after leaving VLAN 10');
    const fdb = d.json<Array<{ mac: string; vlan: number; port: string }>>('fdb', 'br0');
    assert.ok(fdb.some((e) => e.port === 'c1' && e.vlan === 20), JSON.stringify(fdb));
    assert.ok(!fdb.some((e) => e.port === 'c1' && e.vlan === 10), 'c1\'s VLAN 10 entries were flushed');
    // The trunk drops VLAN 20: c1 (now VLAN 20) still reaches c3 on its bridge, not c6 across.
    d.ok('set-port', 't1', 'trunks=10');
    assert.notEqual(ping(c(1), '10.50.0.6', ['-c', '2', '-W', '1']).code, 0, 'VLAN 20 crossed a trunk of VLAN 10 only');
    assert.equal(ping(c(1), '10.50.0.3', ['-c', '2']).code, 0);
    // And back: the state file keeps what set-port did.
    d.ok('set-port', 'c1', 'tag=10');
    d.ok('set-port', 't1', 'trunks=10,20');
    await pingUntil(c(1), '10.50.0.5');
    await pingUntil(c(1), '10.50.0.2');
    assert.equal(d.json('show', 'c1').port.options.tag, 10);
  });

  it('a restarted daemon brings the VLANs back from its state file', async () => {
    await d.stop();
    await d.start();
    assert.equal(d.json('show', 'c3').port.options.tag, 20);
    await pingUntil(c(1), '10.50.0.5'); // VLAN 10 across the trunk
    await pingUntil(c(3), '10.50.0.4');
    assert.notEqual(ping(c(1), '10.50.0.3', ['-c', '2', '-W', '1']).code, 0, 'c1 reached c3 after a restart');
  });

  it('tag= drops the key: the port is back in VLAN 0, with nobody else', async () => {
    d.ok('set-port', 'c2', 'tag=');
    assert.equal(d.json('show', 'c2').port.options.tag, undefined);
    assert.notEqual(ping(c(2), '10.50.0.1', ['-c', '2', '-W', '1']).code, 0, 'VLAN 0 reached VLAN 10');
    d.ok('set-port', 'c2', 'tag=10');
    await pingUntil(c(2), '10.50.0.1');
    assert.equal(nsExec(c(2), 'ip', ['link', 'show', 'c2']).code, 0);
  });
});
