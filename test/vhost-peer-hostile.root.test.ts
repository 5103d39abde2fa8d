// A hostile vhost-user frontend against a running daemon, one class of attack per test (issue 8):
// memory the frontend's files do not back, a file shrunk under pier, fds that are not eventfds or
// that the peer makes block, messages left half sent, floods of idle connections, a second
// frontend while one holds the port. Each must cost at most the frontend's own session: the
// daemon answers, the two taps still reach each other, and a correct frontend gets the port.
import assert from 'node:assert/strict';
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { libc, unixConnect } from '../src/sys/index.ts';
import * as codec from '../src/vhost/codec.ts';
import * as P from '../src/vhost/protocol.ts';
import { Frontend } from './frontend.ts';
import { delNetns, makeNetns, must, NEEDS, ping, requires, sh, TestDaemon, waitFor } from './helpers.ts';

const NEED = P.VHOST_USER_VERSION | P.FLAG_NEED_REPLY;
const MIB = 1024 * 1024;

describe('a hostile vhost-user frontend costs at most its own session (root)', requires(NEEDS.tun), () => {
  const d = new TestDaemon();
  let c1 = '';
  let c2 = '';
  const sock = (): string => `${d.dir}/vu.sock`;
  const peer = (port = 'vu'): any => d.json('show', port).port.peer;

  before(async () => {
    [c1, c2] = makeNetns(2) as [string, string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${c1}`, 'ip=10.81.0.1/24');
    d.ok('add-port', 'br0', 'c2', 'type=tap', `netns=${c2}`, 'ip=10.81.0.2/24');
    d.ok('add-port', 'br0', 'vu', 'type=vhost-user', `path=${sock()}`);
  });

  after(async () => {
    await d.cleanup();
    delNetns([c1, c2]);
  });

  /** Close the frontends and wait until the port has let them go (free for the next test). */
  async function release(...fes: Frontend[]): Promise<void> {
    for (const fe of fes) fe.close();
    await waitFor(() => peer().connected === false, 5000, () => `the port to let the frontend go: ${JSON.stringify(peer())}`);
  }

  /** The daemon answers, the taps reach each other, and a correct frontend gets the port. */
  async function unharmed(): Promise<void> {
    assert.equal(d.pier('show').code, 0, 'the daemon answers');
    assert.equal(ping(c1, '10.81.0.2', ['-c', '1']).code, 0, 'the other ports still forward');
    const fe = new Frontend(sock());
    try {
      await fe.setup();
      await waitFor(() => peer().link === 'up', 5000, 'a correct frontend to get the port (link up)');
    } finally {
      await release(fe);
    }
  }

  /** REPLY_ACK negotiated, owner and features set: ready for a memory table. */
  async function negotiated(fe: Frontend): Promise<void> {
    fe.send(P.Req.GET_FEATURES);
    const offered = (await fe.reply()).body.getBigUint64(0, true);
    fe.send(P.Req.SET_PROTOCOL_FEATURES, fe.u64(1n << BigInt(P.PF_REPLY_ACK)));
    fe.send(P.Req.SET_OWNER);
    fe.send(P.Req.SET_FEATURES, fe.u64(offered & ~(1n << 29n)));
  }

  async function refused(fe: Frontend, req: number, payload: Uint8Array, fds: number[]): Promise<void> {
    fe.send(req, payload, fds, NEED);
    const r = await fe.reply();
    assert.equal(r.req, req);
    assert.notEqual(r.body.getBigUint64(0, true), 0n, `${codec.requestName(req)} answered with failure`);
  }

  it('memory tables their files do not back are refused with the reason, and nothing is mapped', async () => {
    // The guest memory is an 8 MiB memfd. Each table would have put pier's reads past its end
    // (SIGBUS: the whole daemon died before), or is malformed on its face.
    const cases: Array<[string, codec.MemRegion, RegExp]> = [
      ['a region longer than its file', { gpa: 0, size: 16 * MIB, uva: 0x7000_0000_0000, mmapOffset: 0 }, /beyond|past|end of|larger than/i],
      ['an offset at the very end of the file', { gpa: 0, size: 4096, uva: 0x7000_0000_0000, mmapOffset: 8 * MIB }, /beyond|past|end of|larger than/i],
      ['an offset and size that overflow', { gpa: 0, size: 2 ** 52, uva: 0x7000_0000_0000, mmapOffset: 2 ** 52 }, /overflow|range|beyond|past/i],
      ['an offset that is not page-aligned', { gpa: 0, size: 4096, uva: 0x7000_0000_0000, mmapOffset: 100 }, /page size|align/i],
    ];
    for (const [what, region, why] of cases) {
      const fe = new Frontend(sock());
      try {
        await negotiated(fe);
        await refused(fe, P.Req.SET_MEM_TABLE, codec.memTable([region]), [fe.mem.fd]);
        const p = peer();
        assert.match(p.lastError ?? '', why, `${what}: ${p.lastError}`);
        assert.deepEqual(p.memory, [], `${what}: nothing mapped`);
        // The rings placed where that table said, past the file's end: they never start.
        fe.send(P.Req.SET_VRING_NUM, fe.state(1, 64));
        fe.send(P.Req.SET_VRING_ADDR, codec.vringAddr({ index: 1, desc: 0x7000_0000_0000 + 12 * MIB, used: 0x7000_0000_0000 + 13 * MIB, avail: 0x7000_0000_0000 + 14 * MIB }));
        await refused(fe, P.Req.SET_VRING_ENABLE, fe.state(99, 1), []); // a round trip: everything before it was handled
        assert.equal(peer().vrings.length, 0, `${what}: no ring started`);
      } finally {
        await release(fe);
      }
    }
    // The reason is in the daemon's log too, as a warning naming the port.
    await waitFor(() => d.log.split('\n').some((l) => l.includes('"peer refused"') && l.includes('"port":"vu"') && /page size/.test(l)), 5000, 'the refusal in the daemon\'s log');
    await unharmed();
  });

  it('a frontend that shrinks unsealable memory after SET_MEM_TABLE (as DPDK --no-huge could) resets only its own port', async () => {
    const fe = new Frontend(sock(), 'unsealable');
    try {
      await fe.setup();
      await waitFor(() => peer().link === 'up', 5000, 'link up');
      const mem = peer().memory;
      assert.equal(mem.length, 1);
      assert.equal(mem[0].seal, 'unsealed', 'DPDK-like memory cannot be sealed');
      assert.equal(mem[0].guarded, true, 'the SIGBUS guard covers it');
      // Everything the frontend writes is written first: after the shrink, touching its own
      // mapping would fault this test process.
      fe.postRx(8);
      fe.sendFrame(new Uint8Array(60).fill(0xff, 0, 6));
      const faultsBefore = d.json('show').dataplane.memoryFaults ?? 0;
      libc.check(libc.ftruncate(fe.mem.fd, 0), 'ftruncate');
      fe.kicks[1]!.signal(); // pier reads the ring: every page of it is gone
      assert.ok(await fe.closedByPeer(), 'pier reset the port');
      const p = peer();
      assert.match(p.lastError ?? '', /^memory: /, p.lastError);
      assert.ok(p.ended.memory >= 1, JSON.stringify(p.ended));
      assert.ok(d.json('show').dataplane.memoryFaults > faultsBefore, 'the guard counted the fault');
      await waitFor(() => d.log.split('\n').some((l) => l.includes('"peer ended"') && l.includes('"kind":"memory"')), 5000, 'the end and its kind in the daemon\'s log');
    } finally {
      await release(fe);
    }
    await unharmed();
  });

  it('memory that can be sealed is sealed by pier: the frontend can no longer shrink it', async () => {
    const fe = new Frontend(sock(), 'sealable');
    try {
      await fe.setup();
      await waitFor(() => peer().link === 'up', 5000, 'link up');
      assert.equal(peer().memory[0].seal, 'sealed by pier');
      assert.equal(libc.ftruncate(fe.mem.fd, 0), -1, 'ftruncate fails');
      assert.equal(libc.errno(), 1, 'EPERM');
    } finally {
      await release(fe);
    }
  });

  it('strict-memory=on refuses memory that cannot be sealed, and takes memory that can', async () => {
    d.ok('add-port', 'br0', 'vs', 'type=vhost-user', `path=${d.dir}/vs.sock`, 'strict-memory=on');
    try {
      const bad = new Frontend(`${d.dir}/vs.sock`, 'unsealable');
      try {
        await negotiated(bad);
        const t = bad.memTable();
        await refused(bad, P.Req.SET_MEM_TABLE, t.payload, t.fds);
        assert.match(peer('vs').lastError ?? '', /seal/i);
      } finally {
        bad.close();
      }
      const good = new Frontend(`${d.dir}/vs.sock`, 'sealable');
      try {
        await good.setup();
        await waitFor(() => peer('vs').link === 'up', 5000, 'sealable memory to be taken (link up)');
      } finally {
        good.close();
      }
    } finally {
      d.ok('del-port', 'br0', 'vs');
    }
  });

  it('kick, call and error fds that are not eventfds are refused with what they are; nothing blocks', async () => {
    const fifo = `${d.dir}/fifo`;
    must('mkfifo', [fifo]);
    const pipe = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
    const file = openSync(`${d.dir}/plain`, constants.O_RDWR | constants.O_CREAT);
    const fe = new Frontend(sock());
    try {
      // Fill the pipe: a write of pier's to it would block for good.
      const chunk = Buffer.alloc(65536);
      for (;;) {
        try {
          writeSync(pipe, chunk);
        } catch {
          break; // EAGAIN: full
        }
      }
      await negotiated(fe);
      for (const [req, fd, what] of [[P.Req.SET_VRING_CALL, pipe, /pipe/], [P.Req.SET_VRING_KICK, fe.fd, /socket/], [P.Req.SET_VRING_ERR, file, /file/]] as const) {
        await refused(fe, req, codec.vringFile(0), [fd]);
        assert.match(peer().lastError ?? '', what);
      }
      assert.ok(Object.keys(peer().refused).some((k) => /SET_VRING_CALL/.test(k)));
    } finally {
      closeSync(pipe);
      closeSync(file);
      await release(fe);
    }
    await unharmed();
  });

  it('a frontend that clears O_NONBLOCK on its call eventfd and saturates it costs its session, not the dataplane', async () => {
    const fe = new Frontend(sock());
    try {
      await fe.setup();
      await waitFor(() => peer().link === 'up', 5000, 'link up');
      fe.postRx(32);
      const call = fe.calls[0]!.fd; // the receive ring's: pier writes it when it delivers a frame
      const fl = libc.fcntlInt(call, libc.F_GETFL);
      assert.equal(libc.fcntlInt(call, libc.F_SETFL, fl & ~libc.O_NONBLOCK), 0);
      assert.equal(libc.writeBuf(call, BigUint64Array.of(0xfffffffffffffffen), 8), 8, 'counter at its maximum');
      const stalledBefore = d.json('stats', 'vu')[0].counters.notify_stalled;
      // A broadcast from c1 (an ARP request for an address nobody has) reaches the frontend.
      sh('ip', ['netns', 'exec', c1, 'ping', '-c', '1', '-W', '1', '10.81.0.77']);
      assert.ok(await fe.closedByPeer(5000), 'the session ended');
      assert.equal(d.json('stats', 'vu')[0].counters.notify_stalled, stalledBefore + 1);
      assert.match(peer().lastError ?? '', /call eventfd: it blocked pier/);
    } finally {
      await release(fe);
    }
    await unharmed();
  });

  it('half a header, or a header whose payload never comes, does not keep a correct frontend off the port', async () => {
    const stalls: Array<[string, Uint8Array]> = [
      ['half a header', codec.message(P.Req.GET_FEATURES).subarray(0, 6)],
      ['a header announcing 8 bytes that never come', codec.message(P.Req.SET_FEATURES, codec.u64(0n)).subarray(0, 12)],
    ];
    for (const [what, bytes] of stalls) {
      const bad = new Frontend(sock());
      bad.sendRaw(bytes);
      const fe = new Frontend(sock());
      try {
        await fe.setup();
        await waitFor(() => peer().link === 'up', 3000, `${what}: the correct frontend to get the port`);
        assert.ok(await bad.closedByPeer(5000), `${what}: the stalled connection is let go after the message deadline`);
        assert.equal(peer().link, 'up', `${what}: the correct frontend keeps it`);
      } finally {
        await release(fe, bad);
      }
    }
    assert.ok(peer().ended.timeout >= 2, JSON.stringify(peer().ended));
  });

  it('a frontend in charge that stalls mid-message loses the port to the next one, which keeps it', async () => {
    const stuck = new Frontend(sock());
    const fe = new Frontend(sock());
    try {
      await stuck.setup();
      await waitFor(() => peer().link === 'up', 5000, 'link up');
      stuck.sendRaw(codec.message(P.Req.SET_VRING_BASE, fe.state(0, 0)).subarray(0, 15));
      await fe.setup();
      assert.ok(await stuck.closedByPeer(), 'the old session ends when the new one sets up');
      await waitFor(() => peer().link === 'up', 5000, 'the newest session to have the port');
      assert.ok(peer().ended.superseded >= 1, JSON.stringify(peer().ended));
    } finally {
      await release(fe, stuck);
    }
  });

  it('a VM restarted by its manager reconnects before its old connection is seen dead: the newest session wins', async () => {
    const old = new Frontend(sock());
    const fresh = new Frontend(sock());
    try {
      await old.setup();
      await waitFor(() => peer().link === 'up', 5000, 'link up');
      const connects = peer().connects;
      await fresh.setup();
      assert.ok(await old.closedByPeer());
      await waitFor(() => peer().link === 'up' && peer().connects === connects + 1, 5000, () => `link up on a new session: ${JSON.stringify(peer())}`);
      // The fresh session really carries traffic: an ARP request to c1 is answered.
      fresh.postRx(16);
      const arp = new Uint8Array(42);
      arp.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0xbb, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0xbb, 10, 81, 0, 9, 0, 0, 0, 0, 0, 0, 10, 81, 0, 1]);
      fresh.sendFrame(arp);
      await waitFor(() => fresh.receivedFrames().some((f) => f[12] === 0x08 && f[13] === 0x06 && f[21] === 2), 5000, 'the ARP reply');
    } finally {
      await release(fresh, old);
    }
  });

  it('hundreds of idle connections do not keep a correct frontend off the port, and are let go', async () => {
    const pid = d.proc!.pid!;
    const fdsBefore = (): number => Number(must('sh', ['-c', `ls /proc/${pid}/fd | wc -l`]).trim());
    await waitFor(() => peer().connected === false, 5000, 'the port to be free');
    const base = fdsBefore();
    const idle: number[] = [];
    let fe: Frontend | undefined;
    try {
      for (let i = 0; i < 300; i++) idle.push(unixConnect(sock()));
      fe = new Frontend(sock()); // the newest: pier lets the oldest silent ones go first
      const t0 = Date.now();
      await fe.setup();
      await waitFor(() => peer().link === 'up', 5000, 'the correct frontend to get the port');
      const took = Date.now() - t0;
      assert.ok(took < 5000, `within a few seconds (${took} ms)`);
      assert.ok(peer().newcomers <= 16, `pier holds at most 16 newer connections (${peer().newcomers})`);
      await release(fe);
      // Every idle one is closed by pier: the oldest silent ones at once, the rest after 3 s.
      await waitFor(() => peer().newcomers === 0 && peer().connected === false, 8000, () => `every idle connection let go: ${JSON.stringify(peer())}`);
    } finally {
      fe?.close();
      for (const fd of idle.splice(0)) libc.close(fd);
    }
    await waitFor(() => fdsBefore() === base, 5000, () => `the daemon's fds back to ${base} (now ${fdsBefore()})`);
    await unharmed();
  });
});
