import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { PierError } from '../errors.ts';
import { validatePortOptions } from './parse.ts';
import { loadSchemas } from './registry.ts';

describe('virtio-user options', () => {
  before(loadSchemas);
  test('queues=1..16 are accepted as numbers', () => {
    for (const n of [1, 2, 16]) {
      const o = validatePortOptions({ type: 'virtio-user', path: '/dev/vhost-net', queues: String(n) });
      assert.equal((o as { queues?: number }).queues, n);
    }
  });

  test('queues out of range is refused, not clamped, with the range', () => {
    for (const bad of ['0', '17', 'two', '-1']) {
      assert.throws(() => validatePortOptions({ type: 'virtio-user', path: '/dev/vhost-net', queues: bad }), (e: unknown) => {
        assert.ok(e instanceof PierError);
        assert.match(e.message, new RegExp(`bad queues: ${bad} is not in 1\\.\\.16 \\(queue pairs; pier refuses rather than clamps\\)`));
        assert.match(e.hint ?? '', /fix queues=/);
        return true;
      });
    }
  });
});
