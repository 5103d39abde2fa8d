import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { C, newCounters } from './counters.ts';
import { PacketPool, VNET_HDR } from './pool.ts';
import { GUARD_OK, JUDGED_COPY_MAX, JUDGED_COPY_MIN, PortGuard, type GuardIdentity } from './port-guard.ts';

// Deterministic by default; set FC_SEED to explore other inputs (a failure prints its seed).
fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 20241124) });

// The port's own MAC (its EUI-64 link-local is fe80::5054:ff:fe12:3456), a second allowed MAC
// (a VRRP-style virtual MAC with an address of its own), and a neighbour's.
const OWN = '52:54:00:12:34:56';
const OWN_LL = 'fe80::5054:ff:fe12:3456';
const VIRT = '00:00:5e:00:01:07';
const VIRT_LL = 'fe80::200:5eff:fe00:107';
const OTHER = '52:54:00:aa:bb:cc';

const identity: GuardIdentity = {
  macs: [OWN, VIRT],
  addresses: [
    { ip: '10.0.0.5' },
    { ip: '10.0.1.0/24' },
    { ip: '10.0.0.100', mac: VIRT },
    { ip: 'fd00::5' },
    { ip: 'fd00:1::/64' },
    { ip: 'fd00::100', mac: VIRT },
  ],
  trunk: false,
};
const guard = new PortGuard(identity);
const trunkGuard = new PortGuard({ ...identity, trunk: true });

const VERDICTS = new Set([GUARD_OK, C.rx_dropped_spoofed_mac, C.rx_dropped_spoofed_ip, C.rx_dropped_spoofed_arp, C.rx_dropped_spoofed_nd,
  C.rx_dropped_ra, C.rx_dropped_dhcp_server, C.rx_dropped_unjudgeable, C.rx_dropped_vlan]);

// ---- frames, built by hand ----

const macBytes = (s: string): number[] => s.split(':').map((x) => parseInt(x, 16));
const ip4 = (s: string): number[] => s.split('.').map(Number);
function ip6(s: string): number[] {
  const [head = '', tail = ''] = s.split('::');
  const hs = head === '' ? [] : head.split(':');
  const ts = tail === '' ? [] : tail.split(':');
  const groups = [...hs, ...new Array<string>(8 - hs.length - ts.length).fill('0'), ...ts];
  return groups.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]);
}
const be16 = (n: number): number[] => [n >> 8, n & 0xff];

function eth(src: string, type: number, payload: number[], dst = 'ff:ff:ff:ff:ff:ff'): Uint8Array {
  return Uint8Array.from([...macBytes(dst), ...macBytes(src), ...be16(type), ...payload]);
}
/** An 802.1Q-tagged frame: TPID, VID, then the inner EtherType. */
function tagged(src: string, vid: number, type: number, payload: number[], tpid = 0x8100): Uint8Array {
  return eth(src, tpid, [...be16(vid), ...be16(type), ...payload]);
}

interface Ip4Opts { dst?: string; frag?: number; more?: boolean; options?: number[]; version?: number; total?: number }
/** An IPv4 packet; `frag` is the fragment offset in 8-byte units. */
function ipv4(src: string, proto: number, payload: number[], o: Ip4Opts = {}): number[] {
  const opts = o.options ?? [];
  const hl = 20 + opts.length;
  const frag = o.frag ?? 0;
  return [((o.version ?? 4) << 4) | (hl / 4), 0, ...be16(o.total ?? hl + payload.length), 0, 1, (o.more === true ? 0x20 : 0) | (frag >> 8), frag & 0xff,
    64, proto, 0, 0, ...ip4(src), ...ip4(o.dst ?? '10.0.0.1'), ...opts, ...payload];
}
const udp = (sport: number, dport: number, data: number[] = [1, 2, 3, 4]): number[] => [...be16(sport), ...be16(dport), ...be16(8 + data.length), 0, 0, ...data];
const tcp = (sport: number, dport: number): number[] => [...be16(sport), ...be16(dport), ...new Array<number>(16).fill(0)];
/** A DHCP client message: BOOTREQUEST, the rest zeros. */
const dhcpRequest = (): number[] => udp(68, 67, [1, 1, 6, 0, ...new Array<number>(40).fill(0)]);
const dhcpOffer = (): number[] => udp(67, 68, [2, 1, 6, 0, ...new Array<number>(40).fill(0)]);
const ipv4Frame = (mac: string, src: string, proto: number, payload: number[], o?: Ip4Opts): Uint8Array => eth(mac, 0x0800, ipv4(src, proto, payload, o));

function arp(sha: string, spa: string, tpa: string, op = 1): number[] {
  return [0, 1, 0x08, 0x00, 6, 4, ...be16(op), ...macBytes(sha), ...ip4(spa), 0, 0, 0, 0, 0, 0, ...ip4(tpa)];
}

