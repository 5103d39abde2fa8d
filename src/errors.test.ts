import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { makeDir, PierError } from './errors.ts';

describe('makeDir', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pier-mkdir-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('makes the directories, and names the file in the way with the fix', () => {
    assert.deepEqual(makeDir(join(dir, 'a/b'), 0o755, 'socket x', 'choose another path='), [join(dir, 'a'), join(dir, 'a/b')]);
    assert.ok(statSync(join(dir, 'a/b')).isDirectory());
    assert.deepEqual(makeDir(join(dir, 'a/b'), 0o755, 'socket x', 'choose another path='), [], 'made nothing the second time');
    writeFileSync(join(dir, 'd1.log'), 'log');
    for (const sub of ['d1.log', 'd1.log/x', 'd1.log/x/y']) {
      assert.throws(() => makeDir(join(dir, sub), 0o755, 'socket s', 'choose another path='), (e: unknown) => {
        assert.ok(e instanceof PierError);
        assert.equal(e.code, 'ENOTDIR');
        assert.equal(e.message, `${join(dir, 'd1.log')} is not a directory, so socket s cannot be made under it`);
        assert.equal(e.hint, `choose another path=, or remove ${join(dir, 'd1.log')}`);
        return true;
      });
    }
  });
});
