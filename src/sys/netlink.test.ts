// rtnetlink encoding and decoding, without a kernel. The expected requests are the bytes iproute2
// 6.1 sends for the same command lines (`strace -xx -e trace=sendmsg ip ...`, sequence number 7).
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  addrRequest, attrs, decodeAck, decodeLink, formatMac, getLinkRequest, messages, NlWriter, parseAddr, parseMac, parsePrefix, routeRequest, setLinkRequest,
  AF_INET, AF_INET6, IFLA_ADDRESS, IFLA_EXT_MASK, IFLA_IFNAME, IFLA_MTU, IFLA_OPERSTATE, IFLA_STATS64, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLMSG_ERROR,
  NLMSGERR_ATTR_MSG, RTEXT_FILTER_SKIP_STATS, RTM_GETLINK, RTM_NEWLINK,
} from './netlink.ts';

const SEQ = 7;
/** A request as strace prints it: the header's fields, then the payload's bytes. */
function req(type: number, flags: number, payload: string): string {
  const body = Buffer.from(payload.replace(/\\x/g, ''), 'hex');
  const h = Buffer.alloc(16);
  h.writeUInt32LE(16 + body.length, 0);
  h.writeUInt16LE(type, 4);
  h.writeUInt16LE(flags, 6);
  h.writeUInt32LE(SEQ, 8);
  return Buffer.concat([h, body]).toString('hex');
}
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const pfx = (s: string) => parsePrefix(s)!;
const addr = (s: string) => parseAddr(s)!;

test('netlink: requests are byte for byte what ip sends for the same command', () => {
  const w = new NlWriter();
  // ip link set dev d0 address 02:00:00:00:00:01 mtu 9000 (d0 is ifindex 3)
  assert.equal(hex(setLinkRequest(w, SEQ, 3, undefined, { mac: parseMac('02:00:00:00:00:01'), mtu: 9000 })),
    req(0x10, 0x5, '\\x00\\x00\\x00\\x00\\x03\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x0a\\x00\\x01\\x00\\x02\\x00\\x00\\x00\\x00\\x01\\x00\\x00\\x08\\x00\\x04\\x00\\x28\\x23\\x00\\x00'));
  // ip link set dev d0 up
  assert.equal(hex(setLinkRequest(w, SEQ, 3, undefined, { up: true })),
    req(0x10, 0x5, '\\x00\\x00\\x00\\x00\\x03\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x01\\x00\\x00\\x00'));
  // ip addr replace 10.0.0.2/24 dev d0
  assert.equal(hex(addrRequest(w, SEQ, 3, pfx('10.0.0.2/24'))),
    req(0x14, 0x505, '\\x02\\x18\\x00\\x00\\x03\\x00\\x00\\x00\\x08\\x00\\x02\\x00\\x0a\\x00\\x00\\x02\\x08\\x00\\x01\\x00\\x0a\\x00\\x00\\x02'));
  // ip addr replace fd00::2/64 dev d0
  assert.equal(hex(addrRequest(w, SEQ, 3, pfx('fd00::2/64'))),
    req(0x14, 0x505, '\\x0a\\x40\\x00\\x00\\x03\\x00\\x00\\x00\\x14\\x00\\x02\\x00\\xfd' + '\\x00'.repeat(14) + '\\x02\\x14\\x00\\x01\\x00\\xfd' + '\\x00'.repeat(14) + '\\x02'));
  // ip addr replace 127.0.0.5/8 dev lo: scope host
  assert.equal(hex(addrRequest(w, SEQ, 1, pfx('127.0.0.5/8'))),
    req(0x14, 0x505, '\\x02\\x08\\x00\\xfe\\x01\\x00\\x00\\x00\\x08\\x00\\x02\\x00\\x7f\\x00\\x00\\x05\\x08\\x00\\x01\\x00\\x7f\\x00\\x00\\x05'));
  // ip route replace 10.1.0.0/16 via 10.0.0.1 dev d0: scope universe
  assert.equal(hex(routeRequest(w, SEQ, 3, pfx('10.1.0.0/16'), addr('10.0.0.1'))),
    req(0x18, 0x505, '\\x02\\x10\\x00\\x00\\xfe\\x03\\x00\\x01\\x00\\x00\\x00\\x00\\x08\\x00\\x01\\x00\\x0a\\x01\\x00\\x00\\x08\\x00\\x05\\x00\\x0a\\x00\\x00\\x01\\x08\\x00\\x04\\x00\\x03\\x00\\x00\\x00'));
  // ip route replace 0.0.0.0/0 via 10.0.0.1 dev d0
  assert.equal(hex(routeRequest(w, SEQ, 3, pfx('0.0.0.0/0'), addr('10.0.0.1'))),
    req(0x18, 0x505, '\\x02\\x00\\x00\\x00\\xfe\\x03\\x00\\x01\\x00\\x00\\x00\\x00\\x08\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x08\\x00\\x05\\x00\\x0a\\x00\\x00\\x01\\x08\\x00\\x04\\x00\\x03\\x00\\x00\\x00'));
  // ip route replace 10.2.0.0/16 dev d0: on the link, scope link
  assert.equal(hex(routeRequest(w, SEQ, 3, pfx('10.2.0.0/16'))),
    req(0x18, 0x505, '\\x02\\x10\\x00\\x00\\xfe\\x03\\xfd\\x01\\x00\\x00\\x00\\x00\\x08\\x00\\x01\\x00\\x0a\\x02\\x00\\x00\\x08\\x00\\x04\\x00\\x03\\x00\\x00\\x00'));
  // ip -6 route replace ::/0 via fd00::1 dev d0
  assert.equal(hex(routeRequest(w, SEQ, 3, pfx('::/0'), addr('fd00::1'))),
    req(0x18, 0x505, '\\x0a\\x00\\x00\\x00\\xfe\\x03\\x00\\x01\\x00\\x00\\x00\\x00\\x14\\x00\\x01\\x00' + '\\x00'.repeat(16) + '\\x14\\x00\\x05\\x00\\xfd' + '\\x00'.repeat(14) + '\\x01\\x08\\x00\\x04\\x00\\x03\\x00\\x00\\x00'));
});

