// One request to the pier daemon over its control socket: one line out, one line back
// (the protocol of src/cli/client.ts). Not that client: its errors fold "nothing listens" and
// "the daemon refused" into the same PierError codes, and pier-cni must tell them apart (code 11
// and a tombstone on DEL for the first, code 100 for the second).
import { createConnection } from 'node:net';
import { CniError, CODE } from './errors.cts';

/** Nothing answered: no socket, nobody listening, or the daemon went away mid-request. */
export class DaemonUnreachable extends Error {
  constructor(readonly socket: string, why: string,
    /** Nothing listens (no socket, ECONNREFUSED): the daemon is not running, so it did nothing. */
    readonly notRunning = false) {
    super(`the pier daemon at ${socket} is not reachable (${why})`);
  }
}

/**
 * How long a request may wait for its answer. The daemon runs requests one at a time and a
 * container's ADD takes milliseconds, so this bounds only a daemon that is stuck: a runtime then
 * gets code 11 instead of a plugin that never returns. PIER_CNI_TIMEOUT_MS overrides it.
 */
const TIMEOUT_MS = Number(process.env.PIER_CNI_TIMEOUT_MS) > 0 ? Number(process.env.PIER_CNI_TIMEOUT_MS) : 30_000;

/** The daemon answered no: pier's error code, message and hint. */
export class DaemonRefused extends Error {
  constructor(readonly pierCode: string, message: string, readonly hint: string | undefined) {
    super(message);
  }
}

type Reply = { ok: true; result: unknown } | { ok: false; error: { code: string; message: string; hint?: string } };

export function request(socket: string, cmd: string, arg?: unknown): Promise<unknown> {
  const line = JSON.stringify({ cmd, args: arg === undefined ? [] : [JSON.stringify(arg)] }) + '\n';
  return new Promise((resolve, reject) => {
    const s = createConnection(socket);
    let buf = '';
    let done = false;
    const finish = (f: () => void): void => {
      if (done) return;
      done = true;
      s.destroy();
      f();
    };
    s.setEncoding('utf8');
    s.setTimeout(TIMEOUT_MS, () => finish(() => reject(new DaemonUnreachable(socket, `no answer in ${TIMEOUT_MS / 1000} s`))));
    s.once('connect', () => s.write(line));
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      finish(() => {
        let r: Reply;
        try {
          r = JSON.parse(buf.slice(0, nl)) as Reply;
        } catch {
          reject(new DaemonRefused('EPROTO', `the pier daemon at ${socket} answered something that is not JSON`, 'is this socket a pier daemon\'s? See its log'));
          return;
        }
        if (r === null || typeof r !== 'object') reject(new DaemonRefused('EPROTO', `the pier daemon at ${socket} answered something that is not a reply`, 'is this socket a pier daemon\'s? See its log'));
        else if (r.ok) resolve(r.result);
        else reject(new DaemonRefused(r.error.code, r.error.message, r.error.hint));
      });
    });
    s.once('error', (e: NodeJS.ErrnoException) => finish(() => {
      if (e.code === 'EACCES' || e.code === 'EPERM') reject(new DaemonRefused('EPERM', `permission denied on ${socket}`, 'pier-cni runs as root, as runtimes run CNI plugins'));
      else reject(new DaemonUnreachable(socket, e.code ?? e.message, e.code === 'ENOENT' || e.code === 'ECONNREFUSED'));
    }));
    s.once('close', () => finish(() => reject(new DaemonUnreachable(socket, 'it closed the connection without answering'))));
  });
}

/** A failed request as the CNI error the runtime gets: 11 to try again, 100 with pier's code and hint. */
export function daemonError(e: unknown): Error {
  if (e instanceof DaemonUnreachable) {
    return new CniError(CODE.tryAgain, e.message,
      `try again later: the daemon may be starting. If it is not running, start it (pier daemon, or the pier DaemonSet); the config's "socket" names where pier-cni looks (${e.socket})`);
  }
  if (e instanceof DaemonRefused) return new CniError(CODE.daemonRefused, `the pier daemon refused: ${e.message}`, `${e.pierCode}${e.hint ? `: ${e.hint}` : ''}`);
  return e instanceof Error ? e : new Error(String(e));
}
