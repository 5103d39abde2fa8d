// A hostile container for the port security tests (test/port-security.root.test.ts): raw frames
// sent from a network namespace with nothing more than an AF_PACKET socket (what any process with
// CAP_NET_RAW in its own namespace has), captures of what a namespace receives, UDP listeners,
// and the frames themselves (Ethernet, ARP, IPv4/UDP, IPv6/ICMPv6 RA and NA, DHCP and DHCPv6
// server replies), built byte by byte with their checksums so the kernel on the other side would
// take them if they got there.
import { type ChildProcess, spawn } from 'node:child_process';
import { must, waitFor } from './helpers.ts';

/**
 * python3, one program, a mode per use:
 *   send IFACE REPEAT GAP HEX...   the frames REPEAT times, GAP seconds between rounds; prints the count
 *   flood IFACE SECONDS HEX        one frame as fast as the socket takes it for SECONDS; prints the count
 *   macflood IFACE N HEX           N copies of a frame, each with a random (unicast, local) source MAC
 *   capture IFACE                  "ready", then the first 128 bytes of each frame received (not sent), as hex
 *   listen PROTO:PORT...           UDP sockets (udp4:68, udp6:546), "ready", then "PORT HEX" per datagram
 */
const PROGRAM = String.raw`
import errno, os, select, socket, sys, time
mode = sys.argv[1]
def packet_socket(iface, proto=0):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    s.bind((iface, 0))
    return s
def send(s, f):
    # A full transmit queue (ENOBUFS) drops the frame, as it would for a real attacker.
    try:
        s.send(f)
        return 1
    except OSError as e:
        if e.errno in (errno.ENOBUFS, errno.EAGAIN):
            return 0
        raise
if mode == 'send':
    s = packet_socket(sys.argv[2])
    repeat, gap = int(sys.argv[3]), float(sys.argv[4])
    frames = [bytes.fromhex(h) for h in sys.argv[5:]]
    n = 0
    for i in range(repeat):
        if i and gap:
            time.sleep(gap)
        for f in frames:
            n += send(s, f)
    print(n, flush=True)
elif mode == 'flood':
    s = packet_socket(sys.argv[2])
    f = bytes.fromhex(sys.argv[4])
    end = time.monotonic() + float(sys.argv[3])
    n = tried = 0
    while True:
        for _ in range(256):
            n += send(s, f)
        tried += 256
        if time.monotonic() >= end:
            break
    print(n, tried, flush=True)
elif mode == 'macflood':
    s = packet_socket(sys.argv[2])
    n, f = int(sys.argv[3]), bytearray(bytes.fromhex(sys.argv[4]))
    sent = 0
    for i in range(n):
        src = bytearray(os.urandom(6))
        src[0] = (src[0] & 0xfc) | 0x02
        f[6:12] = src
        while not send(s, bytes(f)):
            time.sleep(0.001)
        sent += 1
    print(sent, flush=True)
elif mode == 'capture':
    s = packet_socket(sys.argv[2], 3)
    s.setsockopt(263, 23, 1)  # PACKET_IGNORE_OUTGOING: what this namespace sends is not "received"
    print('ready', flush=True)
    while True:
        data, addr = s.recvfrom(65536)
        if addr[2] != 4:  # PACKET_OUTGOING
            print(data[:128].hex(), flush=True)
elif mode == 'listen':
    socks = {}
    for spec in sys.argv[2:]:
        proto, port = spec.split(':')
        fam = socket.AF_INET6 if proto == 'udp6' else socket.AF_INET
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if fam == socket.AF_INET6:
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        u.bind(('::' if fam == socket.AF_INET6 else '0.0.0.0', int(port)))
        socks[u] = port
    print('ready', flush=True)
    while True:
        for u in select.select(list(socks), [], [])[0]:
            data = u.recv(65536)
            print(socks[u], data.hex(), flush=True)
`;

function py(ns: string, args: string[]): string[] {
  return ['netns', 'exec', ns, 'python3', '-c', PROGRAM, ...args];
}

/** Send `frames` from `iface` in `ns`, `repeat` rounds `gapS` seconds apart; returns how many the socket took. */
export function sendFrames(ns: string, iface: string, frames: Uint8Array[], repeat = 1, gapS = 0): number {
  return Number(must('ip', py(ns, ['send', iface, String(repeat), String(gapS), ...frames.map(hex)])).trim());
}

/** A child process that prints lines: what it printed so far, and its end. */
class Lines {
  readonly lines: string[] = [];
  protected readonly proc: ChildProcess;
  private buf = '';
  private err = '';

