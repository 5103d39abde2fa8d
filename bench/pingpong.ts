// A cache line passed back and forth between two spinning threads (one per CPU on a 2-CPU
// machine): ns per round trip, three figures. A vhost-user loop moves every packet's ring entries,
// descriptors and bytes between the VM's CPU and the switch's, so this is the price of its
// memory traffic; on this shared host it swings from ~110 to ~600 ns within minutes, and the
// loop's rounds with it (bench/vhost.md). Usage: node --import tsx bench/pingpong.ts [--trips N]
import { Worker } from 'node:worker_threads';
import { option } from './common.ts';

/** The two words sit 64 bytes apart: one line each way, as a ring's producer and consumer indexes. */
const PING = 0;
const PONG = 16;

/** The echoing thread, plain JavaScript (a worker of its own): answers each ping with its number. */
const ECHO = `
const { workerData } = require('node:worker_threads');
const a = new Int32Array(workerData);
for (;;) {
  const v = Atomics.load(a, ${PING});
  if (v === -1) break;
  if (v !== 0 && Atomics.load(a, ${PONG}) !== v) Atomics.store(a, ${PONG}, v);
}`;

const trips = option('--trips', 2_000_000);
const a = new Int32Array(new SharedArrayBuffer(128));
const w = new Worker(ECHO, { eval: true, workerData: a.buffer });
w.on('error', (e) => {
  console.error(e);
  process.exit(1);
});
// The echoing thread is spinning once it has answered a first ping.
Atomics.store(a, PING, -2);
while (Atomics.load(a, PONG) !== -2) await new Promise((r) => setImmediate(r));
const figures: number[] = [];
for (let rep = 0; rep < 3; rep++) {
  const t0 = process.hrtime.bigint();
  for (let i = 1; i <= trips; i++) {
    Atomics.store(a, PING, i + rep * trips);
    while (Atomics.load(a, PONG) !== i + rep * trips);
  }
  figures.push(Math.round(Number(process.hrtime.bigint() - t0) / trips));
}
Atomics.store(a, PING, -1);
await w.terminate();
console.log(`cache-line round trip between two threads: ${figures.join(', ')} ns`);
