// Human-readable renderings of `show` and `stats`; --json prints the daemon's objects as they are.
import { COUNTER_NAMES } from '../dataplane/counters.ts';
import { vlanRanges } from '../dataplane/vlan.ts';
import { kindOf } from '../ports/registry.ts';

interface PortView {
  name: string; bridge: string; options: Record<string, unknown>; state: string; error?: string; ifname?: string; peer?: unknown;
  /** Its dataplane thread, when the daemon runs more than one. */
  thread?: number;
  kernel?: Record<string, number | string>;
  owner?: { kind: string; network?: string; containerId?: string; ifname?: string; bridge?: string };
  security?: { portSecurity: string; macs?: string[]; addresses?: Array<{ ip: string; mac?: string }>; macLimit?: number; stormLimit?: number; error?: string };
}
interface ShowView { version?: string; pid?: number; stateDir?: string; socket?: string; bridges?: Array<{ name: string; ports: PortView[] }>; port?: PortView }

function opts(o: Record<string, unknown>): string {
  // As typed: a trunk's VLANs as runs of ranges (trunks=10-20,30), not a list of every id; a
  // boolean as on/off (the JSON keeps true/false).
  return Object.entries(o).map(([k, v]) => `${k}=${k === 'trunks' && Array.isArray(v) ? vlanRanges(v as number[]) : Array.isArray(v) ? v.join(',') : typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v)}`).join(' ');
}

function port(p: PortView, indent: string): string {
  let s = `${indent}Port ${p.name}\n${indent}    ${opts(p.options)}\n${indent}    state: ${p.state}`;
  // Up as pier's port, but its device has no link (a wire without carrier, an interface set down):
  // said here, not only on the kernel line below.
  const op = p.kernel?.operstate;
  if (p.state === 'up' && (op === 'DOWN' || op === 'LOWERLAYERDOWN')) s += `, but ${p.kernel?.ifname ?? 'its device'} is ${op}`;
  // Ports pier-cni made: whose they are, so a runtime's containers can be told apart.
  if (p.owner?.kind === 'cni') s += `\n${indent}    cni: network ${p.owner.network} container ${p.owner.containerId} ifname ${p.owner.ifname}`;
  else if (p.owner?.kind === 'cni-gateway') s += `\n${indent}    cni: gateway of bridge ${p.owner.bridge}`;
  if (p.error) s += `\n${indent}    error: ${p.error}`;
  if (p.thread !== undefined) s += `\n${indent}    dataplane thread ${p.thread}`;
  if (p.security) s += `\n${indent}    ${securityLine(p.security)}`;
  if (p.kernel) s += `\n${indent}    ${kernelLine(p.kernel)}`;
  // What the port's kind says of its peer, rendered by the kind (src/ports/<kind>/view.ts).
  const kind = kindOf(String(p.options.type));
  if (p.peer !== undefined && p.peer !== null && kind) s += kind.render(p.peer, `${indent}    `);
  return s;
}

/** `port security: on (from 02:..:0a; 10.0.0.5, 02:..:01/10.0.0.101), mac-limit 1, storm-limit 1000/s`. */
function securityLine(s: NonNullable<PortView['security']>): string {
  if (s.error) return `port security: ${s.portSecurity}: ${s.error}`;
  const who = s.portSecurity === 'on'
    ? ` (from ${(s.macs ?? []).join(', ')}; ${(s.addresses ?? []).map((a) => (a.mac ? `${a.mac}/${a.ip}` : a.ip)).join(', ') || 'no IP'})`
    : '';
  return `port security: ${s.portSecurity}${who}, mac-limit ${s.macLimit || 'none'}, storm-limit ${s.stormLimit ? `${s.stormLimit}/s` : 'none'}`;
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
  return `kernel ${k.ifname}${k.operstate === undefined ? '' : ` (${k.operstate})`}: rx ${k.rx_packets} tx ${k.tx_packets} rx_dropped ${k.rx_dropped} tx_dropped ${k.tx_dropped}` +
    (k.sndbuf === undefined ? '' : ` sndbuf ${k.sndbuf}`) +
    // An AF_PACKET uplink: what the kernel could not put in pier's receive ring.
    (k.tp_drops === undefined ? '' : ` ring: tp_packets ${k.tp_packets} tp_drops ${k.tp_drops} tp_freeze_q_cnt ${k.tp_freeze_q_cnt}`);
}

/** Counters of their own lines, not drops: a virtio-user port's receive ring, notifications. */
const NOT_DROPS = new Set<string>(['rx_buffers_posted', 'rx_ring_empty', 'rx_post_short', 'notify_sent', 'notify_received']);

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
    // Notifications with a peer: how often each side had to wake the other (fewer is better).
    if ((c.notify_sent ?? 0) + (c.notify_received ?? 0) > 0) out.push(`  notifications: sent ${c.notify_sent}  received ${c.notify_received}`);
    const drops = COUNTER_NAMES.filter((n) => !NOT_DROPS.has(n) && !/^(rx|tx)_(packets|bytes|gso_packets)$/.test(n) && (c[n] ?? 0) > 0);
    out.push(drops.length ? `  ${drops.map((n) => `${n}: ${c[n]}`).join('  ')}` : '  no drops');
    if (s.kernel) out.push(`  ${kernelLine(s.kernel)}`);
  }
  return out.join('\n');
}

/** One event of `pier events`: time, what, where, why. */
export function formatEvent(e: { seq: number; time: string; type: string; port?: string; bridge?: string; reason?: string; detail?: string }): string {
  const where = e.port ? ` ${e.port}${e.bridge ? ` (${e.bridge})` : ''}` : '';
  const why = [e.reason, e.detail].filter((x) => x).join(': ');
  return `${e.time} ${e.type}${where}${why ? ` ${why}` : ''}`;
}
