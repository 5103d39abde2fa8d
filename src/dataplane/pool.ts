// The packet pool: one memfd mapped into the arena, cut into fixed-size buffers, named by integer handles.
// A buffer holds the 12-byte virtio_net_hdr_v1 followed by the frame, so a tap read() or write()
// moves header and frame in one syscall and the header travels with the packet to every port.
import { Arena } from '../memory/arena.ts';
import { memfd } from '../sys/index.ts';

export const VNET_HDR = 12;
/** Room for a 64 KiB TSO super-frame plus Ethernet, VLAN and the virtio-net header. */
export const BUF_SIZE = 65536 + 1024;

export class PacketPool {
  readonly count: number;
  readonly arena: Arena;
  /** The memfd behind the pool, for peers that map it (virtio-user). */
  readonly fd: number;
  /** Arena offset of buffer 0. */
  readonly offset: number;
  /** Address of buffer 0, for syscalls. */
  readonly base: number;
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  /** Frame length (without the virtio-net header) of each packet. */
  readonly len: Uint32Array;
  /** Outstanding references (flooding hands one packet to several ports). */
  readonly refs: Uint32Array;
  private readonly free: Int32Array;
  private top: number;
  allocFailures = 0;

  constructor(count: number, arena: Arena = new Arena()) {
    this.count = count;
    this.arena = arena;
    this.fd = memfd('pier-packets', count * BUF_SIZE);
    this.offset = arena.place(this.fd, 0, count * BUF_SIZE);
    this.base = arena.base + this.offset;
    this.bytes = arena.bytes;
    this.dv = arena.dv;
    this.len = new Uint32Array(count);
    this.refs = new Uint32Array(count);
    this.free = new Int32Array(count);
    for (let i = 0; i < count; i++) this.free[i] = count - 1 - i;
    this.top = count;
  }

  /** A handle, or -1 when the pool is empty (the caller counts a drop). */
  alloc(): number {
    if (this.top === 0) {
      this.allocFailures++;
      return -1;
    }
    const h = this.free[--this.top]!;
    this.refs[h] = 1;
    this.len[h] = 0;
    return h;
  }

  /** Drop one reference; the buffer returns to the pool with the last one. */
  release(h: number): void {
    if (--this.refs[h]! === 0) this.free[this.top++] = h;
  }

  available(): number {
    return this.top;
  }

  /** Offset of the virtio-net header of packet h in `bytes`. */
  hdrOffset(h: number): number {
    return this.offset + h * BUF_SIZE;
  }

  /** Offset of the Ethernet frame of packet h in `bytes`. */
  frameOffset(h: number): number {
    return this.offset + h * BUF_SIZE + VNET_HDR;
  }

  /** Address of the virtio-net header of packet h, for read()/write(). */
  hdrAddr(h: number): number {
    return this.base + h * BUF_SIZE;
  }

  /** Handle of the packet whose header is at arena offset `off` (driver-side rings), or -1. */
  handleAt(off: number): number {
    const rel = off - this.offset;
    if (rel < 0 || rel % BUF_SIZE !== 0 || rel / BUF_SIZE >= this.count) return -1;
    return rel / BUF_SIZE;
  }
}
