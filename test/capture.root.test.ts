// `pier capture`, as root (issue 12, requirement 1): containers on tap ports, captures read back by
// Wireshark's own tools (tshark, capinfos) and by tcpdump through a pipe. What is checked: the
// frames on both ports of a forwarded ping are the bytes that were sent, with the right
// interfaces and directions; a TSO super-frame carries its virtio-net header as a comment; a
// reader that stops reading loses capture records, counted in the file and on stderr, while the
// traffic goes on; the errors a user can make are refused with the fix.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { delNetns, iperf, makeNetns, must, NEEDS, nsExec, PIER, pingUntil, requires, sh, TestDaemon, waitFor } from './helpers.ts';

interface Capture { proc: ChildProcess; stderr: () => string; exit: Promise<number | null> }

describe('pier capture (root)', requires(NEEDS.tun, NEEDS.tshark, NEEDS.capinfos, NEEDS.tcpdump, NEEDS.iperf3), () => {
  const d = new TestDaemon();
  let ns: string[] = [];
  const running: ChildProcess[] = [];

  /** `pier capture ARGS` in the background; resolves once the daemon says the capture started. */
  async function capture(...args: string[]): Promise<Capture> {
    const before = d.log.split('capture started').length;
    const proc = spawn(PIER, ['capture', ...args], { env: { ...process.env, PIER_SOCKET: d.socket }, stdio: ['ignore', 'ignore', 'pipe'] });
    running.push(proc);
    let err = '';
    proc.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    const exit = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    await waitFor(() => d.log.split('capture started').length > before || proc.exitCode !== null, 10_000, () => `the capture to start: ${err}`);
    return { proc, stderr: () => err, exit };
  }

  function fields(file: string, filter: string, ...names: string[]): string[][] {
    const out = must('tshark', ['-r', file, '-o', 'frame.generate_md5_hash:TRUE', '-Y', filter, '-T', 'fields', ...names.flatMap((n) => ['-e', n])]);
    return out.trim().split('\n').filter((l) => l !== '').map((l) => l.split('\t'));
  }

  before(async () => {
    await d.start();
    ns = makeNetns(3);
    // No IPv6 chatter (router solicitations, MLD reports) among the packets the tests count.
    for (const n of ns) must('ip', ['netns', 'exec', n, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${ns[0]}`, 'ip=10.82.0.1/24');
    d.ok('add-port', 'br0', 'c2', 'type=tap', `netns=${ns[1]}`, 'ip=10.82.0.2/24');
    d.ok('add-port', 'br0', 'idle', 'type=tap', `netns=${ns[2]}`, 'ip=10.82.0.3/24');
    await pingUntil(ns[0]!, '10.82.0.2', [], 15_000);
  });

  after(async () => {
    for (const p of running) p.kill('SIGKILL');
    await d.cleanup();
    delNetns(ns);
  });

  it('two ports into one file: a forwarded ping is the same bytes on both, with interfaces, directions and statistics', async () => {
    const file = join(d.dir, 'ping.pcapng');
    const c = await capture('c1', 'c2', '-w', file);
    const p = nsExec(ns[0]!, 'ping', ['-c', '3', '-i', '0.2', '-s', '200', '-p', 'c0ffee', '10.82.0.2']);
    assert.equal(p.code, 0, p.stdout + p.stderr);
    c.proc.kill('SIGINT');
    assert.equal(await c.exit, 0, c.stderr());
    assert.match(c.stderr(), /^c1: \d+ packets captured\nc2: \d+ packets captured\n$/);

    const info = must('capinfos', [file]);
    assert.match(info, /File type: +Wireshark\/\.\.\. - pcapng/);
    assert.match(info, /Number of interfaces in file: 2/);
    assert.match(info, /Name = c1[\s\S]*Name = c2/);
    assert.match(info, /Time precision = nanoseconds \(9\)/);
    assert.equal(info.match(/Number of stat entries = 1/g)?.length, 2, 'an Interface Statistics Block per port');

    const rows = fields(file, 'icmp', 'frame.interface_name', 'frame.p2p_dir', 'icmp.type', 'icmp.seq', 'frame.md5_hash', 'data.data');
    const requests = rows.filter((r) => r[2] === '8');
    const replies = rows.filter((r) => r[2] === '0');
    assert.equal(requests.length, 6, `3 echo requests, each on c1 (in) and c2 (out): ${JSON.stringify(rows)}`);
    assert.equal(replies.length, 6);
    for (const seq of ['1', '2', '3']) {
      const onC1 = requests.find((r) => r[0] === 'c1' && r[3] === seq);
      const onC2 = requests.find((r) => r[0] === 'c2' && r[3] === seq);
      assert.equal(onC1?.[1], '1', 'received from c1: inbound');
      assert.equal(onC2?.[1], '0', 'sent to c2: outbound');
      assert.equal(onC1[4], onC2[4], `request ${seq}: the frame c2 was given is the frame c1 sent`);
      assert.match(onC1[5]!, /(c0ffee){20}/, 'the payload ping was told to send');
      const back = replies.filter((r) => r[3] === seq);
      assert.deepEqual(back.map((r) => `${r[0]}:${r[1]}`).sort(), ['c1:0', 'c2:1'], 'the reply: in from c2, out to c1');
    }
  });

  it('-w - | tcpdump -r -: tcpdump reads the stream as it comes; -c ends the capture', () => {
    const flood = spawn('ip', ['netns', 'exec', ns[0]!, 'ping', '-q', '-i', '0.05', '-w', '20', '10.82.0.2'], { stdio: 'ignore' });
    running.push(flood);
    try {
      const r = sh('sh', ['-c', `"${PIER}" capture c2 --direction out -c 4 -w - | tcpdump -n -r -`], { env: { ...process.env, PIER_SOCKET: d.socket }, timeout: 20_000 });
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.equal(lines.length, 4, r.stdout);
      for (const l of lines) assert.match(l, /10\.82\.0\.1 > 10\.82\.0\.2: ICMP echo request/);
      assert.match(r.stderr, /c2: 4 packets captured/);
    } finally {
      flood.kill();
    }
  });

  it('a TSO super-frame is captured whole, its virtio-net header as the packet\'s comment; --snaplen cuts the bytes kept', async () => {
    const file = join(d.dir, 'tso.pcapng');
    const c = await capture('c1', '--direction', 'in', '--snaplen', '128', '-c', '200', '-w', file);
    await iperf(ns[1]!, ns[0]!, '10.82.0.2', { seconds: 2 });
    c.proc.kill('SIGINT');
    assert.equal(await c.exit, 0, c.stderr());
    const rows = fields(file, 'tcp', 'frame.len', 'frame.cap_len', 'frame.comment', 'frame.p2p_dir');
    const superFrames = rows.filter((r) => Number(r[0]) > 1514);
    assert.ok(superFrames.length > 0, `a TCP frame larger than the MTU: ${JSON.stringify(rows.slice(0, 5))}`);
    for (const r of superFrames) {
      assert.equal(r[1], '128');
      assert.match(r[2]!, /^virtio-net: gso tcpv4 size \d+ hdr_len \d+; needs_csum start 34 offset 16$/);
      assert.equal(r[3], '1');
    }
  });

  it('a reader that stops reading loses capture records, counted in the file and on stderr; the traffic does not wait for it', async () => {
    const file = join(d.dir, 'slow.pcapng');
    const c = await capture('c1', 'c2', '-w', file);
    c.proc.kill('SIGSTOP');
    try {
      const r = await iperf(ns[1]!, ns[0]!, '10.82.0.2', { seconds: 2 });
      assert.ok(r.bytes > 0);
    } finally {
      c.proc.kill('SIGCONT');
    }
    c.proc.kill('SIGINT');
    assert.equal(await c.exit, 0, c.stderr());
    const lost = [...c.stderr().matchAll(/(c1|c2): (\d+) packets captured, (\d+) lost/g)];
    assert.equal(lost.length, 2, c.stderr());
    for (const m of lost) assert.ok(Number(m[3]) > Number(m[2]), `more lost than kept while the reader slept: ${m[0]}`);
    // The file is whole, and its statistics say the same (isb_ifdrop).
    const isb = must('tshark', ['-r', file, '-q', '-z', 'io,stat,0']);
    assert.match(isb, /Interval/);
    const info = must('capinfos', [file]);
    assert.match(info, /Number of interfaces in file: 2/);
    const stats = d.json<Array<{ port: string; counters: Record<string, number> }>>('stats');
    const c1 = stats.find((s) => s.port === 'c1')!;
    assert.ok(c1.counters.rx_packets! > 10_000, 'the switch forwarded the run');
  });

  it('a capture ends with its port: deleting the port closes the stream with the statistics', async () => {
    const file = join(d.dir, 'idle.pcapng');
    const c = await capture('idle', '-w', file);
    d.ok('del-port', 'br0', 'idle');
    assert.equal(await c.exit, 0, c.stderr());
    assert.match(c.stderr(), /^idle: \d+ packets? captured\n$/);
    assert.match(must('capinfos', [file]), /Number of stat entries = 1/);
  });

  it('refuses what cannot be captured, with the fix, and starts nothing', async () => {
    let r = d.pier('capture', 'nope');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no port named nope\npier: hint: list the ports with: pier show/);
    r = d.pier('capture', 'c1', '--snaplen', '0');
    assert.match(r.stderr, /--snaplen 0 is out of range/);
    r = d.pier('capture', 'c1', '-c', 'x');
    assert.match(r.stderr, /-c x is not a count of packets/);
    r = d.pier('capture', 'c1', 'c1');
    assert.match(r.stderr, /port c1 is named twice/);
    r = d.pier('capture', 'c1', '--direction', 'sideways');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /sideways/);
    r = d.pier('capture', 'c1', '-w', '/nonexistent/dir/x.pcapng');
    assert.match(r.stderr, /cannot write \/nonexistent\/dir\/x\.pcapng: ENOENT/);
    assert.equal(existsSync('/nonexistent/dir'), false);
    // Four at once, the fifth refused; the four end when interrupted.
    const four = [];
    for (let i = 0; i < 4; i++) four.push(await capture('c1', '-w', join(d.dir, `four${i}.pcapng`)));
    r = d.pier('capture', 'c2');
    assert.match(r.stderr, /4 captures are running, the most pier runs at once/);
    for (const c of four) c.proc.kill('SIGINT');
    for (const c of four) assert.equal(await c.exit, 0, c.stderr());
    assert.ok(statSync(join(d.dir, 'four0.pcapng')).size > 0);
    await waitFor(() => d.log.split('capture ended').length - 1 >= 8, 5000, 'every capture to end in the daemon');
  });
});
