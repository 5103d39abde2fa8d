// What a virtio-user port (pier as the driver) says of itself, and its text for `pier show`.
import type { FeatureReport } from '../../virtio/net-features.ts';

export interface VirtioUserView {
  backend: 'vhost-user' | 'vhost-kernel';
  mode: 'server' | 'client';
  path: string;
  connected: boolean;
  link: 'up' | 'down';
  /** Virtqueue layout in use: packed when VIRTIO_F_RING_PACKED was negotiated. */
  ring: 'split' | 'packed';
  features: FeatureReport;
  queueSize: number;
  queuePairs: number;
  /** What a vhost-user backend said it has (GET_QUEUE_NUM). */
  backendQueuePairs: number | undefined;
  /** Most buffers posted per receive ring: min(ring, the port's eighth of the pool / pairs). */
  rxPostLimit: number;
  /** Most buffers the transmit rings hold at once (an eighth of the pool). */
  txHoldLimit: number;
  rxPosted: number;
  txInFlight: number;
  pairs: Array<{ pair: number; rxPosted: number; txInFlight: number; rxPackets: number; txPackets: number }>;
  rings: { rx_buffers_posted: number; rx_ring_empty: number; rx_post_short: number; tx_dropped_full: number };
  connects: number;
  disconnects: number;
  lastError: string | undefined;
}

/** The driver's view of a virtio-user port: backend, features, and its rings. */
export function renderVirtioUser(v: VirtioUserView, i: string): string {
  const where = v.backend === 'vhost-kernel' ? `vhost-net (${v.path})` : `vhost-user ${v.mode} on ${v.path}: ${v.connected ? 'backend connected' : 'no backend'}`;
  const qp = v.queuePairs;
  let s = `\n${i}virtio driver over ${where}, link ${v.link}, queue size ${v.queueSize}, queue pairs ${qp}` +
    (v.backendQueuePairs ? ` (backend has ${v.backendQueuePairs})` : '') + `, ${v.ring} rings, connects ${v.connects}, disconnects ${v.disconnects}`;
  if (v.features.negotiated.length) s += `\n${i}features: ${v.features.negotiated.join(' ')}`;
  for (const c of v.features.notTaken) s += `\n${i}  ${c}`;
  const r = v.rings;
  s += `\n${i}receive ring: ${v.rxPosted} buffers posted now, ${r.rx_buffers_posted} in all; ran empty ${r.rx_ring_empty} times; refills left short ${r.rx_post_short} times`;
  if (v.rxPostLimit < v.queueSize) {
    s += `\n${i}  at most ${v.rxPostLimit} buffers posted per receive ring (of ${v.queueSize}): a port posts at most an eighth of the packet pool; raise pier daemon --pool`;
  }
  s += `\n${i}transmit ring: ${v.txInFlight} in flight; ${r.tx_dropped_full} dropped on a full ring`;
  if (qp > 1) {
    for (const p of v.pairs) s += `\n${i}  pair ${p.pair}: rx ${p.rxPackets} packets (${p.rxPosted} posted)  tx ${p.txPackets} packets (${p.txInFlight} in flight)`;
  }
  if (v.lastError) s += `\n${i}last error: ${v.lastError}`;
  return s;
}
