import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { closeListener, listenVhostUser } from './control.ts';

describe('a listening socket under directories pier made', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pier-listen-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('closing removes the directories made for it, innermost first, and nothing that was there', () => {
    const path = join(dir, 'run/vms/vm0.sock');
    const fd = listenVhostUser(path);
    assert.ok(existsSync(path));
    closeListener(fd, path);
    assert.ok(!existsSync(join(dir, 'run')), 'the made directories stayed');
    assert.ok(existsSync(dir), 'the directory that was there went');
  });

  test('a made directory stays while it holds another socket or a file, and goes with the last', () => {
    const a = join(dir, 'shared/a.sock');
    const b = join(dir, 'shared/b.sock');
    const fa = listenVhostUser(a);
    const fb = listenVhostUser(b);
    closeListener(fa, a);
    assert.ok(existsSync(b), 'the other socket went');
    closeListener(fb, b);
    assert.ok(!existsSync(join(dir, 'shared')));
    // A user's file next to the socket keeps the directory.
    const c = join(dir, 'kept/c.sock');
    const fc = listenVhostUser(c);
    writeFileSync(join(dir, 'kept/notes'), 'mine');
    closeListener(fc, c);
    assert.ok(existsSync(join(dir, 'kept/notes')));
  });

  test('a directory that existed before stays when empty', () => {
    mkdirSync(join(dir, 'mine'));
    const p = join(dir, 'mine/d.sock');
    closeListener(listenVhostUser(p), p);
    assert.ok(existsSync(join(dir, 'mine')));
  });
});
