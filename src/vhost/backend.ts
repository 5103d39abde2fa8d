// The vhost-user backend state machine: what one frontend connection has set up (features, memory
// table, vrings) and the replies the protocol asks for. It knows nothing of sockets (the port
// feeds it decoded messages) nor of packets (the port's datapath drives the DeviceQueues it
// configures). Every message was framed and checked against the codec's table before it gets
// here (size, fd count); handlers check the values. A handler returns a reply body, or throws VhostError: the port answers failure when the
// frontend asked for an answer, counts it, and drops the connection when the error is fatal.
import type { Arena } from '../memory/arena.ts';
import { closeAll, GuestMemory, MAX_REGIONS, type RegionSpec } from '../memory/guest-memory.ts';
import { DescriptorChain } from '../virtio/chain.ts';
import { DeviceQueue } from '../virtio/split-queue.ts';
import { PackedDeviceQueue } from '../virtio/packed-queue.ts';
import { EVENT_SUPPRESS_SIZE, packedRingSize, VIRTIO_F_RING_PACKED } from '../virtio/packed-ring.ts';
import type { DeviceVirtqueue } from '../virtio/queue.ts';
import { checkPeerEventFd, libc } from '../sys/index.ts';
import { availRingSize, descTableSize, usedRingSize, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC } from '../virtio/ring.ts';
import * as codec from './codec.ts';
import * as P from './protocol.ts';

/** A request the backend refuses: answered with failure (REPLY_ACK), counted; `fatal` drops the connection. */
export class VhostError extends Error {
  constructor(message: string, readonly fatal = false) {
    super(message);
  }
}

export { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1 } from '../virtio/ring.ts';
export { VIRTIO_F_RING_PACKED } from '../virtio/packed-ring.ts';
export const MAX_QUEUE_SIZE = 32768;
/** Distinct refusal reasons counted per port (see count()). */
const MAX_REASONS = 64;

export class Vring {
  num = 0;
  descUva = -1;
  usedUva = -1;
  availUva = -1;
  base = 0;
  /** SET_VRING_BASE was received: without it a packed ring starts fresh, at (0, wrap 1). */
  baseSet = false;
  /** Times this split ring started at used.idx instead of the base it was given (a driver that kept its ring). */
  resumedAtUsed = 0;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  enabled = false;
  started = false;
  /** The queue of the layout negotiated (VIRTIO_F_RING_PACKED), set when the ring starts. */
  queue: DeviceVirtqueue;
  readonly split: DeviceQueue;
  /** Made the first time the ring starts packed (its Buffer ID table is 128 KiB). */
  packed: PackedDeviceQueue | null = null;
  readonly chain = new DescriptorChain();
  constructor(readonly index: number, private readonly arena: Arena, private readonly mem: GuestMemory) {
    // The queue translates descriptor addresses through whatever memory table is current.
    this.split = new DeviceQueue(arena, mem);
    this.queue = this.split;
  }

  packedQueue(): PackedDeviceQueue {
    return (this.packed ??= new PackedDeviceQueue(this.arena, this.mem));
  }

  reset(): void {
    this.split.reset();
    this.packed?.reset();
    this.queue = this.split;
  }
}

export interface BackendHooks {
  /** A vring became ready (kick fd, addresses, memory, enabled): start polling it. */
  onStart(v: Vring): void;
  /** A vring stops (GET_VRING_BASE, disable, reset): stop polling it. */
  onStop(v: Vring): void;
  /** Negotiated features changed. */
  onFeatures(features: bigint): void;
}

export interface BackendConfig {
  /** Virtio features offered, VHOST_USER_F_PROTOCOL_FEATURES included. */
  features: bigint;
  protocolFeatures: bigint;
  /** Number of vrings the device has (2 per queue pair, +1 for a control queue). */
  vrings: number;
  queuePairs: number;
  mtu: number;
  /** Largest ring the frontend may ask for (the port's queue-size option). */
  maxQueueSize: number;
  /** Strict mode: refuse memory whose file cannot be sealed against shrinking. */
  requireSealedMemory?: boolean;
}

