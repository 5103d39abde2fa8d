// The vhost-user wire format, both directions, in one place: the 12-byte header, a table that
// says for every request pier knows how big its payload is, how many fds come with it and what
// the answer looks like, and the encoders and decoders of every payload pier sends or reads.
// Pure functions over bytes: no sockets, no state. The device side (src/ports/vhost-user.ts), the
// driver side (src/vhost/driver-backend.ts) and the test frontend all frame and check messages
// here, so hardening one hardens all (QEMU docs/interop/vhost-user.rst, "Message specification").
import * as P from './protocol.ts';

export const HDR_SIZE = P.HDR_SIZE;
export const MAX_PAYLOAD = P.MAX_PAYLOAD;
/** Most fds one message may carry: SET_MEM_TABLE with MAX_REGIONS regions. */
export const MAX_MSG_FDS = 8;
export const MAX_REGIONS = 8;
export const REGION_SIZE = 32;

export interface Header {
  req: number;
  flags: number;
  size: number;
}

/** How a request (frontend -> backend) is framed. */
interface RequestShape {
  /** Exact payload size, or 'memtable' (8 + 32 * regions, the count read from the payload). */
  size: number | 'memtable';
  /** Exact fd count, 'vring' (one unless the NOFD bit of the u64 is set) or 'memtable' (one per region). */
  fds: number | 'vring' | 'memtable';
  /** Size of the answer the backend always sends (GET_*), or 0 when it answers only with REPLY_ACK. */
  reply: number;
}

const SHAPES: Partial<Record<number, RequestShape>> = {
  [P.Req.GET_FEATURES]: { size: 0, fds: 0, reply: 8 },
  [P.Req.SET_FEATURES]: { size: 8, fds: 0, reply: 0 },
  [P.Req.SET_OWNER]: { size: 0, fds: 0, reply: 0 },
  [P.Req.RESET_OWNER]: { size: 0, fds: 0, reply: 0 },
  [P.Req.SET_MEM_TABLE]: { size: 'memtable', fds: 'memtable', reply: 0 },
  [P.Req.SET_VRING_NUM]: { size: 8, fds: 0, reply: 0 },
  [P.Req.SET_VRING_ADDR]: { size: 40, fds: 0, reply: 0 },
  [P.Req.SET_VRING_BASE]: { size: 8, fds: 0, reply: 0 },
  [P.Req.GET_VRING_BASE]: { size: 8, fds: 0, reply: 8 },
  [P.Req.SET_VRING_KICK]: { size: 8, fds: 'vring', reply: 0 },
  [P.Req.SET_VRING_CALL]: { size: 8, fds: 'vring', reply: 0 },
  [P.Req.SET_VRING_ERR]: { size: 8, fds: 'vring', reply: 0 },
  [P.Req.GET_PROTOCOL_FEATURES]: { size: 0, fds: 0, reply: 8 },
  [P.Req.SET_PROTOCOL_FEATURES]: { size: 8, fds: 0, reply: 0 },
  [P.Req.GET_QUEUE_NUM]: { size: 0, fds: 0, reply: 8 },
  [P.Req.SET_VRING_ENABLE]: { size: 8, fds: 0, reply: 0 },
  [P.Req.NET_SET_MTU]: { size: 8, fds: 0, reply: 0 },
  [P.Req.SET_STATUS]: { size: 8, fds: 0, reply: 0 },
  [P.Req.GET_STATUS]: { size: 0, fds: 0, reply: 8 },
};

/** Requests that only read the device's fixed description: any connection may ask them. */
const QUERIES = new Set<number>([P.Req.GET_FEATURES, P.Req.GET_PROTOCOL_FEATURES, P.Req.GET_QUEUE_NUM]);

export function isQuery(req: number): boolean {
  return QUERIES.has(req);
}

/** Size of the body the backend always answers `req` with (0: none, only REPLY_ACK). */
export function replySize(req: number): number {
  return SHAPES[req]?.reply ?? 0;
}

export function requestName(req: number): string {
  return P.REQ_NAMES[req] ?? `request ${req}`;
}

