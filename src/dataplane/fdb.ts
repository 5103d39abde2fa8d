// The forwarding database: (VLAN, MAC address) -> port, learned from source addresses, aged out.
// Open addressing with linear probing in typed arrays: a lookup or a refresh allocates nothing.
// A MAC is held as a 48-bit integer in a double (exact below 2^53), its VLAN (0..4095) beside it
// in a Uint16Array: 48 + 12 bits do not fit one double. VLAN 0 (a bridge without VLANs) hashes
// exactly as before, and the VLAN is compared only on a MAC match.
//
// No port can take the table over or fill it (docs/design/port-security.md): a secured port's
// MACs are static entries that never move or age; each port learns at most its limit; a table
// full anyway makes room for a port that holds fewer entries than the biggest holder. Per-port
// counts are kept in a Map touched only when an entry is made, moved or removed, never on a
// refresh, so the per-packet path is as before.

const EMPTY = -1;

/** What learn() did: the source is known on that port now, or why it is not. */
export const LEARNED = 0;
/** The MAC is another port's static entry (a secured port's own): not moved. */
export const LEARN_STATIC = 1;
/** The port is at its mac-limit. */
export const LEARN_LIMIT = 2;
/** The table is full and the port is not owed room. */
export const LEARN_FULL = 3;

/** A MAC that moves more often than this within FLAP_WINDOW seconds is flapping. */
const FLAP_MOVES = 8;
const FLAP_WINDOW = 1;

/** Slots for a table of `entries` (at 3/4 of its slots, a power of two, at least 16). */
export function slotsFor(entries: number): number {
  let c = 16;
  while ((c * 3) / 4 < entries) c *= 2;
  return c;
}

export class Fdb {
  readonly capacity: number;
  /** Entries learned at most (static ones count too). */
  readonly maxEntries: number;
  private readonly mask: number;
  private readonly keys: Float64Array;
  private readonly vids: Uint16Array;
  private readonly ports: Int32Array;
  private readonly seen: Float64Array;
  private readonly expired: Float64Array;
  private readonly expiredVid: Uint16Array;
  /** 1: a static entry (a secured port's MAC): never aged, never moved by learning. */
  private readonly statics: Uint8Array;
  /** Moves within the current flap window, and when that window began, per slot. */
  private readonly moveCount: Uint8Array;
  private readonly moveSince: Float64Array;
  /** Learned (not static) entries per port, and each port's limit (absent or 0: none). */
  private readonly held = new Map<number, number>();
  private readonly limits = new Map<number, number>();
  size = 0;
  /** Learning refused because the table was full (the frame still floods correctly). */
  full = 0;
  /** Stations followed from one port to another. */
  moves = 0;
  /** Entries evicted to make room for a port owed it. */
  evicted = 0;
  /** The last flapping station seen (for an event), and how many were seen. */
  flaps = 0;
  lastFlap = { mac: 0, vid: 0, from: 0, to: 0 };

  /**
   * `capacity` slots (a power of two); at most `maxEntries` entries, 3/4 of the slots by default
   * and never more, so an empty slot always ends a probe (pier daemon --fdb-size asks for an
   * exact number: slotsFor() rounds the slots up).
   */
  constructor(capacity = 8192, public agingSeconds = 300, maxEntries = (capacity * 3) / 4) {
    // At least 16 slots, so the 3/4 limit always leaves an empty slot to end every probe.
    if (!Number.isInteger(capacity) || capacity < 16 || (capacity & (capacity - 1)) !== 0) {
      throw new Error(`fdb capacity must be a power of two of at least 16 (got ${capacity})`);
    }
    this.capacity = capacity;
    this.maxEntries = Math.min(maxEntries, (capacity * 3) / 4);
    this.mask = capacity - 1;
    this.keys = new Float64Array(capacity).fill(EMPTY);
    this.vids = new Uint16Array(capacity);
    this.ports = new Int32Array(capacity);
    this.seen = new Float64Array(capacity);
    this.expired = new Float64Array(capacity);
    this.expiredVid = new Uint16Array(capacity);
    this.statics = new Uint8Array(capacity);
    this.moveCount = new Uint8Array(capacity);
    this.moveSince = new Float64Array(capacity);
  }

  /** Learned entries `port` may hold (0: only the table's size). */
  setLimit(port: number, limit: number): void {
    if (limit > 0) this.limits.set(port, limit);
    else this.limits.delete(port);
  }

  /** Learned (not static) entries held by `port`. */
  heldBy(port: number): number {
    return this.held.get(port) ?? 0;
  }

