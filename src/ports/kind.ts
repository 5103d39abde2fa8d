// What a port kind is to the rest of pier (docs/design/ports.md): its one option schema, the keys
// it can change on a running port, how `pier show` renders what its dataplane half describes,
// and its two halves, loaded lazily so the CLI never loads the daemon's or the worker's code.
import type { z } from 'zod';
import type { PacketPool } from '../dataplane/pool.ts';
import type { Port } from '../dataplane/port.ts';

/** What every port has, whatever its kind: its engine slot, names and counters. */
export interface PortBase {
  index: number;
  name: string;
  bridge: number;
  counters: Float64Array;
}

/** `a tap port`, `an afpacket port`: a kind's port with the article its name takes. */
export function aPort(type: string): string {
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type} port`;
}

/** Options as a kind's schema yields them: the type, then the kind's own keys. */
export interface KindOptions {
  type: string;
}

/** Another port, as a control half sees it when it looks for clashes (a socket path, an ifname). */
export interface OtherPort {
  name: string;
  options: KindOptions;
  /** The interface the port made in its namespace (options.netns), if any. */
  ifname?: string | undefined;
}

/** What the control half made for a running port; `handle` is the kind's own (its tap, its socket). */
export interface Realized<S, H = unknown> {
  /** What the dataplane half is built from (crosses to the worker by structured clone). */
  spec: S;
  readonly handle: H;
  /** Remove what the port made (del-port). */
  destroy(): void;
  /** Let go without removing (daemon stop: a tap stays for its container). */
  detach(): void;
  /** Interface name in the container, for `pier show`. */
  ifname?: string;
  /** The kernel's counters for the device, when there is one. */
  kernel?(): Record<string, number | string> | undefined;
  /**
   * Look again at what the port read from the system when it was made (the daemon calls it every
   * 5 s while the port runs): a new spec when the dataplane half must be rebuilt from it (a vxlan
   * port's underlay MTU changed), else undefined. Never throws.
   */
  refresh?(): { spec: S; why: string } | undefined;
}

export interface ControlHalf<O extends KindOptions, S, H = unknown> {
  /** What the kind needs of the machine, checked when the daemon starts (throws PierError with the fix). */
  preflight?(): void;
  /**
   * Before anything is made: refuse what clashes with the other ports (throws PierError), and
   * return the options as they are to be stored (a generated MAC is kept so a restart brings
   * the same address back).
   */
  prepare(name: string, o: O, others: readonly OtherPort[]): O;
  /**
   * Make the port (throws PierError, leaving nothing behind). `restore`: the port is one of the
   * state the daemon started with, not yet made by this run, so what the stopped daemon left
   * (a persistent tap) is its own to take back; otherwise a tap of that name is someone else's.
   */
  realize(name: string, o: O, restore?: boolean): Realized<S, H>;
  /**
   * Apply changed options to a running port (only keys in the kind's `live` list differ).
   * Returns a new spec when the dataplane half must be rebuilt from it (what the control half
   * made stays: the container keeps its interface, a listening socket stays), else undefined.
   * Throws PierError when it cannot, having changed nothing.
   */
  update(name: string, r: Realized<S, H>, prev: O, next: O): S | undefined;
}

export interface DataplaneHalf<S> {
  create(base: PortBase, spec: S, pool: PacketPool): Port;
}

export interface PortKind<O extends KindOptions = KindOptions, S = unknown, V = unknown> {
  /** The `type=` names this kind answers to. */
  readonly types: readonly string[];
  /**
   * The one schema: CLI words and stored options alike (see src/ports/fields.ts). Loaded
   * lazily like the halves: a client command renders views and must not pay for zod.
   */
  options(): Promise<z.ZodType<O, unknown>>;
  /** Option keys `pier set-port` changes on a running port; others need --recreate. */
  readonly live: readonly string[];
  /** Text for `pier show` of what the dataplane half's describe() returned (its View). */
  render(view: V, indent: string): string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the control half reads every kind's view alike
  control(): Promise<ControlHalf<O, S, any>>;
  dataplane(): Promise<DataplaneHalf<S>>;
}
