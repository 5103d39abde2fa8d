// Per-port counters live in a SharedArrayBuffer: the dataplane thread bumps them, the daemon
// reads them whenever asked, and nobody sends a message for it. Doubles count exactly to 2^53.
export const COUNTER_NAMES = [
  'rx_packets', 'rx_bytes', 'tx_packets', 'tx_bytes',
  'rx_gso_packets', 'tx_gso_packets',
  'rx_dropped_no_buffer', 'rx_dropped_malformed', 'rx_errors',
  'tx_dropped_error', 'tx_dropped_full', 'tx_dropped_bad_gso', 'tx_dropped_no_buffer',
  'tx_dropped_link_down', 'tx_dropped_too_big',
  'tx_segmented', 'tx_csum_sw',
  'dropped_hairpin', 'flooded',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];

export const C = Object.fromEntries(COUNTER_NAMES.map((n, i) => [n, i])) as Record<CounterName, number>;
export const COUNTER_SLOTS = 32;

export function newCounters(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(COUNTER_SLOTS * 8));
}

export function readCounters(c: Float64Array): Record<CounterName, number> {
  const out = {} as Record<CounterName, number>;
  COUNTER_NAMES.forEach((n, i) => (out[n] = c[i]!));
  return out;
}
