// One vhost-user connection, either side: non-blocking reads that put messages together from
// whatever the socket gives (a header in two pieces, fds ahead of their bytes), a deadline on a
// message that has started and not finished, sends that never wait, and a typed reason for every
// end. What a message means is the owner's business (the device port, the driver backend, the
// test frontend); what counts as a well-framed one is decided here and in codec.ts.
import { FdReceiver, libc, sendWithFds, unixAccept, unixConnect } from '../sys/index.ts';
import { HDR_SIZE, headerProblem, MAX_MSG_FDS, MAX_PAYLOAD, message, readHeader } from './codec.ts';
import * as P from './protocol.ts';

/** Why a connection ended. Policy (reconnect soon or late, count as a protocol error) follows the kind, never the text. */
export type DisconnectKind =
  /** The peer closed or reset the connection. */
  | 'peer-closed'
  /** The peer broke the protocol: framing, a value that cannot be answered, a broken ring. */
  | 'protocol'
  /** A message that started and did not finish, a reply that never came, an idle newcomer. */
  | 'timeout'
  /** A limit: too many fds, a socket the peer does not read, too many connections. */
  | 'resource'
  /** The peer cannot give what the port is configured for (a feature, a queue count). */
  | 'refused'
  /** A newer frontend took the port over. */
  | 'superseded'
  /** The peer's shared memory failed under pier (a file that shrank). */
  | 'memory'
  /** pier ended it (the port is deleted or reset). */
  | 'local';

export class Disconnect {
  constructor(readonly kind: DisconnectKind, readonly detail: string) {}
  toString(): string {
    return `${this.kind}: ${this.detail}`;
  }
}

/** A message that has started must be complete within this long (a stalled peer loses its connection). */
export const MESSAGE_DEADLINE_MS = 2000;
/** Messages handled per read() call; the rest wait for the next turn (epoll is level-triggered). */
const MESSAGES_PER_READ = 64;

export interface Message {
  req: number;
  flags: number;
  /** The payload, a view of the connection's buffer: valid until the next read(). */
  payload: DataView;
  /** fds that came with the message; the handler owns them (keeps or closes every one). */
  fds: number[];
}

export class VhostConnection {
  fd: number;
  readonly openedAt: number;
  /** When the last whole message arrived (openedAt before the first). */
  lastMessageAt: number;
  messages = 0;
  private readonly buf = new Uint8Array(HDR_SIZE + MAX_PAYLOAD);
  private readonly dv = new DataView(this.buf.buffer);
  private have = 0;
  /** When the first byte of the message in progress arrived; 0 between messages. */
  private startedAt = 0;
  private readonly fds: number[] = [];
  private readonly rx = new FdReceiver();

  constructor(fd: number, now = Date.now()) {
    this.fd = fd;
    this.openedAt = now;
    this.lastMessageAt = now;
  }

  get open(): boolean {
    return this.fd >= 0;
  }

  /**
   * Read what the socket holds and hand each complete message to `onMessage`, which may close
   * the connection. Returns why the connection must end (the caller closes it), or null.
   */
  read(onMessage: (m: Message) => void, now = Date.now()): Disconnect | null {
    for (let handled = 0; handled < MESSAGES_PER_READ && this.fd >= 0;) {
      const want = this.have < HDR_SIZE ? HDR_SIZE : HDR_SIZE + this.dv.getUint32(8, true);
      let n: number;
      try {
        n = this.rx.recv(this.fd, this.buf, this.have, want - this.have);
      } catch (e) {
        const code = (e as libc.SysError).code;
        return new Disconnect(code === 'ECONNRESET' ? 'peer-closed' : 'protocol', (e as Error).message);
      }
      for (const fd of this.rx.fds) this.fds.push(fd);
      if (this.rx.truncated || this.fds.length > MAX_MSG_FDS) {
        return new Disconnect('resource', `more file descriptors than one message may carry (at most ${MAX_MSG_FDS})`);
      }
      if (n < 0) return null; // EAGAIN: the rest comes later
      if (n === 0) return new Disconnect('peer-closed', this.have > 0 ? 'the peer closed the connection in the middle of a message' : 'the peer closed the connection');
      if (this.have === 0) this.startedAt = now;
      this.have += n;
      if (this.have < HDR_SIZE) continue;
      const h = readHeader(this.dv);
      if (this.have === HDR_SIZE) {
        const problem = headerProblem(h);
        if (problem !== null) return new Disconnect('protocol', problem);
      }
      if (this.have < HDR_SIZE + h.size) continue;
      this.have = 0;
      this.startedAt = 0;
      this.lastMessageAt = now;
      this.messages++;
      handled++;
      onMessage({ req: h.req, flags: h.flags, payload: new DataView(this.buf.buffer, HDR_SIZE, h.size), fds: this.fds.splice(0) });
    }
    return null;
  }

