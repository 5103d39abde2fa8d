// `pier set-port` (issue 9): what can change on a running port changes live, with the
// container's interface kept (same ifindex); what cannot is refused with the reason unless
// --recreate; bad values change nothing; a restart keeps the change. And a version 1 state file
// is migrated on start with its ports and their interfaces kept.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { delNetns, makeNetns, must, NEEDS, ping, requires, sh, TestDaemon } from './helpers.ts';

function link(ns: string, dev: string): { ifindex: number; mtu: number; address: string; addrs: string[] } {
  const j = JSON.parse(must('ip', ['-n', ns, '-j', 'addr', 'show', 'dev', dev]))[0];
  return { ifindex: j.ifindex, mtu: j.mtu, address: j.address, addrs: j.addr_info.filter((a: any) => a.family === 'inet').map((a: any) => `${a.local}/${a.prefixlen}`) };
}

describe('pier set-port (root)', requires(NEEDS.tun), () => {
  const d = new TestDaemon();

  before(async () => {
    await d.start();
    d.ok('add-br', 'br0');
  });

  after(async () => {
    await d.cleanup();
  });

  /**
   * Two containers of the test's own on tap ports pa and pb (10.83.0.1 and .2), and a third
   * namespace; the ports and namespaces go when `body` ends, however it ends.
   */
  async function withPair(body: (a: string, b: string, other: string) => void | Promise<void>): Promise<void> {
    const [a, b, other] = makeNetns(3) as [string, string, string];
    try {
      d.ok('add-port', 'br0', 'pa', 'type=tap', `netns=${a}`, 'ip=10.83.0.1/24');
      d.ok('add-port', 'br0', 'pb', 'type=tap', `netns=${b}`, 'ip=10.83.0.2/24');
      await body(a, b, other);
    } finally {
      d.pier('del-port', 'br0', 'pa');
      d.pier('del-port', 'br0', 'pb');
      delNetns([a, b, other]);
    }
  }

  it('mtu, ip, mac and offloads change live: same interface, traffic goes on', () => withPair((a, b) => {
    const before = link(a, 'pa');
    d.ok('set-port', 'pa', 'mtu=9000');
    d.ok('set-port', 'pb', 'mtu=9000');
    assert.equal(link(a, 'pa').mtu, 9000);
    assert.equal(link(a, 'pa').ifindex, before.ifindex, 'the same interface');
    assert.equal(ping(a, '10.83.0.2', ['-c', '2', '-M', 'do', '-s', '8900']).code, 0, 'jumbo frames cross');
    d.ok('set-port', 'pa', 'ip=10.83.0.11/24', 'mac=02:00:00:83:00:11');
    const now = link(a, 'pa');
    assert.deepEqual(now.addrs, ['10.83.0.11/24'], 'the old address is gone, the new one there');
    assert.equal(now.address, '02:00:00:83:00:11');
    assert.equal(now.ifindex, before.ifindex);
    d.ok('set-port', 'pa', 'offloads=off');
    assert.equal(ping(b, '10.83.0.11', ['-c', '2']).code, 0, 'traffic after the changes');
    const o = d.json('show', 'pa').port.options;
    assert.deepEqual({ mtu: o.mtu, ip: o.ip, mac: o.mac, offloads: o.offloads }, { mtu: 9000, ip: ['10.83.0.11/24'], mac: '02:00:00:83:00:11', offloads: false });
    assert.equal(d.json('show', 'pa').port.state, 'up');
  }));

  it('KEY= drops a key (no address at all)', () => withPair((_a, b) => {
    d.ok('set-port', 'pb', 'ip=');
    assert.deepEqual(link(b, 'pb').addrs, []);
    assert.equal(d.json('show', 'pb').port.options.ip, undefined);
  }));

  it('bad values, unknown keys and ports, a new type: refused, nothing changed', () => withPair((a) => {
    const state = readFileSync(join(d.stateDir, 'state.json'), 'utf8');
    const l = link(a, 'pa');
    for (const [args, msg] of [
      [['set-port', 'pa', 'mtu=99999'], /bad mtu/],
      [['set-port', 'pa', 'colour=blue'], /unknown option key colour/],
      [['set-port', 'pa', 'type=vhost-user'], /type of port pa cannot change/],
      [['set-port', 'nope', 'mtu=1500'], /no port named nope/],
      [['set-port', 'pa', 'ifname=pb', 'mtu=1400'], /ifname of port pa cannot change while it runs/],
    ] as const) {
      const r = d.pier(...args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, msg);
    }
    assert.equal(readFileSync(join(d.stateDir, 'state.json'), 'utf8'), state, 'state unchanged');
    assert.deepEqual(link(a, 'pa'), l, 'interface unchanged (the mtu of the refused command too)');
  }));

  it('what cannot change live is refused with the reason, and done with --recreate', () => withPair((a, b, other) => {
    d.ok('set-port', 'pa', 'mtu=9000', 'ip=10.83.0.11/24');
    const r = d.pier('set-port', 'pa', `netns=${other}`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /netns of port pa cannot change while it runs/);
    assert.match(r.stderr, /--recreate/);
    d.ok('set-port', 'pa', `netns=${other}`, '--recreate');
    assert.equal(link(other, 'pa').mtu, 9000, 'made again in the other namespace, with its options');
    assert.equal(sh('ip', ['-n', a, 'link', 'show', 'pa']).code !== 0, true, 'and gone from the first');
    assert.equal(ping(b, '10.83.0.11', ['-c', '2']).code, 0);
  }));

  it('a restart keeps what set-port changed', () => withPair(async (_a, b, other) => {
    d.ok('set-port', 'pa', 'mtu=9000', 'ip=10.83.0.11/24', 'mac=02:00:00:83:00:11', 'offloads=off');
    d.ok('set-port', 'pa', `netns=${other}`, '--recreate');
    try {
      await d.stop();
    } finally {
      await d.start();
    }
    const l = link(other, 'pa');
    assert.equal(l.mtu, 9000);
    assert.equal(l.address, '02:00:00:83:00:11');
    assert.equal(d.json('show', 'pa').port.options.offloads, false);
    assert.equal(ping(b, '10.83.0.11', ['-c', '2']).code, 0);
  }));
});

describe('state file of version 1 (root)', requires(NEEDS.tun), () => {
  const d = new TestDaemon();
  let ns = '';
  before(() => {
    [ns] = makeNetns(1) as [string];
  });
  after(async () => {
    await d.cleanup();
    delNetns([ns]);
  });

  it('is migrated on start: the ports come back, the original is kept', async () => {
    mkdirSync(d.stateDir, { recursive: true });
    const v1 = { version: 1, bridges: { br0: { ports: { old: { type: 'tap', netns: ns, ip: ['10.84.0.1/24'], mac: '02:00:00:84:00:01', mtu: 1400 } } } } };
    writeFileSync(join(d.stateDir, 'state.json'), JSON.stringify(v1));
    await d.start();
    assert.equal(d.json('show', 'old').port.state, 'up');
    const l = link(ns, 'old');
    assert.deepEqual([l.mtu, l.address, l.addrs], [1400, '02:00:00:84:00:01', ['10.84.0.1/24']]);
    const now = JSON.parse(readFileSync(join(d.stateDir, 'state.json'), 'utf8'));
    assert.equal(now.version, 2);
    assert.deepEqual(now.bridges.br0.ports.old.options, v1.bridges.br0.ports.old);
    assert.ok(existsSync(join(d.stateDir, 'state.v1.json')), 'the version 1 file kept');
    assert.match(d.log, /state file migrated/);
  });
});

