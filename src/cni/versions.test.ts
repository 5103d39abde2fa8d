import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { bestVersion, compareVersions, readResult, writeResult, type Result } from './versions.cts';

const r: Result = {
  interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:01', mtu: 1500, sandbox: '/run/netns/c1' }, { name: 'vu0', mac: '02:00:00:00:00:02', socketPath: '/run/pier/vhost-user/x.sock' }],
  ips: [{ address: '10.88.0.5/16', gateway: '10.88.0.1', interface: 0 }, { address: 'fd00::5/64', interface: 0 }],
  routes: [{ dst: '0.0.0.0/0', gw: '10.88.0.1' }],
  dns: { nameservers: ['10.88.0.1'] },
};

describe('CNI versions', () => {
  test('compared as numbers, not strings', () => {
    assert.equal(compareVersions('0.10.0', '0.4.0'), 1);
    assert.equal(compareVersions('1.0.0', '1.1.0'), -1);
    assert.equal(compareVersions('1.1.0', '1.1.0'), 0);
  });

  test('a delegated plugin is spoken to in the newest version it has that is not newer than the request', () => {
    const hostLocal = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0'];
    assert.equal(bestVersion(hostLocal, '1.1.0'), '1.0.0');
    assert.equal(bestVersion(hostLocal, '0.4.0'), '0.4.0');
    assert.equal(bestVersion(['1.1.0'], '1.0.0'), undefined);
    assert.equal(bestVersion(['x', '1.0.0'], '1.1.0'), '1.0.0', 'a malformed version is ignored');
  });
});

describe('results between versions', () => {
  test('1.1.0 keeps the interface mtu and socketPath', () => {
    const w = writeResult(r, '1.1.0');
    assert.equal(w.cniVersion, '1.1.0');
    assert.deepEqual(w.interfaces, r.interfaces);
    assert.deepEqual(w.ips, r.ips);
  });

  test('1.0.0 drops what 1.1.0 added, and has no IP versions', () => {
    const w = writeResult(r, '1.0.0') as { interfaces: object[]; ips: object[] };
    assert.deepEqual(w.interfaces, [{ name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/run/netns/c1' }, { name: 'vu0', mac: '02:00:00:00:00:02' }]);
    assert.ok(w.ips.every((i) => !('version' in i)));
  });

  test('0.4.0 tags each IP with its family', () => {
    const w = writeResult(r, '0.4.0') as { ips: Array<{ version: string; address: string; interface: number }> };
    assert.deepEqual(w.ips.map((i) => [i.version, i.address, i.interface]), [['4', '10.88.0.5/16', 0], ['6', 'fd00::5/64', 0]]);
  });

  test('read back from any version it is the same result (0.4.0 family tags dropped)', () => {
    for (const v of ['0.4.0', '1.0.0', '1.1.0']) {
      const back = readResult(writeResult(r, v));
      assert.deepEqual(back.ips, r.ips, v);
      assert.deepEqual(back.routes, r.routes, v);
    }
  });

  test('empty parts are left out, and read back as empty', () => {
    const empty: Result = { interfaces: [], ips: [], routes: [], dns: {} };
    assert.deepEqual(writeResult(empty, '1.1.0'), { cniVersion: '1.1.0' });
    assert.deepEqual(readResult({ cniVersion: '1.0.0' }), empty);
  });

  test('a malformed result names the field', () => {
    assert.throws(() => readResult([]), /not a JSON object/);
    assert.throws(() => readResult({ ips: {} }), /ips is not a list/);
    assert.throws(() => readResult({ ips: [{ gateway: '10.0.0.1' }] }), /ips\[0\] has no address/);
    assert.throws(() => readResult({ ips: [{ address: '10.0.0.2/24', interface: -1 }] }), /ips\[0\]\.interface is not an index/);
    assert.throws(() => readResult({ interfaces: [{ mac: 'x' }] }), /interfaces\[0\] has no name/);
    assert.throws(() => readResult({ routes: [{ gw: '10.0.0.1' }] }), /routes\[0\] has no dst/);
    assert.throws(() => readResult({ dns: 'x' }), /dns is not an object/);
  });
});
