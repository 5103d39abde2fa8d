// Messages between the daemon (control plane) and the dataplane thread.
interface PortBase {
  index: number;
  name: string;
  bridge: number;
  counters: Float64Array;
}
export interface TapSpec extends PortBase {
  kind: 'tap';
  fd: number;
  offloads: boolean;
}
export interface VhostUserSpec extends PortBase {
  kind: 'vhost-user';
  path: string;
  /** Server: pier listens (fd made by the control plane); client: pier connects and reconnects. */
  server: boolean;
  /** The listening socket (server mode); -1 in client mode. */
  listenFd: number;
  queuePairs: number;
  mtu: number;
  /** Largest queue size pier accepts from the frontend. */
  maxQueueSize: number;
  /** Poll the rings every turn (no kicks needed) instead of sleeping until a kick. */
  busyPoll: boolean;
  /** Strict mode: refuse peer memory that cannot be sealed against shrinking. */
  requireSealedMemory: boolean;
}
export interface VirtioUserSpec extends PortBase {
  kind: 'virtio-user';
  /** vhost-user: pier speaks the protocol on path; vhost-kernel: ioctls on vhostFds, taps tapFds. */
  backend: 'vhost-user' | 'vhost-kernel';
  path: string;
  server: boolean;
  listenFd: number;
  queueSize: number;
  /** Queue pairs (rx 2k, tx 2k+1). */
  queuePairs: number;
  /** vhost-kernel: one /dev/vhost-net fd per queue pair, and the tap queue fd each moves packets for. */
  vhostFds: number[];
  tapFds: number[];
}
export type PortSpec = TapSpec | VhostUserSpec | VirtioUserSpec;

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

type DistributiveOmit<T, K extends keyof any> = T extends unknown ? Omit<T, K> : never;
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
