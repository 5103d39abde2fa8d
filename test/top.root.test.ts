// `pier top --once`, as root (issue 12, requirement 3): two containers on tap ports, one pinging
// the other while top samples; the busy ports lead, with rates, within 80 columns.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { delNetns, makeNetns, NEEDS, pingUntil, requires, TestDaemon } from './helpers.ts';

describe('pier top (root)', requires(NEEDS.tun), () => {
  const d = new TestDaemon();
  let ns: string[] = [];

  before(async () => {
    await d.start();
    ns = makeNetns(3);
    d.ok('add-br', 'br0');
    d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${ns[0]}`, 'ip=10.79.0.1/24');
    d.ok('add-port', 'br0', 'c2', 'type=tap', `netns=${ns[1]}`, 'ip=10.79.0.2/24');
    d.ok('add-port', 'br0', 'idle', 'type=tap', `netns=${ns[2]}`, 'ip=10.79.0.3/24');
    await pingUntil(ns[0]!, '10.79.0.2', [], 15_000);
  });

  after(async () => {
    await d.cleanup();
    delNetns(ns);
  });

  it('--once prints one screen: the ports with traffic first, their rates, the dataplane line; 80 columns', () => {
    const flood = spawn('ip', ['netns', 'exec', ns[0]!, 'ping', '-q', '-i', '0.002', '-w', '4', '10.79.0.2'], { stdio: 'ignore' });
    try {
      const out = d.ok('top', '--once', '--interval', '1');
      const lines = out.trimEnd().split('\n');
      for (const l of lines) assert.ok(l.length <= 80, `${l.length} columns: ${l}`);
      assert.ok(!out.includes('\u001b'), 'no terminal escapes with --once');
      assert.match(lines[0]!, /^pier top .* dataplane CPU \d+% {2}pool \d+\/4096/);
      assert.match(lines[2]!, /^PORT +BRIDGE +TYPE +RX pps +RX b\/s +TX pps +TX b\/s +DROP\/s REASON$/);
      const rows = lines.slice(3).map((l) => l.split(/\s+/));
      assert.deepEqual(rows.map((r) => r[0]).slice(0, 2).sort(), ['c1', 'c2'], 'the two busy ports lead');
      assert.equal(rows[2]![0], 'idle');
      const rxPps = (v: string): number => Number(v.replace(/k$/, 'e3').replace(/M$/, 'e6'));
      assert.ok(rxPps(rows[0]![3]!) > 50, `pps of ${rows[0]![0]}: ${rows[0]![3]}`);
      assert.ok(rxPps(rows[2]![3]!) < 10, `the idle port (its own IPv6 chatter at most): ${rows[2]![3]}`);
    } finally {
      flood.kill();
    }
  });

  it('--sort drops and a bad interval: refused with the fix', () => {
    assert.match(d.ok('top', '--once', '--interval', '0.2', '--sort', 'drops'), /^PORT/m);
    const r = d.pier('top', '--once', '--interval', 'x');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--interval x is not a number of seconds \(0\.1\.\.3600\)/);
    for (const v of ['0', '3601', '-1']) {
      const o = d.pier('top', '--once', '--interval', v);
      assert.notEqual(o.code, 0);
      assert.match(o.stderr, new RegExp(`--interval ${v} is outside 0\\.1\\.\\.3600 seconds`));
      assert.match(o.stderr, /hint: for example --interval 2/);
    }
  });
});
