// An attachment (network, container id, ifname) and the files pier-cni keeps for it beside the
// daemon's control socket (its run directory: /run/pier for the default socket).
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runDir } from './config.cts';

export interface Attachment { network: string; containerId: string; ifname: string }

/**
 * The pier port of an attachment: `cni-` + 12 hex digits of sha256(network NUL containerId NUL
 * ifname), as docs/design/cni.md says and src/daemon/cni.ts attachmentPort computes (not
 * imported: that module loads zod).
 */
export function attachmentPort(a: Attachment): string {
  // Loaded here, the one place it is used (a DEL the daemon cannot be told): node:crypto costs
  // ~2 ms to load, paid by every call if it were imported at the top.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  return 'cni-' + createHash('sha256').update(`${a.network}\0${a.containerId}\0${a.ifname}`).digest('hex').slice(0, 12);
}

/** Where DEL leaves the attachments it could not tell the daemon about. */
export function tombstoneDir(socket: string): string {
  return join(runDir(socket), 'cni-del');
}

/**
 * A DEL the daemon could not be told (it is stopped): `<run dir>/cni-del/<port>.json` holding the
 * attachment, which the daemon applies (cni-del) when it starts. Written aside and renamed, so
 * the daemon never reads half a file. Returns the path.
 */
export function writeTombstone(socket: string, a: Attachment): string {
  const dir = tombstoneDir(socket);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `${attachmentPort(a)}.json`);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify({ network: a.network, containerId: a.containerId, ifname: a.ifname }) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
  return file;
}

