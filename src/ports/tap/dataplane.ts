// The dataplane half of a tap port: read() and write() whole virtio-net-header + frame buffers
// on the non-blocking tap fd. The tap's vnet header is the pool's header, byte for byte, so a
// TSO super-frame or a partial checksum crosses pier untouched.
import { C } from '../../dataplane/counters.ts';
import type { PacketPool } from '../../dataplane/pool.ts';
import { BUF_SIZE, VNET_HDR } from '../../dataplane/pool.ts';
import { Port } from '../../dataplane/port.ts';
import { libc } from '../../sys/index.ts';
import type { DataplaneHalf } from '../kind.ts';
import type { TapSpec } from './options.ts';

const ETH_HLEN = 14;
/** Where a frame goes to be dropped when the pool is empty. */
const dropBuf = new Uint8Array(BUF_SIZE);

export class TapPort extends Port {
  readonly fds: readonly number[];

  constructor(index: number, name: string, bridge: number, counters: Float64Array, pool: PacketPool,
    readonly fd: number, offloads: boolean) {
    super(index, name, bridge, counters, pool, offloads, offloads);
    this.acceptsExternal = true; // write() copies into the kernel and is done
    this.fds = [fd];
  }

  receive(_queue: number, out: Int32Array, max: number): number {
    const pool = this.pool;
    const c = this.counters;
    let n = 0;
    while (n < max) {
      const h = pool.alloc();
      if (h < 0) {
        // Take the frame anyway and drop it: left in the tap, it would wake epoll forever.
        if (libc.readBuf(this.fd, dropBuf, dropBuf.length) > 0) {
          c[C.rx_dropped_no_buffer]!++;
          continue;
        }
        break;
      }
      const r = libc.read(this.fd, pool.hdrAddr(h), BUF_SIZE);
      if (r < VNET_HDR + ETH_HLEN) {
        pool.release(h);
        if (r < 0) {
          if (libc.errno() !== libc.EAGAIN) c[C.rx_errors]!++;
          break;
        }
        c[C.rx_dropped_malformed]!++;
        continue;
      }
      const len = r - VNET_HDR;
      pool.len[h] = len;
      c[C.rx_packets]!++;
      c[C.rx_bytes]! += len;
      if (pool.bytes[pool.hdrOffset(h) + 1] !== 0) c[C.rx_gso_packets]!++;
      out[n++] = h;
    }
    return n;
  }

  transmit(q: Int32Array, n: number): void {
    const pool = this.pool;
    const c = this.counters;
    for (let i = 0; i < n; i++) {
      const h = q[i]!;
      const len = pool.len[h]!;
      const r = libc.write(this.fd, pool.hdrAddr(h), len + VNET_HDR);
      if (r < 0) {
        c[libc.errno() === libc.EAGAIN ? C.tx_dropped_full : C.tx_dropped_error]!++;
      } else {
        c[C.tx_packets]!++;
        c[C.tx_bytes]! += len;
        if (pool.bytes[pool.hdrOffset(h) + 1] !== 0) c[C.tx_gso_packets]!++;
      }
      pool.release(h);
    }
  }

  close(): void {}
}

export const tapDataplane: DataplaneHalf<TapSpec> = {
  create: (b, spec, pool) => new TapPort(b.index, b.name, b.bridge, b.counters, pool, spec.fd, spec.offloads),
};
