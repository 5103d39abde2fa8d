// `pier events`, as root (issue 12, requirement 4): an uplink whose device goes and comes back
// (link down with the reason, the failed retry once, link up), a vhost-user peer that connects and
// goes (with its typed reason), and `--follow` printing an event that happens after it started.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eth, ETH_P_EXPERIMENTAL, Sender } from './attacker.ts';
import { Frontend } from './frontend.ts';
import * as P from '../src/vhost/protocol.ts';
import { delNetns, makeNetns, must, NEEDS, PIER, requires, TestDaemon, waitFor, type DaemonEvent } from './helpers.ts';

describe('pier events (root)', requires(NEEDS.tun), () => {
  const d = new TestDaemon();
  let ns: string[] = [];
  const events = (): DaemonEvent[] => d.events();

  before(async () => {
    await d.start();
    ns = makeNetns(1);
    d.ok('add-br', 'br0');
  });

  after(async () => {
    await d.cleanup();
    delNetns(ns);
  });

  it('an uplink whose device goes and comes back: port-added, link-down with the reason, one reconcile-failed, link-up', async () => {
    const wire = (): void => {
      must('ip', ['-n', ns[0]!, 'link', 'add', 'up0w', 'type', 'veth', 'peer', 'name', 'up0p']);
      must('ip', ['-n', ns[0]!, 'link', 'set', 'up0w', 'up']);
      must('ip', ['-n', ns[0]!, 'link', 'set', 'up0p', 'up']);
    };
    wire();
    d.ok('add-port', 'br0', 'up0', 'type=afpacket', 'dev=up0w', `netns=${ns[0]}`);
    assert.deepEqual(events().map((e) => [e.type, e.port, e.bridge]), [['port-added', 'up0', 'br0']]);
    must('ip', ['-n', ns[0]!, 'link', 'del', 'up0w']);
    await waitFor(() => events().some((e) => e.type === 'link-down' && e.port === 'up0'), 15_000, () => `a link-down for up0: ${JSON.stringify(events())}`);
    assert.ok(events().find((e) => e.type === 'link-down')!.reason, 'with the reason');
    assert.match(d.ok('events'), /link-down up0 \(br0\) /);
    // The 5 s retry fails while the device is gone: one reconcile-failed for that error, not one per retry.
    await waitFor(() => events().some((e) => e.type === 'reconcile-failed' && e.port === 'up0'), 15_000, () => `a reconcile-failed for up0: ${JSON.stringify(events())}`);
    assert.match(events().find((e) => e.type === 'reconcile-failed')!.reason ?? '', /no device up0w/);
    wire();
    await waitFor(() => events().some((e) => e.type === 'link-up' && e.port === 'up0'), 15_000, () => `a link-up for up0: ${JSON.stringify(events())}`);
    assert.equal(events().filter((e) => e.type === 'reconcile-failed').length, 1);
    d.ok('del-port', 'br0', 'up0');
  });

  it('a vhost-user peer that connects, renegotiates its features and closes: peer-connected, features (+/-), peer-disconnected with its reason', async () => {
    const path = join(d.dir, 'v1.sock');
    d.ok('add-port', 'br0', 'v1', 'type=vhost-user', `path=${path}`);
    const fe = new Frontend(path);
    try {
      const features = await fe.setup();
      await waitFor(() => events().some((e) => e.type === 'peer-connected' && e.port === 'v1'), 10_000, () => `peer-connected: ${JSON.stringify(events())}`);
      assert.equal(events().some((e) => e.type === 'features'), false, 'the first negotiation of a session is not news');
      // A guest that drops TSO (ethtool -K eth0 tso off makes the driver renegotiate) and takes it back.
      const GUEST_TSO4 = 1n << 7n;
      fe.send(P.Req.SET_FEATURES, fe.u64(features & ~GUEST_TSO4));
      await waitFor(() => events().some((e) => e.type === 'features' && e.detail === '-GUEST_TSO4'), 10_000, () => `a features event: ${JSON.stringify(events())}`);
      fe.send(P.Req.SET_FEATURES, fe.u64(features));
      await waitFor(() => events().some((e) => e.type === 'features' && e.detail === '+GUEST_TSO4'), 10_000, () => `a second features event: ${JSON.stringify(events())}`);
    } finally {
      fe.close();
    }
    await waitFor(() => events().some((e) => e.type === 'peer-disconnected' && e.port === 'v1'), 10_000, () => `peer-disconnected: ${JSON.stringify(events())}`);
    assert.equal(events().find((e) => e.type === 'peer-disconnected')!.reason, 'peer-closed');
    d.ok('del-port', 'br0', 'v1');
  });

  it('a MAC that moves back and forth between two unsecured ports: one fdb-flapping event naming both, and the moves counted', async () => {
    const [na, nb] = makeNetns(2) as [string, string];
    try {
      d.ok('add-port', 'br0', 'fa', 'type=tap', `netns=${na}`, 'ifname=eth0');
      d.ok('add-port', 'br0', 'fb', 'type=tap', `netns=${nb}`, 'ifname=eth0');
      // The same source MAC from both, 60 times each 10 ms apart: a station can migrate once, not 100 times a second.
      const frame = eth('ff:ff:ff:ff:ff:ff', '02:00:00:00:fa:fb', ETH_P_EXPERIMENTAL, new Uint8Array(46));
      const senders = [new Sender(na, 'eth0', [frame], 60, 0.01), new Sender(nb, 'eth0', [frame], 60, 0.01)];
      for (const x of senders) await x.sent();
      await waitFor(() => events().some((e) => e.type === 'fdb-flapping'), 10_000, () => `an fdb-flapping event: ${JSON.stringify(events().slice(-5))}`);
      const f = events().find((e) => e.type === 'fdb-flapping')!;
      assert.equal(f.bridge, 'br0');
      assert.ok(['fa', 'fb'].includes(f.port ?? ''), JSON.stringify(f));
      assert.match(f.detail ?? '', /02:00:00:00:fa:fb/);
      assert.match(f.detail ?? '', /: (fa and fb|fb and fa)$/, 'both ports by name');
      assert.match(d.ok('fdb', 'br0'), /moves [1-9]\d*/);
      assert.equal(events().filter((e) => e.type === 'fdb-flapping').length, 1, 'rate-limited: one event for the burst');
    } finally {
      d.pier('del-port', 'br0', 'fa');
      d.pier('del-port', 'br0', 'fb');
      delNetns([na, nb]);
    }
  });

  it('--follow prints an event that happens after it started', async () => {
    const child = spawn(PIER, ['events', '--follow', '--json', '--socket', d.socket], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => { out += String(b); });
    try {
      const seen = (): DaemonEvent[] => out.trim().split('\n').filter((l) => l).map((l) => JSON.parse(l) as DaemonEvent);
      await waitFor(() => seen().some((e) => e.type === 'port-deleted' && e.port === 'v1'), 10_000, () => `the past events first: ${out}`);
      const n = seen().length;
      d.ok('add-port', 'br0', 'v2', 'type=vhost-user', `path=${join(d.dir, 'v2.sock')}`);
      await waitFor(() => seen().slice(n).some((e) => e.type === 'port-added' && e.port === 'v2'), 10_000, () => `the new event: ${out}`);
      assert.equal(new Set(seen().map((e) => e.seq)).size, seen().length, 'no event printed twice');
    } finally {
      child.kill('SIGTERM');
    }
  });
});