interface Ip6Opts { dst?: string; plen?: number; version?: number }
function ipv6(src: string, next: number, payload: number[], o: Ip6Opts = {}): number[] {
  return [(o.version ?? 6) << 4, 0, 0, 0, ...be16(o.plen ?? payload.length), next, 255, ...ip6(src), ...ip6(o.dst ?? 'ff02::1'), ...payload];
}
const ipv6Frame = (mac: string, src: string, next: number, payload: number[], o?: Ip6Opts): Uint8Array => eth(mac, 0x86dd, ipv6(src, next, payload, o));
/** A hop-by-hop or destination options header of 8 bytes (a PadN option), then `next`. */
const optionsHeader = (next: number): number[] => [next, 0, 1, 4, 0, 0, 0, 0];
/** A fragment header: `offset` in 8-byte units, `more` the M flag. */
const fragmentHeader = (next: number, offset: number, more: boolean): number[] => [next, 0, ...be16((offset << 3) | (more ? 1 : 0)), 0, 0, 0, 7];
const icmp6 = (type: number, body: number[]): number[] => [type, 0, 0, 0, ...body];
const lla = (type: number, mac: string): number[] => [type, 1, ...macBytes(mac)];
const ns = (target: string, options: number[] = []): number[] => icmp6(135, [0, 0, 0, 0, ...ip6(target), ...options]);
const na = (target: string, options: number[] = []): number[] => icmp6(136, [0x60, 0, 0, 0, ...ip6(target), ...options]);
const ra = (): number[] => icmp6(134, [64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);
const rs = (options: number[] = []): number[] => icmp6(133, [0, 0, 0, 0, ...options]);
/** An MLDv2 report with one record, behind a hop-by-hop header (router alert) as hosts send it. */
const mld2 = (): number[] => [58, 0, 5, 2, 0, 0, 1, 0, ...icmp6(143, [0, 0, 0, 1, 4, 0, 0, 0, ...ip6('ff02::1:ff12:3456')])];

const verdict = (f: Uint8Array, g = guard): number => g.check(f, 0, f.length);

// ---- the rules ----

describe('Ethernet source', () => {
  test('the port MACs pass, any other source is spoofed_mac, a group source always is', () => {
    assert.equal(verdict(eth(OWN, 0x88cc, [1, 2, 3])), GUARD_OK);
    assert.equal(verdict(eth(VIRT, 0x88cc, [1, 2, 3])), GUARD_OK);
    assert.equal(verdict(eth(OTHER, 0x88cc, [1, 2, 3])), C.rx_dropped_spoofed_mac);
    assert.equal(verdict(eth('53:54:00:12:34:56', 0x88cc, [])), C.rx_dropped_spoofed_mac, 'OWN with the group bit set');
    assert.equal(verdict(eth('ff:ff:ff:ff:ff:ff', 0x0800, ipv4('10.0.0.5', 6, tcp(1, 2)))), C.rx_dropped_spoofed_mac);
  });

  test('a frame shorter than an Ethernet header is unjudgeable; other EtherTypes get the MAC check only', () => {
    const f = eth(OWN, 0x88cc, []);
    assert.equal(verdict(f.subarray(0, 13)), C.rx_dropped_unjudgeable);
    assert.equal(verdict(new Uint8Array(0)), C.rx_dropped_unjudgeable);
    assert.equal(verdict(f), GUARD_OK, 'an LLDP frame of 14 bytes');
    assert.equal(verdict(eth(OWN, 0x0026, [0x42, 0x42, 0x03])), GUARD_OK, 'an 802.3 length/LLC frame');
  });
});

describe('VLAN tags', () => {
  test('a tagged frame on a port that is not a trunk is the VLAN drop, for each TPID', () => {
    for (const tpid of [0x8100, 0x88a8, 0x9100]) {
      assert.equal(verdict(tagged(OWN, 10, 0x0800, ipv4('10.0.0.5', 6, tcp(1, 2)), tpid)), C.rx_dropped_vlan);
    }
  });

  test('on a trunk the guard looks past one tag and judges the inner frame', () => {
    assert.equal(verdict(tagged(OWN, 10, 0x0800, ipv4('10.0.0.5', 6, tcp(1, 2))), trunkGuard), GUARD_OK);
    assert.equal(verdict(tagged(OWN, 10, 0x0800, ipv4('10.9.9.9', 6, tcp(1, 2))), trunkGuard), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(tagged(OTHER, 10, 0x0800, ipv4('10.0.0.5', 6, tcp(1, 2))), trunkGuard), C.rx_dropped_spoofed_mac);
    assert.equal(verdict(tagged(OWN, 10, 0x86dd, ipv6(OWN_LL, 58, ra())), trunkGuard), C.rx_dropped_ra);
    assert.equal(verdict(tagged(OWN, 10, 0x0806, arp(OTHER, '10.0.0.5', '10.0.0.1')), trunkGuard), C.rx_dropped_spoofed_arp);
  });

  test('on a trunk a second tag, or a tag cut short, is the VLAN drop', () => {
    const double = tagged(OWN, 0, 0x8100, [0, 20, 0x08, 0x00, ...ipv4('10.0.0.5', 6, tcp(1, 2))]);
    assert.equal(verdict(double, trunkGuard), C.rx_dropped_vlan);
    const f = tagged(OWN, 10, 0x0800, ipv4('10.0.0.5', 6, tcp(1, 2)));
    assert.equal(verdict(f.subarray(0, 16), trunkGuard), C.rx_dropped_vlan);
  });
});

describe('IPv4', () => {
  test('an allowed address or an address in an allowed prefix passes; any other is spoofed_ip', () => {
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2))), GUARD_OK);
    assert.equal(verdict(ipv4Frame(OWN, '10.0.1.77', 17, udp(5353, 5353))), GUARD_OK);
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.6', 6, tcp(1, 2))), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(ipv4Frame(OWN, '10.0.2.1', 6, tcp(1, 2))), C.rx_dropped_spoofed_ip);
  });

  test('a MAC/IP pair applies to its MAC only; a plain address to every allowed MAC', () => {
    assert.equal(verdict(ipv4Frame(VIRT, '10.0.0.100', 112, [1, 2, 3, 4])), GUARD_OK);
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.100', 112, [1, 2, 3, 4])), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(ipv4Frame(VIRT, '10.0.0.5', 112, [1, 2, 3, 4])), GUARD_OK);
  });

  test('the cache of the last source that passed is per MAC', () => {
    // A burst from VIRT/10.0.0.100, then the same address from OWN, then VIRT again.
    assert.equal(verdict(ipv4Frame(VIRT, '10.0.0.100', 6, tcp(1, 2))), GUARD_OK);
    assert.equal(verdict(ipv4Frame(VIRT, '10.0.0.100', 6, tcp(1, 2))), GUARD_OK);
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.100', 6, tcp(1, 2))), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(ipv4Frame(VIRT, '10.0.0.100', 6, tcp(1, 2))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(VIRT, 'fd00::100', 6, tcp(1, 2))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::100', 6, tcp(1, 2))), C.rx_dropped_spoofed_ip);
  });

  test('0.0.0.0 is allowed only for a DHCP client (UDP 68 -> 67)', () => {
    assert.equal(verdict(ipv4Frame(OWN, '0.0.0.0', 17, dhcpRequest(), { dst: '255.255.255.255' })), GUARD_OK);
    assert.equal(verdict(ipv4Frame(OWN, '0.0.0.0', 17, udp(68, 68))), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(ipv4Frame(OWN, '0.0.0.0', 17, udp(1000, 67))), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(ipv4Frame(OWN, '0.0.0.0', 6, tcp(68, 67))), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(ipv4Frame(OWN, '0.0.0.0', 17, udp(68, 67), { frag: 3 })), C.rx_dropped_spoofed_ip, 'a later fragment has no ports');
  });

  test('UDP from port 67 is a DHCP server, even from an allowed address', () => {
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 17, dhcpOffer())), C.rx_dropped_dhcp_server);
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 17, udp(67, 67))), C.rx_dropped_dhcp_server, 'a relay');
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 17, udp(68, 67))), GUARD_OK);
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 6, tcp(67, 1000))), GUARD_OK, 'TCP from 67 is not DHCP');
  });

  test('UDP ports are read after IP options', () => {
    const options = [0x94, 4, 0, 0]; // router alert
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 17, udp(67, 68), { options })), C.rx_dropped_dhcp_server);
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 17, udp(1067, 68), { options })), GUARD_OK);
  });

  test('headers the guard cannot read to the end are unjudgeable; Ethernet padding is not', () => {
    const good = ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2));
    assert.equal(verdict(good.subarray(0, 14 + 19)), C.rx_dropped_unjudgeable, 'shorter than 20 bytes');
    const ihl4 = good.slice();
    ihl4[14] = 0x44;
    assert.equal(verdict(ihl4), C.rx_dropped_unjudgeable, 'IHL 4');
    const v6 = good.slice();
    v6[14] = 0x65;
    assert.equal(verdict(v6), C.rx_dropped_unjudgeable, 'version 6 under EtherType IPv4');
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2), { total: 41 })), C.rx_dropped_unjudgeable, 'total past the frame');
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2), { total: 19 })), C.rx_dropped_unjudgeable, 'total under the header');
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2), { options: [1, 1, 1, 1], total: 22 })), C.rx_dropped_unjudgeable, 'total under IHL');
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 17, [0, 67, 0])), C.rx_dropped_unjudgeable, 'UDP header cut short');
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 6, [...tcp(1, 2), 0, 0, 0, 0], { total: 40 })), GUARD_OK, 'padding after total');
  });

  test('fragments: a later fragment carries no ports; a first fragment must hold the UDP header', () => {
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 17, udp(67, 68), { frag: 185 })), GUARD_OK, 'bytes that look like port 67 in a later fragment');
    assert.equal(verdict(ipv4Frame(OWN, '10.9.9.9', 17, udp(1, 2), { frag: 185 })), C.rx_dropped_spoofed_ip, 'its source is still checked');
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 17, [0, 1, 0, 2], { more: true })), C.rx_dropped_unjudgeable, 'first fragment, 4 bytes of UDP');
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 17, udp(67, 68), { more: true })), C.rx_dropped_dhcp_server);
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 17, udp(5000, 53), { more: true })), GUARD_OK);
  });
});

