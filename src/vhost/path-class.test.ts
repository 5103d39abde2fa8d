// Every path class a virtio-user port can be given, with its answer. Uses real files made in a
// temporary directory; the character-device cases use /dev/null and, where the kernel has it,
// /dev/vhost-net (a stand-in is made with mknod when running as root).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { classifyPath, PathError } from './path-class.ts';

function refused(path: string, message: RegExp, hint: RegExp, server = false): void {
  assert.throws(() => classifyPath(path, server), (e: unknown) => {
    assert.ok(e instanceof PathError);
    assert.match(e.message, message);
    assert.match(e.hint, hint);
    return true;
  });
}

describe('classifyPath', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pier-path-'));
  const sock = join(dir, 'vhost.sock');
  const server = createServer();
  before(async () => new Promise<void>((r) => server.listen(sock, () => r())));
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a unix socket is a vhost-user backend; server=true keeps it', () => {
    assert.deepEqual(classifyPath(sock), { kind: 'vhost-user', path: sock, server: false });
    assert.deepEqual(classifyPath(sock, true), { kind: 'vhost-user', path: sock, server: true });
  });

  test('the vhost-net character device (10:238) is the kernel backend, never a socket', () => {
    let dev = '/dev/vhost-net';
    if (!existsSync(dev)) {
      if (process.getuid?.() !== 0) return assert.fail('needs /dev/vhost-net or root to make a stand-in with mknod');
      dev = join(dir, 'vhost-net');
      execFileSync('mknod', [dev, 'c', '10', '238']);
    }
    assert.deepEqual(classifyPath(dev), { kind: 'vhost-kernel', path: dev });
    refused(dev, /is the vhost-net device; server=true applies to vhost-user sockets only/, /drop server=true/, true);
  });

  test('a missing /dev/vhost-net says the kernel lacks vhost-net and how to fix it', () => {
    if (existsSync('/dev/vhost-net')) return; // covered by the VM run of the doctor test instead
    refused('/dev/vhost-net', /no vhost-net loaded or built in/, /modprobe vhost_net.*or use type=tap/);
  });

  test('a missing socket path is not taken for a socket, unless pier is to listen there', () => {
    const p = join(dir, 'nobody.sock');
    refused(p, /does not exist, so it is neither/, /server=true/);
    assert.deepEqual(classifyPath(p, true), { kind: 'vhost-user', path: p, server: true });
    // Under a file: missing too (the listener then names the file in the way).
    const under = join(dir, 'a.log');
    writeFileSync(under, 'log');
    refused(join(under, 'x.sock'), /does not exist, so it is neither/, /server=true/);
    assert.deepEqual(classifyPath(join(under, 'x.sock'), true), { kind: 'vhost-user', path: join(under, 'x.sock'), server: true });
  });

  test('any other file type is named', () => {
    const file = join(dir, 'file');
    writeFileSync(file, 'x');
    refused(file, /is a regular file, neither the vhost-net device nor a unix socket/, /path=\/dev\/vhost-net/);
    const sub = join(dir, 'sub');
    mkdirSync(sub);
    refused(sub, /is a directory/, /vhost-user socket/);
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    refused(fifo, /is a FIFO/, /vhost-user socket/);
    refused('/dev/null', /is a character device 1:3, not vhost-net \(10:238\)/, /path=\/dev\/vhost-net/);
    const link = join(dir, 'dangling');
    symlinkSync(join(dir, 'nowhere'), link);
    refused(link, /symbolic link to nothing/, /vhost-net/);
    refused('relative/path', /not absolute/, /full path/);
  });
});
