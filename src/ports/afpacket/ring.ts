// The two rings of an AF_PACKET socket, walked over a view of the mapping (docs/design/uplinks.md).
//
// rx, TPACKET_V3: `blockNr` blocks of `blockSize` bytes. The kernel fills a block with frames and
// retires it (block_status |= TP_STATUS_USER) when it is full or its timer runs out; pier copies
// every frame of a retired block into pool buffers and gives the block back (block_status =
// TP_STATUS_KERNEL). Blocks are retired in ring order. Nothing the kernel wrote is trusted: the
// block's length and first offset, each frame's next offset, tp_mac and tp_snaplen are checked to
// stay inside the block before a byte is read, and a frame or block that does not is counted and
// skipped (the block is still given back, or the ring would stop).
//
// tx, TPACKET_V3 frames of `frameSize` bytes (`framesPerBlock` to a block, never across blocks):
// pier fills the frame at `head` (tpacket3_hdr, then the virtio-net header and the frame at
// TX_DATA_OFFSET), marks it TP_STATUS_SEND_REQUEST and moves on; one sendto() per burst makes
// the kernel send every marked frame in ring order; it marks each TP_STATUS_AVAILABLE again when
// the frame's skb is freed. A frame not yet available at `head` means the ring is full.
//
// Memory ordering: the status words are read with Atomics.load before the frames behind them
// (acquire) and written with Atomics.store after them (release), as packet_mmap.rst asks of a
// user (its smp_rmb/smp_wmb; on x86_64 the order of the stores is what matters).
import { C } from '../../dataplane/counters.ts';
import type { PacketPool } from '../../dataplane/pool.ts';
import { BUF_SIZE, VNET_HDR } from '../../dataplane/pool.ts';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM } from '../../dataplane/vnet.ts';
import { copyBytes } from '../../sys/packet.ts';

// Layouts (src/sys/packet.ts checks them against the kernel's structs when it loads; repeated
// here as plain constants the JIT folds). Bytes move with memcpy between addresses (copyBytes):
// subarray().set() would make a view object per packet.
const BD_BLOCK_STATUS = 8;
const BD_NUM_PKTS = 12;
const BD_FIRST = 16;
const BD_BLK_LEN = 20;
const BD_SEQ_NUM = 24;
const BLOCK_DESC = 48;
const H3_NEXT = 0;
const H3_SNAPLEN = 12;
const H3_LEN = 16;
const H3_STATUS = 20;
const H3_MAC = 24;
const H3_VLAN_TCI = 32;
const H3_VLAN_TPID = 36;
const H3_SIZE = 48;
const H3_SLL_PKTTYPE = 48 + 10;
const TP_STATUS_USER = 1;
const TP_STATUS_VLAN_VALID = 0x10;
const TP_STATUS_VLAN_TPID_VALID = 0x40;
const TP_STATUS_AVAILABLE = 0;
const TP_STATUS_SEND_REQUEST = 1;
const PACKET_OUTGOING = 4;
/** struct virtio_net_hdr, as PACKET_VNET_HDR writes and reads it (the pool's v1 header without num_buffers). */
export const PKT_VNET = 10;
export const TX_DATA_OFFSET = 48;
const ETH_HLEN = 14;
const VLAN_HLEN = 4;
/** Largest frame a pool buffer holds. */
const FRAME_MAX = BUF_SIZE - VNET_HDR;

/**
 * A received frame of `flen` bytes in buffer h, its virtio-net header in place: its length set and
 * counted; true when it asks for an offload (GSO or a partial checksum). Shared by both receive paths.
 */
