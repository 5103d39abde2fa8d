// The dataplane thread's entry when pier runs from its TypeScript sources (tests, `node --import
// tsx`): worker threads on Node 20 do not inherit tsx's loader, so register it here, then load
// the engine. The built package starts dist/daemon/worker.js instead (dataplane.ts) and needs no tsx.
import { register } from 'tsx/esm/api';
register();
await import('./worker.ts');
