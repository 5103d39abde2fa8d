// Port security's check of what a secured port puts into the switch (docs/design/port-security.md,
// "What is checked, per protocol"). Per frame: the Ethernet source is one of the port's MACs (never
// a group address); a VLAN tag only on a trunk (one tag looked past, the inner frame judged); IPv4
// and ARP sources allowed for that MAC (0.0.0.0 only for a DHCP client or an ARP probe); IPv6
// sources allowed for that MAC or its EUI-64 link-local (:: only for duplicate address detection
// and MLD reports); no DHCP/DHCPv6 server, no router advertisement or redirect; neighbour
// solicitations and advertisements that claim only the port's addresses. Headers the guard cannot
// see to the end of are dropped as unjudgeable, and so is an offload request in the virtio-net
// header (a partial checksum, segmentation) that does not name the frame's own TCP or UDP header:
// whoever completes the checksum writes where csum_start and csum_offset say, which could be the
// source address the check just passed. Everything else (TCP, payloads, IP options) passes.
//
// The engine calls filter() on each received burst of a secured port. No allocation per frame: the
// identity lives in typed arrays built by the constructor, and the last (MAC, source) that passed
// is remembered, since a burst mostly comes from one station.
import { C } from './counters.ts';
import { judgedCopy } from './deferred.ts';
import { type PacketPool, REFUSED_COPY } from './pool.ts';
import { TPID_8021AD, TPID_8021Q, TPID_QINQ_OLD, VLAN_HLEN } from './vlan.ts';
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from './vnet.ts';

/** check()'s verdict for a frame that may enter the switch. */
export const GUARD_OK = 0;

export interface GuardIdentity {
  /** MACs the port may send from, as 'aa:bb:cc:dd:ee:ff'; the first is the port's own. At least one. */
  macs: string[];
  /** Allowed sources: an IPv4 or IPv6 address or prefix ('10.0.0.5', '10.0.0.0/24', 'fd00::5', 'fd00::/64'), optionally bound to one MAC (mac: undefined = any of `macs`). */
  addresses: Array<{ ip: string; mac?: string }>;
  /** The port is an 802.1Q trunk (trunks=): tagged frames are judged by the VLAN code, not dropped here. */
  trunk: boolean;
}

/** The last frame filter() dropped: its reason (a counter slot), Ethernet source, and the address it forged. */
export interface GuardDrop { reason: number; mac: number; detail: string }

const ETH_HLEN = 14;
/** The virtio-net header before each frame copyJudged() copies. */
const VNET_HDR_LEN = 12;
/** The fast path reads the frame's bytes up to 35 (the UDP source port). */
const FAST_MIN = 36;
/** Header and frame sizes copyJudged() takes: the words it judges, to the short copies' limit (PacketPool.copy). */
export const JUDGED_COPY_MIN = VNET_HDR_LEN + FAST_MIN;
export const JUDGED_COPY_MAX = 256;
const ETHERTYPE_IPV4 = 0x0800, ETHERTYPE_ARP = 0x0806, ETHERTYPE_IPV6 = 0x86dd;
const PROTO_TCP = 6, PROTO_UDP = 17, PROTO_ICMPV6 = 58;
const EXT_HOP_BY_HOP = 0, EXT_ROUTING = 43, EXT_FRAGMENT = 44, EXT_DEST_OPTIONS = 60;
/** More IPv6 extension headers than this and the frame is unjudgeable. */
const MAX_EXT_HEADERS = 8;
const ICMPV6_RS = 133, ICMPV6_RA = 134, ICMPV6_NS = 135, ICMPV6_NA = 136, ICMPV6_REDIRECT = 137, ICMPV6_MLD2_REPORT = 143;
const ND_OPT_SOURCE_LLA = 1, ND_OPT_TARGET_LLA = 2;
/** What the address a drop names is; the value is its length in bytes, copied when the drop is recorded. */
const BLAME_NONE = 0, BLAME_IPV4 = 4, BLAME_MAC = 6, BLAME_IPV6 = 16;

