// Per-port counters live in a SharedArrayBuffer: the dataplane thread bumps them, the daemon
// reads them whenever asked, and nobody sends a message for it. Doubles count exactly to 2^53.
// Slot of each counter. An object literal, not Object.fromEntries: the hot path reads C.x per
// packet, and a literal keeps a fast map whose constant fields the JIT folds (a 19-key object
// made by fromEntries is a dictionary, and every C.x was a generic property load).
export const C = {
  rx_packets: 0,
  rx_bytes: 1,
  tx_packets: 2,
  tx_bytes: 3,
  rx_gso_packets: 4,
  tx_gso_packets: 5,
  rx_dropped_no_buffer: 6,
  rx_dropped_malformed: 7,
  rx_errors: 8,
  tx_dropped_error: 9,
  tx_dropped_full: 10,
  tx_dropped_bad_gso: 11,
  tx_dropped_no_buffer: 12,
  tx_dropped_link_down: 13,
  tx_dropped_too_big: 14,
  tx_segmented: 15,
  tx_csum_sw: 16,
  dropped_hairpin: 17,
  flooded: 18,
  // virtio-user ports (pier as the driver): the receive ring as the backend sees it.
  /** pier found its receive ring with no buffer posted: every one had been filled, so the backend had nowhere to put the next frame (vhost-net then leaves it in the tap, whose tx_dropped counts what overflows). */
  rx_ring_empty: 19,
  /** Empty buffers posted to the receive ring(s). */
  rx_buffers_posted: 20,
  /** Refills that left the receive ring short: the pool was down to the half pier keeps free for frames in flight. */
  rx_post_short: 21,
  // Notifications between pier and a peer (vhost-user call/kick eventfds).
  /** A notification the peer could not take: its eventfd counter was full. The peer still finds the work on its ring. */
  notify_dropped: 22,
  /** A write or read on a peer's eventfd blocked (the peer cleared O_NONBLOCK on it) until the watchdog interrupted it: the session ends. */
  notify_stalled: 23,
  // VLANs (docs/design/uplinks.md)
  /** A frame refused for its VLAN: tagged on an access port or an untagged port of a VLAN bridge, a VLAN a trunk does not carry, an 802.1ad/QinQ outer tag, or too short for its tag. */
  rx_dropped_vlan: 24,
  // Notifications with a peer (vhost-user, virtio-user): how often each side had to wake the other.
  /** Notifications pier wrote to the peer (vhost-user: calls; virtio-user: kicks). */
  notify_sent: 25,
  /** Notifications from the peer that pier drained with work behind them (vhost-user: kicks; virtio-user: calls). */
  notify_received: 26,
  // Port security (docs/design/port-security.md): frames a secured port may not send, by reason.
  /** Ethernet source not the port's MAC nor an allowed one (or a group address). */
  rx_dropped_spoofed_mac: 27,
  /** IPv4 or IPv6 source not allowed for the frame's MAC. */
  rx_dropped_spoofed_ip: 28,
  /** ARP whose sender MAC or IP is not the port's, or malformed ARP. */
  rx_dropped_spoofed_arp: 29,
  /** IPv6 neighbour solicitation or advertisement claiming a target or link-layer address not the port's. */
  rx_dropped_spoofed_nd: 30,
  /** IPv6 router advertisement or redirect (RA guard). */
  rx_dropped_ra: 31,
  /** DHCP or DHCPv6 server/relay message (DHCP guard). */
  rx_dropped_dhcp_server: 32,
  /** Headers a guard cannot judge: an IPv6 first fragment without its upper-layer header, too many extension headers, headers cut short, an offload request that does not name the frame's own TCP or UDP checksum. */
  rx_dropped_unjudgeable: 33,
  /** Broadcast, multicast or unknown unicast over the port's storm-limit. */
  rx_dropped_storm: 34,
  /** Sources not learned because the port is at its mac-limit (the frames are forwarded). */
  fdb_limit: 35,
  /** Sources not learned because the MAC is a secured port's static entry (the frames are forwarded unlearned). */
  fdb_move_refused: 36,
  /**
   * Times a queue of the port was left unread for STORM_PAUSE_MS because most of a full burst
   * was over its storm-limit: the kernel or the peer holds (and drops) the rest of the storm.
   */
  rx_storm_pauses: 37,
  /**
   * A frame whose virtio-net header asks for what pier cannot carry or what does not fit it: a
   * GSO type other than TCPv4/TCPv6 (or the ECN bit alone), a gso_size under MIN_GSO_SIZE, a
   * partial checksum whose field lies past the frame (src/dataplane/headers.ts).
   */
  rx_dropped_bad_offload: 38,
} as const;
export type CounterName = keyof typeof C;
export const COUNTER_NAMES = Object.keys(C) as CounterName[];

export const COUNTER_SLOTS = 48;

export function newCounters(): Float64Array {
  return new Float64Array(new SharedArrayBuffer(COUNTER_SLOTS * 8));
}

export function readCounters(c: Float64Array): Record<CounterName, number> {
  const out = {} as Record<CounterName, number>;
  COUNTER_NAMES.forEach((n, i) => (out[n] = c[i]!));
  return out;
}
