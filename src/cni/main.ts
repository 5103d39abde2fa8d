// pier-cni's ES module entry, for what starts `node dist/cni/main.js` (deploy/install-cni.sh's
// shim). pier-cni is CommonJS (see main.cts) and bin/pier-cni starts dist/cni/main.cjs itself:
// through this file the same plugin runs, with the ES module loader's start-up on top (~7 ms).
import { createRequire } from 'node:module';

createRequire(import.meta.url)('./main.cjs');
