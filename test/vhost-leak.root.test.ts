// 1000 vhost-user sessions against a live daemon leave nothing behind (issue 8, "No leaks"):
// each cycle connects, sets up in full (features, memory table, two vrings with kick and call
// eventfds), moves traffic both ways (an ARP request to a tap's address and the kernel's reply,
// checked), and disconnects, in turn: cleanly (GET_VRING_BASE on each ring, then close),
// abruptly (half a header, then close), and after a session that ends right after its
// SET_MEM_TABLE, before any vring. Afterwards the daemon's fd count and number of mappings are
// back to where they started and its RSS within a small margin.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import * as codec from '../src/vhost/codec.ts';
import * as P from '../src/vhost/protocol.ts';
import { Frontend } from './frontend.ts';
import { arpRequest, ask, describeFootprint, fdDiff, type Footprint, footprint, isArpReply, settledFootprint, until } from './fuzz-actions.ts';
import { delNetns, makeNetns, ping, sleep, TestDaemon } from './helpers.ts';

const CYCLES = 1000;
const WARMUP = 30;
/** RSS may end this much above its start (see the figures the test prints). */
const RSS_MARGIN_KIB = 8 * 1024;
/** Anonymous mappings outside the arena are V8's heap pages, malloc arenas and thread stacks: they come and go with GC. */
const MAPS_SLACK = 32;

const ME = [0x02, 0, 0, 0, 0x83, 0x09];
const MY_IP = [10, 83, 0, 9];
const C1_IP = [10, 83, 0, 1];
const NEED = P.VHOST_USER_VERSION | P.FLAG_NEED_REPLY;

