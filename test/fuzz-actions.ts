// Shared by the vhost-user leak and fuzz tests (test/vhost-leak.root.test.ts,
// test/vhost-fuzz.root.test.ts): what a daemon process holds (fds, mappings, RSS), a control
// request with a deadline, waiting for a condition, a seeded PRNG, and frames to send.
import { readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { EventFd, libc, memfd, sendWithFds, unixConnect } from '../src/sys/index.ts';
import * as codec from '../src/vhost/codec.ts';
import * as P from '../src/vhost/protocol.ts';
import { Frontend, type GuestMemoryKind } from './frontend.ts';
import { sleep } from './helpers.ts';

// ---- the daemon's footprint ----

export interface Footprint {
  /** Entries of /proc/PID/fd. */
  fds: number;
  /** What each fd points to, inode numbers dropped ("socket:", "anon_inode:[eventfd]", "/memfd:pier-packets (deleted)"), sorted. */
  fdTargets: string[];
  /** Lines of /proc/PID/maps (one per mapping). */
  maps: number;
  /**
   * Mappings inside pier's 4 GiB arena (found by the packet pool's memfd at its start): every
   * peer memory region and every SIGBUS-guard zero page lands there, so an idle daemon has 2
   * (the pool and the rest of the reservation).
   */
  arenaMaps: number;
  /** Shared mappings (rw-s): the pool and peers' memory. */
  sharedMaps: number;
  /** Mappings of a named file or special ([heap], [stack]...): everything but anonymous memory. */
  namedMaps: number;
  /** Threads (/proc/PID/task). */
  threads: number;
  /** VmRSS, KiB. */
  rssKiB: number;
}

const ARENA_SIZE = 2n ** 32n;

export function footprint(pid: number): Footprint {
  const fdTargets: string[] = [];
  for (const n of readdirSync(`/proc/${pid}/fd`)) {
    try {
      fdTargets.push(readlinkSync(`/proc/${pid}/fd/${n}`).replace(/:\[\d+\]$/, ':'));
    } catch {
      // closed between readdir and readlink
    }
  }
  fdTargets.sort();
  const lines = readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.length > 0);
  const parsed = lines.map((l) => {
    const f = l.split(/\s+/);
    const [a, b] = f[0]!.split('-').map((x) => BigInt(`0x${x}`)) as [bigint, bigint];
    return { start: a, end: b, perms: f[1]!, path: f.slice(5).join(' ') };
  });
  const pool = parsed.find((x) => x.path.startsWith('/memfd:pier-packets'));
  const arenaMaps = pool ? parsed.filter((x) => x.end > pool.start && x.start < pool.start + ARENA_SIZE).length : -1;
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return {
    fds: fdTargets.length, fdTargets, maps: lines.length, arenaMaps,
    sharedMaps: parsed.filter((x) => x.perms[3] === 's').length,
    namedMaps: parsed.filter((x) => x.path !== '').length,
    threads: readdirSync(`/proc/${pid}/task`).length,
    rssKiB: m ? Number(m[1]) : -1,
  };
}

/** What differs between two fd lists: "+1 socket:, -2 anon_inode:[eventfd]". */
export function fdDiff(a: readonly string[], b: readonly string[]): string {
  const count = (xs: readonly string[]): Map<string, number> => {
    const m = new Map<string, number>();
    for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
    return m;
  };
  const ca = count(a);
  const cb = count(b);
  const out: string[] = [];
  for (const k of new Set([...ca.keys(), ...cb.keys()])) {
    const d = (cb.get(k) ?? 0) - (ca.get(k) ?? 0);
    if (d !== 0) out.push(`${d > 0 ? '+' : ''}${d} ${k}`);
  }
  return out.join(', ') || 'none';
}

type Figure = 'fds' | 'maps' | 'arenaMaps' | 'sharedMaps' | 'namedMaps' | 'threads' | 'rssKiB';

/** One line for a diagnostic; with `base`, each figure's change from it. */
export function describeFootprint(f: Footprint, base?: Footprint): string {
  const d = (k: Figure): string => {
    if (!base) return '';
    const x = f[k] - base[k];
    return ` (${x >= 0 ? '+' : ''}${x})`;
  };
  return `${f.fds} fds${d('fds')}, ${f.maps} mappings${d('maps')}: ${f.arenaMaps} in the arena${d('arenaMaps')}, ` +
    `${f.sharedMaps} shared${d('sharedMaps')}, ${f.namedMaps} named${d('namedMaps')}; ${f.threads} threads${d('threads')}; VmRSS ${f.rssKiB} KiB${d('rssKiB')}`;
}

/** CPU time (utime + stime, clock ticks) of each thread of `pid`, by thread name. */
export function threadTicks(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue;
    }
    const close = stat.lastIndexOf(')');
    const name = stat.slice(stat.indexOf('(') + 1, close);
    const f = stat.slice(close + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]); // fields 14 and 15: utime, stime
    out.set(`${name}/${tid}`, ticks);
  }
  return out;
}

// ---- the control socket ----

/**
 * One request on the control socket, answered within `timeoutMs` or rejected (a daemon that
 * hangs is an error, not a stuck test). The result, or the daemon's error as an Error.
 */
export function ask<T = any>(socket: string, cmd: string, args: string[] = [], timeoutMs = 2000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const s = createConnection(socket);
    let buf = '';
    let done = false;
    const finish = (e: Error | null, v?: T): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      if (e) reject(e);
      else resolve(v as T);
    };
    const timer = setTimeout(() => finish(new Error(`the daemon did not answer '${cmd}' within ${timeoutMs} ms`)), timeoutMs);
    s.setEncoding('utf8');
    s.once('connect', () => s.write(JSON.stringify({ cmd, args }) + '\n'));
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        const r = JSON.parse(buf.slice(0, nl)) as { ok: boolean; result?: T; error?: { message: string } };
        if (r.ok) finish(null, r.result);
        else finish(new Error(`'${cmd}' failed: ${r.error?.message}`));
      } catch (e) {
        finish(e as Error);
      }
    });
    s.once('error', (e) => finish(e));
    s.once('close', () => finish(new Error(`the daemon closed the control connection without answering '${cmd}'`)));
  });
}

/** Poll `cond` every `every` ms until it holds or `ms` pass; returns whether it held. */
/** The daemon's footprint once its fds and mappings read the same 5 times over a second (no request in between). */
export async function settledFootprint(pid: number): Promise<Footprint> {
  let start = footprint(pid);
  let same = 0;
  const settled = await until(() => {
    const f = footprint(pid);
    same = f.fds === start.fds && f.maps === start.maps ? same + 1 : 0;
    start = f;
    return same >= 5;
  }, 10_000, 200);
  if (!settled) throw new Error('the daemon did not settle before the start figures were taken');
  return start;
}