const bit = (n: number): bigint => 1n << BigInt(n);

export class VhostUserBackend {
  features = 0n;
  protocolFeatures = 0n;
  owner = false;
  status = 0;
  mtu = 0;
  /** The frontend's memory table (empty until SET_MEM_TABLE). */
  readonly mem: GuestMemory;
  readonly vrings: Vring[];
  /** Messages refused, by reason, for `pier show`. */
  readonly errors = new Map<string, number>();

  constructor(private readonly arena: Arena, private readonly cfg: BackendConfig, private readonly hooks: BackendHooks) {
    this.mem = new GuestMemory(arena, { requireSealed: cfg.requireSealedMemory === true });
    this.vrings = Array.from({ length: cfg.vrings }, (_, i) => new Vring(i, arena, this.mem));
  }

  has(f: number): boolean {
    return (this.features & bit(f)) !== 0n;
  }

  hasProtocol(f: number): boolean {
    return (this.protocolFeatures & bit(f)) !== 0n;
  }

  /** Forget the connection: stop rings, close fds, unmap memory. Safe to call twice. */
  reset(): void {
    for (const v of this.vrings) {
      this.stop(v);
      closeAll([v.kickFd, v.callFd, v.errFd]);
      v.kickFd = v.callFd = v.errFd = -1;
      v.num = 0;
      v.descUva = v.usedUva = v.availUva = -1;
      v.base = 0;
      v.baseSet = false;
      v.enabled = false;
      v.reset();
    }
    this.mem.unmap();
    this.features = 0n;
    this.protocolFeatures = 0n;
    this.owner = false;
    this.status = 0;
  }

  /**
   * Handle one checked message. `fds` belong to the backend from here on: kept or closed, never
   * leaked. Returns the reply body for requests that have one, else undefined.
   */
  handle(req: number, payload: DataView, fds: number[]): Uint8Array | undefined {
    try {
      return this.dispatch(req, payload, fds);
    } catch (e) {
      closeAll(fds.splice(0));
      throw e;
    }
  }

