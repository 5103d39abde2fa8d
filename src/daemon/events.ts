// The daemon's event log (docs/design/observability.md): the last EVENTS_MAX things that happened
// to ports and peers, in memory, numbered. `pier events` reads them; `--follow` asks again for
// those after the last number it saw, so a client that falls behind by more than the ring is told
// how many it missed instead of holding the daemon's memory.

export const EVENTS_MAX = 1000;

export type EventType =
  | 'port-added' | 'port-deleted' | 'port-changed'
  | 'link-up' | 'link-down'
  | 'peer-connected' | 'peer-disconnected' | 'peer-refused'
  /** The peer negotiated other features within its session (+GAINED -LOST). */
  | 'features'
  | 'reconcile-failed'
  /** Port security: a secured port's forged frames, or frames over a port's storm-limit, were dropped (rate-limited, with the count). */
  | 'port-security'
  /** A MAC moves back and forth between two ports (a loop, or two stations claiming one MAC). */
  | 'fdb-flapping';

export interface PierEvent {
  seq: number;
  time: string;
  type: EventType;
  port?: string | undefined;
  bridge?: string | undefined;
  /** Why: a typed disconnect reason, a device error. */
  reason?: string | undefined;
  detail?: string | undefined;
}

export class EventLog {
  private readonly ring: PierEvent[] = [];
  private next = 1;

  add(type: EventType, f: Omit<PierEvent, 'seq' | 'time' | 'type'> = {}): PierEvent {
    const e: PierEvent = { seq: this.next++, time: new Date().toISOString(), type, ...f };
    this.ring.push(e);
    if (this.ring.length > EVENTS_MAX) this.ring.shift();
    return e;
  }

  /** Events numbered above `after` (0: all kept), and how many of those the ring no longer has. */
  since(after: number): { events: PierEvent[]; missed: number; last: number } {
    const first = this.ring[0]?.seq ?? this.next;
    const missed = Math.max(0, first - after - 1);
    return { events: this.ring.filter((e) => e.seq > after), missed: after === 0 ? 0 : missed, last: this.next - 1 };
  }
}
