// Every port kind pier has, one line each (docs/design/ports.md). The CLI, the daemon, the state
// file and the dataplane worker all find a kind here by its `type=` name.
import type { z } from 'zod';
import type { ControlHalf, DataplaneHalf, KindOptions, PortKind } from './kind.ts';
import { afpacket } from './afpacket/index.ts';
import { afxdp } from './afxdp/index.ts';
import { tap } from './tap/index.ts';
import { vhostUser } from './vhost-user/index.ts';
import { virtioUser } from './virtio-user/index.ts';
import { vxlan } from './vxlan/index.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- kinds of every option, state and view type in one list
export const KINDS: readonly PortKind<any, any, any>[] = [
  tap,
  vhostUser,
  virtioUser,
  vxlan,
  afpacket,
  afxdp,
];

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- kinds of every option, state and view type in one list
const byType = new Map<string, PortKind<any, any, any>>(KINDS.flatMap((k) => k.types.map((t) => [t, k] as const)));

/** Every `type=` name, in registry order. */
export const PORT_TYPES: readonly string[] = [...byType.keys()];

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- kinds of every option, state and view type in one list
export function kindOf(type: string): PortKind<any, any, any> | undefined {
  return byType.get(type);
}

const schemas = new Map<string, z.ZodType<KindOptions, unknown>>();

/** Load every kind's option schema (the daemon and tests, before parsing options). */
export async function loadSchemas(): Promise<void> {
  for (const k of KINDS) {
    const s = await k.options();
    for (const t of k.types) schemas.set(t, s);
  }
}

/** A kind's option schema; loadSchemas() must have run (the CLI never parses options itself). */
export function schemaOf(type: string): z.ZodType<KindOptions, unknown> | undefined {
  if (schemas.size === 0) throw new Error('option schemas are not loaded: call loadSchemas() first');
  return schemas.get(type);
}

/** Load every kind's control half (the daemon, once at start): lookups are synchronous after. */
export async function loadControls(): Promise<Map<string, ControlHalf<KindOptions, unknown, unknown>>> {
  const out = new Map<string, ControlHalf<KindOptions, unknown, unknown>>();
  for (const k of KINDS) {
    const c = await k.control();
    for (const t of k.types) out.set(t, c);
  }
  return out;
}

/** Load every kind's dataplane half (the worker, before its loop runs). */
export async function loadDataplanes(): Promise<Map<string, DataplaneHalf<unknown>>> {
  const out = new Map<string, DataplaneHalf<unknown>>();
  for (const k of KINDS) {
    const d = await k.dataplane();
    for (const t of k.types) out.set(t, d);
  }
  return out;
}