describe('ARP', () => {
  test('requests, replies and probes with the port identity pass', () => {
    assert.equal(verdict(eth(OWN, 0x0806, arp(OWN, '10.0.0.5', '10.0.0.1'))), GUARD_OK);
    assert.equal(verdict(eth(OWN, 0x0806, arp(OWN, '10.0.0.5', '10.0.0.1', 2), '52:54:00:00:00:01')), GUARD_OK);
    assert.equal(verdict(eth(OWN, 0x0806, arp(OWN, '0.0.0.0', '10.0.0.5'))), GUARD_OK, 'a probe');
    assert.equal(verdict(eth(VIRT, 0x0806, arp(VIRT, '10.0.0.100', '10.0.0.100'))), GUARD_OK, 'a gratuitous ARP for the virtual address');
  });

  test('a sender MAC other than the Ethernet source, or a sender IP not allowed for it, is spoofed_arp', () => {
    assert.equal(verdict(eth(OWN, 0x0806, arp(VIRT, '10.0.0.5', '10.0.0.1'))), C.rx_dropped_spoofed_arp);
    assert.equal(verdict(eth(OWN, 0x0806, arp(OWN, '10.0.0.1', '10.0.0.7', 2))), C.rx_dropped_spoofed_arp);
    assert.equal(verdict(eth(OWN, 0x0806, arp(OWN, '10.0.0.100', '10.0.0.100'))), C.rx_dropped_spoofed_arp, 'VIRT address from OWN');
  });

  test('anything but a whole Ethernet/IPv4 ARP is spoofed_arp', () => {
    const good = arp(OWN, '10.0.0.5', '10.0.0.1');
    const bad = (at: number, value: number): Uint8Array => eth(OWN, 0x0806, good.map((x, i) => (i === at ? value : x)));
    assert.equal(verdict(bad(1, 6)), C.rx_dropped_spoofed_arp, 'hardware type 6');
    assert.equal(verdict(bad(2, 0x86)), C.rx_dropped_spoofed_arp, 'protocol type');
    assert.equal(verdict(bad(4, 8)), C.rx_dropped_spoofed_arp, 'hardware length 8');
    assert.equal(verdict(bad(5, 16)), C.rx_dropped_spoofed_arp, 'protocol length 16');
    assert.equal(verdict(eth(OWN, 0x0806, good.slice(0, 27))), C.rx_dropped_spoofed_arp, '27 bytes');
  });
});