describe('vhost-user sessions leave no fds, mappings or memory behind (root)', () => {
  const d = new TestDaemon();
  let c1 = '';
  let c2 = '';
  const sock = (): string => `${d.dir}/vu.sock`;
  const peer = async (): Promise<any> => (await ask(d.socket, 'show', ['vu'])).port.peer;

  before(async () => {
    [c1, c2] = makeNetns(2) as [string, string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${c1}`, `ip=${C1_IP.join('.')}/24`);
    d.ok('add-port', 'br0', 'c2', 'type=tap', `netns=${c2}`, 'ip=10.83.0.2/24');
    d.ok('add-port', 'br0', 'vu', 'type=vhost-user', `path=${sock()}`);
  });

  after(async () => {
    await d.cleanup();
    delNetns([c1, c2]);
  });

  /** Wait for pier's answer to one request; fails on anything else. */
  async function answer(fe: Frontend, req: number): Promise<bigint> {
    const r = await fe.reply();
    assert.equal(r.req, req, `an answer to ${codec.requestName(req)}`);
    return r.body.getBigUint64(0, true);
  }

  /** A session that ends right after its memory table was mapped, before any vring. */
  async function memTableOnly(): Promise<void> {
    const fe = new Frontend(sock());
    try {
      fe.send(P.Req.GET_FEATURES);
      const offered = await answer(fe, P.Req.GET_FEATURES);
      fe.send(P.Req.SET_PROTOCOL_FEATURES, fe.u64(1n << BigInt(P.PF_REPLY_ACK)));
      fe.send(P.Req.SET_OWNER);
      fe.send(P.Req.SET_FEATURES, fe.u64(offered & ~(1n << 29n)));
      const t = fe.memTable();
      fe.send(P.Req.SET_MEM_TABLE, t.payload, t.fds, NEED);
      assert.equal(await answer(fe, P.Req.SET_MEM_TABLE), 0n, 'the memory table was mapped');
    } finally {
      fe.close();
    }
  }

  /** Full setup, an ARP exchange with c1's kernel, then a clean or an abrupt end. Returns sessions opened. */
  async function cycle(i: number): Promise<number> {
    let sessions = 0;
    if (i % 3 === 2) {
      await memTableOnly();
      sessions++;
    }
    const fe = new Frontend(sock());
    sessions++;
    try {
      await fe.setup();
      fe.postRx(4);
      fe.sendFrame(arpRequest(ME, MY_IP, C1_IP));
      let got = false;
      const end = Date.now() + 5000;
      while (!got && Date.now() < end) {
        got = fe.receivedFrames().some((f) => isArpReply(f, ME, C1_IP));
        if (!got) await sleep(1);
      }
      assert.ok(got, `cycle ${i}: the ARP reply from c1 came back through pier`);
      if (i % 3 === 0) {
        // Clean: stop both rings (pier answers with where it stopped), then close.
        fe.send(P.Req.GET_VRING_BASE, fe.state(0, 0));
        fe.send(P.Req.GET_VRING_BASE, fe.state(1, 0));
        await answer(fe, P.Req.GET_VRING_BASE);
        await answer(fe, P.Req.GET_VRING_BASE);
      } else {
        // Abrupt: the connection goes away in the middle of a message.
        fe.sendRaw(codec.message(P.Req.SET_VRING_BASE, fe.state(0, 0)).subarray(0, 6));
      }
    } finally {
      fe.close();
    }
    return sessions;
  }

  it(`${CYCLES} cycles of connect, full setup, traffic, disconnect (clean, abrupt, after SET_MEM_TABLE): fds, mappings and RSS back to their start`, async (t) => {
    const pid = d.proc!.pid!;
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    assert.ok(cmdline.includes('daemon') && cmdline.includes(d.socket), `pid ${pid} is the daemon: ${cmdline.join(' ')}`);
    const idle = async (): Promise<boolean> => {
      const p = await peer();
      return p.connected === false && p.newcomers === 0;
    };

    let sessions = 0;
    for (let i = 0; i < WARMUP; i++) sessions += await cycle(i);
    assert.ok(await until(idle, 10_000), 'the port lets the last frontend go');
    // Taken once the fds and mappings read the same 5 times over a second (no control request in between).
    const start = await settledFootprint(pid);
    t.diagnostic(`start (after ${WARMUP} warm-up cycles): ${describeFootprint(start)}`);

    const t0 = Date.now();
    let slowest = 0;
    let quarter: Footprint | undefined;
    for (let i = WARMUP; i < WARMUP + CYCLES; i++) {
      const c0 = Date.now();
      try {
        sessions += await cycle(i);
      } catch (e) {
        // Say why pier ended the session, not only that it did.
        const p = await peer();
        throw new Error(`cycle ${i}: ${(e as Error).message}; pier show vu: lastError ${JSON.stringify(p.lastError)}, ended ${JSON.stringify(p.ended)}`, { cause: e });
      }
      slowest = Math.max(slowest, Date.now() - c0);
      if ((i - WARMUP) % 250 === 249) {
        const f = footprint(pid);
        quarter ??= f;
        t.diagnostic(`after ${i - WARMUP + 1} cycles (${((Date.now() - t0) / 1000).toFixed(1)} s): ${describeFootprint(f, start)}`);
      }
    }
    const took = Date.now() - t0;
    t.diagnostic(`${CYCLES} cycles in ${(took / 1000).toFixed(1)} s (${(took / CYCLES).toFixed(1)} ms per cycle, slowest ${slowest} ms)`);

    assert.ok(await until(idle, 10_000), 'the port shows no peer after the last cycle');
    const p = await peer();
    t.diagnostic(`pier show vu: connects ${p.connects}, disconnects ${p.disconnects}, ended ${JSON.stringify(p.ended)}`);
    assert.equal(p.connects, sessions, `every session counted as a connect (${WARMUP} warm-up + ${CYCLES} cycles + one memory-table-only session every third cycle)`);
    assert.ok(p.connects >= CYCLES + WARMUP);

    let end = footprint(pid);
    const exact = (f: Footprint): boolean => f.fds === start.fds && f.arenaMaps === start.arenaMaps && f.sharedMaps === start.sharedMaps &&
      f.namedMaps === start.namedMaps && f.threads === start.threads;
    const back = await until(() => {
      end = footprint(pid);
      return exact(end) && end.maps <= start.maps + MAPS_SLACK && end.rssKiB <= start.rssKiB + RSS_MARGIN_KIB;
    }, 10_000, 100);
    t.diagnostic(`end: ${describeFootprint(end, start)}`);
    if (!back) t.diagnostic(`fds changed: ${fdDiff(start.fdTargets, end.fdTargets)}`);
    assert.equal(end.fds, start.fds, `the daemon holds as many fds as before (changed: ${fdDiff(start.fdTargets, end.fdTargets)})`);
    assert.equal(end.arenaMaps, start.arenaMaps, 'no peer memory or guard page is left mapped in the arena');
    assert.equal(end.sharedMaps, start.sharedMaps, 'as many shared mappings as before');
    assert.equal(end.namedMaps, start.namedMaps, 'as many file mappings as before');
    assert.equal(end.threads, start.threads, 'as many threads as before');
    assert.ok(end.maps <= start.maps + MAPS_SLACK, `${end.maps - start.maps} more mappings in all (V8's heap pages come and go; at most ${MAPS_SLACK})`);
    assert.ok(end.rssKiB <= start.rssKiB + RSS_MARGIN_KIB, `VmRSS grew by ${end.rssKiB - start.rssKiB} KiB since the start (at most ${RSS_MARGIN_KIB})`);
    assert.ok(end.rssKiB <= quarter!.rssKiB + RSS_MARGIN_KIB, `VmRSS grew by ${end.rssKiB - quarter!.rssKiB} KiB over the last ${CYCLES * 3 / 4} cycles (at most ${RSS_MARGIN_KIB})`);
    // And the daemon still does its job.
    assert.equal(ping(c1, '10.83.0.2', ['-c', '1']).code, 0, 'the taps still reach each other');
  });
});
