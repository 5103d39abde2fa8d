// src/sys's rtnetlink set-up of a link (configureLink, addRoutes, linkInfo, setSysctl), as root,
// against iproute2: a tap in one namespace configured by pier, a tap in another configured with
// the `ip` command lines pier's errors name, and `ip -j` must print the same for both.
import assert from 'node:assert/strict';
import { readFileSync, readlinkSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { addRoutes, closeFd, configureLink, IpError, libc, linkExists, linkInfo, openTap, setSysctl, VNET_HDR_LEN } from '../src/sys/index.ts';
import { delNetns, makeNetns, must, NEEDS, nsExec, requires, waitFor } from './helpers.ts';

const MAC = '02:00:00:90:00:02';
const ADDRS = ['10.90.0.2/24', 'fd90::2/64'];
const ROUTES = [{ dst: '0.0.0.0/0', gw: '10.90.0.1' }, { dst: '10.91.0.0/16' }, { dst: '::/0', gw: 'fd90::1' }, { dst: 'fd91::/64' }];

describe('rtnetlink link set-up (root)', requires(NEEDS.tun), () => {
  let ns = ''; // configured by pier
  let ref = ''; // configured by ip
  const fds: number[] = [];
  const path = (n: string): string => `/var/run/netns/${n}`;
  const ipj = (n: string, ...args: string[]): any => JSON.parse(must('ip', ['-n', n, '-j', ...args]));
  const ownNetns = readlinkSync('/proc/self/ns/net');

  before(() => {
    [ns, ref] = makeNetns(2) as [string, string];
    for (const n of [ns, ref]) {
      // No duplicate address detection: IPv6 addresses usable at once, the same in both at any moment.
      setSysctl('net.ipv6.conf.default.accept_dad', 0, path(n));
      // The tap's fd stays open: the link has a carrier, as a port's has.
      fds.push(openTap({ ifname: 'eth0', netnsPath: path(n), offloads: 0 }).fd);
    }
  });

  after(() => {
    for (const fd of fds) closeFd(fd);
    delNetns([ns, ref]);
  });

  it('setSysctl writes the namespace\'s own value, not pier\'s', () => {
    const read = (n?: string): string => (n ? nsExec(n, 'cat', ['/proc/sys/net/ipv4/ip_forward']).stdout : readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim();
    const host = read();
    assert.equal(nsExec(ns, 'cat', ['/proc/sys/net/ipv6/conf/default/accept_dad']).stdout.trim(), '0');
    const flipped = read(ns) === '1' ? 0 : 1; // a new namespace may inherit pier's value
    setSysctl('/proc/sys/net/ipv4/ip_forward', flipped, path(ns));
    assert.equal(read(ns), String(flipped));
    assert.equal(read(), host);
    assert.throws(() => setSysctl('/etc/passwd', 1), /is not a sysctl/);
  });

  it('configureLink + addRoutes: MAC, MTU, IPv4 and IPv6 addresses, up, lo up, routes: what ip makes of the same commands', (t) => {
    const t0 = performance.now();
    configureLink(path(ns), 'eth0', { mac: MAC, mtu: 9000, addresses: ADDRS });
    addRoutes(path(ns), 'eth0', ROUTES);
    const info = linkInfo(path(ns), 'eth0');
    t.diagnostic(`configureLink + addRoutes + linkInfo: ${(performance.now() - t0).toFixed(2)} ms`);
    assert.equal(readlinkSync('/proc/self/ns/net'), ownNetns, 'pier is back in its own namespace');
    assert.deepEqual(info && [info.ifname, info.mac, info.mtu], ['eth0', MAC, 9000]);

    for (const c of [['link', 'set', 'dev', 'eth0', 'address', MAC, 'mtu', '9000'], ...ADDRS.map((a) => ['addr', 'replace', a, 'dev', 'eth0']),
      ['link', 'set', 'dev', 'eth0', 'up'], ['link', 'set', 'dev', 'lo', 'up'],
      ...ROUTES.map((r) => ['route', 'replace', r.dst, ...(r.gw ? ['via', r.gw] : []), 'dev', 'eth0'])]) must('ip', ['-n', ref, ...c]);
    const views = [['-d', 'addr'], ['-d', 'route', 'show', 'table', 'all'], ['-d', '-6', 'route', 'show', 'table', 'all']];
    for (const v of views) assert.deepEqual(ipj(ns, ...v), ipj(ref, ...v), `ip -j ${v.join(' ')}`);

    // And what that is, spelled out.
    const [l] = ipj(ns, 'addr', 'show', 'dev', 'eth0');
    assert.deepEqual([l.mtu, l.address, l.flags.includes('UP')], [9000, MAC, true]);
    assert.deepEqual(l.addr_info.filter((a: any) => a.scope === 'global').map((a: any) => `${a.local}/${a.prefixlen}`), ADDRS);
    assert.ok(ipj(ns, 'link', 'show', 'dev', 'lo')[0].flags.includes('UP'), 'lo up');
    const r4 = ipj(ns, '-d', 'route');
    assert.deepEqual(r4.find((r: any) => r.dst === 'default'), { type: 'unicast', dst: 'default', gateway: '10.90.0.1', dev: 'eth0', protocol: 'boot', scope: 'global', flags: [] });
    assert.deepEqual(r4.find((r: any) => r.dst === '10.91.0.0/16'), { type: 'unicast', dst: '10.91.0.0/16', dev: 'eth0', protocol: 'boot', scope: 'link', flags: [] });
    const r6 = ipj(ns, '-6', 'route');
    assert.ok(r6.some((r: any) => r.dst === 'default' && r.gateway === 'fd90::1' && r.dev === 'eth0'));
    assert.ok(r6.some((r: any) => r.dst === 'fd91::/64' && r.gateway === undefined && r.dev === 'eth0'));
  });

  it('applying again changes nothing; a route to the same destination is replaced, not added', () => {
    const before = [ipj(ns, '-d', 'addr'), ipj(ns, 'route', 'show', 'table', 'all'), ipj(ns, '-6', 'route', 'show', 'table', 'all')];
    configureLink(path(ns), 'eth0', { mac: MAC, mtu: 9000, addresses: ADDRS });
    addRoutes(path(ns), 'eth0', ROUTES);
    assert.deepEqual([ipj(ns, '-d', 'addr'), ipj(ns, 'route', 'show', 'table', 'all'), ipj(ns, '-6', 'route', 'show', 'table', 'all')], before);
    addRoutes(path(ns), 'eth0', [{ dst: '0.0.0.0/0', gw: '10.90.0.254' }, { dst: '10.91.0.0/16', gw: '10.90.0.254' }]);
    const r4 = ipj(ns, 'route');
    assert.deepEqual(r4.filter((r: any) => r.dst === 'default').map((r: any) => r.gateway), ['10.90.0.254']);
    assert.deepEqual(r4.filter((r: any) => r.dst === '10.91.0.0/16').map((r: any) => r.gateway), ['10.90.0.254']);
    addRoutes(path(ns), 'eth0', ROUTES.slice(0, 2));
  });

  it('linkInfo reads the counters ip -s shows: packets and drops, each way', async () => {
    // Received: frames pier writes into the tap; their EtherType (local experimental) has no
    // handler in the container, so the kernel also counts each as dropped.
    const frame = new Uint8Array(VNET_HDR_LEN + 60);
    frame.fill(0xff, VNET_HDR_LEN, VNET_HDR_LEN + 6);
    frame.set([0x02, 0, 0, 0x90, 0, 0x09, 0x88, 0xb5], VNET_HDR_LEN + 6);
    for (let i = 0; i < 7; i++) assert.equal(Number(libc.writeBuf(fds[0]!, frame, frame.length)), frame.length);
    // Sent: pings to all IPv6 nodes, into a tap queue of 8: the rest are dropped. A tap counts a
    // frame sent when its reader takes it: read what is queued.
    must('ip', ['-n', ns, 'link', 'set', 'dev', 'eth0', 'txqueuelen', '8']);
    nsExec(ns, 'ping', ['-6', '-c', '30', '-i', '0.002', '-w', '5', 'ff02::1%eth0']);
    const rx = new Uint8Array(65536);
    let taken = 0;
    while (Number(libc.readBuf(fds[0]!, rx, rx.length)) > 0) taken++;
    assert.ok(taken > 0, 'frames in the tap\'s queue');
    const ipStats = () => {
      const s = ipj(ns, '-s', 'link', 'show', 'dev', 'eth0')[0].stats64;
      return { rxPackets: s.rx.packets, txPackets: s.tx.packets, rxDropped: s.rx.dropped, txDropped: s.tx.dropped };
    };
    // Counters move on their own (IPv6 router and multicast listener messages): compare a reading
    // taken between two equal readings of ip's.
    const seen = await waitFor(() => {
      const a = ipStats();
      const l = linkInfo(path(ns), 'eth0');
      const b = ipStats();
      return JSON.stringify(a) === JSON.stringify(b) && l ? { ip: a, pier: l } : undefined;
    }, 10_000, 'two equal readings of ip -s link');
    const { rxPackets, txPackets, rxDropped, txDropped, operstate } = seen.pier;
    assert.deepEqual({ rxPackets, txPackets, rxDropped, txDropped }, seen.ip);
    assert.ok(rxPackets >= 7 && rxDropped >= 7, `rx ${rxPackets} dropped ${rxDropped}`);
    assert.ok(txPackets >= taken && txDropped > 0, `tx ${txPackets} dropped ${txDropped}`);
    assert.equal(operstate, ipj(ns, 'link', 'show', 'dev', 'eth0')[0].operstate);
    assert.equal(linkInfo(undefined, 'lo')?.mtu, 65536, 'pier\'s own namespace');
  });

  it('errors name the step as an ip command, the interface or address, and the kernel\'s text; a bad input changes nothing', () => {
    const refused = (fn: () => void, message: RegExp, errno?: number): void => {
      assert.throws(fn, (e: unknown) => {
        assert.ok(e instanceof IpError, `not an IpError: ${String(e)}`);
        assert.match(e.message, message);
        assert.equal(e.errno, errno);
        return true;
      });
    };
    const state = () => [ipj(ns, '-d', 'addr'), ipj(ns, 'route', 'show', 'table', 'all')];
    const unchanged = state();
    refused(() => configureLink(path(ns), 'nope0', { mtu: 1400, addresses: [] }), /^ip link set dev nope0 mtu 1400: Cannot find device "nope0" \(No such device\)$/, 19);
    refused(() => addRoutes(path(ns), 'nope0', [{ dst: '10.92.0.0/16' }]), /^ip route replace 10\.92\.0\.0\/16 dev nope0: Cannot find device "nope0"/, 19);
    assert.equal(linkInfo(path(ns), 'nope0'), undefined);
    assert.equal(linkExists(path(ns), 'nope0'), false);
    assert.equal(linkExists(path(ns), 'eth0'), true);
    // Refused before any change: the MTU of the same call is not applied either.
    refused(() => configureLink(path(ns), 'eth0', { mtu: 1400, addresses: ['10.90.0.3/24', '10.90.0.300/24'] }), /^ip addr replace 10\.90\.0\.300\/24 dev eth0: "10\.90\.0\.300\/24" is not an address with a prefix length/);
    refused(() => configureLink(path(ns), 'eth0', { mac: '02:00:00:90:00', addresses: [] }), /^ip link set dev eth0 address 02:00:00:90:00: "02:00:00:90:00" is not a MAC address/);
    refused(() => addRoutes(path(ns), 'eth0', [{ dst: '10.93.0.0/16', gw: 'fd90::1' }]), /^ip route replace 10\.93\.0\.0\/16 via fd90::1 dev eth0: gateway fd90::1 is IPv6 and 10\.93\.0\.0\/16 is not$/);
    assert.deepEqual(state(), unchanged);
    // Refused by the kernel: its errno text, and its own words when it gives them.
    refused(() => configureLink(path(ns), 'eth0', { addresses: ['ff02::1/64'] }), /^ip addr replace ff02::1\/64 dev eth0: Cannot assign requested address/, 99);
    refused(() => configureLink(path(ns), 'eth0', { mtu: 65536 + 1, addresses: [] }), /^ip link set dev eth0 mtu 65537: Invalid argument/, 22);
    refused(() => addRoutes(path(ns), 'eth0', [{ dst: '10.94.0.5/16' }]), /^ip route replace 10\.94\.0\.5\/16 dev eth0: Invalid argument \(Invalid prefix for given prefix length\)$/, 22);
    refused(() => addRoutes(path(ns), 'eth0', [{ dst: '10.95.0.0/16', gw: '10.99.0.1' }]), /^ip route replace 10\.95\.0\.0\/16 via 10\.99\.0\.1 dev eth0: Network is unreachable/, 101);
    assert.deepEqual(state(), unchanged);
    // A namespace that is not there.
    refused(() => configureLink(path(`${ns}-gone`), 'eth0', { addresses: [] }), /^ip link set dev eth0: cannot open a netlink socket in \/var\/run\/netns\/.*-gone: .*No such file or directory/);
    assert.equal(linkInfo(path(`${ns}-gone`), 'eth0'), undefined);
    assert.equal(readlinkSync('/proc/self/ns/net'), ownNetns, 'pier is back in its own namespace');
  });
});
