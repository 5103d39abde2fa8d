// Where each inner MAC lives: inner source MAC -> the VTEP (an index into the port's table of
// remote addresses) it was last seen behind. Open addressing with linear probing in typed arrays,
// like the bridge's FDB (src/dataplane/fdb.ts): a fixed size, no allocation per packet, entries age
// out after the same time (300 s), a station that moves is followed at once. Deletion shifts later
// entries back, so every key stays reachable without tombstones.

const EMPTY = -1;

export class VtepTable {
  readonly capacity: number;
  private readonly mask: number;
  private readonly keys: Float64Array;
  private readonly vteps: Int32Array;
  private readonly seen: Float64Array;
  size = 0;
  /** Learning refused because the table was 3/4 full (frames to such a MAC flood to every remote). */
  full = 0;

  constructor(capacity = 4096, public agingSeconds = 300) {
    if (!Number.isInteger(capacity) || capacity < 16 || (capacity & (capacity - 1)) !== 0) {
      throw new Error(`table capacity must be a power of two of at least 16 (got ${capacity})`);
    }
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.keys = new Float64Array(capacity).fill(EMPTY);
    this.vteps = new Int32Array(capacity);
    this.seen = new Float64Array(capacity);
  }

  private slot(mac: number): number {
    const lo = mac % 0x100000000;
    const hi = (mac - lo) / 0x100000000;
    return (Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b) >>> 15) & this.mask;
  }

  /** `mac` (48-bit integer) was seen behind VTEP `vtep` at `now` (seconds). */
  learn(mac: number, vtep: number, now: number): void {
    let i = this.slot(mac);
    for (;;) {
      const k = this.keys[i]!;
      if (k === mac) {
        this.vteps[i] = vtep;
        this.seen[i] = now;
        return;
      }
      if (k === EMPTY) break;
      i = (i + 1) & this.mask;
    }
    if (this.size >= (this.capacity * 3) / 4) {
      this.full++;
      return;
    }
    this.keys[i] = mac;
    this.vteps[i] = vtep;
    this.seen[i] = now;
    this.size++;
  }

  /** The VTEP `mac` was last seen behind, or -1 when unknown or aged out. */
  lookup(mac: number, now: number): number {
    let i = this.slot(mac);
    for (;;) {
      const k = this.keys[i]!;
      if (k === mac) return now - this.seen[i]! <= this.agingSeconds ? this.vteps[i]! : -1;
      if (k === EMPTY) return -1;
      i = (i + 1) & this.mask;
    }
  }

  delete(mac: number): boolean {
    let i = this.slot(mac);
    for (;;) {
      const k = this.keys[i]!;
      if (k === EMPTY) return false;
      if (k === mac) break;
      i = (i + 1) & this.mask;
    }
    let j = i;
    for (;;) {
      j = (j + 1) & this.mask;
      const k = this.keys[j]!;
      if (k === EMPTY) break;
      const home = this.slot(k);
      const between = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!between) {
        this.keys[i] = k;
        this.vteps[i] = this.vteps[j]!;
        this.seen[i] = this.seen[j]!;
        i = j;
      }
    }
    this.keys[i] = EMPTY;
    this.size--;
    return true;
  }

  /** Remove entries not refreshed within the aging time; returns how many. Not on the packet path. */
  age(now: number): number {
    let n = 0;
    for (let i = 0; i < this.capacity;) {
      const k = this.keys[i]!;
      // delete() may shift a later entry into slot i: look at i again when it did.
      if (k !== EMPTY && now - this.seen[i]! > this.agingSeconds) {
        this.delete(k);
        n++;
        continue;
      }
      i++;
    }
    return n;
  }

  /** Entries per VTEP index (for `pier show`). */
  countByVtep(nvteps: number): number[] {
    const out = new Array<number>(nvteps).fill(0);
    for (let i = 0; i < this.capacity; i++) if (this.keys[i] !== EMPTY) out[this.vteps[i]!] = (out[this.vteps[i]!] ?? 0) + 1;
    return out;
  }

  entries(now: number): Array<{ mac: number; vtep: number; age: number }> {
    const out = [];
    for (let i = 0; i < this.capacity; i++) {
      if (this.keys[i] !== EMPTY) out.push({ mac: this.keys[i]!, vtep: this.vteps[i]!, age: now - this.seen[i]! });
    }
    return out;
  }
}