  private hold(port: number, d: number): void {
    const n = (this.held.get(port) ?? 0) + d;
    if (n > 0) this.held.set(port, n);
    else this.held.delete(port);
  }

  private slot(mac: number, vid: number): number {
    const lo = mac % 0x100000000;
    const hi = (mac - lo) / 0x100000000;
    return (Math.imul(lo ^ Math.imul(hi ^ (vid << 16), 0x9e3779b1), 0x85ebca6b) >>> 15) & this.mask;
  }

  /** Record that `mac` was seen on `port` in VLAN `vid` at time `now` (seconds). Returns LEARNED or why not. */
  learn(mac: number, port: number, now: number, vid = 0): number {
    let i = this.slot(mac, vid);
    for (;;) {
      const k = this.keys[i]!;
      if (k === mac && this.vids[i] === vid) {
        const was = this.ports[i]!;
        if (was === port) {
          this.seen[i] = now;
          return LEARNED;
        }
        if (this.statics[i] === 1) return LEARN_STATIC;
        return this.move(i, was, port, now);
      }
      if (k === EMPTY) break;
      i = (i + 1) & this.mask;
    }
    const limit = this.limits.get(port) ?? 0;
    const holds = this.held.get(port) ?? 0;
    if (limit > 0 && holds >= limit) return LEARN_LIMIT;
    if (this.size >= this.maxEntries) {
      // Full: room is made only for a port holding fewer entries than the biggest holder, by
      // taking that holder's oldest entry; the slot found above may move with the deletion.
      if (!this.evictFor(holds)) {
        this.full++;
        return LEARN_FULL;
      }
      return this.learn(mac, port, now, vid);
    }
    this.keys[i] = mac;
    this.vids[i] = vid;
    this.ports[i] = port;
    this.seen[i] = now;
    this.statics[i] = 0;
    this.moveCount[i] = 0;
    this.size++;
    this.hold(port, 1);
    return LEARNED;
  }

  /** A station seen on another port: followed (a migrated VM), counted, flapping noticed. */
  private move(i: number, from: number, to: number, now: number): number {
    const limit = this.limits.get(to) ?? 0;
    if (limit > 0 && (this.held.get(to) ?? 0) >= limit) return LEARN_LIMIT;
    this.ports[i] = to;
    this.seen[i] = now;
    this.hold(from, -1);
    this.hold(to, 1);
    this.moves++;
    if (now - this.moveSince[i]! > FLAP_WINDOW) {
      this.moveSince[i] = now;
      this.moveCount[i] = 1;
    } else if (this.moveCount[i]! < 255 && ++this.moveCount[i]! === FLAP_MOVES + 1) {
      this.flaps++;
      const f = this.lastFlap;
      f.mac = this.keys[i]!;
      f.vid = this.vids[i]!;
      f.from = from;
      f.to = to;
    }
    return LEARNED;
  }

  /**
   * Evict the oldest learned entry of the port holding the most, if it holds at least two more
   * than `holds` (ports holding about as many as the learner keep theirs: no churn between equals).
   */
  private evictFor(holds: number): boolean {
    let top = -1;
    let most = holds + 1;
    for (const [p, n] of this.held) {
      if (n > most) {
        most = n;
        top = p;
      }
    }
    if (top < 0) return false;
    let oldest = -1;
    for (let i = 0; i < this.capacity; i++) {
      if (this.keys[i] !== EMPTY && this.ports[i] === top && this.statics[i] === 0 && (oldest < 0 || this.seen[i]! < this.seen[oldest]!)) oldest = i;
    }
    if (oldest < 0) return false;
    this.delete(this.keys[oldest]!, this.vids[oldest]);
    this.evicted++;
    return true;
  }

  /**
   * Make `mac` a static entry of `port` in VLAN `vid` (a secured port's own MAC): it replaces a
   * learned entry of the same MAC, and may use the slots above the learning limit (all but one).
   * False when the table has no slot left at all.
   */
  addStatic(mac: number, port: number, vid = 0): boolean {
    this.delete(mac, vid);
    if (this.size >= this.capacity - 1) return false;
    let i = this.slot(mac, vid);
    while (this.keys[i] !== EMPTY) i = (i + 1) & this.mask;
    this.keys[i] = mac;
    this.vids[i] = vid;
    this.ports[i] = port;
    this.seen[i] = 0;
    this.statics[i] = 1;
    this.moveCount[i] = 0;
    this.size++;
    return true;
  }

