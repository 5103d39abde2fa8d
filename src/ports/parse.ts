// Port options from `key=value` words (the CLI) or from state.json, through the kind's one schema
// (src/ports/<kind>/options.ts): validated completely before anything is changed, one message
// per problem naming the key and the fix.
import { PierError } from '../errors.ts';
import type { KindOptions } from './kind.ts';
import { PORT_TYPES, schemaOf } from './registry.ts';

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

/** The option keys of `type`, in the schema's order (type first). */
export function optionKeys(type: string): string[] {
  const schema = schemaOf(type) as unknown as { shape?: Record<string, unknown> } | undefined;
  return Object.keys(schema?.shape ?? {});
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
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    throw new PierError('EINVAL', `unknown option key ${issue.keys.join(', ')} for a ${String(type)} port`, `valid keys: ${optionKeys(String(type)).join(', ')}`);
  }
  const key = String(issue.path[0] ?? '');
  if (issue.code === 'invalid_type' && issue.input === undefined) throw new PierError('EINVAL', `a ${String(type)} port needs ${key}=`, `add ${key}=...`);
  throw new PierError('EINVAL', `bad ${key}: ${issue.message}`, `fix ${key}=... and run the command again`);
}
