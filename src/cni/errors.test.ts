import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CniError, CODE, errorJson } from './errors.cts';

describe('CNI error JSON', () => {
  test('the spec\'s four keys, in the request\'s version', () => {
    const j = JSON.parse(errorJson(new CniError(CODE.badConfig, 'invalid pier-cni config: mtu 9 is out of range', 'mtu is an integer in 68..65521'), '1.0.0'));
    assert.deepEqual(j, { cniVersion: '1.0.0', code: 7, msg: 'invalid pier-cni config: mtu 9 is out of range', details: 'mtu is an integer in 68..65521' });
  });

  test('anything else thrown is an internal error (999, as libcni) with its stack in details', () => {
    const j = JSON.parse(errorJson(new TypeError('boom'), '1.1.0'));
    assert.equal(j.code, 999);
    assert.match(j.details, /TypeError: boom/);
  });
});
