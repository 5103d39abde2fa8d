// Human-readable renderings of `show` and `stats`; --json prints the daemon's objects as they are.
import { COUNTER_NAMES } from '../dataplane/counters.ts';

interface PeerView {
  mode: string; path: string; connected: boolean; link: string; mtu?: number; lastError?: string;
  features: { negotiated: string[]; notTaken: string[] };
  queuePairs: { configured: number; enabled: number };
  vrings: Array<{ vring: number; size: number }>;
  connects: number; disconnects: number; protocolErrors: number; refused: Record<string, number>;
  newcomers?: number; ended?: Record<string, number>;
  memory?: Array<{ region: number; gpa: string; size: number; file: string; seal: string; sealDetail?: string; guarded: boolean }>;
  strictMemory?: boolean;
}
/** What a virtio-user port (pier as the driver) describes of itself. */
interface DriverView {
  backend: string; mode: string; path: string; connected: boolean; link: string; lastError?: string;
  features: { negotiated: string[]; notTaken: string[] };
  queueSize: number; queuePairs?: number; backendQueuePairs?: number; rxPostLimit?: number; rxPosted: number; txInFlight: number;
  pairs?: Array<{ pair: number; rxPosted: number; txInFlight: number; rxPackets: number; txPackets: number }>;
  rings: { rx_buffers_posted: number; rx_ring_empty: number; rx_post_short: number; tx_dropped_full: number };
  connects: number; disconnects: number;
}
interface PortView {
  name: string; bridge: string; options: Record<string, unknown>; state: string; error?: string; ifname?: string; peer?: PeerView | DriverView;
  kernel?: Record<string, number | string>;
}
interface ShowView { version?: string; pid?: number; stateDir?: string; socket?: string; bridges?: Array<{ name: string; ports: PortView[] }>; port?: PortView }

