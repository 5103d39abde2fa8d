// End to end, as root: two hosts (namespaces, each with its own pier) joined by a veth wire with
// two queues, an afxdp uplink on each end (host a: XDP native, queues=2; host b: XDP generic; a
// third, mode=auto on another veth, takes generic), a
// container on a tap port of each pier. Ping and iperf3 both ways; the XDP program attached while
// the port lives, replaced (not stacked) when the daemon restarts, gone after del-port; the wire
// deleted and made again; pier doctor reports AF_XDP and BPF; zero-copy=on on veth, a missing
// device and too many queues refused, leaving nothing behind.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { iperf, must, NEEDS, PIER, ping, pingUntil, requires, waitFor, type Prerequisite } from './helpers.ts';
import * as bpf from '../src/sys/bpf.ts';
import { libc } from '../src/sys/index.ts';
import { TwoHosts, WIRE } from './two-hosts.ts';

interface Counters { [k: string]: number }
interface Stats { port: string; state: string; counters: Counters }
interface XdpView { dev: string; mode: string; zeroCopy: boolean; queues: number; posted: number; umem: { bytes: number }; badRxDescs: number; kernel: Record<string, number> }
interface Finding { check: string; level: string; detail: string }

const AF_XDP: Prerequisite = {
  name: 'AF_XDP',
  missing: () => {
    const r = must('sh', ['-c', 'grep -c " xsk_" /proc/kallsyms || true']).trim();
    return Number(r) > 0 ? undefined : 'this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)';
  },
};

/** The XDP part of `ip -d link show dev wire0` in the host's namespace ('' when none is attached). */
function xdpOf(ns: string): { text: string; ids: string[] } {
  const j = JSON.parse(must('ip', ['-n', ns, '-d', '-j', 'link', 'show', 'dev', WIRE])) as Array<{ xdp?: { mode: number; prog?: { id: number }; attached?: Array<{ prog: { id: number } }> } }>;
  const x = j[0]!.xdp;
  const text = must('ip', ['-n', ns, '-d', 'link', 'show', 'dev', WIRE]);
  const ids = x ? (x.attached ?? (x.prog ? [{ prog: x.prog }] : [])).map((a) => String(a.prog.id)) : [];
  return { text: /xdp/.test(text) ? text : '', ids };
}

