// The CLI's side of the control socket: one JSON request, one JSON reply.
import { createConnection } from 'node:net';
import { PierError } from '../daemon/errors.ts';

export async function call(socket: string, cmd: string, args: string[] = []): Promise<unknown> {
  const reply = await new Promise<string>((resolve, reject) => {
    const s = createConnection(socket);
    let buf = '';
    s.setEncoding('utf8');
    s.once('connect', () => s.write(JSON.stringify({ cmd, args }) + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        s.end();
        resolve(buf.slice(0, nl));
      }
    });
    s.once('error', (e: NodeJS.ErrnoException) => reject(connectError(socket, e)));
    s.once('close', () => reject(new PierError('EIO', `the pier daemon at ${socket} closed the connection without answering`, 'look at the daemon\'s log')));
  });
  const r = JSON.parse(reply) as { ok: true; result: unknown } | { ok: false; error: { code: string; message: string; hint?: string } };
  if (!r.ok) throw new PierError(r.error.code, r.error.message, r.error.hint);
  return r.result;
}

export function connectError(socket: string, e: NodeJS.ErrnoException): PierError {
  switch (e.code) {
    case 'ENOENT':
    case 'ECONNREFUSED':
      return new PierError('ENODAEMON', `the pier daemon is not running (nothing listens on ${socket}: ${e.code})`,
        'start it with: pier daemon   (as root; or point the CLI at another daemon with --socket PATH or PIER_SOCKET)');
    case 'EACCES':
    case 'EPERM':
      return new PierError('EPERM', `permission denied on ${socket}: pier's control socket is only for root (mode 0600)`,
        'run the command as root, or start the daemon with --socket-mode to widen it');
    default:
      return new PierError(e.code ?? 'EIO', `cannot reach the pier daemon at ${socket}: ${e.message}`, 'check that the daemon is running');
  }
}
