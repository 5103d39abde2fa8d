// Shared by the vhost-user leak and fuzz tests (test/vhost-leak.root.test.ts,
// test/vhost-fuzz.root.test.ts): what a daemon process holds (fds, mappings, RSS), a control
// request with a deadline, waiting for a condition, a seeded PRNG, and frames to send.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
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
