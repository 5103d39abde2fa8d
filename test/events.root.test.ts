// `pier events`, as root (issue 12, requirement 4): an uplink whose device goes and comes back
// (link down with the reason, the failed retry once, link up), a vhost-user peer that connects and
// goes (with its typed reason), and `--follow` printing an event that happens after it started.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Frontend } from './frontend.ts';
import * as P from '../src/vhost/protocol.ts';
import { delNetns, makeNetns, must, NEEDS, PIER, requires, TestDaemon, waitFor } from './helpers.ts';

interface Ev { seq: number; time: string; type: string; port?: string; bridge?: string; reason?: string; detail?: string }

describe('pier events (root)', requires(NEEDS.tun), () => {
  const d = new TestDaemon();
  let ns: string[] = [];
  const events = (): Ev[] => d.ok('events', '--json').trim().split('\n').filter((l) => l).map((l) => JSON.parse(l) as Ev);

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

  it('--follow prints an event that happens after it started', async () => {
    const child = spawn(PIER, ['events', '--follow', '--json', '--socket', d.socket], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => { out += String(b); });
    try {
      const seen = (): Ev[] => out.trim().split('\n').filter((l) => l).map((l) => JSON.parse(l) as Ev);
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
