// The dataplane half of an afpacket port: frames received in bursts when epoll says the socket is
// readable (recvmmsg into pool buffers, rxmsg.ts; or the TPACKET_V3 rx ring when a block was
// retired, ring.ts), and sent per burst: sendmmsg from pool buffers (txmsg.ts), or the tx ring
// filled and kicked once with sendto(). Copies: kernel -> pool on receive (kernel -> ring -> pool
// with the rx ring); pool -> skb by the kernel on transmit (pool -> ring by pier with the tx ring,
// the kernel then sending from the ring's pages). A full ring or socket buffer, a frame too large,
// a failed send are counted, never waited for.
import { C } from '../../dataplane/counters.ts';
import type { PacketPool } from '../../dataplane/pool.ts';
import { Port, type PortContext } from '../../dataplane/port.ts';
import { libc, packet, packetKick } from '../../sys/index.ts';
import type { DataplaneHalf } from '../kind.ts';
import type { AfPacketSpec } from './options.ts';
import { POS_RX_BLOCK, POS_TX_HEAD, RxRing, TxRing } from './ring.ts';
import { MsgRx } from './rxmsg.ts';
import { MsgTx } from './txmsg.ts';
import type { AfPacketView } from './view.ts';


export class AfPacketPort extends Port {
  readonly fds: readonly number[];
  readonly rx: RxRing | MsgRx;
  /** One of the two is set, by spec.tx: the tx ring, or sendmmsg. */
  readonly tx: TxRing | undefined;
  readonly txMsg: MsgTx | undefined;
  private ctx: PortContext | undefined;

  constructor(index: number, name: string, bridge: number, counters: Float64Array, pool: PacketPool, readonly spec: AfPacketSpec) {
    super(index, name, bridge, counters, pool, spec.offloads, spec.offloads);
    this.acceptsExternal = true; // transmit() copies into the ring and is done
    this.stormPause = false; // an uplink's queue carries every tenant's traffic
    this.fds = [spec.fd];
    const mem = libc.view(spec.addr, spec.length);
    const rxLen = spec.rx ? spec.rx.blockSize * spec.rx.blockNr : 0;
    this.rx = spec.rx
      ? new RxRing(mem, spec.addr, 0, spec.rx.blockSize, spec.rx.blockNr, spec.filterOutgoing, spec.positions[POS_RX_BLOCK])
      : new MsgRx(spec.fd, spec.filterOutgoing);
    this.tx = spec.tx ? new TxRing(mem, spec.addr, rxLen, spec.tx.blockSize, spec.tx.blockNr, spec.tx.frameSize, spec.positions[POS_TX_HEAD]) : undefined;
    this.txMsg = spec.tx ? undefined : new MsgTx(spec.fd);
  }

  override attach(ctx: PortContext): void {
    this.ctx = ctx;
  }

  receive(_queue: number, out: Int32Array, max: number): number {
    const n = this.rx.receive(this.pool, out, max, this.counters);
    this.rxOffloads = this.rx.sawOffload;
    // The burst stopped at its budget with frames left: come back next turn (epoll only says a
    // block was retired, not how many frames are left in the one being walked).
    if (n === max && this.rx.ready()) this.ctx?.again(this, 0);
    return n;
  }

  transmit(q: Int32Array, n: number): void {
    const pool = this.pool;
    const c = this.counters;
    const tx = this.tx;
    if (tx === undefined) {
      const txm = this.txMsg!;
      for (let i = 0; i < n; i++) {
        const h = q[i]!;
        txm.put(pool, h, pool.len[h]!, c);
      }
      txm.flush(pool, c);
      return;
    }
    for (let i = 0; i < n; i++) {
      const h = q[i]!;
      const len = pool.len[h]!;
      if (len > tx.frameMax) {
        tx.stats.tooBig++;
        c[C.tx_dropped_too_big]!++;
      } else if (tx.available() || (tx.pending > 0 && this.kick() && tx.available())) {
        // (A full ring is kicked once: the kernel may free frames while it sends.)
        tx.put(pool, h, len);
        c[C.tx_packets]!++;
        c[C.tx_bytes]! += len;
        if (pool.bytes[pool.hdrOffset(h) + 1] !== 0) c[C.tx_gso_packets]!++;
      } else {
        tx.stats.full++;
        c[C.tx_dropped_full]!++;
      }
      pool.release(h);
    }
    if (tx.pending > 0) this.kick();
  }

  /**
   * sendto() once for every frame marked since the last kick; false when it failed. The kernel
   * stops at the frame it could not send (ENOBUFS: the device dropped it) or sends nothing
   * (ENETDOWN); frames it did not reach stay marked and go with the next kick, so a failure
   * counts one packet.
   */
  private kick(): boolean {
    const tx = this.tx!;
    tx.pending = 0;
    tx.stats.kicks++;
    const r = packetKick(this.fds[0]!);
    if (r >= 0) return true;
    const err = -r;
    if (err === libc.EAGAIN || err === libc.EINTR) return true; // the frames stay marked; the next kick sends them
    tx.stats.kickErrors++;
    tx.stats.lastKickErrno = err;
    this.counters[packet.linkDown(err) ? C.tx_dropped_link_down : C.tx_dropped_error]!++;
    return false;
  }

  // An error on the socket (ENETDOWN: the device went down or away) takes the port down: the
  // daemon's 5 s retry opens a new socket once the device is back and up.
  override onHangup(_queue: number): boolean {
    return false;
  }

  override describe(): AfPacketView {
    const s = this.spec;
    const r = this.rx.stats;
    const t = this.tx?.stats;
    const m = this.txMsg;
    return {
      dev: s.dev, ifindex: s.ifindex, offloads: s.offloads, ignoresOutgoing: !s.filterOutgoing,
      rx: { mode: s.rx ? 'ring' : 'recvmmsg', blocks: s.rx?.blockNr ?? 0, blockSize: s.rx?.blockSize ?? 0, retired: r.blocks, badBlocks: r.badBlocks, badFrames: r.badFrames, truncated: r.truncated, outgoing: r.outgoing, resyncs: r.resyncs, tagsRestored: r.tagsRestored },
      tx: t && s.tx
        ? {
          mode: 'ring', frames: this.tx.frames, frameSize: s.tx.frameSize, frameMax: this.tx.frameMax, kicks: t.kicks, kickErrors: t.kickErrors,
          lastKickError: t.lastKickErrno ? libc.errnoName(t.lastKickErrno) : undefined, tooBig: t.tooBig, full: t.full,
        }
        : {
          mode: 'sendmmsg', frames: 0, frameSize: 0, frameMax: 0, kicks: m!.calls, kickErrors: m!.errors,
          lastKickError: m!.lastErrno ? libc.errnoName(m!.lastErrno) : undefined, tooBig: 0, full: m!.full,
        },
    };
  }

  close(): void {
    // A dataplane half rebuilt over the same socket goes on from here.
    this.spec.positions[POS_RX_BLOCK] = this.rx.position;
    if (this.tx) this.spec.positions[POS_TX_HEAD] = this.tx.position;
  }
}

export const afpacketDataplane: DataplaneHalf<AfPacketSpec> = {
  create: (b, spec, pool) => new AfPacketPort(b.index, b.name, b.bridge, b.counters, pool, spec),
};
