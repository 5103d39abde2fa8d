// A port's security as the dataplane takes it (docs/design/port-security.md): the identity a
// secured port is checked against (PortGuard, src/dataplane/port-guard.ts), the addresses it may
// have learned at once (Fdb limits and static entries), and its storm limit (a token bucket on
// the frames it makes the bridge flood).
import type { Port } from './port.ts';

export interface SecurityConfig {
  /**
   * The identity when port-security=on, else null. `macs`: every MAC it may send from (its own
   * first); `own`: whether the first is the port's own (mac=, a tap's): that one becomes a static
   * FDB entry. Allowed MACs are learned as usual: a VRRP virtual MAC moves between the ports that
   * may send it.
   */
  secured: { macs: string[]; own: boolean; addresses: Array<{ ip: string; mac?: string }> } | null;
  /** Learned addresses the port may hold at once (0: only the table's size). */
  macLimit: number;
  /** Broadcast, multicast and unknown unicast into the switch, packets/s (0: no limit). */
  stormLimit: number;
}

/** Set a port's storm bucket: `rate` packets/s, a burst of a tenth of a second's worth (at least 64), full. */
export function setStorm(p: Port, rate: number, now: number): void {
  p.stormRate = rate;
  p.stormBurst = Math.max(64, rate / 10);
  p.stormTokens = p.stormBurst;
  p.stormLast = now;
}

/** Take one token from the port's storm bucket: true when the frame may be flooded. */
export function stormAllows(p: Port, now: number): boolean {
  const rate = p.stormRate;
  if (rate === 0) return true;
  let t = p.stormTokens + (now - p.stormLast) * rate;
  p.stormLast = now;
  if (t > p.stormBurst) t = p.stormBurst;
  if (t < 1) {
    p.stormTokens = t;
    return false;
  }
  p.stormTokens = t - 1;
  return true;
}