export async function until(cond: () => boolean | Promise<boolean>, ms = 5000, every = 20): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await sleep(every);
  }
  return cond();
}

// ---- a seeded PRNG (xoshiro128**, seeded through splitmix32): a failure replays from its seed ----

export class Rng {
  private s = new Uint32Array(4);
  constructor(readonly seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }

  /** A uniform u32. */
  u32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return r;
  }

  /** 0..n-1 */
  int(n: number): number {
    return n <= 1 ? 0 : Math.floor((this.u32() / 4294967296) * n);
  }

  /** lo..hi inclusive */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  /** An entry of `[weight, value]` pairs, by weight. */
  weighted<T>(xs: ReadonlyArray<readonly [number, T]>): T {
    let total = 0;
    for (const [w] of xs) total += w;
    let r = this.int(total);
    for (const [w, v] of xs) {
      if (r < w) return v;
      r -= w;
    }
    return xs[xs.length - 1]![1];
  }

  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }

  /** A number that is often at an edge: 0, 1, a power of two and its neighbours, the maximum. */
  edgy(bits: number): number {
    const max = bits >= 53 ? 2 ** 53 - 1 : 2 ** bits - 1;
    switch (this.int(6)) {
      case 0: return 0;
      case 1: return max;
      case 2: return Math.min(max, 2 ** this.int(bits));
      case 3: return Math.max(0, Math.min(max, 2 ** this.int(bits) + this.range(-2, 2)));
      case 4: return this.int(256);
      default: return bits <= 32 ? this.u32() % (max + 1) : Math.floor((this.u32() / 4294967296) * max);
    }
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

// ---- frames ----

/** An ARP request from `mac`/`ip` for `target`. */
export function arpRequest(mac: readonly number[], ip: readonly number[], target: readonly number[]): Uint8Array {
  const f = new Uint8Array(42);
  f.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, ...mac, 0x08, 0x06], 0);
  f.set([0, 1, 0x08, 0, 6, 4, 0, 1, ...mac, ...ip, 0, 0, 0, 0, 0, 0, ...target], 14);
  return f;
}

/** Is `f` an ARP reply from `from` to `mac`? */
export function isArpReply(f: Uint8Array, mac: readonly number[], from: readonly number[]): boolean {
  return f.length >= 42 && f[12] === 0x08 && f[13] === 0x06 && f[21] === 2 &&
    mac.every((b, i) => f[i] === b) && from.every((b, i) => f[28 + i] === b);
}

// ---- the fuzz run: hostile vhost-user frontends, one random action at a time ----
//
// A Session is one connection (a test Frontend) and what the fuzzer knows of it: whether its
// rings are laid out, whether its memory file was shrunk (then the test process must never touch
// its own mapping again: it would take SIGBUS), whether the byte stream is out of step (a lying
// size field or half a message: no answer can be waited for). Every action writes one line to
// the log first, so a failure shows what the daemon was doing.

export const MIB = 1024 * 1024;
const NEED = P.VHOST_USER_VERSION | P.FLAG_NEED_REPLY;
const NET = { CSUM: 0, GUEST_CSUM: 1, MTU: 3, GUEST_TSO4: 7, GUEST_TSO6: 8, HOST_TSO4: 11, HOST_TSO6: 12, MRG_RXBUF: 15, STATUS: 16, CTRL_VQ: 17, MQ: 22 };
const VIRTIO = { INDIRECT: 28, EVENT_IDX: 29, PROTOCOL: 30, VERSION_1: 32 };
/** Payload sizes of the requests pier knows ('mt': a memory table). */
const SIZES: Record<number, number | 'mt'> = { 1: 0, 2: 8, 3: 0, 4: 0, 5: 'mt', 8: 8, 9: 40, 10: 8, 11: 8, 12: 8, 13: 8, 14: 8, 15: 0, 16: 8, 17: 0, 18: 8, 20: 8, 39: 8, 40: 0 };
const ANSWERED = new Set<number>([P.Req.GET_FEATURES, P.Req.GET_PROTOCOL_FEATURES, P.Req.GET_QUEUE_NUM, P.Req.GET_VRING_BASE, P.Req.GET_STATUS]);

export interface RingLayout {
  index: number;
  size: number;
  /** Offsets in the session's memory (= guest-physical addresses: the table maps gpa 0 at offset 0). */
  desc: number;
  avail: number;
  used: number;
  kick: EventFd;
  call: EventFd;
}

export class Session {
  readonly fe: Frontend;
  /** The memory file was shrunk: its mapping in this process must not be touched again. */
  shrunk = false;
  /** setup() completed: vrings 0 and 1 are laid out in memory. */
  ready = false;
  /** The stream is out of step with pier's framing: no answer can be expected. */
  desynced = false;
  closed = false;
  readonly rings = new Map<number, RingLayout>();
  /** Eventfds of earlier setups and extra rings, closed with the session. */
  private readonly eventfds: EventFd[] = [];
  readonly mac: number[];

  constructor(readonly id: number, readonly port: number, readonly kind: GuestMemoryKind, path: string) {
    this.fe = new Frontend(path, kind);
    this.mac = [0x02, 0x84, 0, port, (id >>> 8) & 0xff, id & 0xff];
  }

  get mem(): number {
    return this.fe.mem.size;
  }

  keep(e: EventFd): EventFd {
    this.eventfds.push(e);
    return e;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.fe.close();
    for (const e of this.eventfds) e.close();
  }
}

export interface FuzzPort {
  path: string;
  queuePairs: number;
}

export interface FuzzContext {
  rng: Rng;
  ports: FuzzPort[];
  /** Taps' addresses, for frames the kernel answers. */
  c1: { mac: number[]; ip: number[] };
  c2: { mac: number[]; ip: number[] };
  note(line: string): void;
  sessions: Session[];
  nextSession: number;
  /** fds the test made for one iteration (sent to pier, then closed here). */
  fds: number[];
  /** Raw connections kept open across iterations (idle or with half a message). */
  raw: number[];
  /** Scratch dir for regular files. */
  dir: string;
  counts: Map<string, number>;
}

export function openSession(ctx: FuzzContext, port = ctx.rng.int(ctx.ports.length)): Session {
  const kind = ctx.rng.weighted<GuestMemoryKind>([[3, 'pier'], [4, 'unsealable'], [2, 'sealable']]);
  const s = new Session(ctx.nextSession++, port, kind, ctx.ports[port]!.path);
  ctx.sessions.push(s);
  ctx.note(`s${s.id} connects to port ${port} (${kind} memory)`);
  return s;
}

// ---- fds of every kind ----

const FD_KINDS = ['eventfd', 'eventfd-blocking', 'pipe-r', 'pipe-w', 'memfd-4k', 'memfd-empty', 'memfd-1g', 'memfd-sealed', 'memfd-sealable',
  'shm-file', 'disk-file', 'devnull', 'socket', 'dir', 'own-socket', 'own-memory', 'other-memory'] as const;