  /** Send one message without waiting. A peer that does not read (a full socket) gets a Disconnect, not a stall. */
  send(req: number, payload?: Uint8Array, fds: readonly number[] = [], flags = P.VHOST_USER_VERSION): Disconnect | null {
    if (this.fd < 0) return new Disconnect('local', 'the connection is closed');
    const m = message(req, payload, flags);
    let n: number;
    try {
      n = sendWithFds(this.fd, m, m.length, fds);
    } catch (e) {
      const code = (e as libc.SysError).code;
      return new Disconnect(code === 'EPIPE' || code === 'ECONNRESET' ? 'peer-closed' : 'protocol', (e as Error).message);
    }
    if (n !== m.length) return new Disconnect('resource', 'the peer does not read its socket (send buffer full)');
    return null;
  }

  /** When the message in progress times out (0: none in progress). */
  deadline(): number {
    return this.startedAt === 0 ? 0 : this.startedAt + MESSAGE_DEADLINE_MS;
  }

  /** A Disconnect when a started message has been waiting for its end too long. */
  expired(now = Date.now()): Disconnect | null {
    const d = this.deadline();
    if (d === 0 || now < d) return null;
    return new Disconnect('timeout', `a message stalled: ${this.have} bytes of it arrived, nothing more for ${MESSAGE_DEADLINE_MS} ms`);
  }

  /** Close the socket and any fds of an unfinished message. Safe to call twice. */
  close(): void {
    for (const fd of this.fds.splice(0)) libc.close(fd);
    if (this.fd >= 0) libc.close(this.fd);
    this.fd = -1;
    this.have = 0;
    this.startedAt = 0;
  }
}

// ---- reaching the peer ----

export const RECONNECT_MIN_MS = 100;
export const RECONNECT_MAX_MS = 5000;

/**
 * The client side's way to the peer: connect now, or say when to try again (100 ms doubling to
 * 5 s while it fails; a peer that refused what pier needs is asked again at the slowest pace).
 */
export class Dialer {
  private delay = RECONNECT_MIN_MS;
  /** When to try next (0: now). */
  retryAt = 0;
  lastError = '';

  constructor(readonly path: string) {}

  /** A connected socket, or -1 (retryAt says when to try again). */
  dial(now = Date.now()): number {
    try {
      const fd = unixConnect(this.path);
      this.delay = RECONNECT_MIN_MS;
      this.retryAt = 0;
      return fd;
    } catch (e) {
      this.lastError = (e as Error).message;
      this.retryAt = now + this.delay;
      this.delay = Math.min(RECONNECT_MAX_MS, this.delay * 2);
      return -1;
    }
  }

  /** The connection ended: try again soon, or (the peer refused what pier needs) late. */
  after(d: Disconnect, now = Date.now()): void {
    this.retryAt = now + (d.kind === 'refused' ? RECONNECT_MAX_MS : RECONNECT_MIN_MS);
  }
}

/** Accept what is pending on a listening socket, at most `max`. Errors (EMFILE...) end the batch. */
export function acceptPending(listenFd: number, max: number): { fds: number[]; error: string } {
  const fds: number[] = [];
  let error = '';
  while (fds.length < max) {
    let fd: number;
    try {
      fd = unixAccept(listenFd);
    } catch (e) {
      error = (e as Error).message;
      break;
    }
    if (fd < 0) break;
    fds.push(fd);
  }
  return { fds, error };
}
