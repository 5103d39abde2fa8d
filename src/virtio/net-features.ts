// virtio-net feature bits (virtio 1.2, 5.1.3) by name, and what a peer loses by not taking one.
export const NET_F = {
  CSUM: 0, GUEST_CSUM: 1, CTRL_GUEST_OFFLOADS: 2, MTU: 3, MAC: 5, GUEST_TSO4: 7, GUEST_TSO6: 8,
  GUEST_ECN: 9, GUEST_UFO: 10, HOST_TSO4: 11, HOST_TSO6: 12, HOST_ECN: 13, HOST_UFO: 14,
  MRG_RXBUF: 15, STATUS: 16, CTRL_VQ: 17, CTRL_RX: 18, CTRL_VLAN: 19, GUEST_ANNOUNCE: 21, MQ: 22,
  CTRL_MAC_ADDR: 23,
} as const;

const NAMES: Record<number, string> = {
  ...Object.fromEntries(Object.entries(NET_F).map(([k, v]) => [v, k])),
  24: 'NOTIFY_ON_EMPTY', 27: 'ANY_LAYOUT', 28: 'INDIRECT_DESC', 29: 'EVENT_IDX', 30: 'PROTOCOL_FEATURES',
  32: 'VERSION_1', 33: 'ACCESS_PLATFORM', 34: 'RING_PACKED', 35: 'IN_ORDER',
};

/** For each useful feature pier offers, what it costs when the peer does not take it. */
const COST: Record<string, string> = {
  MRG_RXBUF: 'no MRG_RXBUF: a frame must fit in one receive buffer; larger frames are dropped (tx_dropped_too_big)',
  GUEST_TSO4: 'no GUEST_TSO4: pier segments TCPv4 super-frames in software before handing them to the peer',
  GUEST_TSO6: 'no GUEST_TSO6: pier segments TCPv6 super-frames in software before handing them to the peer',
  GUEST_CSUM: 'no GUEST_CSUM: pier completes partial checksums in software for the peer',
  CSUM: 'no CSUM: the peer computes every checksum itself before sending',
  HOST_TSO4: 'no HOST_TSO4: the peer sends MTU-sized TCPv4 frames (more packets per byte)',
  HOST_TSO6: 'no HOST_TSO6: the peer sends MTU-sized TCPv6 frames (more packets per byte)',
  EVENT_IDX: 'no EVENT_IDX: notifications are suppressed only by flags, so more kicks and interrupts',
  INDIRECT_DESC: 'no INDIRECT_DESC: multi-buffer chains use ring slots, fewer packets in flight',
  VERSION_1: 'no VERSION_1: legacy 10-byte header; pier speaks it, but the peer misses virtio 1.x',
  MQ: 'no MQ: one queue pair only',
};

export interface FeatureReport {
  negotiated: string[];
  notTaken: string[];
}

export function featureNames(f: bigint): string[] {
  const out: string[] = [];
  for (let i = 0; i < 64; i++) if ((f >> BigInt(i)) & 1n) out.push(NAMES[i] ?? `bit${i}`);
  return out;
}

export function decodeFeatures(acked: bigint, offered: bigint): FeatureReport {
  const missing = offered & ~acked;
  const notTaken = acked === 0n ? [] : featureNames(missing).filter((n) => COST[n]).map((n) => COST[n]!);
  return { negotiated: featureNames(acked), notTaken };
}
