// The forwarding database: (VLAN, MAC address) -> port, learned from source addresses, aged out.
// Open addressing with linear probing in typed arrays: a lookup or a refresh allocates nothing.
// A MAC is held as a 48-bit integer in a double (exact below 2^53), its VLAN (0..4095) beside it
// in a Uint16Array: 48 + 12 bits do not fit one double. VLAN 0 (a bridge without VLANs) hashes
// exactly as before, and the VLAN is compared only on a MAC match.

const EMPTY = -1;

export class Fdb {
  readonly capacity: number;
  private readonly mask: number;
  private readonly keys: Float64Array;
  private readonly vids: Uint16Array;
  private readonly ports: Int32Array;
  private readonly seen: Float64Array;
  private readonly expired: Float64Array;
  private readonly expiredVid: Uint16Array;
  size = 0;
  /** Learning refused because the table was full (the frame still floods correctly). */
  full = 0;

  constructor(capacity = 8192, public agingSeconds = 300) {
    // At least 16 slots, so the 3/4 limit always leaves an empty slot to end every probe.
    if (!Number.isInteger(capacity) || capacity < 16 || (capacity & (capacity - 1)) !== 0) {
      throw new Error(`fdb capacity must be a power of two of at least 16 (got ${capacity})`);
    }
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.keys = new Float64Array(capacity).fill(EMPTY);
    this.vids = new Uint16Array(capacity);
    this.ports = new Int32Array(capacity);
    this.seen = new Float64Array(capacity);
    this.expired = new Float64Array(capacity);
    this.expiredVid = new Uint16Array(capacity);
  }

  private slot(mac: number, vid: number): number {
    const lo = mac % 0x100000000;
    const hi = (mac - lo) / 0x100000000;
    return (Math.imul(lo ^ Math.imul(hi ^ (vid << 16), 0x9e3779b1), 0x85ebca6b) >>> 15) & this.mask;
  }

  /** Record that `mac` was seen on `port` in VLAN `vid` at time `now` (seconds). */
  learn(mac: number, port: number, now: number, vid = 0): void {
    let i = this.slot(mac, vid);
    for (;;) {
      const k = this.keys[i]!;
      if (k === mac && this.vids[i] === vid) {
        this.ports[i] = port; // a station that moved is followed at once
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
    this.vids[i] = vid;
    this.ports[i] = port;
    this.seen[i] = now;
    this.size++;
  }

  /** The port `mac` was last seen on in VLAN `vid`, or -1 when unknown or aged out. */
  lookup(mac: number, now: number, vid = 0): number {
    let i = this.slot(mac, vid);
    for (;;) {
      const k = this.keys[i]!;
      if (k === mac && this.vids[i] === vid) return now - this.seen[i]! <= this.agingSeconds ? this.ports[i]! : -1;
      if (k === EMPTY) return -1;
      i = (i + 1) & this.mask;
    }
  }

  delete(mac: number, vid = 0): boolean {
    let i = this.slot(mac, vid);
    for (;;) {
      const k = this.keys[i]!;
      if (k === EMPTY) return false;
      if (k === mac && this.vids[i] === vid) break;
      i = (i + 1) & this.mask;
    }
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
        i = j;
      }
    }
    this.keys[i] = EMPTY;
    this.size--;
    return true;
  }

  /** Remove entries not refreshed within the aging time; returns how many. */
  age(now: number): number {
    return this.removeWhere((i) => now - this.seen[i]! > this.agingSeconds);
  }

  /** Forget every address learned on `port`, in every VLAN (the port went away, or its VLANs changed). */
  flushPort(port: number): number {
    return this.removeWhere((i) => this.ports[i] === port);
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

  entries(now: number): Array<{ mac: string; vlan: number; port: number; age: number }> {
    const out = [];
    for (let i = 0; i < this.capacity; i++) {
      if (this.keys[i] !== EMPTY) out.push({ mac: macToString(this.keys[i]!), vlan: this.vids[i]!, port: this.ports[i]!, age: Math.round(now - this.seen[i]!) });
    }
    return out;
  }
}

export function macToString(mac: number): string {
  return mac.toString(16).padStart(12, '0').replace(/(..)(?!$)/g, '$1:');
}

export function macFromString(s: string): number {
  return parseInt(s.replace(/:/g, ''), 16);
}
