import assert from 'node:assert/strict';
import { unlinkSync } from 'node:fs';
import { after, test } from 'node:test';
import { libc, memfd, PIER_SEALS } from '../sys/index.ts';
import { Arena } from './arena.ts';
import { GuestMemory, type RegionSpec, sealAgainstShrinking } from './guest-memory.ts';

const MiB = 1 << 20;
const O_CREAT = 0o100;
const arena = new Arena();
const opened: number[] = [];
after(() => {
  for (const fd of opened) libc.close(fd);
});

/** A memfd as a peer would make it: sealable or not (DPDK's are not), never sealed yet. */
function peerMemfd(size: number, sealable: boolean): number {
  const fd = libc.check(libc.memfd_create('peer-mem', libc.MFD_CLOEXEC | (sealable ? libc.MFD_ALLOW_SEALING : 0)), 'memfd_create');
  libc.check(libc.ftruncate(fd, size), 'ftruncate');
  opened.push(fd);
  return fd;
}

function tmpfsFile(size: number): number {
  const path = `/dev/shm/pier-guest-memory-test-${process.pid}`;
  const fd = libc.check(libc.open(path, libc.O_RDWR | O_CREAT | libc.O_CLOEXEC, 0o600), 'open', path);
  unlinkSync(path);
  libc.check(libc.ftruncate(fd, size), 'ftruncate');
  opened.push(fd);
  return fd;
}

const region = (fd: number, over: Partial<RegionSpec> = {}): RegionSpec => ({ gpa: 0, size: MiB, uva: 0x7f0000000000, mmapOffset: 0, fd, ...over });

test('guest memory: every malformed table is refused, naming the region and the numbers', () => {
  const a = peerMemfd(4 * MiB, true);
  const b = peerMemfd(4 * MiB, true);
  const cases: Array<[RegionSpec[], RegExp]> = [
    [[], /0 regions \(1\.\.8 allowed\)/],
    [Array.from({ length: 9 }, (_, i) => region(a, { gpa: i * MiB, uva: i * MiB })), /9 regions/],
    [[region(a, { size: 0 })], /region 0: size 0 out of range/],
    [[region(a), region(b, { gpa: 2 * MiB, uva: 2 ** 52, mmapOffset: 100 })], /region 1: mmap_offset 0x64 is not a multiple of the page size/],
    [[region(a, { gpa: 2 ** 53 - 4096, size: 8192 })], /region 0: guest address 0x1ffffffffff000 \+ size 0x2000 overflows 2\^53/],
    [[region(a, { mmapOffset: 2 ** 54 })], /region 0: mmap_offset \d+ is not below 2\^53/],
    [[region(a, { gpa: 0 }), region(b, { gpa: MiB - 4096, uva: 0x7f1000000000 })], /regions 0 and 1 overlap in guest-physical space \(\[0x0, 0x100000\) and \[0xff000, 0x1ff000\)\)/],
    [[region(a, { gpa: 0 }), region(b, { gpa: 2 * MiB, uva: 0x7f0000000000 + MiB / 2 })], /regions 0 and 1 overlap in frontend-virtual space/],
    [[region(a, { mmapOffset: 3 * MiB, size: 2 * MiB })], /region 0: mmap_offset 0x300000 \+ size 0x200000 = 0x500000 is past the end of its file \(0x400000 bytes, \/memfd:peer-mem \(deleted\)\)/],
  ];
  for (const [regions, want] of cases) assert.match(GuestMemory.check(regions) ?? 'accepted', want);
});

test('guest memory: only regular files are mapped: sockets, pipes, devices and eventfds are refused', () => {
  const sock = libc.check(libc.socket(libc.AF_UNIX, libc.SOCK_STREAM | libc.SOCK_CLOEXEC, 0), 'socket');
  const pipe = new Int32Array(2);
  libc.check(libc.pipe2(pipe, libc.O_CLOEXEC), 'pipe2');
  const zero = libc.check(libc.open('/dev/zero', libc.O_RDWR | libc.O_CLOEXEC, 0), 'open');
  const efd = libc.check(libc.eventfd(0, libc.EFD_CLOEXEC), 'eventfd');
  opened.push(sock, pipe[0]!, pipe[1]!, zero, efd);
  assert.match(GuestMemory.check([region(sock)])!, /region 0: fd \d+ is a socket \(socket:\[\d+\]\), not a regular file/);
  assert.match(GuestMemory.check([region(pipe[0]!)])!, /region 0: fd \d+ is a pipe \(pipe:\[\d+\]\), not a regular file/);
  assert.match(GuestMemory.check([region(zero)])!, /region 0: fd \d+ is a character device \(\/dev\/zero\), not a regular file/);
  assert.match(GuestMemory.check([region(efd)])!, /region 0: fd \d+ is .*anon_inode:\[eventfd\].*not a regular file/);
  assert.match(GuestMemory.check([region(999)])!, /region 0: fstat of fd 999 failed: EBADF/);
});

