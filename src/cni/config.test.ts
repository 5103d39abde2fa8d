import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_SOCKET } from '../daemon/defaults.ts';
import { DEFAULT_BRIDGE, parseConfig, peekVersion } from './config.cts';

const base = { cniVersion: '1.1.0', name: 'pier', type: 'pier-cni' };
const parse = (o: object) => parseConfig(JSON.stringify({ ...base, ...o }));

/** The config is refused with `code`, its message matching `msg` and its details `fix`. */
function refused(o: object | string, code: number, msg: RegExp, fix?: RegExp): void {
  assert.throws(() => (typeof o === 'string' ? parseConfig(o) : parse(o)), (e: { code: number; message: string; details: string }) => {
    assert.equal(e.code, code, e.message);
    assert.match(e.message, msg);
    if (fix) assert.match(e.details, fix);
    return true;
  });
}

describe('the network config', () => {
  test('the issue\'s example, every key read', () => {
    const c = parse({
      bridge: 'br0', socket: '/run/pier/pier.sock', portType: 'tap', mtu: 1500, isGateway: true, ipMasq: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.88.0.0/16', gateway: '10.88.0.1' }]], routes: [{ dst: '0.0.0.0/0' }] },
    });
    assert.equal(c.bridge, 'br0');
    assert.equal(c.mtu, 1500);
    assert.equal(c.isGateway, true);
    assert.equal(c.ipMasq, true);
    assert.equal(c.ipamType, 'host-local');
    assert.equal(c.raw.type, 'pier-cni', 'the object as read is kept for the IPAM plugin');
  });

  test('defaults: bridge cni0, pier\'s socket (the daemon\'s DEFAULT_SOCKET), tap, no IPAM for an empty ipam', () => {
    const c = parse({ ipam: {} });
    assert.equal(c.bridge, DEFAULT_BRIDGE);
    assert.equal(c.socket, DEFAULT_SOCKET);
    assert.equal(c.portType, 'tap');
    assert.equal(c.isGateway, false);
    assert.equal(c.ipamType, undefined);
    assert.deepEqual(c.options, {});
  });

  test('port options pass through; the runtime\'s mac capability wins over the config\'s', () => {
    const c = parse({ portType: 'vhost-user', queues: 2, 'queue-size': 1024, offloads: false, mac: '02:00:00:00:00:01', runtimeConfig: { mac: '02:AA:00:00:00:02' }, socketDir: '/run/pier/vu' });
    assert.deepEqual(c.options, { queues: 2, 'queue-size': 1024, offloads: false });
    assert.equal(c.mac, '02:aa:00:00:00:02');
    assert.equal(c.socketDir, '/run/pier/vu');
  });

  test('GC\'s valid attachments and a prevResult are read', () => {
    const c = parse({ 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }], prevResult: { cniVersion: '1.1.0', interfaces: [{ name: 'eth0' }], ips: [{ address: '10.0.0.2/24', interface: 0 }] } });
    assert.deepEqual(c.validAttachments, [{ containerId: 'a', ifname: 'eth0' }]);
    assert.equal(c.prevResult?.ips[0]?.address, '10.0.0.2/24');
    assert.equal(parse({}).validAttachments, undefined, 'no list: GC refuses rather than remove everything');
    assert.deepEqual(parse({ 'cni.dev/valid-attachments': [] }).validAttachments, [], 'an empty list is a list');
    assert.deepEqual(parse({ 'cni.dev/attachments': [{ containerID: 'b', ifname: 'net1' }] }).validAttachments, [{ containerId: 'b', ifname: 'net1' }]);
  });

  test('not JSON, or not an object: code 6', () => {
    refused('{"cniVersion": ', 6, /not JSON/);
    refused('[]', 6, /not a JSON object/);
    refused('', 6, /not JSON/);
  });

  test('a version pier-cni does not speak: code 1, the versions it does in details', () => {
    refused({ cniVersion: '0.3.1' }, 1, /incompatible CNI versions/, /0\.4\.0, 1\.0\.0, 1\.1\.0/);
    refused({ cniVersion: undefined }, 1, /incompatible/, /missing/);
  });

  test('each bad key: code 7 naming it, with the fix', () => {
    refused({ name: undefined }, 7, /name is missing/);
    refused({ name: 'a b' }, 7, /name "a b" is not a network name/);
    refused({ portType: 'vhostuser' }, 7, /portType "vhostuser"/, /"tap" \(the default\), "virtio-user" or "vhost-user"/);
    refused({ porttype: 'tap' }, 7, /porttype is not a key/, /spell it "portType"/);
    refused({ mtu: 9 }, 7, /mtu 9 is out of range/, /68\.\.65521/);
    refused({ mtu: '1500' }, 7, /mtu "1500"/, /written as a number/);
    refused({ queues: 0 }, 7, /queues/, /1\.\.16/);
    refused({ 'queue-size': 1000 }, 7, /queue-size/, /power of two/);
    refused({ offloads: 'maybe' }, 7, /offloads/);
    refused({ isGateway: 'true' }, 7, /isGateway "true" is not a boolean/, /true or false/);
    refused({ mac: '01:00:00:00:00:01' }, 7, /multicast/);
    refused({ mac: 'nope' }, 7, /mac "nope" is not a MAC/);
    refused({ runtimeConfig: { mac: 5 } }, 7, /runtimeConfig\.mac/);
    refused({ socket: 'pier.sock' }, 7, /socket "pier.sock" is not an absolute path/);
    refused({ socketDir: '/' + 'x'.repeat(90) }, 7, /socketDir/, /shorter/);
    refused({ bridge: '-br' }, 7, /bridge "-br"/);
    refused({ bridge: '' }, 7, /bridge "" is not a non-empty string/);
    refused({ ipam: { ranges: [] } }, 7, /ipam\.type is missing/, /host-local/);
    refused({ ipam: { type: '../bin/sh' } }, 7, /ipam\.type/);
    refused({ ipam: 'host-local' }, 7, /ipam is not an object/);
    refused({ prevResult: { ips: [{}] } }, 7, /prevResult ips\[0\] has no address/);
    refused({ 'cni.dev/valid-attachments': [{ containerID: 'a' }] }, 7, /valid-attachments\[0\]/);
  });

  test('the version is found for the error JSON even in a config that fails', () => {
    assert.equal(peekVersion('{"cniVersion": "0.4.0", "name": 5}'), '0.4.0');
    assert.equal(peekVersion('{"cniVersion": "9.9.9"}'), undefined);
    assert.equal(peekVersion('not json'), undefined);
  });
});
