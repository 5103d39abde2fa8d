// VhostConnection over a real unix socket: messages put together from any split of the byte
// stream (fds arriving with the first piece), a stalled message timed out, lies in a header
// refused, fds beyond a message's limit refused, the peer's end told apart from a violation.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { EventFd, libc, sendWithFds, unixAccept, unixConnect, unixListen } from '../sys/index.ts';
import * as codec from './codec.ts';
import { acceptPending, Dialer, MESSAGE_DEADLINE_MS, type Message, VhostConnection } from './connection.ts';
import * as P from './protocol.ts';

describe('vhost-user connection', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pier-conn-'));
  const path = join(dir, 's.sock');
  let listenFd = -1;
  before(() => {
    listenFd = unixListen(path);
  });
  after(() => {
    libc.close(listenFd);
    rmSync(dir, { recursive: true, force: true });
  });

  function pair(): { a: number; b: VhostConnection } {
    const a = unixConnect(path);
    const b = unixAccept(listenFd);
    assert.ok(b >= 0);
    return { a, b: new VhostConnection(b, 0) };
  }

  function drain(c: VhostConnection, now = 0): { got: Array<{ req: number; payload: number[]; fds: number }>; end: string | null } {
    const got: Array<{ req: number; payload: number[]; fds: number }> = [];
    const d = c.read((m: Message) => {
      got.push({ req: m.req, payload: [...new Uint8Array(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength)], fds: m.fds.length });
      for (const fd of m.fds) libc.close(fd);
    }, now);
    return { got, end: d ? d.kind : null };
  }

  it('puts messages together from any split of the stream, fds with their message', () => {
    fc.assert(fc.property(
      fc.array(fc.record({ req: fc.integer({ min: 1, max: 40 }), payload: fc.uint8Array({ maxLength: 64 }), fd: fc.boolean() }), { minLength: 1, maxLength: 6 }),
      fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 20 }),
      (msgs, cuts) => {
        const { a, b } = pair();
        const ev = new EventFd();
        try {
          const bytes = msgs.map((m) => codec.message(m.req, m.payload));
          const got: Array<{ req: number; payload: number[]; fds: number }> = [];
          // Each message goes out in pieces; its fd rides with the first piece.
          for (let i = 0; i < bytes.length; i++) {
            const m = bytes[i]!;
            let off = 0;
            let k = 0;
            while (off < m.length) {
              const n = Math.min(m.length - off, cuts[(i + k++) % cuts.length]!);
              assert.equal(sendWithFds(a, m.subarray(off), n, off === 0 && msgs[i]!.fd ? [ev.fd] : []), n);
              off += n;
              const r = drain(b);
              assert.equal(r.end, null);
              got.push(...r.got);
            }
          }
          assert.deepEqual(got, msgs.map((m) => ({ req: m.req, payload: [...m.payload], fds: m.fd ? 1 : 0 })));
        } finally {
          libc.close(a);
          b.close();
          ev.close();
        }
      }), { numRuns: 150 });
  });

  it('a message that stops half way times out after the deadline, not before', () => {
    const { a, b } = pair();
    try {
      const m = codec.message(P.Req.SET_FEATURES, codec.u64(1n));
      sendWithFds(a, m, 5);
      assert.equal(drain(b, 1000).end, null);
      assert.equal(b.deadline(), 1000 + MESSAGE_DEADLINE_MS);
      assert.equal(b.expired(1000 + MESSAGE_DEADLINE_MS - 1), null);
      assert.equal(b.expired(1000 + MESSAGE_DEADLINE_MS)?.kind, 'timeout');
      // Once whole, no deadline is pending.
      sendWithFds(a, m.subarray(5), m.length - 5);
      assert.equal(drain(b, 1500).got.length, 1);
      assert.equal(b.deadline(), 0);
    } finally {
      libc.close(a);
      b.close();
    }
  });

  it('a header announcing more than the limit, or another protocol version, ends the connection as a protocol violation', () => {
    for (const [flags, size] of [[1, codec.MAX_PAYLOAD + 1], [2, 0], [0, 8]] as const) {
      const { a, b } = pair();
      try {
        const h = new Uint8Array(12);
        const dv = new DataView(h.buffer);
        dv.setUint32(0, 1, true);
        dv.setUint32(4, flags, true);
        dv.setUint32(8, size, true);
        sendWithFds(a, h, 12);
        assert.equal(drain(b).end, 'protocol');
      } finally {
        libc.close(a);
        b.close();
      }
    }
  });

  it('more fds than one message may carry end the connection (resource), and none of them leak', () => {
    const { a, b } = pair();
    const evs = Array.from({ length: codec.MAX_MSG_FDS + 1 }, () => new EventFd());
    try {
      sendWithFds(a, codec.message(P.Req.SET_MEM_TABLE, new Uint8Array(0)).subarray(0, 4), 4, evs.map((e) => e.fd));
      assert.equal(drain(b).end, 'resource');
      b.close();
      // Our own fds are still ours; the copies pier received are closed (the fd numbers are free again).
      const probe = new EventFd();
      assert.ok(probe.fd <= Math.max(...evs.map((e) => e.fd)) + 2, 'received copies closed');
      probe.close();
    } finally {
      libc.close(a);
      b.close();
      for (const e of evs) e.close();
    }
  });

  it('the peer closing is told apart: between messages, and in the middle of one', () => {
    let { a, b } = pair();
    libc.close(a);
    assert.equal(drain(b).end, 'peer-closed');
    b.close();
    ({ a, b } = pair());
    sendWithFds(a, codec.message(P.Req.GET_FEATURES), 7);
    libc.close(a);
    assert.equal(drain(b).end, 'peer-closed');
    b.close();
  });

  it('a peer that never reads gets a resource disconnect on send, never a stall', () => {
    const { a, b } = pair();
    try {
      let d = null;
      for (let i = 0; i < 100000 && !d; i++) d = b.send(P.Req.GET_FEATURES, new Uint8Array(4000));
      assert.equal(d?.kind, 'resource');
    } finally {
      libc.close(a);
      b.close();
    }
  });

  it('accepts what is pending, at most the batch; the dialer backs off and resets', () => {
    const clients = Array.from({ length: 5 }, () => unixConnect(path));
    const first = acceptPending(listenFd, 3);
    const rest = acceptPending(listenFd, 10);
    assert.equal(first.fds.length, 3);
    assert.equal(rest.fds.length, 2);
    for (const fd of [...clients, ...first.fds, ...rest.fds]) libc.close(fd);
    const dialer = new Dialer(join(dir, 'nobody.sock'));
    assert.equal(dialer.dial(0), -1);
    assert.equal(dialer.retryAt, 100);
    dialer.dial(100);
    assert.equal(dialer.retryAt, 300, 'the delay doubles');
    const ok = new Dialer(path);
    const fd = ok.dial(0);
    assert.ok(fd >= 0);
    libc.close(fd);
    const pending = acceptPending(listenFd, 10);
    for (const x of pending.fds) libc.close(x);
  });
});
