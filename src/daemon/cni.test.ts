// The daemon's side of pier-cni without a daemon: requests, names, derived routes, options and
// the masquerade ruleset. The whole path with a real daemon: test/cni-plugin.root.test.ts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PierError } from '../errors.ts';
import { attachmentPort, cniAddRequest, containerRoutes, gatewayPort, masqueradeRuleset, ownerOf, parseRequest, portOptionsOf, socketPathOf, subnetOf } from './cni.ts';

const base = { network: 'pier', containerId: 'abcdef0123456789', ifname: 'eth0', netns: '/var/run/netns/x', bridge: 'br0' };

describe('cni requests', () => {
  test('a request that is not JSON or lacks a key is refused with the key named', () => {
    assert.throws(() => parseRequest(cniAddRequest, 'cni-add', '{'), (e: unknown) => e instanceof PierError && e.code === 'EINVAL' && /not JSON/.test(e.message));
    assert.throws(() => parseRequest(cniAddRequest, 'cni-add', JSON.stringify({ ...base, bridge: undefined })), /bridge/);
    assert.throws(() => parseRequest(cniAddRequest, 'cni-add', JSON.stringify({ ...base, portType: 'macvlan' })), /portType/);
    assert.throws(() => parseRequest(cniAddRequest, 'cni-add', JSON.stringify({ ...base, ips: [{ address: '10.0.0.2/24', gateway: 'nope' }] })), /ips\.0\.gateway/);
  });

  test('defaults: tap, no gateway, no masquerade', () => {
    const r = parseRequest(cniAddRequest, 'cni-add', JSON.stringify(base));
    assert.equal(r.portType, 'tap');
    assert.equal(r.isGateway, false);
    assert.equal(r.ipMasq, false);
    assert.deepEqual(r.ips, []);
  });
});

describe('names', () => {
  test('an attachment has one stable port name, different for each part of its triple', () => {
    const a = attachmentPort('pier', 'c1', 'eth0');
    assert.match(a, /^cni-[0-9a-f]{12}$/);
    assert.equal(attachmentPort('pier', 'c1', 'eth0'), a);
    assert.notEqual(attachmentPort('pier', 'c1', 'eth1'), a);
    assert.notEqual(attachmentPort('pier2', 'c1', 'eth0'), a);
    // The separator keeps ("a", "bc") and ("ab", "c") apart.
    assert.notEqual(attachmentPort('a', 'bc', 'eth0'), attachmentPort('ab', 'c', 'eth0'));
  });

  test('a gateway port is named after its bridge while that fits an interface name', () => {
    assert.equal(gatewayPort('br0'), 'br0-gw');
    assert.match(gatewayPort('a-very-long-bridge'), /^gw-[0-9a-f]{12}$/);
  });

  test('vhost-user sockets: one per attachment, in socketDir, within sun_path', () => {
    const r = parseRequest(cniAddRequest, 'cni-add', JSON.stringify({ ...base, portType: 'vhost-user' }));
    assert.equal(socketPathOf(r), '/run/pier/vhost-user/abcdef012345-eth0.sock');
    assert.equal(socketPathOf({ ...r, socketDir: '/var/lib/dpdk/' }), '/var/lib/dpdk/abcdef012345-eth0.sock');
    assert.throws(() => socketPathOf({ ...r, socketDir: 'relative' }), /absolute/);
  });
});

describe('subnets', () => {
  test('IPv4 and IPv6 addresses to their networks', () => {
    assert.equal(subnetOf('10.88.3.7/16'), '10.88.0.0/16');
    assert.equal(subnetOf('192.168.1.130/25'), '192.168.1.128/25');
    assert.equal(subnetOf('10.1.2.3/32'), '10.1.2.3/32');
    assert.equal(subnetOf('10.1.2.3/0'), '0.0.0.0/0');
    assert.equal(subnetOf('fd00:1:2:3::5/64'), 'fd00:1:2:3::/64');
    assert.equal(subnetOf('fd00::1/48'), 'fd00::/48');
  });
});

describe('what an attachment gets', () => {
  const req = parseRequest(cniAddRequest, 'cni-add', JSON.stringify({
    ...base, isGateway: true, ipMasq: true, mtu: 9000, options: { offloads: 'off' },
    ips: [{ address: '10.88.0.5/16', gateway: '10.88.0.1' }, { address: 'fd00::5/64', gateway: 'fd00::1' }],
    routes: [{ dst: '192.0.2.0/24' }],
  }));

  test('routes: IPAM\'s through the gateway of their family, and the default routes of isGateway', () => {
    assert.deepEqual(containerRoutes(req), [
      { dst: '192.0.2.0/24', gw: '10.88.0.1' },
      { dst: '0.0.0.0/0', gw: '10.88.0.1' },
      { dst: '::/0', gw: 'fd00::1' },
    ]);
    // An explicit default route is kept as IPAM gave it, not doubled.
    assert.deepEqual(containerRoutes({ ...req, routes: [{ dst: '0.0.0.0/0', gw: '10.88.0.254' }] }).filter((r) => r.dst === '0.0.0.0/0'), [{ dst: '0.0.0.0/0', gw: '10.88.0.254' }]);
    assert.deepEqual(containerRoutes({ ...req, isGateway: false, routes: [] }), []);
  });

  test('owner: gateway addresses with the prefix of their subnet, masqueraded subnets', () => {
    const o = ownerOf(req, '4:4026532000');
    assert.deepEqual(o.gateways, ['10.88.0.1/16', 'fd00::1/64']);
    assert.deepEqual(o.masquerade, ['10.88.0.0/16', 'fd00::/64']);
    assert.equal(o.netnsId, '4:4026532000');
    assert.deepEqual(ownerOf({ ...req, isGateway: false, ipMasq: false }, undefined).gateways, []);
  });

  test('port options per portType, for the kind\'s schema to check', () => {
    assert.deepEqual(portOptionsOf(req, ''), { offloads: 'off', mtu: 9000, type: 'tap', netns: '/var/run/netns/x', ifname: 'eth0', ip: ['10.88.0.5/16', 'fd00::5/64'] });
    assert.equal(portOptionsOf({ ...req, portType: 'virtio-user' }, '').path, '/dev/vhost-net');
    const vu = portOptionsOf({ ...req, portType: 'vhost-user' }, '/run/pier/vhost-user/x.sock');
    assert.equal(vu.path, '/run/pier/vhost-user/x.sock');
    assert.equal(vu.netns, undefined);
    assert.equal(vu.ip, undefined);
  });
});

describe('masquerade ruleset', () => {
  test('one transaction: the table made, emptied by deletion, written whole', () => {
    const text = masqueradeRuleset([{ network: 'pier', subnet: '10.88.0.0/16' }, { network: 'v6', subnet: 'fd00::/64' }]);
    assert.match(text, /^table inet pier\ndelete table inet pier\ntable inet pier \{/);
    assert.match(text, /ip saddr 10\.88\.0\.0\/16 ip daddr != 10\.88\.0\.0\/16 masquerade comment "pier-cni network pier"/);
    assert.match(text, /ip6 saddr fd00::\/64 ip6 daddr != fd00::\/64 masquerade/);
  });

  test('no rules: the table goes', () => {
    assert.equal(masqueradeRuleset([]), 'table inet pier\ndelete table inet pier\n');
  });
});
