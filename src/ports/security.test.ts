import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PierError } from '../errors.ts';
import { validatePortOptions } from './parse.ts';
import { loadSchemas } from './registry.ts';
import { DEFAULT_MAC_LIMIT, DEFAULT_STORM_LIMIT, DEFAULT_UPLINK_MAC_LIMIT, DEFAULT_VM_MAC_LIMIT, securityOf } from './security.ts';

await loadSchemas();

describe('port security options: every kind, one schema, the dataplane config', () => {
  test('a secured tap: its MAC and its IPs as host addresses, plus allowed addresses', () => {
    const o = validatePortOptions({ type: 'tap', netns: 'c1', ip: '10.0.0.5/24,fd00::5/64', mac: '02:00:00:00:00:AA', 'port-security': 'on',
      'allowed-addresses': '10.0.0.100,02:00:00:00:00:01/10.0.0.101,fd00:1::/64,02:00:00:00:00:02' });
    const s = securityOf(o);
    assert.deepEqual(s.secured, {
      macs: ['02:00:00:00:00:aa', '02:00:00:00:00:01', '02:00:00:00:00:02'], own: true,
      addresses: [{ ip: '10.0.0.5' }, { ip: 'fd00::5' }, { ip: '10.0.0.100' }, { ip: '10.0.0.101', mac: '02:00:00:00:00:01' }, { ip: 'fd00:1::/64' }],
    });
    assert.equal(s.macLimit, 3, 'a secured port: its MACs');
    assert.equal(s.stormLimit, DEFAULT_STORM_LIMIT);
  });

  test('defaults: unsecured, MAC limits by kind, no storm limit; explicit limits win; 0 is no limit', () => {
    assert.deepEqual(securityOf(validatePortOptions({ type: 'tap', netns: 'c1' })), { secured: null, macLimit: DEFAULT_MAC_LIMIT, stormLimit: 0 });
    assert.deepEqual(securityOf(validatePortOptions({ type: 'vhost-user', path: '/run/x.sock' })), { secured: null, macLimit: DEFAULT_VM_MAC_LIMIT, stormLimit: 0 });
    assert.deepEqual(securityOf(validatePortOptions({ type: 'afpacket', dev: 'eth0' })), { secured: null, macLimit: DEFAULT_UPLINK_MAC_LIMIT, stormLimit: 0 });
    assert.deepEqual(securityOf(validatePortOptions({ type: 'tap', netns: 'c1', 'mac-limit': '0', 'storm-limit': '2000' })), { secured: null, macLimit: 0, stormLimit: 2000 });
  });

  test('a secured vhost-user port needs its MAC: refused with the fix, accepted with mac= or an allowed MAC', () => {
    const bare = validatePortOptions({ type: 'vhost-user', path: '/run/vm0.sock', 'port-security': 'on' });
    assert.throws(() => securityOf(bare), (e: PierError) => /does not know the MAC/.test(e.message) && /mac=MAC/.test(e.hint ?? ''));
    const withMac = validatePortOptions({ type: 'vhost-user', path: '/run/vm0.sock', 'port-security': 'on', mac: '52:54:00:12:34:56', 'allowed-addresses': '10.0.0.7' });
    assert.deepEqual(securityOf(withMac).secured, { macs: ['52:54:00:12:34:56'], own: true, addresses: [{ ip: '10.0.0.7' }] });
    assert.throws(() => securityOf(validatePortOptions({ type: 'afpacket', dev: 'eth0', 'port-security': 'on' })),
      (e: PierError) => /the MAC an afpacket port sends from/.test(e.message) && /allowed-addresses=/.test(e.hint ?? ''));
    const viaAllowed = validatePortOptions({ type: 'afpacket', dev: 'eth0', 'port-security': 'on', 'allowed-addresses': '02:00:00:00:00:09' });
    assert.deepEqual(securityOf(viaAllowed).secured, { macs: ['02:00:00:00:00:09'], own: false, addresses: [] }, 'an allowed MAC is not a static entry: it may move (VRRP)');
  });

  test('bad values name the key and the problem', () => {
    const bad = (raw: Record<string, unknown>, re: RegExp): void => assert.throws(() => validatePortOptions(raw), (e: Error) => re.test(e.message));
    bad({ type: 'tap', 'allowed-addresses': '10.0.0.300' }, /allowed-addresses.*10\.0\.0\.300.*expected IP, IP\/PREFIX, MAC or MAC\/IP/);
    bad({ type: 'tap', 'allowed-addresses': '10.0.0.0/33' }, /prefix length 33/);
    bad({ type: 'tap', 'allowed-addresses': '01:00:5e:00:00:01' }, /multicast/);
    bad({ type: 'tap', 'allowed-addresses': '02:00:00:00:00:01/10.0.0.0/24' }, /allowed-addresses/);
    bad({ type: 'tap', 'port-security': 'maybe' }, /^bad port-security: 'maybe' is not on or off$/);
    bad({ type: 'tap', 'mac-limit': '-1' }, /^bad mac-limit: -1 is not in 0\.\.1048576/);
    bad({ type: 'tap', 'mac-limit': 'abc' }, /^bad mac-limit: 'abc' is not a number: expected 0\.\.1048576/);
    bad({ type: 'tap', 'storm-limit': 'fast' }, /^bad storm-limit: 'fast' is not a number/);
  });
});
