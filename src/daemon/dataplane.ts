// The daemon's handle on the dataplane thread.
import { GAUGE_SLOTS } from '../dataplane/gauges.ts';
import { MessageChannel, Worker } from 'node:worker_threads';
import { EventFd, PeerWriteWatchdog, peerWatchBuffer, sigbusGuard } from '../sys/index.ts';
import type { DataplaneEvent, Reply, ReplyOf, RequestBody } from '../dataplane/protocol.ts';

export class Dataplane {
  private readonly worker: Worker;
  private readonly doorbell = new EventFd();
  private readonly ctrl;
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private exited = false;
  /** Unsolicited news from the dataplane (a port's device went away). */
  onEvent: ((e: DataplaneEvent) => void) | undefined;
  /**
   * Shared with the dataplane: the peer write or read in progress and the thread's id. The
   * watchdog interrupts one that a peer made block (docs/design/peer-memory.md).
   */
  private readonly watch = peerWatchBuffer();
  private readonly watchdog = new PeerWriteWatchdog(this.watch);
  /**
   * Numbers the dataplane thread writes between bursts and the main thread reads without asking
   * it (metrics scrapes): GAUGE_* slots.
   */
  readonly gauges = new Float64Array(new SharedArrayBuffer(8 * GAUGE_SLOTS));

  constructor(poolSize = 1024, cpu = -1, thread = 0) {
    // Process-wide signal handlers, installed here before the dataplane thread exists (its
    // module instance finds them): the SIGBUS guard its arena registers with, and the wake-up
    // signal (by the watchdog). Without the guard (SIGBUS taken by someone else) unsealable peer
    // memory is refused instead.
    try {
      sigbusGuard();
    } catch {
      // the arena reports guarded = false
    }
    this.watchdog.start();
    const { port1, port2 } = new MessageChannel();
    this.ctrl = port1;
    // Built (dist/): the compiled worker.js beside this module. From the sources under tsx:
    // worker-boot.mjs, which registers tsx in the new thread first.
    const entry = import.meta.url.endsWith('.js') ? './worker.js' : './worker-boot.mjs';
    this.worker = new Worker(new URL(entry, import.meta.url), {
      workerData: { ctrl: port2, doorbellFd: this.doorbell.fd, poolSize, cpu, watch: this.watch, gauges: this.gauges },
      transferList: [port2],
      name: thread === 0 ? 'pier-dataplane' : `pier-dataplane-${thread}`,
    });
    port1.on('message', (r: Reply | DataplaneEvent) => {
      if ('event' in r) {
        this.onEvent?.(r);
        return;
      }
      const p = this.pending.get(r.seq);
      if (!p) return;
      this.pending.delete(r.seq);
      if (r.ok) p.resolve(r.data);
      else p.reject(new Error(r.error));
    });
    this.worker.on('error', (e) => this.fail(e));
    this.worker.on('exit', (code) => this.fail(new Error(`dataplane thread exited (${code})`)));
  }

  /** Wake-up signals the watchdog sent the dataplane thread (a peer made a notification block). */
  get peerWakes(): number {
    return this.watchdog.wakes;
  }

  private fail(e: Error): void {
    this.exited = true;
    this.watchdog.stop();
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  /** Send a request; the answer is typed by its op (ReplyOf). */
  request<B extends RequestBody>(body: B): Promise<ReplyOf[B['op']]> {
    if (this.exited) return Promise.reject(new Error('dataplane thread is not running'));
    const seq = ++this.seq;
    return new Promise<ReplyOf[B['op']]>((resolve, reject) => {
      this.pending.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      this.ctrl.postMessage({ ...body, seq });
      this.doorbell.signal();
    });
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const exit = new Promise((r) => this.worker.once('exit', r));
    await this.request({ op: 'stop' }).catch(() => undefined);
    await exit;
    this.ctrl.close();
    this.doorbell.close();
  }
}
