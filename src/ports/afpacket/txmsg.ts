// Transmit without a tx ring: sendmmsg straight from pool buffers (docs/design/uplinks.md).
//
// Each frame is one message of two iovecs, the 10-byte virtio_net_hdr at [0, 10) of its pool
// buffer and the frame where the pool keeps it (12), so PACKET_VNET_HDR reads them as one
// datagram; the socket is bound to the device, so no address. The kernel copies the frame into an
// skb during the call, and the buffer is released after it. Against the TPACKET_V3 tx ring this
// saves pier's copy into the ring; on a veth the kernel copies a ring frame again anyway
// (skb_copy_ubufs when the skb crosses into the peer), so the ring's zero-copy send pays only on a
// device that transmits from the ring's pages.
import { C } from '../../dataplane/counters.ts';
import type { PacketPool } from '../../dataplane/pool.ts';
import { VNET_HDR } from '../../dataplane/pool.ts';
import { libc, packet } from '../../sys/index.ts';
import { EMSGSIZE, MmsgBatch, MSG_DONTWAIT, sendmmsg } from '../../sys/udp.ts';
import { PKT_VNET } from './ring.ts';

/** Messages per sendmmsg. */
export const TX_BATCH = 64;
/** ENOBUFS answers in one flush before the rest of it is dropped. */
const NOBUFS_MAX = 4;

export class MsgTx {
  /** sendmmsg calls, and those that failed (the last error). */
  calls = 0;
  errors = 0;
  lastErrno = 0;
  /** Frames the socket's buffer had no room for. */
  full = 0;
  private readonly batch = new MmsgBatch(TX_BATCH, TX_BATCH * 2);
  private readonly held = new Int32Array(TX_BATCH);
  private readonly lens = new Int32Array(TX_BATCH);
  private n = 0;

  constructor(private readonly fd: number) {}

  /** Queue frame h (len bytes) for the next flush(); flushes first when the batch is full. Owns h from here. */
  put(pool: PacketPool, h: number, len: number, c: Float64Array): void {
    if (this.n === TX_BATCH) this.flush(pool, c);
    const k = this.n++;
    const ha = pool.hdrAddr(h);
    const b = this.batch;
    b.setIov(2 * k, ha, PKT_VNET);
    b.setIov(2 * k + 1, ha + VNET_HDR, len);
    b.setMsg(k, 2 * k, 2, 0);
    this.held[k] = h;
    this.lens[k] = len;
  }

  /** Send what put() queued, count it, release the buffers. */
  flush(pool: PacketPool, c: Float64Array): void {
    const total = this.n;
    if (total === 0) return;
    let sent = 0;
    let nobufs = 0;
    while (sent < total) {
      this.calls++;
      const r = sendmmsg(this.fd, this.batch.msgAddr(sent), total - sent, MSG_DONTWAIT);
      if (r > 0) {
        for (let k = sent; k < sent + r; k++) {
          const h = this.held[k]!;
          c[C.tx_packets]!++;
          c[C.tx_bytes]! += this.lens[k]!;
          if (pool.bytes[pool.hdrOffset(h) + 1] !== 0) c[C.tx_gso_packets]!++;
        }
        sent += r;
        continue;
      }
      const e = libc.errno();
      if (e === libc.EINTR) continue;
      this.errors++;
      this.lastErrno = e;
      if (e === libc.EAGAIN) {
        // No room in the socket's buffer: the rest would fail alike.
        this.full += total - sent;
        c[C.tx_dropped_full]! += total - sent;
        break;
      }
      if (packet.linkDown(e)) {
        // The device is down or gone: so is the rest of the batch (the port goes down by epoll).
        c[C.tx_dropped_link_down]! += total - sent;
        break;
      }
      // This frame alone: refused (EMSGSIZE), or dropped by the device or its backlog (ENOBUFS).
      c[e === EMSGSIZE ? C.tx_dropped_too_big : C.tx_dropped_error]!++;
      sent++;
      if (e === packet.ENOBUFS && ++nobufs === NOBUFS_MAX) {
        // The device keeps dropping: the rest of the burst would only cost a call each.
        c[C.tx_dropped_error]! += total - sent;
        break;
      }
    }
    for (let k = 0; k < total; k++) pool.release(this.held[k]!);
    this.n = 0;
  }
}
