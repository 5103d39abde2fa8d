// Port security end to end, as root (issue 15, docs/design/port-security.md): four containers on
// secured tap ports, one of them (c) hostile. c sends what a container with CAP_NET_RAW can send
// from its own namespace (raw frames on an AF_PACKET socket, test/attacker.ts): a neighbour's
// source MAC, ARP and IPv6 neighbour advertisements claiming a neighbour's address, a
// neighbour's IPv4 source, a router advertisement, DHCP and DHCPv6 server replies, 20000 random
// source MACs, a broadcast flood. Each attack is judged by what its victim sees (ping answers,
// a's neighbour cache and routes, UDP listeners, a capture in c) and by pier's drop counter for
// its reason; then the same attacks with port security off on c succeed, as on a Linux bridge,
// so the negative results above mean something.
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import type { CounterName } from '../src/dataplane/counters.ts';
import {
  arp, BROADCAST, Capture, dhcpOffer, dhcpv6Reply, eth, ETH_P_ARP, ETH_P_EXPERIMENTAL, ETH_P_IPV4, ETH_P_IPV6, Flooder, linkLocal, macFlood,
  neighbourAdvertisement, parse, routerAdvertisement, Sender, sendFrames, udp4, udp6, UdpListener,
} from './attacker.ts';
import { delNetns, iperf, makeNetns, must, NEEDS, nsExec, pingUntil, requires, type Run, sh, TestDaemon, waitFor, type DaemonEvent } from './helpers.ts';
import { Testpmd } from './testpmd.ts';

type Name = 'a' | 'b' | 'c' | 'd';
const NAMES: Name[] = ['a', 'b', 'c', 'd'];
const IP: Record<Name | 'e', string> = { a: '10.89.0.1', b: '10.89.0.2', c: '10.89.0.3', d: '10.89.0.4', e: '10.89.0.5' };
const IP6: Record<Name, string> = { a: 'fd89::1', b: 'fd89::2', c: 'fd89::3', d: 'fd89::4' };
/** The prefix c's router advertisement offers. */
const RA_PREFIX = 'fd99::';
/** The counters a guard drops under; a well-behaved container must never see one of them grow. */
const GUARD_DROPS: CounterName[] = [
  'rx_dropped_spoofed_mac', 'rx_dropped_spoofed_ip', 'rx_dropped_spoofed_arp', 'rx_dropped_spoofed_nd', 'rx_dropped_ra', 'rx_dropped_dhcp_server', 'rx_dropped_unjudgeable',
];

const payload = (text: string): Uint8Array => Buffer.from(text, 'latin1');

interface Neigh { dst: string; lladdr?: string; state?: string[] }
interface Route { dst: string; gateway?: string; protocol?: string }
interface FdbEntry { mac: string; vlan: number; port: string; age: number; static?: boolean }

