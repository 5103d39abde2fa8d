// What the engine needs from a port, whatever its kind (tap, vhost-user, virtio-user, ...).
import type { PacketPool } from './pool.ts';

export const TXQ_SIZE = 256;

export abstract class Port {
  /** Set by the engine's flush: packets waiting to leave through this port this turn. */
  readonly txq = new Int32Array(TXQ_SIZE);
  txCount = 0;
  /** Scratch the engine uses when it must fix up offloads for this port. */
  readonly fixq = new Int32Array(TXQ_SIZE);

  constructor(
    /** Engine slot, also the epoll token's upper bits. */
    readonly index: number,
    readonly name: string,
    readonly bridge: number,
    readonly counters: Float64Array,
    readonly pool: PacketPool,
    /** Accepts GSO super-frames (VIRTIO_NET_HDR_GSO_TCPV4/6) as they are. */
    readonly acceptsTso: boolean,
    /** Accepts frames whose checksum is still partial (VIRTIO_NET_HDR_F_NEEDS_CSUM). */
    readonly acceptsCsum: boolean,
  ) {}

  /** File descriptors the engine polls for EPOLLIN; the i-th one is reported as queue i. */
  abstract readonly fds: readonly number[];

  /** Receive up to `max` packets from `queue` into out[0..n); returns n. Never throws. */
  abstract receive(queue: number, out: Int32Array, max: number): number;

  /** Send q[0..n) and release each handle. Never throws; failures are counted. */
  abstract transmit(q: Int32Array, n: number): void;

  /** Forget the port; the control plane owns and closes its fds. */
  abstract close(): void;
}
