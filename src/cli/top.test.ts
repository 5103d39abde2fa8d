import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { human, rates, renderTop, type TopSample } from './top.ts';

const sample = (time: number, cpu: number, c1: Record<string, number>, c2: Record<string, number>): TopSample => ({
  time,
  dataplane: { cpuSeconds: cpu, poolSize: 4096, poolAvailable: 4000 },
  ports: [
    { port: 'c1', bridge: 'br0', type: 'tap', up: true, counters: c1 },
    { port: 'a-port-with-a-long-name', bridge: 'bridge-long', type: 'vhost-user-client', up: false, counters: c2 },
  ],
});

describe('pier top', () => {
  it('rates, the main drop reason, CPU share; every line within 80 columns; sorted as asked', () => {
    const a = sample(1000, 10, { rx_packets: 0, rx_bytes: 0, tx_packets: 0, tx_bytes: 0, rx_dropped_no_buffer: 0 }, { rx_packets: 0, tx_dropped_full: 0 });
    const b = sample(3000, 11, { rx_packets: 2000, rx_bytes: 3_000_000, tx_packets: 1000, tx_bytes: 1000, rx_dropped_no_buffer: 10 }, { rx_packets: 2, tx_dropped_full: 400 });
    const r = rates(a, b);
    assert.equal(r.seconds, 2);
    assert.equal(r.cpu, 0.5);
    const c1 = r.rows.find((x) => x.port === 'c1')!;
    assert.equal(c1.rxPps, 1000);
    assert.equal(c1.rxBps, 12_000_000);
    assert.equal(c1.dropsPs, 5);
    assert.equal(c1.reason, 'rx no_buffer');
    const byRate = renderTop(b, r, 'rate').split('\n');
    const byDrops = renderTop(b, r, 'drops').split('\n');
    for (const l of [...byRate, ...byDrops]) assert.ok(l.length <= 80, `${l.length}: ${l}`);
    assert.match(byRate[0]!, /dataplane CPU 50% {2}pool 96\/4096/);
    assert.match(byRate[3]!, /^c1 /, 'the busiest port first');
    assert.match(byDrops[3]!, /^a-port-with~/, 'the dropping port first');
    assert.match(byDrops[3]!, / vhost-user-client /, 'the type column fits every kind\'s name');
    assert.match(byRate[3]!, /^c1 {11}br0 {4}tap {15}/, 'the type column as wide as the longest type shown');
    assert.match(renderTop(b, r, 'drops', 100).split('\n')[3]!, /port down$/);
    assert.match(byRate[3]!, / 12\.0M /);
  });

  it('human units', () => {
    assert.deepEqual([0, 999, 1000, 12_345, 1_234_567, 9.87e9].map(human), ['0', '999', '1.00k', '12.3k', '1.23M', '9.87G']);
  });
});