describe('port security: a hostile container among secured ones (root)', requires(NEEDS.tun, NEEDS.python3, NEEDS.iperf3), () => {
  const d = new TestDaemon();
  const ns = {} as Record<Name, string>;
  const mac = {} as Record<Name | 'e', string>;
  /** Each container's link-local address (EUI-64 of its MAC: the only one a guard allows besides its own). */
  const ll = {} as Record<Name, string>;

  const stats = (port: string): Record<CounterName, number> => d.json('stats', port)[0].counters;
  const neigh = (n: string, addr: string): Neigh | undefined => (JSON.parse(must('ip', ['-n', n, '-j', 'neigh', 'show', 'to', addr, 'dev', 'eth0'])) as Neigh[])[0];
  const routes6 = (n: string): Route[] => JSON.parse(must('ip', ['-n', n, '-j', '-6', 'route', 'show'])) as Route[];
  const raRoutes = (n: string): Route[] => routes6(n).filter((r) => r.dst === 'default' || r.dst.startsWith(RA_PREFIX) || r.protocol === 'ra');
  const fdb = (): FdbEntry[] => d.json<FdbEntry[]>('fdb', 'br0');
  const pingRun = (from: string, to: string, extra: string[]): { ok: boolean; received: number; out: string } => {
    const r = nsExec(from, 'ping', [...extra, '-W', '1', to], 30_000);
    return { ok: r.code === 0, received: Number(/(\d+) received/.exec(r.stdout)?.[1] ?? -1), out: r.stdout + r.stderr };
  };

  /** IPv4 frames c's capture saw addressed to `ip` (the ICMP echo requests a sent there, if any leaked). */
  const ipv4To = (cap: Capture, ip: string): number => cap.frames().map(parse).filter((p) => p.type === ETH_P_IPV4 && p.ipDst === ip).length;

  /**
   * a pings c once: when c's capture shows that echo request, it has shown everything pier sent c
   * before it (one tap, one queue, in order). The way to know a capture missed nothing yet.
   */
  async function drained(cap: Capture): Promise<void> {
    const seen = (): number => cap.frames().map(parse).filter((p) => p.icmpType === 8 && p.ipSrc === IP.a && p.ipDst === IP.c).length;
    const before = seen();
    assert.ok(pingRun(ns.a, IP.c, ['-c', '1']).ok, 'a cannot reach c');
    await waitFor(() => seen() > before, 10_000, 'a\'s echo request to c in c\'s capture');
  }

  /** Wait until `port`'s `counter` grew by at least `n` since `from`; its growth. */
  async function counted(port: string, counter: CounterName, from: number, n: number): Promise<number> {
    let now = from;
    await waitFor(() => (now = stats(port)[counter]) - from >= n, 10_000, () => `${port}'s ${counter} to grow by ${n} (it grew by ${now - from})`);
    return now - from;
  }

  before(async () => {
    const names = makeNetns(4);
    NAMES.forEach((n, i) => (ns[n] = names[i]!));
    await d.start();
    d.ok('add-br', 'br0');
    NAMES.forEach((n) => d.ok('add-port', 'br0', n, 'type=tap', `netns=${ns[n]}`, `ip=${IP[n]}/24,${IP6[n]}/64`, 'ifname=eth0', 'port-security=on'));
    for (const n of NAMES) mac[n] = JSON.parse(must('ip', ['-n', ns[n], '-j', 'link', 'show', 'dev', 'eth0']))[0].address as string;
    // a takes router advertisements (accept_ra=2: even if it were forwarding; it is not), so the
    // RA guard's result means something: the port-security=off test shows it does take c's.
    must('ip', ['netns', 'exec', ns.a, 'sysctl', '-qw', 'net.ipv6.conf.eth0.accept_ra=2', 'net.ipv6.conf.eth0.forwarding=0']);
    // IPv6 addresses usable (duplicate address detection over): before, the kernel sends from
    // other sources (ping6 from ::1 while fd89::N is tentative), which the guard rightly drops.
    await waitFor(() => NAMES.every((n) => {
      const addrs = JSON.parse(must('ip', ['-n', ns[n], '-j', '-6', 'addr', 'show', 'dev', 'eth0']))[0].addr_info as Array<{ local: string; scope: string; tentative?: boolean }>;
      const link = addrs.find((x) => x.scope === 'link');
      if (link) ll[n] = link.local;
      return addrs.length >= 2 && addrs.every((x) => !x.tentative);
    }), 15_000, 'the containers\' IPv6 addresses to leave duplicate address detection');
    for (const n of NAMES) assert.equal(ll[n], linkLocal(mac[n]), `${n}'s link-local address is not the EUI-64 of its MAC`);
    for (const n of ['b', 'c', 'd'] as const) {
      await pingUntil(ns.a, IP[n]);
      await pingUntil(ns.a, IP6[n]);
    }
    assert.deepEqual(raRoutes(ns.a), [], 'a has a default or RA route before any advertisement');
  });

  after(async () => {
    await d.cleanup();
    delNetns(Object.values(ns));
  });

  it('pier show: "port security: on" with the MAC and addresses each port may send from; --json carries security.portSecurity', () => {
    const text = d.ok('show', 'c');
    assert.ok(text.includes(`port security: on (from ${mac.c}; ${IP.c}, ${IP6.c})`), text);
    assert.match(text, /mac-limit 1, storm-limit 1000\/s/);
    const show = d.json('show');
    for (const p of show.bridges[0].ports) assert.equal(p.security?.portSecurity, 'on', `${p.name}: ${JSON.stringify(p.security)}`);
    const c = d.json('show', 'c').port.security;
    assert.deepEqual(c, { portSecurity: 'on', macs: [mac.c], addresses: [{ ip: IP.c }, { ip: IP6.c }], macLimit: 1, stormLimit: 1000 });
    const entries = fdb();
    for (const n of NAMES) assert.ok(entries.some((e) => e.mac === mac[n] && e.port === n && e.static), `${n}'s MAC is not a static entry: ${JSON.stringify(entries)}`);
  });

  it('MAC spoofing: c sends with b\'s MAC while a pings b; every ping answered, c gets none of them, counted as spoofed_mac', async () => {
    const from = stats('c').rx_dropped_spoofed_mac;
    const cap = await new Capture(ns.c, 'eth0').start();
    // b's MAC as source: to a, broadcast, and an ARP reply "b is at b" (what would teach a
    // learning switch that b lives behind c's port).
    const forged = [
      eth(mac.a, mac.b, ETH_P_EXPERIMENTAL, payload('spoofed mac')),
      eth(BROADCAST, mac.b, ETH_P_EXPERIMENTAL, payload('spoofed mac')),
      eth(mac.a, mac.b, ETH_P_ARP, arp(2, mac.b, IP.b, mac.a, IP.a)),
    ];
    const sender = new Sender(ns.c, 'eth0', forged, 80, 0.025);
    try {
      await counted('c', 'rx_dropped_spoofed_mac', from, 3); // the attack is under way
      const p = pingRun(ns.a, IP.b, ['-c', '30', '-i', '0.05']);
      const sent = await sender.sent();
      assert.ok(p.ok && p.received === 30, `a's pings to b while c spoofed b's MAC: ${p.out}`);
      assert.equal(await counted('c', 'rx_dropped_spoofed_mac', from, sent), sent, 'every forged frame is dropped and counted once');
      await drained(cap);
      assert.equal(ipv4To(cap, IP.b), 0, 'a\'s echo requests to b reached c');
      assert.ok(fdb().some((e) => e.mac === mac.b && e.port === 'b' && e.static), 'b\'s MAC moved off port b');
    } finally {
      sender.stop();
      cap.stop();
    }
  });

  it('ARP poisoning: c claims b\'s IP (gratuitous ARP, replies to a); a keeps b\'s MAC, a\'s traffic to b never reaches c, counted as spoofed_arp', async () => {
    assert.equal(neigh(ns.a, IP.b)?.lladdr, mac.b);
    const from = stats('c').rx_dropped_spoofed_arp;
    const cap = await new Capture(ns.c, 'eth0').start();
    const forged = [
      eth(BROADCAST, mac.c, ETH_P_ARP, arp(1, mac.c, IP.b, '00:00:00:00:00:00', IP.b)), // gratuitous request
      eth(BROADCAST, mac.c, ETH_P_ARP, arp(2, mac.c, IP.b, BROADCAST, IP.b)), // gratuitous reply
      eth(mac.a, mac.c, ETH_P_ARP, arp(2, mac.c, IP.b, mac.a, IP.a)), // "b is at c", to a
    ];
    // 2.5 s: longer than the kernel's ARP locktime (1 s), past which a reply replaces an entry.
    const sender = new Sender(ns.c, 'eth0', forged, 25, 0.1);
    try {
      await counted('c', 'rx_dropped_spoofed_arp', from, 3);
      const p = pingRun(ns.a, IP.b, ['-c', '20', '-i', '0.1']);
      const sent = await sender.sent();
      assert.ok(p.ok && p.received === 20, `a's pings to b during the poisoning: ${p.out}`);
      assert.equal(await counted('c', 'rx_dropped_spoofed_arp', from, sent), sent);
      assert.equal(neigh(ns.a, IP.b)?.lladdr, mac.b, 'a\'s neighbour entry for b changed');
      await drained(cap);
      assert.equal(ipv4To(cap, IP.b), 0, 'a\'s traffic to b reached c');
    } finally {
      sender.stop();
      cap.stop();
    }
  });

  it('forged IPv4 source: 200 UDP datagrams from c with d\'s IP reach a not once, counted as spoofed_ip', async () => {
    const from = stats('c').rx_dropped_spoofed_ip;
    const listener = await new UdpListener(ns.a, ['udp4:5555']).start();
    try {
      const forged = eth(mac.a, mac.c, ETH_P_IPV4, udp4(IP.d, IP.a, 4444, 5555, payload('forged')));
      assert.equal(sendFrames(ns.c, 'eth0', [forged], 200), 200);
      assert.equal(await counted('c', 'rx_dropped_spoofed_ip', from, 200), 200);
      // The same datagram from c's own address does arrive: the listener hears what gets there.
      sendFrames(ns.c, 'eth0', [eth(mac.a, mac.c, ETH_P_IPV4, udp4(IP.c, IP.a, 4444, 5555, payload('control')))]);
      await waitFor(() => listener.datagrams().some((g) => g.payload === 'control'), 10_000, 'c\'s datagram from its own address at a');
      assert.deepEqual(listener.datagrams().map((g) => g.payload), ['control'], 'a forged datagram reached a');
    } finally {
      listener.stop();
    }
  });

  it('IPv6 router advertisement from c: a gains no default route and no prefix, counted as ra', async () => {
    const from = stats('c').rx_dropped_ra;
    const sent = sendFrames(ns.c, 'eth0', [routerAdvertisement(mac.c, ll.c, RA_PREFIX)], 10, 0.05);
    assert.equal(await counted('c', 'rx_dropped_ra', from, sent), sent);
    assert.deepEqual(raRoutes(ns.a), [], 'a took c\'s router advertisement');
    const addrs = must('ip', ['-n', ns.a, '-6', 'addr', 'show', 'dev', 'eth0']);
    assert.ok(!addrs.includes(RA_PREFIX.slice(0, -1)), `a configured an address from c's prefix: ${addrs}`);
  });

  it('IPv6 neighbour advertisement spoofing: c advertises b\'s address with its own MAC (override); a\'s entry keeps b\'s MAC, counted as spoofed_nd', async () => {
    await pingUntil(ns.a, IP6.b);
    assert.equal(neigh(ns.a, IP6.b)?.lladdr, mac.b);
    const from = stats('c').rx_dropped_spoofed_nd;
    const forged = [
      neighbourAdvertisement(mac.c, ll.c, mac.a, ll.a, IP6.b, mac.c),
      neighbourAdvertisement(mac.c, ll.c, '33:33:00:00:00:01', 'ff02::1', IP6.b, mac.c),
    ];
    const sent = sendFrames(ns.c, 'eth0', forged, 10, 0.05);
    assert.equal(await counted('c', 'rx_dropped_spoofed_nd', from, sent), sent);
    assert.equal(neigh(ns.a, IP6.b)?.lladdr, mac.b, 'a\'s neighbour entry for b\'s IPv6 address changed');
    await pingUntil(ns.a, IP6.b);
  });

  it('DHCP and DHCPv6 server replies from c (UDP 67->68 broadcast, 547->546) are not delivered to a, counted as dhcp_server', async () => {
    const from = stats('c').rx_dropped_dhcp_server;
    const listener = await new UdpListener(ns.a, ['udp4:68', 'udp6:546']).start();
    try {
      const offer = eth(BROADCAST, mac.c, ETH_P_IPV4, udp4(IP.c, '255.255.255.255', 67, 68, dhcpOffer(mac.a, '10.89.0.77', IP.c)));
      const reply6 = eth(mac.a, mac.c, ETH_P_IPV6, udp6(ll.c, ll.a, 547, 546, dhcpv6Reply(mac.c)));
      const sent = sendFrames(ns.c, 'eth0', [offer, reply6], 5, 0.05);
      assert.equal(await counted('c', 'rx_dropped_dhcp_server', from, sent), sent);
      // From other source ports, the same way, they arrive: the listeners hear what gets there.
      sendFrames(ns.c, 'eth0', [
        eth(BROADCAST, mac.c, ETH_P_IPV4, udp4(IP.c, '255.255.255.255', 6767, 68, payload('control4'))),
        eth(mac.a, mac.c, ETH_P_IPV6, udp6(ll.c, ll.a, 5547, 546, payload('control6'))),
      ]);
      await waitFor(() => listener.datagrams().length >= 2, 10_000, () => `c's control datagrams at a (${JSON.stringify(listener.datagrams())})`);
      assert.deepEqual(listener.datagrams().map((g) => `${g.port} ${g.payload}`).sort(), ['546 control6', '68 control4'], 'a server reply reached a');
    } finally {
      listener.stop();
    }
  });

  it('MAC flood from c unsecured: pier fdb holds at most its mac-limit on c; e attached afterwards is learned and c sees none of a<->e unicast', async (t: TestContext) => {
    d.ok('set-port', 'c', 'port-security=off');
    const [nsE] = makeNetns(1) as [string];
    let fdbText: { run: Run; want: RegExp } | undefined;
    let cap: Capture | undefined;
    try {
      const limit = d.json('show', 'c').port.security.macLimit as number;
      assert.equal(limit, 64, 'an unsecured tap port\'s default mac-limit');
      const before = stats('c');
      const tapDrops = (): number => Number(d.json('stats', 'c')[0].kernel.tx_dropped);
      const tapBefore = tapDrops();
      const sent = macFlood(ns.c, 'eth0', 20000, eth(mac.a, '02:00:00:00:00:00', ETH_P_EXPERIMENTAL, payload('mac flood')));
      assert.equal(sent, 20000);
      // Each frame is read by pier or dropped by the tap's queue (its kernel tx_dropped).
      let read = 0;
      let lost = 0;
      await waitFor(() => (read = stats('c').rx_packets - before.rx_packets) + (lost = tapDrops() - tapBefore) >= sent, 20_000,
        () => `pier to read c's 20000 frames (read ${read}, ${lost} dropped by the tap)`);
      const onC = fdb().filter((e) => e.port === 'c');
      const notLearned = stats('c').fdb_limit - before.fdb_limit;
      t.diagnostic(`after 20000 random source MACs (${read} read by pier, ${lost} dropped by the tap): ${onC.length} entries on c, fdb_limit +${notLearned}`);
      assert.ok(onC.length <= limit && onC.length >= limit / 2, `${onC.length} FDB entries on c (mac-limit ${limit})`);
      assert.ok(notLearned >= read - limit, `fdb_limit counts the sources not learned: +${notLearned} of ${read}`);
      // A new container after the flood: learned at once, so its unicast with a is never flooded to c.
      d.ok('add-port', 'br0', 'e', 'type=tap', `netns=${nsE}`, `ip=${IP.e}/24`, 'ifname=eth0', 'port-security=on');
      mac.e = JSON.parse(must('ip', ['-n', nsE, '-j', 'link', 'show', 'dev', 'eth0']))[0].address as string;
      cap = await new Capture(ns.c, 'eth0').start();
      await pingUntil(ns.a, IP.e);
      const ae = pingRun(ns.a, IP.e, ['-c', '10', '-i', '0.05']);
      const ea = pingRun(nsE, IP.a, ['-c', '10', '-i', '0.05']);
      assert.ok(ae.ok && ea.ok, ae.out + ea.out);
      assert.ok(fdb().some((x) => x.mac === mac.e && x.port === 'e'), 'e is not in the FDB');
      await drained(cap);
      const leaked = cap.frames().map(parse).filter((p) => (p.src === mac.a && p.dst === mac.e) || (p.src === mac.e && p.dst === mac.a));
      assert.equal(leaked.length, 0, `c saw ${leaked.length} unicast frames between a and e`);
      // The text form adds each port's count and limit ("learned per port: ... c 64/64"): checked last, below.
      fdbText = { run: d.pier('fdb', 'br0'), want: new RegExp(`learned per port: .*\\bc ${onC.length}/${limit}\\b`) };
    } finally {
      cap?.stop();
      d.pier('del-port', 'br0', 'e');
      delNetns([nsE]);
      d.ok('set-port', 'c', 'port-security=on');
    }
    assert.ok(!fdb().some((e) => e.port === 'c' && !e.static), 'c secured again still holds learned entries');
    // The text form: entries, then learned addresses per port against their limits.
    assert.ok(fdbText);
    assert.equal(fdbText.run.code, 0, `pier fdb br0 (text) failed: ${fdbText.run.stderr.trim()}`);
    assert.match(fdbText.run.stdout, fdbText.want);
    assert.match(fdbText.run.stdout, /^ moves \d+, not learned \(table full\) \d+, evicted for a port owed room \d+$/m);
  });

  /**
   * c floods broadcasts for 6 s; once `counter` of c grew by `n` (the flood is under way), a
   * sends TCP to b for 3 s. c's counters before and after, what c sent, the iperf3 result.
   */
  async function underStorm(counter: CounterName, n: number): Promise<{ storm: Awaited<ReturnType<typeof iperf>>; sent: number; before: Record<CounterName, number>; after: Record<CounterName, number>; seconds: number }> {
    const before = stats('c');
    const t0 = Date.now();
    const flood = new Flooder(ns.c, 'eth0', eth(BROADCAST, mac.c, ETH_P_EXPERIMENTAL, payload('storm')), 6);
    let storm: Awaited<ReturnType<typeof iperf>>;
    try {
      await counted('c', counter, before[counter], n);
      storm = await iperf(ns.b, ns.a, IP.b, { seconds: 3 });
    } catch (e) {
      flood.stop();
      throw e;
    }
    const { sent } = await flood.flooded();
    return { storm, sent, before, after: stats('c'), seconds: (Date.now() - t0) / 1000 };
  }

  it('broadcast storm: c floods broadcasts at full speed for 6 s; a and b keep their TCP throughput, c\'s storm drops are counted, its queue left unread', async (t: TestContext) => {
    assert.equal(d.json('show', 'c').port.security.stormLimit, 1000);
    const quiet = await iperf(ns.b, ns.a, IP.b, { seconds: 3 });
    const { storm, sent, before, after, seconds } = await underStorm('rx_dropped_storm', 1000);
    const rx = after.rx_packets - before.rx_packets;
    const dropped = after.rx_dropped_storm - before.rx_dropped_storm;
    const pauses = after.rx_storm_pauses - before.rx_storm_pauses;
    t.diagnostic(`iperf3 a->b: ${quiet.gbps.toFixed(2)} Gbit/s quiet, ${storm.gbps.toFixed(2)} Gbit/s under c's broadcast storm ` +
      `(${storm.retransmits} retransmits); c sent ${sent} broadcasts (${Math.round(sent / 6)}/s), pier read ${rx}, dropped ${dropped} as storm, ` +
      `let ${rx - dropped} through, left c's queue unread ${pauses} times in ${seconds.toFixed(1)} s`);
    assert.ok(storm.bytes > 0 && storm.gbps >= quiet.gbps * 0.25, `a and b under the storm: ${storm.gbps} Gbit/s, ${quiet.gbps} without`);
    assert.ok(dropped > 0, 'no storm frame dropped');
    // The bucket: 1000/s and a burst of 100, over the time the flood ran (and the stats reads around it).
    assert.ok(rx - dropped <= 1000 * seconds + 100 + 50, `${rx - dropped} broadcasts let through in ${seconds} s at storm-limit 1000/s`);
    // Paused: pier read a small part of what c sent (20 ms unread after each burst over the limit).
    assert.ok(pauses > 0, 'c\'s queue was never paused');
    assert.ok(rx < sent / 4, `pier read ${rx} of the ${sent} broadcasts c sent`);
  });

  it('for comparison, the same storm with storm-limit=0 on c: every broadcast is flooded (iperf3 figure printed)', async (t: TestContext) => {
    d.ok('set-port', 'c', 'storm-limit=0');
    try {
      const { storm, sent, before, after } = await underStorm('flooded', 10_000);
      t.diagnostic(`iperf3 a->b: ${storm.gbps.toFixed(2)} Gbit/s under c's broadcast storm with no storm limit (${storm.retransmits} retransmits); ` +
        `c sent ${sent} broadcasts, pier read ${after.rx_packets - before.rx_packets} and flooded ${after.flooded - before.flooded}`);
      assert.equal(after.rx_dropped_storm, before.rx_dropped_storm, 'storm-limit=0 still dropped');
      assert.equal(after.rx_storm_pauses, before.rx_storm_pauses, 'storm-limit=0 still paused');
    } finally {
      d.ok('set-port', 'c', 'storm-limit=');
    }
    assert.equal(d.json('show', 'c').port.security.stormLimit, 1000);
  });

  /** pier events --json: one object per line; the port-security ones. */
  const securityEvents = (): DaemonEvent[] => d.events().filter((e) => e.type === 'port-security');

  it('events: pier events --json has port-security events for port c (and no other port), the first naming the MAC c forged', async (t: TestContext) => {
    const sec = await waitFor(() => {
      const e = securityEvents();
      return e.length > 0 ? e : undefined;
    }, 15_000, 'a port-security event');
    for (const e of sec) t.diagnostic(`event: ${JSON.stringify(e)}`);
    assert.ok(sec.every((e) => e.port === 'c' && e.bridge === 'br0'), `port-security events for another port than c: ${JSON.stringify(sec)}`);
    const first = sec[0]!;
    assert.equal(first.reason, 'spoofed_mac', 'the first thing c forged was b\'s MAC');
    assert.match(first.detail!, /^\d+ frames? dropped: spoofed_mac from /);
    assert.ok(first.detail!.includes(mac.b), `the event names the forged MAC ${mac.b}: ${first.detail}`);
  });

  it('events: every reason c was caught for has an event ("the first of each reason at once"), and every event says its reason', () => {
    // Rate-limited per port and reason, read from the counters: set-port (the MAC flood test
    // turns c's security off and on) replacing the guard loses no reason. Storm drops are told too.
    const sec = securityEvents();
    const counters = stats('c');
    const caught = GUARD_DROPS.filter((k) => counters[k] > 0).map((k) => k.replace(/^rx_dropped_/, ''));
    assert.deepEqual([...caught].sort(), ['dhcp_server', 'ra', 'spoofed_arp', 'spoofed_ip', 'spoofed_mac', 'spoofed_nd']);
    const told = new Set(sec.map((e) => e.reason));
    const problems = [
      ...caught.filter((r) => !told.has(r)).map((r) => `no port-security event with reason ${r}`),
      ...sec.filter((e) => !e.reason || ![...GUARD_DROPS, 'rx_dropped_storm'].includes(`rx_dropped_${e.reason}` as CounterName)).map((e) => `event without a known reason: ${JSON.stringify(e)}`),
    ];
    assert.deepEqual(problems, []);
  });

  it('the well-behaved containers lost nothing to port security (no guard drop on a, b, d)', () => {
    for (const n of ['a', 'b', 'd'] as const) {
      const s = stats(n);
      for (const k of GUARD_DROPS) assert.equal(s[k], 0, `${n}: ${k}`);
    }
  });

  it('with port-security=off and storm-limit=0 on c, as on a Linux bridge: the forged ARP and NA poison a\'s caches, the forged-source UDP reaches a, the RA gives a a route and a prefix', async () => {
    d.ok('set-port', 'c', 'port-security=off', 'storm-limit=0');
    const listener = await new UdpListener(ns.a, ['udp4:5555']).start();
    const senders: Sender[] = [];
    try {
      assert.equal(d.json('show', 'c').port.security.portSecurity, 'off');
      assert.match(d.ok('show', 'c'), /port security: off, mac-limit 64, storm-limit none/);
      const before = stats('c');
      // ARP: a's entry for b becomes c's MAC (repeated past the kernel's 1 s locktime).
      assert.equal(neigh(ns.a, IP.b)?.lladdr, mac.b);
      senders.push(new Sender(ns.c, 'eth0', [eth(mac.a, mac.c, ETH_P_ARP, arp(2, mac.c, IP.b, mac.a, IP.a))], 100, 0.05));
      await waitFor(() => neigh(ns.a, IP.b)?.lladdr === mac.c, 10_000, () => `a's neighbour entry for b to become c's MAC: ${JSON.stringify(neigh(ns.a, IP.b))}`);
      // NA: a's entry for b's IPv6 address becomes c's MAC.
      await pingUntil(ns.a, IP6.b);
      senders.push(new Sender(ns.c, 'eth0', [neighbourAdvertisement(mac.c, ll.c, mac.a, ll.a, IP6.b, mac.c)], 100, 0.05));
      await waitFor(() => neigh(ns.a, IP6.b)?.lladdr === mac.c, 10_000, () => `a's neighbour entry for ${IP6.b} to become c's MAC: ${JSON.stringify(neigh(ns.a, IP6.b))}`);
      // A forged IPv4 source reaches a.
      sendFrames(ns.c, 'eth0', [eth(mac.a, mac.c, ETH_P_IPV4, udp4(IP.d, IP.a, 4444, 5555, payload('forged')))], 20);
      await waitFor(() => listener.datagrams().filter((g) => g.payload === 'forged').length === 20, 10_000, () => `c's 20 forged datagrams at a (${listener.datagrams().length})`);
      // The RA: a default route through c and c's prefix.
      sendFrames(ns.c, 'eth0', [routerAdvertisement(mac.c, ll.c, RA_PREFIX)], 3, 0.05);
      const got = await waitFor(() => {
        const r = raRoutes(ns.a);
        return r.some((x) => x.dst === 'default' && x.gateway === ll.c) && r.some((x) => x.dst === `${RA_PREFIX}/64`) ? r : undefined;
      }, 10_000, () => `a to take c's router advertisement: ${JSON.stringify(routes6(ns.a))}`);
      assert.ok(got.length >= 2);
      // b's MAC stays b's: a static entry of a secured port is not moved by c's frames, which
      // pass unlearned (fdb_move_refused).
      sendFrames(ns.c, 'eth0', [eth(mac.a, mac.b, ETH_P_EXPERIMENTAL, payload('spoofed mac'))], 5);
      await counted('c', 'fdb_move_refused', before.fdb_move_refused, 5);
      assert.ok(fdb().some((e) => e.mac === mac.b && e.port === 'b' && e.static));
      const after = stats('c');
      for (const k of GUARD_DROPS) assert.equal(after[k] - before[k], 0, `c unsecured still dropped for ${k}`);
    } finally {
      for (const s of senders) s.stop();
      listener.stop();
      // Undo what c did to a, and secure c again.
      sh('ip', ['-n', ns.a, 'neigh', 'del', IP.b, 'dev', 'eth0']);
      sh('ip', ['-n', ns.a, 'neigh', 'del', IP6.b, 'dev', 'eth0']);
      sh('ip', ['-n', ns.a, '-6', 'route', 'flush', 'proto', 'ra']);
      sh('ip', ['-n', ns.a, '-6', 'addr', 'flush', 'dev', 'eth0', 'to', `${RA_PREFIX}/64`]);
      sh('ip', ['-n', ns.a, '-6', 'route', 'del', `${RA_PREFIX}/64`, 'dev', 'eth0']);
      d.ok('set-port', 'c', 'port-security=on', 'storm-limit=');
    }
    assert.deepEqual(raRoutes(ns.a), []);
    await pingUntil(ns.a, IP.b);
    assert.equal(neigh(ns.a, IP.b)?.lladdr, mac.b);
  });
});

