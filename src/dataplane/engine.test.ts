import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { GuestMemory } from '../memory/guest-memory.ts';
import { libc } from '../sys/index.ts';
import { C, newCounters } from './counters.ts';
import { Engine } from './engine.ts';
import { type BufferLender, type PacketPool, VNET_HDR } from './pool.ts';
import { PortGuard } from './port-guard.ts';
import { Port } from './port.ts';

const MiB = 1 << 20;
const fds: number[] = [];
after(() => {
  for (const fd of fds) libc.close(fd);
});

/** Peer memory as DPDK --no-huge makes it: a memfd that cannot be sealed, so it can shrink. */
function peerMemory(pool: PacketPool): { mem: GuestMemory; fd: number } {
  const fd = libc.check(libc.memfd_create('engine-peer', libc.MFD_CLOEXEC), 'memfd_create');
  fds.push(fd);
  libc.check(libc.ftruncate(fd, MiB), 'ftruncate');
  const mem = new GuestMemory(pool.arena);
  mem.replace([{ gpa: 0, size: MiB, uva: 0x7f0000000000, mmapOffset: 0, fd }]);
  assert.equal(mem.regions()[0]!.seal, 'unsealed');
  return { mem, fd };
}

/** A port with peer memory, in the spirit of a vhost-user port; it logs what the engine asks of it. */
class PeerPort extends Port implements BufferLender {
  readonly fds: readonly number[] = [];
  readonly log: string[] = [];
  readonly faults: number[] = [];
  /** Frames the next receive() returns, each read from (and one lent out of) peer memory at gpa `readAt`. */
  incoming = 0;
  readAt = 0;
  sent = 0;
  /** transmit() copies each frame into peer memory at this gpa (as a vhost-user receiveq would). */
  writeAt = -1;

  constructor(index: number, pool: PacketPool, readonly mem: GuestMemory) {
    super(index, `peer${index}`, 1, newCounters(), pool, true, true);
    this.rxOffloads = false;
    this.acceptsExternal = true;
  }

  receive(_q: number, out: Int32Array, max: number): number {
    const n = Math.min(this.incoming, max);
    this.incoming = 0;
    const at = this.mem.translate(this.readAt, 4096);
    for (let i = 0; i < n; i++) {
      const b = this.pool.bytes;
      // The peer's buffer (header + broadcast frame), read in place: on a shrunk file the
      // guard's zero page answers.
      if (i === 0) {
        b.fill(0, at, at + 72);
        b.fill(0xff, at + 12, at + 18);
      }
      const h = i === 0 ? this.pool.lend(at, 60, this, 42) : this.pool.alloc();
      if (i > 0) {
        b.fill(0, this.pool.hdrOffset(h), this.pool.frameOffset(h) + 60);
        b.fill(0xff, this.pool.frameOffset(h), this.pool.frameOffset(h) + 6); // broadcast: floods
        this.pool.len[h] = 60;
      }
      out[i] = h;
    }
    if (n > 0) this.log.push(`receive ${n}`);
    return n;
  }

  transmit(q: Int32Array, n: number): void {
    for (let i = 0; i < n; i++) {
      const h = q[i]!;
      if (this.writeAt >= 0) {
        const to = this.mem.translate(this.writeAt, 4096);
        this.pool.bytes.copyWithin(to, this.pool.hdrOffset(h), this.pool.frameOffset(h) + this.pool.len[h]!);
      }
      this.pool.release(h);
      this.sent++;
    }
  }

  returnBuffer(tag: number): void {
    this.log.push(`returned ${tag}`);
  }

  override afterBurst(): void {
    this.log.push('afterBurst');
  }

  override memoryFault(off: number): boolean {
    this.faults.push(off);
    const mine = this.mem.containsOffset(off);
    this.log.push(`memoryFault ${mine ? 'mine' : 'not mine'}`);
    if (mine) this.mem.unmap(); // what a vhost-user port's reset does to its memory
    return mine;
  }

  close(): void {}
}

function rig(): { engine: Engine; a: PeerPort; b: PeerPort; aFd: number; bFd: number } {
  const engine = new Engine(16, undefined, () => {});
  engine.addBridge(1, 'br0');
  const pa = peerMemory(engine.pool);
  const pb = peerMemory(engine.pool);
  const a = new PeerPort(1, engine.pool, pa.mem);
  const b = new PeerPort(2, engine.pool, pb.mem);
  engine.addPort(a);
  engine.addPort(b);
  return { engine, a, b, aFd: pa.fd, bFd: pb.fd };
}

