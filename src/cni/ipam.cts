// IPAM delegation: the config's `ipam.type` plugin, spoken to in the request's version or, when it
// is older (Debian's host-local 1.1.1 stops at 1.0.0 while runtimes send 1.1.0), in the newest it
// has below that, its result converted. What versions a plugin has is asked once (VERSION, ~5 ms
// for a Go plugin) and kept in a cache file next to the daemon's socket, keyed by the plugin's
// path, mtime and size, so every later call costs one stat and one small read.
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runDir, type NetConf } from './config.cts';
import type { CniEnv } from './env.cts';
import { execPlugin, findPlugin, type PluginAnswer } from './delegate.cts';
import { CniError, CODE } from './errors.cts';
import { log } from './log.cts';
import { bestVersion, compareVersions, CURRENT, readResult, writeResult, type Result } from './versions.cts';

export const VERSION_CACHE = 'cni-plugin-versions.json';
type Cache = Record<string, { mtimeMs: number; size: number; versions: string[] }>;

/** The versions the plugin at `path` says it supports (its VERSION), from the cache when it is fresh. */
export function pluginVersions(path: string, cacheDir: string, refresh = false): string[] {
  const st = statSync(path);
  const file = join(cacheDir, VERSION_CACHE);
  let cache: Cache = {};
  try {
    cache = JSON.parse(readFileSync(file, 'utf8')) as Cache;
  } catch {
    // none yet, or unreadable: asked again below
  }
  const hit = cache[path];
  if (!refresh && hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size && Array.isArray(hit.versions)) return hit.versions;

  const a = execPlugin(path, 'VERSION', { cniVersion: CURRENT });
  const sv = (a.result as { supportedVersions?: unknown } | undefined)?.supportedVersions;
  if (!Array.isArray(sv) || !sv.every((x) => typeof x === 'string')) {
    throw new CniError(CODE.ipamFailed, `${path} did not answer VERSION with its supportedVersions`, a.error ? `${a.error.msg} ${a.error.details}` : 'is it a CNI plugin?');
  }
  cache[path] = { mtimeMs: st.mtimeMs, size: st.size, versions: sv };
  try {
    // Written aside and renamed: concurrent plugins read a whole file or the old one.
    mkdirSync(cacheDir, { recursive: true, mode: 0o755 });
    const tmp = `${file}.${process.pid}`;
    writeFileSync(tmp, JSON.stringify(cache));
    renameSync(tmp, file);
  } catch (e) {
    log.debug(`version cache not written (${(e as Error).message}): VERSION will be asked again next time`);
  }
  return sv;
}

export class Ipam {
  readonly path: string;

  constructor(private readonly conf: NetConf & { ipamType: string }, dirs: readonly string[], private readonly cacheDir: string) {
    this.path = findPlugin(conf.ipamType, dirs);
  }

  /** The config the plugin is given in version `v`: ours, with its prevResult in that version too. */
  confFor(v: string): Record<string, unknown> {
    const c: Record<string, unknown> = { ...this.conf.raw, cniVersion: v };
    if (this.conf.prevResult) c.prevResult = writeResult(this.conf.prevResult, v);
    // GC's list under both names, as libcni passes it: a runtime may have sent only one, and an
    // IPAM plugin that reads the other would see no valid attachment and free every lease.
    const valid = this.conf.validAttachments;
    if (valid !== undefined) {
      const list = valid.map((a) => ({ containerID: a.containerId, ifname: a.ifname }));
      c['cni.dev/valid-attachments'] = list;
      c['cni.dev/attachments'] = list;
    }
    return c;
  }

  /**
   * Run `verb` in the newest version the plugin has that is not newer than the request's, and
   * no older than `min` (the version that brought the verb). Undefined: the plugin has none (the
   * verb is skipped by the caller's choice). A plugin that still answers "incompatible" (code 1)
   * has changed under the cache: asked again, and retried once.
   */
  private run(verb: string, min: string): { answer: PluginAnswer; given: Record<string, unknown> } | undefined {
    let v = this.pick(min, false);
    if (v === undefined) return undefined;
    let given = this.confFor(v);
    const t0 = performance.now();
    let answer = execPlugin(this.path, verb, given);
    log.debug(`${this.conf.ipamType} ${verb} (CNI ${v}): ${(performance.now() - t0).toFixed(1)} ms`);
    if (answer.error?.code === CODE.incompatibleVersion) {
      const again = this.pick(min, true);
      if (again !== undefined && again !== v) {
        v = again;
        given = this.confFor(v);
        answer = execPlugin(this.path, verb, given);
      }
    }
    if (answer.error) {
      const e = answer.error;
      throw new CniError(CODE.ipamFailed, `the IPAM plugin ${this.conf.ipamType} failed ${verb}: ${e.msg}`, `its code ${e.code}${e.details ? `: ${e.details}` : ''} (${this.path}, spoken to in CNI ${v})`);
    }
    return { answer, given };
  }

  private pick(min: string, refresh: boolean): string | undefined {
    const v = bestVersion(pluginVersions(this.path, this.cacheDir, refresh), this.conf.cniVersion);
    return v !== undefined && compareVersions(v, min) >= 0 ? v : undefined;
  }

  private mustRun(verb: string, min: string): { answer: PluginAnswer; given: Record<string, unknown> } {
    const r = this.run(verb, min);
    if (!r) {
      throw new CniError(CODE.ipamFailed, `the IPAM plugin ${this.conf.ipamType} speaks no CNI version from ${min} to ${this.conf.cniVersion}`,
        `it supports ${pluginVersions(this.path, this.cacheDir).join(', ')} (${this.path}); use a newer IPAM plugin or an older cniVersion`);
    }
    return r;
  }

  /** Addresses for the attachment, and the config the plugin was given (for the daemon to free them on its own later). */
  add(): { result: Result; given: Record<string, unknown> } {
    const { answer, given } = this.mustRun('ADD', '0.4.0');
    let result: Result;
    try {
      result = readResult(answer.result);
    } catch (e) {
      throw new CniError(CODE.ipamFailed, `the IPAM plugin ${this.conf.ipamType} answered ADD with a result that ${(e as Error).message}`, JSON.stringify(answer.result)?.slice(0, 500) ?? '');
    }
    // An IPAM result has no interfaces (spec section 5): its IPs are placed by the caller.
    const { prevResult: _p, ...stored } = given;
    return { result: { ...result, interfaces: [] }, given: stored };
  }

  del(): void {
    this.mustRun('DEL', '0.4.0');
  }

  check(): void {
    this.mustRun('CHECK', '0.4.0');
  }

  /** GC and STATUS came with 1.1.0: a plugin without it has neither, and is skipped (true: it ran). */
  gc(): boolean {
    return this.run('GC', '1.1.0') !== undefined;
  }

  status(): boolean {
    return this.run('STATUS', '1.1.0') !== undefined;
  }
}

/** The IPAM plugin of the config, if it has one; CNI_PATH is then needed to find it. */
export function ipamOf(env: CniEnv, conf: NetConf): Ipam | undefined {
  if (conf.ipamType === undefined) return undefined;
  if (env.path.length === 0) {
    throw new CniError(CODE.badEnv, 'required env variables [CNI_PATH] missing', `the config's IPAM plugin ${conf.ipamType} is looked up in CNI_PATH`);
  }
  return new Ipam({ ...conf, ipamType: conf.ipamType }, env.path, runDir(conf.socket));
}
