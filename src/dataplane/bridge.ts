// The L2 learning switch for one bridge (design after Snabb's apps/bridge/learning.lua):
// a received batch is classified once (learn the source, look up the destination) into
// per-output-port queues or the flood list, then each queue is flushed by the engine.
// A bridge one of whose members has a VLAN (tag= or trunks=) classifies in forwardVlan instead:
// the same loop with the tag read and popped, (VLAN, MAC) learning and lookups, and flooding
// confined to the VLAN's members. A bridge without VLANs never enters it.
import { C } from './counters.ts';
import { Fdb, LEARN_LIMIT, LEARN_STATIC, LEARNED, slotsFor } from './fdb.ts';

/** Addresses a bridge learns by default (pier daemon --fdb-size). */
export const DEFAULT_FDB_SIZE = 8192;
import type { PacketPool } from './pool.ts';
import { type Port, type PortOut, TXQ_SIZE } from './port.ts';
import { stormAllows } from './security.ts';
import { popTag, TPID_8021AD, TPID_8021Q, TPID_QINQ_OLD, VLAN_HLEN, VLAN_NONE, VLAN_TRUNK } from './vlan.ts';

export class Bridge {
  readonly fdb: Fdb;
  readonly members: Port[] = [];
  /** The members' PortOut, in the same order: what the flood loop reads per packet. */
  private outs: PortOut[] = [];
  /** A member's PortOut by port index: what a unicast lookup's result is read through. */
  private readonly outByIndex: Array<PortOut | undefined> = [];
  /**
   * The outputs forward() queued packets on since the engine last flushed, each once
   * (touchedCount of them): the engine flushes these, not every member, so a burst costs the
   * ports it reaches, not the size of the bridge.
   */
  readonly touched: PortOut[] = [];
  touchedCount = 0;
  /** A flood since the last flushTouched(): every member may hold packets (the flood loop does not list them, to stay as short as it was). */
  private floodedAll = false;
  now = 0;
  /** Shared with the main thread (BRIDGE_GAUGE_* slots, gauges.ts): the engine writes the FDB's size at housekeeping. */
  gauges: Float64Array | undefined;
  /** Some member has tag= or trunks=: forward() classifies by VLAN. */
  vlanAware = false;

  constructor(readonly id: number, readonly name: string, private readonly pool: PacketPool, agingSeconds = 300,
    /** The VLAN of each packet handle between forward() and the engine's push on a trunk (shared by the engine's bridges). */
    readonly vlanOf: Uint16Array = new Uint16Array(pool.len.length),
    /** Addresses the FDB holds (pier daemon --fdb-size); its slots are a third more. */
    fdbSize = DEFAULT_FDB_SIZE) {
    this.fdb = new Fdb(slotsFor(fdbSize), agingSeconds, fdbSize);
  }

  addPort(p: Port): void {
    this.members.push(p);
    p.out.horizon = p.horizon;
    this.outs = this.members.map((m) => m.out);
    this.outByIndex[p.index] = p.out;
    this.vlansChanged();
  }

  removePort(p: Port): void {
    const i = this.members.indexOf(p);
    if (i >= 0) this.members.splice(i, 1);
    this.outs = this.members.map((m) => m.out);
    if (this.outByIndex[p.index] === p.out) this.outByIndex[p.index] = undefined;
    this.touched.length = 0; // between bursts (touchedCount is 0): no stale entry keeps the port alive
    this.fdb.forgetPort(p.index);
    this.vlansChanged();
  }

  /** Flush every output queued on since the last call, once each (the engine's end of a burst). */
  flushTouched(flush: (p: Port) => void): void {
    const t = this.floodedAll ? this.outs : this.touched;
    const n = this.floodedAll ? t.length : this.touchedCount;
    for (let i = 0; i < this.touchedCount; i++) this.touched[i]!.listed = false;
    for (let i = 0; i < n; i++) {
      const o = t[i]!;
      if (o.txCount > 0) flush(o.port);
    }
    this.touchedCount = 0;
    this.floodedAll = false;
  }

  private touch(o: PortOut): void {
    o.listed = true;
    this.touched[this.touchedCount++] = o;
  }

  /** A member joined, left, or had its VLANs changed (applyVlan): recompute vlanAware. */
  vlansChanged(): void {
    this.vlanAware = this.members.some((m) => m.vlanMode !== VLAN_NONE);
  }