  constructor(args: string[]) {
    this.proc = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
      }
    });
    this.proc.stderr!.on('data', (d: Buffer) => (this.err += d.toString()));
  }

  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  protected async ready(what: string): Promise<void> {
    await waitFor(() => {
      if (this.exited) throw new Error(`${what} exited (${this.proc.exitCode ?? this.proc.signalCode}): ${this.err}`);
      return this.lines[0] === 'ready';
    }, 10_000, `${what} to start`);
  }

  /** Wait for the process to end by itself; its output lines. */
  async done(timeoutMs: number, what: string): Promise<string[]> {
    await waitFor(() => this.exited, timeoutMs, what, 50);
    if (this.proc.exitCode !== 0) throw new Error(`${what} failed (${this.proc.exitCode ?? this.proc.signalCode}): ${this.err}`);
    return this.lines;
  }

  stop(): void {
    if (!this.exited) this.proc.kill();
  }
}

/** Send frames in the background (send mode): start it, do something else, then done(). */
export class Sender extends Lines {
  constructor(ns: string, iface: string, frames: Uint8Array[], repeat: number, gapS: number) {
    super(py(ns, ['send', iface, String(repeat), String(gapS), ...frames.map(hex)]));
  }

  async sent(timeoutMs = 30_000): Promise<number> {
    return Number((await this.done(timeoutMs, 'the attacker to finish sending'))[0]);
  }
}

/** One frame as fast as possible for `seconds` (flood mode); flooded() is what the socket took. */
export class Flooder extends Lines {
  constructor(ns: string, iface: string, frame: Uint8Array, seconds: number) {
    super(py(ns, ['flood', iface, String(seconds), hex(frame)]));
  }

  async flooded(timeoutMs = 60_000): Promise<{ sent: number; tried: number }> {
    const [sent, tried] = (await this.done(timeoutMs, 'the flood to end'))[0]!.split(' ').map(Number);
    return { sent: sent!, tried: tried! };
  }
}

/** `n` copies of `frame` with random source MACs; returns how many were sent. */
export function macFlood(ns: string, iface: string, n: number, frame: Uint8Array): number {
  return Number(must('ip', py(ns, ['macflood', iface, String(n), hex(frame)])).trim());
}

/** What `iface` in `ns` receives (not what it sends): the first 128 bytes of each frame. */
export class Capture extends Lines {
  constructor(readonly ns: string, readonly iface: string) {
    super(py(ns, ['capture', iface]));
  }

  async start(): Promise<this> {
    await this.ready(`a capture on ${this.iface} in ${this.ns}`);
    return this;
  }

  /** The frames received so far. */
  frames(): Uint8Array[] {
    return this.lines.slice(1).map((l) => Buffer.from(l, 'hex'));
  }
}

/** UDP listeners in `ns` ('udp4:68', 'udp6:546'): each datagram as its port and payload. */
export class UdpListener extends Lines {
  constructor(readonly ns: string, specs: string[]) {
    super(py(ns, ['listen', ...specs]));
  }

  async start(): Promise<this> {
    await this.ready(`UDP listeners in ${this.ns}`);
    return this;
  }

  datagrams(): Array<{ port: number; payload: string }> {
    return this.lines.slice(1).map((l) => {
      const [port, h] = l.split(' ');
      return { port: Number(port), payload: Buffer.from(h ?? '', 'hex').toString('latin1') };
    });
  }
}

// ---- frames ----

export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

export function macBytes(mac: string): Uint8Array {
  const parts = mac.split(':');
  if (parts.length !== 6) throw new Error(`not a MAC: ${mac}`);
  return Uint8Array.from(parts, (p) => parseInt(p, 16));
}

export function ip4Bytes(ip: string): Uint8Array {
  return Uint8Array.from(ip.split('.'), Number);
}

