// What an AF_XDP port's dataplane half says about itself (`pier show PORT --json` prints it as is)
// and its text for `pier show`.
import type { XskStats } from '../../sys/xsk.ts';

export interface AfXdpView {
  dev: string;
  mode: 'native' | 'generic';
  zeroCopy: boolean;
  queues: number;
  /** UMEM: its size (in pier's arena, beside the packet pool), chunk size, the largest frame a socket receives. */
  umem: { bytes: number; chunkSize: number; rxFrameMax: number };
  rings: { fill: number; completion: number; rx: number; tx: number };
  /** UMEM frames the kernel holds for receiving, and sent frames not yet completed. */
  posted: number;
  txInFlight: number;
  /** Descriptors the kernel gave that named no buffer of this port, or a bad length: counted and dropped. */
  badRxDescs: number;
  badCompletions: number;
  /** The kernel's counters (XDP_STATISTICS), summed over the sockets. */
  kernel: XskStats;
}

export function renderAfXdp(v: AfXdpView, i: string): string {
  const k = v.kernel;
  return `\n${i}AF_XDP on ${v.dev}: XDP ${v.mode}, ${v.zeroCopy ? 'zero-copy' : 'copy'}, ${v.queues} queue(s), ` +
    `UMEM ${v.umem.bytes} bytes (chunk ${v.umem.chunkSize}, frames up to ${v.umem.rxFrameMax}), ` +
    `rings fill ${v.rings.fill} completion ${v.rings.completion} rx ${v.rings.rx} tx ${v.rings.tx}; ${v.posted} frames posted, ${v.txInFlight} sends in flight` +
    (v.badRxDescs || v.badCompletions ? `; bad descriptors: rx ${v.badRxDescs}, completion ${v.badCompletions}` : '') +
    `\n${i}kernel: rx_dropped ${k.rxDropped}, rx_invalid_descs ${k.rxInvalidDescs}, tx_invalid_descs ${k.txInvalidDescs}, ` +
    `rx_ring_full ${k.rxRingFull}, fill_ring_empty ${k.rxFillRingEmpty}, tx_ring_empty ${k.txRingEmpty}`;
}
