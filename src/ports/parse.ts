// Port options from `key=value` words (the CLI) or from state.json, through the kind's one schema
// (src/ports/<kind>/options.ts): validated completely before anything is changed, one message
// per problem naming the key and the fix. `tag=`, `trunks=` and `thread=` belong to every kind:
// they are taken out before the kind's strict schema, checked by one schema of their own, and
// put back.
import { z } from 'zod';
import { PierError } from '../errors.ts';
import { allowedAddresses, dataplaneThread, macLimit, onOff, stormLimit, vlanTag, vlanTrunks } from './fields.ts';
import { aPort, type KindOptions } from './kind.ts';
import { PORT_TYPES, schemaOf } from './registry.ts';

/**
 * The option keys every port has, whatever its kind: its VLANs (docs/design/uplinks.md) and the
 * dataplane thread it runs on (docs/design/threads.md).
 */
export const COMMON_KEYS = ['tag', 'trunks', 'thread', 'port-security', 'allowed-addresses', 'mac-limit', 'storm-limit'] as const;

const commonOptions = z.strictObject({
  tag: vlanTag.optional(), trunks: vlanTrunks.optional(), thread: dataplaneThread.optional(),
  // Port security (docs/design/port-security.md, src/ports/security.ts).
  'port-security': onOff.optional(), 'allowed-addresses': allowedAddresses.optional(), 'mac-limit': macLimit.optional(), 'storm-limit': stormLimit.optional(),
});

/** The thread= a port asked for, or undefined (the daemon places it). */
export function threadOf(o: KindOptions): number | undefined {
  return (o as KindOptions & { thread?: number }).thread;
}

/** A port's VLAN options as stored: an access port's tag, or a trunk's VLANs, or neither. */
export interface VlanOptions {
  tag?: number;
  trunks?: number[];
}

/** The VLAN part of stored options (what the dataplane is given with the port), undefined for none. */
export function vlanOf(o: KindOptions): VlanOptions | undefined {
  const r = o as KindOptions & VlanOptions;
  if (r.tag !== undefined) return { tag: r.tag };
  if (r.trunks !== undefined) return { trunks: r.trunks };
  return undefined;
}

/** `['type=tap', 'netns=c1']` -> `{ type: 'tap', netns: 'c1' }`, every word checked. */
export function parseKeyValues(words: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const w of words) {
    const eq = w.indexOf('=');
    if (eq <= 0) throw new PierError('EINVAL', `'${w}' is not an option`, 'options are KEY=VALUE words, for example type=tap netns=c1');
    const k = w.slice(0, eq);
    if (k in out) throw new PierError('EINVAL', `option ${k} is given twice`, 'give each option once');
    out[k] = w.slice(eq + 1);
  }
  return out;
}

/** The option keys of `type`, in the schema's order (type first), then the keys every port has. */
export function optionKeys(type: string): string[] {
  const schema = schemaOf(type) as unknown as { shape?: Record<string, unknown> } | undefined;
  return [...Object.keys(schema?.shape ?? {}), ...COMMON_KEYS];
}

/**
 * Words as typed (strings) or stored values: the kind's options, or a PierError naming the key.
 * The schemas must be loaded (registry.loadSchemas()).
 */
export function validatePortOptions(raw: Record<string, unknown>): KindOptions {
  const type = raw.type;
  if (type === undefined) throw new PierError('EINVAL', 'the port has no type', `add type=TYPE; types: ${PORT_TYPES.join(', ')}`);
  const schema = typeof type === 'string' ? schemaOf(type) : undefined;
  if (!schema || typeof type !== 'string') throw new PierError('EINVAL', `unknown port type '${typeof type === 'string' ? type : JSON.stringify(type)}'`, `types: ${PORT_TYPES.join(', ')}`);
  const own: Record<string, unknown> = {};
  const common: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (v === undefined) continue;
    if ((COMMON_KEYS as readonly string[]).includes(k)) common[k] = v;
    else own[k] = v;
  }
  const r = schema.safeParse(own);
  if (!r.success) throw optionError(String(type), r.error.issues[0]!, own);
  const v = commonOptions.safeParse(common);
  if (!v.success) throw optionError(String(type), v.error.issues[0]!, common);
  if (v.data.tag !== undefined && v.data.trunks !== undefined) {
    throw new PierError('EINVAL', 'tag= and trunks= together: a port is an access port (tag=N, untagged frames in VLAN N) or a trunk (trunks=A,B, 802.1Q tagged)',
      'keep one of them (set-port: drop the other with tag= or trunks=)');
  }
  return { ...r.data, ...v.data };
}

function optionError(type: string, issue: z.core.$ZodIssue, given: Record<string, unknown>): PierError {
  if (issue.code === 'unrecognized_keys') {
    return new PierError('EINVAL', `unknown option key ${issue.keys.join(', ')} for ${aPort(type)}`, `valid keys: ${optionKeys(type).join(', ')}`);
  }
  const key = String(issue.path[0] ?? '');
  // A key left out: a type error, or a union's for fields that take a word or a stored value.
  if ((issue.code === 'invalid_type' && issue.input === undefined) || (key !== '' && issue.path.length === 1 && given[key] === undefined)) return new PierError('EINVAL', `${aPort(type)} needs ${key}=`, `add ${key}=...`);
  // A field that takes one of a few words names them (onOff: on|off).
  const use = issue.code === 'custom' ? (issue.params as { use?: string } | undefined)?.use : undefined;
  return new PierError('EINVAL', `bad ${key}: ${issue.message}`, use ? `use ${key}=${use}` : `fix ${key}=... and run the command again`);
}