describe('IPv6', () => {
  test('allowed addresses, prefixes and MAC/IP pairs pass; others are spoofed_ip', () => {
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 6, tcp(1, 2))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00:1::abcd:1', 17, udp(1, 2))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00:2::1', 6, tcp(1, 2))), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::6', 6, tcp(1, 2))), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(ipv6Frame(VIRT, 'fd00::100', 6, tcp(1, 2))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::100', 6, tcp(1, 2))), C.rx_dropped_spoofed_ip);
  });

  test('the EUI-64 link-local of the frame source MAC passes, no other link-local does', () => {
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 6, tcp(1, 2))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(VIRT, VIRT_LL, 6, tcp(1, 2))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, VIRT_LL, 6, tcp(1, 2))), C.rx_dropped_spoofed_ip, "the other MAC's");
    assert.equal(verdict(ipv6Frame(OWN, 'fe80::5254:ff:fe12:3456', 6, tcp(1, 2))), C.rx_dropped_spoofed_ip, 'U/L bit not flipped');
    assert.equal(verdict(ipv6Frame(OWN, 'fe80:0:0:1:5054:ff:fe12:3456', 6, tcp(1, 2))), C.rx_dropped_spoofed_ip, 'outside fe80::/64');
  });

  test(':: is allowed for duplicate address detection of an allowed address, and MLDv2 reports', () => {
    assert.equal(verdict(ipv6Frame(OWN, '::', 58, ns('fd00::5'), { dst: 'ff02::1:ff00:5' })), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, '::', 58, ns(OWN_LL))), GUARD_OK, 'DAD of the link-local');
    assert.equal(verdict(ipv6Frame(OWN, '::', 58, ns('fd00::7'))), C.rx_dropped_spoofed_nd, "DAD for a neighbour's address");
    assert.equal(verdict(ipv6Frame(OWN, '::', 58, ns('fd00::100'))), C.rx_dropped_spoofed_nd, 'DAD for an address of the other MAC');
    assert.equal(verdict(ipv6Frame(OWN, '::', 0, mld2(), { dst: 'ff02::16' })), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, '::', 17, udp(546, 547))), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(ipv6Frame(OWN, '::', 58, icmp6(128, [0, 1, 0, 1]))), C.rx_dropped_spoofed_ip, 'echo request');
    assert.equal(verdict(ipv6Frame(OWN, '::', 58, na('fd00::5'))), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(ipv6Frame(OWN, '::', 58, rs())), C.rx_dropped_spoofed_ip);
  });

  test('router advertisements and redirects are the RA drop, behind extension headers too', () => {
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 58, ra())), C.rx_dropped_ra);
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 58, icmp6(137, new Array<number>(36).fill(0)))), C.rx_dropped_ra);
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 0, [...optionsHeader(60), ...optionsHeader(58), ...ra()])), C.rx_dropped_ra);
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 58, rs(lla(1, OWN)))), GUARD_OK, 'a router solicitation');
  });

  test('UDP from port 547 is a DHCPv6 server or relay', () => {
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 17, udp(547, 546))), C.rx_dropped_dhcp_server);
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 17, udp(546, 547), { dst: 'ff02::1:2' })), GUARD_OK);
  });

  test('a neighbour solicitation may ask for anyone, with a source link-layer address of an allowed MAC', () => {
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, ns('fd00::7', lla(1, OWN)))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, ns('fd00::7', lla(1, VIRT)))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, ns('fd00::7', lla(1, OTHER)))), C.rx_dropped_spoofed_nd);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, ns('fd00::7', [...lla(14, OTHER), ...lla(1, OTHER)]))), C.rx_dropped_spoofed_nd, 'after another option');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, ns('fd00::7', lla(2, OTHER)))), GUARD_OK, 'a target option is not a solicitation\'s');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, ns('fd00::7', [1, 0, ...macBytes(OWN)]))), C.rx_dropped_spoofed_nd, 'zero-length option');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, ns('fd00::7', [1, 2, ...macBytes(OWN)]))), C.rx_dropped_spoofed_nd, 'option past the end');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, ns('fd00::7', [1]))), C.rx_dropped_spoofed_nd, 'one byte of option');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, ns('fd00::7').slice(0, 20))), C.rx_dropped_spoofed_nd, 'no whole target');
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 58, rs(lla(1, OTHER)))), C.rx_dropped_spoofed_nd, 'a router solicitation too');
  });

  test('a neighbour advertisement names only the MAC addresses, with an allowed target link-layer address', () => {
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, na('fd00::5', lla(2, OWN)))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 58, na(OWN_LL, lla(2, OWN)))), GUARD_OK, 'the link-local');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, na('fd00:1::9'))), GUARD_OK, 'in an allowed prefix');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, na('fd00::7', lla(2, OWN)))), C.rx_dropped_spoofed_nd, "a neighbour's address");
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, na('fd00::100'))), C.rx_dropped_spoofed_nd, "the other MAC's address");
    assert.equal(verdict(ipv6Frame(VIRT, 'fd00::100', 58, na('fd00::100', lla(2, VIRT)))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, na('fd00::5', lla(2, OTHER)))), C.rx_dropped_spoofed_nd);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, na('fd00::5', [2, 0]))), C.rx_dropped_spoofed_nd, 'zero-length option');
  });

  test('extension headers: eight are walked, a ninth or one past the payload is unjudgeable', () => {
    const chain = (count: number, last: number[], upper: number): number[] => {
      const out: number[] = [];
      for (let i = 0; i < count; i++) out.push(...optionsHeader(i === count - 1 ? upper : i % 2 === 0 ? 60 : 0));
      return [...out, ...last];
    };
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 0, chain(8, udp(1, 2), 17))), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 0, chain(8, udp(547, 2), 17))), C.rx_dropped_dhcp_server);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 0, chain(9, udp(1, 2), 17))), C.rx_dropped_unjudgeable);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 0, [6, 1, 1, 4, 0, 0, 0, 0, ...tcp(1, 2)].slice(0, 14))), C.rx_dropped_unjudgeable, 'a 16-byte header in 14');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 43, [6])), C.rx_dropped_unjudgeable, 'a routing header of one byte');
    const routing = [58, 0, 0, 0, 0, 0, 0, 0];
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 43, [...routing, ...ra()])), C.rx_dropped_ra, 'RA behind a routing header');
  });

  test('the header and payload length must fit the frame', () => {
    const f = ipv6Frame(OWN, 'fd00::5', 6, tcp(1, 2));
    assert.equal(verdict(f.subarray(0, 14 + 39)), C.rx_dropped_unjudgeable);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 6, tcp(1, 2), { plen: 21 })), C.rx_dropped_unjudgeable);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 6, tcp(1, 2), { version: 4 })), C.rx_dropped_unjudgeable);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 58, [...ra(), 0, 0, 0, 0], { plen: 3 })), C.rx_dropped_unjudgeable, 'an ICMPv6 header past the payload');
  });

  test('fragments: a later one is judged by its source; a first one must hold its upper-layer header', () => {
    const later = (src: string, body: number[]): Uint8Array => ipv6Frame(OWN, src, 44, [...fragmentHeader(17, 1, false), ...body]);
    assert.equal(verdict(later('fd00::5', udp(547, 546))), GUARD_OK, 'bytes like port 547 in a later fragment');
    assert.equal(verdict(later('fd00::5', ra())), GUARD_OK, 'or like an RA');
    assert.equal(verdict(later('fd00::9', udp(1, 2))), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(later('::', ns('fd00::5'))), C.rx_dropped_spoofed_ip, ':: is only for a whole NS');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 44, [...fragmentHeader(17, 0, true), 0x02, 0x23, 0x02, 0x22])), C.rx_dropped_unjudgeable, 'UDP cut by the fragment');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 0, [...optionsHeader(44), ...fragmentHeader(58, 0, true)])), C.rx_dropped_unjudgeable, 'no ICMPv6 header');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 44, [...fragmentHeader(17, 0, true), ...udp(547, 546)])), C.rx_dropped_dhcp_server);
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 44, [...fragmentHeader(58, 0, true), ...ra()])), C.rx_dropped_ra);
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 44, [...fragmentHeader(58, 0, true), ...na('fd00::5')])), C.rx_dropped_spoofed_nd, 'fragmented ND (RFC 6980)');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 44, [...fragmentHeader(58, 0, false), ...na('fd00::5')])), GUARD_OK, 'an atomic fragment');
    assert.equal(verdict(ipv6Frame(OWN, 'fd00::5', 44, [17, 0, 0])), C.rx_dropped_unjudgeable, 'fragment header cut short');
  });
});

