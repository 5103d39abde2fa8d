import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EVENTS_MAX, EventLog } from './events.ts';

describe('EventLog', () => {
  it('numbers events, returns those after a number, and says how many a slow reader missed', () => {
    const log = new EventLog();
    assert.deepEqual(log.since(0), { events: [], missed: 0, last: 0 });
    log.add('port-added', { port: 'c1', bridge: 'br0' });
    log.add('link-down', { port: 'c1', reason: 'device error' });
    const all = log.since(0);
    assert.deepEqual(all.events.map((e) => [e.seq, e.type]), [[1, 'port-added'], [2, 'link-down']]);
    assert.equal(all.last, 2);
    assert.deepEqual(log.since(1).events.map((e) => e.seq), [2]);
    assert.deepEqual(log.since(2).events, []);
    for (let i = 0; i < EVENTS_MAX + 10; i++) log.add('port-changed', { port: 'c1' });
    const s = log.since(2);
    assert.equal(s.events.length, EVENTS_MAX, 'bounded');
    assert.equal(s.missed, 10, 'events 3..12 are gone');
    assert.equal(s.events[0]!.seq, 13);
  });
});
