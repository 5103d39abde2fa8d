// The Prometheus endpoint, as root (issue 12, requirement 2): a daemon with --metrics on a free
// loopback port, two containers on tap ports. The text parses as format 0.0.4, the counters move
// with a ping, pool and dataplane CPU are there, a deleted port's series go, and without the flag
// nothing listens.
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { delNetns, makeNetns, NEEDS, ping, pingUntil, requires, TestDaemon, waitFor } from './helpers.ts';
import { Testpmd } from './testpmd.ts';

interface Sample { name: string; labels: Record<string, string>; value: number }

/** A strict reader of text format 0.0.4: HELP and TYPE before each family's samples, label syntax, numbers. */
function parse(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') {
        assert.ok(['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(meta[3]!), line);
        types.set(meta[2]!, meta[3]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      for (const l of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g)) labels[l[1]!] = l[2]!;
    }
    const value = Number(m[3]);
    assert.ok(!Number.isNaN(value), line);
    assert.ok(types.has(m[1]!), `${m[1]} sampled before its TYPE`);
    samples.push({ name: m[1]!, labels, value });
  }
  return { samples, types };
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('metrics endpoint (root)', requires(NEEDS.tun), () => {
  const d = new TestDaemon();
  let ns: string[] = [];
  let port = 0;
  let url = '';

  const scrape = async (): Promise<{ samples: Sample[]; types: Map<string, string>; contentType: string }> => {
    const r = await fetch(url);
    assert.equal(r.status, 200);
    return { ...parse(await r.text()), contentType: r.headers.get('content-type') ?? '' };
  };
  const value = (s: Sample[], name: string, labels: Record<string, string>): number | undefined =>
    s.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;

  before(async () => {
    port = await freePort();
    url = `http://127.0.0.1:${port}/metrics`;
    await d.start(['--metrics', `127.0.0.1:${port}`]);
    ns = makeNetns(2);
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${ns[0]}`, 'ip=10.77.0.1/24');
    d.ok('add-port', 'br0', 'c2', 'type=tap', `netns=${ns[1]}`, 'ip=10.77.0.2/24');
  });

  after(async () => {
    await d.cleanup();
    delNetns(ns);
  });

  it('serves text format 0.0.4 with every port\'s counters, pool, dataplane CPU and build info', async () => {
    const m = await scrape();
    assert.match(m.contentType, /^text\/plain; version=0\.0\.4/);
    assert.equal(m.types.get('pier_port_receive_packets_total'), 'counter');
    assert.equal(m.types.get('pier_port_up'), 'gauge');
    for (const p of ['c1', 'c2']) {
      assert.equal(value(m.samples, 'pier_port_up', { bridge: 'br0', port: p, type: 'tap' }), 1);
      assert.notEqual(value(m.samples, 'pier_port_receive_packets_total', { bridge: 'br0', port: p, type: 'tap' }), undefined);
      assert.notEqual(value(m.samples, 'pier_port_drops_total', { port: p, direction: 'receive', reason: 'no_buffer' }), undefined);
    }
    const free = value(m.samples, 'pier_pool_buffers', { state: 'free' })!;
    const used = value(m.samples, 'pier_pool_buffers', { state: 'used' })!;
    assert.equal(free + used, 4096, 'the default pool');
    assert.ok(value(m.samples, 'pier_dataplane_cpu_seconds_total', {})! >= 0);
    assert.equal(value(m.samples, 'pier_build_info', { node: process.versions.node }), 1);
  });

  it('counters move with traffic', async () => {
    const before = await scrape();
    await pingUntil(ns[0]!, '10.77.0.2', [], 15_000);
    assert.equal(ping(ns[0]!, '10.77.0.2', ['-c', '5', '-i', '0.05']).code, 0);
    const now = await scrape();
    for (const name of ['pier_port_receive_packets_total', 'pier_port_transmit_packets_total', 'pier_port_receive_bytes_total']) {
      const a = value(before.samples, name, { port: 'c1' })!;
      const b = value(now.samples, name, { port: 'c1' })!;
      assert.ok(b >= a + 5, `${name} c1: ${a} -> ${b}`);
    }
    assert.ok(value(now.samples, 'pier_dataplane_cpu_seconds_total', {})! >= value(before.samples, 'pier_dataplane_cpu_seconds_total', {})!);
    // The FDB's size is published at the dataplane's housekeeping (at most a second later).
    let fdb = 0;
    await waitFor(async () => (fdb = value((await scrape()).samples, 'pier_fdb_entries', { bridge: 'br0' }) ?? 0) >= 2, 5000, () => `two MACs learned on br0: ${fdb}`);
  });

  it('a vhost-user port: its ring levels (sampled once a second) and the notifications it took, beside a tap that has neither', requires(NEEDS.testpmd), async () => {
    const t = new Testpmd([`net_virtio_user0,path=${d.dir}/app.sock`], 'icmpecho');
    try {
      d.ok('add-port', 'br0', 'app', 'type=vhost-user', `path=${d.dir}/app.sock`);
      await t.start();
      await pingUntil(ns[0]!, '10.77.0.99', [], 15_000); // icmpecho answers ARP and echo requests for any address
      const app = { bridge: 'br0', port: 'app', type: 'vhost-user' };
      // Sampled once a second: the first sample may come before testpmd has posted its buffers.
      let m = await scrape();
      await waitFor(async () => {
        m = await scrape();
        return (value(m.samples, 'pier_port_transmit_ring_room', app) ?? 0) > 0;
      }, 10_000, () => `testpmd's receive buffers in app's ring levels: ${JSON.stringify(m.samples.filter((s) => s.labels.port === 'app' && s.name.includes('ring')))}`);
      assert.equal(value(m.samples, 'pier_port_ring_size', { ...app, ring: 'receive' }), 256, 'the frontend\'s transmit vring');
      const room = value(m.samples, 'pier_port_transmit_ring_room', app)!;
      assert.ok(room > 0 && room <= 256, `testpmd posted receive buffers for pier: ${room}`);
      assert.ok(value(m.samples, 'pier_port_receive_ring_waiting', app)! >= 0);
      assert.equal(value(m.samples, 'pier_port_receive_ring_room', app), undefined, 'a device cannot see its driver\'s free descriptors');
      assert.equal(value(m.samples, 'pier_port_transmit_ring_room', { port: 'c1' }), undefined, 'a tap has no ring');
      // testpmd's answers come with kicks (its transmit vring asks for them).
      await waitFor(async () => (value((await scrape()).samples, 'pier_port_notifications_total', { ...app, direction: 'received' }) ?? 0) > 0, 10_000, 'a kick from testpmd');
      assert.notEqual(value(m.samples, 'pier_port_notifications_total', { ...app, direction: 'sent' }), undefined);
    } finally {
      await t.kill();
      d.pier('del-port', 'br0', 'app');
    }
  });

  it('a deleted port\'s series go; other paths are 404', async () => {
    d.ok('del-port', 'br0', 'c2');
    const m = await scrape();
    assert.equal(m.samples.some((s) => s.labels.port === 'c2'), false);
    assert.ok(m.samples.some((s) => s.labels.port === 'c1'));
    assert.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
  });

  it('nothing listens without --metrics; a bad address is refused with the fix', async () => {
    const other = new TestDaemon();
    const p = await freePort();
    await other.start();
    try {
      await assert.rejects(fetch(`http://127.0.0.1:${p}/metrics`));
      await assert.rejects(fetch('http://127.0.0.1:9477/metrics'), 'not on the default port either');
    } finally {
      await other.cleanup();
    }
    const bad = new TestDaemon();
    await assert.rejects(bad.start(['--metrics', 'localhost']), /is not ADDRESS:PORT/);
    await bad.cleanup();
  });
});