describe('port security across dataplane threads: a port on another thread cannot claim a secured port\'s MAC (root)', requires(NEEDS.tun, NEEDS.python3), () => {
  // b (secured) runs on thread 0; a and c (not secured) on thread 1, whose copy of the bridge
  // knows b's MAC only from the link between the threads. c sends frames from b's MAC while a
  // pings b: each thread holds b's MAC as a static entry on its link to b's thread, so c's
  // frames pass unlearned (fdb_move_refused) and a's echo requests still go to b.
  const d = new TestDaemon();
  const ns = {} as Record<'a' | 'b' | 'c', string>;
  const mac = {} as Record<'a' | 'b' | 'c', string>;

  before(async () => {
    const names = makeNetns(3);
    (['a', 'b', 'c'] as const).forEach((n, i) => (ns[n] = names[i]!));
    await d.start(['--dataplane-threads', '2', '--pool', '512']);
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'b', 'type=tap', `netns=${ns.b}`, `ip=${IP.b}/24`, 'ifname=eth0', 'port-security=on', 'thread=0');
    d.ok('add-port', 'br0', 'a', 'type=tap', `netns=${ns.a}`, `ip=${IP.a}/24`, 'ifname=eth0', 'thread=1');
    d.ok('add-port', 'br0', 'c', 'type=tap', `netns=${ns.c}`, `ip=${IP.c}/24`, 'ifname=eth0', 'thread=1');
    for (const n of ['a', 'b', 'c'] as const) mac[n] = JSON.parse(must('ip', ['-n', ns[n], '-j', 'link', 'show', 'dev', 'eth0']))[0].address as string;
    await pingUntil(ns.a, IP.b);
  });

  after(async () => {
    await d.cleanup();
    delNetns(Object.values(ns));
  });

  it('c sends from b\'s MAC on thread 1: every ping a sends b is answered, none reaches c, c\'s frames are counted fdb_move_refused', async () => {
    const refused = (): number => d.json('stats', 'c')[0].counters.fdb_move_refused as number;
    const from = refused();
    const cap = await new Capture(ns.c, 'eth0').start();
    const sender = new Sender(ns.c, 'eth0', [eth(mac.a, mac.b, ETH_P_EXPERIMENTAL, payload('spoofed mac')), eth(BROADCAST, mac.b, ETH_P_EXPERIMENTAL, payload('spoofed mac'))], 80, 0.025);
    try {
      await waitFor(() => refused() - from >= 4, 10_000, 'c\'s frames from b\'s MAC to be refused by thread 1\'s table');
      const r = nsExec(ns.a, 'ping', ['-c', '30', '-i', '0.05', '-W', '1', IP.b], 30_000);
      const received = Number(/(\d+) received/.exec(r.stdout)?.[1] ?? -1);
      assert.equal(received, 30, `a's pings to b while c sent from b's MAC: ${r.stdout}${r.stderr}`);
      await sender.sent();
      // a pings c once: c's capture has then shown everything pier sent c before.
      const echoTo = (ip: string): number => cap.frames().map(parse).filter((p) => p.icmpType === 8 && p.ipDst === ip).length;
      assert.equal(nsExec(ns.a, 'ping', ['-c', '1', '-W', '2', IP.c]).code, 0);
      await waitFor(() => echoTo(IP.c) > 0, 10_000, 'a\'s echo request to c in c\'s capture');
      assert.equal(echoTo(IP.b), 0, 'a\'s echo requests to b reached c');
      const b = d.json<FdbEntry[]>('fdb', 'br0').filter((e) => e.mac === mac.b);
      assert.deepEqual(b.map((e) => [e.port, e.static]), [['b', true]], `b's MAC in the table: ${JSON.stringify(b)}`);
    } finally {
      sender.stop();
      cap.stop();
    }
  });

  it('with b unsecured, the same frames move b\'s MAC to c on thread 1 (the test above means something); secured again, it is b\'s', async () => {
    d.ok('set-port', 'b', 'port-security=off');
    const cap = await new Capture(ns.c, 'eth0').start();
    try {
      const sender = new Sender(ns.c, 'eth0', [eth(mac.a, mac.b, ETH_P_EXPERIMENTAL, payload('spoofed mac'))], 3, 0.02);
      await sender.sent();
      // a's next echo request to b goes where thread 1 learned b's MAC last: c.
      nsExec(ns.a, 'ping', ['-c', '1', '-W', '1', IP.b]);
      await waitFor(() => cap.frames().map(parse).some((p) => p.icmpType === 8 && p.ipDst === IP.b), 10_000, 'a\'s echo request to b in c\'s capture');
    } finally {
      cap.stop();
      d.ok('set-port', 'b', 'port-security=on');
    }
    await pingUntil(ns.a, IP.b);
  });
});

