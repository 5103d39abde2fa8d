// What a vhost-user port's dataplane half says about its peer (`pier show PORT --json` prints it
// as is) and its text for `pier show`.
import type { FeatureReport } from '../../virtio/net-features.ts';

export interface VhostUserView {
  mode: 'server' | 'client';
  path: string;
  connected: boolean;
  /** Newer connections waiting (server mode). */
  newcomers: number;
  link: 'up' | 'down';
  /** Virtqueue layout negotiated: split, or packed (VIRTIO_F_RING_PACKED). */
  ring: 'split' | 'packed';
  features: FeatureReport;
  protocolFeatures: string;
  mtu: number | undefined;
  queuePairs: { configured: number; enabled: number };
  vrings: Array<{ vring: number; size: number; layout: 'split' | 'packed'; lastAvailIdx: number; usedIdx: number; resumedAtUsed?: number; waiting: number; kickFd: number; callFd: number }>;
  memory: Array<{ region: number; gpa: string; size: number; file: string; seal: string; sealDetail: string | undefined; guarded: boolean }>;
  strictMemory: true | undefined;
  connects: number;
  disconnects: number;
  protocolErrors: number;
  /** Sessions ended, by disconnect kind. */
  ended: Record<string, number>;
  lastError: string | undefined;
  /** Requests refused, by reason. */
  refused: Record<string, number>;
}

export function renderVhostUser(v: VhostUserView, i: string): string {
  let s = `\n${i}${v.mode} on ${v.path}: ${v.connected ? 'peer connected' : 'no peer'}, link ${v.link}` +
    `, queue pairs ${v.queuePairs.enabled}/${v.queuePairs.configured}` + (v.connected ? `, ${v.ring} rings` : '') +
    (v.vrings.length ? `, vrings ${v.vrings.map((r) => `${r.vring}:${r.size}`).join(' ')}` : '') +
    `, connects ${v.connects}, disconnects ${v.disconnects}` + (v.newcomers ? `, ${v.newcomers} newer connection(s) waiting` : '');
  if (Object.keys(v.ended).length) s += `\n${i}connections ended: ${Object.entries(v.ended).map(([k, n]) => `${k} x${n}`).join(', ')}`;
  for (const m of v.memory) {
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
  return s;
}
