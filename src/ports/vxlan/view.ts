// What a vxlan port says of itself, and its text for `pier show`.

export interface VxlanView {
  vni: number;
  dstport: number;
  local: string | undefined;
  family: 4 | 6;
  underlayMtu: number;
  /** `mtu=` or the route's device the underlay MTU was read from. */
  mtuFrom: string;
  /** Partial inner checksums sent as they are, with remote checksum offload (rco=on). */
  rco: boolean;
  /** The largest inner IP packet that crosses: underlayMtu - 50 (IPv4) or - 70 (IPv6). */
  innerMtu: number;
  /** The outer UDP source ports (one per sending socket; the inner flow's hash picks one). */
  sourcePorts: number[];
  send: string;
  /** Received TCP segments coalesced into super-frames. */
  gro: boolean;
  /** The receiving socket takes UDP_GRO (trains arrive whole and pier splits them). */
  udpGro: boolean;
  vteps: Array<{ address: string; remote: boolean; macs: number }>;
  learned: number;
  counters: Record<string, number>;
  /** Datagrams the kernel dropped at the receiving socket (its buffer was full); -1: unknown. */
  socketDrops: number;
}

export function renderVxlan(v: VxlanView, i: string): string {
  const lo = Math.min(...v.sourcePorts);
  const hi = Math.max(...v.sourcePorts);
  let s = `\n${i}vxlan vni ${v.vni} dstport ${v.dstport} local ${v.local ?? 'any'}, IPv${v.family}, source ports ${v.sourcePorts.length} in ${lo}..${hi}, send ${v.send}`;
  s += `\n${i}inner MTU ${v.innerMtu} (underlay MTU ${v.underlayMtu} from ${v.mtuFrom}, minus ${v.family === 4 ? 50 : 70}): set the containers' MTU to ${v.innerMtu} or less; larger frames are dropped (tx_dropped_too_big)`;
  const c = v.counters;
  s += `\n${i}remote checksum offload: ${v.rco ? `on (partial inner checksums sent as they are: ${c.tx_rco ?? 0} frames)` : 'off (inner checksums finished before sending)'}; received with RCO: ${c.rx_rco ?? 0} frames`;
  for (const t of v.vteps) s += `\n${i}  vtep ${t.address}${t.remote ? ' (remote)' : ' (learned)'}: ${t.macs} MACs`;
  const drops = Object.entries(c).filter(([k, n]) => n > 0 && (k.includes('dropped') || k.includes('full') || k.includes('fail')));
  s += `\n${i}tunnel: ${c.tx_datagrams ?? 0} datagrams sent (${c.tx_gso_messages ?? 0} UDP_SEGMENT trains, ${c.tx_sendmmsg_calls ?? 0} sendmmsg calls, ${c.tx_flooded_copies ?? 0} flood copies)`;
  if (v.gro) s += `; received TCP coalesced: ${c.rx_gro_merged ?? 0} segments into ${c.rx_gro_super_frames ?? 0} super-frames, ${c.rx_gro_bad_checksum ?? 0} left alone for a wrong checksum`;
  if (v.udpGro) s += `; ${c.rx_gro_datagrams ?? 0} datagrams split from UDP_GRO trains`;
  if (v.socketDrops > 0) drops.push(['udp_socket_drops (kernel: receive buffer full)', v.socketDrops]);
  s += drops.length ? `\n${i}${drops.map(([k, n]) => `${k}: ${n}`).join('  ')}` : `\n${i}no tunnel drops`;
  return s;
}