/**
 * For a describe: a daemon with bridge br0, a tap port c in a namespace of its own and a
 * vhost-user port vm with `vmOptions`; the testpmd a test puts in `peer.t` is killed after.
 */
function tapAndVhostUser(vmOptions: string[]): { d: TestDaemon; peer: { t?: Testpmd } } {
  const d = new TestDaemon();
  const peer: { t?: Testpmd } = {};
  let ns = '';
  before(async () => {
    [ns] = makeNetns(1) as [string];
    await d.start();
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c', 'type=tap', `netns=${ns}`, 'ip=10.89.0.1/24', 'ifname=eth0');
    d.ok('add-port', 'br0', 'vm', 'type=vhost-user', `path=${d.dir}/vm.sock`, ...vmOptions);
  });
  after(async () => {
    await peer.t?.kill();
    await d.cleanup();
    delNetns([ns]);
  });
  return { d, peer };
}

describe('storm control on a vhost-user port: a DPDK peer flooding past storm-limit has its transmit queue paused and resumed (root)', requires(NEEDS.tun, NEEDS.testpmd), () => {
  // testpmd txonly sends 64-byte UDP frames to a MAC nobody has (unknown unicast: every one a
  // flood) as fast as it can. The port's storm limit lets 1000 a second through; each full burst
  // mostly over it leaves the queue (its kick eventfd) unread for 20 ms, and the engine comes back
  // to it on its own, since a peer that polls never kicks again.
  const { d, peer } = tapAndVhostUser(['storm-limit=1000']);

  it('the queue is paused again and again and read between pauses; what is flooded stays within the limit', async () => {
    const stats = (): Record<CounterName, number> => d.json('stats', 'vm')[0].counters;
    const t = peer.t = new Testpmd([`net_virtio_user0,path=${d.dir}/vm.sock`], 'txonly', ['--txpkts=64']);
    await t.start();
    const first = await waitFor(() => { const s = stats(); return s.rx_storm_pauses >= 3 ? s : undefined; }, 15_000, () => `vm's queue to be paused (${JSON.stringify(stats())})`);
    const t0 = Date.now();
    // Read between pauses: received frames and pauses both keep growing.
    const later = await waitFor(() => {
      const s = stats();
      return s.rx_storm_pauses >= first.rx_storm_pauses + 10 && s.rx_packets > first.rx_packets + 10 * 32 ? s : undefined;
    }, 15_000, () => `vm's queue to be read again between pauses (${JSON.stringify(stats())})`);
    const seconds = (Date.now() - t0) / 1000;
    const flooded = later.flooded - first.flooded;
    assert.ok(later.rx_dropped_storm > first.rx_dropped_storm, 'no storm drop');
    assert.ok(flooded <= 1000 * seconds + 100 + 50, `${flooded} frames flooded in ${seconds} s at storm-limit 1000/s`);
    assert.equal(d.json('show', 'vm').port.peer.connected, true, 'the peer lost its connection');
  });
});

