import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { PierError } from '../errors.ts';
import { validatePortOptions, vlanOf } from './parse.ts';
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
    for (const bad of ['0', '17', '-1']) {
      assert.throws(() => validatePortOptions({ type: 'virtio-user', path: '/dev/vhost-net', queues: bad }), (e: unknown) => {
        assert.ok(e instanceof PierError);
        assert.match(e.message, new RegExp(`bad queues: ${bad} is not in 1\\.\\.16 \\(queue pairs; pier refuses rather than clamps\\)`));
        assert.match(e.hint ?? '', /fix queues=/);
        return true;
      });
    }
  });

  test('queues that are not a number are told so, with the range', () => {
    for (const bad of ['two', '', '0x4', '1e1']) {
      assert.throws(() => validatePortOptions({ type: 'virtio-user', path: '/dev/vhost-net', queues: bad }), (e: unknown) => {
        assert.ok(e instanceof PierError);
        assert.equal(e.message, `bad queues: '${bad}' is not a number: expected 1..16 (queue pairs)`);
        return true;
      });
    }
    assert.throws(() => validatePortOptions({ type: 'vhost-user', path: '/tmp/x.sock', 'queue-size': 'big' }),
      (e: Error) => e.message.startsWith('bad queue-size: \'big\' is not a number: expected a power of two in 64..32768'));
  });
});

describe('tag= and trunks=: every kind, one schema', () => {
  before(loadSchemas);
  const kinds: Array<Record<string, string>> = [
    { type: 'tap', netns: 'c1' },
    { type: 'vhost-user', path: '/tmp/x.sock' },
    { type: 'virtio-user', path: '/dev/vhost-net' },
  ];
  const bad = (raw: Record<string, unknown>, message: RegExp, hint: RegExp): void => {
    assert.throws(() => validatePortOptions(raw), (e: unknown) => {
      assert.ok(e instanceof PierError);
      assert.match(e.message, message);
      assert.match(e.hint ?? '', hint);
      return true;
    });
  };

  test('tag=N on any kind: stored as a number beside the kind\'s own options', () => {
    for (const k of kinds) {
      const o = validatePortOptions({ ...k, tag: '10' }) as { tag?: number; type: string };
      assert.equal(o.tag, 10);
      assert.equal(o.type, k.type);
      assert.deepEqual(vlanOf(o), { tag: 10 });
      // the stored form parses to the same
      assert.deepEqual(validatePortOptions(JSON.parse(JSON.stringify(o)) as Record<string, unknown>), o);
    }
    assert.equal((validatePortOptions({ type: 'tap', tag: '1' }) as { tag?: number }).tag, 1);
    assert.equal((validatePortOptions({ type: 'tap', tag: 4094 }) as { tag?: number }).tag, 4094);
  });

  test('no tag, no trunks: nothing is added (VLAN 0, untagged)', () => {
    const o = validatePortOptions({ type: 'tap', netns: 'c1' });
    assert.deepEqual(o, { type: 'tap', netns: 'c1' });
    assert.equal(vlanOf(o), undefined);
  });

  test('trunks: lists and ranges, sorted and each once; the stored list parses alike', () => {
    const o = validatePortOptions({ type: 'tap', trunks: '30,10-12,11,4094,1' }) as { trunks?: number[] };
    assert.deepEqual(o.trunks, [1, 10, 11, 12, 30, 4094]);
    assert.deepEqual(vlanOf(o as never), { trunks: [1, 10, 11, 12, 30, 4094] });
    assert.deepEqual((validatePortOptions({ type: 'vhost-user', path: '/tmp/x.sock', trunks: [20, 10] }) as { trunks?: number[] }).trunks, [10, 20]);
  });

  test('a bad tag names the key and the range', () => {
    for (const v of ['0', '4095', '-1', '1.5']) bad({ type: 'tap', tag: v }, new RegExp(`^bad tag: ${v.replace('.', '\\.')} is not in 1\\.\\.4094 \\(a VLAN id`), /fix tag=/);
    for (const v of ['ten', '']) bad({ type: 'tap', tag: v }, new RegExp(`^bad tag: '${v}' is not a number: expected 1\\.\\.4094 \\(a VLAN id\\)$`), /fix tag=/);
  });

  test('bad trunks name the key and what is wrong', () => {
    bad({ type: 'tap', trunks: '10,0' }, /^bad trunks: 0 is not in 1\.\.4094/, /fix trunks=/);
    bad({ type: 'tap', trunks: '10-5000' }, /^bad trunks: 10-5000 is not in 1\.\.4094/, /fix trunks=/);
    bad({ type: 'tap', trunks: '20-10' }, /^bad trunks: 20-10 is a range that ends before it starts/, /fix trunks=/);
    bad({ type: 'tap', trunks: '10,,20' }, /^bad trunks: '' is not a VLAN id or range/, /fix trunks=/);
    bad({ type: 'tap', trunks: 'x' }, /^bad trunks: 'x' is not a VLAN id or range: expected VLAN ids and ranges such as 10,20,30-40/, /fix trunks=/);
    bad({ type: 'tap', trunks: '' }, /^bad trunks: no VLAN given/, /fix trunks=/);
  });

  test('tag and trunks together are refused', () => {
    bad({ type: 'tap', tag: '10', trunks: '20' }, /^tag= and trunks= together/, /keep one/);
  });

  test('the kind\'s own schema still refuses unknown keys, and lists tag and trunks as valid', () => {
    bad({ type: 'tap', vlan: '10' }, /^unknown option key vlan for a tap port/, /valid keys: .*offloads, tag, trunks, thread, port-security, allowed-addresses, mac-limit, storm-limit$/);
  });

  test('unknown keys and missing keys name the kind with its article', () => {
    bad({ type: 'afpacket', dev: 'eth0', vlan: '10' }, /^unknown option key vlan for an afpacket port$/, /valid keys: type, dev, netns, offloads, tag/);
    bad({ type: 'afxdp' }, /^an afxdp port needs dev=$/, /add dev=/);
    bad({ type: 'vxlan', remote: '192.0.2.2' }, /^a vxlan port needs vni=$/, /add vni=/);
  });

  test('a kind\'s own error still comes first and names its key', () => {
    bad({ type: 'virtio-user', path: '/dev/vhost-net', queues: '0', tag: '10' }, /^bad queues:/, /fix queues=/);
  });
});

