import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VtepTable } from './learn.ts';

const MAC = 0x020000000001;

describe('VTEP learning table', () => {
  test('learns, follows a move at once, ages out', () => {
    const t = new VtepTable(16, 300);
    assert.equal(t.lookup(MAC, 0), -1);
    t.learn(MAC, 2, 10);
    assert.equal(t.lookup(MAC, 10), 2);
    t.learn(MAC, 5, 20);
    assert.equal(t.lookup(MAC, 20), 5);
    assert.equal(t.lookup(MAC, 320), 5);
    assert.equal(t.lookup(MAC, 320.5), -1, 'older than the aging time: unknown (floods)');
    assert.equal(t.age(400), 1);
    assert.equal(t.size, 0);
  });

  test('fixed size: past 3/4 full learning is refused and counted; every key stays reachable across deletions', () => {
    const t = new VtepTable(64);
    for (let i = 0; i < 100; i++) t.learn(MAC + i * 0x1000, i % 7, 1);
    assert.equal(t.size, 48);
    assert.equal(t.full, 52);
    for (let i = 0; i < 48; i += 2) assert.ok(t.delete(MAC + i * 0x1000));
    for (let i = 1; i < 48; i += 2) assert.equal(t.lookup(MAC + i * 0x1000, 1), i % 7, `key ${i}`);
    assert.deepEqual(t.countByVtep(7).reduce((a, b) => a + b, 0), 24);
  });

  test('aging removes only what is stale, wherever deletion shifts entries', () => {
    const t = new VtepTable(16);
    for (let i = 0; i < 12; i++) t.learn(MAC + i, 0, i % 2 === 0 ? 0 : 100);
    assert.equal(t.age(350), 6);
    for (let i = 0; i < 12; i++) assert.equal(t.lookup(MAC + i, 350), i % 2 === 0 ? -1 : 0);
  });
});
