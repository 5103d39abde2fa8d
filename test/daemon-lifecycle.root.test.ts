// The daemon's own life, as root: one daemon per state directory; a daemon that fails to start
// leaves nothing behind; a restart brings listening ports back before the ports that connect to
// them; a --recreate to a namespace that is not there changes nothing; a port that fails at a
// restart shows the fix.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { delNetns, makeNetns, must, NEEDS, nsExec, PIER, requires, TestDaemon, waitFor, type DaemonEvent } from './helpers.ts';

describe('daemon life cycle (root)', requires(NEEDS.tun), () => {
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

  it('a second daemon on the same state directory is refused, naming the first one\'s pid', () => {
    const other = join(d.dir, 'other.sock');
    const r = spawnSync(PIER, ['daemon', '--socket', other, '--state-dir', d.stateDir], { encoding: 'utf8', timeout: 20_000 });
    assert.notEqual(r.status, 0, r.stdout + r.stderr);
    const pid = String(d.json<{ pid: number }>('show').pid);
    assert.match(r.stderr, new RegExp(`state directory .* is in use by another pier daemon \\(pid ${pid}\\)`));
    assert.match(r.stderr, /its own --state-dir/);
    assert.equal(existsSync(other), false, 'no socket left by the refused daemon');
  });

  it('a daemon whose metrics port is taken does not start, and leaves no control socket', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const second = new TestDaemon();
    try {
      await assert.rejects(second.start(['--metrics', `127.0.0.1:${port}`]), /cannot serve metrics/);
      assert.equal(existsSync(second.socket), false, 'the control socket went with the failed start');
      // Its state directory is free again: the next start on it works.
      await second.start();
    } finally {
      server.close();
      await second.cleanup();
    }
  });

  it('set-port --recreate to a namespace that is not there changes nothing: same interface, same routes', () => {
    d.ok('add-port', 'br0', 'r1', 'type=tap', `netns=${ns[0]}`, 'ip=10.93.0.1/24', 'ifname=eth0');
    must('ip', ['-n', ns[0]!, 'route', 'add', '10.99.0.0/24', 'dev', 'eth0']);
    const index = (): string => nsExec(ns[0]!, 'cat', ['/sys/class/net/eth0/ifindex']).stdout.trim();
    const before = index();
    const r = d.pier('set-port', 'r1', 'netns=pier-no-such-ns', '--recreate');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /network namespace pier-no-such-ns not found/);
    assert.equal(index(), before, 'the interface was not made again');
    assert.match(nsExec(ns[0]!, 'ip', ['route', 'show', '10.99.0.0/24']).stdout, /10\.99\.0\.0\/24 dev eth0/);
    assert.equal(events().filter((e) => e.type === 'reconcile-failed' && e.port === 'r1').length, 0);
    d.ok('del-port', 'br0', 'r1');
  });

  it('a restart makes listening ports first: a virtio-user port on the same daemon\'s vhost-user socket is up at once', async () => {
    const sock = join(d.dir, 'zz.sock');
    // The connecting port on br0, which comes first in the state file: the order is the daemon's.
    d.ok('add-br', 'br1');
    d.ok('add-port', 'br1', 'zz-device', 'type=vhost-user', `path=${sock}`);
    d.ok('add-port', 'br0', 'aa-driver', 'type=virtio-user', `path=${sock}`);
    await waitFor(() => d.json<{ port: { state: string } }>('show', 'aa-driver').port.state === 'up', 10_000, 'aa-driver up');
    await d.stop();
    await d.start();
    assert.equal(d.json<{ port: { state: string } }>('show', 'aa-driver').port.state, 'up', 'up as soon as the daemon is ready');
    assert.equal(events().filter((e) => e.type === 'reconcile-failed').length, 0, JSON.stringify(events()));
    d.ok('del-br', 'br1');
    d.ok('del-port', 'br0', 'aa-driver');
  });

  it('a port that cannot come back at a restart shows the fix in pier show', async () => {
    d.ok('add-port', 'br0', 'gone', 'type=tap', `netns=${ns[0]}`, 'ifname=eth1');
    await d.stop();
    must('ip', ['netns', 'del', ns[0]!]);
    await d.start();
    const show = d.json<{ port: { state: string; error?: string } }>('show', 'gone').port;
    assert.equal(show.state, 'error');
    assert.match(show.error ?? '', /network namespace .* not found .*\(fix: create it with: ip netns add /);
    d.ok('del-port', 'br0', 'gone');
    must('ip', ['netns', 'add', ns[0]!]);
  });
});
