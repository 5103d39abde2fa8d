// A port for engine tests (vlan.test.ts, link.test.ts): frames pushed into `inbox` are received,
// transmitted frames are kept as bytes in `sent`.
import { newCounters } from './counters.ts';
import type { PacketPool } from './pool.ts';
import { Port } from './port.ts';

/** A port the test feeds frames into and whose transmitted frames it reads back as bytes. */
export class WirePort extends Port {
  readonly fds: readonly number[] = [];
  inbox: Uint8Array[] = [];
  readonly sent: Uint8Array[] = [];

  constructor(index: number, pool: PacketPool, acceptsTso = true) {
    super(index, `wire${index}`, 1, newCounters(), pool, acceptsTso, acceptsTso);
    this.rxOffloads = false;
  }

  receive(_q: number, out: Int32Array, max: number): number {
    let n = 0;
    for (; n < max && this.inbox.length > 0; n++) {
      const f = this.inbox.shift()!;
      const h = this.pool.alloc();
      this.pool.bytes.fill(0, this.pool.hdrOffset(h), this.pool.frameOffset(h));
      this.pool.bytes.set(f, this.pool.frameOffset(h));
      this.pool.len[h] = f.length;
      out[n] = h;
    }
    return n;
  }

  transmit(q: Int32Array, n: number): void {
    for (let i = 0; i < n; i++) {
      const h = q[i]!;
      const fo = this.pool.frameOffset(h);
      this.sent.push(this.pool.bytes.slice(fo, fo + this.pool.len[h]!));
      this.pool.release(h);
    }
  }

  close(): void {}
}
