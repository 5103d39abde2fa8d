import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { flowHash } from '../../dataplane/flow-hash.ts';
import { DECAP_NO_I, DECAP_OK, DECAP_SHORT, DECAP_WRONG_VNI, decodeVxlan, encodeVxlan, encodeVxlanRco, rcoByte, rcoOffset, rcoStart, sourcePort, SRC_PORT_MAX, SRC_PORT_MIN, vniOf } from './header.ts';
import { vxlanOptions } from './options.ts';

describe('VXLAN header (RFC 7348 5)', () => {
  test('encodes flags I, reserved zero, VNI in bytes 4..6', () => {
    const b = new Uint8Array(10).fill(0xee);
    encodeVxlan(b, 1, 0xabcdef);
    assert.deepEqual([...b], [0xee, 0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0, 0xee]);
    assert.equal(vniOf(b, 1), 0xabcdef);
  });

  test('remote checksum offload: flag C in the second byte, start / 2 and the UDP bit in the VNI word\'s low byte', () => {
    // As a Linux vxlan device with remcsumtx writes it: TCP over IPv4, start 14 + 20 = 34.
    const b = new Uint8Array(8);
    encodeVxlanRco(b, 0, 42, rcoByte(34, 16));
    assert.deepEqual([...b], [0x08, 0x20, 0, 0, 0, 0, 42, 17]);
    assert.equal(vniOf(b, 0), 42);
    assert.equal(decodeVxlan(new Uint8Array([...b, ...new Uint8Array(14)]), 0, 22, 42), DECAP_OK);
    assert.equal(rcoStart(b, 0), 34);
    assert.equal(rcoOffset(b, 0), 16);
    // UDP over IPv6 behind a VLAN tag: start 14 + 4 + 40 = 58, field at start + 6.
    encodeVxlanRco(b, 0, 42, rcoByte(58, 6));
    assert.equal(b[7], 0x80 | 29);
    assert.equal(rcoStart(b, 0), 58);
    assert.equal(rcoOffset(b, 0), 6);
    // What the format cannot say.
    assert.equal(rcoByte(35, 16), -1);
    assert.equal(rcoByte(256, 16), -1);
    assert.equal(rcoByte(254, 16), 127);
    assert.equal(rcoByte(34, 10), -1);
    encodeVxlan(b, 0, 42);
    assert.equal(rcoStart(b, 0), -1);
  });

  test('decodes what it encodes, for the edge VNIs', () => {
    for (const vni of [0, 1, 42, 0xffffff]) {
      const b = new Uint8Array(8 + 14);
      encodeVxlan(b, 0, vni);
      assert.equal(decodeVxlan(b, 0, b.length, vni), DECAP_OK);
    }
  });

  test('refuses a short datagram, a clear I flag and another VNI; ignores reserved bits', () => {
    const b = new Uint8Array(8 + 14);
    encodeVxlan(b, 0, 42);
    assert.equal(decodeVxlan(b, 0, 8 + 13, 42), DECAP_SHORT);
    assert.equal(decodeVxlan(b, 0, 7, 42), DECAP_SHORT);
    assert.equal(decodeVxlan(b, 0, b.length, 43), DECAP_WRONG_VNI);
    b[0] = 0xf7; // every flag but I
    assert.equal(decodeVxlan(b, 0, b.length, 42), DECAP_NO_I);
    b[0] = 0xff;
    b[1] = b[2] = b[3] = b[7] = 0xff; // reserved bits set: ignored on receipt
    assert.equal(decodeVxlan(b, 0, b.length, 42), DECAP_OK);
  });
});

describe('outer source port', () => {
  test('every hash maps into 49152..65535, both ends reached', () => {
    assert.equal(sourcePort(0), SRC_PORT_MIN);
    assert.equal(sourcePort(16383), SRC_PORT_MAX);
    assert.equal(sourcePort(0xffffffff), SRC_PORT_MIN + (0xffffffff % 16384));
    for (let i = 0; i < 10000; i++) {
      const p = sourcePort((Math.random() * 2 ** 32) >>> 0);
      assert.ok(p >= SRC_PORT_MIN && p <= SRC_PORT_MAX, String(p));
    }
  });

  test('one flow keeps its port; TCP flows that differ in a port spread', () => {
    const frame = (sport: number): Uint8Array => {
      const f = new Uint8Array(64);
      f[12] = 0x08;
      f[14] = 0x45;
      f[23] = 6;
      f.set([10, 0, 0, 1, 10, 0, 0, 2], 26);
      f[34] = sport >> 8;
      f[35] = sport & 0xff;
      return f;
    };
    assert.equal(sourcePort(flowHash(frame(1000), 0, 64)), sourcePort(flowHash(frame(1000), 0, 64)));
    const seen = new Set<number>();
    for (let s = 1000; s < 1064; s++) seen.add(sourcePort(flowHash(frame(s), 0, 64)) >> 10); // 16 blocks of 1024
    assert.ok(seen.size >= 12, `64 flows in ${seen.size} of 16 blocks`);
  });
});

describe('vxlan options', () => {
  test('CLI words and the stored form', () => {
    const o = vxlanOptions.parse({ type: 'vxlan', vni: '42', remote: '192.0.2.2,192.0.2.3', local: '192.0.2.1', dstport: '4790' });
    assert.deepEqual(o, { type: 'vxlan', vni: 42, remote: ['192.0.2.2', '192.0.2.3'], local: '192.0.2.1', dstport: 4790 });
    assert.deepEqual(vxlanOptions.parse(JSON.parse(JSON.stringify(o))), o);
  });

  test('refuses a VNI over 24 bits, no remote, mixed families, a bad local', () => {
    assert.throws(() => vxlanOptions.parse({ type: 'vxlan', vni: '16777216', remote: '192.0.2.2' }), /0\.\.16777215/);
    assert.throws(() => vxlanOptions.parse({ type: 'vxlan', vni: '1', remote: '' }), /at least one remote/);
    assert.throws(() => vxlanOptions.parse({ type: 'vxlan', vni: '1', remote: '192.0.2.2,2001:db8::2' }), /different families/);
    assert.throws(() => vxlanOptions.parse({ type: 'vxlan', vni: '1', remote: '192.0.2.2,192.0.2.2' }), /twice/);
    assert.throws(() => vxlanOptions.parse({ type: 'vxlan', vni: '1', remote: '192.0.2.2', local: '2001:db8::1' }), /different families/);
    assert.throws(() => vxlanOptions.parse({ type: 'vxlan', vni: '1', remote: 'host.example' }), /not an IPv4 or IPv6/);
  });
});
