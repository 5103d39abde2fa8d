// The desired state: what the user asked for, stored atomically (write, fsync, rename, fsync the
// directory) so a crash leaves either the old or the new file, never half of one.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { tapOptions } from './options.ts';

// Stored options are already validated and normalised (ip is a list, mtu a number).
const storedTap = z.object({
  type: z.literal('tap'),
  netns: z.string().optional(),
  ip: z.array(z.string()).optional(),
  mac: z.string().optional(),
  mtu: z.number().optional(),
  ifname: z.string().optional(),
  offloads: z.boolean().optional(),
});
const storedVhost = z.object({
  type: z.enum(['vhost-user', 'vhost-user-client']),
  path: z.string(),
  queues: z.number().optional(),
  mtu: z.number().optional(),
  'queue-size': z.number().optional(),
  'busy-poll': z.boolean().optional(),
  'strict-memory': z.boolean().optional(),
});
const storedVirtioUser = z.object({
  type: z.literal('virtio-user'),
  path: z.string(),
  server: z.boolean().optional(),
  'queue-size': z.number().optional(),
  queues: z.number().optional(),
  netns: z.string().optional(),
  ip: z.array(z.string()).optional(),
  mac: z.string().optional(),
  mtu: z.number().optional(),
  ifname: z.string().optional(),
});
const storedPort = z.discriminatedUnion('type', [storedTap, storedVhost, storedVirtioUser]);
void tapOptions;

const stateSchema = z.object({
  version: z.literal(1),
  bridges: z.record(z.string(), z.object({ ports: z.record(z.string(), storedPort) })),
});
export type DesiredState = z.infer<typeof stateSchema>;
export type StoredPort = z.infer<typeof storedPort>;
export type StoredTap = z.infer<typeof storedTap>;

export function emptyState(): DesiredState {
  return { version: 1, bridges: {} };
}

export class StateStore {
  readonly file: string;
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
    const r = stateSchema.safeParse(JSON.parse(text));
    if (!r.success) throw new Error(`${this.file} is not a valid pier state file: ${r.error.issues[0]?.message}; move it away to start empty`);
    return r.data;
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
