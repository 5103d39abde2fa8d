// Messages between the daemon (control plane) and the dataplane thread.

/** A port to add: what every port has, and its kind's spec (typed by the kind, src/ports/<kind>/options.ts). */
export interface PortSpec {
  /** The kind's `type=` name: the worker builds the port with that kind's dataplane half. */
  type: string;
  index: number;
  name: string;
  bridge: number;
  counters: Float64Array;
  spec: unknown;
}

export type Request =
  | { seq: number; op: 'add-bridge'; id: number; name: string; agingSeconds?: number }
  | { seq: number; op: 'del-bridge'; id: number }
  | { seq: number; op: 'add-port'; port: PortSpec }
  | { seq: number; op: 'del-port'; index: number }
  | { seq: number; op: 'fdb'; bridge: number }
  | { seq: number; op: 'pool' }
  | { seq: number; op: 'describe'; index: number }
  | { seq: number; op: 'stop' };

export type Reply = { seq: number; ok: true; data: unknown } | { seq: number; ok: false; error: string };

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
export type RequestBody = DistributiveOmit<Request, 'seq'>;

/** What a port says about its peer, for the daemon's log: a session began, ended, or a request was refused. */
export interface PeerNews {
  what: 'connected' | 'ended' | 'refused';
  /** For 'ended': the disconnect kind (peer-closed, protocol, timeout, resource, refused, superseded, memory, local). */
  kind?: string;
  detail: string;
}

export type DataplaneEvent =
  | { event: 'port-down'; index: number; reason: string }
  | ({ event: 'peer'; index: number } & PeerNews);
