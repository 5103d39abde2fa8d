import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { flowHash } from './flow-hash.ts';

fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 20241124) });

/** An Ethernet + IPv4 frame with the given protocol, addresses, ports and payload byte. */
function ipv4Frame(o: { proto?: number; src: number[]; dst: number[]; sport?: number; dport?: number; fill?: number; frag?: number; ihl?: number; len?: number }): Uint8Array {
  const ihl = o.ihl ?? 20;
  const f = new Uint8Array(o.len ?? 14 + ihl + 20 + 16).fill(o.fill ?? 0);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00], 0);
  f[14] = 0x40 | (ihl / 4);
  f[20] = (o.frag ?? 0) >> 8;
  f[21] = (o.frag ?? 0) & 0xff;
  f[23] = o.proto ?? 6;
  f.set(o.src, 26);
  f.set(o.dst, 30);
  const l4 = 14 + ihl;
  f[l4] = (o.sport ?? 0) >> 8;
  f[l4 + 1] = (o.sport ?? 0) & 0xff;
  f[l4 + 2] = (o.dport ?? 0) >> 8;
  f[l4 + 3] = (o.dport ?? 0) & 0xff;
  return f;
}

describe('flowHash', () => {
  const a = [10, 0, 0, 1];
  const b = [10, 0, 0, 2];

  test('TCP/UDP: addresses and ports; the payload and everything else do not matter', () => {
    const h = flowHash(ipv4Frame({ src: a, dst: b, sport: 40000, dport: 5201 }), 0, 70);
    assert.equal(flowHash(ipv4Frame({ src: a, dst: b, sport: 40000, dport: 5201, fill: 0x5a }), 0, 70), h);
    assert.notEqual(flowHash(ipv4Frame({ src: a, dst: b, sport: 40001, dport: 5201 }), 0, 70), h);
    assert.notEqual(flowHash(ipv4Frame({ src: a, dst: b, sport: 40000, dport: 5201, proto: 17 }), 0, 70), flowHash(ipv4Frame({ src: a, dst: b, sport: 40001, dport: 5201, proto: 17 }), 0, 70));
  });

  test('ICMP and fragments: addresses only (a ping flow stays on one queue)', () => {
    const icmp = (fill: number, sport: number) => flowHash(ipv4Frame({ proto: 1, src: a, dst: b, sport, fill }), 0, 70);
    assert.equal(icmp(0, 0x0800), icmp(0x33, 0x0000));
    const frag = (sport: number) => flowHash(ipv4Frame({ src: a, dst: b, sport, dport: 80, frag: 0x2000 }), 0, 70);
    assert.equal(frag(1), frag(2), 'a fragment (MF) is hashed without ports: its later fragments have none');
  });

  test('IP options move the ports; a frame shorter than its headers is hashed on what it has', () => {
    const opt = (sport: number) => flowHash(ipv4Frame({ ihl: 24, src: a, dst: b, sport, dport: 80 }), 0, 74);
    assert.notEqual(opt(1), opt(2));
    const f = ipv4Frame({ src: a, dst: b, sport: 1, dport: 2 });
    assert.equal(typeof flowHash(f, 0, 36), 'number');
    assert.equal(flowHash(f, 0, 10), 0);
  });

  test('IPv6: addresses, and ports for TCP/UDP', () => {
    const v6 = (next: number, sport: number, lastAddrByte: number) => {
      const f = new Uint8Array(80);
      f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd], 0);
      f[14] = 0x60;
      f[20] = next;
      f[22] = 0xfd;
      f[53] = lastAddrByte;
      f[54] = sport >> 8;
      f[55] = sport & 0xff;
      return flowHash(f, 0, f.length);
    };
    assert.notEqual(v6(6, 1, 2), v6(6, 2, 2));
    assert.notEqual(v6(6, 1, 2), v6(6, 1, 3));
    assert.equal(v6(58, 1, 2), v6(58, 2, 2), 'ICMPv6: addresses only');
  });

  test('at an offset in a larger buffer, as in the packet pool', () => {
    const f = ipv4Frame({ src: a, dst: b, sport: 7, dport: 9 });
    const big = new Uint8Array(4096);
    big.set(f, 1000);
    assert.equal(flowHash(big, 1000, f.length), flowHash(f, 0, f.length));
  });

  test('spreads many flows evenly over 2 and 4 queues', () => {
    for (const pairs of [2, 4]) {
      const n = new Array(pairs).fill(0);
      for (let port = 30000; port < 34000; port++) n[flowHash(ipv4Frame({ src: a, dst: b, sport: port, dport: 5201 }), 0, 70) % pairs]++;
      for (const k of n) assert.ok(Math.abs(k - 4000 / pairs) < 4000 / pairs * 0.1, `${pairs} pairs: ${n}`);
    }
  });

  test('never throws and stays in 32 bits, whatever the bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 128 }), (bytes) => {
      const h = flowHash(bytes, 0, bytes.length);
      return Number.isInteger(h) && h >= 0 && h < 2 ** 32;
    }), { numRuns: 2000 });
  });
});
