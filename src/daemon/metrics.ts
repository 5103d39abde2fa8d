// The Prometheus endpoint (`pier daemon --metrics [ADDR:PORT]`, docs/design/observability.md):
// GET /metrics in text format 0.0.4. Every family is collected when Prometheus scrapes, from what
// the main thread can read without asking the dataplane thread: the ports' counters and the
// engine's gauges (SharedArrayBuffers the dataplane writes), the thread's CPU time (/proc). A
// scrape sends the dataplane no request and keeps nothing between scrapes.
// prom-client: the maintained Node client; its registry writes the format, and its collect()
// hooks are where the shared counters are read.
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import { COUNTER_NAMES, type CounterName } from '../dataplane/counters.ts';
import { GAUGE_POOL_ALLOC_FAILURES, GAUGE_POOL_AVAILABLE, GAUGE_POOL_SIZE, GAUGE_TID, LEVEL_RX_ROOM, LEVEL_RX_SIZE, LEVEL_RX_WAITING, LEVEL_TX_ROOM, LEVEL_TX_SIZE } from '../dataplane/gauges.ts';
import { threadCpuSeconds } from './cpu.ts';
import { PierError } from './errors.ts';

export const METRICS_DEFAULT = '127.0.0.1:9477';

export interface MetricsPort {
  name: string;
  bridge: string;
  type: string;
  up: boolean;
  /** A vhost-user or virtio-user port's peer is connected (undefined: the kind has no peer). */
  peerConnected: boolean | undefined;
  counters: Float64Array;
  /** Ring levels (LEVEL_* slots; NaN where the kind has none). */
  levels: Float64Array;
}

export interface MetricsSource {
  ports(): MetricsPort[];
  /** Each dataplane thread's engine gauges (GAUGE_* slots). */
  gauges: Float64Array[];
  /** Each bridge's learned MAC addresses (its shared gauges). */
  fdbSizes(): Array<{ bridge: string; entries: number }>;
  version: string;
}

/** `ADDR:PORT`, `[V6]:PORT` or `:PORT` (loopback); true (the flag alone): the default. */
export function parseListen(v: string | true): { host: string; port: number } {
  const text = v === true ? METRICS_DEFAULT : v;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) {
    throw new PierError('EINVAL', `--metrics ${text} is not ADDRESS:PORT`, `for example --metrics ${METRICS_DEFAULT} (loopback, the default), or [::1]:9477`);
  }
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** What a counter is in Prometheus terms: its family and labels. */
function familyOf(n: CounterName): { family: string; labels?: Record<string, string> } {
  const drop = /^(rx|tx)_dropped_(.+)$/.exec(n);
  if (drop) return { family: 'drops', labels: { direction: drop[1] === 'rx' ? 'receive' : 'transmit', reason: drop[2]! } };
  if (n === 'rx_errors') return { family: 'drops', labels: { direction: 'receive', reason: 'error' } };
  if (n === 'dropped_hairpin') return { family: 'drops', labels: { direction: 'receive', reason: 'hairpin' } };
  if (n === 'notify_sent') return { family: 'notifications', labels: { direction: 'sent' } };
  if (n === 'notify_received') return { family: 'notifications', labels: { direction: 'received' } };
  const simple: Record<string, string> = {
    rx_packets: 'receive_packets', rx_bytes: 'receive_bytes', tx_packets: 'transmit_packets', tx_bytes: 'transmit_bytes',
    rx_gso_packets: 'receive_gso_packets', tx_gso_packets: 'transmit_gso_packets', tx_segmented: 'transmit_segmented_packets',
    tx_csum_sw: 'transmit_checksummed_packets', flooded: 'flooded_packets', rx_ring_empty: 'receive_ring_empty',
    rx_buffers_posted: 'receive_buffers_posted', rx_post_short: 'receive_post_short', notify_dropped: 'notifications_dropped',
    notify_stalled: 'notifications_stalled', fdb_limit: 'fdb_learning_refused_limit', fdb_move_refused: 'fdb_learning_refused_static',
    rx_storm_pauses: 'receive_storm_pauses',
  };
  return { family: simple[n] ?? n };
}

