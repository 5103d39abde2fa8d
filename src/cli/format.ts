// Human-readable renderings of `show` and `stats`; --json prints the daemon's objects as they are.
import { COUNTER_NAMES } from '../dataplane/counters.ts';

interface PeerView {
  mode: string; path: string; connected: boolean; link: string; mtu?: number; lastError?: string;
  features: { negotiated: string[]; notTaken: string[] };
  queuePairs: { configured: number; enabled: number };
  vrings: Array<{ vring: number; size: number }>;
  connects: number; disconnects: number; protocolErrors: number; refused: Record<string, number>;
}
interface PortView { name: string; bridge: string; options: Record<string, unknown>; state: string; error?: string; ifname?: string; peer?: PeerView }
interface ShowView { version?: string; pid?: number; stateDir?: string; socket?: string; bridges?: Array<{ name: string; ports: PortView[] }>; port?: PortView }

function opts(o: Record<string, unknown>): string {
  return Object.entries(o).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : String(v)}`).join(' ');
}

function port(p: PortView, indent: string): string {
  let s = `${indent}Port ${p.name}\n${indent}    ${opts(p.options)}\n${indent}    state: ${p.state}`;
  if (p.error) s += `\n${indent}    error: ${p.error}`;
  const v = p.peer;
  if (v) {
    const i = `${indent}    `;
    s += `\n${i}${v.mode} on ${v.path}: ${v.connected ? 'peer connected' : 'no peer'}, link ${v.link}` +
      `, queue pairs ${v.queuePairs.enabled}/${v.queuePairs.configured}` +
      (v.vrings.length ? `, vrings ${v.vrings.map((r) => `${r.vring}:${r.size}`).join(' ')}` : '') +
      `, connects ${v.connects}, disconnects ${v.disconnects}`;
    if (v.features.negotiated.length) s += `\n${i}features: ${v.features.negotiated.join(' ')}`;
    for (const c of v.features.notTaken) s += `\n${i}  ${c}`;
    if (v.protocolErrors || Object.keys(v.refused).length) {
      s += `\n${i}protocol errors ${v.protocolErrors}; refused: ${Object.entries(v.refused).map(([k, n]) => `${k} x${n}`).join(', ') || 'none'}`;
    }
    if (v.lastError) s += `\n${i}last error: ${v.lastError}`;
  }
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

export function formatStats(list: StatsView[]): string {
  const out: string[] = [];
  for (const s of list) {
    out.push(`${s.port} (bridge ${s.bridge}, ${s.state})`);
    const c = s.counters;
    out.push(`  rx: ${c.rx_packets} packets ${c.rx_bytes} bytes (${c.rx_gso_packets} gso)    tx: ${c.tx_packets} packets ${c.tx_bytes} bytes (${c.tx_gso_packets} gso)`);
    const drops = COUNTER_NAMES.filter((n) => !/^(rx|tx)_(packets|bytes|gso_packets)$/.test(n) && (c[n] ?? 0) > 0);
    out.push(drops.length ? `  ${drops.map((n) => `${n}: ${c[n]}`).join('  ')}` : '  no drops');
    if (s.kernel) out.push(`  kernel ${s.kernel.ifname}: rx ${s.kernel.rx_packets} tx ${s.kernel.tx_packets} rx_dropped ${s.kernel.rx_dropped} tx_dropped ${s.kernel.tx_dropped}`);
  }
  return out.join('\n');
}
