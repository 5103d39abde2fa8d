// The daemon's dataplane threads (docs/design/threads.md): N engines, each a Dataplane worker;
// which port runs on which; the links that carry each bridge between them. Requests about a
// port go to its thread, bridges are made in every thread.
import { newCounters, readCounters } from '../dataplane/counters.ts';
import { linkRing, linkWaiting, linkWakeAsked } from '../dataplane/link.ts';
import type { FdbEntry, PoolStats, PortSpec } from '../dataplane/protocol.ts';
import type { SecurityConfig } from '../dataplane/security.ts';
import type { VlanConfig } from '../dataplane/vlan.ts';
import { PierError } from '../errors.ts';
import { EventFd, libc } from '../sys/index.ts';
import { Dataplane } from './dataplane.ts';
import type { DataplaneEvent } from '../dataplane/protocol.ts';

/** A link's end on one thread: its port slot and counters. */
interface LinkEnd {
  thread: number;
  peer: number;
  index: number;
  counters: Float64Array;
  /** Control words of the ring this end produces into (src/dataplane/link.ts), for `pier show`. */
  tx: Int32Array;
}

/** A bridge's links (N(N-1) ends) and the eventfds each thread polls for them. */
interface BridgeLinks {
  ends: LinkEnd[];
  wakes: EventFd[];
  /** The links carry VLANs (some port of the bridge has tag= or trunks=). */
  vlans: boolean;
}

/** Every VLAN id: a link between threads is a trunk of all of them on a bridge with VLANs. */
const ALL_VLANS: VlanConfig = { trunks: Array.from({ length: 4094 }, (_, i) => i + 1) };

export interface ThreadStats extends PoolStats {
  thread: number;
  /** Ports (not links) this thread runs. */
  ports: number;
}

export class Dataplanes {
  readonly threads: Dataplane[];
  /** Thread of each port slot in a dataplane (ports and links). */
  private readonly threadOfSlot = new Map<number, number>();
  private readonly links = new Map<number, BridgeLinks>();
  /**
   * The static entry each secured port with a MAC of its own has on its thread, by slot: every
   * other thread holds it too, on its link to that thread (syncStatics), so a port there cannot
   * claim the MAC either.
   */
  private readonly statics = new Map<number, { bridge: number; thread: number; mac: string; vlan: number }>();

  constructor(count: number, poolSize: number, cpus: readonly number[], private readonly allocSlot: () => number, private readonly fdbSize?: number) {
    this.threads = Array.from({ length: count }, (_, i) => new Dataplane(poolSize, cpus.length === 0 ? -1 : cpus[i % cpus.length]!, i));
  }

  get count(): number {
    return this.threads.length;
  }

  set onEvent(fn: (e: DataplaneEvent) => void) {
    for (const t of this.threads) t.onEvent = fn;
  }

  /** Each thread's gauges (GAUGE_* slots). */
  get gauges(): Float64Array[] {
    return this.threads.map((t) => t.gauges);
  }

  get peerWakes(): number {
    return this.threads.reduce((s, t) => s + t.peerWakes, 0);
  }

  /** The thread a port slot is on, or undefined when it is in none. */
  threadOf(index: number): number | undefined {
    return this.threadOfSlot.get(index);
  }

  /** Ports (not links) on each thread. */
  load(): number[] {
    const n = new Array<number>(this.count).fill(0);
    const linkSlots = new Set([...this.links.values()].flatMap((l) => l.ends.map((e) => e.index)));
    for (const [slot, t] of this.threadOfSlot) if (!linkSlots.has(slot)) n[t]!++;
    return n;
  }

  /** Where a new port goes: the thread asked for (checked), else the one with the fewest ports. */
  place(asked: number | undefined, portName: string): number {
    if (asked !== undefined) {
      if (asked >= this.count) {
        throw new PierError('EINVAL', `thread=${asked} for port ${portName}: this daemon runs ${this.count} dataplane thread${this.count === 1 ? '' : 's'} (0..${this.count - 1})`,
          `use thread=0..${this.count - 1}, or restart the daemon with --dataplane-threads ${asked + 1}`);
      }
      return asked;
    }
    const load = this.load();
    return load.indexOf(Math.min(...load));
  }

  // ---- bridges ----

  async addBridge(id: number, name: string, gauges: Float64Array): Promise<void> {
    // The FDB-size gauge is the first thread's bridge (every thread has its own FDB; the first
    // one's is what `pier_fdb_entries` has always reported).
    const made: number[] = [];
    try {
      for (let t = 0; t < this.count; t++) {
        await this.threads[t]!.request({ op: 'add-bridge', id, name, ...(this.fdbSize !== undefined ? { fdbSize: this.fdbSize } : {}), ...(t === 0 ? { gauges } : {}) });
        made.push(t);
      }
      if (this.count > 1) await this.addLinks(id);
    } catch (e) {
      await this.delLinks(id);
      for (const t of made) await this.threads[t]!.request({ op: 'del-bridge', id }).catch(() => undefined);
      throw e;
    }
  }