describe('on/off options: every key that takes on or off', () => {
  before(loadSchemas);
  const cases: Array<[Record<string, string>, string]> = [
    [{ type: 'tap' }, 'offloads'],
    [{ type: 'afpacket', dev: 'eth0' }, 'offloads'],
    [{ type: 'vhost-user', path: '/tmp/x.sock' }, 'busy-poll'],
    [{ type: 'vhost-user', path: '/tmp/x.sock' }, 'strict-memory'],
    [{ type: 'virtio-user', path: '/tmp/x.sock' }, 'server'],
    [{ type: 'tap' }, 'port-security'],
  ];

  test('on, off, true and false as typed, and the stored boolean', () => {
    for (const [base, key] of cases) {
      for (const [v, want] of [['on', true], ['true', true], ['off', false], ['false', false], [true, true], [false, false]] as const) {
        assert.equal((validatePortOptions({ ...base, [key]: v }) as unknown as Record<string, unknown>)[key], want, `${key}=${String(v)}`);
      }
    }
  });

  test('another word names the key and the word, and the hint the words to use', () => {
    for (const [base, key] of cases) {
      assert.throws(() => validatePortOptions({ ...base, [key]: 'maybe' }), (e: unknown) => {
        assert.ok(e instanceof PierError);
        assert.equal(e.message, `bad ${key}: 'maybe' is not on or off`);
        assert.equal(e.hint, `use ${key}=on|off`);
        return true;
      });
    }
  });
});