/** A request's name for counters: a known name, or one bucket for every unknown code. */
export function requestKind(req: number): string {
  return P.REQ_NAMES[req] ?? 'unknown request';
}

/**
 * What the header alone says about a message, before its payload is read: null when it may be
 * read, else why the connection cannot go on (a stream cannot be resynchronised past a header
 * that lies about its size, nor trusted with a protocol version it does not speak).
 */
export function headerProblem(h: Header): string | null {
  if ((h.flags & P.FLAG_VERSION_MASK) !== P.VHOST_USER_VERSION) return `protocol version ${h.flags & P.FLAG_VERSION_MASK} in the flags (pier speaks 1)`;
  if (h.size > MAX_PAYLOAD) return `${requestName(h.req)} announces a payload of ${h.size} bytes (at most ${MAX_PAYLOAD})`;
  return null;
}

export function readHeader(dv: DataView, off = 0): Header {
  return { req: dv.getUint32(off, true), flags: dv.getUint32(off + 4, true), size: dv.getUint32(off + 8, true) };
}

/**
 * The verdict on a whole request: 'ok' (framed exactly as the table says), 'unsupported' (a
 * request pier does not implement: never acted on, answered with failure if an answer is
 * asked for) or 'malformed' (known, but the size or the fds disagree with the table).
 */
export type Verdict = { kind: 'ok' } | { kind: 'unsupported' } | { kind: 'malformed'; why: string };

/** Check a request's payload and fd count against the table. Never throws, reads only `p`. */
export function checkRequest(req: number, p: DataView, nfds: number): Verdict {
  const shape = SHAPES[req];
  if (shape === undefined) return { kind: 'unsupported' };
  const size = p.byteLength;
  let wantSize: number;
  let wantFds: number;
  if (shape.size === 'memtable') {
    if (size < 8) return { kind: 'malformed', why: `SET_MEM_TABLE of ${size} bytes has no region count` };
    const n = p.getUint32(0, true);
    if (n < 1 || n > MAX_REGIONS) return { kind: 'malformed', why: `SET_MEM_TABLE with ${n} regions (1..${MAX_REGIONS})` };
    wantSize = 8 + REGION_SIZE * n;
    wantFds = n;
  } else {
    wantSize = shape.size;
    if (size !== wantSize) return { kind: 'malformed', why: `${requestName(req)} of ${size} bytes (expected ${wantSize})` };
    wantFds = shape.fds === 'vring' ? ((p.getUint32(0, true) & P.VRING_NOFD_MASK) !== 0 ? 0 : 1) : (shape.fds as number);
  }
  if (size !== wantSize) return { kind: 'malformed', why: `${requestName(req)} of ${size} bytes (expected ${wantSize})` };
  if (nfds !== wantFds) return { kind: 'malformed', why: `${requestName(req)} with ${nfds} fds (expected ${wantFds})` };
  return { kind: 'ok' };
}

/**
 * Check a reply read by the driver side: it must carry the REPLY flag, answer the request that
 * was asked, be 8 bytes (every reply pier asks for is a u64 or a vring state) and carry no fds.
 */
export function replyProblem(h: Header, asked: number, nfds: number): string | null {
  if ((h.flags & P.FLAG_REPLY) === 0) return `${requestName(h.req)} arrived without the REPLY flag while pier waited for ${requestName(asked)}`;
  if (h.req !== asked) return `a reply to ${requestName(h.req)} arrived while pier waited for ${requestName(asked)}`;
  if (h.size !== 8) return `the reply to ${requestName(asked)} has ${h.size} bytes (expected 8)`;
  if (nfds !== 0) return `the reply to ${requestName(asked)} came with ${nfds} fds (expected none)`;
  return null;
}

// ---- payloads ----

/** A u64 from the wire as an exact number, or -1 when it is 2^53 or more. */
export function safeNumber(v: bigint): number {
  return v < 2n ** 53n ? Number(v) : -1;
}

export function u64(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
  return b;
}

export function readU64(p: DataView): bigint {
  return p.getBigUint64(0, true);
}

/** struct vhost_vring_state: index and num (SET_VRING_NUM, SET_VRING_BASE, GET_VRING_BASE, SET_VRING_ENABLE). */
export function vringState(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, index, true);
  dv.setUint32(4, num, true);
  return b;
}

