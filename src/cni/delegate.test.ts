import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { execPlugin } from './delegate.cts';

describe('execPlugin', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pier-delegate-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  function plugin(name: string, script: string): string {
    const p = join(dir, name);
    writeFileSync(p, `#!/bin/sh\n${script}\n`);
    chmodSync(p, 0o755);
    return p;
  }

  // A config larger than a pipe's buffer makes the write outlive a plugin that never reads: the
  // EPIPE a fast VERSION can cause by chance happens every time.
  const big = { cniVersion: '1.1.0', pad: 'x'.repeat(1 << 20) };

  test('a plugin that answers without reading its stdin (as VERSION does) is taken at its word', () => {
    const p = plugin('noread', 'exec 0<&-; echo \'{"cniVersion":"1.1.0","supportedVersions":["1.0.0"]}\'');
    assert.deepEqual(execPlugin(p, 'VERSION', big).result, { cniVersion: '1.1.0', supportedVersions: ['1.0.0'] });
  });

  test('one that fails without reading gives its own error, not the broken pipe', () => {
    const p = plugin('noread-fail', 'exec 0<&-; echo \'{"cniVersion":"1.1.0","code":4,"msg":"CNI_CONTAINERID missing"}\'; exit 1');
    assert.deepEqual(execPlugin(p, 'ADD', big).error, { code: 4, msg: 'CNI_CONTAINERID missing', details: '' });
  });

  test('one that cannot be run is reported with the reason', () => {
    const p = join(dir, 'not-executable');
    writeFileSync(p, 'data');
    assert.throws(() => execPlugin(p, 'ADD', {}), /could not run .*not-executable: .*EACCES/);
  });
});
