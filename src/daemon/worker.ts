// Entry point of the dataplane thread. Requests from the daemon arrive on a MessagePort and are
// announced by an eventfd doorbell that sits in the engine's epoll set; they are drained
// synchronously with receiveMessageOnPort, so the engine's loop never has to yield to Node's.
import { receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { EventFd, libc, watchPeerWrites, W_WAKES } from '../sys/index.ts';
import { CaptureTap } from '../dataplane/capture.ts';
import { Engine } from '../dataplane/engine.ts';
import { macFromString } from '../dataplane/fdb.ts';
import { LINK_RING_BYTES, LinkPort } from '../dataplane/link.ts';
import { GAUGE_POOL_AVAILABLE, GAUGE_POOL_SIZE, GAUGE_TID } from '../dataplane/gauges.ts';
import { loadDataplanes } from '../ports/registry.ts';
import type { Port } from '../dataplane/port.ts';
import type { PortSpec, Reply, ReplyOf, Request } from '../dataplane/protocol.ts';

const { ctrl, doorbellFd, poolSize, cpu, watch, gauges } = workerData as { ctrl: MessagePort; doorbellFd: number; poolSize: number; cpu: number; watch: Int32Array; gauges: Float64Array };
// Like OVS's pmd-cpu-mask: on a small machine the dataplane thread should not share a core with
// a peer that busy-polls.
if (cpu >= 0) libc.pinThread(cpu);

const tid = libc.gettid(); // so `pier show` can name the thread whose CPU time a benchmark reads
// Peer notifications (signalPeer/drainPeer) are watched from the main thread, which interrupts one
// that a peer made block: it needs this thread's id, and the wake-up signal's handler.
watchPeerWrites(watch);
// Every kind's dataplane half, loaded before the loop runs: building a port is synchronous.
const dataplanes = await loadDataplanes();

function createPort(p: PortSpec): Port {
  const kind = dataplanes.get(p.type);
  if (!kind) throw new Error(`no dataplane for port type ${p.type}`);
  const port = kind.create(p, p.spec, engine.pool);
  port.levels = p.levels;
  return port;
}

const engine: Engine = new Engine(poolSize, new EventFd(doorbellFd), () => {
  for (let m = receiveMessageOnPort(ctrl); m; m = receiveMessageOnPort(ctrl)) handle(m.message as Request);
}, (index, reason) => ctrl.postMessage({ event: 'port-down', index, reason }),
(index, n) => ctrl.postMessage({ event: 'peer', index, ...n }));
gauges[GAUGE_TID] = tid;
gauges[GAUGE_POOL_SIZE] = engine.pool.count;
gauges[GAUGE_POOL_AVAILABLE] = engine.pool.available();
engine.gauges = gauges;

/** Each link port's two ring mappings (arena offsets), released with the port. */
const links = new Map<number, number[]>();

function handle(req: Request): void {
  let reply: Reply;
  try {
    reply = { seq: req.seq, ok: true, data: apply(req) };
  } catch (e) {
    reply = { seq: req.seq, ok: false, error: (e as Error).message };
  }
  ctrl.postMessage(reply);
}

/** Run one request; each case returns what ReplyOf says its op answers. */
function apply(req: Request): ReplyOf[Request['op']] {
  switch (req.op) {
    case 'add-bridge':
      engine.addBridge(req.id, req.name, req.agingSeconds, req.gauges, req.fdbSize);
      return null;
    case 'del-bridge':
      engine.removeBridge(req.id);
      return null;
    case 'add-port':
      engine.addPort(createPort(req.port), req.port.vlan, req.port.security);
      return null;
    case 'set-vlan':
      engine.setVlan(req.index, req.vlan);
      return null;
    case 'set-security':
      engine.setSecurity(req.index, req.security);
      return null;
    case 'set-busy-poll':
      engine.setBusyPoll(req.index, req.on);
      return null;
    case 'add-link': {
      const tx = engine.pool.arena.place(req.txFd, 0, LINK_RING_BYTES);
      let rx = -1;
      try {
        rx = engine.pool.arena.place(req.rxFd, 0, LINK_RING_BYTES);
        engine.addPort(new LinkPort(req.index, `link${req.peer}`, req.bridge, req.counters, engine.pool,
          { txOffset: tx, rxOffset: rx, txControl: req.txControl, rxControl: req.rxControl, wake: new EventFd(req.wakeFd), peerWake: new EventFd(req.peerWakeFd), peer: req.peer }), req.vlan);
      } catch (e) {
        engine.pool.arena.release(tx);
        if (rx >= 0) engine.pool.arena.release(rx);
        throw e;
      }
      links.set(req.index, [tx, rx]);
      return null;
    }
    case 'link-statics': {
      const p = engine.ports[req.index];
      const fdb = p ? engine.bridges.get(p.bridge)?.fdb : undefined;
      if (!fdb) return null;
      fdb.flushStatic(req.index);
      for (const e of req.statics) {
        // Two secured ports claiming one MAC on different threads: this thread's own keeps it.
        const mac = macFromString(e.mac);
        const held = fdb.staticPort(mac, e.vlan);
        if (held < 0 || held === req.index) fdb.addStatic(mac, req.index, e.vlan);
      }
      return null;
    }
    case 'fdb-flush': {
      const p = engine.ports[req.index];
      // Learned entries only: the link's static ones stay (the daemon replaces them whole).
      if (p) engine.bridges.get(p.bridge)?.fdb.flushPort(req.index, false);
      return null;
    }
    case 'del-port': {
      engine.removePort(req.index);
      const ring = links.get(req.index);
      if (ring) {
        links.delete(req.index);
        for (const off of ring) engine.pool.arena.release(off);
      }
      return null;
    }
    case 'fdb': {
      const br = engine.bridges.get(req.bridge);
      if (!br) return { entries: [], ports: [], full: 0, moves: 0, evicted: 0 };
      const f = br.fdb;
      return { entries: f.entries(Date.now() / 1000), ports: f.perPort(), full: f.full, moves: f.moves, evicted: f.evicted } satisfies ReplyOf['fdb'];
    }
    case 'pool':
      return { size: engine.pool.count, available: engine.pool.available(), allocFailures: engine.pool.allocFailures, tid,
        wakeups: engine.wakeups, bursts: engine.bursts, packets: engine.packets, emptyPolls: engine.emptyPolls,
        // Peer memory and fds (docs/design/peer-memory.md): faults the SIGBUS guard survived in
        // this arena, those no port claimed, bursts dropped for one; watchdog wake-ups.
        sigbusGuard: engine.pool.arena.guarded, memoryFaults: engine.memoryFaults, memoryFaultsUnclaimed: engine.memoryFaultsUnclaimed,
        faultDroppedBursts: engine.faultDroppedBursts, peerWakes: Atomics.load(watch, W_WAKES) } satisfies ReplyOf['pool'];
    case 'describe':
      return engine.ports[req.index]?.describe() ?? null;
    case 'capture-start': {
      // A slot with no port now (its device is down) is captured once the port is back.
      const offset = engine.pool.arena.place(req.fd, 0, req.size);
      try {
        engine.startCapture(new CaptureTap(req.id, req.ctl, offset, req.size, req.snaplen, engine.pool), req.slots, req.dirs);
      } catch (e) {
        engine.pool.arena.release(offset);
        throw e;
      }
      return null;
    }
    case 'capture-stop': {
      const tap = engine.stopCapture(req.id);
      if (tap) engine.pool.arena.release(tap.offset);
      return null;
    }
    case 'stop':
      engine.stop();
      return null;
  }
}

engine.run();