export function readVringState(p: DataView): { index: number; num: number } {
  return { index: p.getUint32(0, true), num: p.getUint32(4, true) };
}

/** struct vhost_vring_addr: index, flags, then the descriptor, used, avail and log addresses. */
export interface VringAddr {
  index: number;
  desc: number;
  used: number;
  avail: number;
}

export function vringAddr(a: VringAddr): Uint8Array {
  const b = new Uint8Array(40);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, a.index, true);
  dv.setBigUint64(8, BigInt(a.desc), true);
  dv.setBigUint64(16, BigInt(a.used), true);
  dv.setBigUint64(24, BigInt(a.avail), true);
  return b;
}

/** Addresses of 2^53 or more come back as -1. */
export function readVringAddr(p: DataView): VringAddr {
  return {
    index: p.getUint32(0, true),
    desc: safeNumber(p.getBigUint64(8, true)),
    used: safeNumber(p.getBigUint64(16, true)),
    avail: safeNumber(p.getBigUint64(24, true)),
  };
}

/** The u64 of SET_VRING_KICK/CALL/ERR: a vring index and whether an fd comes with it. */
export function vringFile(index: number, nofd = false): Uint8Array {
  return u64(BigInt(index) | (nofd ? BigInt(P.VRING_NOFD_MASK) : 0n));
}

export function readVringFile(p: DataView): { index: number; nofd: boolean } {
  const v = p.getUint32(0, true);
  return { index: v & P.VRING_IDX_MASK, nofd: (v & P.VRING_NOFD_MASK) !== 0 };
}

/** One region of a memory table (VhostUserMemoryRegion; the kernel's vhost_memory_region). */
export interface MemRegion {
  gpa: number;
  size: number;
  uva: number;
  /** Offset in the region's file (vhost-user); the kernel's field is padding and gets 0. */
  mmapOffset: number;
}

/**
 * A memory table: u32 count, u32 padding, then 32 bytes per region. vhost-user's
 * SET_MEM_TABLE payload and the kernel's struct vhost_memory have the same layout.
 */
export function memTable(regions: readonly MemRegion[]): Uint8Array {
  const b = new Uint8Array(8 + REGION_SIZE * regions.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, regions.length, true);
  regions.forEach((r, i) => {
    const o = 8 + REGION_SIZE * i;
    dv.setBigUint64(o, BigInt(r.gpa), true);
    dv.setBigUint64(o + 8, BigInt(r.size), true);
    dv.setBigUint64(o + 16, BigInt(r.uva), true);
    dv.setBigUint64(o + 24, BigInt(r.mmapOffset), true);
  });
  return b;
}

/** Regions of a checked SET_MEM_TABLE payload (checkRequest said 'ok'); values of 2^53 or more as -1. */
export function readMemTable(p: DataView): MemRegion[] {
  const n = p.getUint32(0, true);
  const out: MemRegion[] = [];
  for (let i = 0; i < n && 8 + REGION_SIZE * (i + 1) <= p.byteLength; i++) {
    const o = 8 + REGION_SIZE * i;
    out.push({
      gpa: safeNumber(p.getBigUint64(o, true)), size: safeNumber(p.getBigUint64(o + 8, true)),
      uva: safeNumber(p.getBigUint64(o + 16, true)), mmapOffset: safeNumber(p.getBigUint64(o + 24, true)),
    });
  }
  return out;
}

/** A whole message: header and payload in one buffer, ready for sendmsg. */
export function message(req: number, payload: Uint8Array = EMPTY, flags = P.VHOST_USER_VERSION): Uint8Array {
  const m = new Uint8Array(HDR_SIZE + payload.length);
  const dv = new DataView(m.buffer);
  dv.setUint32(0, req, true);
  dv.setUint32(4, flags, true);
  dv.setUint32(8, payload.length, true);
  m.set(payload, HDR_SIZE);
  return m;
}

export const EMPTY = new Uint8Array(0);

/** The REPLY_ACK body: 0 for success, anything else for failure. */
export function ack(failed: boolean): Uint8Array {
  return u64(failed ? 1n : 0n);
}