export function ip6Bytes(ip: string): Uint8Array {
  const [head, tail] = ip.includes('::') ? ip.split('::') as [string, string] : [ip, undefined];
  const groups = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  if (all.length !== 8) throw new Error(`not an IPv6 address: ${ip}`);
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** The EUI-64 link-local address (fe80::/64) of a MAC. */
export function linkLocal(mac: string): string {
  const m = macBytes(mac);
  const w = (a: number, b: number): string => ((a << 8) | b).toString(16);
  return `fe80::${w(m[0]! ^ 2, m[1]!)}:${w(m[2]!, 0xff)}:${w(0xfe, m[3]!)}:${w(m[4]!, m[5]!)}`;
}

/** The Ethernet multicast address of an IPv6 multicast address (33:33 and its last 4 bytes). */
export function ipv6MulticastMac(ip: string): string {
  const b = ip6Bytes(ip);
  return ['33', '33', ...Array.from(b.subarray(12), (x) => x.toString(16).padStart(2, '0'))].join(':');
}

/** The solicited-node multicast address of an IPv6 address. */
export function solicitedNode(ip: string): string {
  const b = ip6Bytes(ip);
  return `ff02::1:ff${b[13]!.toString(16).padStart(2, '0')}:${((b[14]! << 8) | b[15]!).toString(16)}`;
}

function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function u16(v: number): Uint8Array {
  return Uint8Array.of(v >> 8, v & 0xff);
}

function u32(v: number): Uint8Array {
  return Uint8Array.of(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
}

/** The Internet checksum (RFC 1071) of the concatenated parts. */
function checksum(...parts: Uint8Array[]): number {
  const b = cat(...parts);
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export const ETH_P_IPV4 = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;
/** IEEE local experimental: a frame no stack acts on. */
export const ETH_P_EXPERIMENTAL = 0x88b5;
export const BROADCAST = 'ff:ff:ff:ff:ff:ff';

/** An Ethernet frame, padded to the 60-byte minimum. */
export function eth(dst: string, src: string, type: number, payload: Uint8Array): Uint8Array {
  const f = cat(macBytes(dst), macBytes(src), u16(type), payload);
  return f.length >= 60 ? f : cat(f, new Uint8Array(60 - f.length));
}

/** An Ethernet/IPv4 ARP message: op 1 request, 2 reply. */
export function arp(op: 1 | 2, sha: string, spa: string, tha: string, tpa: string): Uint8Array {
  return cat(u16(1), u16(ETH_P_IPV4), Uint8Array.of(6, 4), u16(op), macBytes(sha), ip4Bytes(spa), macBytes(tha), ip4Bytes(tpa));
}

/** An IPv4 packet with its header checksum (no options, DF clear, TTL 64). */
export function ipv4(src: string, dst: string, proto: number, payload: Uint8Array, id = 0): Uint8Array {
  const h = cat(Uint8Array.of(0x45, 0), u16(20 + payload.length), u16(id), u16(0), Uint8Array.of(64, proto), u16(0), ip4Bytes(src), ip4Bytes(dst));
  h.set(u16(checksum(h)), 10);
  return cat(h, payload);
}

/** A UDP datagram over IPv4, with its checksum. */
export function udp4(src: string, dst: string, sport: number, dport: number, payload: Uint8Array, id = 0): Uint8Array {
  const len = 8 + payload.length;
  const u = cat(u16(sport), u16(dport), u16(len), u16(0), payload);
  const sum = checksum(ip4Bytes(src), ip4Bytes(dst), Uint8Array.of(0, 17), u16(len), u);
  u.set(u16(sum === 0 ? 0xffff : sum), 6);
  return ipv4(src, dst, 17, u, id);
}

/** An IPv6 packet. */
export function ipv6(src: string, dst: string, next: number, payload: Uint8Array, hopLimit = 64): Uint8Array {
  return cat(Uint8Array.of(0x60, 0, 0, 0), u16(payload.length), Uint8Array.of(next, hopLimit), ip6Bytes(src), ip6Bytes(dst), payload);
}

function pseudo6(src: string, dst: string, next: number, len: number): Uint8Array {
  return cat(ip6Bytes(src), ip6Bytes(dst), u32(len), Uint8Array.of(0, 0, 0, next));
}

/** An ICMPv6 message in IPv6 (hop limit 255, as neighbour discovery requires), with its checksum. */
export function icmp6(src: string, dst: string, type: number, code: number, body: Uint8Array): Uint8Array {
  const m = cat(Uint8Array.of(type, code, 0, 0), body);
  m.set(u16(checksum(pseudo6(src, dst, 58, m.length), m)), 2);
  return ipv6(src, dst, 58, m, 255);
}

/** A UDP datagram over IPv6, with its (mandatory) checksum. */
export function udp6(src: string, dst: string, sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const len = 8 + payload.length;
  const u = cat(u16(sport), u16(dport), u16(len), u16(0), payload);
  const sum = checksum(pseudo6(src, dst, 17, len), u);
  u.set(u16(sum === 0 ? 0xffff : sum), 6);
  return ipv6(src, dst, 17, u);
}

/**
 * A router advertisement from `srcMac` (its link-local `src`) to all nodes: a default router for
 * 1800 s, and `prefix`/64 on-link and for address autoconfiguration.
 */
export function routerAdvertisement(srcMac: string, src: string, prefix: string): Uint8Array {
  const body = cat(
    Uint8Array.of(64, 0), u16(1800), u32(0), u32(0), // cur hop limit, flags, router lifetime, reachable, retrans
    Uint8Array.of(1, 1), macBytes(srcMac), // source link-layer address
    Uint8Array.of(3, 4, 64, 0xc0), u32(86400), u32(14400), u32(0), ip6Bytes(prefix), // prefix information: L and A
  );
  return eth('33:33:00:00:00:01', srcMac, ETH_P_IPV6, icmp6(src, 'ff02::1', 134, 0, body));
}

/** Neighbour advertisement flags. */
export const NA_SOLICITED = 0x40;
export const NA_OVERRIDE = 0x20;

/**
 * A neighbour advertisement from `srcMac` (IPv6 `src`) to `dstMac`/`dst`: "`target` is at
 * `lla`" (a target link-layer address option), unsolicited with the override flag unless told.
 */
export function neighbourAdvertisement(srcMac: string, src: string, dstMac: string, dst: string, target: string, lla: string, flags = NA_OVERRIDE): Uint8Array {
  const body = cat(Uint8Array.of(flags, 0, 0, 0), ip6Bytes(target), Uint8Array.of(2, 1), macBytes(lla));
  return eth(dstMac, srcMac, ETH_P_IPV6, icmp6(src, dst, 136, 0, body));
}

/** A DHCP offer (BOOTP reply, op 2) for `chaddr`, offering `yiaddr`, from server `siaddr`. */
export function dhcpOffer(chaddr: string, yiaddr: string, siaddr: string): Uint8Array {
  const b = new Uint8Array(240);
  b.set(Uint8Array.of(2, 1, 6, 0), 0); // op reply, htype Ethernet, hlen 6, hops
  b.set(u32(0x5049_4552), 4); // xid
  b.set(ip4Bytes(yiaddr), 16);
  b.set(ip4Bytes(siaddr), 20);
  b.set(macBytes(chaddr), 28);
  b.set(u32(0x63825363), 236); // magic cookie
  const opts = cat(Uint8Array.of(53, 1, 2), Uint8Array.of(54, 4), ip4Bytes(siaddr), Uint8Array.of(1, 4, 255, 255, 255, 0), Uint8Array.of(3, 4), ip4Bytes(siaddr), Uint8Array.of(255));
  return cat(b, opts);
}

/** A DHCPv6 reply (message type 7) with a server identifier (DUID-LL of `serverMac`). */
export function dhcpv6Reply(serverMac: string): Uint8Array {
  return cat(Uint8Array.of(7, 0x50, 0x49, 0x45), u16(2), u16(10), u16(3), u16(1), macBytes(serverMac));
}

/** Fields of a captured frame: Ethernet addresses and type, and the IPv4/IPv6 basics. */
export interface Parsed {
  dst: string;
  src: string;
  type: number;
  /** IPv4 or IPv6 source and destination as text; undefined for other frames. */
  ipSrc?: string;
  ipDst?: string;
  /** IP protocol (IPv6: the first next-header). */
  proto?: number;
  /** ICMP/ICMPv6 type. */
  icmpType?: number;
}

const macText = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');

function ip6Text(b: Uint8Array): string {
  const g = Array.from({ length: 8 }, (_, i) => ((b[2 * i]! << 8) | b[2 * i + 1]!).toString(16)).join(':');
  return new URL(`http://[${g}]/`).hostname.slice(1, -1);
}

export function parse(f: Uint8Array): Parsed {
  const p: Parsed = { dst: macText(f.subarray(0, 6)), src: macText(f.subarray(6, 12)), type: (f[12]! << 8) | f[13]! };
  if (p.type === ETH_P_IPV4 && f.length >= 34) {
    const hl = (f[14]! & 15) * 4;
    p.proto = f[23]!;
    p.ipSrc = Array.from(f.subarray(26, 30)).join('.');
    p.ipDst = Array.from(f.subarray(30, 34)).join('.');
    if (p.proto === 1 && f.length > 14 + hl) p.icmpType = f[14 + hl]!;
  } else if (p.type === ETH_P_IPV6 && f.length >= 54) {
    p.proto = f[20]!;
    p.ipSrc = ip6Text(f.subarray(22, 38));
    p.ipDst = ip6Text(f.subarray(38, 54));
    if (p.proto === 58 && f.length > 54) p.icmpType = f[54]!;
  }
  return p;
}
