// V8's inlining budget for the dataplane. A packet crosses a dozen short functions on its way
// (pop, translate, lend, forward, copy, push, release); with V8's default budgets (460 bytes of
// bytecode per callee, 920 in all per optimized function) TurboFan stops inlining halfway along
// that path, and each call left costs its frame and the loads it cannot hoist. Raised budgets let
// a port's receive and transmit compile as one unit each: the vhost-user path in one process
// (bench/vhost-path.ts) went from 172-183 to 157-167 ns a frame (docs/design/performance.md).
// The flags are process-wide and only change what is optimized after they are set, so the engine
// sets them before its first burst (again for each engine: the same values, harmless).
import { setFlagsFromString } from 'node:v8';

const JIT_FLAGS = ['--max-inlined-bytecode-size=1000', '--max-inlined-bytecode-size-cumulative=3000'];

export function tuneJit(): void {
  for (const f of JIT_FLAGS) setFlagsFromString(f);
}