test('engine: a burst read from peer memory that shrank is dropped, its loans returned, then the port is told where', () => {
  const { engine, a, b, aFd } = rig();
  // A good burst first: forwarded (flooded to b), loan returned before afterBurst.
  a.incoming = 3;
  engine.poll(a, 1);
  assert.equal(b.sent, 3);
  assert.deepEqual(a.log, ['receive 3', 'returned 42', 'afterBurst']);
  a.log.length = 0;

  libc.check(libc.ftruncate(aFd, 0), 'ftruncate'); // the peer shrinks its memory
  a.readAt = 8192 + 100;
  const off = a.mem.translate(a.readAt, 1);
  a.incoming = 3;
  engine.poll(a, 1);
  assert.equal(b.sent, 3, 'nothing of the faulted burst was forwarded');
  assert.deepEqual(a.log, ['receive 3', 'returned 42', 'afterBurst', 'memoryFault mine'], 'loans back and used ring flushed before the reset');
  assert.deepEqual(a.faults, [off], 'the exact offset of the faulting byte');
  assert.equal(a.mem.n, 0, 'a reset itself');
  assert.deepEqual(b.faults, [off], 'every port hears of it; only the owner claims it');
  assert.deepEqual(b.log, ['memoryFault not mine']);
  assert.equal(engine.pool.available(), 16, 'every handle of the dropped burst went back');
  assert.equal(engine.memoryFaults, 1);
  assert.equal(engine.memoryFaultsUnclaimed, 0);
  assert.equal(engine.faultDroppedBursts, 1);
  engine.removePort(1);
  engine.removePort(2);
  b.mem.unmap();
});

test('engine: a fault while transmitting into a peer\'s memory is dispatched at the end of the turn', () => {
  const { engine, a, b, bFd } = rig();
  libc.check(libc.ftruncate(bFd, 4096), 'ftruncate');
  b.writeAt = 65536; // past the new end of b's file
  a.incoming = 2;
  engine.again(a, 1);
  const offB = b.mem.translate(65536, 1);
  engine.turn(0);
  assert.equal(b.sent, 2, 'the burst was forwarded: the fault happened in transmit');
  assert.deepEqual(b.faults, [offB]);
  assert.deepEqual(a.faults, [offB]);
  assert.equal(b.mem.n, 0, 'b reset itself');
  assert.equal(a.mem.n, 1, 'a did not');
  assert.equal(engine.memoryFaults, 1);
  assert.equal(engine.faultDroppedBursts, 0);
  // The next burst goes through untouched.
  a.incoming = 1;
  engine.again(a, 1);
  b.writeAt = -1;
  engine.turn(0);
  assert.equal(b.sent, 3);
  assert.equal(engine.memoryFaults, 1);
  engine.removePort(1);
  engine.removePort(2);
  a.mem.unmap();
});

/** A port whose next receive() hands the engine the given pool packets with the given rxJudged mask. */
class BurstPort extends Port {
  readonly fds: readonly number[] = [];
  next: number[] = [];
  judgedMask = 0;
  sent = 0;
  constructor(index: number, pool: PacketPool) {
    super(index, `burst${index}`, 1, newCounters(), pool, true, true);
    this.acceptsExternal = true;
  }

  receive(_q: number, out: Int32Array): number {
    const n = this.next.length;
    this.next.forEach((h, i) => (out[i] = h));
    this.next = [];
    this.rxOffloads = true;
    this.rxJudged = this.judgedMask;
    return n;
  }

  transmit(q: Int32Array, n: number): void {
    for (let i = 0; i < n; i++) this.pool.release(q[i]!);
    this.sent += n;
  }

  close(): void {}
}

test('engine: a frame the header check drops does not hand its port-security mark to the frame after it', () => {
  const engine = new Engine(16, undefined, () => {});
  engine.addBridge(1, 'br0');
  const a = new BurstPort(1, engine.pool);
  const b = new BurstPort(2, engine.pool);
  engine.addPort(a);
  engine.addPort(b);
  a.guard = new PortGuard({ macs: ['52:54:00:12:34:56'], addresses: [{ ip: '10.0.0.5' }], trunk: false });
  const pool = engine.pool;
  /** A TCP frame from the port's MAC and `src`, behind a header asking for TCPv4 GSO of `gsoSize` (0: no request). */
  const put = (src: number[], gsoSize: number): number => {
    const h = pool.alloc();
    const ho = pool.hdrOffset(h);
    const tcp = [0, 1, 0, 2, ...new Array<number>(16).fill(0), ...new Array<number>(40).fill(7)];
    const frame = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 8, 0, 0x45, 0, 0, 20 + tcp.length, 0, 1, 0, 0, 64, 6, 0, 0,
      ...src, 10, 0, 0, 1, ...tcp];
    pool.bytes.fill(0, ho, ho + VNET_HDR);
    if (gsoSize > 0) {
      pool.bytes[ho] = 1; // NEEDS_CSUM at the TCP checksum
      pool.bytes[ho + 1] = 1; // TCPv4
      pool.dv.setUint16(ho + 4, gsoSize, true);
      pool.dv.setUint16(ho + 6, 34, true);
      pool.dv.setUint16(ho + 8, 16, true);
    }
    pool.bytes.set(frame, ho + VNET_HDR);
    pool.len[h] = frame.length;
    return h;
  };
  // Slot 0 passed port security as it was copied (the mask says so) but its gso_size of 1 is
  // refused at ingress; slot 1 forges its source and was not judged yet.
  a.next = [put([10, 0, 0, 5], 1), put([10, 0, 0, 99], 0)];
  a.judgedMask = 0b01;
  engine.poll(a, 0);
  assert.equal(a.counters[C.rx_dropped_bad_offload], 1);
  assert.equal(a.counters[C.rx_dropped_spoofed_ip], 1, 'the forged frame was judged, not waved through on its neighbour\'s mark');
  assert.equal(b.sent, 0);
  assert.equal(pool.available(), 16);
  engine.removePort(1);
  engine.removePort(2);
});
