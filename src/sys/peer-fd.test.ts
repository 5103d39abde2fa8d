import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import * as c from './libc.ts';
import { memfd } from './mem.ts';
import { checkPeerEventFd, drainPeer, PeerWriteWatchdog, peerWatchBuffer, signalPeer, W_WAKES } from './peer-fd.ts';

const opened: number[] = [];
after(() => {
  for (const fd of opened) c.close(fd);
});
const keep = (fd: number): number => {
  opened.push(c.check(fd, 'open'));
  return fd;
};

/** An eventfd as a hostile peer leaves it: counter at its maximum, O_NONBLOCK cleared. */
function saturated(blocking: boolean): number {
  const fd = keep(c.eventfd(0, c.EFD_CLOEXEC | c.EFD_NONBLOCK));
  const max = new BigUint64Array([0xfffffffffffffffen]);
  assert.equal(c.writeBuf(fd, max, 8), 8);
  if (blocking) c.check(c.fcntlInt(fd, c.F_SETFL, c.fcntlInt(fd, c.F_GETFL) & ~c.O_NONBLOCK), 'fcntl');
  return fd;
}

test('peer fds: an eventfd is accepted and made non-blocking; anything else is refused with what it is', () => {
  const efd = keep(c.eventfd(0, c.EFD_CLOEXEC)); // blocking, as a careless peer makes it
  assert.equal(c.fcntlInt(efd, c.F_GETFL) & c.O_NONBLOCK, 0);
  assert.equal(checkPeerEventFd(efd, 'call'), undefined);
  assert.notEqual(c.fcntlInt(efd, c.F_GETFL) & c.O_NONBLOCK, 0, 'now non-blocking');
  const pipe = new Int32Array(2);
  c.check(c.pipe2(pipe, c.O_CLOEXEC), 'pipe2');
  opened.push(pipe[0]!, pipe[1]!);
  assert.equal(checkPeerEventFd(pipe[1]!, 'call'), 'call fd is a pipe, not an eventfd');
  const sock = keep(c.socket(c.AF_UNIX, c.SOCK_STREAM | c.SOCK_CLOEXEC, 0));
  assert.equal(checkPeerEventFd(sock, 'kick'), 'kick fd is a socket, not an eventfd');
  const mfd = keep(memfd('not-an-eventfd', 4096));
  assert.equal(checkPeerEventFd(mfd, 'error'), 'error fd is a memfd (/memfd:not-an-eventfd (deleted)), not an eventfd');
  const dev = keep(c.open('/dev/null', c.O_RDWR | c.O_CLOEXEC, 0));
  assert.equal(checkPeerEventFd(dev), 'peer fd is a device (/dev/null), not an eventfd');
  const ep = keep(c.epoll_create1(c.EPOLL_CLOEXEC));
  assert.equal(checkPeerEventFd(ep), 'peer fd is an eventpoll, not an eventfd');
  assert.equal(checkPeerEventFd(12345), 'peer fd 12345 is not an open file descriptor');
  assert.equal(c.fcntlInt(pipe[1]!, c.F_GETFL) & c.O_NONBLOCK, 0, 'a refused fd is left as it was');
});

test('peer fds: signalPeer and drainPeer never throw: 0, -EAGAIN on a full or empty counter, -EBADF', () => {
  const efd = keep(c.eventfd(0, c.EFD_CLOEXEC | c.EFD_NONBLOCK));
  assert.equal(drainPeer(efd), -c.EAGAIN, 'nothing to drain');
  assert.equal(signalPeer(efd), 0);
  assert.equal(signalPeer(efd), 0);
  const v = new BigUint64Array(1);
  assert.equal(c.readBuf(efd, v, 8), 8);
  assert.equal(v[0], 2n);
  assert.equal(signalPeer(efd), 0);
  assert.equal(drainPeer(efd), 0);
  assert.equal(signalPeer(saturated(false)), -c.EAGAIN, 'the peer saturated its counter');
  assert.equal(signalPeer(99999), -c.EBADF);
  assert.equal(drainPeer(99999), -c.EBADF);
});

/** A thread that calls op(fd) once, as the dataplane would; reports what it returned and how long it took. */
async function blockedThread(op: 'signalPeer' | 'drainPeer', fd: number, words: Int32Array): Promise<{ r: number; ms: number }> {
  // Worker threads do not inherit tsx's loader (see src/daemon/worker-boot.mjs): register it first.
  const code = `
    import { register } from ${JSON.stringify(import.meta.resolve('tsx/esm/api'))};
    import { workerData, parentPort } from 'node:worker_threads';
    register();
    const m = await import(workerData.url);
    m.watchPeerWrites(workerData.words);
    parentPort.postMessage('ready');
    const t0 = Date.now();
    const r = m[workerData.op](workerData.fd);
    parentPort.postMessage({ r, ms: Date.now() - t0 });`;
  const w = new Worker(new URL(`data:text/javascript,${encodeURIComponent(code)}`), { workerData: { url: new URL('./peer-fd.ts', import.meta.url).href, op, fd, words } });
  try {
    const [first] = (await Promise.race([once(w, 'message'), once(w, 'error').then(([e]) => Promise.reject(e as Error))])) as [unknown];
    assert.equal(first, 'ready');
    const [res] = (await Promise.race([once(w, 'message'), once(w, 'error').then(([e]) => Promise.reject(e as Error))])) as [{ r: number; ms: number }];
    return res;
  } finally {
    await w.terminate();
  }
}

test('peer fds: the watchdog gets a thread blocked writing a saturated, blocking eventfd out with EINTR', async (t) => {
  const words = peerWatchBuffer();
  const dog = new PeerWriteWatchdog(words);
  dog.start();
  try {
    const { r, ms } = await blockedThread('signalPeer', saturated(true), words);
    assert.equal(r, -c.EINTR);
    assert.ok(ms >= 250 && ms < 1000, `blocked ${ms} ms`);
    t.diagnostic(`write blocked ${ms} ms`);
    assert.ok(Atomics.load(words, W_WAKES) >= 1);
    // A read the peer made block (it cleared O_NONBLOCK and drained the counter first).
    const empty = keep(c.eventfd(0, c.EFD_CLOEXEC));
    const d = await blockedThread('drainPeer', empty, words);
    assert.equal(d.r, -c.EINTR);
    assert.ok(d.ms >= 250 && d.ms < 1000, `blocked ${d.ms} ms`);
    t.diagnostic(`read blocked ${d.ms} ms`);
  } finally {
    dog.stop();
  }
});

test('peer fds: the watchdog leaves short operations alone', () => {
  const words = peerWatchBuffer();
  const dog = new PeerWriteWatchdog(words);
  Atomics.store(words, 1, c.gettid());
  Atomics.store(words, 0, 7); // an operation starts
  assert.equal(dog.check(1000), false);
  assert.equal(dog.check(1200), false, '200 ms: not yet');
  Atomics.store(words, 0, 8); // the next one: the clock starts again
  assert.equal(dog.check(1300), false);
  assert.equal(dog.check(1500), false);
  Atomics.store(words, 0, 0);
  assert.equal(dog.check(2000), false, 'nothing in progress');
  assert.equal(dog.wakes, 0);
});