  private dispatch(req: number, p: DataView, fds: number[]): Uint8Array | undefined {
    switch (req) {
      case P.Req.GET_FEATURES:
        return codec.u64(this.cfg.features);
      case P.Req.SET_FEATURES: {
        const f = codec.readU64(p);
        if ((f & ~this.cfg.features) !== 0n) throw new VhostError(`SET_FEATURES acks features pier did not offer (0x${(f & ~this.cfg.features).toString(16)})`);
        this.features = f;
        // Without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled (spec: "Ring states").
        this.hooks.onFeatures(f);
        return undefined;
      }
      case P.Req.SET_OWNER:
        this.owner = true;
        return undefined;
      case P.Req.RESET_OWNER:
        this.reset();
        return undefined;
      case P.Req.GET_PROTOCOL_FEATURES:
        return codec.u64(this.cfg.protocolFeatures);
      case P.Req.SET_PROTOCOL_FEATURES: {
        const f = codec.readU64(p);
        if ((f & ~this.cfg.protocolFeatures) !== 0n) throw new VhostError('SET_PROTOCOL_FEATURES acks protocol features pier did not offer');
        this.protocolFeatures = f;
        return undefined;
      }
      case P.Req.GET_QUEUE_NUM:
        return codec.u64(this.cfg.queuePairs);
      case P.Req.SET_MEM_TABLE:
        this.setMemTable(p, fds);
        return undefined;
      case P.Req.SET_VRING_NUM: {
        const { index, num } = codec.readVringState(p);
        const v = this.vring(index);
        const max = Math.min(MAX_QUEUE_SIZE, this.cfg.maxQueueSize);
        // A packed ring's size need not be a power of two (virtio 1.2, 2.8).
        if (this.has(VIRTIO_F_RING_PACKED) ? num === 0 || num > max : num === 0 || num > max || (num & (num - 1)) !== 0) {
          throw new VhostError(`vring ${v.index}: size ${num} is not ${this.has(VIRTIO_F_RING_PACKED) ? 'in 1' : 'a power of two up'} to ${max}`);
        }
        v.num = num;
        return undefined;
      }
      case P.Req.SET_VRING_ADDR: {
        const { index, desc, used, avail } = codec.readVringAddr(p);
        const v = this.vring(index);
        if (desc < 0 || used < 0 || avail < 0) throw new VhostError(`vring ${v.index}: ring address beyond 2^53`);
        v.descUva = desc;
        v.usedUva = used;
        v.availUva = avail;
        this.maybeStart(v);
        return undefined;
      }
      case P.Req.SET_VRING_BASE: {
        const { index, num: base } = codec.readVringState(p);
        const v = this.vring(index);
        // Split: a 16-bit index. Packed: avail index | wrap << 15, and the used half in bits 16-31
        // (checked against the ring size when the ring starts).
        if (base > 0xffff && !this.has(VIRTIO_F_RING_PACKED)) throw new VhostError(`vring ${v.index}: base ${base} is over 65535`);
        v.base = base;
        v.baseSet = true;
        return undefined;
      }
      case P.Req.GET_VRING_BASE: {
        const v = this.vring(codec.readVringState(p).index);
        const last = v.started ? v.queue.vringBase : v.base;
        this.stop(v);
        // The ring is stopped: its kick fd is no longer wanted (spec: GET_VRING_BASE).
        closeAll([v.kickFd]);
        v.kickFd = -1;
        return codec.vringState(v.index, last);
      }
      case P.Req.SET_VRING_KICK:
      case P.Req.SET_VRING_CALL:
      case P.Req.SET_VRING_ERR: {
        const { index, nofd } = codec.readVringFile(p);
        const v = this.vring(index);
        if (nofd && req === P.Req.SET_VRING_KICK) throw new VhostError(`vring ${v.index}: polling without a kick fd is not supported`);
        const fd = nofd ? -1 : fds.pop()!;
        // Only an eventfd, made non-blocking: pier writes call fds and reads kick fds from the
        // dataplane thread, and a pipe or socket there could block it.
        const bad = fd < 0 ? undefined : checkPeerEventFd(fd, `vring ${v.index} ${req === P.Req.SET_VRING_KICK ? 'kick' : req === P.Req.SET_VRING_CALL ? 'call' : 'error'}`);
        if (bad !== undefined) {
          libc.close(fd);
          throw new VhostError(bad);
        }
        if (req === P.Req.SET_VRING_KICK) {
          this.stop(v);
          closeAll([v.kickFd]);
          v.kickFd = fd;
          // Without protocol features a ring starts on its kick fd (spec: "Ring states").
          if (!this.has(P.F_PROTOCOL_FEATURES)) v.enabled = true;
          this.maybeStart(v);
        } else if (req === P.Req.SET_VRING_CALL) {
          closeAll([v.callFd]);
          v.callFd = fd;
        } else {
          closeAll([v.errFd]);
          v.errFd = fd;
        }
        return undefined;
      }
      case P.Req.SET_VRING_ENABLE: {
        const { index, num: on } = codec.readVringState(p);
        const v = this.vring(index);
        if (on > 1) throw new VhostError(`vring ${v.index}: SET_VRING_ENABLE ${on}`);
        v.enabled = on === 1;
        if (v.enabled) this.maybeStart(v);
        else this.stop(v);
        return undefined;
      }
      case P.Req.NET_SET_MTU: {
        const mtu = codec.safeNumber(codec.readU64(p));
        if (mtu < 68 || mtu > 65535) throw new VhostError(`NET_SET_MTU ${mtu} is out of range 68..65535`);
        this.mtu = mtu;
        return undefined;
      }
      case P.Req.SET_STATUS:
        this.status = Number(codec.readU64(p) & 0xffn);
        return undefined;
      case P.Req.GET_STATUS:
        return codec.u64(this.status);
      default:
        throw new VhostError(`${P.REQ_NAMES[req] ?? `request ${req}`} is not supported`);
    }
  }

  private vring(i: number): Vring {
    const v = this.vrings[i];
    if (!v) throw new VhostError(`vring index ${i} is out of range (pier has ${this.vrings.length})`);
    return v;
  }

