// pier-cni: the CNI plugin (spec 1.1.0) that attaches containers to pier (docs/design/cni.md).
// A runtime runs it once per verb per container: CNI_* in the environment, the network config on
// stdin, the result or the error JSON on stdout and nothing else there. Its start-up is most of a
// container's attach time, so it loads node: builtins only (see config.cts), and is CommonJS
// (.cts, built to dist/cni/*.cjs, started by bin/pier-cni as a CommonJS entry): Node 20's ES
// module loader cost ~18 ms more per ADD than require() for the same modules (interleaved runs
// of 40 ADDs against a daemon under load: 74.0 ms against 55.8 ms, node alone 35 ms).
import { readFileSync } from 'node:fs';
import { add } from './add.cts';
import { check } from './check.cts';
import { parseConfig, peekVersion, type NetConf } from './config.cts';
import { del } from './del.cts';
import { readEnv, type CniEnv, type Verb } from './env.cts';
import { CniError, CODE, errorJson } from './errors.cts';
import { gc } from './gc.cts';
import { log, setLogContext } from './log.cts';
import { status } from './status.cts';
import { compareVersions, CURRENT, SUPPORTED } from './versions.cts';

type Handler = (env: CniEnv, conf: NetConf) => Promise<object | void>;
const HANDLERS: Record<Exclude<Verb, 'VERSION'>, Handler> = { ADD: add, DEL: del, CHECK: check, GC: gc, STATUS: status };
/** The version that brought each verb; an older config cannot ask for it (as libcni's skel says). */
const SINCE: Partial<Record<Verb, string>> = { CHECK: '0.4.0', GC: '1.1.0', STATUS: '1.1.0' };

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch (e) {
    throw new CniError(CODE.io, 'could not read the network configuration from stdin', (e as Error).message);
  }
}

async function main(): Promise<void> {
  const started = performance.now();
  let version: string = CURRENT;
  try {
    const env = readEnv(process.env);
    // VERSION needs no config: stdin is not read (a runtime may not even close it).
    if (env.verb === 'VERSION') {
      process.stdout.write(JSON.stringify({ cniVersion: CURRENT, supportedVersions: SUPPORTED }) + '\n');
      return;
    }
    const text = readStdin();
    version = peekVersion(text) ?? CURRENT;
    const conf = parseConfig(text);
    version = conf.cniVersion;
    setLogContext(`${env.verb} network=${conf.name}${env.containerId ? ` container=${env.containerId} ifname=${env.ifname}` : ''}`);
    const since = SINCE[env.verb];
    if (since && compareVersions(conf.cniVersion, since) < 0) {
      throw new CniError(CODE.incompatibleVersion, `config version does not allow ${env.verb}`, `${env.verb} came with CNI ${since}; the config's cniVersion is ${conf.cniVersion}`);
    }
    const out = await HANDLERS[env.verb](env, conf);
    if (out) process.stdout.write(JSON.stringify(out) + '\n');
    // performance.now() counts from the process's start: node's own start-up is `started`.
    log.debug(`done in ${(performance.now() - started).toFixed(1)} ms, ${performance.now().toFixed(1)} ms since the process started`);
  } catch (e) {
    // stdout is a pipe: the write completes before the process exits.
    process.stdout.write(errorJson(e, version) + '\n');
    process.exitCode = 1;
    log.error(e instanceof CniError ? `${e.message}${e.details ? ` (${e.details})` : ''} [code ${e.code}]` : e instanceof Error ? e.stack ?? e.message : String(e));
  }
}

void main();
