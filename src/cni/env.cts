// The CNI_* environment of one invocation, checked as the spec (section 2) requires per verb;
// what is missing or malformed is code 4 naming the variables, as libcni's skel does.
import { CNI_NAME_RE } from './config.cts';
import { CniError, CODE } from './errors.cts';

export const VERBS = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'] as const;
export type Verb = (typeof VERBS)[number];

export interface CniEnv {
  verb: Verb;
  containerId: string;
  netns: string;
  ifname: string;
  args: string;
  /** CNI_PATH split into its directories. */
  path: string[];
}

/** The variables each verb must have (CNI_PATH too when a delegated plugin must be found: checked by the caller). */
const REQUIRED: Record<Verb, readonly string[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  GC: ['CNI_PATH'],
  STATUS: [],
  VERSION: [],
};

const IFNAME_MAX = 15;

export function readEnv(env: NodeJS.ProcessEnv): CniEnv {
  const cmd = env.CNI_COMMAND ?? '';
  if (cmd === '') {
    throw new CniError(CODE.badEnv, 'required env variables [CNI_COMMAND] missing',
      'pier-cni is a CNI plugin: a container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC, VERSION), the CNI_* variables and the network config on stdin');
  }
  if (!(VERBS as readonly string[]).includes(cmd)) throw new CniError(CODE.badEnv, `unknown CNI_COMMAND: ${cmd}`, `CNI_COMMAND is one of ${VERBS.join(', ')}`);
  const verb = cmd as Verb;
  const missing = REQUIRED[verb].filter((k) => !env[k]);
  if (missing.length > 0) throw new CniError(CODE.badEnv, `required env variables [${missing.join(',')}] missing`, `CNI_COMMAND=${verb} needs ${REQUIRED[verb].join(', ')}`);

  const e: CniEnv = {
    verb,
    containerId: env.CNI_CONTAINERID ?? '',
    netns: env.CNI_NETNS ?? '',
    ifname: env.CNI_IFNAME ?? '',
    args: env.CNI_ARGS ?? '',
    path: (env.CNI_PATH ?? '').split(':').filter((d) => d !== ''),
  };
  if (REQUIRED[verb].includes('CNI_CONTAINERID') && !CNI_NAME_RE.test(e.containerId)) {
    throw new CniError(CODE.badEnv, 'invalid characters in CNI_CONTAINERID', `${e.containerId}: a container id starts with a letter or digit, then letters, digits, _ . -`);
  }
  if (REQUIRED[verb].includes('CNI_IFNAME')) {
    const problem = ifnameProblem(e.ifname);
    if (problem) throw new CniError(CODE.badEnv, `CNI_IFNAME ${JSON.stringify(e.ifname)} ${problem}`, 'Linux interface names are 1-15 bytes, not . or .., without / : or whitespace');
  }
  return e;
}

/** Linux's rules for interface names (net/core/dev.c dev_valid_name), as libcni checks them, and pier's. */
function ifnameProblem(n: string): string | undefined {
  if (Buffer.byteLength(n) > IFNAME_MAX) return `is longer than ${IFNAME_MAX} bytes`;
  if (n === '.' || n === '..') return 'is . or ..';
  if (/[/:\s]/.test(n)) return 'contains / or : or whitespace';
  // pier's own rule for the interfaces it makes (src/ports/fields.ts ifname): refused here, before
  // an address is taken, rather than by the daemon after.
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_.-]*$/.test(n)) return 'is not a name pier gives an interface: use letters, digits, _ . -';
  return undefined;
}
