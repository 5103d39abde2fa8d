// An engine link: how a bridge spans dataplane threads (docs/design/threads.md). Each engine has
// its own copy of the bridge; between two engines runs one link port on each side, carrying
// frames over two single-producer single-consumer rings in shared memory, one per direction.
// To the bridge a link is a member like any port, with one rule (`horizon`): what came in on a
// link never leaves on a link.
import { memfd } from '../sys/index.ts';
import type { EventFd } from '../sys/index.ts';
import { C } from './counters.ts';
import { BUF_SIZE, type BufferLender, type PacketPool, VNET_HDR } from './pool.ts';
import { GSO_TCP, Port, type PortContext } from './port.ts';

/** Slots per ring: eight bursts. A slot holds one packet as a pool buffer does (header, frame). */
export const LINK_SLOTS = 256;
const MASK = LINK_SLOTS - 1;
// Control words (Int32 indexes), each on its own cache line: the producer writes PROD, the
// consumer CONS, and WAKE is the consumer's "write my eventfd after you publish" flag. They and
// the slots' frame lengths live in a SharedArrayBuffer, where Atomics are sequentially
// consistent by the language's memory model (the notification protocol needs the store-load
// order); the frames live in a memfd both arenas map, so a slot can be lent to a pool.
const PROD = 0;
const CONS = 16;
const WAKE = 32;
/** Frame length of each slot, after the three words (Int32 index). */
const LENS = 48;
const CONTROL_BYTES = 4 * (LENS + LINK_SLOTS);
/** Bytes of one ring's memfd: the slots. */
export const LINK_RING_BYTES = LINK_SLOTS * BUF_SIZE;

/** A new ring: its slots' memfd and its control words (the main thread makes both; each engine maps the memfd). */
export function linkRing(): { fd: number; control: SharedArrayBuffer } {
  return { fd: memfd('pier-link', LINK_RING_BYTES), control: new SharedArrayBuffer(CONTROL_BYTES) };
}

/** Frames published on a ring and not yet consumed (read from its control words, any thread). */
export function linkWaiting(control: Int32Array): number {
  return (Atomics.load(control, PROD) - Atomics.load(control, CONS)) | 0;
}

/** The consumer asked to be woken at the next publish (it sleeps). */
export function linkWakeAsked(control: Int32Array): boolean {
  return Atomics.load(control, WAKE) !== 0;
}

/** Horizon bit of a link: the bridge never forwards between two ports that share a bit. */
export const HORIZON_LINK = 1;

/** One ring as one side sees it: views over its mapping in that engine's arena, made once. */
class LinkRing {
  readonly words: Int32Array;
  readonly lens: Uint32Array;
  constructor(control: SharedArrayBuffer, /** Arena offset of slot 0's virtio-net header. */ readonly slots: number) {
    this.words = new Int32Array(control, 0, LENS);
    this.lens = new Uint32Array(control, 4 * LENS, LINK_SLOTS);
  }
}

export interface LinkSpec {
  /** Arena offsets (in this engine) of the slots of the ring this side produces into and the one it consumes. */
  txOffset: number;
  rxOffset: number;
  /** Their control words. */
  txControl: SharedArrayBuffer;
  rxControl: SharedArrayBuffer;
  /** Eventfds: the peer engine's (written when it asked to be woken) and ours (polled). */
  peerWake: EventFd;
  wake: EventFd;
  /** The thread at the other end, for describe(). */
  peer: number;
}

export class LinkPort extends Port implements BufferLender {
  readonly fds: readonly number[];
  override readonly horizon = HORIZON_LINK;
  private readonly tx: LinkRing;
  private readonly rx: LinkRing;
  /** Consumer side: slots lent in the burst in flight (the consumer index advances past them in afterBurst). */
  private inFlight = 0;
  private ctx: PortContext | undefined;

  constructor(index: number, name: string, bridge: number, counters: Float64Array, pool: PacketPool, private readonly spec: LinkSpec) {
    // Super-frames and partial checksums cross as they are: the engine at the other end fixes
    // them up for whichever of its ports cannot take them.
    super(index, name, bridge, counters, pool, true, true);
    this.gsoTypes = GSO_TCP;
    this.acceptsExternal = true; // transmit() copies into the ring and is done
    this.tx = new LinkRing(spec.txControl, spec.txOffset);
    this.rx = new LinkRing(spec.rxControl, spec.rxOffset);
    this.fds = [spec.wake.fd];
  }