type FdKind = (typeof FD_KINDS)[number];

function makeFd(ctx: FuzzContext, s: Session, kind: FdKind): number {
  const keep = (fd: number): number => {
    libc.check(fd, kind);
    ctx.fds.push(fd);
    return fd;
  };
  switch (kind) {
    case 'eventfd': return keep(libc.eventfd(0, libc.EFD_CLOEXEC | libc.EFD_NONBLOCK));
    case 'eventfd-blocking': return keep(libc.eventfd(0, libc.EFD_CLOEXEC));
    case 'pipe-r':
    case 'pipe-w': {
      const p = new Int32Array(2);
      libc.check(libc.pipe2(p, libc.O_CLOEXEC | libc.O_NONBLOCK), 'pipe2');
      ctx.fds.push(p[0]!, p[1]!);
      return kind === 'pipe-r' ? p[0]! : p[1]!;
    }
    case 'memfd-4k':
    case 'memfd-empty':
    case 'memfd-1g':
    case 'memfd-sealable': {
      const fd = keep(libc.memfd_create(`fuzz-${kind}`, libc.MFD_CLOEXEC | (kind === 'memfd-sealable' ? libc.MFD_ALLOW_SEALING : 0)));
      libc.check(libc.ftruncate(fd, kind === 'memfd-4k' ? 4096 : kind === 'memfd-empty' ? 0 : kind === 'memfd-1g' ? 1024 * MIB : 8 * MIB), 'ftruncate');
      return fd;
    }
    case 'memfd-sealed': return keep(memfd('fuzz-sealed', 2 * MIB));
    case 'shm-file':
    case 'disk-file': {
      const path = kind === 'shm-file' ? `/dev/shm/pier-fuzz-${process.pid}-${ctx.rng.u32()}` : `${ctx.dir}/file-${ctx.rng.u32()}`;
      const fd = keep(libc.open(path, libc.O_RDWR | libc.O_CLOEXEC | 0o100 /* O_CREAT */, 0o600));
      libc.check(libc.ftruncate(fd, 8 * MIB), 'ftruncate');
      rmSync(path, { force: true });
      return fd;
    }
    case 'devnull': return keep(libc.open('/dev/null', libc.O_RDWR | libc.O_CLOEXEC, 0));
    case 'socket': return keep(libc.socket(libc.AF_UNIX, libc.SOCK_STREAM | libc.SOCK_CLOEXEC, 0));
    case 'dir': return keep(libc.open('/', libc.O_RDONLY | libc.O_CLOEXEC, 0));
    case 'own-socket': return s.fe.fd >= 0 ? s.fe.fd : makeFd(ctx, s, 'socket');
    case 'own-memory': return s.fe.mem.fd;
    case 'other-memory': {
      const others = ctx.sessions.filter((o) => !o.closed && o !== s);
      return others.length > 0 ? ctx.rng.pick(others).fe.mem.fd : s.fe.mem.fd;
    }
  }
}

function randomFds(ctx: FuzzContext, s: Session, n: number, likely: FdKind = 'eventfd'): { fds: number[]; kinds: string[] } {
  const fds: number[] = [];
  const kinds: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = ctx.rng.chance(0.5) ? likely : ctx.rng.pick(FD_KINDS);
    fds.push(makeFd(ctx, s, k));
    kinds.push(k);
  }
  return { fds, kinds };
}

export function closeIterationFds(ctx: FuzzContext): void {
  for (const fd of ctx.fds.splice(0)) libc.close(fd);
}

// ---- messages ----

function send(s: Session, req: number, payload: Uint8Array, fds: number[] = [], flags: number = P.VHOST_USER_VERSION, size = payload.length): void {
  s.fe.send(req, payload, fds, flags, size);
}

function vringIndex(rng: Rng, s: Session, ctx: FuzzContext): number {
  const qp = ctx.ports[s.port]!.queuePairs;
  return rng.weighted([[6, rng.int(2)], [2, rng.int(2 * qp + 1)], [1, rng.range(2 * qp + 1, 255)], [1, rng.u32()]]);
}

/** An address the frontend might give for a ring: its own memory mostly, sometimes nonsense. */
function uvaAddr(rng: Rng, s: Session): bigint {
  const base = BigInt(s.fe.mem.addr);
  const mem = s.mem;
  return rng.weighted<bigint>([
    [5, base + BigInt(rng.int(mem / 4096) * 4096)],
    [2, base + BigInt(rng.int(mem))],
    [2, base + BigInt(mem - rng.range(0, 64))],
    [1, base + BigInt(mem + rng.int(MIB))],
    [1, 0n],
    [1, rng.u64()],
    [1, 2n ** 53n - 1n],
    [1, 2n ** 64n - 1n],
  ]);
}

function u64Payload(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
  return b;
}

function statePayload(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, index >>> 0, true);
  dv.setUint32(4, num >>> 0, true);
  return b;
}

function rawMemTable(count: number, regions: Array<[bigint, bigint, bigint, bigint]>): Uint8Array {
  const b = new Uint8Array(8 + 32 * regions.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, count >>> 0, true);
  regions.forEach(([gpa, size, uva, off], i) => {
    const o = 8 + 32 * i;
    dv.setBigUint64(o, BigInt.asUintN(64, gpa), true);
    dv.setBigUint64(o + 8, BigInt.asUintN(64, size), true);
    dv.setBigUint64(o + 16, BigInt.asUintN(64, uva), true);
    dv.setBigUint64(o + 24, BigInt.asUintN(64, off), true);
  });
  return b;
}

