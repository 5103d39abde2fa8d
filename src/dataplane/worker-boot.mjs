// Worker threads on Node 20 do not inherit tsx's loader: register it here, then load the engine.
import { register } from 'tsx/esm/api';
register();
await import('./worker.ts');
