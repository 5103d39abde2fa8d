// The control socket against hostile clients, as root, on a real daemon: malformed JSON, a
// 100 MB request, a client that never finishes its request, 1000 concurrent clients, a client
// that never reads, wrong types. Each time the next well-formed client is answered within a
// second, and nothing a refused request carried changes the daemon's state.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import { delNetns, IN_VM, makeNetns, NEEDS, requires, TestDaemon, waitFor } from './helpers.ts';

const SLOW = IN_VM ? 5 : 1;
/** The daemon's client deadline for this test (PIER_CONTROL_DEADLINE_MS; 10 s by default). */
const DEADLINE_MS = 2000 * SLOW;
/** What the requirement allows the next well-formed client to wait. */
const NEXT_CLIENT_MS = 1000 * SLOW;
/** How long a client's state may take to change (waitFor polls every 5 ms: these tests time clients). */
const WAIT_MS = 10_000 * SLOW;

/** A raw client of the control socket: the lines it read, and whether it was closed. */
class Raw {
  readonly sock: Socket;
  readonly lines: string[] = [];
  connected = false;
  closed = false;
  error: string | undefined;
  private buf = '';

  constructor(path: string) {
    this.sock = createConnection(path);
    this.sock.setEncoding('utf8');
    this.sock.on('connect', () => (this.connected = true));
    this.sock.on('error', (e: NodeJS.ErrnoException) => (this.error = e.code ?? e.message));
    this.sock.on('data', (d: string) => {
      this.buf += d;
      let nl;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
      }
    });
    this.sock.on('close', () => (this.closed = true));
  }

  reply(i = 0): any {
    return JSON.parse(this.lines[i]!);
  }
}

