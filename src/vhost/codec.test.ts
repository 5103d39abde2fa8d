// The codec against the vhost-user specification, written out a second time here as the oracle:
// random and mutated messages with random fd counts never make it throw or read past the
// payload, and it accepts exactly what the table allows.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import * as codec from './codec.ts';
import * as P from './protocol.ts';

/** QEMU docs/interop/vhost-user.rst, for the requests pier implements: payload and fds. */
const SPEC: Record<number, { payload: number | 'memory'; fds: number | 'vring' | 'memory' }> = {
  1: { payload: 0, fds: 0 }, // GET_FEATURES
  2: { payload: 8, fds: 0 }, // SET_FEATURES u64
  3: { payload: 0, fds: 0 }, // SET_OWNER
  4: { payload: 0, fds: 0 }, // RESET_OWNER
  5: { payload: 'memory', fds: 'memory' }, // SET_MEM_TABLE: u32 nregions, u32 padding, 32 bytes per region, one fd each
  8: { payload: 8, fds: 0 }, // SET_VRING_NUM vring state
  9: { payload: 40, fds: 0 }, // SET_VRING_ADDR vring address
  10: { payload: 8, fds: 0 }, // SET_VRING_BASE
  11: { payload: 8, fds: 0 }, // GET_VRING_BASE
  12: { payload: 8, fds: 'vring' }, // SET_VRING_KICK u64: index, bit 8 = no fd
  13: { payload: 8, fds: 'vring' }, // SET_VRING_CALL
  14: { payload: 8, fds: 'vring' }, // SET_VRING_ERR
  15: { payload: 0, fds: 0 }, // GET_PROTOCOL_FEATURES
  16: { payload: 8, fds: 0 }, // SET_PROTOCOL_FEATURES
  17: { payload: 0, fds: 0 }, // GET_QUEUE_NUM
  18: { payload: 8, fds: 0 }, // SET_VRING_ENABLE
  20: { payload: 8, fds: 0 }, // NET_SET_MTU
  39: { payload: 8, fds: 0 }, // SET_STATUS
  40: { payload: 0, fds: 0 }, // GET_STATUS
};

function oracle(req: number, p: Uint8Array, nfds: number): 'ok' | 'unsupported' | 'malformed' {
  const s = SPEC[req];
  if (!s) return 'unsupported';
  let size: number;
  let fds: number;
  if (s.payload === 'memory') {
    if (p.length < 8) return 'malformed';
    const n = new DataView(p.buffer, p.byteOffset, p.length).getUint32(0, true);
    if (n < 1 || n > 8) return 'malformed';
    size = 8 + 32 * n;
    fds = n;
  } else {
    size = s.payload;
    if (p.length !== size) return 'malformed';
    fds = s.fds === 'vring' ? ((p[1]! & 1) !== 0 ? 0 : 1) : (s.fds as number);
  }
  return p.length === size && nfds === fds ? 'ok' : 'malformed';
}

/** The codec's verdict on a payload that sits in a larger buffer, so a read past it would be seen. */
function verdict(req: number, p: Uint8Array, nfds: number): string {
  const guard = new Uint8Array(p.length + 64).fill(0xa5);
  guard.set(p, 0);
  // The view ends where the payload ends: a read past it throws RangeError, which fails the test.
  return codec.checkRequest(req, new DataView(guard.buffer, 0, p.length), nfds).kind;
}

/** A well-formed request per SPEC. */
const validRequest = fc.constantFrom(...Object.keys(SPEC).map(Number)).chain((req) => {
  const s = SPEC[req]!;
  if (s.payload === 'memory') {
    return fc.integer({ min: 1, max: 8 }).chain((n) => fc.uint8Array({ minLength: 32 * n, maxLength: 32 * n }).map((regions) => {
      const p = new Uint8Array(8 + 32 * n);
      new DataView(p.buffer).setUint32(0, n, true);
      p.set(regions, 8);
      return { req, payload: p, nfds: n };
    }));
  }
  return fc.uint8Array({ minLength: s.payload, maxLength: s.payload }).map((payload) => ({
    req, payload, nfds: s.fds === 'vring' ? ((payload[1]! & 1) !== 0 ? 0 : 1) : (s.fds as number),
  }));
});