describe('the identity', () => {
  test('malformed MACs and addresses are refused with the offending text', () => {
    const make = (macs: string[], ips: string[], mac?: string): PortGuard =>
      new PortGuard({ macs, addresses: ips.map((ip) => (mac === undefined ? { ip } : { ip, mac })), trunk: false });
    assert.throws(() => make([], []), /at least one MAC/);
    for (const bad of ['52:54:00:12:34', '52-54-00-12-34-56', '52:54:00:12:34:5g', '']) assert.throws(() => make([bad], []), new RegExp(`'${bad}' is not a MAC`));
    assert.throws(() => make(['01:00:5e:00:00:01'], []), /group/);
    for (const bad of ['10.0.0', '10.0.0.256', '10.0.0.5/33', '10.0.0.5/', '10.0.0.5/-1', 'fd00::/129', 'fd00:::1', '1::2::3', 'fd00::g', '1:2:3:4:5:6:7:8:9',
      '1:2:3:4:5:6:7', '1.2.3.4::', 'fd00::5%eth0', ' 10.0.0.5', 'localhost']) {
      assert.throws(() => make([OWN], [bad]), /is not an IPv4 or IPv6 address or prefix/, bad);
    }
    assert.throws(() => make([OWN], ['10.0.0.9'], OTHER), /bound to MAC 52:54:00:aa:bb:cc, which is not one of the port's MACs/);
    assert.throws(() => make([OWN], ['10.0.0.9'], 'nope'), /'nope' is not a MAC/);
  });

  test('forms of addresses: upper case, an IPv4 tail, a full IPv6 address, host bits under a prefix, /0', () => {
    const g = new PortGuard({ macs: [OWN.toUpperCase()], addresses: [{ ip: '::FFFF:10.9.9.9' }, { ip: '2001:db8:0:0:0:0:0:1' }, { ip: '192.168.7.9/16' }], trunk: false });
    assert.equal(verdict(ipv6Frame(OWN, '::ffff:a09:909', 6, tcp(1, 2)), g), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, '2001:db8::1', 6, tcp(1, 2)), g), GUARD_OK);
    assert.equal(verdict(ipv4Frame(OWN, '192.168.200.1', 6, tcp(1, 2)), g), GUARD_OK);
    assert.equal(verdict(ipv4Frame(OWN, '192.169.0.1', 6, tcp(1, 2)), g), C.rx_dropped_spoofed_ip);
    const any = new PortGuard({ macs: [OWN], addresses: [{ ip: '0.0.0.0/0' }, { ip: '::/0' }], trunk: false });
    assert.equal(verdict(ipv4Frame(OWN, '203.0.113.1', 6, tcp(1, 2)), any), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, '2001:db8::77', 6, tcp(1, 2)), any), GUARD_OK);
    assert.equal(verdict(ipv4Frame(OWN, '0.0.0.0', 6, tcp(1, 2)), any), C.rx_dropped_spoofed_ip, '0.0.0.0 stays DHCP-only');
    assert.equal(verdict(ipv6Frame(OWN, '::', 6, tcp(1, 2)), any), C.rx_dropped_spoofed_ip, ':: stays DAD/MLD-only');
  });

  test('a port with a MAC and no address may send only what needs no address', () => {
    const g = new PortGuard({ macs: [OWN], addresses: [], trunk: false });
    assert.equal(verdict(ipv4Frame(OWN, '0.0.0.0', 17, dhcpRequest()), g), GUARD_OK);
    assert.equal(verdict(ipv6Frame(OWN, OWN_LL, 58, ns('fe80::1', lla(1, OWN))), g), GUARD_OK);
    assert.equal(verdict(ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2)), g), C.rx_dropped_spoofed_ip);
    assert.equal(verdict(eth(OWN, 0x0806, arp(OWN, '10.0.0.5', '10.0.0.1')), g), C.rx_dropped_spoofed_arp);
  });
});

// ---- filter() over a real pool ----

const pool = new PacketPool(64);

function put(frame: Uint8Array): number {
  return putWith(frame, new Uint8Array(VNET_HDR));
}

/** A pool packet of `frame` behind virtio-net header `hdr`. */
function putWith(frame: Uint8Array, hdr: Uint8Array): number {
  const h = pool.alloc();
  assert.ok(h >= 0, 'test pool ran dry');
  pool.bytes.set(hdr, pool.hdrOffset(h));
  pool.bytes.set(frame, pool.frameOffset(h));
  pool.len[h] = frame.length;
  return h;
}

class Lender {
  returned: number[] = [];
  returnBuffer(tag: number): void {
    this.returned.push(tag);
  }
}

/** A virtio-net header asking for an offload: NEEDS_CSUM with csum_start/csum_offset, and a GSO type. */
function vnet(o: { csum?: [start: number, offset: number]; gso?: number; gsoSize?: number }): Uint8Array {
  const h = new Uint8Array(VNET_HDR);
  const dv = new DataView(h.buffer);
  if (o.csum) {
    h[0] = 1;
    dv.setUint16(6, o.csum[0], true);
    dv.setUint16(8, o.csum[1], true);
  }
  h[1] = o.gso ?? 0;
  dv.setUint16(4, o.gsoSize ?? 0, true);
  return h;
}

