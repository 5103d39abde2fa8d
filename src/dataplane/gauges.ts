// Slots of the engine's gauges: a Float64Array over a SharedArrayBuffer that the dataplane thread
// writes (the thread's id once, pool levels at every housekeeping turn) and the main thread reads
// without a request (the metrics endpoint). Apart from the engine, so the main thread need not
// load it to read them.
export const GAUGE_TID = 0;
export const GAUGE_POOL_SIZE = 1;
export const GAUGE_POOL_AVAILABLE = 2;
export const GAUGE_POOL_ALLOC_FAILURES = 3;
export const GAUGE_SLOTS = 8;
/** Slots of a bridge's gauges (one small shared array per bridge, made by the main thread). */
export const BRIDGE_GAUGE_FDB_ENTRIES = 0;
export const BRIDGE_GAUGE_SLOTS = 4;
/**
 * Slots of a port's ring levels (a small shared array per port with rings, written by the engine
 * once a second through Port.sampleLevels; NaN where the kind cannot say). Summed over queues.
 */
/** Frames the peer has queued in the rings pier receives from, not yet taken: pier's backlog. */
export const LEVEL_RX_WAITING = 0;
/** Empty buffers the peer holds to put frames for pier in (pier as the driver): 0 means it had nowhere to put the next one. */
export const LEVEL_RX_ROOM = 1;
/** Buffers pier may fill now in the rings it sends into: 0 means the peer is not taking (tx_dropped_full follows). */
export const LEVEL_TX_ROOM = 2;
export const LEVEL_RX_SIZE = 3;
export const LEVEL_TX_SIZE = 4;
export const LEVEL_SLOTS = 5;

/** One sample of a port's ring levels into its LEVEL_* slots (NaN: the kind cannot say). */
export function writeLevels(l: Float64Array, rxWaiting: number, rxRoom: number, txRoom: number, rxSize: number, txSize: number): void {
  l[LEVEL_RX_WAITING] = rxWaiting;
  l[LEVEL_RX_ROOM] = rxRoom;
  l[LEVEL_TX_ROOM] = txRoom;
  l[LEVEL_RX_SIZE] = rxSize;
  l[LEVEL_TX_SIZE] = txSize;
}
