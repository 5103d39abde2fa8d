// What an afpacket port's dataplane half says of itself, and its text for `pier show`.

export interface AfPacketView {
  dev: string;
  ifindex: number;
  offloads: boolean;
  /** The kernel keeps pier's own transmissions out of the rx ring (else pier skips them itself). */
  ignoresOutgoing: boolean;
  rx: { mode: 'ring' | 'recvmmsg'; blocks: number; blockSize: number; retired: number; badBlocks: number; badFrames: number; truncated: number; outgoing: number; resyncs: number; tagsRestored: number };
  /** ring: the TPACKET_V3 tx ring (kicks are sendto calls); sendmmsg: from pool buffers (kicks are sendmmsg calls, full: no room in the socket's buffer). */
  tx: { mode: 'ring' | 'sendmmsg'; frames: number; frameSize: number; frameMax: number; kicks: number; kickErrors: number; lastKickError: string | undefined; tooBig: number; full: number };
}

export function renderAfPacket(v: AfPacketView, i: string): string {
  let s = `\n${i}AF_PACKET on ${v.dev} (ifindex ${v.ifindex}), TPACKET_V3, vnet headers, offloads ${v.offloads ? 'on' : 'off'}` +
    (v.ignoresOutgoing ? '' : ', own transmissions filtered by pier');
  const r = v.rx;
  if (r.mode === 'ring') {
    s += `\n${i}rx ring: ${r.blocks} blocks of ${r.blockSize / 1024} KiB; ${r.retired} blocks walked, ${r.badBlocks} bad blocks, ${r.badFrames} bad frames, ${r.truncated} truncated`;
    if (r.resyncs) s += `, ${r.resyncs} resyncs`;
  } else {
    s += `\n${i}rx: recvmmsg into pool buffers; ${r.truncated} truncated`;
  }
  if (r.tagsRestored) s += `, ${r.tagsRestored} 802.1Q tags put back`;
  const t = v.tx;
  if (t.mode === 'ring') {
    s += `\n${i}tx ring: ${t.frames} frames of ${t.frameSize} bytes; ${t.kicks} kicks (${t.kickErrors} failed${t.lastKickError ? `, last ${t.lastKickError}` : ''}), ${t.full} full, ${t.tooBig} too big`;
  } else {
    s += `\n${i}tx: sendmmsg from pool buffers; ${t.kicks} calls (${t.kickErrors} failed${t.lastKickError ? `, last ${t.lastKickError}` : ''}), ${t.full} dropped on a full socket buffer`;
  }
  return s;
}
