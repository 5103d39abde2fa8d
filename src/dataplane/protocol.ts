// Messages between the daemon (control plane) and the dataplane thread.
import type { SecurityConfig } from './security.ts';
import type { VlanConfig } from './vlan.ts';

/** A port to add: what every port has, and its kind's spec (typed by the kind, src/ports/<kind>/options.ts). */
export interface PortSpec {
  /** The kind's `type=` name: the worker builds the port with that kind's dataplane half. */
  type: string;
  index: number;
  name: string;
  bridge: number;
  counters: Float64Array;
  /** Ring levels the engine writes once a second (LEVEL_* slots), for kinds with rings. */
  levels?: Float64Array | undefined;
  spec: unknown;
  /** tag= / trunks=, common to every kind (docs/design/uplinks.md); none: VLAN 0 untagged. */
  vlan?: VlanConfig | undefined;
  /** port-security= allowed-addresses= mac-limit= storm-limit=, common to every kind (docs/design/port-security.md). */
  security?: SecurityConfig | undefined;
}

export type Request =
  | { seq: number; op: 'add-bridge'; id: number; name: string; agingSeconds?: number; gauges?: Float64Array; fdbSize?: number }
  | { seq: number; op: 'del-bridge'; id: number }
  | { seq: number; op: 'add-port'; port: PortSpec }
  /**
   * A link to dataplane thread `peer` on bridge `bridge` (src/dataplane/link.ts): the slots'
   * memfd and the control words of the ring this thread produces into and of the one it
   * consumes, the eventfd it polls and the peer's. Removed with del-port like any port.
   */
  | { seq: number; op: 'add-link'; index: number; bridge: number; peer: number; counters: Float64Array; txFd: number; rxFd: number; txControl: SharedArrayBuffer; rxControl: SharedArrayBuffer; wakeFd: number; peerWakeFd: number; vlan?: VlanConfig | undefined }
  /** Forget what the bridge learned on port `index` (a link, when a port moved between threads). */
  | { seq: number; op: 'fdb-flush'; index: number }
  | { seq: number; op: 'del-port'; index: number }
  /** A running port's VLANs change (set-port tag=/trunks=): applied between bursts, its FDB entries flushed. */
  | { seq: number; op: 'set-vlan'; index: number; vlan: VlanConfig | undefined }
  /** A running port's security changes (set-port): applied between bursts, its static FDB entries made again. */
  | { seq: number; op: 'set-security'; index: number; security: SecurityConfig | undefined }
  /** A running port's busy-poll= changes (set-port): a flag read each poll, set in place (the peer's session goes on). */
  | { seq: number; op: 'set-busy-poll'; index: number; on: boolean }
  /**
   * The static entries of link `index`: the own MACs of the secured ports on the thread at its
   * other end (each in the VLAN its untagged frames cross in), so no port of this thread can
   * claim them (docs/design/port-security.md). Replaces the link's previous set.
   */
  | { seq: number; op: 'link-statics'; index: number; statics: Array<{ mac: string; vlan: number }> }
  | { seq: number; op: 'fdb'; bridge: number }
  | { seq: number; op: 'pool' }
  | { seq: number; op: 'describe'; index: number }
  /**
   * Start capture `id` (src/dataplane/capture.ts): the ring is memfd `fd` of `size` bytes, which
   * the dataplane maps into its arena; `slots` are the captured ports, interface i being slots[i].
   */
  | { seq: number; op: 'capture-start'; id: number; ctl: SharedArrayBuffer; fd: number; size: number; snaplen: number; slots: number[]; dirs: number }
  /** Stop it: once answered, nothing more is written to its ring, which is unmapped. */
  | { seq: number; op: 'capture-stop'; id: number }
  | { seq: number; op: 'stop' };

/** The dataplane's pool and engine figures, and the peer-safety counters (docs/design/peer-memory.md). */
export interface PoolStats {
  size: number;
  available: number;
  allocFailures: number;
  /** The dataplane thread's id, so a benchmark can read its CPU time. */
  tid: number;
  wakeups: number;
  bursts: number;
  /** Polls of a queue that found nothing (busy-polling makes most of them). */
  emptyPolls: number;
  packets: number;
  /** The SIGBUS guard covers the arena. */
  sigbusGuard: boolean;
  /** Faults the guard survived in this arena; those no port claimed; bursts dropped for one. */
  memoryFaults: number;
  memoryFaultsUnclaimed: number;
  faultDroppedBursts: number;
  /** Watchdog wake-ups of the dataplane thread (a peer made a notification block). */
  peerWakes: number;
}

export interface FdbEntry {
  mac: string;
  vlan: number;
  port: number;
  age: number;
  /** A secured port's own MAC: never moved by learning, never aged. */
  static?: true;
}

/**
 * What each request answers: the daemon's `request()` returns this type for the op it sends,
 * and the worker's handler must produce it. `describe` is the port kind's view
 * (src/ports/<kind>/view.ts), which the kind's renderer takes, or null for no port.
 */
export interface ReplyOf {
  'add-bridge': null;
  'del-bridge': null;
  'add-port': null;
  'add-link': null;
  'fdb-flush': null;
  'del-port': null;
  'set-vlan': null;
  'set-security': null;
  'set-busy-poll': null;
  'link-statics': null;
  fdb: { entries: FdbEntry[]; ports: Array<{ port: number; learned: number; limit: number }>; full: number; moves: number; evicted: number };
  pool: PoolStats;
  describe: unknown;
  'capture-start': null;
  'capture-stop': null;
  stop: null;
}

export type Reply = { seq: number; ok: true; data: ReplyOf[Request['op']] } | { seq: number; ok: false; error: string };

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
export type RequestBody = DistributiveOmit<Request, 'seq'>;

/** What a port says about its peer, for the daemon's log: a session began, ended, or a request was refused. */
export interface PeerNews {
  what: 'connected' | 'ended' | 'refused' | 'features'
    /** Port security: a secured port sent what it may not (kind: the counter's name), rate-limited. */
    | 'spoofed'
    /** A MAC moves between this port and another (kind: the other port's slot) many times a second. */
    | 'flapping';
  /** For 'ended': the disconnect kind (peer-closed, protocol, timeout, resource, refused, superseded, memory, local). */
  kind?: string;
  detail: string;
}

export type DataplaneEvent =
  | { event: 'port-down'; index: number; reason: string }
  | ({ event: 'peer'; index: number } & PeerNews);
