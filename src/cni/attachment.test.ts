import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { attachmentPort as daemonPort } from '../daemon/cni.ts';
import { attachmentPort, writeTombstone } from './attachment.cts';

describe('attachments', () => {
  test('the port name is the daemon\'s (computed apart: the daemon\'s module loads zod)', () => {
    for (const a of [{ network: 'pier', containerId: 'c0ffee', ifname: 'eth0' }, { network: 'n.1', containerId: 'x'.repeat(64), ifname: 'net1' }]) {
      assert.equal(attachmentPort(a), daemonPort(a.network, a.containerId, a.ifname));
      assert.match(attachmentPort(a), /^cni-[0-9a-f]{12}$/);
    }
  });

  test('a tombstone: <dir of the socket>/cni-del/<port>.json with the attachment, written whole', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pier-cni-unit-'));
    try {
      const a = { network: 'pier', containerId: 'c0ffee', ifname: 'eth0' };
      const file = writeTombstone(join(dir, 'pier.sock'), a);
      assert.equal(file, join(dir, 'cni-del', `${attachmentPort(a)}.json`));
      assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), a);
      assert.deepEqual(readdirSync(join(dir, 'cni-del')), [`${attachmentPort(a)}.json`], 'no temporary file left');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