/** A memory table with random regions; returns the payload, its fds and a description. */
function randomMemTable(ctx: FuzzContext, s: Session): { payload: Uint8Array; fds: number[]; what: string } {
  const rng = ctx.rng;
  const mem = BigInt(s.mem);
  const base = BigInt(s.fe.mem.addr);
  const n = rng.weighted([[6, 1], [3, rng.range(2, 8)]]);
  const regions: Array<[bigint, bigint, bigint, bigint]> = [];
  const fds: number[] = [];
  const what: string[] = [];
  for (let i = 0; i < n; i++) {
    const shape = rng.weighted<string>([[6, 'whole'], [3, 'part'], [2, 'past-end'], [1, 'unaligned'], [2, 'huge'], [2, 'overlap'], [1, 'zero'], [1, 'random']]);
    const gpa = BigInt(i) * mem;
    let r: [bigint, bigint, bigint, bigint];
    switch (shape) {
      case 'whole': r = [gpa, mem, base + gpa, 0n]; break;
      case 'part': {
        const off = BigInt(rng.int(s.mem / 4096) * 4096);
        r = [gpa, BigInt(rng.range(1, Number(mem - off))), base + gpa, off];
        break;
      }
      case 'past-end': r = rng.chance(0.5) ? [gpa, mem + BigInt(4096 * rng.range(1, 512)), base + gpa, 0n] : [gpa, 4096n, base + gpa, mem]; break;
      case 'unaligned': r = [gpa, 4096n, base + gpa, BigInt(rng.range(1, 4095))]; break;
      case 'huge': r = [gpa, rng.pick([2n ** 30n, 2n ** 40n, 2n ** 52n, 2n ** 53n - 1n, 2n ** 63n, 2n ** 64n - 1n]), base + gpa, rng.pick([0n, 2n ** 52n, 2n ** 64n - 4096n])]; break;
      case 'overlap': r = regions.length > 0 ? [regions[0]![0] + BigInt(rng.int(4096)), mem, regions[0]![2] + BigInt(rng.int(2)) * 4096n, 0n] : [gpa, mem, base, 0n]; break;
      case 'zero': r = [gpa, 0n, base + gpa, 0n]; break;
      default: r = [rng.u64(), rng.u64(), rng.u64(), rng.u64()];
    }
    regions.push(r);
    const fk = rng.weighted<FdKind>([[8, 'own-memory'], [2, 'other-memory'], [4, rng.pick(FD_KINDS)]]);
    fds.push(makeFd(ctx, s, fk));
    what.push(`${shape}/${fk}`);
  }
  let count = n;
  if (rng.chance(0.08)) count = rng.pick([0, 9, 255, rng.u32()]);
  if (rng.chance(0.08)) {
    if (rng.chance(0.5) || fds.length === 1) fds.push(makeFd(ctx, s, 'own-memory'));
    else fds.pop();
  }
  return { payload: rawMemTable(count, regions), fds, what: `count ${count}, ${n} regions [${what.join(' ')}], ${fds.length} fds` };
}

// ---- frames ----

function frameTo(ctx: FuzzContext, s: Session): { frame: Uint8Array; hdr: Uint8Array; what: string } {
  const rng = ctx.rng;
  const others = ctx.sessions.filter((o) => o !== s && !o.closed);
  const dst = rng.weighted<number[]>([[4, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]], [4, ctx.c1.mac], [4, ctx.c2.mac],
    [2, others.length > 0 ? rng.pick(others).mac : ctx.c2.mac], [1, [0x01, 0x00, 0x5e, 0, 0, rng.int(256)]], [1, [...rng.bytes(6)]]]);
  const kind = rng.weighted<string>([[3, 'arp'], [5, 'ipv4'], [3, 'ipv6'], [1, 'vlan'], [1, 'garbage'], [1, 'runt']]);
  const myIp = [10, 84, 0, 100 + (s.id % 100)];
  const target = rng.chance(0.5) ? ctx.c1 : ctx.c2;
  let frame: Uint8Array;
  let l4 = 0;
  let tcp = true;
  if (kind === 'arp') {
    frame = arpRequest(s.mac, myIp, target.ip);
    frame.set(dst, 0);
  } else if (kind === 'garbage' || kind === 'runt') {
    frame = rng.bytes(kind === 'runt' ? rng.int(14) : rng.weighted([[3, rng.range(14, 200)], [1, rng.range(200, 9100)], [1, rng.range(9100, 65550)]]));
  } else {
    const gsoish = rng.chance(0.4);
    const payload = gsoish ? rng.range(0, 64000) : rng.weighted([[3, rng.range(0, 1460)], [1, rng.range(1460, 9000)]]);
    const v6 = kind === 'ipv6';
    const vlan = kind === 'vlan' ? 4 : 0;
    const l3 = 14 + vlan;
    const ipLen = v6 ? 40 : rng.chance(0.9) ? 20 : 4 * rng.int(16);
    tcp = rng.chance(0.7);
    const l4Len = tcp ? (rng.chance(0.9) ? 20 : 4 * rng.int(16)) : 8;
    l4 = l3 + ipLen;
    frame = new Uint8Array(Math.max(l4 + l4Len + payload, 14));
    const dv = new DataView(frame.buffer);
    frame.set(dst, 0);
    frame.set(s.mac, 6);
    if (vlan) {
      dv.setUint16(12, 0x8100);
      dv.setUint16(14, rng.int(4096));
    }
    dv.setUint16(12 + vlan, v6 ? 0x86dd : 0x0800);
    const proto = rng.chance(0.9) ? (tcp ? 6 : 17) : rng.int(256);
    if (v6) {
      frame[l3] = 0x60;
      dv.setUint16(l3 + 4, rng.chance(0.85) ? l4Len + payload : rng.int(65536));
      frame[l3 + 6] = proto;
      frame[l3 + 7] = 64;
      frame.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...myIp], l3 + 8);
      frame.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ...target.ip], l3 + 24);
    } else if (l3 + 20 <= frame.length) {
      frame[l3] = 0x40 | ((ipLen / 4) & 0xf);
      dv.setUint16(l3 + 2, rng.chance(0.85) ? ipLen + l4Len + payload : rng.int(65536));
      dv.setUint16(l3 + 6, rng.chance(0.8) ? 0x4000 : rng.int(65536));
      frame[l3 + 8] = 64;
      frame[l3 + 9] = proto;
      frame.set(myIp, l3 + 12);
      frame.set(target.ip, l3 + 16);
    }
    if (tcp && l4 + 20 <= frame.length) {
      dv.setUint16(l4, 40000 + rng.int(1000));
      dv.setUint16(l4 + 2, rng.pick([22, 80, 5201, rng.int(65536)]));
      dv.setUint32(l4 + 4, rng.u32());
      frame[l4 + 12] = ((l4Len / 4) & 0xf) << 4;
      frame[l4 + 13] = rng.pick([0x18, 0x02, 0x10, rng.int(256)]);
      dv.setUint16(l4 + 14, 65535);
    } else if (!tcp && l4 + 8 <= frame.length) {
      dv.setUint16(l4, 40000 + rng.int(1000));
      dv.setUint16(l4 + 2, rng.pick([53, 4789, rng.int(65536)]));
      dv.setUint16(l4 + 4, rng.chance(0.85) ? 8 + payload : rng.int(65536));
    }
    for (let i = l4 + l4Len; i < frame.length; i += 61) frame[i] = i & 0xff;
  }
  // The virtio-net header: mostly sensible for what the frame is, often not.
  const hdr = new Uint8Array(12);
  const hv = new DataView(hdr.buffer);
  hdr[0] = rng.weighted([[5, 0], [4, 1], [1, 2], [1, 3], [1, rng.int(256)]]);
  hdr[1] = rng.weighted([[6, 0], [3, kind === 'ipv6' ? 4 : tcp ? 1 : 5], [1, 3], [1, 0x81], [1, rng.int(256)]]);
  const honestHdrLen = l4 > 0 ? l4 + (tcp ? 20 : 8) : 0;
  hv.setUint16(2, rng.chance(0.7) ? honestHdrLen : rng.edgy(16), true);
  hv.setUint16(4, rng.weighted([[2, 0], [4, 1448], [1, 536], [1, 1], [1, 8], [1, 9000], [1, 65535], [1, rng.int(65536)]]), true);
  hv.setUint16(6, rng.chance(0.7) ? l4 : rng.edgy(16), true);
  hv.setUint16(8, rng.chance(0.7) ? (tcp ? 16 : 6) : rng.edgy(16), true);
  hv.setUint16(10, rng.chance(0.9) ? 0 : rng.int(65536), true);
  return { frame, hdr, what: `${kind} ${frame.length}B to ${dst.map((b) => b.toString(16)).join(':')} hdr ${[...hdr.subarray(0, 10)].join(',')}` };
}