test('guest memory: sealing: a sealable memfd is sealed by pier and can no longer shrink', () => {
  const fd = peerMemfd(2 * MiB, true);
  assert.deepEqual(sealAgainstShrinking(fd), { state: 'sealed by pier' });
  assert.equal(libc.ftruncate(fd, 0), -1, 'the peer cannot shrink it any more');
  assert.equal(libc.errno(), libc.EPERM);
  assert.equal(libc.ftruncate(fd, 4 * MiB), 0, 'growing stays allowed');
  assert.deepEqual(sealAgainstShrinking(fd), { state: 'sealed by pier' }, 'a second look remembers who sealed it');
  const own = memfd('pier-own', MiB);
  opened.push(own);
  assert.equal(libc.fcntlInt(own, libc.F_GET_SEALS), PIER_SEALS);
  assert.deepEqual(sealAgainstShrinking(own), { state: 'sealed' });
});

test('guest memory: sealing: DPDK-style memfds and tmpfs files cannot be sealed, and say why', () => {
  const dpdk = peerMemfd(MiB, false);
  const s = sealAgainstShrinking(dpdk);
  assert.equal(s.state, 'unsealed');
  assert.match(s.detail!, /F_SEAL_SEAL is set/);
  assert.equal(libc.ftruncate(dpdk, 0), 0, 'and it can still shrink');
  const shm = tmpfsFile(MiB);
  const t = sealAgainstShrinking(shm);
  assert.equal(t.state, 'unsealed');
  assert.match(t.detail!, /F_SEAL_SEAL is set|no seals/);
});

test('guest memory: replace maps a checked table, describes each region, and strict mode refuses unsealed memory', () => {
  const sealable = peerMemfd(2 * MiB, true);
  const dpdk = peerMemfd(2 * MiB, false);
  const m = new GuestMemory(arena);
  m.replace([region(sealable, { gpa: 0, uva: 0x7f0000000000 }), region(dpdk, { gpa: 4 * MiB, uva: 0x7f0000400000, mmapOffset: MiB })]);
  const info = m.regions();
  assert.equal(info.length, 2);
  assert.deepEqual({ ...info[0]!, arenaOffset: 0 }, {
    index: 0, gpa: 0, uva: 0x7f0000000000, size: MiB, mmapOffset: 0, arenaOffset: 0, file: '/memfd:peer-mem (deleted)',
    fileSize: 2 * MiB, pageSize: 4096, seal: 'sealed by pier', guarded: true,
  });
  assert.equal(info[1]!.seal, 'unsealed');
  assert.match(info[1]!.sealDetail!, /F_SEAL_SEAL/);
  assert.equal(info[1]!.guarded, true);
  assert.equal(info[1]!.mmapOffset, MiB);
  // containsOffset: inside each region, not past its end, not elsewhere.
  const o1 = m.translate(4 * MiB, 1);
  assert.equal(o1, info[1]!.arenaOffset);
  assert.ok(m.containsOffset(o1) && m.containsOffset(o1 + MiB - 1) && !m.containsOffset(o1 + MiB));
  assert.ok(!m.containsOffset(o1 + MiB - 8, 16), 'a range that runs past the region');
  assert.ok(m.containsOffset(info[0]!.arenaOffset, MiB));
  assert.ok(!m.containsOffset(-1));

  // Strict mode: the unsealable region is refused with the fix; the old table stays.
  const strict = new GuestMemory(arena, { requireSealed: true });
  assert.throws(() => strict.replace([region(dpdk)]), /region 0 \(\/memfd:peer-mem \(deleted\)\) cannot be sealed against shrinking .*strict mode requires sealed memory: .*memory-backend-memfd.*seal=on/);
  assert.equal(strict.n, 0);
  strict.replace([region(sealable)]);
  assert.equal(strict.regions()[0]!.seal, 'sealed by pier');
  strict.unmap();

  // All or nothing: a bad table leaves the previous one in place and mapped.
  const before = arena.placedCount;
  assert.throws(() => m.replace([region(sealable), region(dpdk, { gpa: 8 * MiB, uva: 0x7f0000800000, mmapOffset: 2 * MiB })]), /region 1: .*past the end of its file/);
  assert.equal(m.n, 2);
  assert.equal(m.translate(4 * MiB, 1), o1);
  assert.equal(arena.placedCount, before);
  m.unmap();
  assert.deepEqual(m.regions(), []);
});

test('guest memory: unsealable memory the SIGBUS guard cannot cover is refused', () => {
  const dpdk = peerMemfd(MiB, false);
  assert.match(GuestMemory.check([region(dpdk)], { guarded: false })!, /region 0 .* cannot be sealed .* the SIGBUS guard does not cover it \(the guard is not installed\)/);
  const sealable = peerMemfd(MiB, true);
  assert.equal(GuestMemory.check([region(sealable)], { guarded: false }), undefined, 'sealed memory needs no guard');
});

