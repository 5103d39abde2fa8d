// The desired state: what the user asked for, stored atomically (write, fsync, rename, fsync the
// directory) so a crash leaves either the old or the new file, never half of one. Versioned: a
// file an older pier wrote is migrated when it is loaded (and the original kept beside it), so an
// upgraded daemon keeps its ports and containers keep their interfaces.
import { closeSync, copyFileSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { makeDir, PierError } from '../errors.ts';
import { libc } from '../sys/index.ts';
import type { KindOptions } from '../ports/kind.ts';
import { validatePortOptions } from '../ports/parse.ts';
import { portOwner, type PortOwner } from './cni.ts';

export const STATE_VERSION = 2;

/**
 * One port as stored. Version 2 keeps the options apart from what pier records about the port
 * (room for who made it: the CNI plugin's network, container and interface), where version 1
 * stored the options alone.
 */
export interface StoredPort {
  options: KindOptions;
  /** Who made the port, when not a user: the CNI plugin's attachment, or a bridge's gateway (src/daemon/cni.ts). */
  owner?: PortOwner;
}

export interface DesiredState {
  version: typeof STATE_VERSION;
  bridges: Record<string, { ports: Record<string, StoredPort> }>;
}

const fileSchema = z.object({
  version: z.number().int(),
  bridges: z.record(z.string(), z.object({ ports: z.record(z.string(), z.unknown()) })),
});

export function emptyState(): DesiredState {
  return { version: STATE_VERSION, bridges: {} };
}

/** Bring a parsed file of any known version to the current one; unknown versions are refused. */
export function migrate(raw: z.infer<typeof fileSchema>, file: string): DesiredState {
  if (raw.version > STATE_VERSION || raw.version < 1) {
    throw new PierError('ESTATE', `${file} has state version ${raw.version}; this pier reads versions 1..${STATE_VERSION}`, 'run the pier that wrote it, or move the file away to start empty');
  }
  const out = emptyState();
  for (const [br, b] of Object.entries(raw.bridges)) {
    const ports: Record<string, StoredPort> = {};
    for (const [name, p] of Object.entries(b.ports)) {
      // Version 1: the options themselves; version 2: { options }.
      const options = raw.version === 1 ? p : (p as { options?: unknown }).options;
      try {
        ports[name] = { options: validatePortOptions((options ?? {}) as Record<string, unknown>) };
        const owner = raw.version === 1 ? undefined : (p as { owner?: unknown }).owner;
        if (owner !== undefined) ports[name].owner = portOwner.parse(owner);
      } catch (e) {
        throw new PierError('ESTATE', `${file}: port ${name} on bridge ${br}: ${(e as Error).message}`, 'fix or remove that port in the file, or move the file away to start empty');
      }
    }
    out.bridges[br] = { ports };
  }
  return out;
}

export class StateStore {
  readonly file: string;
  /** The version of the file as it was loaded (0: there was none). */
  loadedVersion = 0;
  constructor(readonly dir: string) {
    this.file = join(dir, 'state.json');
  }

  load(): DesiredState {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
      throw e;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new PierError('ESTATE', `${this.file} is not JSON: ${(e as Error).message}`, 'move it away to start empty');
    }
    const r = fileSchema.safeParse(json);
    if (!r.success) throw new PierError('ESTATE', `${this.file} is not a valid pier state file: ${r.error.issues[0]?.message}`, 'move it away to start empty');
    this.loadedVersion = r.data.version;
    return migrate(r.data, this.file);
  }

  /** Keep the file an older pier wrote (state.v1.json) before the first save rewrites it. */
  keepOriginal(): string | undefined {
    if (this.loadedVersion === 0 || this.loadedVersion === STATE_VERSION) return undefined;
    const copy = join(this.dir, `state.v${this.loadedVersion}.json`);
    if (!existsSync(copy)) copyFileSync(this.file, copy);
    return copy;
  }

  /** The open lock file while this daemon holds the directory (lock()). */
  private lockFd = -1;

  /**
   * Hold the state directory for this process (flock on `lock`, released by the kernel when the
   * process ends, however it ends): a second daemon on the same directory would fight the first
   * over its taps and its state file. Throws PierError naming the holder's pid.
   */
  lock(): void {
    if (this.lockFd >= 0) return;
    makeDir(this.dir, 0o700, 'the state directory', 'choose another --state-dir');
    const path = join(this.dir, 'lock');
    const fd = openSync(path, 'a+', 0o600);
    if (libc.flock(fd, libc.LOCK_EX | libc.LOCK_NB) !== 0) {
      const err = libc.errno();
      let holder = '';
      try {
        holder = readFileSync(path, 'utf8').trim();
      } catch {
        /* unreadable: no pid to name */
      }
      closeSync(fd);
      throw new PierError('EBUSY', `the state directory ${this.dir} is in use by another pier daemon${/^\d+$/.test(holder) ? ` (pid ${holder})` : ''}${err === libc.EAGAIN ? '' : ` (flock: ${libc.errnoName(err)})`}`,
        'stop that daemon first, or give this one its own --state-dir (and --socket)');
    }
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
    this.lockFd = fd;
  }

  /** Let the directory go (daemon stop; a process that ends lets it go anyway). */
  unlock(): void {
    if (this.lockFd < 0) return;
    closeSync(this.lockFd);
    this.lockFd = -1;
  }

  save(s: DesiredState): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(s, null, 2) + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
    const dfd = openSync(this.dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  }
}