// ---- rings ----

function recordSetupRings(s: Session): void {
  for (let q = 0; q < 2; q++) {
    const dq = s.fe.queues[q]!;
    s.rings.set(q, { index: q, size: dq.size, desc: dq.descOff, avail: dq.availOff, used: dq.usedOff, kick: s.fe.kicks[q]!, call: s.fe.calls[q]! });
  }
}

function writeDesc(s: Session, table: number, i: number, addr: bigint, len: number, flags: number, next: number): void {
  const dv = s.fe.space.dv;
  dv.setBigUint64(table + 16 * i, BigInt.asUintN(64, addr), true);
  dv.setUint32(table + 16 * i + 8, len >>> 0, true);
  dv.setUint16(table + 16 * i + 12, flags & 0xffff, true);
  dv.setUint16(table + 16 * i + 14, next & 0xffff, true);
}

function randomDesc(rng: Rng, s: Session, size: number, i: number): [bigint, number, number, number] {
  const mem = s.mem;
  const addr = rng.weighted<bigint>([
    [6, BigInt(MIB + rng.int(mem - 2 * MIB))],
    [2, BigInt(mem - rng.range(0, 64))],
    [1, BigInt(rng.int(0x40000))], // over the rings
    [1, BigInt(mem + rng.int(MIB))],
    [1, 0n],
    [1, rng.u64()],
  ]);
  const len = rng.weighted([[5, rng.range(14, 1600)], [2, rng.range(0, 13)], [1, rng.range(1600, 70000)], [1, 0xffffffff], [1, 2 ** 31]]);
  const flags = rng.weighted([[4, 0], [4, 1], [3, 2], [2, 3], [2, 4], [1, 5], [1, 6], [1, rng.int(65536)]]);
  const next = rng.weighted([[5, (i + 1) % size], [3, rng.int(size)], [1, size + rng.int(100)], [1, 0xffff]]);
  return [addr, len, flags, next];
}

function ringAction(ctx: FuzzContext, s: Session): void {
  const rng = ctx.rng;
  const r = s.rings.get(rng.pick([...s.rings.keys()]))!;
  const dv = s.fe.space.dv;
  const bytes = s.fe.space.bytes;
  const kind = rng.weighted<string>([[5, 'chains'], [2, 'jump'], [2, 'loop'], [3, 'indirect'], [2, 'flags'], [2, 'scribble'], [3, 'scatter']]);
  const idx = dv.getUint16(r.avail + 2, true);
  const publish = (heads: number[]): void => {
    heads.forEach((h, j) => dv.setUint16(r.avail + 4 + 2 * ((idx + j) % r.size), h, true));
    dv.setUint16(r.avail + 2, (idx + heads.length) & 0xffff, true);
  };
  let what: string;
  switch (kind) {
    case 'chains': {
      const k = rng.range(1, 8);
      const heads: number[] = [];
      for (let j = 0; j < k; j++) {
        const i = rng.int(r.size);
        const [a, l, f, n] = randomDesc(rng, s, r.size, i);
        writeDesc(s, r.desc, i, a, l, f, n);
        if (rng.chance(0.6)) heads.push(rng.chance(0.9) ? i : rng.int(65536));
      }
      publish(heads);
      what = `${k} random descriptors, heads ${heads.join(',')}`;
      break;
    }
    case 'jump': {
      const to = rng.pick([idx + r.size, idx + r.size + 1, idx - 1, rng.int(65536), idx + rng.int(r.size)]) & 0xffff;
      dv.setUint16(r.avail + 2, to, true);
      what = `avail.idx ${idx} -> ${to}`;
      break;
    }
    case 'loop': {
      const a = rng.int(r.size);
      const b = rng.int(r.size);
      writeDesc(s, r.desc, a, BigInt(MIB), 64, 1 | (rng.chance(0.3) ? 2 : 0), b);
      writeDesc(s, r.desc, b, BigInt(MIB + 4096), 64, 1 | (rng.chance(0.3) ? 2 : 0), a);
      publish([a]);
      what = `loop ${a} <-> ${b}`;
      break;
    }
    case 'indirect': {
      const i = rng.int(r.size);
      const table = 2 * MIB + 16 * rng.int(4096);
      const n = rng.range(1, 40);
      for (let j = 0; j < n; j++) {
        const [a, l, f, nx] = randomDesc(rng, s, n, j);
        writeDesc(s, table, j, a, l, rng.chance(0.7) ? f & 3 : f, nx);
      }
      const len = rng.weighted([[5, 16 * n], [1, 0], [1, 15], [1, 16 * n + 8], [1, 0xfffffff0], [1, rng.u32()]]);
      const taddr = rng.weighted<bigint>([[6, BigInt(table)], [1, BigInt(s.mem - 8)], [1, rng.u64()]]);
      writeDesc(s, r.desc, i, taddr, len, rng.weighted([[6, 4], [1, 5], [1, 6], [1, 7]]), rng.int(r.size));
      publish([i]);
      what = `indirect table of ${n} at ${taddr}, len ${len}`;
      break;
    }
    case 'flags': {
      dv.setUint16(r.avail, rng.int(65536), true);
      if (rng.chance(0.5)) dv.setUint16(r.used, rng.int(65536), true);
      if (rng.chance(0.5)) dv.setUint16(r.avail + 4 + 2 * r.size, rng.int(65536), true); // used_event
      if (rng.chance(0.3)) dv.setUint16(r.used + 2, rng.int(65536), true); // used.idx: the device's
      what = 'ring flags and event indexes';
      break;
    }
    case 'scribble': {
      const from = rng.pick([r.desc, r.avail, r.used]) + rng.int(256);
      const n = rng.range(1, 256);
      bytes.set(rng.bytes(n), from);
      what = `${n} random bytes at ${from}`;
      break;
    }
    default: {
      // A well-formed frame scattered over a chain (or an indirect table), header in its own descriptor or not.
      const { frame, hdr } = frameTo(ctx, s);
      const total = new Uint8Array(12 + frame.length);
      total.set(hdr);
      total.set(frame, 12);
      const parts = rng.range(1, 6);
      const cut = [0, ...Array.from({ length: parts - 1 }, () => rng.int(total.length + 1)).sort((a, b) => a - b), total.length];
      const indirect = rng.chance(0.3);
      const table = indirect ? 3 * MIB + 16 * rng.int(4096) : r.desc;
      let at = 4 * MIB + rng.int(2 * MIB);
      const slots = indirect ? cut.slice(1).map((_, j) => j) : cut.slice(1).map(() => rng.int(r.size));
      for (let j = 0; j < parts; j++) {
        const seg = total.subarray(cut[j], cut[j + 1]);
        bytes.set(seg, at);
        const last = j === parts - 1;
        writeDesc(s, table, slots[j]!, BigInt(at), seg.length, last ? 0 : 1, last ? 0 : slots[j + 1]!);
        at += seg.length + 64;
      }
      if (indirect) {
        const i = rng.int(r.size);
        writeDesc(s, r.desc, i, BigInt(table), 16 * parts, 4, 0);
        publish([i]);
      } else publish([slots[0]!]);
      what = `a ${total.length}-byte frame over ${parts} descriptors${indirect ? ' (indirect)' : ''}`;
      break;
    }
  }
  ctx.note(`  ring ${r.index} (size ${r.size}) ${kind}: ${what}; kick`);
  r.kick.signal();
}

