// A secured port's lent frame (PacketPool.defer) copied out of its sender's memory: the one place
// such a frame becomes a pool packet. The sender can rewrite its buffer until the copy is made, so
// everything pier trusts about the frame is decided on the copy, in this order: its virtio-net
// header checked and cleaned as at ingress (checkHeaders() does that for every other frame and
// leaves deferred ones alone: what it would read is not what goes on), then port security's
// verdict. The copy stays with the lent handle, so a flood's outputs share one copy, one verdict
// and one count (docs/design/port-security.md, "Where it runs").
import { C } from './counters.ts';
import { headerFits, INGRESS_GSO } from './headers.ts';
import { type LentJudge, type PacketPool, REFUSED_COPY, VNET_HDR } from './pool.ts';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM } from './vnet.ts';

/**
 * Deferred packet h's judged pool copy, with a reference for the caller (h stays the caller's
 * too); REFUSED_COPY when its header or port security refused it (counted once, on the sending
 * port); -1 when the pool had no buffer (the caller counts that).
 */
export function judgedCopy(pool: PacketPool, h: number, judge: LentJudge): number {
  let m = pool.settledCopy(h);
  if (m === REFUSED_COPY) return m;
  if (m >= 0) {
    pool.refs[m]!++;
    return m;
  }
  m = pool.alloc();
  if (m < 0) return -1;
  const ho = pool.hdrOffset(m);
  const flen = pool.len[h]!;
  pool.copy(ho, pool.hdrOffset(h), VNET_HDR + flen);
  pool.len[m] = flen;
  const b = pool.bytes;
  const flags = b[ho]!;
  if ((flags | b[ho + 1]!) !== 0) {
    if (!headerFits(b, ho, flen, INGRESS_GSO, true)) {
      if (judge.counters !== null) judge.counters[C.rx_dropped_bad_offload]!++;
      return refuse(pool, h, m);
    }
    b[ho] = flags & VIRTIO_NET_HDR_F_NEEDS_CSUM; // no other flag is a driver's to set
  }
  if (!judge.judge(pool, m)) return refuse(pool, h, m);
  pool.settle(h, m);
  return m;
}

function refuse(pool: PacketPool, h: number, m: number): number {
  pool.release(m);
  pool.settle(h, REFUSED_COPY);
  return REFUSED_COPY;
}