describe('vhost-user codec', () => {
  it('accepts every well-formed request', () => {
    fc.assert(fc.property(validRequest, ({ req, payload, nfds }) => {
      assert.equal(verdict(req, payload, nfds), 'ok');
    }), { numRuns: 2000 });
  });

  it('random requests: never throws, never reads past the payload, verdict exactly per the specification', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 64 }), fc.uint8Array({ maxLength: 400 }), fc.integer({ min: 0, max: 12 }), (req, payload, nfds) => {
      assert.equal(verdict(req, payload, nfds), oracle(req, payload, nfds));
    }), { numRuns: 5000 });
  });

  it('mutated requests (a byte flipped, cut short, grown, other fd counts): verdict exactly per the specification', () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bits: fc.integer({ min: 1, max: 255 }) }),
      fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('grow' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 40 }) }),
      fc.record({ kind: fc.constant('fds' as const), delta: fc.integer({ min: -3, max: 3 }) }),
    );
    fc.assert(fc.property(validRequest, fc.array(mutation, { minLength: 1, maxLength: 3 }), ({ req, payload, nfds }, ms) => {
      let p = Uint8Array.from(payload);
      let k = nfds;
      for (const m of ms) {
        if (m.kind === 'flip' && p.length > 0) p[m.at % p.length]! ^= m.bits;
        else if (m.kind === 'cut') p = p.slice(0, m.at % (p.length + 1));
        else if (m.kind === 'grow') p = Uint8Array.from([...p, ...m.extra]);
        else if (m.kind === 'fds') k = Math.max(0, k + m.delta);
      }
      assert.equal(verdict(req, p, k), oracle(req, p, k));
    }), { numRuns: 5000 });
  });

  it('headers: a wrong version or an announced payload over the limit is refused, anything else may be read', () => {
    fc.assert(fc.property(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff }), (req, flags, size) => {
      const bad = (flags & 3) !== 1 || size > codec.MAX_PAYLOAD;
      assert.equal(codec.headerProblem({ req, flags, size }) !== null, bad);
    }), { numRuns: 5000 });
  });

  it('replies: only an 8-byte answer to the request asked, flagged REPLY, without fds', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 45 }), fc.nat({ max: 15 }), fc.nat({ max: 16 }), fc.nat({ max: 3 }), fc.constantFrom(1, 15, 17),
      (req, flags, size, nfds, asked) => {
        const ok = req === asked && (flags & P.FLAG_REPLY) !== 0 && size === 8 && nfds === 0;
        assert.equal(codec.replyProblem({ req, flags, size }, asked, nfds) === null, ok);
      }), { numRuns: 3000 });
  });

  it('payload encoders and decoders agree', () => {
    fc.assert(fc.property(fc.nat({ max: 255 }), fc.nat({ max: 0xffffffff }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (index, num, v) => {
      const dv = (b: Uint8Array): DataView => new DataView(b.buffer);
      assert.deepEqual(codec.readVringState(dv(codec.vringState(index, num))), { index, num });
      assert.equal(codec.readU64(dv(codec.u64(v))), v);
      assert.deepEqual(codec.readVringFile(dv(codec.vringFile(index, num % 2 === 0))), { index, nofd: num % 2 === 0 });
    }));
    const big = 2 ** 53 + 2;
    const a = codec.readVringAddr(new DataView(codec.vringAddr({ index: 3, desc: 0x1000, used: 0x2000, avail: 0x3000 }).buffer));
    assert.deepEqual(a, { index: 3, desc: 0x1000, used: 0x2000, avail: 0x3000 });
    const t = codec.memTable([{ gpa: 0, size: 4096, uva: 0x7f0000000000, mmapOffset: 8192 }, { gpa: 4096, size: 1, uva: 2, mmapOffset: 0 }]);
    assert.equal(codec.checkRequest(P.Req.SET_MEM_TABLE, new DataView(t.buffer), 2).kind, 'ok');
    assert.deepEqual(codec.readMemTable(new DataView(t.buffer)), [{ gpa: 0, size: 4096, uva: 0x7f0000000000, mmapOffset: 8192 }, { gpa: 4096, size: 1, uva: 2, mmapOffset: 0 }]);
    const huge = codec.memTable([{ gpa: big, size: 1, uva: 0, mmapOffset: 0 }]);
    assert.equal(codec.readMemTable(new DataView(huge.buffer))[0]!.gpa, -1, 'an address past 2^53 is not rounded into a valid one');
  });
});