test('netlink: RTM_GETLINK by name, NUL-terminated and padded; counters skipped unless asked', () => {
  const w = new NlWriter();
  const r = getLinkRequest(w, SEQ, 'eth0', false);
  const [m, ...rest] = messages(r, r.length);
  assert.equal(rest.length, 0);
  assert.deepEqual([m!.type, m!.flags, m!.seq, m!.end], [RTM_GETLINK, 0x5, SEQ, r.length]);
  const a = attrs(r, m!.off + 16, m!.end);
  const [off, len] = a.get(IFLA_IFNAME)!;
  assert.equal(Buffer.from(r.subarray(off, off + len)).toString('latin1'), 'eth0\0');
  assert.equal(new DataView(r.buffer).getUint32(a.get(IFLA_EXT_MASK)![0], true), RTEXT_FILTER_SKIP_STATS);
  assert.equal(r.length % 4, 0);
  const s = getLinkRequest(w, SEQ, 'eth0', true);
  assert.equal(attrs(s, 32, s.length).has(IFLA_EXT_MASK), false);
  // By name when the index is not known (lo): IFLA_IFNAME and index 0.
  const lo = setLinkRequest(w, SEQ, 0, 'lo', { up: true });
  assert.equal(new DataView(lo.buffer).getInt32(20, true), 0);
  assert.ok(attrs(lo, 32, lo.length).has(IFLA_IFNAME));
});

test('netlink: a request that would not fit its buffer is refused, not truncated', () => {
  const w = new NlWriter(64);
  assert.throws(() => w.begin(RTM_NEWLINK, 5, 1, 16).attr(IFLA_IFNAME, new Uint8Array(40)), /netlink request over 64 bytes/);
});

