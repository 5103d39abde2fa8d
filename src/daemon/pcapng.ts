// pcapng blocks (draft-ietf-opsawg-pcapng), the few `pier capture` writes: a Section Header, an
// Interface Description per captured port, an Enhanced Packet per packet, an Interface Statistics
// per port at the end. Little-endian, every block and option padded to 32 bits. Timestamps are
// nanoseconds since the epoch (if_tsresol = 9), as 64-bit counts split into two 32-bit halves.
// The reader (PcapngBlocks) is the CLI's: it follows the stream to count and describe packets.
import { PierError } from './errors.ts';
import { VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4 } from '../dataplane/vnet.ts';

export const BT_SHB = 0x0a0d0d0a;
export const BT_IDB = 1;
export const BT_ISB = 5;
export const BT_EPB = 6;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
export const LINKTYPE_ETHERNET = 1;

const OPT_END = 0;
export const OPT_COMMENT = 1;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_DESCRIPTION = 3;
const IF_TSRESOL = 9;
export const EPB_FLAGS = 2;
const ISB_STARTTIME = 2;
const ISB_ENDTIME = 3;
const ISB_IFRECV = 4;
const ISB_IFDROP = 5;
const ISB_USRDELIV = 8;
/** Where an Enhanced Packet Block's packet bytes start (after type, length, interface, time, lengths). */
export const EPB_DATA = 28;

/** epb_flags direction bits. */
export const EPB_INBOUND = 1;
export const EPB_OUTBOUND = 2;

type Option = [code: number, value: Buffer];

const pad4 = (n: number): number => (n + 3) & ~3;

function optionsLength(opts: readonly Option[]): number {
  return opts.length === 0 ? 0 : opts.reduce((s, [, v]) => s + 4 + pad4(v.length), 4);
}

function writeOptions(b: Buffer, at: number, opts: readonly Option[]): number {
  if (opts.length === 0) return at;
  for (const [code, v] of opts) {
    b.writeUInt16LE(code, at);
    b.writeUInt16LE(v.length, at + 2);
    v.copy(b, at + 4);
    at += 4 + pad4(v.length); // the padding is zero: Buffer.alloc
  }
  b.writeUInt16LE(OPT_END, at);
  b.writeUInt16LE(0, at + 2);
  return at + 4;
}

/** A block of `type` with a fixed body written by `body` and options. */
function block(type: number, fixed: number, opts: readonly Option[], body: (b: Buffer) => void): Buffer {
  const len = 12 + fixed + optionsLength(opts);
  const b = Buffer.alloc(len);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(len, 4);
  body(b);
  writeOptions(b, 8 + fixed, opts);
  b.writeUInt32LE(len, len - 4);
  return b;
}

const text = (s: string): Buffer => Buffer.from(s, 'utf8');
function u64(v: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}
function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

/** Nanoseconds since the epoch, as pcapng's (high, low) halves. */
export function timestamp(sec: number, nsec: number): bigint {
  return BigInt(sec) * 1_000_000_000n + BigInt(nsec);
}

function writeTs(b: Buffer, at: number, ts: bigint): void {
  b.writeUInt32LE(Number(ts >> 32n), at);
  b.writeUInt32LE(Number(ts & 0xffffffffn), at + 4);
}

export function sectionHeader(application: string): Buffer {
  return block(BT_SHB, 16, [[SHB_USERAPPL, text(application)]], (b) => {
    b.writeUInt32LE(BYTE_ORDER_MAGIC, 8);
    b.writeUInt16LE(1, 12); // version 1.0
    b.writeUInt16LE(0, 14);
    b.writeBigInt64LE(-1n, 16); // section length not given (a stream)
  });
}

export function interfaceDescription(name: string, description: string, snaplen: number): Buffer {
  return block(BT_IDB, 8, [[IF_NAME, text(name)], [IF_DESCRIPTION, text(description)], [IF_TSRESOL, Buffer.from([9])]], (b) => {
    b.writeUInt16LE(LINKTYPE_ETHERNET, 8);
    b.writeUInt32LE(snaplen, 12);
  });
}

/** The fixed part and options of an Enhanced Packet Block, without the packet's bytes. */
export interface PacketInfo {
  iface: number;
  ts: bigint;
  origLen: number;
  flags: number;
  comment?: string | undefined;
}

/** An Enhanced Packet Block holding data[from, from + capLen). */
export function enhancedPacket(p: PacketInfo, data: Uint8Array, from: number, capLen: number): Buffer {
  const opts: Option[] = [[EPB_FLAGS, u32(p.flags)]];
  if (p.comment) opts.push([OPT_COMMENT, text(p.comment)]);
  const fixed = EPB_DATA - 8 + pad4(capLen);
  return block(BT_EPB, fixed, opts, (b) => {
    b.writeUInt32LE(p.iface, 8);
    writeTs(b, 12, p.ts);
    b.writeUInt32LE(capLen, 20);
    b.writeUInt32LE(p.origLen, 24);
    b.set(data.subarray(from, from + capLen), EPB_DATA);
  });
}

