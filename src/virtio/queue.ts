// What a port needs of a virtqueue, whichever the layout: the split ring (split-queue.ts,
// driver-queue.ts) and the packed ring (packed-queue.ts, packed-driver-queue.ts) implement the
// same two interfaces, so a port holds either and chooses at set-up from the negotiated features.
import type { DescriptorChain } from './chain.ts';

export type RingLayout = 'split' | 'packed';

/** pier as the device (vhost-user backend). */
export interface DeviceVirtqueue {
  readonly layout: RingLayout;
  /** Guest errors by reason (QUEUE_ERROR_NAMES order); cumulative across reset(). */
  readonly errors: Float64Array;
  /** Reason of the first guest error since configure()/reset(), or null while healthy. */
  readonly broken: string | null;
  readonly ready: boolean;
  readonly size: number;
  /** Next available entry to consume (split: free-running index; packed: ring index). */
  readonly lastAvailIdx: number;
  /** Where the next used entry goes (split: free-running index; packed: ring index). */
  readonly usedIdx: number;
  /** Position of the next pop, to come back to with unpop() (split: last_avail_idx; packed: index | wrap << 15). */
  readonly nextAvail: number;
  /** What VHOST_USER_GET_VRING_BASE answers. */
  readonly vringBase: number;
  reset(): void;
  /** Chains made available and not popped (a gauge: not for the hot path of the packed ring). */
  available(): number;
  pop(chain: DescriptorChain): boolean;
  /** Go back to a position read from nextAvail; only for chains popped and not pushed since. */
  unpop(nextAvail: number): void;
  push(id: number, len: number): void;
  flush(): boolean;
  disableNotifications(): void;
  enableNotifications(): boolean;
}

/** pier as the driver (virtio-user). */
export interface DriverVirtqueue {
  readonly layout: RingLayout;
  readonly errors: Float64Array;
  readonly broken: string | null;
  readonly ready: boolean;
  readonly size: number;
  /** Free descriptors. */
  readonly numFree: number;
  /** Results of the last getUsed(). */
  readonly usedId: number;
  readonly usedLen: number;
  add(offsets: Float64Array, lens: Uint32Array, writable: Uint8Array, n: number): number;
  addIndirect(tableOff: number, offsets: Float64Array, lens: Uint32Array, writable: Uint8Array, n: number): number;
  publish(): void;
  kickNeeded(): boolean;
  pendingUsed(): number;
  deviceHeld(): number;
  getUsed(): number;
  disableUsedNotifications(): void;
  enableUsedNotifications(): boolean;
}
