// Messages between the daemon (control plane) and the dataplane thread.
export interface PortSpec {
  kind: 'tap';
  index: number;
  name: string;
  bridge: number;
  counters: Float64Array;
  fd: number;
  offloads: boolean;
}

export type Request =
  | { seq: number; op: 'add-bridge'; id: number; name: string; agingSeconds?: number }
  | { seq: number; op: 'del-bridge'; id: number }
  | { seq: number; op: 'add-port'; port: PortSpec }
  | { seq: number; op: 'del-port'; index: number }
  | { seq: number; op: 'fdb'; bridge: number }
  | { seq: number; op: 'pool' }
  | { seq: number; op: 'stop' };

export type Reply = { seq: number; ok: true; data: unknown } | { seq: number; ok: false; error: string };

type DistributiveOmit<T, K extends keyof any> = T extends unknown ? Omit<T, K> : never;
export type RequestBody = DistributiveOmit<Request, 'seq'>;

export interface DataplaneEvent {
  event: 'port-down';
  index: number;
  reason: string;
}
