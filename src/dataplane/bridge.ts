// The L2 learning switch for one bridge (design after Snabb's apps/bridge/learning.lua):
// a received batch is classified once (learn the source, look up the destination) into
// per-output-port queues or the flood list, then each queue is flushed by the engine.
import { C } from './counters.ts';
import { Fdb } from './fdb.ts';
import type { PacketPool } from './pool.ts';
import { Port, TXQ_SIZE } from './port.ts';

export class Bridge {
  readonly fdb: Fdb;
  readonly members: Port[] = [];
  now = 0;

  constructor(readonly id: number, readonly name: string, private readonly pool: PacketPool, agingSeconds = 300) {
    this.fdb = new Fdb(8192, agingSeconds);
  }

  addPort(p: Port): void {
    this.members.push(p);
  }

  removePort(p: Port): void {
    const i = this.members.indexOf(p);
    if (i >= 0) this.members.splice(i, 1);
    this.fdb.flushPort(p.index);
  }

  /**
   * Classify batch[0..n) received on `inPort` into the members' tx queues. `portsByIndex` maps
   * an FDB port index to its Port. A queue that fills is flushed through `flush` first.
   */
  forward(inPort: Port, batch: Int32Array, n: number, portsByIndex: Array<Port | undefined>, flush: (p: Port) => void): void {
    const pool = this.pool;
    const b = pool.bytes;
    const now = this.now;
    const members = this.members;
    const inIdx = inPort.index;
    // A burst mostly comes from one station to one destination: learn and look up once per
    // change of address. Learning drops the cached destination (it may have moved).
    let lastSrc = -1;
    let lastDst = -1;
    let lastOut = -1;
    for (let i = 0; i < n; i++) {
      const h = batch[i]!;
      const fo = pool.frameOffset(h);
      // source MAC: learn unless it is a group address
      const s0 = b[fo + 6]!;
      if ((s0 & 1) === 0) {
        const src = (s0 * 0x10000 + (b[fo + 7]! << 8 | b[fo + 8]!)) * 0x1000000 + ((b[fo + 9]! << 16) | (b[fo + 10]! << 8) | b[fo + 11]!);
        if (src !== lastSrc) {
          this.fdb.learn(src, inIdx, now);
          lastSrc = src;
          lastDst = -1;
        }
      }
      const d0 = b[fo]!;
      let out = -1;
      if ((d0 & 1) === 0) {
        const dst = (d0 * 0x10000 + (b[fo + 1]! << 8 | b[fo + 2]!)) * 0x1000000 + ((b[fo + 3]! << 16) | (b[fo + 4]! << 8) | b[fo + 5]!);
        if (dst !== lastDst) {
          lastOut = this.fdb.lookup(dst, now);
          lastDst = dst;
        }
        out = lastOut;
      }
      if (out >= 0) {
        const p = portsByIndex[out];
        if (out === inIdx || p === undefined) {
          inPort.counters[C.dropped_hairpin]!++;
          pool.release(h);
          continue;
        }
        if (p.txCount === TXQ_SIZE) flush(p);
        p.txq[p.txCount++] = h;
        continue;
      }
      // flood: broadcast, multicast, unknown unicast; never back out of the port it came in on
      let copies = 0;
      for (let m = 0; m < members.length; m++) {
        const p = members[m]!;
        if (p.index === inIdx) continue;
        if (p.txCount === TXQ_SIZE) flush(p);
        p.txq[p.txCount++] = h;
        copies++;
      }
      inPort.counters[C.flooded]!++;
      if (copies === 0) pool.release(h);
      else pool.refs[h] = copies;
    }
  }
}