  private setMemTable(p: DataView, fds: number[]): void {
    const regions: RegionSpec[] = codec.readMemTable(p).map((r, i) => ({ ...r, fd: fds[i]! }));
    if (regions.length !== fds.length || regions.length > MAX_REGIONS) throw new VhostError(`SET_MEM_TABLE: ${regions.length} regions but ${fds.length} fds`);
    // replace() checks every region against its file, seals it where it can, and maps it; all
    // or nothing, so a refused table leaves the running rings on the old one, untouched.
    try {
      this.mem.replace(regions);
    } catch (e) {
      throw new VhostError((e as Error).message);
    } finally {
      closeAll(fds.splice(0)); // mappings keep the memory; the fds are not needed any more
    }
    // Running rings keep their indexes but must be re-translated into the new mapping.
    const running = this.vrings.filter((v) => v.started);
    for (const v of running) {
      v.base = v.queue.vringBase;
      v.baseSet = true;
      this.stop(v);
    }
    for (const v of running) this.maybeStart(v);
  }


  private maybeStart(v: Vring): void {
    if (v.started || !v.enabled || v.kickFd < 0 || v.num === 0 || v.descUva < 0 || this.mem.n === 0) return;
    const mem = this.mem;
    const n = v.num;
    const packed = this.has(VIRTIO_F_RING_PACKED);
    // Packed: desc is the descriptor ring, avail the driver event suppression area, used the
    // device's (vhost-user keeps the split ring's names).
    const desc = mem.translateUva(v.descUva, packed ? packedRingSize(n) : descTableSize(n));
    const avail = mem.translateUva(v.availUva, packed ? EVENT_SUPPRESS_SIZE : availRingSize(n));
    const used = mem.translateUva(v.usedUva, packed ? EVENT_SUPPRESS_SIZE : usedRingSize(n));
    if (desc < 0 || avail < 0 || used < 0) throw new VhostError(`vring ${v.index}: ring addresses are outside the memory table`);
    const eventIdx = this.has(VIRTIO_F_EVENT_IDX);
    const indirect = this.has(VIRTIO_F_INDIRECT_DESC);
    let err: string | null;
    if (packed) {
      const q = v.packedQueue();
      err = q.configure({ size: n, descAddr: desc, driverAddr: avail, deviceAddr: used, eventIdx, indirect, vringBase: v.baseSet ? v.base : undefined });
      v.queue = q;
    } else {
      if (v.base > 0xffff) throw new VhostError(`vring ${v.index}: base ${v.base} is over 65535`);
      // A driver that kept its ring across a reconnect (DPDK virtio-user in server mode, after
      // pier's side of the session was made again: a port moved to another thread, a daemon
      // restart) sends base 0 while used.idx shows how far the last device got: the ring resumes
      // there (resumeAtUsed); starting at 0 would take every entry since as new and break the
      // ring. QEMU sends the used index itself as the base, so the two agree.
      err = v.split.configure({ size: n, descAddr: desc, availAddr: avail, usedAddr: used, eventIdx, indirect, lastAvailIdx: v.base, resumeAtUsed: true });
      if (err === null && v.split.vringBase !== v.base) v.resumedAtUsed++;
      v.queue = v.split;
    }
    if (typeof err === 'string') throw new VhostError(`vring ${v.index}: ${err}`);
    v.started = true;
    this.hooks.onStart(v);
  }

  private stop(v: Vring): void {
    if (!v.started) return;
    v.started = false;
    this.hooks.onStop(v);
  }

  /**
   * Count a refusal under `reason`. The reasons are bounded by what pier names (requests it
   * knows, "unknown request" for every other code), and past MAX_REASONS distinct ones the rest
   * go under "other": a frontend cannot grow the daemon by inventing reasons.
   */
  count(reason: string): void {
    const key = this.errors.has(reason) || this.errors.size < MAX_REASONS ? reason : 'other';
    this.errors.set(key, (this.errors.get(key) ?? 0) + 1);
  }
}