describe('control socket under hostile clients (root)', requires(NEEDS.tun), () => {
  const d = new TestDaemon();
  let ns = '';
  const open: Raw[] = [];
  let showBefore: unknown;
  let stateBefore = '';
  /** The daemon's open fds with no client connected. */
  let quietFds = 0;

  const pid = (): number => d.proc!.pid!;
  const rssKiB = (): number => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid()}/status`, 'utf8'))![1]);
  const fds = (): number => readdirSync(`/proc/${pid()}/fd`).length;
  /** `pier show --json` without the dataplane's activity counters (every request wakes it). */
  const shown = (): unknown => {
    const s = JSON.parse(d.ok('show', '--json'));
    for (const k of ['wakeups', 'bursts', 'packets']) delete s.dataplane[k];
    return s;
  };

  function raw(): Raw {
    const r = new Raw(d.socket);
    open.push(r);
    return r;
  }

  /** One well-formed request on a fresh connection: its reply and how long it took. */
  async function ask(cmd: string, args: unknown[] = []): Promise<{ reply: any; ms: number }> {
    const start = Date.now();
    const r = raw();
    r.sock.write(JSON.stringify({ cmd, args }) + '\n');
    await waitFor(() => r.lines.length > 0 || r.closed, WAIT_MS, `a reply to ${cmd}`, 5);
    const ms = Date.now() - start;
    r.sock.destroy();
    assert.ok(r.lines.length > 0, `${cmd}: closed without a reply (${r.error ?? ''})`);
    return { reply: r.reply(), ms };
  }

  /** The next well-formed client is answered, within the second the requirement allows. */
  async function nextClientServed(label: string): Promise<number> {
    const { reply, ms } = await ask('ping');
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.ok(ms < NEXT_CLIENT_MS, `${label}: the next client waited ${ms} ms`);
    return ms;
  }

  before(async () => {
    [ns] = makeNetns(1) as [string];
    process.env.PIER_CONTROL_DEADLINE_MS = String(DEADLINE_MS); // the daemon inherits it
    try {
      await d.start();
    } finally {
      delete process.env.PIER_CONTROL_DEADLINE_MS;
    }
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'p1', 'type=tap', `netns=${ns}`, 'ip=10.79.0.1/24', 'ifname=eth0');
    showBefore = shown();
    stateBefore = readFileSync(`${d.stateDir}/state.json`, 'utf8');
    quietFds = fds();
  });

  // Every test's clients go when it ends, however it ends (a finally for each test).
  afterEach(() => {
    for (const r of open.splice(0)) r.sock.destroy();
  });

  after(async () => {
    await d.cleanup();
    delNetns([ns]);
  });

  it('has the fds for 1000+ connections (Node raises the soft RLIMIT_NOFILE to the hard limit)', (t) => {
    const line = readFileSync(`/proc/${pid()}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'))!;
    const [soft, hard] = line.split(/\s+/).slice(3, 5).map(Number) as [number, number];
    t.diagnostic(`daemon: ${line.replace(/\s+/g, ' ')}; ${fds()} fds open`);
    assert.equal(soft, hard, 'the soft limit was not raised to the hard one');
    assert.ok(soft >= 2048 + fds(), `RLIMIT_NOFILE ${soft} leaves too few fds for 1000 clients and their headroom`);
  });

  it('malformed JSON: an EPROTO reply naming the problem; the connection and the daemon go on', async () => {
    const r = raw();
    const bad = ['{"cmd": "add-br", "args": ["brx"', '{cmd: add-br}', '[', '\u0000\u00ff garbage', '{"cmd":"add-br","args":["brx"]}}', ''];
    r.sock.write(bad.map((l) => l + '\n').join('') + '{"cmd":"ping"}\n');
    await waitFor(() => r.lines.length === bad.length + 1 || r.closed, WAIT_MS, 'all replies', 5);
    assert.equal(r.lines.length, bad.length + 1, `closed early: ${r.lines.join('\n')}`);
    for (let i = 0; i < bad.length; i++) {
      const e = r.reply(i);
      assert.equal(e.ok, false);
      assert.equal(e.error.code, 'EPROTO', bad[i]);
      assert.match(e.error.message, /not valid JSON|empty request/);
      assert.match(e.error.hint, /one JSON object per line/);
    }
    assert.equal(r.reply(bad.length).ok, true);
    assert.equal(r.closed, false);
    await nextClientServed('after malformed JSON');
  });

  it('an object as a bridge name, and other wrong types, are named as such', async () => {
    // First the one that did harm before the schema: an array as a bridge name was taken as its
    // string form, and `del-br [["br0"]]` deleted br0.
    const cases: Array<[string, unknown[], RegExp]> = [
      ['del-br', [['br0']], /^args\[0\] \(BRIDGE\) must be a string, got an array$/],
      ['add-br', [{ name: 'br1' }], /^args\[0\] \(BRIDGE\) must be a string, got an object$/],
      ['add-port', ['br0', 7, 'type=tap'], /^args\[1\] \(PORT\) must be a string, got a number$/],
      ['add-port', ['br0', 'p2', 'type=tap', null], /^args\[3\] \(OPTION\) must be a string, got null$/],
      ['del-port', ['br0', { toString: 'p1' }], /^args\[1\] \(PORT\) must be a string, got an object$/],
    ];
    for (const [cmd, args, message] of cases) {
      const { reply } = await ask(cmd, args);
      assert.equal(reply.ok, false, `${cmd} ${JSON.stringify(args)} refused`);
      assert.equal(reply.error.code, 'EINVAL');
      assert.match(reply.error.message, message);
      assert.ok(reply.error.hint);
    }
    assert.ok((await ask('show', ['br0'])).reply.ok, 'br0 is still there');
    const unknown = await ask('frobnicate');
    assert.equal(unknown.reply.error.message, 'unknown command frobnicate');
  });

  it('a 100 MB request: refused at 1 MiB without being buffered; others are answered meanwhile', async (t) => {
    const rss = rssKiB();
    const big = raw();
    await waitFor(() => big.connected, WAIT_MS, 'connected', 5);
    const body = Buffer.alloc(100 << 20, 'a');
    body.write('{"cmd":"add-br","args":["');
    big.sock.write(body);
    const ms = await nextClientServed('during a 100 MB request');
    await waitFor(() => big.closed, WAIT_MS, 'the 100 MB client closed', 5);
    // Its write may fail (EPIPE) before it reads the reply; if it read one, it names the limit.
    if (big.lines.length) {
      assert.equal(big.reply().error.code, 'EMSGSIZE');
      assert.match(big.reply().error.message, /request over 1048576 bytes/);
    }
    const grown = (rssKiB() - rss) / 1024;
    t.diagnostic(`next client answered in ${ms} ms; the big client got ${big.lines.length ? 'EMSGSIZE' : `closed (${big.error ?? 'EOF'})`}; daemon RSS grew ${grown.toFixed(1)} MiB`);
    assert.ok(grown < 32, `the daemon's RSS grew ${grown.toFixed(1)} MiB`);
    await nextClientServed('after a 100 MB request');
  });

  it('a client that never finishes its request: others are served, it is closed after the deadline', async (t) => {
    const stale = raw();
    stale.sock.write('{"cmd":"add-br","args":["br7"]');
    await waitFor(() => stale.connected, WAIT_MS, 'connected', 5);
    const start = Date.now();
    const ms = await nextClientServed('with a stale client');
    await waitFor(() => stale.closed, DEADLINE_MS * 3, 'the stale client closed', 5);
    const waited = Date.now() - start;
    t.diagnostic(`next client answered in ${ms} ms; the stale one closed after ${waited} ms (deadline ${DEADLINE_MS} ms)`);
    assert.ok(waited >= DEADLINE_MS * 0.9, `closed after ${waited} ms, before the deadline`);
    assert.equal(stale.reply().error.code, 'ETIMEDOUT');
    assert.match(stale.reply().error.message, /not finished within/);
  });

  it('1000 concurrent idle or partial clients: the next client is answered within a second', async (t) => {
    const base = fds();
    const crowd: Raw[] = [];
    // In batches: a burst beyond the listen backlog would be refused (EAGAIN) by the kernel.
    for (let i = 0; i < 1000; i += 100) {
      const batch: Raw[] = [];
      for (let j = 0; j < 100; j++) {
        const r = raw();
        if ((i + j) % 2) r.sock.write('{"cmd":"add-br","args":["crowd');
        batch.push(r);
      }
      await waitFor(() => batch.every((r) => r.connected || r.closed), WAIT_MS, 'a batch connected', 5);
      crowd.push(...batch);
    }
    assert.equal(crowd.filter((r) => r.closed).length, 0, `refused: ${crowd.find((r) => r.closed)?.error}`);
    await waitFor(() => fds() >= base + 1000, WAIT_MS, 'the daemon holds them all', 5);
    const ms = await nextClientServed('under 1000 idle/partial clients');
    const show = await ask('show');
    assert.equal(show.reply.ok, true);
    assert.ok(show.ms < NEXT_CLIENT_MS, `show took ${show.ms} ms`);
    assert.equal(crowd.filter((r) => r.closed).length, 0, 'the crowd was still open when the next client was answered');
    t.diagnostic(`${fds() - base} more fds in the daemon; next client: ping ${ms} ms, show ${show.ms} ms`);
    for (const r of crowd) r.sock.destroy();
    await waitFor(() => fds() <= quietFds, WAIT_MS, 'the daemon let them go', 5);
  });

  it('1000 concurrent clients asking at once: all answered, and the next one within a second', async (t) => {
    const start = Date.now();
    const crowd: Raw[] = [];
    for (let i = 0; i < 1000; i += 100) {
      const batch: Raw[] = [];
      for (let j = 0; j < 100; j++) {
        const r = raw();
        r.sock.write(JSON.stringify({ cmd: (i + j) % 2 ? 'ping' : 'show', args: [] }) + '\n');
        batch.push(r);
      }
      await waitFor(() => batch.every((r) => r.connected || r.closed), WAIT_MS, 'a batch connected', 5);
      crowd.push(...batch);
    }
    const ms = await nextClientServed('with 1000 clients asking');
    await waitFor(() => crowd.every((r) => r.lines.length > 0 || r.closed), WAIT_MS, 'all answered', 5);
    assert.ok(crowd.every((r) => r.lines.length > 0 && r.reply().ok), 'a client was not answered');
    t.diagnostic(`1000 answered in ${Date.now() - start} ms; the next client during them: ${ms} ms`);
    for (const r of crowd) r.sock.destroy();
    await waitFor(() => fds() <= quietFds, WAIT_MS, 'the daemon let them go', 5);
  });

  it('a client that never reads its replies: the daemon stops taking its requests; others are served', async (t) => {
    const rss = rssKiB();
    const deaf = raw();
    deaf.sock.pause();
    await waitFor(() => deaf.connected && fds() > quietFds, WAIT_MS, 'connected', 5);
    // 160 KB of requests fit in the socket's buffer, so its write completes (a pending write
    // would fail with EPIPE at the close, before it reads); their replies are 100x that.
    const sent = 10_000;
    deaf.sock.write('{"cmd":"show"}\n'.repeat(sent));
    await waitFor(() => deaf.sock.writableLength === 0, WAIT_MS, 'its requests sent', 5);
    const ms = await nextClientServed('with a client that does not read');
    // It cannot see itself closed (it does not read): the daemon's fd count shows it.
    await waitFor(() => fds() <= quietFds, DEADLINE_MS * 3, 'the deaf client dropped', 5);
    const grown = (rssKiB() - rss) / 1024;
    // Now it reads: only what the socket buffers held was answered, not all it asked.
    deaf.sock.resume();
    await waitFor(() => deaf.closed, WAIT_MS, 'the deaf client sees the close', 5);
    t.diagnostic(`next client answered in ${ms} ms; ${deaf.lines.length} of ${sent} requests answered before the daemon dropped it; daemon RSS grew ${grown.toFixed(1)} MiB`);
    assert.ok(deaf.lines.length > 0 && deaf.lines.length < sent / 10, `${deaf.lines.length} replies`);
    assert.ok(grown < 32, `the daemon's RSS grew ${grown.toFixed(1)} MiB`);
  });

  it('no refused request changed the state: pier show --json and state.json are as before', async () => {
    await nextClientServed('at the end');
    assert.deepEqual(shown(), showBefore);
    assert.equal(readFileSync(`${d.stateDir}/state.json`, 'utf8'), stateBefore);
  });
});