export class PortGuard {
  /** The port is a trunk: tagged frames are the VLAN code's to judge (a trunk's frames are never deferred). */
  readonly trunk: boolean;
  /** The allowed MACs as 48-bit numbers; an index into this is "the MAC" below. */
  private readonly macs: Float64Array;
  /** The second half of each MAC's EUI-64 link-local fe80::/64 address, as two words. */
  private readonly llHigh: Uint32Array;
  private readonly llLow: Uint32Array;
  /** IPv4 entries: network, mask, MAC index or -1 for any of the MACs. */
  private readonly v4Net: Uint32Array;
  private readonly v4Mask: Uint32Array;
  private readonly v4Mac: Int32Array;
  /** IPv6 entries: four words of network and of mask each, MAC index or -1. */
  private readonly v6Net: Uint32Array;
  private readonly v6Mask: Uint32Array;
  private readonly v6Mac: Int32Array;
  // The last Ethernet source that passed and its index; the last IPv4 and IPv6 sources that passed with their MAC.
  private lastMac = -1;
  private lastMi = -1;
  /** Per MAC index, the last IPv4 source that passed with it (-1: none): frames of two MACs interleave in a burst. */
  private readonly last4: Float64Array;
  // The fast path in filter() reads a pool frame in 16- and 32-bit little-endian words: each MAC
  // as its first two bytes and its last four, last4 as the word the frame holds (with last4[mi] < 0
  // the word is never compared), and the MAC that last took the fast path.
  private readonly macLo: Int32Array;
  private readonly macHi: Int32Array;
  private readonly last4w: Int32Array;
  private fastLo = -1;
  private fastHi = 0;
  private fastMi = -1;
  private last6Mi = -1;
  private readonly last6 = new Uint32Array(4);
  // Where check() found the frame's transport header (-1: none, or a later fragment), its
  // protocol and IP version: what an offload request must point at (checkOffload).
  private l4At = -1;
  private l4Proto = -1;
  private l4V4 = false;
  // What the verdict check() just gave blames: BLAME_* and where its bytes start.
  private blameKind = BLAME_NONE;
  private blameAt = 0;
  // The last drop filter() saw (the counts are the port's counters).
  private dropReason = 0;
  private dropMac = 0;
  private dropKind = BLAME_NONE;
  private readonly dropBytes = new Uint8Array(16);
  /** The secured port's counters, where judge() counts what it refuses (the engine sets them). */
  counters: Float64Array | null = null;

  /** Throws on a malformed MAC or address, a group MAC, or an address bound to a MAC not in `macs`. */
  constructor(id: GuardIdentity) {
    if (id.macs.length === 0) throw new Error('port guard: a secured port needs at least one MAC');
    const macs = id.macs.map(parseMac);
    this.trunk = id.trunk;
    this.macs = Float64Array.from(macs);
    this.last4 = new Float64Array(macs.length).fill(-1);
    this.last4w = new Int32Array(macs.length);
    this.macLo = Int32Array.from(macs, (m) => Math.floor(m / 2 ** 40) | (Math.floor(m / 2 ** 32) & 0xff) << 8);
    this.macHi = Int32Array.from(macs, (m) => swap32(m % 2 ** 32));
    this.llHigh = new Uint32Array(macs.length);
    this.llLow = new Uint32Array(macs.length);
    macs.forEach((m, i) => {
      // Interface id: the MAC's first three bytes with the universal/local bit flipped, ff fe, the last three.
      this.llHigh[i] = (Math.floor(m / 0x1000000) ^ 0x020000) * 0x100 + 0xff;
      this.llLow[i] = 0xfe000000 + (m % 0x1000000);
    });
    const v4: TableEntry[] = [];
    const v6: TableEntry[] = [];
    for (const a of id.addresses) {
      const p = parseAddress(a.ip);
      let mi = -1;
      if (a.mac !== undefined) {
        mi = macs.indexOf(parseMac(a.mac));
        if (mi < 0) throw new Error(`port guard: address ${a.ip} is bound to MAC ${a.mac}, which is not one of the port's MACs`);
      }
      (p.words.length === 1 ? v4 : v6).push({ ...p, mi });
    }
    [this.v4Net, this.v4Mask, this.v4Mac] = addressTable(v4, 1);
    [this.v6Net, this.v6Mask, this.v6Mac] = addressTable(v6, 4);
  }

