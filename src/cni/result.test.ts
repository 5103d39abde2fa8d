import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { containerRoutes, mergeResult } from './result.cts';
import type { Result } from './versions.cts';

const ipam: Result = { interfaces: [], ips: [{ address: '10.88.0.5/16', gateway: '10.88.0.1' }], routes: [], dns: { nameservers: ['10.88.0.1'], search: ['pier.local'] } };
const eth0 = { name: 'eth0', mac: '02:00:00:00:00:05', sandbox: '/run/netns/c1' };

describe('the ADD result', () => {
  test('first in the chain: pier\'s interface, the IPAM addresses pointing at it, its DNS', () => {
    const r = mergeResult(undefined, eth0, ipam, false);
    assert.deepEqual(r, { interfaces: [eth0], ips: [{ address: '10.88.0.5/16', gateway: '10.88.0.1', interface: 0 }], routes: [], dns: ipam.dns });
  });

  test('after another plugin: its result kept, pier\'s appended, indexes pointing at pier\'s interface', () => {
    const prev: Result = {
      interfaces: [{ name: 'br-x' }, { name: 'net1', sandbox: '/run/netns/c1' }],
      ips: [{ address: '192.168.1.5/24', interface: 1 }],
      routes: [{ dst: '192.168.0.0/16' }],
      dns: { nameservers: ['192.168.1.1', '10.88.0.1'], domain: 'x.local' },
    };
    const r = mergeResult(prev, eth0, ipam, false);
    assert.deepEqual(r.interfaces, [...prev.interfaces, eth0]);
    assert.deepEqual(r.ips, [{ address: '192.168.1.5/24', interface: 1 }, { address: '10.88.0.5/16', gateway: '10.88.0.1', interface: 2 }]);
    assert.deepEqual(r.routes, prev.routes);
    assert.deepEqual(r.dns, { nameservers: ['192.168.1.1', '10.88.0.1'], domain: 'x.local', search: ['pier.local'] }, 'joined, without duplicates');
  });

  test('isGateway: a default route through the gateway of each family IPAM gave none for', () => {
    const ips = [{ address: '10.88.0.5/16', gateway: '10.88.0.1' }, { address: 'fd88::5/64', gateway: 'fd88::1' }];
    assert.deepEqual(containerRoutes(ips, [], true), [{ dst: '0.0.0.0/0', gw: '10.88.0.1' }, { dst: '::/0', gw: 'fd88::1' }]);
    assert.deepEqual(containerRoutes(ips, [{ dst: '0.0.0.0/0' }], true), [{ dst: '0.0.0.0/0' }, { dst: '::/0', gw: 'fd88::1' }], 'IPAM\'s own default route is kept');
    assert.deepEqual(containerRoutes(ips, [], false), [], 'not a gateway: IPAM\'s routes only');
    assert.deepEqual(containerRoutes([{ address: '10.88.0.5/16' }], [], true), [], 'no gateway address: no route');
  });
});
