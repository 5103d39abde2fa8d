// epoll and eventfd. Events land in one preallocated buffer; the caller reads them with
// `token(i)` / `events(i)` without allocating.
import * as c from './libc.ts';

export class Epoll {
  readonly fd: number;
  private readonly buf: Uint8Array;
  private readonly dv: DataView;
  private readonly addr: number;
  private readonly ctlBuf = new Uint8Array(c.SIZEOF_EPOLL_EVENT);
  private readonly ctlView = new DataView(this.ctlBuf.buffer);

  constructor(readonly maxEvents = 64) {
    this.fd = c.check(c.epoll_create1(c.EPOLL_CLOEXEC), 'epoll_create1');
    this.buf = new Uint8Array(maxEvents * c.SIZEOF_EPOLL_EVENT);
    this.dv = new DataView(this.buf.buffer);
    this.addr = c.addressOf(this.buf);
  }

  add(fd: number, events: number, token: number): void {
    this.ctl(c.EPOLL_CTL_ADD, fd, events, token);
  }

  modify(fd: number, events: number, token: number): void {
    this.ctl(c.EPOLL_CTL_MOD, fd, events, token);
  }

  remove(fd: number): void {
    c.epoll_ctl(this.fd, c.EPOLL_CTL_DEL, fd, this.ctlBuf);
  }

  private ctl(op: number, fd: number, events: number, token: number): void {
    this.ctlView.setUint32(0, events >>> 0, true);
    this.ctlView.setUint32(4, token >>> 0, true);
    this.ctlView.setUint32(8, 0, true);
    c.check(c.epoll_ctl(this.fd, op, fd, this.ctlBuf), 'epoll_ctl', `fd ${fd}`);
  }

  /**
   * Blocks up to `timeoutMs` (-1 = forever). Returns the number of ready events, 0 on EINTR
   * (the peer-write watchdog's wake-up signal, or any other: the caller's loop just goes round).
   */
  wait(timeoutMs: number): number {
    const n = c.epoll_wait(this.fd, this.addr, this.maxEvents, timeoutMs);
    if (n < 0) {
      if (c.errno() === c.EINTR) return 0;
      throw new c.SysError('epoll_wait', c.errno());
    }
    return n;
  }

  events(i: number): number {
    return this.dv.getUint32(i * c.SIZEOF_EPOLL_EVENT, true);
  }

  token(i: number): number {
    return this.dv.getUint32(i * c.SIZEOF_EPOLL_EVENT + 4, true);
  }

  close(): void {
    c.close(this.fd);
  }
}

/**
 * An eventfd of pier's own: a doorbell between threads. (A peer's eventfd, or one of pier's that
 * a peer also holds, goes through peer-fd.ts: the peer can clear O_NONBLOCK on it.) Calls that a
 * signal interrupts (EINTR: the watchdog's wake-up) are retried.
 */
export class EventFd {
  readonly fd: number;
  private readonly cell = new BigUint64Array(new ArrayBuffer(8));
  constructor(fd?: number) {
    this.fd = fd ?? c.check(c.eventfd(0, c.EFD_NONBLOCK | c.EFD_CLOEXEC), 'eventfd');
  }
  signal(): void {
    this.cell[0] = 1n;
    while (c.writeBuf(this.fd, this.cell, 8) < 0 && c.errno() === c.EINTR);
  }
  /** Drain the counter; returns true when it had been signalled. */
  drain(): boolean {
    for (;;) {
      if (c.readBuf(this.fd, this.cell, 8) === 8) return true;
      if (c.errno() !== c.EINTR) return false;
    }
  }
  close(): void {
    c.close(this.fd);
  }
}
