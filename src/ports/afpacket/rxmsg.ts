// Receive without an rx ring: recvmmsg straight into pool buffers (docs/design/uplinks.md).
//
// Against TPACKET_V3 this saves a copy (kernel -> ring -> pool becomes kernel -> pool) and the
// block-retire wait: epoll wakes pier when the first frame is queued, not when a 256 KiB block
// fills or its 1 ms timer runs out, which is what a TCP flow's ACKs waited for.
//
// Each message is one iovec from 2 bytes into the pool buffer: the 10-byte virtio_net_hdr that
// PACKET_VNET_HDR puts first lands at [2, 12) and the frame where the pool keeps frames (12); the
// header is then moved to [0, 10) and num_buffers zeroed. The kernel's own report of each frame,
// a tpacket_auxdata control message (PACKET_AUXDATA), says whether it took an 802.1Q tag out of
// the frame; pier puts it back (4 bytes kept free at the end of the iovec for it). Nothing the
// kernel wrote is trusted past what recvmmsg returned: lengths, MSG_TRUNC and the control
// message's size and type are checked, and a frame that fails is counted and dropped.
import { C } from '../../dataplane/counters.ts';
import type { PacketPool } from '../../dataplane/pool.ts';
import { BUF_SIZE, VNET_HDR } from '../../dataplane/pool.ts';
import { libc } from '../../sys/index.ts';
import {
  AUX_STATUS, AUX_VLAN_TCI, AUX_VLAN_TPID, CMSG_SPACE_AUXDATA, PACKET_AUXDATA, PACKET_OUTGOING, SIZEOF_TPACKET_AUXDATA, SOL_PACKET,
  TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID,
} from '../../sys/packet.ts';
import { MmsgBatch, MSG_DONTWAIT, MSG_TRUNC, recvmmsg } from '../../sys/udp.ts';
import { accountRx, PKT_VNET, RxStats, shiftHeaderForTag } from './ring.ts';

/** Messages per recvmmsg. */
export const RX_BATCH = 32;
const ETH_HLEN = 14;
const VLAN_HLEN = 4;
const CMSG_HDR = 16;
/** Largest frame a pool buffer holds, less the room kept for a tag put back. */
const FRAME_MAX = BUF_SIZE - VNET_HDR - VLAN_HLEN;
/** sockaddr_ll.sll_pkttype within the name slot. */
const SLL_PKTTYPE = 10;
const SIZEOF_SOCKADDR_LL = 20;
/** A frame taken and dropped when the pool is empty (left queued, it would wake epoll forever). */
const dropBuf = new Uint8Array(BUF_SIZE);

export class MsgRx {
  readonly stats = new RxStats();
  /** Set by receive(): some frame of the burst asked for an offload (GSO or a partial checksum). */
  sawOffload = false;
  private readonly batch = new MmsgBatch(RX_BATCH, RX_BATCH, CMSG_SPACE_AUXDATA);
  private readonly handles = new Int32Array(RX_BATCH);
  /** The last recvmmsg filled its batch: more may be queued. */
  private full = false;

  constructor(private readonly fd: number,
    /** Skip frames whose sll_pkttype is PACKET_OUTGOING (the kernel lacks PACKET_IGNORE_OUTGOING). */
    private readonly filterOutgoing: boolean) {}

  /** Nothing to resume: the socket's queue is the position. */
  get position(): number {
    return 0;
  }

  /** Whether more frames may be waiting without a wakeup. */
  ready(): boolean {
    return this.full;
  }

  /** Receive up to `max` frames into pool buffers (handles in out[0..n)); returns n. Never throws. */
  receive(pool: PacketPool, out: Int32Array, max: number, c: Float64Array): number {
    const batch = this.batch;
    const hs = this.handles;
    const want = max < RX_BATCH ? max : RX_BATCH;
    const namelen = this.filterOutgoing ? SIZEOF_SOCKADDR_LL : 0;
    let k = 0;
    while (k < want) {
      const h = pool.alloc();
      if (h < 0) break;
      hs[k] = h;
      batch.setIov(k, pool.hdrAddr(h) + VNET_HDR - PKT_VNET, PKT_VNET + FRAME_MAX);
      batch.setMsg(k, k, 1, namelen);
      batch.offerControl(k);
      k++;
    }
    this.full = false;
    this.sawOffload = false;
    if (k === 0) {
      if (want > 0 && libc.recvBuf(this.fd, dropBuf, dropBuf.length, MSG_DONTWAIT) >= 0) c[C.rx_dropped_no_buffer]!++;
      return 0;
    }
    const r = recvmmsg(this.fd, batch.addr, k, MSG_DONTWAIT, 0);
    if (r < 0) {
      for (let i = 0; i < k; i++) pool.release(hs[i]!);
      const e = libc.errno();
      if (e !== libc.EAGAIN && e !== libc.EINTR) c[C.rx_errors]!++;
      return 0;
    }
    for (let i = r; i < k; i++) pool.release(hs[i]!);
    this.full = r === k;
    const pb = pool.bytes;
    const bb = batch.bytes;
    const bv = batch.dv;
    const st = this.stats;
    let n = 0;
    let offload = false;
    for (let i = 0; i < r; i++) {
      const h = hs[i]!;
      const got = batch.msgLen(i);
      if ((batch.msgFlags(i) & MSG_TRUNC) !== 0 || got < PKT_VNET + ETH_HLEN) {
        if ((batch.msgFlags(i) & MSG_TRUNC) !== 0) st.truncated++;
        c[C.rx_dropped_malformed]!++;
        pool.release(h);
        continue;
      }
      if (namelen !== 0 && bb[batch.nameOffset(i) + SLL_PKTTYPE] === PACKET_OUTGOING) {
        st.outgoing++;
        pool.release(h);
        continue;
      }
      const ho = pool.hdrOffset(h);
      // virtio_net_hdr from [2, 12) to [0, 10), then num_buffers = 0.
      pb.copyWithin(ho, ho + VNET_HDR - PKT_VNET, ho + VNET_HDR);
      pb[ho + 10] = 0;
      pb[ho + 11] = 0;
      let flen = got - PKT_VNET;
      const co = batch.controlOffset(i);
      if (batch.controlLen(i) >= CMSG_HDR + SIZEOF_TPACKET_AUXDATA && bv.getInt32(co + 8, true) === SOL_PACKET && bv.getInt32(co + 12, true) === PACKET_AUXDATA) {
        const status = bv.getUint32(co + CMSG_HDR + AUX_STATUS, true);
        if ((status & TP_STATUS_VLAN_VALID) !== 0) {
          // The kernel took the 802.1Q tag out of the frame: put it back after the MAC addresses.
          st.tagsRestored++;
          const fo = ho + VNET_HDR;
          const tpid = (status & TP_STATUS_VLAN_TPID_VALID) !== 0 ? bv.getUint16(co + CMSG_HDR + AUX_VLAN_TPID, true) : 0x8100;
          const tci = bv.getUint16(co + CMSG_HDR + AUX_VLAN_TCI, true);
          pb.copyWithin(fo + 16, fo + 12, fo + flen);
          pb[fo + 12] = tpid >> 8;
          pb[fo + 13] = tpid & 0xff;
          pb[fo + 14] = tci >> 8;
          pb[fo + 15] = tci & 0xff;
          flen += VLAN_HLEN;
          shiftHeaderForTag(pool, ho);
        }
      }
      if (accountRx(pool, h, flen, c)) offload = true;
      out[n++] = h;
    }
    this.sawOffload = offload;
    return n;
  }
}
