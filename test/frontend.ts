// A minimal vhost-user frontend (the driver side) in-process, built from pier's own pieces: the
// vhost-user codec and connection (src/vhost), a memfd as "guest memory", DriverQueue (or, with
// `packed`, PackedDriverQueue) for the rings. Tests use it to speak the protocol correctly, and to break it on purpose (`sendRaw`
// writes any bytes, lies included).
import { EventFd, libc, mapShared, unixConnect, sendWithFds, unmap, type Mapping } from '../src/sys/index.ts';
import * as codec from '../src/vhost/codec.ts';
import { type Message, VhostConnection } from '../src/vhost/connection.ts';
import * as P from '../src/vhost/protocol.ts';
import { DriverQueue } from '../src/virtio/driver-queue.ts';
import { PACKED_FRESH_BASE, PackedDriverQueue } from '../src/virtio/packed-driver-queue.ts';
import { EVENT_SUPPRESS_SIZE, packedRingSize } from '../src/virtio/packed-ring.ts';
import type { DriverVirtqueue } from '../src/virtio/queue.ts';
import { availRingSize, descTableSize, usedRingSize } from '../src/virtio/ring.ts';
import { waitFor } from './helpers.ts';

const MEM = 8 * 1024 * 1024;
const BUFS = 0x100000; // buffers from 1 MiB on; rings below
const BUF = 8192;

export interface Reply { req: number; flags: number; body: DataView }

/**
 * What the frontend's guest memory is: 'pier' (pier's own mapShared: a memfd sealed against
 * shrinking and growing), 'unsealable' (a memfd made without MFD_ALLOW_SEALING, as DPDK's
 * --no-huge memory: it can shrink and nobody can seal it) or 'sealable' (MFD_ALLOW_SEALING and no
 * seals yet: pier seals it).
 */
export type GuestMemoryKind = 'pier' | 'unsealable' | 'sealable';

function guestMemory(kind: GuestMemoryKind, size: number): Mapping {
  if (kind === 'pier') return mapShared('pier-test-guest', size);
  const fd = libc.check(libc.memfd_create(`test-guest-${kind}`, libc.MFD_CLOEXEC | (kind === 'sealable' ? libc.MFD_ALLOW_SEALING : 0)), 'memfd_create');
  libc.check(libc.ftruncate(fd, size), 'ftruncate');
  const addr = Number(libc.mmap(0, size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0));
  if (addr === 0 || addr >= 2 ** 53) throw new libc.SysError('mmap', libc.errno());
  return { fd, addr, size, buffer: libc.view(addr, size) };
}

export class Frontend {
  readonly conn: VhostConnection;
  readonly mem: Mapping;
  readonly space: { bytes: Uint8Array; dv: DataView; u16: Uint16Array };
  /** The rings, split (setup()) or packed (setup(..., packed = true)): one of the two is filled. */
  readonly queues: DriverQueue[] = [];
  readonly packedQueues: PackedDriverQueue[] = [];
  /** Offset of the buffer each posted head (split) or Buffer ID (packed) carries, per vring. */
  private readonly bufOff: number[][] = [[], []];
  readonly kicks: EventFd[] = [];
  readonly calls: EventFd[] = [];
  private readonly inbox: Reply[] = [];
  private nextBuf = BUFS;
  private closed = false;

  constructor(path: string, memory: GuestMemoryKind = 'pier') {
    this.mem = guestMemory(memory, MEM);
    this.space = { bytes: new Uint8Array(this.mem.buffer), dv: new DataView(this.mem.buffer), u16: new Uint16Array(this.mem.buffer) };
    this.conn = new VhostConnection(unixConnect(path));
  }

  get fd(): number {
    return this.conn.fd;
  }

  /** Send a well-framed message (`size` may lie about the payload's length). */
  send(req: number, payload: Uint8Array = codec.EMPTY, fds: number[] = [], flags = P.VHOST_USER_VERSION, size = payload.length): void {
    if (size === payload.length) {
      const d = this.conn.send(req, payload, fds, flags);
      if (d) throw new Error(`send ${codec.requestName(req)}: ${d.toString()}`);
      return;
    }
    const m = codec.message(req, payload, flags);
    new DataView(m.buffer).setUint32(8, size, true);
    this.sendRaw(m, fds);
  }