  /** The port holding `mac` in VLAN `vid` as a static entry, or -1. */
  staticPort(mac: number, vid = 0): number {
    const i = this.find(mac, vid);
    return i >= 0 && this.statics[i] === 1 ? this.ports[i]! : -1;
  }

  /** The slot of (`mac`, `vid`), or -1. */
  private find(mac: number, vid: number): number {
    let i = this.slot(mac, vid);
    for (;;) {
      const k = this.keys[i]!;
      if (k === EMPTY) return -1;
      if (k === mac && this.vids[i] === vid) return i;
      i = (i + 1) & this.mask;
    }
  }

  /** Forget `port`'s static entries (its security changed or it went away). */
  flushStatic(port: number): number {
    return this.removeWhere((i) => this.ports[i] === port && this.statics[i] === 1);
  }

  /** The port `mac` was last seen on in VLAN `vid`, or -1 when unknown or aged out. */
  lookup(mac: number, now: number, vid = 0): number {
    let i = this.slot(mac, vid);
    for (;;) {
      const k = this.keys[i]!;
      if (k === mac && this.vids[i] === vid) return this.statics[i] === 1 || now - this.seen[i]! <= this.agingSeconds ? this.ports[i]! : -1;
      if (k === EMPTY) return -1;
      i = (i + 1) & this.mask;
    }
  }

  delete(mac: number, vid = 0): boolean {
    let i = this.find(mac, vid);
    if (i < 0) return false;
    if (this.statics[i] === 0) this.hold(this.ports[i]!, -1);
    // Backward-shift deletion keeps every remaining key reachable from its home slot.
    let j = i;
    for (;;) {
      j = (j + 1) & this.mask;
      const k = this.keys[j]!;
      if (k === EMPTY) break;
      const home = this.slot(k, this.vids[j]!);
      const between = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!between) {
        this.keys[i] = k;
        this.vids[i] = this.vids[j]!;
        this.ports[i] = this.ports[j]!;
        this.seen[i] = this.seen[j]!;
        this.statics[i] = this.statics[j]!;
        this.moveCount[i] = this.moveCount[j]!;
        this.moveSince[i] = this.moveSince[j]!;
        i = j;
      }
    }
    this.keys[i] = EMPTY;
    this.statics[i] = 0;
    this.size--;
    return true;
  }

  /** Remove entries not refreshed within the aging time; returns how many. */
  age(now: number): number {
    return this.removeWhere((i) => this.statics[i] === 0 && now - this.seen[i]! > this.agingSeconds);
  }

  /** Forget every address learned on `port`, in every VLAN (its VLANs changed); `statics` too when it goes away. */
  flushPort(port: number, statics = true): number {
    return this.removeWhere((i) => this.ports[i] === port && (statics || this.statics[i] === 0));
  }

  /** A port went away: its entries, its limit. */
  forgetPort(port: number): void {
    this.flushPort(port);
    this.limits.delete(port);
    this.held.delete(port);
  }

  private removeWhere(pred: (slot: number) => boolean): number {
    let n = 0;
    for (let i = 0; i < this.capacity; i++) {
      if (this.keys[i] !== EMPTY && pred(i)) {
        this.expired[n] = this.keys[i]!;
        this.expiredVid[n++] = this.vids[i]!;
      }
    }
    for (let i = 0; i < n; i++) this.delete(this.expired[i]!, this.expiredVid[i]);
    return n;
  }

  entries(now: number): Array<{ mac: string; vlan: number; port: number; age: number; static?: true }> {
    const out = [];
    for (let i = 0; i < this.capacity; i++) {
      if (this.keys[i] === EMPTY) continue;
      const e = { mac: macToString(this.keys[i]!), vlan: this.vids[i]!, port: this.ports[i]!, age: this.statics[i] === 1 ? 0 : Math.round(now - this.seen[i]!) };
      out.push(this.statics[i] === 1 ? { ...e, static: true as const } : e);
    }
    return out;
  }

  /** Learned entries and limit per port that holds any or has a limit. */
  perPort(): Array<{ port: number; learned: number; limit: number }> {
    const ports = new Set([...this.held.keys(), ...this.limits.keys()]);
    return [...ports].sort((a, b) => a - b).map((port) => ({ port, learned: this.held.get(port) ?? 0, limit: this.limits.get(port) ?? 0 }));
  }
}

export function macToString(mac: number): string {
  return mac.toString(16).padStart(12, '0').replace(/(..)(?!$)/g, '$1:');
}

export function macFromString(s: string): number {
  return parseInt(s.replace(/:/g, ''), 16);
}
