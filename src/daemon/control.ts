// The control socket: one JSON request per line in, one JSON reply per line out. This module does
// the framing, the limits and deadlines, the request schema and the reply; what a command does is
// the daemon's business (`run`). A request refused here never reaches `run`, so it changes no
// state, and no client, however it misbehaves, can stall the others or make the daemon hold
// unbounded memory or file descriptors. The limits are in docs/design/architecture.md.
import { chmodSync, readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { z } from 'zod';
import { makeDir } from '../errors.ts';
import { PierError } from './errors.ts';

/** Longest request line, in bytes (without its newline). Bytes past it are never buffered. */
export const MAX_REQUEST_BYTES = 1 << 20;
/**
 * How long a connection may wait on its client: to finish a request once connected or answered,
 * or to read a reply. Holding an incomplete request, sitting idle, or not reading past it closes
 * the connection. The time the daemon spends running a command does not count.
 */
export const DEADLINE_MS = 10_000;
/** At most this many open connections (fewer if the fd limit is low: ports need fds too). */
export const MAX_CONNECTIONS = 4096;
export const MAX_ARGS = 64;
/** Longest argument, in characters: a path= option is at most PATH_MAX (4096) plus its key. */
export const MAX_ARG_CHARS = 8192;
const MAX_CMD_CHARS = 64;
/** A closed connection's client gets this long to read the last reply before the fd goes. */
const CLOSE_GRACE_MS = 1000;

/** Each command and the names of its arguments; a last name ending in `...` repeats. */
export type Commands = Readonly<Record<string, readonly string[]>>;

export interface Request { cmd: string; args: string[] }

export type Reply = { ok: true; result: unknown } | { ok: false; error: ReturnType<PierError['toJSON']> };

/**
 * A command whose answer goes on as a byte stream (`pier capture`): the reply line carries
 * `result`, then the connection leaves the request protocol and its deadlines, and `attach` owns
 * the socket until it closes. Whoever attaches bounds what it queues on the socket.
 */
export class StreamReply {
  constructor(readonly result: unknown, readonly attach: (sock: Socket) => void) {}
}

interface Log {
  debug(o: object, msg: string): void;
  warn(o: object, msg: string): void;
  error(o: object, msg: string): void;
}

export interface ControlOptions {
  path: string;
  mode: number;
  commands: Commands;
  /** Runs one validated request; a PierError is the user's error, anything else is logged. */
  run: (cmd: string, args: string[]) => Promise<unknown>;
  log: Log;
  deadlineMs?: number;
  maxRequestBytes?: number;
  maxConnections?: number;
}

const HINT = 'send one JSON object per line, such as {"cmd": "show", "args": []}';

const requestSchema = z.strictObject({
  cmd: z.string().max(MAX_CMD_CHARS),
  args: z.array(z.string().max(MAX_ARG_CHARS)).max(MAX_ARGS).optional(),
});

/** Parse and check one request line; throws a PierError naming the problem. */
export function parseRequest(line: string, commands: Commands): Request {
  if (line.trim() === '') throw new PierError('EPROTO', 'empty request line', HINT);
  let data: unknown;
  try {
    data = JSON.parse(line);
  } catch (e) {
    throw new PierError('EPROTO', `the request is not valid JSON: ${(e as Error).message}`, HINT);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new PierError('EPROTO', `the request must be a JSON object, got ${kind(data)}`, HINT);
  }
  const r = requestSchema.safeParse(data);
  const issues = r.success ? [] : r.error.issues;
  // The command first: what its arguments are called depends on it.
  const cmdIssue = issues.find((i) => i.path[0] === 'cmd');
  if (cmdIssue) throw new PierError('EINVAL', describeIssue(cmdIssue, data, undefined), HINT);
  const cmd = (data as { cmd: string }).cmd;
  const names = Object.hasOwn(commands, cmd) ? commands[cmd] : undefined;
  if (!names) throw new PierError('EINVAL', `unknown command ${cmd}`, 'see: pier --help');
  if (issues[0]) throw new PierError('EINVAL', describeIssue(issues[0], data, names), 'arguments are strings, as the pier CLI sends them; see: pier --help');
  const args = r.success ? (r.data.args ?? []) : [];
  const repeats = names.at(-1)?.endsWith('...') ?? false;
  if (!repeats && args.length > names.length) {
    throw new PierError('EINVAL', `${cmd} takes at most ${names.length} argument${names.length === 1 ? '' : 's'}${names.length ? ` (${names.join(' ')})` : ''}, got ${args.length}`, 'see: pier --help');
  }
  return { cmd, args };
}

function describeIssue(issue: z.core.$ZodIssue, data: unknown, names: readonly string[] | undefined): string {
  const field = fieldName(issue.path, names);
  switch (issue.code) {
    case 'invalid_type':
      return `${field} must be ${article(issue.expected)}, got ${kind(valueAt(data, issue.path))}`;
    case 'too_big': {
      const v = valueAt(data, issue.path);
      return Array.isArray(v)
        ? `${field} has ${v.length} elements; at most ${String(issue.maximum)}`
        : `${field} is ${String(v).length} characters; at most ${String(issue.maximum)}`;
    }
    case 'unrecognized_keys':
      return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${clip(k)}'`).join(', ')} in the request: a request has cmd and args only`;
    default:
      return `${field}: ${issue.message}`;
  }
}

/** `args[0] (BRIDGE)`: the index the client sent, and what that argument is. */
function fieldName(path: PropertyKey[], names: readonly string[] | undefined): string {
  const [top, i] = path;
  if (typeof i !== 'number') return String(top ?? 'the request');
  const last = names?.at(-1);
  const name = names?.[i] ?? (last?.endsWith('...') ? last : undefined);
  return `${String(top)}[${i}]${name ? ` (${name.replace(/\.\.\.$/, '')})` : ''}`;
}

function valueAt(data: unknown, path: PropertyKey[]): unknown {
  let v = data;
  for (const k of path) v = (v as Record<PropertyKey, unknown> | undefined)?.[k];
  return v;
}

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v === undefined) return 'nothing';
  return article(typeof v);
}