describe('a secured vhost-user port forwards a DPDK peer\'s own frames and drops forged ones (root)', requires(NEEDS.tun, NEEDS.testpmd), () => {
  // A secured vhost-user port copies each frame out of the guest's transmit buffer before the
  // check (the guest could rewrite a lent one after it): short frames word by word, long ones by
  // the builtin. testpmd txonly sends UDP 198.18.0.1 -> .2 from its port's MAC; c's tap port is
  // where they go (flooded: c's MAC is not learned; storm-limit=0 lets the flood through).
  const MAC = '02:00:00:00:0a:01';
  const { d, peer } = tapAndVhostUser([`mac=${MAC}`, 'port-security=on', 'allowed-addresses=198.18.0.1', 'storm-limit=0']);

  for (const size of [64, 1000]) {
    it(`${size}-byte frames from the port's own MAC and address reach c; from an address it may not use, none does`, async () => {
      const stats = (name: string): Record<CounterName, number> => d.json('stats', name)[0].counters;
      d.ok('set-port', 'vm', 'allowed-addresses=198.18.0.1');
      const t = peer.t = new Testpmd([`net_virtio_user0,path=${d.dir}/vm.sock,mac=${MAC}`], 'txonly', [`--txpkts=${size}`]);
      await t.start();
      try {
        const c0 = stats('c').tx_packets;
        const v0 = stats('vm');
        await waitFor(() => stats('c').tx_packets > c0 + 10_000, 15_000, () => `c to be sent 10 000 of vm's frames (${JSON.stringify(stats('vm'))})`);
        const v1 = stats('vm');
        for (const k of GUARD_DROPS) assert.equal(v1[k], v0[k], `${k}: the peer's own frames were dropped`);
        assert.equal(v1.rx_dropped_no_buffer, v0.rx_dropped_no_buffer, 'no buffer for a copy');
        // Now the same frames claim an address the port may not use: all of them stop at the guard.
        d.ok('set-port', 'vm', 'allowed-addresses=198.18.0.9');
        const s0 = stats('vm').rx_dropped_spoofed_ip;
        await waitFor(() => stats('vm').rx_dropped_spoofed_ip > s0 + 10_000, 15_000, () => `vm's frames to be dropped as spoofed (${JSON.stringify(stats('vm'))})`);
        const c1 = stats('c').tx_packets;
        const s1 = stats('vm').rx_dropped_spoofed_ip;
        await waitFor(() => stats('vm').rx_dropped_spoofed_ip > s1 + 10_000, 15_000, 'more spoofed drops');
        assert.ok(stats('c').tx_packets - c1 < 100, `${stats('c').tx_packets - c1} frames reached c after the address was taken away`);
        assert.equal(d.json('show', 'vm').port.peer.connected, true, 'the peer lost its connection');
      } finally {
        await t.kill();
        peer.t = undefined;
      }
    });
  }
});