const HELP: Record<string, string> = {
  receive_packets: 'Frames the port received into the switch.',
  receive_bytes: 'Bytes of the frames the port received.',
  transmit_packets: 'Frames the port sent out.',
  transmit_bytes: 'Bytes of the frames the port sent.',
  receive_gso_packets: 'Received TSO/GSO super-frames (each counted once in receive_packets).',
  transmit_gso_packets: 'Sent TSO/GSO super-frames.',
  transmit_segmented_packets: 'Super-frames pier segmented in software for this port.',
  transmit_checksummed_packets: 'Partial checksums pier completed in software for this port.',
  flooded_packets: 'Frames this port received that the bridge flooded (broadcast, multicast, unknown unicast).',
  receive_ring_empty: 'Times pier found its receive ring empty (virtio-user: the backend had nowhere to put a frame).',
  receive_buffers_posted: 'Empty buffers posted to the receive ring(s).',
  receive_post_short: 'Refills that left the receive ring short (the pool was low).',
  notifications_dropped: 'Notifications the peer could not take (its eventfd was full).',
  notifications_stalled: 'Notifications that blocked until the watchdog interrupted them (the session ends).',
  drops: 'Frames dropped, by direction and reason (port security: spoofed_mac, spoofed_ip, spoofed_arp, spoofed_nd, ra, dhcp_server, unjudgeable, storm).',
  fdb_learning_refused_limit: 'Sources not learned because the port is at its mac-limit (the frames are forwarded).',
  fdb_learning_refused_static: 'Sources not learned because the MAC is a secured port\'s own (static) entry (the frames are forwarded).',
  receive_storm_pauses: 'Times a queue was left unread for a while because most of a full burst was over the port\'s storm limit.',
  notifications: 'Notifications exchanged with the peer: sent by pier (a call or kick it wrote) and received (a kick or call that woke pier with work).',
};