  /**
   * Filter a received burst in place: frames that pass keep their order and are compacted to the
   * front of batch; each dropped frame is released to the pool and counted in counters[reason].
   * Returns the new count. A frame lent from a peer's memory is copied into the pool first (a
   * dropped copy counts rx_dropped_no_buffer): the peer could rewrite it after the check.
   */
  filter(pool: PacketPool, batch: Int32Array, n: number, counters: Float64Array, judged = 0): number {
    if (judged !== 0 && n <= 32 && judged === (n === 32 ? -1 : ~(-1 << n))) return n; // all passed as copied
    let kept = 0;
    for (let i = 0; i < n; i++) {
      let h = batch[i]!;
      if (judged !== 0 && i < 32 && (judged & (1 << i)) !== 0) { // passed as its port copied it, or deferred (Port.rxJudged)
        batch[kept++] = h;
        continue;
      }
      if (pool.isExternal(h)) {
        const judge = pool.deferredJudge(h);
        if (judge !== undefined) { // deferred, and its mark lost (Engine.poll): its copy, judged
          const m = judgedCopy(pool, h, judge);
          pool.release(h);
          if (m >= 0) batch[kept++] = m;
          else if (m !== REFUSED_COPY) counters[C.rx_dropped_no_buffer]!++;
          continue;
        }
        h = pool.materialize(h);
        if (h < 0) {
          counters[C.rx_dropped_no_buffer]!++;
          continue;
        }
      }
      if (this.judge(pool, h, counters)) batch[kept++] = h;
      else pool.release(h);
    }
    return kept;
  }

  /**
   * The verdict on pool packet h (never a lent one: its frame is 4-byte aligned below 2^31):
   * GUARD_OK or the counter slot of the reason. The fast path first, then check() and the
   * offload request's.
   */
  private verdict(pool: PacketPool, h: number): number {
    const w = pool.arena.i32;
    const fo = pool.ownFrameOffset(h);
    const len = pool.len[h]!;
    const f = fo >>> 2;
    if (this.passesAt(w, f - 3, len)) return GUARD_OK;
    const b = pool.bytes;
    const verdict = this.check(b, fo, len);
    if (verdict === GUARD_OK && ((b[fo - VNET_HDR_LEN]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) | b[fo - VNET_HDR_LEN + 1]!) !== 0) return this.checkOffload(b, fo, len);
    return verdict;
  }

  private recordDrop(pool: PacketPool, h: number, verdict: number): void {
    const fo = pool.ownFrameOffset(h);
    const len = pool.len[h]!;
    this.dropReason = verdict;
    this.dropMac = len >= 12 ? readMac(pool.bytes, fo + 6) : 0;
    this.dropKind = this.blameKind;
    for (let k = 0; k < this.blameKind; k++) this.dropBytes[k] = pool.bytes[this.blameAt + k]!;
  }

  /**
   * Judge pool packet h, a copy of a frame its secured port lent unjudged (PacketPool.defer):
   * true when it may go; a refusal is counted in `counters` (the port's, set by the engine) under
   * its reason and recorded for lastDrop(), and h stays the caller's. filter() judges each frame so.
   */
  judge(pool: PacketPool, h: number, counters: Float64Array | null = this.counters): boolean {
    const verdict = this.verdict(pool, h);
    if (verdict === GUARD_OK) return true;
    if (counters !== null) counters[verdict]!++;
    this.recordDrop(pool, h, verdict);
    return false;
  }

  /**
   * The Ethernet source whose first two bytes are little-endian 16-bit `lo` and last four
   * little-endian 32-bit `hi` (as the bridge reads them) is one of the port's MACs: the bridge
   * learns no other from a secured port, since a deferred frame is judged only as it leaves.
   */
  allowsSource(lo: number, hi: number): boolean {
    return this.macIndexWords(lo, hi) >= 0;
  }

  /** allowsSource() for a MAC as a 48-bit number. */
  allowsMac(mac: number): boolean {
    return this.macIndex(mac) >= 0;
  }

  /**
   * Copy `bytes` bytes of virtio-net header (12 bytes) and frame from arena offset `src` to `dst`
   * (both 4-byte aligned; JUDGED_COPY_MIN <= bytes <= JUDGED_COPY_MAX) and judge the copy by the
   * fast path, on the words it wrote: true when it passed. False says only "not by the fast
   * path": the frame is whole in dst. Where a frame is copied out of a peer's memory anyway: a
   * vhost-user output copying a deferred frame into its own guest's buffer (the judgment costs
   * no reads of its own: bench/guard.ts), and a secured vhost-user port's frame it could not
   * lend (then filter() judges what this did not pass).
   */
  copyJudged(b: Uint8Array, w: Int32Array, dst: number, src: number, bytes: number): boolean {
    // Its first twelve words are written whatever `bytes` says: a caller's bug, never a peer's.
    if (bytes < JUDGED_COPY_MIN || bytes > JUDGED_COPY_MAX) throw new RangeError(`copyJudged: ${bytes} bytes is outside ${JUDGED_COPY_MIN}..${JUDGED_COPY_MAX}`);
    const d = dst >>> 2;
    const s = src >>> 2;
    // Word k of the frame is word 3 + k of the copy (after the 12-byte header). The words judged
    // are the ones written: what the copy's reader gets, whatever the source does meanwhile.
    const v0 = w[s]!;
    w[d] = v0;
    const v1 = w[s + 1]!;
    w[d + 1] = v1;
    const v2 = w[s + 2]!;
    w[d + 2] = v2;
    w[d + 3] = w[s + 3]!;
    const f1 = w[s + 4]!;
    w[d + 4] = f1;
    const f2 = w[s + 5]!;
    w[d + 5] = f2;
    const f3 = w[s + 6]!;
    w[d + 6] = f3;
    const f4 = w[s + 7]!;
    w[d + 7] = f4;
    const f5 = w[s + 8]!;
    w[d + 8] = f5;
    const f6 = w[s + 9]!;
    w[d + 9] = f6;
    const f7 = w[s + 10]!;
    w[d + 10] = f7;
    const f8 = w[s + 11]!;
    w[d + 11] = f8;
    const words = bytes >>> 2;
    for (let k = 12; k < words; k++) w[d + k] = w[s + k]!;
    for (let i = words << 2; i < bytes; i++) b[dst + i] = b[src + i]!;
    return this.passes(v0, v1, v2, f1, f2, f3, f4, f5, f6, f7, f8, bytes - VNET_HDR_LEN);
  }

