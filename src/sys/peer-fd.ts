// A peer's eventfds (vhost-user kick, call and error fds; a virtio-user backend's view of pier's
// own): checked to be eventfds, made non-blocking, and written or drained by the dataplane
// without ever blocking it for long.
//
// The file description behind such an fd is shared with the peer, which can clear O_NONBLOCK on
// it after pier set it, and saturate the counter (write 0xfffffffffffffffe) so pier's next
// write() blocks until somebody reads; or drain it so pier's read() blocks. Neither
// pwritev2(RWF_NOWAIT) (EOPNOTSUPP on eventfds) nor reopening /proc/self/fd/N (ENXIO for an
// anonymous inode) gives pier a description of its own. So the dataplane marks each peer write or
// read "in progress" in a shared word (two Atomics stores, nothing else on the hot path), and the
// main thread's watchdog, seeing the same operation in progress for more than 250 ms, sends the
// dataplane thread the wake-up signal (signals.ts: a handler that only returns, no SA_RESTART),
// so the blocked call fails with EINTR and the port counts it instead of the daemon freezing.
import * as c from './libc.ts';
import { installWakeSignal, wakeThread } from './signals.ts';

/** The shared words: [W_SEQ] the peer operation in progress (0: none), [W_TID] the dataplane thread, [W_WAKES] signals sent. */
export const W_SEQ = 0;
export const W_TID = 1;
export const W_WAKES = 2;
export const WATCH_WORDS = 4;

export function peerWatchBuffer(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(WATCH_WORDS * 4));
}

// The 8-byte buffers, passed as typed arrays (koffi hands the call a pointer to their memory).
// Not as addresses taken once: nothing else would hold the arrays, so they were collected and
// the write sent whatever the freed memory held (seen: a notification of 0, lost) and the read
// wrote into freed memory (glibc: munmap_chunk(): invalid pointer).
const one = new BigUint64Array(1);
one[0] = 1n;
const cell = new BigUint64Array(1);
let watch: Int32Array = new Int32Array(WATCH_WORDS); // private until the dataplane shares one
let seq = 0;

/**
 * Called by the thread that writes peers' fds (the dataplane): the watchdog watches `words`
 * and signals this thread. Installs the wake-up signal's handler.
 */
export function watchPeerWrites(words: Int32Array): void {
  installWakeSignal();
  watch = words;
  Atomics.store(words, W_TID, c.gettid());
}

/**
 * Notify a peer: write the 8-byte value 1 to its eventfd. 0 on success, else -errno: -EAGAIN
 * (the counter is full), -EINTR (blocked and interrupted by the watchdog: the peer cleared
 * O_NONBLOCK), -EBADF, ... No allocation, no exception.
 */
export function signalPeer(fd: number): number {
  seq = (seq + 1) & 0x7fffffff || 1;
  Atomics.store(watch, W_SEQ, seq);
  const r = c.writeBuf(fd, one, 8);
  Atomics.store(watch, W_SEQ, 0);
  return r === 8 ? 0 : -c.errno();
}

/**
 * Drain a peer's eventfd (a kick): read its counter. 0 when there was something, -EAGAIN when it
 * was empty, -EINTR when the read blocked (the peer cleared O_NONBLOCK and drained it first) and
 * the watchdog interrupted it, other -errno. No allocation, no exception.
 */
export function drainPeer(fd: number): number {
  seq = (seq + 1) & 0x7fffffff || 1;
  Atomics.store(watch, W_SEQ, seq);
  const r = c.readBuf(fd, cell, 8);
  Atomics.store(watch, W_SEQ, 0);
  return r === 8 ? 0 : -c.errno();
}

/**
 * undefined when `fd` is an eventfd (it is then made non-blocking); otherwise why it is refused,
 * e.g. "call fd is a pipe, not an eventfd". `role` names the fd in the message.
 */
export function checkPeerEventFd(fd: number, role = 'peer'): string | undefined {
  const target = c.fdTarget(fd);
  if (target === null) return `${role} fd ${fd} is not an open file descriptor`;
  if (target !== 'anon_inode:[eventfd]') return `${role} fd is ${describeFd(fd, target)}, not an eventfd`;
  const fl = c.fcntlInt(fd, c.F_GETFL);
  if (fl < 0) return `${role} fd: F_GETFL failed: ${new c.SysError('fcntl', c.errno()).code}`;
  if ((fl & c.O_NONBLOCK) === 0 && c.fcntlInt(fd, c.F_SETFL, fl | c.O_NONBLOCK) < 0) {
    return `${role} fd: cannot make it non-blocking: ${new c.SysError('fcntl', c.errno()).code}`;
  }
  return undefined;
}

function describeFd(fd: number, target: string): string {
  const anon = /^anon_inode:\[?([a-z_-]+)\]?$/.exec(target);
  if (anon) return `${/^[aeiou]/.test(anon[1]!) ? 'an' : 'a'} ${anon[1]}`;
  if (target.startsWith('pipe:')) return 'a pipe';
  if (target.startsWith('socket:')) return 'a socket';
  if (target.startsWith('/memfd:')) return `a memfd (${target})`;
  const st = c.fstat(fd);
  const kind = st === null ? 0 : st.mode & c.S_IFMT;
  if (kind === 0o010000) return `a pipe (the FIFO ${target})`;
  if (kind === 0o020000 || kind === 0o060000) return `a device (${target})`;
  if (kind === 0o040000) return `a directory (${target})`;
  return `a file (${target})`;
}

/**
 * The main thread's side: every `intervalMs` it looks at the dataplane's shared word; a peer
 * operation in progress for more than `stallMs` gets the dataplane thread the wake-up signal
 * (again on every later look while it stays stuck). `wakes` counts the signals sent.
 */
export class PeerWriteWatchdog {
  private timer: NodeJS.Timeout | undefined;
  private last = 0;
  private since = 0;

  constructor(readonly words: Int32Array, readonly stallMs = 250, readonly intervalMs = 100) {}

  get wakes(): number {
    return Atomics.load(this.words, W_WAKES);
  }

  start(): void {
    if (this.timer) return;
    installWakeSignal(); // process-wide; the dataplane thread installs it too
    this.timer = setInterval(() => this.check(Date.now()), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look (public for tests). Returns true when it sent the signal. */
  check(now: number): boolean {
    const s = Atomics.load(this.words, W_SEQ);
    if (s === 0 || s !== this.last) {
      this.last = s;
      this.since = now;
      return false;
    }
    const tid = Atomics.load(this.words, W_TID);
    if (now - this.since < this.stallMs || tid <= 0) return false;
    if (wakeThread(tid) !== 0) return false;
    Atomics.add(this.words, W_WAKES, 1);
    return true;
  }
}