/** Lay out and start vrings 2.. (a second queue pair, the control queue) by messages. */
function extraRings(ctx: FuzzContext, s: Session): void {
  const rng = ctx.rng;
  const qp = ctx.ports[s.port]!.queuePairs;
  const last = 2 * qp; // the control queue when qp > 1
  const started: number[] = [];
  for (let index = 2; index <= last; index++) {
    if (rng.chance(0.2)) continue;
    const size = rng.pick([64, 128, 256]);
    const desc = 0x40000 + 0x10000 * index;
    const avail = desc + 16 * size;
    const used = (avail + 6 + 2 * size + 3) & ~3;
    s.fe.space.bytes.fill(0, desc, desc + 0x10000);
    const kick = s.keep(new EventFd());
    const call = s.keep(new EventFd());
    const base = BigInt(s.fe.mem.addr);
    const addr = new Uint8Array(40);
    const dv = new DataView(addr.buffer);
    dv.setUint32(0, index, true);
    dv.setBigUint64(8, base + BigInt(desc), true);
    dv.setBigUint64(16, base + BigInt(used), true);
    dv.setBigUint64(24, base + BigInt(avail), true);
    send(s, P.Req.SET_VRING_NUM, statePayload(index, size));
    send(s, P.Req.SET_VRING_BASE, statePayload(index, 0));
    send(s, P.Req.SET_VRING_ADDR, addr);
    send(s, P.Req.SET_VRING_CALL, u64Payload(BigInt(index)), [call.fd]);
    send(s, P.Req.SET_VRING_KICK, u64Payload(BigInt(index)), [kick.fd]);
    send(s, P.Req.SET_VRING_ENABLE, statePayload(index, 1));
    s.rings.set(index, { index, size, desc, avail, used, kick, call });
    started.push(index);
  }
  ctx.note(`  vrings ${started.join(',')} laid out and enabled`);
}

// ---- the actions ----

/** A request pier always answers, and its answer: everything sent before it was handled. False when it cannot be had. */
async function roundTrip(s: Session): Promise<boolean> {
  if (s.desynced) return false;
  s.fe.send(P.Req.GET_FEATURES);
  for (let i = 0; i < 20; i++) if ((await s.fe.reply(1000)).req === P.Req.GET_FEATURES) return true;
  return false;
}

interface Action {
  name: string;
  weight: number;
  when(s: Session, ctx: FuzzContext): boolean;
  run(ctx: FuzzContext, s: Session): Promise<void> | void;
}

const touchable = (s: Session): boolean => !s.shrunk;