function opts(o: Record<string, unknown>): string {
  return Object.entries(o).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : String(v)}`).join(' ');
}

function port(p: PortView, indent: string): string {
  let s = `${indent}Port ${p.name}\n${indent}    ${opts(p.options)}\n${indent}    state: ${p.state}`;
  if (p.error) s += `\n${indent}    error: ${p.error}`;
  if (p.kernel) s += `\n${indent}    ${kernelLine(p.kernel)}`;
  if (p.peer && 'backend' in p.peer) return s + driver(p.peer, `${indent}    `);
  const v = p.peer;
  if (v) {
    const i = `${indent}    `;
    s += `\n${i}${v.mode} on ${v.path}: ${v.connected ? 'peer connected' : 'no peer'}, link ${v.link}` +
      `, queue pairs ${v.queuePairs.enabled}/${v.queuePairs.configured}` +
      (v.vrings.length ? `, vrings ${v.vrings.map((r) => `${r.vring}:${r.size}`).join(' ')}` : '') +
      `, connects ${v.connects}, disconnects ${v.disconnects}` + (v.newcomers ? `, ${v.newcomers} newer connection(s) waiting` : '');
    if (v.ended && Object.keys(v.ended).length) s += `\n${i}connections ended: ${Object.entries(v.ended).map(([k, n]) => `${k} x${n}`).join(', ')}`;
    for (const m of v.memory ?? []) {
      s += `\n${i}memory region ${m.region}: gpa ${m.gpa} size ${m.size} ${m.file}, ${m.seal}` +
        (m.seal === 'unsealed' ? (m.guarded ? ' (a shrink resets this port only: SIGBUS guard)' : ' (NOT guarded)') : '');
    }
    if (v.strictMemory) s += `\n${i}strict-memory=on: memory that cannot be sealed is refused`;
    if (v.features.negotiated.length) s += `\n${i}features: ${v.features.negotiated.join(' ')}`;
    for (const c of v.features.notTaken) s += `\n${i}  ${c}`;
    if (v.protocolErrors || Object.keys(v.refused).length) {
      s += `\n${i}protocol errors ${v.protocolErrors}; refused: ${Object.entries(v.refused).map(([k, n]) => `${k} x${n}`).join(', ') || 'none'}`;
    }
    if (v.lastError) s += `\n${i}last error: ${v.lastError}`;
  }
  return s;
}

/** The driver's view of a virtio-user port: backend, features, and its rings. */
function driver(v: DriverView, i: string): string {
  const where = v.backend === 'vhost-kernel' ? `vhost-net (${v.path})` : `vhost-user ${v.mode} on ${v.path}: ${v.connected ? 'backend connected' : 'no backend'}`;
  const qp = v.queuePairs ?? 1;
  let s = `\n${i}virtio driver over ${where}, link ${v.link}, queue size ${v.queueSize}, queue pairs ${qp}` +
    (v.backendQueuePairs ? ` (backend has ${v.backendQueuePairs})` : '') + `, connects ${v.connects}, disconnects ${v.disconnects}`;
  if (v.features.negotiated.length) s += `\n${i}features: ${v.features.negotiated.join(' ')}`;
  for (const c of v.features.notTaken) s += `\n${i}  ${c}`;
  const r = v.rings;
  s += `\n${i}receive ring: ${v.rxPosted} buffers posted now, ${r.rx_buffers_posted} in all; ran empty ${r.rx_ring_empty} times; refills left short ${r.rx_post_short} times`;
  if (v.rxPostLimit !== undefined && v.rxPostLimit < v.queueSize) {
    s += `\n${i}  at most ${v.rxPostLimit} buffers posted per receive ring (of ${v.queueSize}): a port posts at most an eighth of the packet pool; raise pier daemon --pool`;
  }
  s += `\n${i}transmit ring: ${v.txInFlight} in flight; ${r.tx_dropped_full} dropped on a full ring`;
  if (qp > 1) {
    for (const p of v.pairs ?? []) s += `\n${i}  pair ${p.pair}: rx ${p.rxPackets} packets (${p.rxPosted} posted)  tx ${p.txPackets} packets (${p.txInFlight} in flight)`;
  }
  if (v.lastError) s += `\n${i}last error: ${v.lastError}`;
  return s;
}

export function formatShow(v: ShowView): string {
  if (v.port) return port(v.port, '');
  const lines: string[] = [];
  if (v.version) lines.push(`pier ${v.version} (pid ${v.pid}) state ${v.stateDir} socket ${v.socket}`);
  for (const b of v.bridges ?? []) {
    lines.push(`    Bridge ${b.name}`);
    for (const p of b.ports) lines.push(port(p, '        '));
  }
  return lines.join('\n');
}

interface StatsView { port: string; bridge: string; state: string; counters: Record<string, number>; kernel?: Record<string, number | string> }

/** The kernel's own counters of a port's tap: the other side of the exception path. */
function kernelLine(k: Record<string, number | string>): string {
  return `kernel ${k.ifname}: rx ${k.rx_packets} tx ${k.tx_packets} rx_dropped ${k.rx_dropped} tx_dropped ${k.tx_dropped}` +
    (k.sndbuf === undefined ? '' : ` sndbuf ${k.sndbuf}`);
}

const RING = new Set<string>(['rx_buffers_posted', 'rx_ring_empty', 'rx_post_short']);

export function formatStats(list: StatsView[]): string {
  const out: string[] = [];
  for (const s of list) {
    out.push(`${s.port} (bridge ${s.bridge}, ${s.state})`);
    const c = s.counters;
    out.push(`  rx: ${c.rx_packets} packets ${c.rx_bytes} bytes (${c.rx_gso_packets} gso)    tx: ${c.tx_packets} packets ${c.tx_bytes} bytes (${c.tx_gso_packets} gso)`);
    // A virtio-user port's receive ring, as the driver sees it (posted only by such ports).
    if ((c.rx_buffers_posted ?? 0) > 0) {
      out.push(`  rx ring: rx_buffers_posted: ${c.rx_buffers_posted}  rx_ring_empty: ${c.rx_ring_empty}  rx_post_short: ${c.rx_post_short}`);
    }
    const drops = COUNTER_NAMES.filter((n) => !RING.has(n) && !/^(rx|tx)_(packets|bytes|gso_packets)$/.test(n) && (c[n] ?? 0) > 0);
    out.push(drops.length ? `  ${drops.map((n) => `${n}: ${c[n]}`).join('  ')}` : '  no drops');
    if (s.kernel) out.push(`  ${kernelLine(s.kernel)}`);
  }
  return out.join('\n');
}