describe('offload requests from a secured port', () => {
  // The frame passes check(); what is judged is where the virtio-net header says the checksum
  // goes (whoever completes it writes there) and whether a GSO type fits the frame.
  const tcp4 = ipv4Frame(OWN, '10.0.0.5', 6, [...tcp(1, 2), ...new Array<number>(40).fill(7)]);
  const udp4 = ipv4Frame(OWN, '10.0.0.5', 17, udp(1, 2, new Array<number>(40).fill(7)));
  const tcp4opts = ipv4Frame(OWN, '10.0.0.5', 6, [...tcp(1, 2), ...new Array<number>(40).fill(7)], { options: [1, 1, 1, 1] });
  const tcp6 = ipv6Frame(OWN, 'fd00::5', 6, [...tcp(1, 2), ...new Array<number>(40).fill(7)]);
  const arp4 = eth(OWN, 0x0806, arp(OWN, '10.0.0.5', '10.0.0.1'));
  const cases: Array<[string, Uint8Array, Uint8Array, boolean]> = [
    ['TCP, checksum at its header', tcp4, vnet({ csum: [34, 16] }), true],
    ['TCP segmentation (TCPv4, ECN)', tcp4, vnet({ csum: [34, 16], gso: 0x81, gsoSize: 1448 }), true],
    ['UDP, checksum at its header', udp4, vnet({ csum: [34, 6] }), true],
    ['TCP after IPv4 options', tcp4opts, vnet({ csum: [38, 16] }), true],
    ['TCP over IPv6', tcp6, vnet({ csum: [54, 16], gso: 4, gsoSize: 1400 }), true],
    ['no request, DATA_VALID only', tcp4, Uint8Array.from([2, ...new Array<number>(11).fill(0)]), true],
    ['checksum written over the IPv4 source', tcp4, vnet({ csum: [26, 0] }), false],
    ['checksum written over the Ethernet source', tcp4, vnet({ csum: [6, 0] }), false],
    ['checksum written over the IPv6 source', tcp6, vnet({ csum: [22, 8] }), false],
    ['TCP checksum at UDP\'s offset', tcp4, vnet({ csum: [34, 6] }), false],
    ['UDP checksum written over the UDP source port (a DHCP server\'s 67 made after the check)', udp4, vnet({ csum: [28, 6] }), false],
    ['TCP checksum summed from inside the IPv4 header', tcp4, vnet({ csum: [26, 16] }), false],
    ['csum_start past an IPv4 option-less header by 4', tcp4opts, vnet({ csum: [34, 16] }), false],
    ['checksum past the frame\'s end', tcp4, vnet({ csum: [34, 200] }), false],
    ['TCPv4 segmentation of UDP', udp4, vnet({ csum: [34, 6], gso: 1, gsoSize: 100 }), false],
    ['TCPv6 segmentation of IPv4', tcp4, vnet({ csum: [34, 16], gso: 4, gsoSize: 100 }), false],
    ['an unknown GSO type', tcp4, vnet({ csum: [34, 16], gso: 9, gsoSize: 100 }), false],
    ['a checksum request on ARP', arp4, vnet({ csum: [14, 0] }), false],
  ];

  test('filter() keeps requests that name the frame\'s own TCP or UDP checksum, drops the rest as unjudgeable', () => {
    const g = new PortGuard(identity);
    const free = pool.available();
    for (const [what, frame, hdr, ok] of cases) {
      const counters = newCounters();
      const batch = Int32Array.from([putWith(frame, hdr)]);
      const n = g.filter(pool, batch, 1, counters);
      assert.equal(n, ok ? 1 : 0, what);
      assert.equal(counters[C.rx_dropped_unjudgeable], ok ? 0 : 1, what);
      if (n === 1) pool.release(batch[0]!);
    }
    assert.equal(pool.available(), free);
  });

  test('copyJudged() passes only those requests too, on a guard whose fast path is warm', () => {
    const g = new PortGuard(identity);
    const warm = ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2));
    assert.equal(g.check(warm, 0, warm.length), GUARD_OK); // remembers 10.0.0.5 for OWN
    const src = pool.alloc();
    const dst = pool.alloc();
    let fast = 0;
    for (const [what, frame, hdr, ok] of cases) {
      const so = pool.hdrOffset(src);
      pool.bytes.set(hdr, so);
      pool.bytes.set(frame, so + VNET_HDR);
      const passed = g.copyJudged(pool.bytes, pool.arena.i32, pool.hdrOffset(dst), so, VNET_HDR + frame.length);
      if (passed) fast++;
      assert.ok(!passed || ok, `${what}: passed as copied`);
      // What the fast path left, filter() judges on the copy.
      pool.refs[dst]!++;
      pool.len[dst] = frame.length;
      const counters = newCounters();
      const n = g.filter(pool, Int32Array.from([dst]), 1, counters, passed ? 1 : 0);
      assert.equal(n, ok ? 1 : 0, what);
      if (n === 1) pool.release(dst);
    }
    assert.ok(fast >= 3, `only ${fast} requests took the fast path`);
    pool.release(src);
    pool.release(dst);
  });
});

describe('filter()', () => {
  test('keeps passing frames in order at the front, releases and counts each drop by reason', () => {
    const g = new PortGuard(identity);
    const free = pool.available();
    const frames = [
      ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2)),
      eth(OTHER, 0x88cc, []),
      ipv4Frame(OWN, '10.0.0.6', 6, tcp(1, 2)),
      ipv6Frame(OWN, OWN_LL, 58, ra()),
      eth(OWN, 0x0806, arp(OWN, '10.0.0.5', '10.0.0.1')),
      ipv4Frame(OWN, '10.0.0.5', 17, dhcpOffer()),
      ipv6Frame(OWN, 'fd00::5', 17, udp(1, 2)),
      ipv4Frame(OWN, '10.0.0.7', 6, tcp(1, 2)),
    ];
    const handles = frames.map(put);
    const batch = Int32Array.from(handles);
    const counters = newCounters();
    const n = g.filter(pool, batch, batch.length, counters);
    assert.deepEqual(Array.from(batch.subarray(0, n)), [handles[0], handles[4], handles[6]]);
    assert.equal(counters[C.rx_dropped_spoofed_mac], 1);
    assert.equal(counters[C.rx_dropped_spoofed_ip], 2);
    assert.equal(counters[C.rx_dropped_ra], 1);
    assert.equal(counters[C.rx_dropped_dhcp_server], 1);
    assert.equal(pool.available(), free - n, 'the five dropped handles are back in the pool');
    for (let i = 0; i < n; i++) pool.release(batch[i]!);
    assert.equal(pool.available(), free);
  });

  test('after a frame passes, frames from the same MAC and IPv4 source are judged in full (the fast path)', () => {
    const g = new PortGuard(identity);
    const frames = [
      ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2)), // passes: the (MAC, source) the fast path remembers
      ipv4Frame(OWN, '10.0.0.5', 17, dhcpOffer()),
      ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2), { total: 200 }),
      ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2), { total: 19 }),
      ipv4Frame(OWN, '10.0.0.5', 17, [0, 1, 0, 2], { more: true }), // a first fragment without the whole UDP header
      ipv4Frame(OWN, '10.0.0.5', 17, udp(67, 68), { frag: 8 }), // a later fragment: no ports
      ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2), { options: [1, 1, 1, 0] }),
      ipv4Frame(VIRT, '10.0.0.5', 6, tcp(1, 2)),
      eth(OWN, 0x0806, arp(OWN, '10.0.0.5', '10.0.0.1')),
      ipv4Frame(OWN, '10.0.0.5', 17, udp(68, 67)),
    ];
    const handles = frames.map(put);
    const batch = Int32Array.from(handles);
    const counters = newCounters();
    const n = g.filter(pool, batch, batch.length, counters);
    assert.deepEqual(Array.from(batch.subarray(0, n)), [0, 5, 6, 7, 8, 9].map((i) => handles[i]));
    assert.equal(counters[C.rx_dropped_dhcp_server], 1);
    assert.equal(counters[C.rx_dropped_unjudgeable], 3);
    for (let i = 0; i < n; i++) pool.release(batch[i]!);
  });

  test('remembers the last drop (reason, source MAC, forged address as text) and counts drops until taken', () => {
    const g = new PortGuard(identity);
    const counters = newCounters();
    const run = (...frames: Uint8Array[]): number => {
      const batch = Int32Array.from(frames.map(put));
      const n = g.filter(pool, batch, batch.length, counters);
      for (let i = 0; i < n; i++) pool.release(batch[i]!);
      return n;
    };
    assert.equal(g.lastDrop(), null);
    assert.equal(run(ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2))), 1);
    assert.equal(g.lastDrop(), null);
    const dropped = (): number => counters.reduce((a, x) => a + x, 0);
    assert.equal(dropped(), 0);
    run(ipv4Frame(OWN, '10.0.0.99', 6, tcp(1, 2)));
    assert.deepEqual(g.lastDrop(), { reason: C.rx_dropped_spoofed_ip, mac: 0x525400123456, detail: '10.0.0.99' });
    run(ipv6Frame(VIRT, 'fd00:0:0:7::99', 6, tcp(1, 2)), ipv6Frame(OWN, '2001:db8::1:0:0:1', 6, tcp(1, 2)));
    assert.deepEqual(g.lastDrop(), { reason: C.rx_dropped_spoofed_ip, mac: 0x525400123456, detail: '2001:db8::1:0:0:1' });
    assert.equal(dropped(), 3);
    run(eth(OWN, 0x0806, arp(OTHER, '10.0.0.5', '10.0.0.1')));
    assert.deepEqual(g.lastDrop(), { reason: C.rx_dropped_spoofed_arp, mac: 0x525400123456, detail: OTHER });
    run(ipv6Frame(OWN, '::', 58, ns('fd00::7')));
    assert.deepEqual(g.lastDrop(), { reason: C.rx_dropped_spoofed_nd, mac: 0x525400123456, detail: 'fd00::7' });
    run(ipv6Frame(OWN, 'fd00::5', 58, na('fd00::5', lla(2, OTHER))));
    assert.deepEqual(g.lastDrop(), { reason: C.rx_dropped_spoofed_nd, mac: 0x525400123456, detail: OTHER });
    run(eth(OTHER, 0x88cc, []));
    assert.deepEqual(g.lastDrop(), { reason: C.rx_dropped_spoofed_mac, mac: 0x525400aabbcc, detail: '' });
    run(ipv6Frame(OWN, OWN_LL, 58, ra()));
    assert.deepEqual(g.lastDrop(), { reason: C.rx_dropped_ra, mac: 0x525400123456, detail: OWN_LL });
    assert.equal(dropped(), 8);
  });

  test('a frame lent from a peer is copied before it is judged, so the peer cannot change it afterwards', () => {
    const g = new PortGuard(identity);
    const counters = newCounters();
    const free = pool.available();
    const peer = put(ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2))); // stands for the peer's transmit buffer
    const spoofed = put(ipv4Frame(OWN, '10.0.0.66', 6, tcp(1, 2)));
    const lender = new Lender();
    const batch = Int32Array.of(pool.lend(pool.hdrOffset(peer), pool.len[peer]!, lender, 7), pool.lend(pool.hdrOffset(spoofed), pool.len[spoofed]!, lender, 8));
    assert.ok(pool.isExternal(batch[0]!) && pool.isExternal(batch[1]!));
    assert.equal(g.filter(pool, batch, 2, counters), 1);
    const h = batch[0]!;
    assert.ok(!pool.isExternal(h), 'a pool copy');
    assert.deepEqual(lender.returned, [7, 8], 'both peer buffers returned');
    assert.equal(pool.lent, 0);
    pool.bytes[pool.frameOffset(peer) + 14 + 15] = 66; // the peer rewrites its source address
    assert.equal(pool.bytes[pool.frameOffset(h) + 14 + 15], 5, 'the copy keeps what was judged');
    assert.equal(counters[C.rx_dropped_spoofed_ip], 1);
    pool.release(h);
    pool.release(peer);
    pool.release(spoofed);
    assert.equal(pool.available(), free);
  });
});