  /**
   * Classify batch[0..n) received on `inPort` into the members' tx queues (PortOut.txq). A queue
   * that fills is flushed through `flush` first. Per packet only PortOut objects and locals are
   * read: `inPort`'s fields are taken once per burst (one map per port class, docs/design/performance.md §6).
   */
  forward(inPort: Port, batch: Int32Array, n: number, flush: (p: Port) => void): void {
    if (this.vlanAware) {
      this.forwardVlan(inPort, batch, n, flush);
      return;
    }
    const pool = this.pool;
    const b = pool.bytes;
    const now = this.now;
    const outs = this.outs;
    const outByIndex = this.outByIndex;
    const inIdx = inPort.index;
    const counters = inPort.counters;
    const storm = inPort.stormRate !== 0;
    const guard = inPort.guard;
    let flooded = false;
    // A frame from a link between threads never leaves through another link (split horizon).
    const horizon = inPort.horizon;
    // A burst mostly comes from one station to one destination: learn and look up once per
    // change of address, compared as the words the frame holds (a 4-byte aligned frame, as
    // every pool buffer and the buffers of DPDK and Linux drivers are, reads them whole).
    // Learning drops the cached destination (it may have moved). -1 matches no 16-bit word.
    const u16 = pool.arena.u16;
    const i32 = pool.arena.i32;
    let srcLo = -1;
    let srcHi = 0;
    let dstLo = -1;
    let dstHi = 0;
    let lastOut = -1;
    for (let i = 0; i < n; i++) {
      const h = batch[i]!;
      const fo = pool.frameOffset(h);
      // Destination bytes 0..3 and 4, 5; source bytes 6, 7 and 8..11, as little-endian words.
      let d4: number, d2: number, s2: number, s4: number;
      if ((fo & 3) === 0) {
        d4 = i32[fo >>> 2]!;
        d2 = u16[(fo + 4) >>> 1]!;
        s2 = u16[(fo + 6) >>> 1]!;
        s4 = i32[(fo + 8) >>> 2]!;
      } else {
        d4 = b[fo]! | (b[fo + 1]! << 8) | (b[fo + 2]! << 16) | (b[fo + 3]! << 24);
        d2 = b[fo + 4]! | (b[fo + 5]! << 8);
        s2 = b[fo + 6]! | (b[fo + 7]! << 8);
        s4 = b[fo + 8]! | (b[fo + 9]! << 8) | (b[fo + 10]! << 16) | (b[fo + 11]! << 24);
      }
      // source MAC: learn unless it is a group address
      if ((s2 & 1) === 0 && (s2 !== srcLo || s4 !== srcHi)) {
        // A secured port's deferred frames are judged only as they leave: learn no MAC from it
        // that it may not send from (the port's peer could have rewritten it since the pop).
        const r = guard !== null && !guard.allowsSource(s2, s4) ? LEARN_FORGED : this.fdb.learn(macOfWords(s2, s4), inIdx, now, 0);
        // Not learned (another port's static MAC, the port at its limit, a full table): the
        // frame still goes; each one is counted, so the source is not cached.
        srcLo = r === LEARNED ? s2 : -1;
        srcHi = s4;
        dstLo = -1;
        if (r !== LEARNED) refused(inPort, r);
      }
      let out = -1;
      if ((d4 & 1) === 0) {
        if (d2 !== dstLo || d4 !== dstHi) {
          lastOut = this.fdb.lookup(macOfWords(d4 & 0xffff, (d4 >>> 16) | (d2 << 16)), now, 0);
          dstLo = d2;
          dstHi = d4;
        }
        out = lastOut;
      }
      if (out >= 0) {
        const o = outByIndex[out];
        if (out === inIdx || o === undefined || (o.horizon & horizon) !== 0) {
          counters[C.dropped_hairpin]!++;
          pool.release(h);
          continue;
        }
        if (o.txCount === TXQ_SIZE) flush(o.port);
        else if (o.txCount === 0 && !o.listed) this.touch(o);
        o.txq[o.txCount++] = h;
        continue;
      }
      // flood: broadcast, multicast, unknown unicast; never back out of the port it came in on,
      // and no more of them per second than the port's storm limit
      if (storm && !stormAllows(inPort, now)) {
        counters[C.rx_dropped_storm]!++;
        pool.release(h);
        continue;
      }
      let copies = 0;
      for (let m = 0; m < outs.length; m++) {
        const o = outs[m]!;
        if (o.index === inIdx || (o.horizon & horizon) !== 0) continue;
        if (o.txCount === TXQ_SIZE) flush(o.port);
        o.txq[o.txCount++] = h;
        copies++;
      }
      counters[C.flooded]!++;
      flooded = true;
      if (copies === 0) pool.release(h);
      else pool.refs[h] = copies;
    }
    if (flooded) this.floodedAll = true;
  }

