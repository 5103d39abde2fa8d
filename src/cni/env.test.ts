import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { readEnv } from './env.cts';

const full = { CNI_CONTAINERID: 'c0ffee', CNI_NETNS: '/run/netns/c1', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni:/opt/cni/bin' };

function code4(env: NodeJS.ProcessEnv, re: RegExp): void {
  assert.throws(() => readEnv(env), (e: { code: number; message: string }) => e.code === 4 && re.test(e.message));
}

describe('the CNI environment', () => {
  test('each verb has what it needs; CNI_PATH split into directories', () => {
    const e = readEnv({ ...full, CNI_COMMAND: 'ADD', CNI_ARGS: 'IgnoreUnknown=1' });
    assert.deepEqual(e, { verb: 'ADD', containerId: 'c0ffee', netns: '/run/netns/c1', ifname: 'eth0', args: 'IgnoreUnknown=1', path: ['/usr/lib/cni', '/opt/cni/bin'] });
    assert.equal(readEnv({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c', CNI_IFNAME: 'eth0' }).netns, '', 'DEL without CNI_NETNS: the namespace may be gone');
    assert.equal(readEnv({ CNI_COMMAND: 'STATUS' }).verb, 'STATUS');
    assert.equal(readEnv({ CNI_COMMAND: 'VERSION' }).verb, 'VERSION');
    assert.equal(readEnv({ CNI_COMMAND: 'GC', CNI_PATH: '/usr/lib/cni' }).verb, 'GC');
  });

  test('missing variables: code 4 naming them', () => {
    code4({}, /\[CNI_COMMAND\]/);
    code4({ CNI_COMMAND: 'add' }, /unknown CNI_COMMAND: add/);
    code4({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c' }, /\[CNI_NETNS,CNI_IFNAME\] missing/);
    code4({ CNI_COMMAND: 'CHECK', CNI_NETNS: '/x', CNI_IFNAME: 'eth0' }, /\[CNI_CONTAINERID\] missing/);
    code4({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c' }, /\[CNI_IFNAME\] missing/);
    code4({ CNI_COMMAND: 'GC' }, /\[CNI_PATH\] missing/);
  });

  test('a malformed container id or interface name: code 4', () => {
    code4({ ...full, CNI_COMMAND: 'ADD', CNI_CONTAINERID: '-c' }, /CNI_CONTAINERID/);
    code4({ ...full, CNI_COMMAND: 'ADD', CNI_IFNAME: 'a-very-long-ifname' }, /longer than 15 bytes/);
    code4({ ...full, CNI_COMMAND: 'ADD', CNI_IFNAME: 'eth/0' }, /contains \/ or :/);
    code4({ ...full, CNI_COMMAND: 'DEL', CNI_IFNAME: '..' }, /is \. or \.\./);
    code4({ ...full, CNI_COMMAND: 'ADD', CNI_IFNAME: 'eth@0' }, /not a name pier gives/);
  });
});