  /** Write raw bytes (half a header, garbage), with fds. */
  sendRaw(bytes: Uint8Array, fds: number[] = []): void {
    if (sendWithFds(this.fd, bytes, bytes.length, fds) !== bytes.length) throw new Error('short send');
  }

  /** Wait for one reply; throws on EOF (pier dropped the connection) or timeout. */
  async reply(timeoutMs = 3000): Promise<Reply> {
    return waitFor(() => {
      const d = this.conn.read((m: Message) => {
        for (const fd of m.fds) libc.close(fd);
        this.inbox.push({ req: m.req, flags: m.flags, body: new DataView(m.payload.buffer.slice(m.payload.byteOffset, m.payload.byteOffset + m.payload.byteLength)) });
      });
      const r = this.inbox.shift();
      if (r) return r;
      if (d) throw new Error(`EOF: pier closed the connection (${d.toString()})`);
      return undefined;
    }, timeoutMs, 'a reply from pier', 10);
  }

  /** True once pier has closed the connection; false if it has not within `timeoutMs`. */
  async closedByPeer(timeoutMs = 3000): Promise<boolean> {
    try {
      await waitFor(() => this.conn.read((m: Message) => { for (const fd of m.fds) libc.close(fd); }), timeoutMs, 'pier to close the connection');
      return true;
    } catch {
      return false;
    }
  }

  u64(v: bigint): Uint8Array {
    return codec.u64(v);
  }

  state(index: number, num: number): Uint8Array {
    return codec.vringState(index, num);
  }

  memTable(regions = 1, fds = 1): { payload: Uint8Array; fds: number[] } {
    const table = Array.from({ length: regions }, (_, i) => ({ gpa: i * MEM, size: MEM, uva: this.mem.addr, mmapOffset: 0 }));
    return { payload: codec.memTable(table), fds: Array.from({ length: fds }, () => this.mem.fd) };
  }

  /**
   * The whole correct setup: features (those offered minus `without`), memory, two vrings of
   * `size` entries, enabled. Guest-physical addresses are offsets in the memfd.
   */
  async setup(size = 64, without = 0n, table: { payload: Uint8Array; fds: number[] } = this.memTable(), packed = false): Promise<bigint> {
    this.send(P.Req.GET_FEATURES);
    const offered = (await this.reply()).body.getBigUint64(0, true);
    this.send(P.Req.GET_PROTOCOL_FEATURES);
    const pf = (await this.reply()).body.getBigUint64(0, true);
    this.send(P.Req.SET_PROTOCOL_FEATURES, this.u64(pf & (1n << BigInt(P.PF_REPLY_ACK))));
    this.send(P.Req.SET_OWNER);
    // No EVENT_IDX: simpler to drive. RING_PACKED (34) only when asked for.
    if (packed && (offered & (1n << 34n)) === 0n) throw new Error('pier does not offer RING_PACKED');
    const features = offered & ~without & ~(1n << 29n) & (packed ? ~0n : ~(1n << 34n));
    this.send(P.Req.SET_FEATURES, this.u64(features));
    this.send(P.Req.SET_MEM_TABLE, table.payload, table.fds);
    let off = 0;
    for (let q = 0; q < 2; q++) {
      const desc = off;
      // Packed: avail and used are the driver and device event suppression areas.
      const avail = desc + (packed ? packedRingSize(size) : descTableSize(size));
      const used = packed ? avail + EVENT_SUPPRESS_SIZE : (avail + availRingSize(size) + 3) & ~3;
      off = (used + (packed ? EVENT_SUPPRESS_SIZE : usedRingSize(size)) + 4095) & ~4095;
      let err: string | null;
      if (packed) {
        const pq = new PackedDriverQueue(this.space);
        err = pq.configure({ size, descOff: desc, driverOff: avail, deviceOff: used, eventIdx: false });
        this.packedQueues[q] = pq;
      } else {
        const dq = new DriverQueue(this.space);
        err = dq.configure({ size, descOff: desc, availOff: avail, usedOff: used, eventIdx: false });
        this.queues[q] = dq;
      }
      if (err) throw new Error(err);
      this.kicks[q] = new EventFd();
      this.calls[q] = new EventFd();
      this.send(P.Req.SET_VRING_NUM, this.state(q, size));
      this.send(P.Req.SET_VRING_BASE, this.state(q, packed ? PACKED_FRESH_BASE : 0));
      this.send(P.Req.SET_VRING_ADDR, codec.vringAddr({ index: q, desc: this.mem.addr + desc, used: this.mem.addr + used, avail: this.mem.addr + avail }));
      this.send(P.Req.SET_VRING_CALL, codec.vringFile(q), [this.calls[q]!.fd]);
      this.send(P.Req.SET_VRING_KICK, codec.vringFile(q), [this.kicks[q]!.fd]);
      this.send(P.Req.SET_VRING_ENABLE, this.state(q, 1));
    }
    return features;
  }