  /**
   * The fast path's verdict on a header and frame (`flen` bytes) at 32-bit word i of the arena,
   * read as little-endian words (header words i..i+2; frame word k at i+3+k): an untagged IPv4
   * frame without options from one of the port's MACs with the source that last passed with it,
   * not a DHCP server's UDP, and whose offload request, if any, names its own TCP or UDP header.
   * The same rules as check(), checkIpv4() and checkOffload(), for the case a burst is mostly
   * made of; false says only "not by the fast path" (check() decides). For pool frames
   * (verdict()), and an output that copied a deferred frame into its peer's buffer some other way
   * than copyJudged().
   */
  passesAt(w: Int32Array, i: number, flen: number): boolean {
    return flen >= FAST_MIN && this.passes(w[i]!, w[i + 1]!, w[i + 2]!, w[i + 4]!, w[i + 5]!, w[i + 6]!, w[i + 7]!, w[i + 8]!, w[i + 9]!, w[i + 10]!, w[i + 11]!, flen);
  }

  /**
   * passesAt()'s rules on the header's three words and the frame's words 1..8 (bytes 4..35; the
   * frame at least FAST_MIN bytes), as loaded by the caller.
   */
  private passes(v0: number, v1: number, v2: number, f1: number, f2: number, f3: number, f4: number, f5: number, f6: number, f7: number, f8: number, flen: number): boolean {
    if ((f3 & 0xffffff) !== 0x450008) return false; // frame bytes 12..14: 08 00 45, IPv4 with a 20-byte header
    const lo = f1 >>> 16; // the Ethernet source: bytes 6, 7 and 8..11
    let mi = this.fastMi;
    if (lo !== this.fastLo || f2 !== this.fastHi) {
      mi = this.macIndexWords(lo, f2);
      this.fastLo = lo;
      this.fastHi = f2;
      this.fastMi = mi;
    }
    // The IPv4 source, bytes 26..29, against the word last4 keeps for this MAC.
    if (mi < 0 || this.last4[mi]! < 0 || ((f6 >>> 16) | (f7 << 16)) !== this.last4w[mi]) return false;
    const total = ((f4 & 0xff) << 8) | ((f4 >>> 8) & 0xff);
    const proto = f5 >>> 24;
    // Not UDP, or a later fragment, or UDP whose source port (bytes 34, 35) is not 67 (a DHCP server's).
    if (total < 20 || total > flen - ETH_HLEN || (proto === PROTO_UDP && (f5 & 0xff1f) === 0 && (total < 28 || f8 >>> 16 === 0x4300))) return false;
    if ((v0 & (0xff00 | VIRTIO_NET_HDR_F_NEEDS_CSUM)) === 0) return true; // no offload request: no NEEDS_CSUM, no gso_type
    // A partial checksum at csum_start 34 (the TCP or UDP header after a 20-byte IPv4 one),
    // csum_offset 16 for TCP or 6 for UDP, inside the frame; TCPv4 segmentation on TCP only.
    // Anything else, checkOffload() judges.
    const type = (v0 >>> 8) & 0xff;
    const gso = type & ~VIRTIO_NET_HDR_GSO_ECN;
    const off = v2 & 0xffff;
    // gso_size and the ECN bit are headerFits()'s (src/dataplane/headers.ts): at ingress for a
    // pool frame, on the judged copy or the vhost-user output's for a deferred one. Here only the type.
    if (type !== 0 && gso !== VIRTIO_NET_HDR_GSO_TCPV4) return false;
    return (v0 & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && v1 >>> 16 === 34 && (f5 & 0xff1f) === 0 && 34 + off + 2 <= flen &&
      ((proto === PROTO_TCP && off === 16) || (proto === PROTO_UDP && off === 6 && gso === 0));
  }

  /**
   * A frame check() passed asks for an offload (NEEDS_CSUM, or a GSO type): the request must
   * name the transport header check() found, which must be TCP or UDP on a first fragment.
   * csum_start is that header's offset and csum_offset its checksum field's (16 TCP, 6 UDP),
   * inside the frame; a GSO type is TCP segmentation of the frame's IP version. Otherwise whoever
   * completes the checksum or cuts the segments (pier, the kernel behind a tap or an uplink, a
   * NIC) would write where the sender chose, after the check.
   */
  private checkOffload(b: Uint8Array, fo: number, len: number): number {
    const ho = fo - VNET_HDR_LEN;
    const proto = this.l4Proto;
    const tcp = proto === PROTO_TCP;
    if (this.l4At < 0 || (!tcp && proto !== PROTO_UDP)) return C.rx_dropped_unjudgeable;
    if ((b[ho]! & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
      const start = b[ho + 6]! | (b[ho + 7]! << 8);
      const off = b[ho + 8]! | (b[ho + 9]! << 8);
      if (fo + start !== this.l4At || off !== (tcp ? 16 : 6) || start + off + 2 > len) return C.rx_dropped_unjudgeable;
    }
    // The engine lets only TCP segmentation this far (src/dataplane/headers.ts); its IP version must fit.
    const type = b[ho + 1]!;
    const gso = type & ~VIRTIO_NET_HDR_GSO_ECN;
    if (type !== 0 && !(tcp && gso === (this.l4V4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6))) return C.rx_dropped_unjudgeable;
    return GUARD_OK;
  }

  /** The last drop filter() recorded, or null before the first; the detail text is built now. */
  lastDrop(): GuardDrop | null {
    if (this.dropReason === 0) return null;
    return { reason: this.dropReason, mac: this.dropMac, detail: formatBlame(this.dropKind, this.dropBytes) };
  }

  /** The verdict for one frame: GUARD_OK or the counter slot (C.rx_dropped_...) of the reason. */
  check(b: Uint8Array, fo: number, len: number): number {
    this.blameKind = BLAME_NONE;
    this.l4At = -1;
    if (len < ETH_HLEN) return C.rx_dropped_unjudgeable;
    if ((b[fo + 6]! & 1) !== 0) return C.rx_dropped_spoofed_mac;
    const mac = readMac(b, fo + 6);
    let mi = this.lastMi;
    if (mac !== this.lastMac) {
      mi = this.macIndex(mac);
      if (mi < 0) return C.rx_dropped_spoofed_mac;
      this.lastMac = mac;
      this.lastMi = mi;
    }
    let type = (b[fo + 12]! << 8) | b[fo + 13]!;
    let l3 = fo + ETH_HLEN;
    if (type === TPID_8021Q || type === TPID_8021AD || type === TPID_QINQ_OLD) {
      // The VLAN code judges the tag itself; a second tag under it is its drop as well.
      if (!this.trunk || len < ETH_HLEN + VLAN_HLEN) return C.rx_dropped_vlan;
      type = (b[fo + 16]! << 8) | b[fo + 17]!;
      l3 += VLAN_HLEN;
      if (type === TPID_8021Q || type === TPID_8021AD || type === TPID_QINQ_OLD) return C.rx_dropped_vlan;
    }
    if (type === ETHERTYPE_IPV4) return this.checkIpv4(b, l3, fo + len, mi);
    if (type === ETHERTYPE_IPV6) return this.checkIpv6(b, l3, fo + len, mi);
    if (type === ETHERTYPE_ARP) return this.checkArp(b, fo, l3, fo + len, mi);
    return GUARD_OK;
  }

  private checkIpv4(b: Uint8Array, p: number, end: number, mi: number): number {
    if (p + 20 > end) return C.rx_dropped_unjudgeable;
    const hl = (b[p]! & 15) * 4;
    const total = (b[p + 2]! << 8) | b[p + 3]!;
    if (b[p]! >> 4 !== 4 || hl < 20 || total < hl || p + total > end) return C.rx_dropped_unjudgeable;
    const src = readWord(b, p + 12);
    let sport = -1;
    let dport = -1;
    // UDP ports are read on a first fragment (offset 0) only; later ones do not carry them.
    if (((b[p + 6]! & 0x1f) | b[p + 7]!) === 0) { // a first fragment: its transport header follows
      this.l4At = p + hl;
      this.l4Proto = b[p + 9]!;
      this.l4V4 = true;
    }
    if (b[p + 9] === PROTO_UDP && ((b[p + 6]! & 0x1f) | b[p + 7]!) === 0) {
      if (hl + 8 > total) return C.rx_dropped_unjudgeable;
      sport = (b[p + hl]! << 8) | b[p + hl + 1]!;
      dport = (b[p + hl + 2]! << 8) | b[p + hl + 3]!;
    }
    if (src === 0) {
      if (sport !== 68 || dport !== 67) return this.blame(BLAME_IPV4, p + 12, C.rx_dropped_spoofed_ip);
    } else if (!this.allowed4(mi, src)) return this.blame(BLAME_IPV4, p + 12, C.rx_dropped_spoofed_ip);
    if (sport === 67) return this.blame(BLAME_IPV4, p + 12, C.rx_dropped_dhcp_server);
    return GUARD_OK;
  }

  private checkArp(b: Uint8Array, fo: number, p: number, end: number, mi: number): number {
    // Ethernet/IPv4 ARP only: hardware type 1, protocol 0x0800, address lengths 6 and 4.
    if (p + 28 > end || b[p] !== 0 || b[p + 1] !== 1 || b[p + 2] !== 0x08 || b[p + 3] !== 0 || b[p + 4] !== 6 || b[p + 5] !== 4) {
      return C.rx_dropped_spoofed_arp;
    }
    for (let k = 0; k < 6; k++) if (b[p + 8 + k] !== b[fo + 6 + k]) return this.blame(BLAME_MAC, p + 8, C.rx_dropped_spoofed_arp);
    const spa = readWord(b, p + 14);
    if (spa !== 0 && !this.allowed4(mi, spa)) return this.blame(BLAME_IPV4, p + 14, C.rx_dropped_spoofed_arp);
    return GUARD_OK;
  }

  private checkIpv6(b: Uint8Array, p: number, end: number, mi: number): number {
    if (p + 40 > end || b[p]! >> 4 !== 6) return C.rx_dropped_unjudgeable;
    const stop = p + 40 + ((b[p + 4]! << 8) | b[p + 5]!);
    if (stop > end) return C.rx_dropped_unjudgeable;
    // Walk the extension headers to the upper layer (RFC 7112: a first fragment holds them all).
    let next = b[p + 6]!;
    let q = p + 40;
    let headers = 0;
    let first = true;
    let fragmented = false;
    while (next === EXT_HOP_BY_HOP || next === EXT_ROUTING || next === EXT_DEST_OPTIONS || next === EXT_FRAGMENT) {
      if (++headers > MAX_EXT_HEADERS) return C.rx_dropped_unjudgeable;
      if (next === EXT_FRAGMENT) {
        if (q + 8 > stop) return C.rx_dropped_unjudgeable;
        const offset = (b[q + 2]! << 5) | (b[q + 3]! >> 3);
        fragmented ||= offset !== 0 || (b[q + 3]! & 1) !== 0;
        next = b[q]!;
        q += 8;
        if (offset !== 0) {
          first = false; // a later fragment: its source is judged, its contents are not
          break;
        }
      } else {
        if (q + 2 > stop) return C.rx_dropped_unjudgeable;
        const size = (b[q + 1]! + 1) * 8;
        if (q + size > stop) return C.rx_dropped_unjudgeable;
        next = b[q]!;
        q += size;
      }
    }
    if (first) {
      this.l4At = q;
      this.l4Proto = next;
      this.l4V4 = false;
    }
    let icmpType = -1;
    let sport = -1;
    if (first && next === PROTO_ICMPV6) {
      if (q + 4 > stop) return C.rx_dropped_unjudgeable;
      icmpType = b[q]!;
    } else if (first && next === PROTO_UDP) {
      if (q + 8 > stop) return C.rx_dropped_unjudgeable;
      sport = (b[q]! << 8) | b[q + 1]!;
    }
    const a = readWord(b, p + 8);
    const c = readWord(b, p + 12);
    const d = readWord(b, p + 16);
    const e = readWord(b, p + 20);
    const unspecified = (a | c | d | e) === 0;
    const last6 = this.last6;
    if (unspecified) {
      if (icmpType !== ICMPV6_NS && icmpType !== ICMPV6_MLD2_REPORT) return this.blame(BLAME_IPV6, p + 8, C.rx_dropped_spoofed_ip);
    } else if (mi !== this.last6Mi || a !== last6[0] || c !== last6[1] || d !== last6[2] || e !== last6[3]) {
      if (!this.allowed6(mi, a, c, d, e)) return this.blame(BLAME_IPV6, p + 8, C.rx_dropped_spoofed_ip);
      this.last6Mi = mi;
      last6[0] = a;
      last6[1] = c;
      last6[2] = d;
      last6[3] = e;
    }
    if (sport === 547) return this.blame(BLAME_IPV6, p + 8, C.rx_dropped_dhcp_server);
    if (icmpType === ICMPV6_RA || icmpType === ICMPV6_REDIRECT) return this.blame(BLAME_IPV6, p + 8, C.rx_dropped_ra);
    if (icmpType === ICMPV6_RS || icmpType === ICMPV6_NS || icmpType === ICMPV6_NA) {
      return this.checkNd(b, p, q, stop, mi, icmpType, unspecified, fragmented);
    }
    return GUARD_OK;
  }

  /**
   * A router or neighbour solicitation or a neighbour advertisement at q (its IPv6 header at p):
   * the target of an advertisement or of a solicitation from :: is the MAC's, and every
   * link-layer address option names an allowed MAC. Never fragmented (RFC 6980).
   */
  private checkNd(b: Uint8Array, p: number, q: number, stop: number, mi: number, type: number, unspecified: boolean, fragmented: boolean): number {
    const body = type === ICMPV6_RS ? 8 : 24;
    if (fragmented || q + body > stop) return this.blame(BLAME_IPV6, p + 8, C.rx_dropped_spoofed_nd);
    if ((type === ICMPV6_NA || (type === ICMPV6_NS && unspecified)) &&
      !this.allowed6(mi, readWord(b, q + 8), readWord(b, q + 12), readWord(b, q + 16), readWord(b, q + 20))) {
      return this.blame(BLAME_IPV6, q + 8, C.rx_dropped_spoofed_nd);
    }
    const lla = type === ICMPV6_NA ? ND_OPT_TARGET_LLA : ND_OPT_SOURCE_LLA;
    // Each option is a whole number (at least one) of 8-byte units: the walk ends within the frame.
    for (let o = q + body; o < stop;) {
      const size = o + 2 <= stop ? b[o + 1]! * 8 : 0;
      if (size === 0 || o + size > stop) return this.blame(BLAME_IPV6, p + 8, C.rx_dropped_spoofed_nd);
      if (b[o] === lla && this.macIndex(readMac(b, o + 2)) < 0) return this.blame(BLAME_MAC, o + 2, C.rx_dropped_spoofed_nd);
      o += size;
    }
    return GUARD_OK;
  }

  private blame(kind: number, at: number, reason: number): number {
    this.blameKind = kind;
    this.blameAt = at;
    return reason;
  }

  /** macIndex() of a MAC read as the little-endian 16-bit word of its first two bytes and 32-bit word of the rest. */
  private macIndexWords(lo: number, hi: number): number {
    const l = this.macLo;
    for (let i = 0; i < l.length; i++) if (l[i] === lo && this.macHi[i] === hi) return i;
    return -1;
  }

  private macIndex(mac: number): number {
    const macs = this.macs;
    for (let i = 0; i < macs.length; i++) if (macs[i] === mac) return i;
    return -1;
  }

  /** IPv4 `src` is allowed for MAC `mi`. */
  private allowed4(mi: number, src: number): boolean {
    if (src === this.last4[mi]) return true;
    const macOf = this.v4Mac;
    for (let k = 0; k < macOf.length; k++) {
      const m = macOf[k]!;
      if ((m === -1 || m === mi) && ((src & this.v4Mask[k]!) >>> 0) === this.v4Net[k]) {
        this.last4[mi] = src;
        this.last4w[mi] = swap32(src);
        return true;
      }
    }
    return false;
  }

  /** The IPv6 address of words a..d is allowed for MAC `mi`: an entry, or the MAC's EUI-64 link-local. */
  private allowed6(mi: number, a: number, c: number, d: number, e: number): boolean {
    if (a === 0xfe800000 && c === 0 && d === this.llHigh[mi] && e === this.llLow[mi]) return true;
    const macOf = this.v6Mac;
    const net = this.v6Net;
    const mask = this.v6Mask;
    for (let k = 0; k < macOf.length; k++) {
      const m = macOf[k]!;
      const w = 4 * k;
      if ((m === -1 || m === mi) && ((a & mask[w]!) >>> 0) === net[w] && ((c & mask[w + 1]!) >>> 0) === net[w + 1] &&
        ((d & mask[w + 2]!) >>> 0) === net[w + 2] && ((e & mask[w + 3]!) >>> 0) === net[w + 3]) return true;
    }
    return false;
  }
}

/** The 32-bit word of bytes reversed (big-endian to the little-endian word a typed array reads), signed. */
function swap32(w: number): number {
  return ((w & 0xff) << 24) | ((w >>> 8 & 0xff) << 16) | ((w >>> 16 & 0xff) << 8) | (w >>> 24);
}

/** A 32-bit big-endian word at b[o], unsigned. */
function readWord(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

/** A MAC at b[o] as a 48-bit number. */
function readMac(b: Uint8Array, o: number): number {
  return (b[o]! * 0x10000 + ((b[o + 1]! << 8) | b[o + 2]!)) * 0x1000000 + ((b[o + 3]! << 16) | (b[o + 4]! << 8) | b[o + 5]!);
}

interface TableEntry { words: number[]; prefix: number; mi: number }

/** Entries of `words` words each: network and mask words, side by side, and the MAC index of each. */
function addressTable(entries: TableEntry[], words: number): [Uint32Array, Uint32Array, Int32Array] {
  const net = new Uint32Array(words * entries.length);
  const mask = new Uint32Array(words * entries.length);
  entries.forEach((e, k) => {
    for (let w = 0; w < words; w++) {
      const m = maskWord(e.prefix - 32 * w);
      mask[words * k + w] = m;
      net[words * k + w] = (e.words[w]! & m) >>> 0;
    }
  });
  return [net, mask, Int32Array.from(entries, (e) => e.mi)];
}

/** The mask word for `bits` leading ones (<= 0: none, >= 32: all). */
function maskWord(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? 0xffffffff : (-1 << (32 - bits)) >>> 0;
}

function parseMac(text: string): number {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(text)) throw new Error(`port guard: '${text}' is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  const mac = parseInt(text.replace(/:/g, ''), 16);
  if (Math.floor(mac / 2 ** 40) % 2 === 1) throw new Error(`port guard: ${text} is a group (multicast) address, which no port sends from`);
  return mac;
}

/** '10.0.0.0/24' or 'fd00::5': one word (IPv4) or four (IPv6), and the prefix length. */
function parseAddress(text: string): { words: number[]; prefix: number } {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const words = addr.includes(':') ? parseIpv6(addr) : parseIpv4(addr);
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  const max = words === null ? 0 : 32 * words.length;
  if (words === null || (prefixText !== undefined && (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max))) {
    throw new Error(`port guard: '${text}' is not an IPv4 or IPv6 address or prefix`);
  }
  return { words, prefix: prefixText === undefined ? max : Number(prefixText) };
}

function parseIpv4(text: string): number[] | null {
  const parts = text.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) return null;
  return [parts.reduce((w, p) => w * 256 + Number(p), 0)];
}

function parseIpv6(text: string): number[] | null {
  const halves = text.split('::');
  if (halves.length > 2) return null;
  // The 16-bit groups of one side of '::'; the address's last group may be dotted IPv4 (two groups).
  const groups = (side: string, last: boolean): number[] | null => {
    if (side === '') return [];
    const out: number[] = [];
    const parts = side.split(':');
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      const v4 = last && i === parts.length - 1 && part.includes('.') ? parseIpv4(part) : null;
      if (v4 !== null) out.push(v4[0]! >>> 16, v4[0]! & 0xffff);
      else if (/^[0-9a-f]{1,4}$/i.test(part)) out.push(parseInt(part, 16));
      else return null;
    }
    return out;
  };
  const head = groups(halves[0]!, halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1]!, true) : [];
  if (head === null || tail === null) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  return [0, 1, 2, 3].map((w) => all[2 * w]! * 0x10000 + all[2 * w + 1]!);
}

/** A drop's address as text: a MAC, dotted IPv4, or IPv6 compressed as RFC 5952 says (the URL serializer does it). */
function formatBlame(kind: number, bytes: Uint8Array): string {
  const hex = (n: number): string[] => Array.from(bytes.subarray(0, n), (x) => x.toString(16).padStart(2, '0'));
  if (kind === BLAME_MAC) return hex(6).join(':');
  if (kind === BLAME_IPV4) return bytes.subarray(0, 4).join('.');
  if (kind !== BLAME_IPV6) return '';
  const groups = hex(16).join('').replace(/(.{4})(?!$)/g, '$1:');
  return new URL(`http://[${groups}]/`).hostname.slice(1, -1);
}