// ---- properties ----

/** Frames of every kind above, passing and failing: starting points for mutation. */
const samples: Uint8Array[] = [
  eth(OWN, 0x88cc, [1, 2, 3]),
  ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2)),
  ipv4Frame(OWN, '0.0.0.0', 17, dhcpRequest()),
  ipv4Frame(OWN, '10.0.0.5', 17, udp(67, 68), { options: [0x94, 4, 0, 0], more: true }),
  eth(OWN, 0x0806, arp(OWN, '10.0.0.5', '10.0.0.1')),
  tagged(OWN, 10, 0x0800, ipv4('10.0.0.5', 17, udp(1, 2))),
  tagged(VIRT, 10, 0x86dd, ipv6(VIRT_LL, 58, na(VIRT_LL, lla(2, VIRT)))),
  ipv6Frame(OWN, '::', 58, ns('fd00::5', lla(1, OWN))),
  ipv6Frame(OWN, '::', 0, mld2()),
  ipv6Frame(OWN, OWN_LL, 0, [...optionsHeader(60), ...optionsHeader(44), ...fragmentHeader(58, 0, false), ...ra()]),
  ipv6Frame(OWN, 'fd00::5', 44, [...fragmentHeader(17, 0, true), ...udp(547, 546)]),
  ipv6Frame(OWN, 'fd00::5', 58, na('fd00::5', [...lla(2, OWN), ...lla(2, VIRT)])),
];

/** A sample with some bytes changed and maybe cut short. */
const mutated = fc.record({
  sample: fc.integer({ min: 0, max: samples.length - 1 }),
  edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
  cut: fc.nat(),
  trunk: fc.boolean(),
}).map(({ sample, edits, cut, trunk }) => {
  const f = samples[sample]!.slice();
  for (const [at, value] of edits) f[at % f.length] = value;
  return { frame: f.subarray(0, f.length - (cut % 3 === 0 ? cut % f.length : 0)), trunk };
});

