import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { skipMissing } from '../../test/helpers.ts';
import * as c from './libc.ts';
import { caughtSignals, faultAddress, faultCount, guardRange, guardStatus, installWakeSignal, sigbusGuard, WAKE_SIGNAL } from './signals.ts';

const here = new URL('./index.ts', import.meta.url).pathname;

/** Run a snippet in a fresh node (with tsx), `sys` bound to src/sys. */
function child(code: string): ReturnType<typeof spawnSync> {
  const src = `import * as sys from ${JSON.stringify(here)};\n${code}`;
  // No core file from the deaths these tests provoke.
  return spawnSync('/bin/sh', ['-c', 'ulimit -c 0; exec "$0" "$@"', process.execPath, '--import', 'tsx', '--input-type=module', '-e', src], { encoding: 'utf8', timeout: 30_000 });
}

test('signals: a plain node does not catch SIGBUS or SIGURG (V8 traps SIGSEGV only), so the guard is not in anyone\'s way', () => {
  const r = spawnSync(process.execPath, ['-e', "process.stdout.write(require('fs').readFileSync('/proc/self/status','utf8'))"], { encoding: 'utf8' });
  const cgt = BigInt(`0x${/^SigCgt:\s*([0-9a-f]+)$/m.exec(r.stdout)![1]}`);
  const caught = (s: number): boolean => ((cgt >> BigInt(s - 1)) & 1n) === 1n;
  assert.ok(caught(11), 'SIGSEGV: V8\'s trap handler');
  assert.ok(!caught(c.SIGBUS), 'SIGBUS');
  assert.ok(!caught(c.SIGURG), 'SIGURG');
});

test('signals: the guard installs once, reads back through glibc with its restorer, and covers registered ranges', () => {
  const g = sigbusGuard();
  assert.equal(sigbusGuard(), g, 'idempotent');
  assert.ok(caughtSignals().has(c.SIGBUS), 'SigCgt now has SIGBUS');
  const act = new Uint8Array(c.SIZEOF_SIGACTION);
  c.check(c.sigaction(c.SIGBUS, null, act), 'sigaction');
  const dv = new DataView(act.buffer);
  assert.equal(Number(dv.getBigUint64(0, true)), g.code);
  const flags = dv.getInt32(c.SIGACTION_FLAGS, true);
  assert.equal(flags & (c.SA_SIGINFO | c.SA_RESTORER | c.SA_NODEFER | c.SA_RESTART), c.SA_SIGINFO | c.SA_RESTORER);
  assert.notEqual(dv.getBigUint64(c.SIGACTION_RESTORER, true), 0n);
  // The code page is executable and not writable.
  const maps = readFileSync('/proc/self/maps', 'utf8');
  const line = maps.split('\n').find((l) => l.startsWith(g.code.toString(16).padStart(8, '0') + '-'));
  assert.match(line ?? '', / r-xp /);
  // A range: a truncated file under it is survived.
  const fd = c.check(c.memfd_create('sig-test', c.MFD_CLOEXEC), 'memfd_create');
  c.check(c.ftruncate(fd, 64 << 10), 'ftruncate');
  const a = Number(c.mmap(0, 64 << 10, c.PROT_READ | c.PROT_WRITE, c.MAP_SHARED, fd, 0));
  assert.ok(guardRange(a, 64 << 10));
  assert.ok(guardStatus().ranges.some((r) => r.start === a && r.end === a + (64 << 10)));
  const u = new Uint8Array(c.view(a, 64 << 10));
  c.check(c.ftruncate(fd, 4096), 'ftruncate');
  const n0 = faultCount();
  u[4096 * 3 + 7] = 1;
  assert.equal(faultCount(), n0 + 1);
  assert.equal(faultAddress(n0), a + 4096 * 3 + 7);
  assert.equal(guardStatus().passedOn, 0);
  c.munmap(a, 64 << 10);
  c.close(fd);
});

test('signals: a SIGBUS outside every registered range still kills the process with SIGBUS', () => {
  const r = child(`
    sys.guardRange(0x10000, 4096); // some range, not the one that faults
    const fd = sys.libc.memfd_create('outside', 0);
    sys.libc.ftruncate(fd, 8192);
    const a = Number(sys.libc.mmap(0, 8192, 3, sys.libc.MAP_SHARED, fd, 0));
    const u = new Uint8Array(sys.libc.view(a, 8192));
    sys.libc.ftruncate(fd, 0);
    process.stdout.write('touching\\n');
    u[5000] = 1;
    process.stdout.write('survived\\n');
  `);
  assert.equal(r.stdout, 'touching\n', String(r.stderr));
  assert.equal(r.signal, 'SIGBUS');
});