  /**
   * forward() for a bridge with VLANs. Each frame's VLAN: untagged, the port's (an access port's
   * tag, else 0); tagged 802.1Q on a trunk, the VID if the trunk carries it (the tag is popped).
   * Anything else is dropped and counted (rx_dropped_vlan). Learning and lookups are per
   * (VLAN, MAC); a flood reaches only the VLAN's members. vlanOf[h] keeps the VLAN for the push
   * on the way out of a trunk (Engine.flush).
   */
  private forwardVlan(inPort: Port, batch: Int32Array, n: number, flush: (p: Port) => void): void {
    const pool = this.pool;
    const b = pool.bytes;
    const now = this.now;
    const outs = this.outs;
    const outByIndex = this.outByIndex;
    const inIdx = inPort.index;
    const counters = inPort.counters;
    const storm = inPort.stormRate !== 0;
    let flooded = false;
    // A frame from a link between threads never leaves through another link (split horizon).
    const guard = inPort.guard;
    const horizon = inPort.horizon;
    const vlanOf = this.vlanOf;
    const trunk = inPort.vlanMode === VLAN_TRUNK;
    const untagged = inPort.vlanUntagged;
    const member = inPort.vlanMember;
    let lastVid = -1;
    let lastSrc = -1;
    let lastDst = -1;
    let lastOut = -1;
    for (let i = 0; i < n; i++) {
      let h = batch[i]!;
      let fo = pool.frameOffset(h);
      const et = (b[fo + 12]! << 8) | b[fo + 13]!;
      let vid = untagged;
      if (et === TPID_8021Q || et === TPID_8021AD || et === TPID_QINQ_OLD) {
        if (!trunk || et !== TPID_8021Q || pool.len[h]! < 14 + VLAN_HLEN || member[vid = ((b[fo + 14]! << 8) | b[fo + 15]!) & 0xfff] !== 1) {
          counters[C.rx_dropped_vlan]!++;
          pool.release(h);
          continue;
        }
        h = popTag(pool, h);
        if (h < 0) {
          counters[C.rx_dropped_no_buffer]!++;
          continue;
        }
        fo = pool.frameOffset(h);
        // A second tag under the first (double tagging: VID 0 outside, another VLAN inside) would
        // leave a trunk still tagged, in a VLAN that trunk never let in.
        const inner = (b[fo + 12]! << 8) | b[fo + 13]!;
        if (inner === TPID_8021Q || inner === TPID_8021AD || inner === TPID_QINQ_OLD) {
          counters[C.rx_dropped_vlan]!++;
          pool.release(h);
          continue;
        }
      }
      vlanOf[h] = vid;
      if (vid !== lastVid) {
        lastVid = vid;
        lastSrc = -1;
        lastDst = -1;
      }
      const s0 = b[fo + 6]!;
      if ((s0 & 1) === 0) {
        const src = (s0 * 0x10000 + (b[fo + 7]! << 8 | b[fo + 8]!)) * 0x1000000 + ((b[fo + 9]! << 16) | (b[fo + 10]! << 8) | b[fo + 11]!);
        if (src !== lastSrc) {
          const r = guard !== null && !guard.allowsMac(src) ? LEARN_FORGED : this.fdb.learn(src, inIdx, now, vid);
          lastSrc = r === LEARNED ? src : -1;
          lastDst = -1;
          if (r !== LEARNED) refused(inPort, r);
        }
      }
      const d0 = b[fo]!;
      let out = -1;
      if ((d0 & 1) === 0) {
        const dst = (d0 * 0x10000 + (b[fo + 1]! << 8 | b[fo + 2]!)) * 0x1000000 + ((b[fo + 3]! << 16) | (b[fo + 4]! << 8) | b[fo + 5]!);
        if (dst !== lastDst) {
          lastOut = this.fdb.lookup(dst, now, vid);
          lastDst = dst;
        }
        out = lastOut;
      }
      if (out >= 0) {
        const o = outByIndex[out];
        if (out === inIdx || o === undefined || o.vlanMember[vid] !== 1 || (o.horizon & horizon) !== 0) {
          counters[C.dropped_hairpin]!++;
          pool.release(h);
          continue;
        }
        if (o.txCount === TXQ_SIZE) flush(o.port);
        else if (o.txCount === 0 && !o.listed) this.touch(o);
        o.txq[o.txCount++] = h;
        continue;
      }
      if (storm && !stormAllows(inPort, now)) {
        counters[C.rx_dropped_storm]!++;
        pool.release(h);
        continue;
      }
      let copies = 0;
      for (let m = 0; m < outs.length; m++) {
        const o = outs[m]!;
        if (o.index === inIdx || o.vlanMember[vid] !== 1 || (o.horizon & horizon) !== 0) continue;
        if (o.txCount === TXQ_SIZE) flush(o.port);
        o.txq[o.txCount++] = h;
        copies++;
      }
      counters[C.flooded]!++;
      flooded = true;
      if (copies === 0) pool.release(h);
      else pool.refs[h] = copies;
    }
    if (flooded) this.floodedAll = true;
  }
}

/** Not learned: a MAC a secured port may not send from (its frame is refused as it leaves, and counted there). */
const LEARN_FORGED = -1;

/** Count a source the FDB would not learn from `p` (LEARN_FULL is counted by the table itself). */
function refused(p: Port, r: number): void {
  if (r === LEARN_STATIC) p.counters[C.fdb_move_refused]!++;
  else if (r === LEARN_LIMIT) p.counters[C.fdb_limit]!++;
}

/**
 * A MAC as the 48-bit number the FDB keys on, from the little-endian 16-bit word of its first two
 * bytes and 32-bit word of the last four.
 */
function macOfWords(lo: number, hi: number): number {
  return ((lo & 0xff) * 0x10000 + ((lo >>> 8) << 8 | (hi & 0xff))) * 0x1000000 + (((hi >>> 8) & 0xff) << 16 | ((hi >>> 16) & 0xff) << 8 | (hi >>> 24));
}