export interface InterfaceStats {
  iface: number;
  start: bigint;
  end: bigint;
  /** Packets the capture saw on the interface, those it lost, those written to the stream. */
  received: number;
  dropped: number;
  delivered: number;
}

export function interfaceStatistics(s: InterfaceStats): Buffer {
  const opts: Option[] = [[ISB_STARTTIME, tsOption(s.start)], [ISB_ENDTIME, tsOption(s.end)],
    [ISB_IFRECV, u64(s.received)], [ISB_IFDROP, u64(s.dropped)], [ISB_USRDELIV, u64(s.delivered)]];
  return block(BT_ISB, 12, opts, (b) => {
    b.writeUInt32LE(s.iface, 8);
    writeTs(b, 12, s.end);
  });
}

function tsOption(ts: bigint): Buffer {
  const b = Buffer.alloc(8);
  writeTs(b, 0, ts);
  return b;
}

const GSO_NAMES: Record<number, string> = {
  [VIRTIO_NET_HDR_GSO_TCPV4]: 'tcpv4', [VIRTIO_NET_HDR_GSO_UDP]: 'udp', [VIRTIO_NET_HDR_GSO_TCPV6]: 'tcpv6', [VIRTIO_NET_HDR_GSO_UDP_L4]: 'udp_l4',
};

/**
 * The virtio-net header in words (the packet comment): what a super-frame or a partial checksum
 * asks of whoever sends it on. Undefined for an all-zero header (a plain frame).
 */
export function describeVnetHeader(b: Uint8Array, at: number): string | undefined {
  const flags = b[at]!;
  const gso = b[at + 1]!;
  if (flags === 0 && gso === 0) return undefined;
  const u16 = (o: number): number => b[at + o]! | (b[at + o + 1]! << 8);
  const parts: string[] = [];
  if (gso !== 0) {
    const type = gso & ~VIRTIO_NET_HDR_GSO_ECN;
    parts.push(`gso ${GSO_NAMES[type] ?? `type ${type}`}${gso & VIRTIO_NET_HDR_GSO_ECN ? '+ecn' : ''} size ${u16(4)} hdr_len ${u16(2)}`);
  }
  if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) parts.push(`needs_csum start ${u16(6)} offset ${u16(8)}`);
  if (flags & VIRTIO_NET_HDR_F_DATA_VALID) parts.push('data_valid');
  return `virtio-net: ${parts.join('; ')}`;
}

/** A block longer than this is not one pier writes: the stream is not what it should be. */
const MAX_BLOCK = 1 << 20;

export interface ReadInterface { name: string; packets: number; received?: number; dropped?: number }

/** The value of option `code` in block b, its options starting at `from`. */
export function readOption(b: Buffer, from: number, code: number): Buffer | undefined {
  for (let at = from; at + 4 <= b.length - 4;) {
    const c = b.readUInt16LE(at);
    const l = b.readUInt16LE(at + 2);
    if (c === OPT_END) return undefined;
    if (c === code) return b.subarray(at + 4, at + 4 + l);
    at += 4 + pad4(l);
  }
  return undefined;
}

/**
 * Splits a pcapng byte stream into blocks, whatever the chunking; keeps what each interface is
 * called and its statistics. `onPacket` sees each Enhanced Packet Block.
 */
export class PcapngBlocks {
  readonly ifaces: ReadInterface[] = [];
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly onPacket?: (iface: ReadInterface, b: Buffer) => void) {}

  push(chunk: Buffer): void {
    let buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    let at = 0;
    while (buf.length - at >= 12) {
      const len = buf.readUInt32LE(at + 4);
      if (len < 12 || len % 4 !== 0 || len > MAX_BLOCK) throw new PierError('EPROTO', `the daemon's capture stream is broken (a block of ${len} bytes)`, 'look at the daemon\'s log');
      if (buf.length - at < len) break;
      this.block(buf.subarray(at, at + len));
      at += len;
    }
    buf = buf.subarray(at);
    this.pending = buf.length > 0 ? Buffer.from(buf) : Buffer.alloc(0);
  }

  get complete(): boolean {
    return this.pending.length === 0;
  }

  private block(b: Buffer): void {
    const type = b.readUInt32LE(0);
    if (type === BT_IDB) {
      this.ifaces.push({ name: readOption(b, 16, IF_NAME)?.toString('utf8') ?? `interface ${this.ifaces.length}`, packets: 0 });
    } else if (type === BT_EPB) {
      const i = this.ifaces[b.readUInt32LE(8)];
      if (!i) return;
      i.packets++;
      this.onPacket?.(i, b);
    } else if (type === BT_ISB) {
      const i = this.ifaces[b.readUInt32LE(8)];
      if (!i) return;
      const recv = readOption(b, 20, ISB_IFRECV);
      const drop = readOption(b, 20, ISB_IFDROP);
      if (recv) i.received = Number(recv.readBigUInt64LE(0));
      if (drop) i.dropped = Number(drop.readBigUInt64LE(0));
    }
  }
}