  async delBridge(id: number): Promise<void> {
    await this.delLinks(id);
    for (const t of this.threads) await t.request({ op: 'del-bridge', id }).catch(() => undefined);
  }

  /** One link per ordered pair of threads: two rings and an eventfd per end. */
  private async addLinks(bridge: number): Promise<void> {
    const wakes = this.threads.map(() => new EventFd());
    const l: BridgeLinks = { ends: [], wakes, vlans: false };
    this.links.set(bridge, l);
    for (let a = 0; a < this.count; a++) {
      for (let b = a + 1; b < this.count; b++) {
        const ab = linkRing(); // a produces, b consumes
        const ba = linkRing();
        try {
          for (const [t, peer, tx, rx] of [[a, b, ab, ba], [b, a, ba, ab]] as const) {
            const end: LinkEnd = { thread: t, peer, index: this.allocSlot(), counters: newCounters(), tx: new Int32Array(tx.control) };
            await this.threads[t]!.request({ op: 'add-link', index: end.index, bridge, peer, counters: end.counters, txFd: tx.fd, rxFd: rx.fd, txControl: tx.control, rxControl: rx.control,
              wakeFd: wakes[t]!.fd, peerWakeFd: wakes[peer]!.fd });
            l.ends.push(end);
            this.threadOfSlot.set(end.index, t);
          }
        } finally {
          // Both engines have mapped the rings (or failed to): the mappings keep the memory.
          libc.close(ab.fd);
          libc.close(ba.fd);
        }
      }
    }
  }

  private async delLinks(bridge: number): Promise<void> {
    const l = this.links.get(bridge);
    if (!l) return;
    this.links.delete(bridge);
    for (const e of l.ends) {
      await this.threads[e.thread]!.request({ op: 'del-port', index: e.index }).catch(() => undefined);
      this.threadOfSlot.delete(e.index);
    }
    for (const w of l.wakes) w.close();
  }

  /**
   * Some port of the bridge has VLANs or none has any more: the links become trunks of every
   * VLAN (each thread pushes a frame's VLAN into the link, the other pops it) or untagged again.
   */
  async bridgeVlans(bridge: number, vlans: boolean): Promise<void> {
    const l = this.links.get(bridge);
    if (!l || l.vlans === vlans) return;
    l.vlans = vlans;
    for (const e of l.ends) await this.threads[e.thread]!.request({ op: 'set-vlan', index: e.index, vlan: vlans ? ALL_VLANS : undefined });
    // A VLAN change flushes a port's entries, the links' static ones too.
    await this.syncStatics(bridge);
  }

  // ---- ports ----

  async addPort(thread: number, port: PortSpec): Promise<void> {
    this.threadOfSlot.set(port.index, thread);
    await this.threads[thread]!.request({ op: 'add-port', port });
    // The port's MACs may have been learned on links when it ran on another thread (it moved):
    // the other threads forget what they learned on links, and flood until they learn again.
    for (const e of this.links.get(port.bridge)?.ends ?? []) await this.threads[e.thread]!.request({ op: 'fdb-flush', index: e.index });
    this.noteStatic(port.index, port.bridge, port.security, port.vlan);
    await this.syncStatics(port.bridge);
  }

  /** Take a slot out of its thread (no-op when it is in none). */
  async delPort(index: number): Promise<void> {
    const t = this.threadOfSlot.get(index);
    if (t === undefined) return;
    try {
      await this.threads[t]!.request({ op: 'del-port', index });
    } finally {
      this.threadOfSlot.delete(index);
      const s = this.statics.get(index);
      if (s && this.statics.delete(index)) await this.syncStatics(s.bridge).catch(() => undefined);
    }
  }

  async setVlan(index: number, vlan: VlanConfig | undefined, bridge: number, security: SecurityConfig | undefined): Promise<void> {
    const t = this.threadOf(index);
    if (t === undefined) throw new Error(`no port in slot ${index}`);
    await this.threads[t]!.request({ op: 'set-vlan', index, vlan });
    this.noteStatic(index, bridge, security, vlan);
    await this.syncStatics(bridge);
  }

  async setBusyPoll(index: number, on: boolean): Promise<void> {
    const t = this.threadOf(index);
    if (t === undefined) throw new Error(`no port in slot ${index}`);
    await this.threads[t]!.request({ op: 'set-busy-poll', index, on });
  }

  async setSecurity(index: number, security: SecurityConfig | undefined, bridge: number, vlan: VlanConfig | undefined): Promise<void> {
    const t = this.threadOf(index);
    if (t === undefined) throw new Error(`no port in slot ${index}`);
    await this.threads[t]!.request({ op: 'set-security', index, security });
    this.noteStatic(index, bridge, security, vlan);
    await this.syncStatics(bridge);
  }