  /** Vring q, whichever its layout. */
  ring(q: number): DriverVirtqueue {
    return this.packedQueues[q] ?? this.queues[q]!;
  }

  private buffer(size = BUF): number {
    if (this.nextBuf + size > MEM) this.nextBuf = BUFS;
    const b = this.nextBuf;
    this.nextBuf += size;
    return b;
  }

  /** Post n empty receive buffers of `size` bytes on vring 0. */
  postRx(n: number, size = BUF): void {
    const q = this.ring(0);
    for (let i = 0; i < n; i++) {
      const off = this.buffer(size);
      const head = q.add(Float64Array.of(off), Uint32Array.of(size), Uint8Array.of(1), 1);
      if (head >= 0) this.bufOff[0]![head] = off;
    }
    q.publish();
  }

  /** Packets pier has put in vring 0 so far, merging MRG_RXBUF buffers; header kept apart. */
  receivedPackets(): Array<{ hdr: Uint8Array; frame: Uint8Array }> {
    const q = this.ring(0);
    const out: Array<{ hdr: Uint8Array; frame: Uint8Array }> = [];
    const take = (): Uint8Array | undefined => {
      const head = q.getUsed();
      if (head < 0) return undefined;
      const off = this.bufOff[0]![head]!;
      return this.space.bytes.slice(off, off + q.usedLen);
    };
    for (let first = take(); first; first = take()) {
      const nbuf = first[10]! | (first[11]! << 8);
      const parts = [first.subarray(12)];
      for (let k = 1; k < nbuf; k++) {
        const more = take();
        if (!more) throw new Error('num_buffers larger than the used entries');
        parts.push(more);
      }
      out.push({ hdr: first.slice(0, 12), frame: Buffer.concat(parts) });
    }
    return out;
  }

  /** Send one frame with the given 12-byte virtio-net header on vring 1, and kick. */
  sendFrame(frame: Uint8Array, hdr: Uint8Array = new Uint8Array(12)): void {
    const q = this.ring(1);
    while (q.getUsed() >= 0); // take back what pier has sent, or a long exchange fills the ring
    const len = 12 + frame.length;
    const off = this.buffer(Math.max(BUF, len));
    this.space.bytes.set(hdr, off);
    this.space.bytes.set(frame, off + 12);
    if (q.add(Float64Array.of(off), Uint32Array.of(len), Uint8Array.of(0), 1) < 0) throw new Error('tx ring full');
    q.publish();
    this.kicks[1]!.signal();
  }

  /** Frames pier has put in vring 0 so far (header stripped). */
  receivedFrames(): Uint8Array[] {
    const q = this.ring(0);
    const out: Uint8Array[] = [];
    for (;;) {
      const head = q.getUsed();
      if (head < 0) break;
      const off = this.bufOff[0]![head]!;
      out.push(this.space.bytes.slice(off + 12, off + q.usedLen));
    }
    return out;
  }

  /** Close the connection and the eventfds, unmap the memory; again: nothing. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.conn.close();
    for (const e of [...this.kicks, ...this.calls]) e.close();
    unmap(this.mem);
  }
}
