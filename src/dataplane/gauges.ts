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
