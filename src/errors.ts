// Errors a user sees: a stable code, what is wrong, and how to fix it. Shared by every layer that
// answers a user (the CLI, the daemon, the ports' control halves).
import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export class PierError extends Error {
  constructor(readonly code: string, message: string, readonly hint?: string) {
    super(message);
  }
  toJSON(): { code: string; message: string; hint?: string | undefined } {
    return { code: this.code, message: this.message, hint: this.hint };
  }
}

/**
 * mkdir -p `dir` for `what` (a socket, the state), or a PierError naming the part of the path
 * that is in the way and `fix` (which option to change). Returns the directories it made, outermost first.
 */
export function makeDir(dir: string, mode: number, what: string, fix: string): string[] {
  // One part at a time, not { recursive: true }: Node's recursive mkdir reports EROFS as ENOENT.
  const made: string[] = [];
  const parts: string[] = [];
  for (let p = resolve(dir); p !== dirname(p); p = dirname(p)) parts.unshift(p);
  for (const p of parts) {
    const st = statSync(p, { throwIfNoEntry: false });
    if (st?.isDirectory()) continue;
    if (st) throw new PierError('ENOTDIR', `${p} is not a directory, so ${what} cannot be made under it`, `${fix}, or remove ${p}`);
    try {
      mkdirSync(p, { mode });
      made.push(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && statSync(p, { throwIfNoEntry: false })?.isDirectory()) continue; // made meanwhile
      if (code === 'EROFS') throw new PierError('EROFS', `cannot make ${p} for ${what}: the file system is read-only`, `${fix} on a writable file system`);
      if (code === 'EACCES' || code === 'EPERM') throw new PierError('EACCES', `cannot make ${p} for ${what}: permission denied`, `${fix} where pier may write`);
      throw new PierError('EIO', `cannot make ${p} for ${what}: ${(e as Error).message}`, fix);
    }
  }
  return made;
}
