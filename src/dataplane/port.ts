// What the engine needs from a port, whatever its kind (tap, vhost-user, virtio-user, ...).
import type { CaptureBinding } from './capture.ts';
import type { LentJudge, PacketPool } from './pool.ts';
import type { PeerNews } from './protocol.ts';
import { VLAN_IDS, VLAN_NONE, type PortVlan } from './vlan.ts';
import { VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from './vnet.ts';

export const TXQ_SIZE = 256;
/** gsoTypes value of a port that takes every TCP super-frame. */
export const GSO_TCP = (1 << VIRTIO_NET_HDR_GSO_TCPV4) | (1 << VIRTIO_NET_HDR_GSO_TCPV6);

/** The engine services a port offers to ports whose fds come and go (sockets, kick eventfds). */
export interface PortContext {
  /** Poll `fd` for EPOLLIN; readiness calls port.receive(queue). */
  watch(port: Port, fd: number, queue: number): void;
  unwatch(fd: number): void;
  /** Poll port.receive(queue) again next turn without waiting (a burst hit its budget). */
  again(port: Port, queue: number): void;
  /** Tell the daemon's log about the port's peer (rare: sessions, refusals; never per packet). */
  news(port: Port, n: PeerNews): void;
}

/**
 * What checks a secured port's received burst (PortGuard): compacts it in place, returns the count
 * kept; and, as a LentJudge, judges the copies of frames the port lent unjudged.
 */
export interface IngressGuard extends LentJudge {
  /** The port is an 802.1Q trunk. */
  readonly trunk: boolean;
  /** The source MAC the bridge reads (its 16- and 32-bit little-endian words) is one the port may send from. */
  allowsSource(lo: number, hi: number): boolean;
  /** The same for a MAC as a 48-bit number. */
  allowsMac(mac: number): boolean;
  /** `judged`: bit i set when the frame in slot i already passed in copyJudged() (Port.rxJudged). */
  filter(pool: PacketPool, batch: Int32Array, n: number, counters: Float64Array, judged: number): number;
}

/**
 * What the bridge reads and writes of an output port for every packet it classifies: one final
 * class, whatever the port's kind. The bridge's loads from a port object see one map per port
 * class, and a node that mixes five kinds (taps, vhost-user, an uplink, a tunnel, the links
 * between threads) makes those loads megamorphic. bench/bridge-kinds.ts, a flood to seven ports
 * of five kinds: 174 ns a packet with the fields on the ports, 50 through this object
 * (docs/design/performance.md §6).
 */
export class PortOut {
  /**
   * Packets waiting to leave through the port this turn (the engine's flush sends them). Only the
   * bridge's forward() pushes here, and each push either lists the output (Bridge.touch) or is part
   * of a flood (Bridge.floodedAll): flushTouched() then reaches every output holding packets.
   */
  readonly txq = new Int32Array(TXQ_SIZE);
  txCount = 0;
  /** The port's split horizon, copied when it joins a bridge (a subclass sets it after the base constructor). */
  horizon = 0;
  /** In its bridge's `touched` list this burst (Bridge.touch). */
  listed = false;
  constructor(
    readonly port: Port,
    readonly index: number,
    /** The port's own VLAN membership array (the same object: applyVlan changes it in place). */
    readonly vlanMember: Uint8Array,
  ) {}
}

export abstract class Port implements PortVlan {
  /** The per-packet face of the port for the bridge (PortOut). */
  readonly out: PortOut;
  /** Scratch the engine uses when it must fix up offloads for this port. */
  readonly fixq = new Int32Array(TXQ_SIZE);
  /**
   * Set by receive(): some packet of the last burst may carry an offload request (a GSO type or
   * NEEDS_CSUM in its virtio-net header). A port that cannot tell leaves it true; a false lets
   * the engine hand the burst to every output port without looking at each header again.
   */
  rxOffloads = true;
  /**
   * Set by receive(): the burst holds packets lent from the peer's memory (PacketPool.lend),
   * which must be gone before the burst ends. The engine copies them into the pool for an
   * output port that keeps packets past transmit() or writes into them (!acceptsExternal).
   */
  rxExternal = false;
  /**
   * Set by receive() of a port that copies its frames out of a peer's memory: bit i when the
   * frame in slot i of the burst passed port security as it was copied (IngressGuard.copyJudged),
   * so filter() passes it without reading it again. A port that never judges leaves it 0.
   */
  rxJudged = 0;
  /**
   * Set by receive(): the burst holds lent frames of a secured port not judged yet
   * (PacketPool.defer), which only a copy out of the lender's memory may be judged on.
   */
  rxDeferred = false;
  /** transmit() only reads a packet and is done with it when it returns. */
  acceptsExternal = false;
  /**
   * transmit() judges each deferred packet (PacketPool.deferredJudge) on the copy it makes into
   * its own peer's buffer, and sends it only if it passes; other ports are handed a judged pool
   * copy instead (Engine.flush).
   */
  judgesLent = false;
  /** Bit per VIRTIO_NET_HDR_GSO_* type the port takes as is; others are segmented for it. */
  gsoTypes: number;
  /** Accepts frames whose checksum is still partial (VIRTIO_NET_HDR_F_NEEDS_CSUM). */
  acceptsCsum: boolean;
  /** When set (ms since epoch), the engine calls onTimer() once that time has passed. */
  timerAt = 0;
  /**
   * Busy-polling (vhost-user busy-poll=on): a queue that ran dry is polled again for a while
   * (PortContext.again) before it sleeps on its notifications.
   */
  busyPoll = false;
  /** Queues (0..31) waiting in the engine's list for the next turn (PortContext.again), one bit each. */
  againMask = 0;
  /** Queues (0..31) left unread for a while because they storm (Engine.pauseQueue), one bit each. */
  pausedMask = 0;
  /** The fd the port asked the engine to watch for each queue (0..31) through PortContext.watch, or -1. */
  readonly watched: number[] = [];
  /**
   * A queue that storms past storm-limit may be left unread for a while (a container's or VM's
   * port: only its own traffic waits). False on uplinks and tunnels, whose queue carries every
   * tenant's traffic from the wire: there the bucket alone cuts the storm.
   */
  stormPause = true;
  /**
   * Port security (docs/design/port-security.md): the check of what enters from a secured port
   * (null: unsecured), and the storm bucket (src/dataplane/security.ts; rate 0: no limit).
   */
  guard: IngressGuard | null = null;
  stormRate = 0;
  stormBurst = 0;
  stormTokens = 0;
  stormLast = 0;
  /**
   * VLANs (src/dataplane/vlan.ts, set by applyVlan between bursts): VLAN_NONE, VLAN_ACCESS or
   * VLAN_TRUNK; the VLAN untagged frames entering belong to; 1 per VID whose frames leave here.
   */
  vlanMode = VLAN_NONE;
  vlanUntagged = 0;
  readonly vlanMember = new Uint8Array(VLAN_IDS);
  /** Ring levels (LEVEL_* slots of src/dataplane/gauges.ts), set by the worker for kinds with rings. */
  levels: Float64Array | undefined = undefined;
  /**
   * Split horizon (docs/design/threads.md): the bridge never forwards a frame between two ports
   * whose horizons share a bit. 0 for every port but the links between dataplane threads.
   */
  readonly horizon: number = 0;
  /** Captures of what this port receives and sends (src/dataplane/capture.ts); empty while none runs. */
  captureIn: CaptureBinding[] = [];
  captureOut: CaptureBinding[] = [];

  constructor(
    /** Engine slot, also the epoll token's upper bits. */
    readonly index: number,
    readonly name: string,
    readonly bridge: number,
    readonly counters: Float64Array,
    readonly pool: PacketPool,
    acceptsTso: boolean,
    acceptsCsum: boolean,
  ) {
    this.gsoTypes = acceptsTso ? GSO_TCP : 0;
    this.acceptsCsum = acceptsCsum;
    this.vlanMember[0] = 1;
    this.out = new PortOut(this, index, this.vlanMember);
  }

  /** File descriptors polled from the start; the i-th one is reported as queue i. */
  abstract readonly fds: readonly number[];

  /** Receive up to `max` packets from `queue` into out[0..n); returns n. Never throws. */
  abstract receive(queue: number, out: Int32Array, max: number): number;

  /** Send q[0..n) and release each handle. Never throws; failures are counted. */
  abstract transmit(q: Int32Array, n: number): void;

  /** Called with the engine's services when the port is added. */
  attach(_ctx: PortContext): void {}

  /**
   * EPOLLERR/EPOLLHUP on one of the port's fds. Return true if the port dealt with it (a peer
   * went away and the port waits for the next one); false means the port is dead.
   */
  onHangup(_queue: number): boolean {
    return false;
  }

  onTimer(): void {}

  /** Write the rings' levels into `levels` (the engine calls it once a second when `levels` is set). */
  sampleLevels(): void {}

  /** Called after a burst this port received was forwarded and every output port flushed. */
  afterBurst(_queue: number): void {}

  /**
   * The SIGBUS guard caught a fault at arena offset `arenaOffset` (the file behind a peer's
   * mapping shrank: the page now reads as zeros). A port whose peer memory holds that offset
   * resets itself (drops the peer, unmaps its memory) and returns true; -1 means the address was
   * lost (more faults than the guard records at once): reset if your peer's memory is unsealed.
   * Called by the engine after the burst in flight was dropped and its handles released.
   */
  memoryFault(_arenaOffset: number): boolean {
    return false;
  }

  /** What `pier show` says about the port beyond its counters (negotiated state, peer, ...). */
  describe(): unknown {
    return undefined;
  }

  /** Forget the port and release what the dataplane holds for it. */
  abstract close(): void;
}