function article(t: string): string {
  return /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`;
}

function clip(s: string, n = 64): string {
  return s.length > n ? `${s.slice(0, n)}...` : s;
}

/** The soft RLIMIT_NOFILE, from /proc (no FFI here); undefined if it cannot be read. */
export function fdLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export class ControlServer {
  private readonly conns = new Set<Connection>();
  readonly deadlineMs: number;
  readonly maxRequestBytes: number;
  readonly maxConnections: number;

  private constructor(private readonly server: Server, readonly opts: ControlOptions) {
    this.deadlineMs = opts.deadlineMs ?? DEADLINE_MS;
    this.maxRequestBytes = opts.maxRequestBytes ?? MAX_REQUEST_BYTES;
    // Half the fds at most: the rest are for ports, the pool, the dataplane and Node itself.
    const fds = fdLimit();
    this.maxConnections = opts.maxConnections ?? Math.min(MAX_CONNECTIONS, fds ? Math.floor(fds / 2) : MAX_CONNECTIONS);
    server.on('connection', (sock) => this.accept(sock));
  }

  /** Listen on opts.path with opts.mode; the socket is never open to others, even briefly. */
  static async listen(opts: ControlOptions): Promise<ControlServer> {
    makeDir(dirname(opts.path), 0o755, `control socket ${opts.path}`, 'choose another --socket');
    // Half-open: a client may send its request and shut down its side (`nc -N`), then read.
    const server = createServer({ allowHalfOpen: true });
    const control = new ControlServer(server, opts);
    const old = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        // A deep backlog: a script may start many CLI commands at once.
        server.listen({ path: opts.path, backlog: 1024 }, () => resolve());
      });
    } finally {
      process.umask(old);
    }
    chmodSync(opts.path, opts.mode);
    return control;
  }

  get connections(): number {
    return this.conns.size;
  }

  /** Stop listening and close every connection (an idle client must not hold up a stop). */
  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    for (const c of this.conns) c.destroy();
    await closed;
  }

  private accept(sock: Socket): void {
    const c = new Connection(sock, this);
    this.conns.add(c);
    sock.once('close', () => this.conns.delete(c));
    if (this.conns.size > this.maxConnections) {
      this.opts.log.warn({ open: this.conns.size - 1 }, 'control connection refused: too many open');
      c.closeWith(new PierError('EBUSY', `too many control connections (${this.maxConnections} open): this one is closed`,
        `clients must close their connections; an idle one is closed after ${this.deadlineMs / 1000} s`));
      return;
    }
    c.start();
  }

  /** One request line to one reply; never throws. */
  async answer(line: string): Promise<Reply> {
    try {
      const req = parseRequest(line, this.opts.commands);
      return { ok: true, result: await this.opts.run(req.cmd, req.args) };
    } catch (e) {
      if (e instanceof PierError) return { ok: false, error: e.toJSON() };
      this.opts.log.error({ err: e }, 'request failed');
      return { ok: false, error: new PierError('EINTERNAL', (e as Error).message, 'this is a bug in pier: look at the daemon\'s log').toJSON() };
    }
  }
}

/**
 * One client. Requests on a connection run one at a time: while one runs, or its reply waits to
 * be read, the socket is paused, so a client that sends without reading fills its own socket
 * buffer rather than the daemon's memory.
 */
class Connection {
  /** Received bytes not yet looked at (at most what arrived before the socket was paused). */
  private readonly unscanned: Buffer[] = [];
  /** The incomplete request line so far: no newline in these. */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private busy = false;
  private closed = false;
  /** The client has shut down its side: answer what it sent, then end ours. */
  private ended = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly sock: Socket, private readonly server: ControlServer) {
    sock.on('error', () => undefined); // a client that goes away mid-reply is its own problem
    sock.once('close', () => {
      this.closed = true;
      this.disarm();
    });
  }

  start(): void {
    this.sock.on('data', (chunk: Buffer) => {
      if (this.closed) return;
      this.unscanned.push(chunk);
      this.pump();
    });
    this.sock.once('end', () => {
      this.ended = true;
      this.pump();
    });
    this.arm();
  }

  destroy(): void {
    this.closed = true;
    this.disarm();
    this.sock.destroy();
  }

  /** Send a last error reply and close; the client gets a moment to read it. */
  closeWith(e: PierError): void {
    if (this.closed) return;
    this.closed = true;
    this.disarm();
    this.sock.pause(); // stop taking what a flooding client still sends
    const grace = setTimeout(() => this.sock.destroy(), CLOSE_GRACE_MS);
    grace.unref();
    this.sock.once('close', () => clearTimeout(grace));
    this.sock.end(JSON.stringify({ ok: false, error: e.toJSON() }) + '\n', () => this.sock.destroy());
  }

  /** Take complete lines, one at a time, while no request is running. */
  private pump(): void {
    while (!this.busy && !this.closed) {
      const chunk = this.unscanned.shift();
      if (!chunk && this.ended) {
        // A last request without its newline is still a request.
        if (this.partialBytes) return this.take();
        this.closed = true;
        this.disarm();
        this.sock.end();
        return;
      }
      if (!chunk) {
        this.sock.resume();
        this.arm();
        return;
      }
      const nl = chunk.indexOf(0x0a);
      if (!this.hold(nl < 0 ? chunk : chunk.subarray(0, nl))) return;
      if (nl < 0) continue;
      if (nl + 1 < chunk.length) this.unscanned.unshift(chunk.subarray(nl + 1));
      this.take();
    }
  }

  /** Run the request line held in `partial`. */
  private take(): void {
    const line = Buffer.concat(this.partial, this.partialBytes).toString('utf8');
    this.partial = [];
    this.partialBytes = 0;
    this.busy = true;
    this.sock.pause();
    this.disarm(); // the daemon's own time does not count against the client
    void this.respond(line);
  }

  /** Add bytes to the incomplete line, or refuse the request if that makes it too long. */
  private hold(bytes: Buffer): boolean {
    const max = this.server.maxRequestBytes;
    if (this.partialBytes + bytes.length > max) {
      this.partial = [];
      this.closeWith(new PierError('EMSGSIZE', `request over ${max} bytes (the limit of one request line): the connection is closed`,
        'a request is one line of JSON, ending in a newline; no pier command needs more than a few KiB'));
      return false;
    }
    if (bytes.length) {
      this.partial.push(bytes);
      this.partialBytes += bytes.length;
    }
    return true;
  }

  private async respond(line: string): Promise<void> {
    const reply = await this.server.answer(line);
    if (reply.ok && reply.result instanceof StreamReply) return this.handOver(reply.result);
    if (this.closed) return;
    let text: string;
    try {
      text = JSON.stringify(reply) + '\n';
    } catch (e) {
      text = JSON.stringify({ ok: false, error: new PierError('EINTERNAL', `the reply could not be encoded: ${(e as Error).message}`, 'this is a bug in pier').toJSON() }) + '\n';
    }
    if (!this.sock.write(text)) {
      // The client is not reading (fast enough): wait, within the deadline, before taking more.
      this.arm();
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.sock.off('drain', done);
          this.sock.off('close', done);
          resolve();
        };
        this.sock.on('drain', done);
        this.sock.on('close', done);
      });
      this.disarm();
    }
    this.busy = false;
    this.pump();
  }

  /** Answer with the stream's reply line and give the socket to it; this connection is done. */
  private handOver(stream: StreamReply): void {
    if (this.closed) {
      stream.attach(this.sock); // it finds the socket closed and ends at once
      return;
    }
    this.closed = true;
    this.disarm();
    this.unscanned.length = 0;
    this.sock.write(JSON.stringify({ ok: true, result: stream.result }) + '\n');
    stream.attach(this.sock);
  }

  /** Start the client's clock, unless it is already running. */
  private arm(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => this.expire(), this.server.deadlineMs);
  }

  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private expire(): void {
    this.timer = undefined;
    if (this.busy) return this.destroy(); // a reply it does not read: writing more is no use
    const s = this.server.deadlineMs / 1000;
    this.server.opts.log.debug({ pending: this.partialBytes }, 'control connection timed out');
    this.closeWith(new PierError('ETIMEDOUT', this.partialBytes
      ? `the request was not finished within ${s} s: the connection is closed`
      : `no request within ${s} s: the idle connection is closed`,
    `send each request whole, ending in a newline, within ${s} s; connect again for the next one`));
  }
}