test('signals: a SIGBUS sent with kill() (not a fault) still kills, even with the guard installed', () => {
  const r = child(`
    sys.sigbusGuard();
    process.stdout.write('installed\\n');
    process.kill(process.pid, 'SIGBUS');
    setTimeout(() => process.stdout.write('survived\\n'), 2000);
  `);
  assert.equal(r.stdout, 'installed\n', String(r.stderr));
  assert.equal(r.signal, 'SIGBUS');
});

test('signals: the guard survives a shrunk hugetlbfs mapping by zeroing the 2 MiB block', (t) => {
  const knob = '/proc/sys/vm/nr_hugepages';
  let had: string;
  try {
    had = readFileSync(knob, 'utf8').trim();
    if (had === '0') writeFileSync(knob, '2');
  } catch (e) {
    skipMissing(t, `huge pages cannot be reserved (${knob}: ${(e as Error).message}): a kernel with hugetlbfs, and root`);
    return;
  }
  try {
    const MFD_HUGETLB = 4;
    const fd = c.memfd_create('huge-test', c.MFD_CLOEXEC | MFD_HUGETLB);
    if (fd < 0 || c.ftruncate(fd, 4 << 20) < 0) {
      if (fd >= 0) c.close(fd);
      skipMissing(t, `no 2 MiB huge pages available (memfd_create with MFD_HUGETLB, or ftruncate to 4 MiB, failed): echo 2 > ${knob}`);
      return;
    }
    assert.equal(c.fstat(fd)!.blksize, 2 << 20);
    // 2 MiB-aligned, as the arena places it.
    const r = Number(c.mmap(0, 8 << 20, c.PROT_NONE, c.MAP_PRIVATE | c.MAP_ANONYMOUS | c.MAP_NORESERVE, -1, 0));
    const base = Math.ceil(r / (2 << 20)) * (2 << 20);
    if (Number(c.mmap(base, 4 << 20, c.PROT_READ | c.PROT_WRITE, c.MAP_SHARED | c.MAP_FIXED, fd, 0)) !== base) {
      c.munmap(r, 8 << 20);
      c.close(fd);
      skipMissing(t, `two free 2 MiB huge pages could not be mapped: echo 2 > ${knob} with enough free memory`);
      return;
    }
    assert.ok(guardRange(r, 8 << 20));
    const u = new Uint8Array(c.view(base, 4 << 20));
    u[0] = 1;
    u[(3 << 20) + 1] = 2;
    c.check(c.ftruncate(fd, 2 << 20), 'ftruncate');
    const n0 = faultCount();
    assert.equal(u[0], 1, 'the first huge page is still the file');
    assert.equal(u[(3 << 20) + 1], 0, 'the lost one reads as zeros');
    assert.equal(faultCount(), n0 + 1);
    assert.equal(faultAddress(n0), base + (3 << 20) + 1);
    u[(2 << 20) + 9] = 3; // the same 2 MiB block: no new fault
    assert.equal(u[(2 << 20) + 9], 3);
    assert.equal(faultCount(), n0 + 1);
    c.munmap(r, 8 << 20);
    c.close(fd);
  } finally {
    if (had === '0') writeFileSync(knob, '0');
  }
});

test('signals: the wake-up signal interrupts nothing but a blocked syscall (SIGURG, a lone ret, no SA_RESTART)', () => {
  assert.equal(installWakeSignal(), WAKE_SIGNAL);
  assert.equal(installWakeSignal(), WAKE_SIGNAL, 'idempotent');
  assert.ok(caughtSignals().has(c.SIGURG));
  const act = new Uint8Array(c.SIZEOF_SIGACTION);
  c.check(c.sigaction(c.SIGURG, null, act), 'sigaction');
  const flags = new DataView(act.buffer).getInt32(c.SIGACTION_FLAGS, true);
  assert.equal(flags & c.SA_RESTART, 0);
  // Delivered to this thread while it runs JavaScript: nothing happens.
  assert.equal(c.tgkill(c.getpid(), c.gettid(), c.SIGURG), 0);
  assert.equal(1 + 1, 2);
});