export function metricsRegistry(src: MetricsSource): Registry {
  const registry = new Registry();
  const labelNames = ['bridge', 'port', 'type'] as const;
  const families = new Map<string, Array<{ slot: number; labels?: Record<string, string> }>>();
  COUNTER_NAMES.forEach((n, slot) => {
    const f = familyOf(n);
    const list = families.get(f.family) ?? [];
    list.push({ slot, ...(f.labels ? { labels: f.labels } : {}) });
    families.set(f.family, list);
  });
  for (const [family, slots] of families) {
    const extra = [...new Set(slots.flatMap((s) => Object.keys(s.labels ?? {})))];
    new Counter({
      name: `pier_port_${family}_total`,
      help: HELP[family] ?? family,
      labelNames: [...labelNames, ...extra],
      registers: [registry],
      collect() {
        this.reset();
        for (const p of src.ports()) {
          for (const s of slots) this.inc({ bridge: p.bridge, port: p.name, type: p.type, ...s.labels }, p.counters[s.slot] ?? 0);
        }
      },
    });
  }
  new Gauge({
    name: 'pier_port_up', help: '1 when the port forwards, 0 when it is in error (pier show says why).', labelNames, registers: [registry],
    collect() {
      this.reset();
      for (const p of src.ports()) this.set({ bridge: p.bridge, port: p.name, type: p.type }, p.up ? 1 : 0);
    },
  });
  new Gauge({
    name: 'pier_port_peer_connected', help: '1 when the port\'s vhost-user or virtio-user peer is connected.', labelNames, registers: [registry],
    collect() {
      this.reset();
      for (const p of src.ports()) if (p.peerConnected !== undefined) this.set({ bridge: p.bridge, port: p.name, type: p.type }, p.peerConnected ? 1 : 0);
    },
  });
  // Ring levels, sampled by the dataplane once a second (Port.sampleLevels); kinds without rings have none.
  const levels: Array<[name: string, slot: number, help: string]> = [
    ['pier_port_receive_ring_waiting', LEVEL_RX_WAITING, 'Frames the peer has queued in the rings pier receives from and pier has not yet taken (its backlog).'],
    ['pier_port_receive_ring_room', LEVEL_RX_ROOM, 'Empty buffers the peer holds to put frames for pier in (pier as the virtio driver): 0 means it had nowhere to put the next one.'],
    ['pier_port_transmit_ring_room', LEVEL_TX_ROOM, 'Buffers pier may fill now in the rings it sends into: 0 means the peer is not taking (transmit drops, reason full, follow).'],
  ];
  for (const [name, slot, help] of levels) {
    new Gauge({
      name, help, labelNames, registers: [registry],
      collect() {
        this.reset();
        for (const p of src.ports()) {
          const v = p.levels[slot]!;
          if (!Number.isNaN(v)) this.set({ bridge: p.bridge, port: p.name, type: p.type }, v);
        }
      },
    });
  }
  new Gauge({
    name: 'pier_port_ring_size', help: 'Entries of the rings a port receives from and sends into, summed over its queues.', labelNames: [...labelNames, 'ring'], registers: [registry],
    collect() {
      this.reset();
      for (const p of src.ports()) {
        if (Number.isNaN(p.levels[LEVEL_RX_SIZE]!)) continue;
        this.set({ bridge: p.bridge, port: p.name, type: p.type, ring: 'receive' }, p.levels[LEVEL_RX_SIZE]!);
        this.set({ bridge: p.bridge, port: p.name, type: p.type, ring: 'transmit' }, p.levels[LEVEL_TX_SIZE]!);
      }
    },
  });
  new Gauge({
    name: 'pier_fdb_entries', help: 'MAC addresses a bridge has learned (as of the dataplane\'s last housekeeping turn).', labelNames: ['bridge'], registers: [registry],
    collect() {
      this.reset();
      for (const f of src.fdbSizes()) this.set({ bridge: f.bridge }, f.entries);
    },
  });
  new Gauge({
    name: 'pier_pool_buffers', help: 'Packet buffers of the pool, by state.', labelNames: ['state'], registers: [registry],
    collect() {
      let free = 0;
      let size = 0;
      for (const g of src.gauges) {
        free += g[GAUGE_POOL_AVAILABLE]!;
        size += g[GAUGE_POOL_SIZE]!;
      }
      this.set({ state: 'free' }, free);
      this.set({ state: 'used' }, size - free);
    },
  });
  new Counter({
    name: 'pier_pool_alloc_failures_total', help: 'Times a buffer was wanted and the pool had none.', registers: [registry],
    collect() {
      this.reset();
      this.inc(src.gauges.reduce((s, g) => s + g[GAUGE_POOL_ALLOC_FAILURES]!, 0));
    },
  });
  new Counter({
    name: 'pier_dataplane_cpu_seconds_total', help: 'CPU time of the dataplane threads (user + system), all of them.', registers: [registry],
    collect() {
      this.reset();
      let s = 0;
      for (const g of src.gauges) if (g[GAUGE_TID]! > 0) s += threadCpuSeconds(g[GAUGE_TID]!);
      this.inc(s);
    },
  });
  new Counter({
    name: 'pier_dataplane_thread_cpu_seconds_total', help: 'CPU time of each dataplane thread (user + system).', labelNames: ['thread'], registers: [registry],
    collect() {
      this.reset();
      src.gauges.forEach((g, t) => {
        if (g[GAUGE_TID]! > 0) this.inc({ thread: String(t) }, threadCpuSeconds(g[GAUGE_TID]!));
      });
    },
  });
  new Gauge({
    name: 'pier_build_info', help: 'pier\'s version and the Node.js it runs on; always 1.', labelNames: ['version', 'node'], registers: [registry],
    collect() {
      this.set({ version: src.version, node: process.versions.node }, 1);
    },
  });
  return registry;
}

/** Serve GET /metrics on `listen`; resolves once listening. A taken port or a bad address is a PierError. */
export async function serveMetrics(listen: { host: string; port: number }, registry: Registry): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('pier serves /metrics only\n');
      return;
    }
    registry.metrics().then((text) => {
      res.writeHead(200, { 'content-type': registry.contentType }).end(text);
    }, (e: Error) => {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`);
    });
  });
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new PierError('EMETRICS', `cannot serve metrics on ${listen.host}:${listen.port}: ${e.message}`,
      e.code === 'EADDRINUSE' ? 'the port is taken: choose another with --metrics ADDRESS:PORT' : 'give an address of this host, for example --metrics 127.0.0.1:9477')));
    server.listen(listen.port, listen.host, () => resolve());
  });
  return server;
}
