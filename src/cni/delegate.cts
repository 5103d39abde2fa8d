// Running a delegated plugin (spec section 4): found in CNI_PATH, given the same environment with
// CNI_COMMAND set and the whole network config on stdin, its stderr passed through as ours.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { join } from 'node:path';
import { CniError, CODE } from './errors.cts';

export interface PluginAnswer {
  /** The parsed stdout of a plugin that succeeded (undefined when it printed nothing). */
  result?: unknown;
  /** The CNI error of a plugin that failed. */
  error?: { code: number; msg: string; details: string };
}

/** The executable `type` in the first directory of CNI_PATH that has it. */
export function findPlugin(type: string, dirs: readonly string[]): string {
  for (const d of dirs) {
    const p = join(d, type);
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      // not in this directory
    }
  }
  throw new CniError(CODE.ipamFailed, `the IPAM plugin ${type} is not in CNI_PATH`,
    `looked in ${dirs.length > 0 ? dirs.join(', ') : '(CNI_PATH is empty)'}; install it (Debian: apt-get install containernetworking-plugins, in /usr/lib/cni) and add its directory to the runtime's CNI bin dirs`);
}

const PLUGIN_TIMEOUT_MS = 60_000;

export function execPlugin(path: string, verb: string, conf: object | undefined): PluginAnswer {
  const r = spawnSync(path, [], {
    input: conf === undefined ? '' : JSON.stringify(conf),
    env: { ...process.env, CNI_COMMAND: verb },
    stdio: ['pipe', 'pipe', 'inherit'],
    encoding: 'utf8',
    maxBuffer: 16 << 20,
    // A delegated plugin that hangs (a DHCP IPAM with no server) must not hang the runtime.
    timeout: PLUGIN_TIMEOUT_MS,
    killSignal: 'SIGKILL',
  });
  // EPIPE: the plugin exited, or closed its stdin, before our write. The CNI library's VERSION
  // never reads stdin, so a fast plugin can be gone before the config is written (seen once in
  // CI). The plugin still answered: its exit status and stdout decide, as for any other run.
  const unread = (r.error as NodeJS.ErrnoException)?.code === 'EPIPE' && r.status !== null;
  if (r.error && !unread) {
    const timedOut = (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT';
    throw new CniError(CODE.ipamFailed, timedOut ? `${path} ${verb} did not finish in ${PLUGIN_TIMEOUT_MS / 1000} s` : `could not run ${path}: ${r.error.message}`,
      timedOut ? 'look at the IPAM plugin (its server, its lock files)' : 'check that the IPAM plugin is an executable for this machine');
  }
  const out = r.stdout.trim();
  let parsed: unknown;
  try {
    parsed = out === '' ? undefined : JSON.parse(out);
  } catch {
    parsed = undefined;
  }
  if (r.status === 0) {
    if (out !== '' && parsed === undefined) throw new CniError(CODE.ipamFailed, `${path} ${verb} printed something that is not JSON`, out.slice(0, 500));
    return { result: parsed };
  }
  const e = parsed as { code?: unknown; msg?: unknown; details?: unknown } | undefined;
  return {
    error: {
      code: typeof e?.code === 'number' ? e.code : 999,
      msg: typeof e?.msg === 'string' ? e.msg : out.slice(0, 500) || `exited with ${r.status ?? r.signal}`,
      details: typeof e?.details === 'string' ? e.details : '',
    },
  };
}