const ACTIONS: Action[] = [
  {
    name: 'setup', weight: 8, when: (s) => touchable(s) && !s.desynced,
    async run(ctx, s) {
      const rng = ctx.rng;
      const size = rng.weighted([[6, 64], [2, 256], [1, 16], [1, 1024]]);
      let without = 0n;
      for (const b of [NET.MRG_RXBUF, VIRTIO.VERSION_1, NET.GUEST_TSO4, NET.GUEST_TSO6, NET.GUEST_CSUM, NET.CSUM, VIRTIO.INDIRECT, NET.HOST_TSO4, VIRTIO.PROTOCOL]) {
        if (rng.chance(0.15)) without |= 1n << BigInt(b);
      }
      const custom = rng.chance(0.15) ? randomMemTable(ctx, s) : undefined;
      ctx.note(`  setup: size ${size}, without 0x${without.toString(16)}${custom ? `, table ${custom.what}` : ''}`);
      if (s.ready) for (let q = 0; q < 2; q++) { s.keep(s.fe.kicks[q]!); s.keep(s.fe.calls[q]!); }
      s.ready = false;
      await s.fe.setup(size, without, custom ? { payload: custom.payload, fds: custom.fds } : undefined);
      s.ready = true;
      recordSetupRings(s);
    },
  },
  {
    name: 'traffic', weight: 12, when: (s) => s.ready && touchable(s),
    run(ctx, s) {
      const rng = ctx.rng;
      s.fe.receivedFrames();
      const n = rng.range(0, 16);
      const bufSize = rng.weighted([[4, 2048], [2, 8192], [1, 64], [1, 1526], [1, 65600]]);
      const { frame, hdr, what } = frameTo(ctx, s);
      ctx.note(`  post ${n} rx buffers of ${bufSize}; send ${what}`);
      s.fe.postRx(n, bufSize);
      s.fe.sendFrame(frame, hdr);
    },
  },
  {
    name: 'ring', weight: 14, when: (s) => s.ready && touchable(s) && s.rings.size > 0,
    run: (ctx, s) => ringAction(ctx, s),
  },
  {
    name: 'extra-rings', weight: 3, when: (s, ctx) => s.ready && touchable(s) && ctx.ports[s.port]!.queuePairs > 1,
    run: (ctx, s) => extraRings(ctx, s),
  },
  {
    name: 'memtable', weight: 8, when: () => true,
    run(ctx, s) {
      const t = randomMemTable(ctx, s);
      const flags = ctx.rng.chance(0.5) ? NEED : P.VHOST_USER_VERSION;
      ctx.note(`  SET_MEM_TABLE ${t.what}${flags === NEED ? ' NEED_REPLY' : ''}`);
      send(s, P.Req.SET_MEM_TABLE, t.payload, t.fds, flags);
    },
  },
  {
    name: 'value', weight: 14, when: () => true,
    async run(ctx, s) {
      const rng = ctx.rng;
      const req = rng.pick([P.Req.SET_VRING_NUM, P.Req.SET_VRING_BASE, P.Req.SET_VRING_ADDR, P.Req.SET_VRING_KICK, P.Req.SET_VRING_CALL, P.Req.SET_VRING_ERR,
        P.Req.SET_VRING_ENABLE, P.Req.GET_VRING_BASE, P.Req.SET_FEATURES, P.Req.SET_PROTOCOL_FEATURES, P.Req.SET_OWNER, P.Req.RESET_OWNER,
        P.Req.NET_SET_MTU, P.Req.SET_STATUS, P.Req.GET_STATUS, P.Req.GET_FEATURES, P.Req.GET_PROTOCOL_FEATURES, P.Req.GET_QUEUE_NUM]);
      let payload: Uint8Array = new Uint8Array(0);
      let fds: number[] = [];
      let what = '';
      const index = vringIndex(rng, s, ctx);
      switch (req) {
        case P.Req.SET_VRING_NUM:
          payload = statePayload(index, rng.weighted([[4, rng.pick([64, 256, 1024])], [2, rng.edgy(32)], [1, 3]]));
          break;
        case P.Req.SET_VRING_BASE:
        case P.Req.SET_VRING_ENABLE:
          payload = statePayload(index, rng.weighted([[4, rng.int(2)], [2, rng.edgy(16)], [1, rng.u32()]]));
          break;
        case P.Req.GET_VRING_BASE:
          payload = statePayload(index, 0);
          break;
        case P.Req.SET_VRING_ADDR: {
          payload = new Uint8Array(40);
          const dv = new DataView(payload.buffer);
          dv.setUint32(0, index, true);
          if (rng.chance(0.1)) dv.setUint32(4, rng.u32(), true);
          for (const o of [8, 16, 24, 32]) dv.setBigUint64(o, BigInt.asUintN(64, o === 32 ? rng.u64() : uvaAddr(rng, s)), true);
          break;
        }
        case P.Req.SET_VRING_KICK:
        case P.Req.SET_VRING_CALL:
        case P.Req.SET_VRING_ERR: {
          const nofd = rng.chance(0.15);
          const v = (BigInt(index & 0xff) | (nofd ? 0x100n : 0n)) | (rng.chance(0.05) ? rng.u64() & ~0x1ffn : 0n);
          payload = u64Payload(v);
          let n = nofd ? 0 : 1;
          if (rng.chance(0.08)) n = rng.pick([0, 1, 2, 3]);
          // Sometimes the ring's own kick as its call (pier signals itself).
          const ring = s.rings.get(index & 0xff);
          if (ring && n === 1 && rng.chance(0.15)) {
            fds = [req === P.Req.SET_VRING_CALL ? ring.kick.fd : ring.call.fd];
            what = ' (the ring\'s other eventfd)';
          } else {
            const r = randomFds(ctx, s, n, 'eventfd');
            fds = r.fds;
            what = ` fds ${r.kinds.join(',')}`;
          }
          break;
        }
        case P.Req.SET_FEATURES:
          payload = u64Payload(rng.weighted<bigint>([[5, rng.u64() & 0x1_7060_ffffn], [1, rng.u64()], [1, 0n]]));
          break;
        case P.Req.SET_PROTOCOL_FEATURES:
          payload = u64Payload(rng.weighted<bigint>([[5, BigInt(rng.u32() & 0x1001d)], [1, rng.u64()]]));
          break;
        case P.Req.NET_SET_MTU:
        case P.Req.SET_STATUS:
          payload = u64Payload(rng.weighted<bigint>([[3, BigInt(rng.edgy(16))], [1, rng.u64()]]));
          break;
        default:
          break;
      }
      const flags = rng.chance(0.4) ? NEED : P.VHOST_USER_VERSION;
      ctx.note(`  ${codec.requestName(req)} ${[...payload.subarray(0, 16)].map((b) => b.toString(16).padStart(2, '0')).join('')}${what}${flags === NEED ? ' NEED_REPLY' : ''}`);
      send(s, req, payload, fds, flags);
      if (ANSWERED.has(req) && !s.desynced && rng.chance(0.5)) await s.fe.reply(500);
    },
  },
  {
    name: 'random-message', weight: 5, when: () => true,
    run(ctx, s) {
      const rng = ctx.rng;
      const req = rng.weighted([[6, rng.range(0, 41)], [2, rng.int(256)], [1, rng.u32()]]);
      const shape = SIZES[req];
      const size = rng.weighted([[3, typeof shape === 'number' ? shape : 8 + 32 * rng.range(0, 9)], [3, rng.int(64)], [1, rng.range(64, 4096)]]);
      const payload = rng.bytes(size);
      const flags = rng.weighted([[8, P.VHOST_USER_VERSION], [3, NEED], [1, P.VHOST_USER_VERSION | P.FLAG_REPLY], [1, rng.u32()]]);
      const nfds = rng.weighted([[6, 0], [3, 1], [1, rng.range(2, 4)], [1, rng.range(9, 16)]]);
      const { fds, kinds } = randomFds(ctx, s, nfds, rng.pick(FD_KINDS));
      const lie = rng.chance(0.12) ? rng.weighted([[3, rng.range(0, size + 64)], [1, rng.range(4097, 2 ** 32 - 1)]]) : size;
      ctx.note(`  request ${req} (${codec.requestName(req)}) flags 0x${flags.toString(16)}, ${size} bytes${lie !== size ? ` claiming ${lie}` : ''}, fds [${kinds.join(',')}]`);
      if (lie !== size || (flags & 3) !== 1) s.desynced = true;
      send(s, req, payload, fds, flags, lie);
    },
  },
  {
    name: 'half-message', weight: 2, when: () => true,
    run(ctx, s) {
      const m = codec.message(ctx.rng.pick([P.Req.SET_VRING_BASE, P.Req.SET_FEATURES, P.Req.SET_VRING_ADDR, P.Req.GET_FEATURES]), ctx.rng.bytes(8));
      const n = ctx.rng.range(1, m.length - 1);
      ctx.note(`  ${n} of ${m.length} bytes of a message, left hanging`);
      s.desynced = true;
      s.fe.sendRaw(m.subarray(0, n));
    },
  },
  {
    name: 'shrink', weight: 3, when: (s) => touchable(s),
    run(ctx, s) {
      const rng = ctx.rng;
      if (s.ready) {
        // Everything this process writes into the memory is written first.
        const { frame, hdr } = frameTo(ctx, s);
        s.fe.postRx(rng.range(0, 8));
        try {
          s.fe.sendFrame(frame, hdr);
        } catch {
          // tx ring full: never mind
        }
      }
      const to = rng.pick([0, 4096, 64 * 1024, MIB, 4 * MIB, s.mem - 4096]);
      const r = libc.ftruncate(s.fe.mem.fd, to);
      const regrow = r === 0 && rng.chance(0.3);
      ctx.note(`  ftruncate(${s.kind} memory, ${to}): ${r === 0 ? 'shrunk' : `refused (errno ${libc.errno()})`}${regrow ? ', then grown back' : ''}; kick every ring`);
      if (r === 0) s.shrunk = true; // from here on this process never touches the mapping
      if (regrow) libc.ftruncate(s.fe.mem.fd, s.mem);
      for (const ring of s.rings.values()) ring.kick.signal();
    },
  },
  {
    // The test process must never block itself: it only ever adds 1 to the rings' own eventfds,
    // and saturates or makes blocking only a fresh eventfd that it hands over and never writes again.
    name: 'eventfd', weight: 4, when: (s) => s.rings.size > 0,
    async run(ctx, s) {
      const rng = ctx.rng;
      const r = s.rings.get(rng.pick([...s.rings.keys()]))!;
      const how = rng.weighted<string>([[4, 'kick-storm'], [3, 'saturated-call'], [2, 'saturated-kick'], [1, 'blocking-call'], [1, 'blocking-kick']]);
      ctx.note(`  ring ${r.index}: ${how}`);
      if (how === 'kick-storm') {
        for (let i = rng.range(1, 200); i > 0; i--) r.kick.signal();
        return;
      }
      const e = s.keep(new EventFd());
      const max = BigUint64Array.of(0xfffffffffffffffen);
      const kick = how.endsWith('kick');
      if (how.startsWith('saturated')) libc.writeBuf(e.fd, max, 8); // non-blocking: EAGAIN at worst
      send(s, kick ? P.Req.SET_VRING_KICK : P.Req.SET_VRING_CALL, u64Payload(BigInt(r.index)), [e.fd]);
      if (!how.startsWith('blocking')) return;
      // pier sets O_NONBLOCK when it takes the fd: clear it only after pier has handled the message.
      if (!(await roundTrip(s))) return;
      if (!kick) {
        // Full counter first (while non-blocking: it cannot block this process), then blocking:
        // pier's next notification on this ring blocks until the watchdog interrupts it.
        e.drain();
        libc.writeBuf(e.fd, max, 8);
      }
      const fl = libc.fcntlInt(e.fd, libc.F_GETFL);
      libc.fcntlInt(e.fd, libc.F_SETFL, fl & ~libc.O_NONBLOCK);
      // A kick: pier drains it when the ring goes idle again, and a read of an empty blocking eventfd blocks.
      if (kick) e.signal();
    },
  },
  {
    name: 'too-many-fds', weight: 1, when: () => true,
    run(ctx, s) {
      const { fds } = randomFds(ctx, s, ctx.rng.range(9, 16), 'eventfd');
      ctx.note(`  SET_VRING_CALL with ${fds.length} fds`);
      send(s, P.Req.SET_VRING_CALL, u64Payload(0n), fds);
    },
  },
  {
    name: 'drain', weight: 4, when: () => true,
    run(ctx, s) {
      let n = 0;
      const d = s.fe.conn.read((m) => {
        n++;
        for (const fd of m.fds) libc.close(fd);
      });
      ctx.note(`  read ${n} answers${d ? `; pier ended the session (${d.toString()})` : ''}`);
      if (d) s.desynced = true;
    },
  },
  {
    name: 'newcomer', weight: 3, when: (_s, ctx) => ctx.sessions.filter((o) => !o.closed).length < 4,
    run(ctx) {
      openSession(ctx);
    },
  },
  {
    name: 'idle-connections', weight: 1, when: (_s, ctx) => ctx.raw.length < 100,
    run(ctx) {
      const rng = ctx.rng;
      const n = rng.chance(0.8) ? rng.range(1, 4) : rng.range(15, 20);
      const port = ctx.ports[rng.int(ctx.ports.length)]!;
      const half = rng.chance(0.5);
      ctx.note(`  ${n} raw connections to ${port.path}${half ? ', each with half a header' : ''}`);
      for (let i = 0; i < n; i++) {
        const fd = unixConnect(port.path);
        ctx.raw.push(fd);
        if (half) {
          const part = codec.message(P.Req.GET_FEATURES).subarray(0, rng.range(1, 11));
          sendWithFds(fd, part, part.length);
        }
      }
    },
  },
  {
    name: 'pause', weight: 3, when: () => true,
    async run(ctx) {
      const ms = ctx.rng.int(40);
      ctx.note(`  pause ${ms} ms`);
      await sleep(ms);
    },
  },
  {
    name: 'close', weight: 3, when: () => true,
    run(ctx, s) {
      ctx.note('  close');
      s.close();
    },
  },
];