/** An ack as the kernel writes it: error, the echoed request header (and its payload unless capped), then TLVs. */
function ack(errno: number, opts: { capped?: boolean; echoedPayload?: number; msg?: string } = {}): Uint8Array {
  const echoed = opts.capped ? 0 : opts.echoedPayload ?? 0;
  const tlv = opts.msg === undefined ? Buffer.alloc(0) : (() => {
    const s = Buffer.from(`${opts.msg}\0`);
    const t = Buffer.alloc((4 + s.length + 3) & ~3);
    t.writeUInt16LE(4 + s.length, 0);
    t.writeUInt16LE(NLMSGERR_ATTR_MSG, 2);
    s.copy(t, 4);
    return t;
  })();
  const b = Buffer.alloc(16 + 4 + 16 + echoed + tlv.length);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt16LE(NLMSG_ERROR, 4);
  b.writeUInt16LE((opts.capped ? NLM_F_CAPPED : 0) | (opts.msg === undefined ? 0 : NLM_F_ACK_TLVS), 6);
  b.writeUInt32LE(SEQ, 8);
  b.writeInt32LE(-errno, 16);
  b.writeUInt32LE(16 + echoed, 20); // the echoed request's nlmsg_len
  tlv.copy(b, 36 + echoed);
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}

test('netlink: acks: success, errno, and the extended-ack text whether the request was echoed or not', () => {
  for (const [b, want] of [
    [ack(0, { capped: true }), { errno: 0, message: undefined }],
    [ack(17, { capped: true }), { errno: 17, message: undefined }],
    [ack(101, { capped: true, msg: 'Nexthop has invalid gateway' }), { errno: 101, message: 'Nexthop has invalid gateway' }],
    [ack(22, { echoedPayload: 28, msg: 'Invalid prefix for given prefix length' }), { errno: 22, message: 'Invalid prefix for given prefix length' }],
    [ack(19, { echoedPayload: 16 }), { errno: 19, message: undefined }],
  ] as const) {
    const [m] = messages(b, b.length);
    assert.equal(m!.type, NLMSG_ERROR);
    assert.deepEqual(decodeAck(b, m!), want);
  }
  const short = ack(0, { capped: true }).subarray(0, 24);
  new DataView(short.buffer, short.byteOffset).setUint32(0, 24, true);
  assert.throws(() => decodeAck(short, messages(short, 24)[0]!), /malformed netlink ack/);
});

test('netlink: messages() walks a datagram of several messages and refuses a length that runs past it', () => {
  const a = ack(0, { capped: true });
  const two = new Uint8Array(a.length * 2);
  two.set(a);
  two.set(a, a.length);
  assert.equal(messages(two, two.length).length, 2);
  assert.throws(() => messages(two, two.length - 1), /malformed netlink message: length 36 at 36 of 71/);
  const bad = Uint8Array.from(a);
  new DataView(bad.buffer).setUint32(0, 8, true);
  assert.throws(() => messages(bad, bad.length), /length 8/);
  // attrs() stops at an attribute that claims more than is there, rather than reading past.
  const w = new NlWriter();
  const r = w.begin(RTM_NEWLINK, 0, 1, 16).attrU32(IFLA_MTU, 1500).attrU32(IFLA_ADDRESS, 1).end();
  new DataView(r.buffer).setUint16(40, 200, true);
  assert.deepEqual([...attrs(r, 32, r.length).keys()], [IFLA_MTU]);
});

test('netlink: an RTM_NEWLINK answer decodes to what ip -s -j link shows', () => {
  const w = new NlWriter(1024);
  const stats = new Uint8Array(200); // struct rtnl_link_stats64 (Linux 6.x)
  const sv = new DataView(stats.buffer);
  [5, 7, 500, 700, 0, 0, 2, 3].forEach((v, i) => sv.setBigUint64(8 * i, BigInt(v), true));
  sv.setBigUint64(0, 2n ** 40n, true);
  const m = w.begin(RTM_NEWLINK, 0, SEQ, 16).u32(4, 42).u32(8, 0x11043)
    .attrStr(IFLA_IFNAME, 'eth0').attrU32(IFLA_MTU, 9000).attr(IFLA_ADDRESS, parseMac('02:00:0A:0b:00:01')!)
    .attr(IFLA_OPERSTATE, Uint8Array.of(6)).attr(IFLA_STATS64, stats).end();
  const [msg] = messages(m, m.length);
  assert.deepEqual(decodeLink(m, msg!), {
    index: 42, flags: 0x11043, ifname: 'eth0', mac: '02:00:0a:0b:00:01', mtu: 9000, operstate: 'UP',
    stats: { rxPackets: 2 ** 40, txPackets: 7, rxBytes: 500, txBytes: 700, rxDropped: 2, txDropped: 3 },
  });
  const bare = w.begin(RTM_NEWLINK, 0, SEQ, 16).u32(4, 1).attrStr(IFLA_IFNAME, 'lo').attr(IFLA_OPERSTATE, Uint8Array.of(3)).end();
  assert.deepEqual(decodeLink(bare, messages(bare, bare.length)[0]!), { index: 1, flags: 0, ifname: 'lo', mac: '', mtu: 0, operstate: 'LOWERLAYERDOWN', stats: undefined });
});

