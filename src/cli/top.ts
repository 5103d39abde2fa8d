// `pier top`: rates from two samples of the daemon's counters (docs/design/observability.md). The
// daemon answers a `top` request from shared memory without asking its dataplane thread, so a
// refresh costs forwarding nothing. One screen fits 80 columns.

export interface TopPort { port: string; bridge: string; type: string; up: boolean; counters: Record<string, number> }
export interface TopSample { time: number; dataplane: { cpuSeconds: number; poolSize: number; poolAvailable: number }; ports: TopPort[] }

export interface TopRow {
  port: string;
  bridge: string;
  type: string;
  up: boolean;
  rxPps: number;
  rxBps: number;
  txPps: number;
  txBps: number;
  dropsPs: number;
  /** The drop counter that moved most in the interval, without its rx_/tx_dropped_ prefix. */
  reason: string;
}

const isDrop = (k: string): boolean => /^(rx|tx)_dropped_/.test(k) || k === 'rx_errors' || k === 'dropped_hairpin';

/** Per-port rates between two samples; ports only in `b` are rated from zero. */
export function rates(a: TopSample, b: TopSample): { rows: TopRow[]; cpu: number; seconds: number } {
  const dt = Math.max(1e-3, (b.time - a.time) / 1000);
  const before = new Map(a.ports.map((p) => [p.port, p.counters]));
  const rows = b.ports.map((p) => {
    const c0 = before.get(p.port) ?? {};
    const d = (k: string): number => Math.max(0, (p.counters[k] ?? 0) - (c0[k] ?? 0));
    let drops = 0;
    let top = '';
    let topN = 0;
    for (const k of Object.keys(p.counters)) {
      if (!isDrop(k)) continue;
      const n = d(k);
      drops += n;
      if (n > topN) {
        topN = n;
        top = k.replace(/^(rx|tx)_dropped_/, '$1 ');
      }
    }
    return {
      port: p.port, bridge: p.bridge, type: p.type, up: p.up,
      rxPps: d('rx_packets') / dt, rxBps: (d('rx_bytes') * 8) / dt, txPps: d('tx_packets') / dt, txBps: (d('tx_bytes') * 8) / dt,
      dropsPs: drops / dt, reason: top,
    };
  });
  return { rows, cpu: Math.max(0, b.dataplane.cpuSeconds - a.dataplane.cpuSeconds) / dt, seconds: dt };
}

/** 1234567 -> "1.23M"; under 1000 as an integer. */
export function human(n: number): string {
  if (n < 1000) return String(Math.round(n));
  const units = ['k', 'M', 'G', 'T'];
  let u = -1;
  while (n >= 1000 && u < units.length - 1) {
    n /= 1000;
    u++;
  }
  return `${n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2)}${units[u]}`;
}

export function sortRows(rows: TopRow[], by: 'rate' | 'drops'): TopRow[] {
  const key = by === 'drops' ? (r: TopRow): number => r.dropsPs : (r: TopRow): number => r.rxBps + r.txBps;
  return [...rows].sort((x, y) => key(y) - key(x) || x.port.localeCompare(y.port));
}

const clip = (s: string, n: number): string => (s.length > n ? `${s.slice(0, n - 1)}~` : s);

/** One screen, every line at most `width` columns (80 by default). */
export function renderTop(b: TopSample, r: ReturnType<typeof rates>, by: 'rate' | 'drops', width = 80): string {
  const used = b.dataplane.poolSize - b.dataplane.poolAvailable;
  const head = `pier top  ${new Date(b.time).toISOString().slice(11, 19)}  dataplane CPU ${Math.round(r.cpu * 100)}%  pool ${used}/${b.dataplane.poolSize}  every ${r.seconds.toFixed(1)} s, by ${by}`;
  const lines = [head, ''];
  // 12 + 6 + the longest type shown (tap: 4, vhost-user-client: 17) + five numbers of 6, spaces
  // between: 62 to 75 columns, the rest for the reason.
  const tw = Math.max(4, ...r.rows.map((x) => x.type.length));
  lines.push(`${'PORT'.padEnd(12)} ${'BRIDGE'.padEnd(6)} ${'TYPE'.padEnd(tw)} ${'RX pps'.padStart(6)} ${'RX b/s'.padStart(6)} ${'TX pps'.padStart(6)} ${'TX b/s'.padStart(6)} ${'DROP/s'.padStart(6)} REASON`);
  for (const x of sortRows(r.rows, by)) {
    const reason = x.up ? x.reason : 'port down';
    lines.push(`${clip(x.port, 12).padEnd(12)} ${clip(x.bridge, 6).padEnd(6)} ${x.type.padEnd(tw)} ${human(x.rxPps).padStart(6)} ${human(x.rxBps).padStart(6)} ${human(x.txPps).padStart(6)} ${human(x.txBps).padStart(6)} ${human(x.dropsPs).padStart(6)} ${reason}`);
  }
  if (r.rows.length === 0) lines.push('(no ports)');
  return lines.map((l) => clip(l, width)).join('\n');
}
