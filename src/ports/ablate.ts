// Benchmark-only switches that undo one change each, so a benchmark can measure what the change
// does in one run (bench/vhost-net.md, "ablation"): PIER_ABLATE=event-idx,tap-sndbuf,port-budget.
// Read once per process; nothing a user should set.
export type Ablation = 'event-idx' | 'tap-sndbuf' | 'port-budget';

const undone = new Set((process.env.PIER_ABLATE ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''));

/** The change named `what` is undone in this process. */
export function ablated(what: Ablation): boolean {
  return undone.has(what);
}