export function accountRx(pool: PacketPool, h: number, flen: number, c: Float64Array): boolean {
  const pb = pool.bytes;
  const ho = pool.hdrOffset(h);
  pool.len[h] = flen;
  c[C.rx_packets]!++;
  c[C.rx_bytes]! += flen;
  if (pb[ho + 1] !== 0) {
    c[C.rx_gso_packets]!++;
    return true;
  }
  return (pb[ho]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
}

/** The 802.1Q tag put back in front of a frame moves what the virtio-net header points at by 4 bytes. */
export function shiftHeaderForTag(pool: PacketPool, ho: number): void {
  const dv = pool.dv;
  if ((pool.bytes[ho]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) dv.setUint16(ho + 6, dv.getUint16(ho + 6, true) + VLAN_HLEN, true);
  if (pool.bytes[ho + 1] !== 0) dv.setUint16(ho + 2, dv.getUint16(ho + 2, true) + VLAN_HLEN, true);
}

/** What the rx walker saw that the port counters do not say (for `pier show`). */
export class RxStats {
  blocks = 0;
  /** Blocks whose header did not fit the block (length, first offset, count): given back unread. */
  badBlocks = 0;
  /** Frames whose header, offsets or lengths left the block; the rest of their block was skipped. */
  badFrames = 0;
  /** Frames the kernel cut short (tp_snaplen < tp_len: larger than a block can hold). */
  truncated = 0;
  /** Frames the host sent, read back on a kernel without PACKET_IGNORE_OUTGOING and skipped. */
  outgoing = 0;
  /** The next block in ring order was not ours though the kernel said one was: resynchronised on the oldest. */
  resyncs = 0;
  /** Frames whose 802.1Q tag the kernel had taken out (VLAN offload) and pier put back. */
  tagsRestored = 0;
}

/**
 * Positions that outlive a dataplane half rebuilt over the same socket (set-port offloads=...):
 * [0] the rx block walked next, [1] the tx frame filled next. Shared with the control half.
 */
export const POS_RX_BLOCK = 0;
export const POS_TX_HEAD = 1;

export class RxRing {
  private readonly u8: Uint8Array;
  private readonly dv: DataView;
  private readonly u32: Uint32Array;
  readonly stats = new RxStats();
  /** Set by receive(): some frame of the burst asked for an offload (GSO or a partial checksum). */
  sawOffload = false;
  private block: number;
  private open = false;
  private left = 0;
  private off = 0;
  private end = 0;
  private base = 0;
  /** Address of the ring's first byte. */
  private readonly addr: number;

  constructor(mem: ArrayBuffer, memAddr: number, offset: number, readonly blockSize: number, readonly blockNr: number,
    /** Skip frames whose sll_pkttype is PACKET_OUTGOING (the kernel lacks PACKET_IGNORE_OUTGOING). */
    private readonly filterOutgoing: boolean, startBlock = 0) {
    if (blockSize % 8 !== 0 || blockSize < BLOCK_DESC + H3_SIZE || offset % 8 !== 0) throw new RangeError('rx ring geometry');
    this.u8 = new Uint8Array(mem, offset, blockSize * blockNr);
    this.dv = new DataView(mem, offset, blockSize * blockNr);
    this.u32 = new Uint32Array(mem, offset, (blockSize * blockNr) >> 2);
    this.addr = memAddr + offset;
    this.block = startBlock % blockNr;
  }

  /** The block walked next (saved across a rebuild of the port). */
  get position(): number {
    return this.block;
  }

  /**
   * Copy up to `max` frames into pool buffers (handles in out[0..n)); returns n. A block
   * is given back as soon as its last frame is copied. Never throws.
   */
  receive(pool: PacketPool, out: Int32Array, max: number, c: Float64Array): number {
    const u8 = this.u8;
    const dv = this.dv;
    const st = this.stats;
    let n = 0;
    let offload = false;
    let resynced = false;
    while (n < max) {
      if (!this.open) {
        const b = this.block * this.blockSize;
        if ((Atomics.load(this.u32, (b + BD_BLOCK_STATUS) >> 2) & TP_STATUS_USER) === 0) {
          // Not ours. If the kernel retired some other block first (a rebuilt port started from
          // a stale position), follow the ring from the oldest retired block.
          if (n === 0 && !resynced) {
            resynced = true;
            if (this.resync()) continue;
          }
          break;
        }
        st.blocks++;
        const count = dv.getUint32(b + BD_NUM_PKTS, true);
        const first = dv.getUint32(b + BD_FIRST, true);
        const len = dv.getUint32(b + BD_BLK_LEN, true);
        if (len > this.blockSize || (count > 0 && (first < BLOCK_DESC || first > len - H3_SIZE || count > Math.floor((len - first) / H3_SIZE)))) {
          st.badBlocks++;
          c[C.rx_dropped_malformed]!++;
          this.release();
          continue;
        }
        this.base = b;
        this.open = true;
        this.left = count;
        this.off = first;
        this.end = len;
      }
      if (this.left === 0) {
        this.release();
        continue;
      }
      // The frame at base+off: its header, then tp_mac/tp_snaplen, inside [off, end).
      const fo = this.base + this.off;
      const room = this.end - this.off;
      const next = dv.getUint32(fo + H3_NEXT, true);
      const snap = dv.getUint32(fo + H3_SNAPLEN, true);
      const wire = dv.getUint32(fo + H3_LEN, true);
      const status = dv.getUint32(fo + H3_STATUS, true);
      const mac = dv.getUint16(fo + H3_MAC, true);
      this.left--;
      const last = this.left === 0;
      if (room < H3_SIZE || mac < H3_SIZE + PKT_VNET || mac > room || snap > room - mac ||
        (!last && (next < H3_SIZE || next % 8 !== 0 || next > room - H3_SIZE))) {
        // The rest of the block cannot be reached safely: count this frame, give the block back.
        st.badFrames++;
        c[C.rx_dropped_malformed]!++;
        this.release();
        continue;
      }
      this.off += next;
      if (snap < wire || snap < ETH_HLEN) {
        if (snap < wire) st.truncated++;
        c[C.rx_dropped_malformed]!++;
        continue;
      }
      if (this.filterOutgoing && u8[fo + H3_SLL_PKTTYPE] === PACKET_OUTGOING) {
        st.outgoing++;
        continue;
      }
      const tagged = (status & TP_STATUS_VLAN_VALID) !== 0;
      const flen = tagged ? snap + VLAN_HLEN : snap;
      if (flen > FRAME_MAX) {
        c[C.rx_dropped_malformed]!++;
        continue;
      }
      const h = pool.alloc();
      if (h < 0) {
        c[C.rx_dropped_no_buffer]!++;
        continue;
      }
      const ho = pool.hdrOffset(h);
      const pb = pool.bytes;
      const data = fo + mac;
      // virtio_net_hdr (10 bytes) right before the frame, then num_buffers = 0.
      for (let k = 0; k < PKT_VNET; k++) pb[ho + k] = u8[data - PKT_VNET + k]!;
      pb[ho + 10] = 0;
      pb[ho + 11] = 0;
      const fr = ho + VNET_HDR;
      const dst = pool.hdrAddr(h) + VNET_HDR;
      if (!tagged) {
        copyBytes(dst, this.addr + data, snap);
      } else {
        // The kernel took the 802.1Q tag out of the frame (tp_vlan_tci): put it back where it was.
        st.tagsRestored++;
        copyBytes(dst, this.addr + data, 12);
        const tpid = (status & TP_STATUS_VLAN_TPID_VALID) !== 0 ? dv.getUint16(fo + H3_VLAN_TPID, true) : 0x8100;
        const tci = dv.getUint32(fo + H3_VLAN_TCI, true) & 0xffff;
        pb[fr + 12] = tpid >> 8;
        pb[fr + 13] = tpid & 0xff;
        pb[fr + 14] = tci >> 8;
        pb[fr + 15] = tci & 0xff;
        copyBytes(dst + 16, this.addr + data + 12, snap - 12);
        shiftHeaderForTag(pool, ho);
      }
      if (accountRx(pool, h, flen, c)) offload = true;
      out[n++] = h;
    }
    // A block whose frames are all copied goes back now, not at the next wakeup.
    if (this.open && this.left === 0) this.release();
    this.sawOffload = offload;
    return n;
  }

  /** Whether the block walked next is ours already (more to receive without waiting). */
  ready(): boolean {
    if (this.open) return true;
    return (Atomics.load(this.u32, (this.block * this.blockSize + BD_BLOCK_STATUS) >> 2) & TP_STATUS_USER) !== 0;
  }

  private release(): void {
    const b = this.block * this.blockSize;
    Atomics.store(this.u32, (b + BD_BLOCK_STATUS) >> 2, 0);
    this.open = false;
    this.left = 0;
    this.block = this.block + 1 === this.blockNr ? 0 : this.block + 1;
  }

  /** Move to the retired block with the lowest sequence number; false when none is retired. */
  private resync(): boolean {
    let best = -1;
    let bestSeq = 0n;
    for (let i = 0; i < this.blockNr; i++) {
      const b = i * this.blockSize;
      if ((Atomics.load(this.u32, (b + BD_BLOCK_STATUS) >> 2) & TP_STATUS_USER) === 0) continue;
      const seq = this.dv.getBigUint64(b + BD_SEQ_NUM, true);
      if (best < 0 || seq < bestSeq) {
        best = i;
        bestSeq = seq;
      }
    }
    if (best < 0 || best === this.block) return false;
    this.stats.resyncs++;
    this.block = best;
    return true;
  }
}

/** What the tx ring saw (for `pier show`). */
export class TxStats {
  /** sendto() kicks, and those that failed (the error is the last one). */
  kicks = 0;
  kickErrors = 0;
  lastKickErrno = 0;
  /** Frames too large for a ring frame. */
  tooBig = 0;
  /** Ring full: no frame available at the head even after a kick. */
  full = 0;
}

export class TxRing {
  private readonly dv: DataView;
  private readonly u32: Uint32Array;
  /** Offset of each frame in the ring view. */
  private readonly frameOff: Float64Array;
  readonly stats = new TxStats();
  /** Frames marked SEND_REQUEST since the last kick. */
  pending = 0;
  private head: number;
  /** Largest frame (without the virtio-net header) a ring frame holds. */
  readonly frameMax: number;
  /** Address of the ring's first byte. */
  private readonly addr: number;

  constructor(mem: ArrayBuffer, memAddr: number, offset: number, readonly blockSize: number, readonly blockNr: number, readonly frameSize: number, startHead = 0) {
    const perBlock = Math.floor(blockSize / frameSize);
    if (perBlock < 1 || frameSize % 16 !== 0 || frameSize < TX_DATA_OFFSET + PKT_VNET + ETH_HLEN || offset % 8 !== 0) throw new RangeError('tx ring geometry');
    const frameNr = perBlock * blockNr;
    this.dv = new DataView(mem, offset, blockSize * blockNr);
    this.u32 = new Uint32Array(mem, offset, (blockSize * blockNr) >> 2);
    this.addr = memAddr + offset;
    this.frameOff = new Float64Array(frameNr);
    for (let i = 0; i < frameNr; i++) this.frameOff[i] = Math.floor(i / perBlock) * blockSize + (i % perBlock) * frameSize;
    this.frameMax = Math.min(frameSize - TX_DATA_OFFSET - PKT_VNET, FRAME_MAX);
    this.head = startHead % frameNr;
  }

  get frames(): number {
    return this.frameOff.length;
  }

  /** The frame filled next (saved across a rebuild of the port). */
  get position(): number {
    return this.head;
  }

  /** Whether the frame at the head is free for pier to fill. */
  available(): boolean {
    return Atomics.load(this.u32, (this.frameOff[this.head]! + H3_STATUS) >> 2) === TP_STATUS_AVAILABLE;
  }

  /**
   * Copy packet h (virtio-net header and frame) into the frame at the head and mark it for
   * sending. The caller checked available() and that the frame fits (len <= frameMax).
   */
  put(pool: PacketPool, h: number, len: number): void {
    const fo = this.frameOff[this.head]!;
    const dv = this.dv;
    const ha = pool.hdrAddr(h);
    copyBytes(this.addr + fo + TX_DATA_OFFSET, ha, PKT_VNET);
    copyBytes(this.addr + fo + TX_DATA_OFFSET + PKT_VNET, ha + VNET_HDR, len);
    dv.setUint32(fo + H3_NEXT, 0, true);
    dv.setUint32(fo + H3_LEN, PKT_VNET + len, true);
    dv.setUint32(fo + H3_SNAPLEN, PKT_VNET + len, true);
    Atomics.store(this.u32, (fo + H3_STATUS) >> 2, TP_STATUS_SEND_REQUEST);
    this.pending++;
    this.head = this.head + 1 === this.frameOff.length ? 0 : this.head + 1;
  }
}
