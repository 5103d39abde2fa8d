// Which queue pair a frame leaves on, when a port has several: a hash of its flow, so flows
// spread over the pairs while every frame of one flow takes the same queue (and stays in order).
// Used by every multiqueue port (vhost-user and virtio-user); no allocation, no exception, any
// bytes (a frame shorter than its headers claim is hashed on what it has).
//
// Keys: IPv4 and IPv6 source and destination addresses, plus the two ports for TCP, UDP and SCTP
// (unfragmented IPv4; IPv6 without extension headers). Anything else (ARP, ICMP, ...) hashes its
// addresses only, so a ping's requests share a queue; a non-IP frame hashes its two MACs.

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_SCTP = 132;

function hasPorts(proto: number): boolean {
  return proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP;
}

/** FNV-1a over bytes [from, to) of b, continuing from x. */
function fnv(b: Uint8Array, from: number, to: number, x: number): number {
  for (let i = from; i < to; i++) x = Math.imul(x ^ b[i]!, 0x01000193);
  return x;
}

/**
 * A 32-bit hash of the flow of the Ethernet frame at b[fo, fo + len). Pick a queue pair with
 * `flowHash(...) % pairs`: the last step mixes every bit into the low ones.
 */
export function flowHash(b: Uint8Array, fo: number, len: number): number {
  let x = 0x811c9dc5 | 0;
  if (len < 14) return 0;
  const et = (b[fo + 12]! << 8) | b[fo + 13]!;
  if (et === 0x0800 && len >= 34) {
    x = fnv(b, fo + 26, fo + 34, x); // source and destination addresses
    const ihl = (b[fo + 14]! & 0x0f) * 4;
    const fragment = (((b[fo + 20]! & 0x3f) << 8) | b[fo + 21]!) !== 0; // MF or an offset
    const l4 = fo + 14 + ihl;
    if (ihl >= 20 && !fragment && hasPorts(b[fo + 23]!) && l4 + 4 <= fo + len) x = fnv(b, l4, l4 + 4, x);
  } else if (et === 0x86dd && len >= 54) {
    x = fnv(b, fo + 22, fo + 54, x);
    if (hasPorts(b[fo + 20]!) && len >= 58) x = fnv(b, fo + 54, fo + 58, x);
  } else {
    x = fnv(b, fo, fo + 12, x);
  }
  // murmur3's finaliser: FNV's low bits alone spread poorly over a small number of queues.
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}