describe('properties', () => {
  test('every sample has the verdict it was written for', () => {
    assert.deepEqual(samples.map((f) => verdict(f, trunkGuard)), [GUARD_OK, GUARD_OK, GUARD_OK, C.rx_dropped_dhcp_server, GUARD_OK, GUARD_OK, GUARD_OK,
      GUARD_OK, GUARD_OK, C.rx_dropped_ra, C.rx_dropped_dhcp_server, GUARD_OK]);
  });

  test('random bytes never throw and always get a known verdict', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (f, trunk) => {
      assert.ok(VERDICTS.has(verdict(f, trunk ? trunkGuard : guard)));
    }));
  });

  test('mutated frames get a known verdict that depends on the frame only, never on bytes past its end', () => {
    fc.assert(fc.property(mutated, fc.uint8Array({ minLength: 64, maxLength: 64 }), ({ frame, trunk }, junk) => {
      const g = trunk ? trunkGuard : guard;
      const v = verdict(frame, g);
      assert.ok(VERDICTS.has(v));
      // The same frame at an offset, followed by zeros, then by junk: the same verdict.
      for (const tail of [new Uint8Array(64), junk]) {
        const b = new Uint8Array(7 + frame.length + 64);
        b.set(frame, 7);
        b.set(tail, 7 + frame.length);
        assert.equal(g.check(b, 7, frame.length), v);
      }
    }), { numRuns: 2000 });
  });

  test('copyJudged() copies header and frame exactly, and passes only what check() passes', () => {
    // The "peer's memory": a pool buffer, the header and frame at a 4-byte aligned offset in it.
    const src = pool.alloc();
    const dst = pool.alloc();
    const w = pool.arena.i32;
    let passed = 0;
    // One guard for the run, warm: the fast path remembers the last source that passed.
    const warmGuard = new PortGuard(identity);
    const warm = ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2));
    // Headers: zeros, random bytes, or offload requests near the real ones.
    const header = fc.oneof(
      fc.constant(new Uint8Array(VNET_HDR)),
      fc.uint8Array({ minLength: VNET_HDR, maxLength: VNET_HDR }),
      fc.record({ start: fc.constantFrom(6, 22, 26, 28, 30, 34, 38, 54), off: fc.constantFrom(0, 6, 10, 16), gso: fc.constantFrom(0, 1, 3, 4, 5, 0x81) })
        .map(({ start, off, gso }) => vnet({ csum: [start, off], gso, gsoSize: gso === 0 ? 0 : 100 })),
    );
    // Frames of the fast path's shape (IPv4 without options, TCP or UDP, from the port's MACs)
    // and ones a byte or two away from it, beside the general samples.
    const fastShaped = [
      ipv4Frame(OWN, '10.0.0.5', 6, [...tcp(1, 2), 1, 2, 3, 4]),
      ipv4Frame(OWN, '10.0.0.5', 17, udp(1, 2)),
      ipv4Frame(OWN, '10.0.0.5', 17, udp(67, 68)),
      ipv4Frame(OWN, '10.0.1.9', 17, udp(1, 2), { frag: 3 }),
      ipv4Frame(VIRT, '10.0.0.100', 6, tcp(1, 2)),
      ipv4Frame(OWN, '10.0.0.100', 6, tcp(1, 2)),
      ipv4Frame(OTHER, '10.0.0.5', 6, tcp(1, 2)),
    ];
    const items = fc.oneof(mutated, fc.record({
      sample: fc.integer({ min: 0, max: fastShaped.length - 1 }),
      edits: fc.array(fc.tuple(fc.integer({ min: 0, max: 47 }), fc.integer({ min: 0, max: 255 })), { maxLength: 2 }),
    }).map(({ sample, edits }) => {
      const f = fastShaped[sample]!.slice();
      for (const [at, value] of edits) f[at % f.length] = value;
      return { frame: f, trunk: false };
    }));
    fc.assert(fc.property(items, header, fc.nat(64), (it, hdr, shift) => {
      const bytes = VNET_HDR + it.frame.length;
      if (bytes < JUDGED_COPY_MIN || bytes > JUDGED_COPY_MAX) return;
      const g = it.trunk ? trunkGuard : warmGuard;
      g.check(warm, 0, warm.length);
      const so = pool.hdrOffset(src) + 4 * shift;
      pool.bytes.set(hdr, so);
      pool.bytes.set(it.frame, so + VNET_HDR);
      const ho = pool.hdrOffset(dst);
      pool.bytes.fill(0xee, ho, ho + bytes + 8);
      const ok = g.copyJudged(pool.bytes, w, ho, so, bytes);
      assert.deepEqual(pool.bytes.subarray(ho, ho + bytes), pool.bytes.subarray(so, so + bytes));
      assert.ok(pool.bytes.subarray(ho + bytes, ho + bytes + 8).every((x) => x === 0xee), 'copied past the end');
      if (ok) {
        passed++;
        // What the fast path passed, the whole check passes: filter() on the copy, no mask, by a
        // guard of the same identity whose fast path is cold (it has seen no source pass), so
        // the verdict is check()'s and the offload rule's, not the fast path's again.
        const cold = new PortGuard({ ...identity, trunk: it.trunk });
        pool.refs[dst]!++;
        pool.len[dst] = it.frame.length;
        const kept = cold.filter(pool, Int32Array.from([dst]), 1, newCounters());
        if (kept === 1) pool.release(dst);
        assert.equal(kept, 1, 'passed as copied, dropped by check()');
      }
    }), { numRuns: 3000 });
    pool.release(src);
    pool.release(dst);
    assert.ok(passed > 100, `${passed} frames took the fast path: too few for the property to say much`);
  });

  test('filter() passes the frames the judged mask names without looking, and judges the rest', () => {
    const g = new PortGuard(identity);
    const free = pool.available();
    const frames = [ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2)), ipv4Frame(OWN, '10.0.0.6', 6, tcp(1, 2)), ipv4Frame(OWN, '10.0.0.5', 6, tcp(1, 2))];
    const handles = frames.map(put);
    const counters = newCounters();
    // Slot 1 (a forged source) marked judged is kept: the mask is the port's word for it.
    let batch = Int32Array.from(handles);
    assert.equal(g.filter(pool, batch, 3, counters, 0b010), 3);
    // Without the mark it is judged and dropped.
    for (const h of handles) pool.refs[h]!++;
    batch = Int32Array.from(handles);
    assert.equal(g.filter(pool, batch, 3, counters, 0b001), 2);
    assert.deepEqual(Array.from(batch.subarray(0, 2)), [handles[0], handles[2]]);
    assert.equal(counters[C.rx_dropped_spoofed_ip], 1);
    // Every slot marked: the burst as it came.
    batch = Int32Array.from([handles[0]!, handles[2]!]);
    for (const h of [handles[0]!, handles[2]!]) pool.refs[h]!++;
    assert.equal(g.filter(pool, batch, 2, counters, 0b11), 2);
    for (const h of [...handles, handles[0]!, handles[2]!, handles[0]!, handles[2]!]) pool.release(h);
    assert.equal(pool.available(), free);
  });

  test('filter() keeps exactly the frames check() passes, in order, and leaks no buffer', () => {
    fc.assert(fc.property(fc.array(mutated, { minLength: 1, maxLength: 32 }), (items) => {
      const g = new PortGuard(identity);
      const free = pool.available();
      const handles = items.map((it) => put(it.frame));
      const expected = handles.filter((_, i) => verdict(items[i]!.frame) === GUARD_OK);
      const batch = Int32Array.from(handles);
      const counters = newCounters();
      const n = g.filter(pool, batch, batch.length, counters);
      assert.deepEqual(Array.from(batch.subarray(0, n)), expected);
      assert.equal(counters.reduce((s, x) => s + x, 0), items.length - n);
      for (let i = 0; i < n; i++) pool.release(batch[i]!);
      assert.equal(pool.available(), free);
    }), { numRuns: 300 });
  });
});