  override attach(ctx: PortContext): void {
    this.ctx = ctx;
    ctx.again(this, 0); // whatever was published before this side was polled
  }

  /** Copy q[0..n) into the ring, publish once, wake the other engine if it sleeps. */
  transmit(q: Int32Array, n: number): void {
    const pool = this.pool;
    const b = pool.bytes;
    const w = this.tx.words;
    const lens = this.tx.lens;
    const c = this.counters;
    let prod = w[PROD]!;
    const room = LINK_SLOTS - ((prod - Atomics.load(w, CONS)) | 0);
    let bytes = 0;
    let sent = 0;
    for (let i = 0; i < n; i++) {
      const h = q[i]!;
      if (sent === room) {
        c[C.tx_dropped_full]!++;
        pool.release(h);
        continue;
      }
      const len = pool.len[h]!;
      const from = pool.hdrOffset(h);
      const slot = prod & MASK;
      b.copyWithin(this.tx.slots + slot * BUF_SIZE, from, from + VNET_HDR + len);
      lens[slot] = len;
      prod = (prod + 1) | 0;
      bytes += len;
      sent++;
      pool.release(h);
    }
    if (sent === 0) return;
    c[C.tx_packets]! += sent;
    c[C.tx_bytes]! += bytes;
    // Release: the slots and lengths are written before the index that publishes them. The
    // flag is read after that store (sequentially consistent), so a consumer that set it and
    // then found the ring empty is woken.
    Atomics.store(w, PROD, prod);
    if (Atomics.load(w, WAKE) !== 0) {
      Atomics.store(w, WAKE, 0);
      this.spec.peerWake.signal();
      c[C.notify_sent]!++;
    }
  }

  /** Lend up to `max` published slots to the pool; they go back in afterBurst. */
  receive(_queue: number, out: Int32Array, max: number): number {
    const w = this.rx.words;
    const cons = w[CONS]!;
    let avail = (Atomics.load(w, PROD) - cons) | 0;
    if (avail === 0) {
      if (this.spec.wake.drain()) this.counters[C.notify_received]!++;
      Atomics.store(w, WAKE, 1);
      avail = (Atomics.load(w, PROD) - cons) | 0; // published after we looked, before the flag was seen
      if (avail === 0) return 0;
      Atomics.store(w, WAKE, 0);
    }
    if (avail < 0 || avail > LINK_SLOTS) avail = 0; // cannot happen between two engines of one process; never trusted blindly
    const k = avail < max ? avail : max;
    const pool = this.pool;
    const lens = this.rx.lens;
    let bytes = 0;
    let n = 0;
    for (; n < k; n++) {
      const slot = (cons + n) & MASK;
      const len = lens[slot]!;
      const h = pool.lend(this.rx.slots + slot * BUF_SIZE, len > BUF_SIZE - VNET_HDR ? 0 : len, this, slot);
      if (h < 0) break;
      out[n] = h;
      bytes += len;
    }
    this.inFlight = n;
    this.rxExternal = true;
    const c = this.counters;
    c[C.rx_packets]! += n;
    c[C.rx_bytes]! += bytes;
    // Polled again next turn whatever it found: only a poll that finds the ring empty asks to be
    // woken, so one that took frames must be followed by another.
    if (n > 0 || avail > 0) this.ctx?.again(this, 0);
    return n;
  }

  returnBuffer(_slot: number): void {
    // Nothing per packet: the burst's slots are all returned when it ends (afterBurst).
  }

  override afterBurst(_queue: number): void {
    if (this.inFlight === 0) return;
    Atomics.store(this.rx.words, CONS, (this.rx.words[CONS]! + this.inFlight) | 0);
    this.inFlight = 0;
  }

  override describe(): unknown {
    return { peer: this.spec.peer };
  }

  close(): void {
    // The rings, their mappings and the eventfds belong to the caller (the worker releases the
    // arena ranges; the main thread closes the fds once both sides are gone).
  }
}