  /** Record the static entry a port's security gives it on its own thread (a secured port's own MAC), or that it has none. */
  private noteStatic(index: number, bridge: number, security: SecurityConfig | undefined, vlan: VlanConfig | undefined): void {
    const t = this.threadOfSlot.get(index);
    const own = security?.secured?.own === true ? security.secured.macs[0] : undefined;
    // The VLAN its untagged frames are in, which is the one they cross the links in.
    if (t !== undefined && own !== undefined) this.statics.set(index, { bridge, thread: t, mac: own, vlan: vlan?.tag ?? 0 });
    else this.statics.delete(index);
  }

  /** Give each link of the bridge the static entries of the secured ports at its other end. */
  private async syncStatics(bridge: number): Promise<void> {
    const l = this.links.get(bridge);
    if (!l) return;
    const all = [...this.statics.values()].filter((s) => s.bridge === bridge);
    for (const e of l.ends) {
      const statics = all.filter((s) => s.thread === e.peer).map(({ mac, vlan }) => ({ mac, vlan }));
      await this.threads[e.thread]!.request({ op: 'link-statics', index: e.index, statics });
    }
  }

  async describe(index: number): Promise<unknown> {
    const t = this.threadOf(index);
    return t === undefined ? null : this.threads[t]!.request({ op: 'describe', index });
  }

  /** The thread a capture of these slots runs in: all must be on one (its ring has one producer). */
  captureThread(slots: Array<{ name: string; index: number }>): Dataplane {
    const on = slots.map((s) => ({ ...s, t: this.threadOf(s.index) ?? 0 }));
    const t = on[0]?.t ?? 0;
    const other = on.find((s) => s.t !== t);
    if (other) {
      throw new PierError('EINVAL', `ports ${on[0]!.name} and ${other.name} run on dataplane threads ${t} and ${other.t}: one capture reads one thread`,
        `capture them separately, or move one: pier set-port ${other.name} thread=${t}`);
    }
    return this.threads[t]!;
  }

  /** The bridge's learned addresses on real ports, from every thread (entries on links are other threads' copies). */
  async fdb(bridge: number): Promise<{ entries: FdbEntry[]; ports: Array<{ port: number; learned: number; limit: number }>; full: number; moves: number; evicted: number }> {
    const linkSlots = new Set(this.links.get(bridge)?.ends.map((e) => e.index));
    const entries: FdbEntry[] = [];
    const ports: Array<{ port: number; learned: number; limit: number }> = [];
    // Summed over the threads' tables (a move between threads counts on each thread that saw it).
    let full = 0;
    let moves = 0;
    let evicted = 0;
    for (const t of this.threads) {
      const r = await t.request({ op: 'fdb', bridge });
      for (const e of r.entries) if (!linkSlots.has(e.port)) entries.push(e);
      for (const p of r.ports) if (!linkSlots.has(p.port)) ports.push(p);
      full += r.full;
      moves += r.moves;
      evicted += r.evicted;
    }
    return { entries, ports, full, moves, evicted };
  }

  /** Every thread's pool and engine figures; the sum where one figure is wanted. */
  async stats(): Promise<{ total: PoolStats; threads: ThreadStats[]; links: unknown[] }> {
    const load = this.load();
    const threads: ThreadStats[] = [];
    for (let t = 0; t < this.count; t++) threads.push({ thread: t, ports: load[t]!, ...(await this.threads[t]!.request({ op: 'pool' })) });
    const sum = (k: keyof PoolStats): number => threads.reduce((s, x) => s + (x[k] as number), 0);
    const total: PoolStats = {
      size: sum('size'), available: sum('available'), allocFailures: sum('allocFailures'), tid: threads[0]!.tid,
      wakeups: sum('wakeups'), bursts: sum('bursts'), emptyPolls: sum('emptyPolls'), packets: sum('packets'),
      sigbusGuard: threads.every((x) => x.sigbusGuard), memoryFaults: sum('memoryFaults'), memoryFaultsUnclaimed: sum('memoryFaultsUnclaimed'),
      faultDroppedBursts: sum('faultDroppedBursts'), peerWakes: this.peerWakes,
    };
    const links = [...this.links.entries()].flatMap(([bridge, l]) => l.ends.map((e) => {
      const c = readCounters(e.counters);
      return { bridge, thread: e.thread, peer: e.peer, tx_packets: c.tx_packets, rx_packets: c.rx_packets, tx_dropped_full: c.tx_dropped_full, notify_sent: c.notify_sent,
        waiting: linkWaiting(e.tx), wakeAsked: linkWakeAsked(e.tx) };
    }));
    return { total, threads, links };
  }

  async stop(): Promise<void> {
    for (const id of [...this.links.keys()]) await this.delLinks(id);
    await Promise.all(this.threads.map((t) => t.stop()));
  }
}