const SETUP = ACTIONS.find((a) => a.name === 'setup')!;

/** Errors the test's own code raised by mistake (as opposed to a connection pier ended): they fail the run. */
export function isHarnessBug(e: unknown): boolean {
  return e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError || e instanceof SyntaxError;
}

/** One iteration: one to four frontends, a random run of actions, then every one of them closed. */
export async function iteration(ctx: FuzzContext, n: number): Promise<void> {
  const rng = ctx.rng;
  openSession(ctx);
  // Most iterations start with a correct setup, so that rings and traffic get their share.
  const setupFirst = rng.chance(0.75);
  const steps = rng.range(4, 24);
  for (let k = 0; k < steps; k++) {
    const live = ctx.sessions.filter((s) => !s.closed);
    if (live.length === 0) break;
    const s = rng.pick(live);
    const choices = ACTIONS.filter((a) => a.when(s, ctx));
    const a = k === 0 && setupFirst ? SETUP : rng.weighted(choices.map((x) => [x.weight, x] as const));
    ctx.counts.set(a.name, (ctx.counts.get(a.name) ?? 0) + 1);
    ctx.note(`#${n}.${k} s${s.id} ${a.name}`);
    try {
      await a.run(ctx, s);
    } catch (e) {
      if (isHarnessBug(e)) throw e;
      // pier ended the session or refused to read (EPIPE, EOF, a full socket): the frontend's problem.
      ctx.note(`  -> ${(e as Error).message}`);
      s.desynced = true;
    }
  }
  for (const s of ctx.sessions) s.close();
  ctx.sessions.length = 0;
  closeIterationFds(ctx);
  // Raw connections live on for a while (pier lets idle ones go on its own), at most 100.
  while (ctx.raw.length > 0 && (rng.chance(0.5) || ctx.raw.length > 100)) libc.close(ctx.raw.shift()!);
}