test('netlink: addresses: IPv4, IPv6 in every written form, prefixes, MACs', () => {
  assert.deepEqual(parseAddr('10.0.0.1'), { family: AF_INET, bytes: Uint8Array.of(10, 0, 0, 1) });
  const v6 = (s: string) => hex(parseAddr(s)!.bytes);
  assert.equal(v6('::'), '0'.repeat(32));
  assert.equal(v6('::1'), '0'.repeat(31) + '1');
  assert.equal(v6('fd00::'), 'fd00' + '0'.repeat(28));
  assert.equal(v6('2001:db8:0:0:1:0:0:1'), '20010db8000000000001000000000001');
  assert.equal(v6('2001:DB8::1:0:0:1'), '20010db8000000000001000000000001');
  assert.equal(v6('::ffff:10.1.2.3'), '00000000000000000000ffff0a010203');
  assert.equal(v6('1:2:3:4:5:6:7::'), '00010002000300040005000600070000');
  assert.equal(parseAddr('fd00::1')!.family, AF_INET6);
  for (const bad of ['', '10.0.0', '10.0.0.256', '010.0.0.1', '1.2.3.4.5', ':::', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7:8::', 'fe80::1%eth0', '12345::', 'g::', '::1.2.3', ' ::1']) {
    assert.equal(parseAddr(bad), undefined, bad);
  }
  assert.deepEqual(parsePrefix('10.0.0.1/24'), { family: AF_INET, bytes: Uint8Array.of(10, 0, 0, 1), len: 24 });
  assert.equal(parsePrefix('10.0.0.1')!.len, 32);
  assert.equal(parsePrefix('fd00::1')!.len, 128);
  assert.equal(parsePrefix('fd00::/128')!.len, 128);
  for (const bad of ['10.0.0.1/33', 'fd00::/129', '10.0.0.1/', '10.0.0.1/2/3', '10.0.0.1/x', '/24', '10.0.0.300/24']) assert.equal(parsePrefix(bad), undefined, bad);
  assert.equal(formatMac(parseMac('02:AB:cd:00:00:01')!), '02:ab:cd:00:00:01');
  for (const bad of ['02:00:00:00:00', '02-00-00-00-00-01', '02:00:00:00:00:001', '']) assert.equal(parseMac(bad), undefined, bad);
});

test('netlink: parseAddr agrees with node:net on what is an address, and reads back any IPv6 address in full or compressed form', () => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (b) => {
    const groups = Array.from({ length: 8 }, (_, i) => ((b[2 * i]! << 8) | b[2 * i + 1]!).toString(16));
    const full = groups.join(':');
    const compressed = new URL(`http://[${full}]/`).hostname.slice(1, -1); // the URL parser writes the canonical (RFC 5952) form
    for (const s of [full, compressed]) assert.equal(hex(parseAddr(s)!.bytes), hex(b), s);
  }), { numRuns: 500 });
  const chars = fc.constantFrom(...'0123456789abcdef:.'.split(''));
  fc.assert(fc.property(fc.array(chars, { maxLength: 24 }).map((a) => a.join('')), (s) => {
    assert.equal(parseAddr(s) !== undefined, isIP(s) !== 0, s);
  }), { numRuns: 5000 });
  fc.assert(fc.property(fc.ipV4(), fc.ipV6(), (a, b) => {
    assert.ok(parseAddr(a) && parseAddr(b), `${a} ${b}`);
  }), { numRuns: 500 });
});