describe('afxdp uplinks between two hosts (root)', requires(NEEDS.tun, NEEDS.iperf3, AF_XDP), () => {
  const lab = new TwoHosts();
  let ca = '';
  let cb = '';

  const stats = (h: 'a' | 'b', port: string): Stats => lab[h].pier.json<Stats[]>('stats', port)[0]!;
  const view = (h: 'a' | 'b', port: string): XdpView => lab[h].pier.json<{ port: { peer: XdpView } }>('show', port).port.peer;

  /** The wire with two queues on each end, so host a can run a socket per queue. */
  const makeWire = (): void => {
    must('ip', ['link', 'add', 'name', WIRE, 'netns', lab.a.ns, 'numtxqueues', '2', 'numrxqueues', '2', 'type', 'veth',
      'peer', 'name', WIRE, 'netns', lab.b.ns, 'numtxqueues', '2', 'numrxqueues', '2']);
    must('ip', ['-n', lab.a.ns, 'link', 'set', WIRE, 'up']);
    must('ip', ['-n', lab.b.ns, 'link', 'set', WIRE, 'up']);
  };

  before(async () => {
    await lab.setup();
    lab.deleteWire();
    makeWire();
    ca = lab.container(lab.a, 'c1', '10.82.0.1/24');
    cb = lab.container(lab.b, 'c2', '10.82.0.2/24');
    lab.a.pier.ok('add-port', 'br0', 'up1', 'type=afxdp', `dev=${WIRE}`, 'queues=2', 'mode=native');
    lab.b.pier.ok('add-port', 'br0', 'up1', 'type=afxdp', `dev=${WIRE}`, 'mode=generic');
  });

  after(async () => {
    await lab.cleanup();
  });

  it('attaches pier\'s program: native on a, generic on b, a socket per queue, copy mode on veth', () => {
    const a = view('a', 'up1');
    const b = view('b', 'up1');
    assert.equal(a.mode, 'native');
    assert.equal(a.queues, 2);
    assert.equal(b.mode, 'generic');
    assert.equal(b.queues, 1);
    assert.equal(a.zeroCopy, false, 'veth has no zero-copy: zero-copy=auto fell back to copy');
    assert.equal(a.posted, 2 * 2048, 'every rx frame of both queues is posted');
    assert.equal(a.umem.bytes, (2 * 2048 + 1024) * 4096, 'a UMEM of its own (the pool is not pinned)');
    assert.match(xdpOf(lab.a.ns).text, /xdp/);
    assert.match(xdpOf(lab.b.ns).text, /xdpgeneric/);
    assert.match(lab.a.pier.ok('show', 'up1'), /AF_XDP on wire0: XDP native, copy, 2 queue\(s\)/);
  });

  it('pings across the wire both ways', async () => {
    await pingUntil(ca, '10.82.0.2', [], 15_000);
    assert.equal(ping(ca, '10.82.0.2').code, 0);
    assert.equal(ping(cb, '10.82.0.1').code, 0);
    for (const h of ['a', 'b'] as const) {
      const s = stats(h, 'up1');
      assert.ok(s.counters.rx_packets! > 0 && s.counters.tx_packets! > 0, `${h}: ${JSON.stringify(s.counters)}`);
      assert.equal(s.counters.rx_dropped_malformed, 0);
    }
  });

  it('carries 1500-byte packets (ping -M do -s 1472)', () => {
    const ok = ping(ca, '10.82.0.2', ['-M', 'do', '-s', '1472']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /1480 bytes from 10\.82\.0\.2/);
  });

  it('carries TCP both ways (iperf3); pier segments the containers\' super-frames for the uplink and coalesces what it receives', async (t) => {
    const a0 = stats('a', 'up1').counters;
    const up = await iperf(cb, ca, '10.82.0.2');
    const down = await iperf(cb, ca, '10.82.0.2', { reverse: true });
    t.diagnostic(`a->b ${up.gbps.toFixed(2)} Gbit/s (${up.retransmits} retransmits), b->a ${down.gbps.toFixed(2)} Gbit/s (${down.retransmits} retransmits)`);
    assert.ok(up.bytes > 10e6, `a->b moved only ${up.bytes} bytes`);
    assert.ok(down.bytes > 10e6, `b->a moved only ${down.bytes} bytes`);
    const a1 = stats('a', 'up1').counters;
    assert.ok(a1.tx_segmented! - a0.tx_segmented! > 0, 'super-frames from the tap were segmented for the uplink');
    assert.ok(a1.rx_gso_packets! - a0.rx_gso_packets! > 0, 'segments from the wire were coalesced into super-frames for the tap (gro.ts)');
    assert.equal(a1.tx_dropped_too_big, 0);
    const k = view('a', 'up1');
    assert.equal(k.badRxDescs, 0);
    const rss = /VmRSS:\s*(\d+)/.exec(readFileSync(`/proc/${lab.a.pier.proc!.pid}/status`, 'utf8'))?.[1];
    t.diagnostic(`host a's daemon resident: ${Math.round(Number(rss) / 1024)} MiB`);
    t.diagnostic(`host a kernel XSK counters: ${JSON.stringify(k.kernel)}, host b: ${JSON.stringify(view('b', 'up1').kernel)}`);
  });

  it('a restarted daemon replaces its program (one attached, a new id) and traffic resumes', async () => {
    const before = xdpOf(lab.a.ns).ids;
    assert.equal(before.length, 1);
    await lab.a.pier.stop();
    // Left in place while pier is away: with no socket in its map it passes frames to the stack.
    assert.deepEqual(xdpOf(lab.a.ns).ids, before);
    await lab.a.pier.start();
    await lab.waitPortState(lab.a, 'up1', 'up');
    const now = xdpOf(lab.a.ns).ids;
    assert.equal(now.length, 1, `one program, not stacked: ${xdpOf(lab.a.ns).text}`);
    assert.notEqual(now[0], before[0]);
    await pingUntil(ca, '10.82.0.2', [], 15_000);
  });

  it('the wire deleted takes the uplinks down; made again, they come back by themselves', async () => {
    lab.deleteWire();
    await lab.waitPortState(lab.a, 'up1', 'error');
    await lab.waitPortState(lab.b, 'up1', 'error');
    makeWire();
    await lab.waitPortState(lab.a, 'up1', 'up', 20_000);
    await lab.waitPortState(lab.b, 'up1', 'up', 20_000);
    await pingUntil(ca, '10.82.0.2', [], 15_000);
    assert.equal(ping(cb, '10.82.0.1').code, 0);
    assert.equal(xdpOf(lab.a.ns).ids.length, 1);
  });

  it('pier doctor reports AF_XDP sockets and BPF', () => {
    // Run inside host a's namespace, where the wire is.
    const fs = JSON.parse(must('ip', ['netns', 'exec', lab.a.ns, PIER, 'doctor', '--json', '--socket', lab.a.pier.socket])) as Finding[];
    for (const check of ['AF_XDP sockets', 'BPF (XDP programs)']) {
      const f = fs.find((x) => x.check === check);
      assert.equal(f?.level, 'ok', JSON.stringify(f));
    }
    // The modes from the kernel's netdev family (Linux 6.3): a veth has native XDP, no zero-copy.
    assert.match(fs.find((x) => x.check === 'XDP devices')?.detail ?? '', new RegExp(`${WIRE} \\(virtual, 2 queue\\(s\\), native and generic, no zero-copy[^)]*, XDP native prog \\d+\\)`));
  });

  it('del-port removes the program from the device; the wire is the kernel\'s again', async () => {
    lab.a.pier.ok('del-port', 'br0', 'up1');
    lab.b.pier.ok('del-port', 'br0', 'up1');
    await waitFor(() => xdpOf(lab.a.ns).text === '' && xdpOf(lab.b.ns).text === '', 5_000, () => `no xdp on the wire: ${xdpOf(lab.a.ns).text} ${xdpOf(lab.b.ns).text}`);
    assert.notEqual(ping(ca, '10.82.0.2', ['-c', '1', '-W', '1']).code, 0, 'no uplink, no path');
  });

  it('zero-copy=on where the driver has none (veth) is refused, leaving no port and no program', () => {
    const r = lab.a.pier.pier('add-port', 'br0', 'up2', 'type=afxdp', `dev=${WIRE}`, 'zero-copy=on');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /zero-copy=on, but wire0 \(XDP native\) does not offer it/);
    assert.equal(xdpOf(lab.a.ns).text, '');
    assert.notEqual(lab.a.pier.pier('show', 'up2').code, 0);
  });

  it('refuses a device that already has a program that is not pier\'s, and leaves that program attached', () => {
    must('ip', ['-n', lab.a.ns, 'link', 'add', 'side0', 'type', 'veth', 'peer', 'name', 'side1']);
    must('ip', ['-n', lab.a.ns, 'link', 'set', 'side0', 'up']);
    must('ip', ['-n', lab.a.ns, 'link', 'set', 'side1', 'up']);
    const nsPath = `/var/run/netns/${lab.a.ns}`;
    const map = bpf.createXskMap(1);
    const prog = bpf.loadXskProgram(map, 'other_xdp');
    try {
      const ifindex = (JSON.parse(must('ip', ['-j', '-n', lab.a.ns, 'link', 'show', 'dev', 'side0'])) as Array<{ ifindex: number }>)[0]!.ifindex;
      bpf.attachXdp(nsPath, ifindex, prog, 'generic');
      const id = bpf.progInfo(prog).id;
      const r = lab.a.pier.pier('add-port', 'br0', 'up9', 'type=afxdp', 'dev=side0');
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(r.stderr, new RegExp(`already has an XDP program \\(id ${id}, other_xdp\\) that is not pier's`));
      assert.equal(bpf.xdpState(nsPath, 'side0').progId, id, 'the other program is still the one attached');
      assert.equal(lab.a.pier.pier('show', 'up9').code === 0, false, 'no port left behind');
    } finally {
      libc.close(prog);
      libc.close(map);
      must('ip', ['-n', lab.a.ns, 'link', 'del', 'side0']);
    }
  });

  it('refuses a device that does not exist, and queues beyond the device\'s', () => {
    const r = lab.a.pier.pier('add-port', 'br0', 'up3', 'type=afxdp', 'dev=nosuch0');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /no device nosuch0/);
    const q = lab.a.pier.pier('add-port', 'br0', 'up3', 'type=afxdp', `dev=${WIRE}`, 'queues=3');
    assert.notEqual(q.code, 0);
    assert.match(q.stderr, /queues=3, but wire0 runs 2 queue\(s\)/);
    assert.equal(xdpOf(lab.a.ns).text, '');
    // A veth made without numrxqueues allocates a queue per CPU but runs one: the bind would fail
    // with a bare EINVAL on queue 1, so the count that runs is the one checked.
    must('ip', ['-n', lab.a.ns, 'link', 'add', 'side1', 'type', 'veth', 'peer', 'name', 'side2']);
    try {
      must('ip', ['-n', lab.a.ns, 'link', 'set', 'side1', 'up']);
      const one = lab.a.pier.pier('add-port', 'br0', 'up3', 'type=afxdp', 'dev=side1', 'queues=2');
      assert.notEqual(one.code, 0);
      assert.match(one.stderr, /queues=2, but side1 runs 1 queue\(s\)/);
      assert.match(one.stderr, /pass queues=1 or fewer/);
      // The other kind on a device an afxdp port has: refused, as the other way round.
      lab.a.pier.ok('add-port', 'br0', 'up3', 'type=afxdp', 'dev=side1');
      assert.equal(view('a', 'up3').mode, 'generic', 'mode=auto on a veth takes generic (measured faster there)');
      const pkt = lab.a.pier.pier('add-port', 'br0', 'up4', 'type=afpacket', 'dev=side1');
      assert.notEqual(pkt.code, 0);
      assert.match(pkt.stderr, /port up3 is already an uplink on side1/);
      lab.a.pier.ok('del-port', 'br0', 'up3');
    } finally {
      must('ip', ['-n', lab.a.ns, 'link', 'del', 'side1']);
    }
  });
});
