// AF_PACKET sockets, with or without memory-mapped TPACKET_V3 rings (Documentation/networking/packet_mmap.rst):
// the socket of an afpacket uplink port, opened in the device's namespace, its rx ring of blocks
// and tx ring of frames (when asked for) in one mapping, virtio-net headers in front of each frame (PACKET_VNET_HDR),
// promiscuous membership, and the kernel's drop counters. The layouts are checked at load.
import * as c from './libc.ts';
import { koffi, libcHandle } from './libc.ts';
import { withNetns } from './netns.ts';

// ---- constants (uapi linux/if_packet.h, linux/if_ether.h; checked against the headers by hand, see the sizes below) ----
export const AF_PACKET = 17;
export const SOL_PACKET = 263;
export const ETH_P_ALL = 0x0003;
export const PACKET_ADD_MEMBERSHIP = 1;
export const PACKET_RX_RING = 5;
export const PACKET_STATISTICS = 6;
export const PACKET_VERSION = 10;
export const PACKET_TX_RING = 13;
export const PACKET_LOSS = 14;
export const PACKET_VNET_HDR = 15;
export const PACKET_QDISC_BYPASS = 20;
export const PACKET_IGNORE_OUTGOING = 23;
const SO_RCVBUFFORCE = 33;
/** The receive queue of a socket without an rx ring: the 8 MiB such a ring would have. */
export const RCVBUF_DEFAULT = 8 * 1024 * 1024;
/** Send buffer without a tx ring: an skb is charged until the device takes it, and a burst of 64 KiB super-frames outgrows the default 208 KiB. */
export const SNDBUF_DEFAULT = 4 * 1024 * 1024;
const SO_SNDBUFFORCE = 32;
/** recvmsg: a tpacket_auxdata control message per frame (the VLAN tag the kernel took out, lengths). */
export const PACKET_AUXDATA = 8;
/** struct tpacket_auxdata; CMSG_SPACE of it. */
export const SIZEOF_TPACKET_AUXDATA = 20;
export const CMSG_SPACE_AUXDATA = 40;
/** tpacket_auxdata fields. */
export const AUX_STATUS = 0;
export const AUX_VLAN_TCI = 16;
export const AUX_VLAN_TPID = 18;
export const PACKET_MR_PROMISC = 1;
export const TPACKET_V3 = 2;
/** sll_pkttype of a frame the host sent (what PACKET_IGNORE_OUTGOING keeps out of the ring). */
export const PACKET_OUTGOING = 4;
export const SO_ERROR = 4;
export const ENETDOWN = 100;
export const ENXIO = 6;
/** The device or its backlog dropped the frame being sent. */
export const ENOBUFS = 105;

/** A send failed because the socket's device is down or gone. */
export function linkDown(err: number): boolean {
  return err === ENETDOWN || err === ENXIO || err === c.ENODEV;
}

/** Block status bits (rx ring). */
export const TP_STATUS_KERNEL = 0;
export const TP_STATUS_USER = 1;
/** Frame status bits (rx ring, tpacket3_hdr.tp_status). */
export const TP_STATUS_LOSING = 4;
export const TP_STATUS_VLAN_VALID = 0x10;
export const TP_STATUS_VLAN_TPID_VALID = 0x40;
/** Frame status values (tx ring). */
export const TP_STATUS_AVAILABLE = 0;
export const TP_STATUS_SEND_REQUEST = 1;
export const TP_STATUS_SENDING = 2;
export const TP_STATUS_WRONG_FORMAT = 4;

/** struct virtio_net_hdr (without num_buffers): what PACKET_VNET_HDR puts in front of each frame. */
export const PACKET_VNET_HDR_LEN = 10;

// ---- struct layouts ----
export const tpacket_req3 = koffi.struct('pier_tpacket_req3', {
  tp_block_size: 'uint32_t', tp_block_nr: 'uint32_t', tp_frame_size: 'uint32_t', tp_frame_nr: 'uint32_t',
  tp_retire_blk_tov: 'uint32_t', tp_sizeof_priv: 'uint32_t', tp_feature_req_word: 'uint32_t',
});
const tpacket_bd_ts = koffi.struct('pier_tpacket_bd_ts', { ts_sec: 'uint32_t', ts_nsec: 'uint32_t' });
export const tpacket_hdr_v1 = koffi.struct('pier_tpacket_hdr_v1', {
  block_status: 'uint32_t', num_pkts: 'uint32_t', offset_to_first_pkt: 'uint32_t', blk_len: 'uint32_t',
  seq_num: 'uint64_t', ts_first_pkt: tpacket_bd_ts, ts_last_pkt: tpacket_bd_ts,
});
export const tpacket_block_desc = koffi.struct('pier_tpacket_block_desc', { version: 'uint32_t', offset_to_priv: 'uint32_t', bh1: tpacket_hdr_v1 });
export const tpacket3_hdr = koffi.struct('pier_tpacket3_hdr', {
  tp_next_offset: 'uint32_t', tp_sec: 'uint32_t', tp_nsec: 'uint32_t', tp_snaplen: 'uint32_t', tp_len: 'uint32_t', tp_status: 'uint32_t',
  tp_mac: 'uint16_t', tp_net: 'uint16_t', tp_rxhash: 'uint32_t', tp_vlan_tci: 'uint32_t', tp_vlan_tpid: 'uint16_t', _pad: 'uint16_t',
  tp_padding: koffi.array('uint8_t', 8, 'Array'),
});
export const sockaddr_ll = koffi.struct('pier_sockaddr_ll', {
  sll_family: 'uint16_t', sll_protocol: 'uint16_t', sll_ifindex: 'int', sll_hatype: 'uint16_t', sll_pkttype: 'uint8_t', sll_halen: 'uint8_t',
  sll_addr: koffi.array('uint8_t', 8, 'Array'),
});
export const tpacket_stats_v3 = koffi.struct('pier_tpacket_stats_v3', { tp_packets: 'uint32_t', tp_drops: 'uint32_t', tp_freeze_q_cnt: 'uint32_t' });
export const tpacket_auxdata = koffi.struct('pier_tpacket_auxdata', {
  tp_status: 'uint32_t', tp_len: 'uint32_t', tp_snaplen: 'uint32_t', tp_mac: 'uint16_t', tp_net: 'uint16_t', tp_vlan_tci: 'uint16_t', tp_vlan_tpid: 'uint16_t',
});
export const packet_mreq = koffi.struct('pier_packet_mreq', { mr_ifindex: 'int', mr_type: 'uint16_t', mr_alen: 'uint16_t', mr_address: koffi.array('uint8_t', 8, 'Array') });

export const SIZEOF_TPACKET_REQ3 = 28;
export const SIZEOF_TPACKET3_HDR = 48;
export const SIZEOF_TPACKET_BLOCK_DESC = 48;
export const SIZEOF_TPACKET_HDR_V1 = 40;
export const SIZEOF_SOCKADDR_LL = 20;
export const SIZEOF_TPACKET_STATS_V3 = 12;
export const SIZEOF_PACKET_MREQ = 16;
/** Where the data of a frame starts in a tx-ring frame: TPACKET3_HDRLEN - sizeof(struct sockaddr_ll). */
export const TX_DATA_OFFSET = 48;

/** Offsets the ring walkers read and write (checked below). */
export const BD_BLOCK_STATUS = 8;
export const BD_NUM_PKTS = 12;
export const BD_FIRST = 16;
export const BD_BLK_LEN = 20;
export const BD_SEQ_NUM = 24;
export const H3_NEXT = 0;
export const H3_SNAPLEN = 12;
export const H3_LEN = 16;
export const H3_STATUS = 20;
export const H3_MAC = 24;
export const H3_VLAN_TCI = 32;
export const H3_VLAN_TPID = 36;
/** The sockaddr_ll the kernel writes after each rx header (TPACKET_ALIGN(sizeof(tpacket3_hdr))), and its sll_pkttype. */
export const H3_SLL_PKTTYPE = 48 + 10;

function assertPacketAbi(): void {
  const sizes: Array<[string, number, number]> = [
    ['struct tpacket_req3', koffi.sizeof(tpacket_req3), SIZEOF_TPACKET_REQ3],
    ['struct tpacket3_hdr', koffi.sizeof(tpacket3_hdr), SIZEOF_TPACKET3_HDR],
    ['struct tpacket_block_desc', koffi.sizeof(tpacket_block_desc), SIZEOF_TPACKET_BLOCK_DESC],
    ['struct tpacket_hdr_v1', koffi.sizeof(tpacket_hdr_v1), SIZEOF_TPACKET_HDR_V1],
    ['struct sockaddr_ll', koffi.sizeof(sockaddr_ll), SIZEOF_SOCKADDR_LL],
    ['struct tpacket_stats_v3', koffi.sizeof(tpacket_stats_v3), SIZEOF_TPACKET_STATS_V3],
    ['struct packet_mreq', koffi.sizeof(packet_mreq), SIZEOF_PACKET_MREQ],
    ['struct tpacket_auxdata', koffi.sizeof(tpacket_auxdata), SIZEOF_TPACKET_AUXDATA],
  ];
  for (const [name, got, want] of sizes) {
    if (got !== want) throw new Error(`ABI check failed: sizeof(${name}) is ${got}, expected ${want}`);
  }
  const offsets: Array<[string, number, number]> = [
    ['tpacket_block_desc.bh1.block_status', koffi.offsetof(tpacket_block_desc, 'bh1') + koffi.offsetof(tpacket_hdr_v1, 'block_status'), BD_BLOCK_STATUS],
    ['tpacket_block_desc.bh1.num_pkts', koffi.offsetof(tpacket_block_desc, 'bh1') + koffi.offsetof(tpacket_hdr_v1, 'num_pkts'), BD_NUM_PKTS],
    ['tpacket_block_desc.bh1.offset_to_first_pkt', koffi.offsetof(tpacket_block_desc, 'bh1') + koffi.offsetof(tpacket_hdr_v1, 'offset_to_first_pkt'), BD_FIRST],
    ['tpacket_block_desc.bh1.blk_len', koffi.offsetof(tpacket_block_desc, 'bh1') + koffi.offsetof(tpacket_hdr_v1, 'blk_len'), BD_BLK_LEN],
    ['tpacket_block_desc.bh1.seq_num', koffi.offsetof(tpacket_block_desc, 'bh1') + koffi.offsetof(tpacket_hdr_v1, 'seq_num'), BD_SEQ_NUM],
    ['tpacket_auxdata.tp_vlan_tci', koffi.offsetof(tpacket_auxdata, 'tp_vlan_tci'), AUX_VLAN_TCI],
    ['tpacket_auxdata.tp_vlan_tpid', koffi.offsetof(tpacket_auxdata, 'tp_vlan_tpid'), AUX_VLAN_TPID],
    ['tpacket3_hdr.tp_snaplen', koffi.offsetof(tpacket3_hdr, 'tp_snaplen'), H3_SNAPLEN],
    ['tpacket3_hdr.tp_len', koffi.offsetof(tpacket3_hdr, 'tp_len'), H3_LEN],
    ['tpacket3_hdr.tp_status', koffi.offsetof(tpacket3_hdr, 'tp_status'), H3_STATUS],
    ['tpacket3_hdr.tp_mac', koffi.offsetof(tpacket3_hdr, 'tp_mac'), H3_MAC],
    ['tpacket3_hdr.tp_vlan_tci', koffi.offsetof(tpacket3_hdr, 'tp_vlan_tci'), H3_VLAN_TCI],
    ['tpacket3_hdr.tp_vlan_tpid', koffi.offsetof(tpacket3_hdr, 'tp_vlan_tpid'), H3_VLAN_TPID],
    ['sockaddr_ll.sll_ifindex', koffi.offsetof(sockaddr_ll, 'sll_ifindex'), 4],
    ['sockaddr_ll.sll_pkttype', koffi.offsetof(sockaddr_ll, 'sll_pkttype'), 10],
    ['packet_mreq.mr_type', koffi.offsetof(packet_mreq, 'mr_type'), 4],
  ];
  for (const [name, got, want] of offsets) {
    if (got !== want) throw new Error(`ABI check failed: offsetof(${name}) is ${got}, expected ${want}`);
  }
}
assertPacketAbi();

// ---- functions ----
const getsockopt = libcHandle.func('int getsockopt(int fd, int level, int name, _Inout_ void *val, _Inout_ uint32_t *len)');
const getsockname = libcHandle.func('int getsockname(int fd, _Out_ void *addr, _Inout_ uint32_t *len)');
const if_nametoindex = libcHandle.func('unsigned int if_nametoindex(const char *name)');
/** memcpy between two addresses (ring <-> pool): no JavaScript object per call, unlike subarray().set(). */
export const copyBytes = libcHandle.func('void memcpy(uintptr_t dst, uintptr_t src, size_t n)') as (dst: number, src: number, n: number) => void;
const sendtoKick = libcHandle.func('intptr_t sendto(int fd, uintptr_t buf, size_t len, int flags, uintptr_t addr, uint32_t alen)');

/** Geometry of one ring as given to PACKET_RX_RING / PACKET_TX_RING. */
export interface RingGeometry {
  blockSize: number;
  blockNr: number;
  frameSize: number;
  frameNr: number;
}

export interface PacketSocketOptions {
  dev: string;
  netnsPath?: string | undefined;
  /** The TPACKET_V3 rx ring; undefined: no rx ring, frames are read with recvmmsg (and PACKET_AUXDATA). */
  rx?: (RingGeometry & { retireTovMs: number }) | undefined;
  /** The TPACKET_V3 tx ring; undefined: no tx ring, frames are sent with sendmmsg. */
  tx?: RingGeometry | undefined;
}

export interface PacketSocket {
  fd: number;
  ifindex: number;
  /** Address of the mapping: the rx ring (if any), then the tx ring (if any) right after it; 0 when neither. */
  addr: number;
  length: number;
  rx: RingGeometry | undefined;
  tx: RingGeometry | undefined;
  /** closePacketSocket() ran. */
  closed: boolean;
  /** The kernel keeps pier's own transmissions out of the rx ring (PACKET_IGNORE_OUTGOING, Linux 4.20). */
  ignoresOutgoing: boolean;
}

function setInt(fd: number, level: number, name: number, v: number, what: string): void {
  c.check(c.setsockopt(fd, level, name, new Int32Array([v]), 4), 'setsockopt', what);
}

function req3(g: RingGeometry, tovMs: number): Uint32Array {
  return new Uint32Array([g.blockSize, g.blockNr, g.frameSize, g.frameNr, tovMs, 0, 0]);
}

/** Pending socket error (SO_ERROR, which reading clears): 0 when none. */
export function socketError(fd: number): number {
  const v = new Int32Array(1);
  const len = new Uint32Array([4]);
  if (getsockopt(fd, c.SOL_SOCKET, SO_ERROR, v, len) !== 0) return c.errno();
  return v[0]!;
}

/** The ifindex the socket is bound to; -1 once its device was unregistered (or on error). */
export function boundIfindex(fd: number): number {
  const sll = new Uint8Array(SIZEOF_SOCKADDR_LL);
  const len = new Uint32Array([SIZEOF_SOCKADDR_LL]);
  if (getsockname(fd, sll, len) !== 0) return -1;
  return new DataView(sll.buffer).getInt32(4, true);
}

/**
 * Open a SOCK_RAW packet socket on `dev` inside `netnsPath`: TPACKET_V3, vnet headers, lossy tx
 * (a malformed frame is skipped rather than blocking the ring), qdisc bypass, own transmissions
 * ignored, the rings asked for mapped (else larger socket buffers), bound, promiscuous. Throws SysError (everything made is undone).
 * The socket is made with protocol 0 so nothing is queued before the rings exist; bind() with
 * ETH_P_ALL starts reception.
 */
export function openPacketSocket(o: PacketSocketOptions): PacketSocket {
  let ifindex = 0;
  const fd = withNetns(o.netnsPath, () => {
    const s = c.check(c.socket(AF_PACKET, c.SOCK_RAW | c.SOCK_NONBLOCK | c.SOCK_CLOEXEC, 0), 'socket', 'AF_PACKET');
    ifindex = if_nametoindex(o.dev);
    if (ifindex === 0) {
      const err = c.errno();
      c.close(s);
      throw new c.SysError('if_nametoindex', err, o.dev);
    }
    return s;
  });
  let addr = 0;
  let length = 0;
  try {
    setInt(fd, SOL_PACKET, PACKET_VERSION, TPACKET_V3, 'PACKET_VERSION TPACKET_V3');
    setInt(fd, SOL_PACKET, PACKET_VNET_HDR, 1, 'PACKET_VNET_HDR');
    setInt(fd, SOL_PACKET, PACKET_LOSS, 1, 'PACKET_LOSS');
    setInt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, 1, 'PACKET_QDISC_BYPASS');
    const ignoresOutgoing = c.setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, new Int32Array([1]), 4) === 0;
    if (o.rx) c.check(c.setsockopt(fd, SOL_PACKET, PACKET_RX_RING, req3(o.rx, o.rx.retireTovMs), SIZEOF_TPACKET_REQ3), 'setsockopt', 'PACKET_RX_RING');
    else {
      setInt(fd, SOL_PACKET, PACKET_AUXDATA, 1, 'PACKET_AUXDATA');
      // The socket's queue is the ring now: the default 208 KiB holds two or three 64 KiB
      // super-frames (an skb is charged its truesize), so give it what the ring had.
      setInt(fd, c.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_DEFAULT, 'SO_RCVBUFFORCE');
    }
    if (o.tx) c.check(c.setsockopt(fd, SOL_PACKET, PACKET_TX_RING, req3(o.tx, 0), SIZEOF_TPACKET_REQ3), 'setsockopt', 'PACKET_TX_RING');
    // (With a tx ring mapped, every sendmsg on the socket sends ring frames and ignores its iovecs.)
    else setInt(fd, c.SOL_SOCKET, SO_SNDBUFFORCE, SNDBUF_DEFAULT, 'SO_SNDBUFFORCE');
    const len = (o.rx ? o.rx.blockSize * o.rx.blockNr : 0) + (o.tx ? o.tx.blockSize * o.tx.blockNr : 0);
    if (len > 0) {
      const a = Number(c.mmap(0, len, c.PROT_READ | c.PROT_WRITE, c.MAP_SHARED, fd, 0));
      if (a === 0 || a >= 2 ** 53) throw new c.SysError('mmap', c.errno(), 'packet rings');
      addr = a;
      length = len;
    }
    const sll = new Uint8Array(SIZEOF_SOCKADDR_LL);
    const dv = new DataView(sll.buffer);
    dv.setUint16(0, AF_PACKET, true);
    dv.setUint16(2, ETH_P_ALL, false); // network byte order
    dv.setInt32(4, ifindex, true);
    c.check(c.bind(fd, sll, SIZEOF_SOCKADDR_LL), 'bind', `${o.dev} (ifindex ${ifindex})`);
    const mreq = new Uint8Array(SIZEOF_PACKET_MREQ);
    const mv = new DataView(mreq.buffer);
    mv.setInt32(0, ifindex, true);
    mv.setUint16(4, PACKET_MR_PROMISC, true);
    c.check(c.setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq, SIZEOF_PACKET_MREQ), 'setsockopt', 'PACKET_ADD_MEMBERSHIP PACKET_MR_PROMISC');
    // bind() on a device that is down succeeds and leaves ENETDOWN pending instead.
    const err = socketError(fd);
    if (err !== 0) throw new c.SysError('bind', err, `${o.dev} (ifindex ${ifindex})`);
    return { fd, ifindex, addr, length, rx: o.rx, tx: o.tx, ignoresOutgoing, closed: false };
  } catch (e) {
    if (addr !== 0) c.munmap(addr, length);
    c.close(fd);
    throw e;
  }
}

/**
 * What an afpacket port asks of the kernel, tried on a socket bound to no device (protocol 0: it
 * receives nothing), for pier doctor: TPACKET_V3, virtio-net headers, auxdata, a mapped tx ring.
 * Throws SysError naming the step that failed; says whether PACKET_IGNORE_OUTGOING exists.
 */
export function probePacketSocket(): { ignoresOutgoing: boolean } {
  const fd = c.check(c.socket(AF_PACKET, c.SOCK_RAW | c.SOCK_CLOEXEC, 0), 'socket', 'AF_PACKET');
  try {
    setInt(fd, SOL_PACKET, PACKET_VERSION, TPACKET_V3, 'PACKET_VERSION TPACKET_V3');
    setInt(fd, SOL_PACKET, PACKET_VNET_HDR, 1, 'PACKET_VNET_HDR');
    setInt(fd, SOL_PACKET, PACKET_AUXDATA, 1, 'PACKET_AUXDATA');
    const ignoresOutgoing = c.setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, new Int32Array([1]), 4) === 0;
    const tx: RingGeometry = { blockSize: 4096, blockNr: 1, frameSize: 2048, frameNr: 2 };
    c.check(c.setsockopt(fd, SOL_PACKET, PACKET_TX_RING, req3(tx, 0), SIZEOF_TPACKET_REQ3), 'setsockopt', 'PACKET_TX_RING');
    const a = Number(c.mmap(0, 4096, c.PROT_READ | c.PROT_WRITE, c.MAP_SHARED, fd, 0));
    if (a === 0 || a >= 2 ** 53) throw new c.SysError('mmap', c.errno(), 'packet tx ring');
    c.munmap(a, 4096);
    return { ignoresOutgoing };
  } finally {
    c.close(fd);
  }
}

/** Unmap the rings and close the socket: the kernel drops the promiscuous membership with it. */
export function closePacketSocket(s: PacketSocket): void {
  if (s.closed) return;
  s.closed = true;
  if (s.addr !== 0) c.munmap(s.addr, s.length);
  s.addr = 0;
  c.close(s.fd);
}

export interface PacketStats {
  packets: number;
  drops: number;
  freezeQueue: number;
}

/**
 * PACKET_STATISTICS (struct tpacket_stats_v3). Reading resets the kernel's counters: the caller
 * accumulates. undefined when the socket cannot be read.
 */
export function readPacketStats(fd: number): PacketStats | undefined {
  const st = new Uint32Array(3);
  const len = new Uint32Array([SIZEOF_TPACKET_STATS_V3]);
  if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, st, len) !== 0) return undefined;
  return { packets: st[0]!, drops: st[1]!, freezeQueue: st[2]! };
}

/**
 * Ask the kernel to send every tx-ring frame marked SEND_REQUEST: sendto(fd, NULL, 0,
 * MSG_DONTWAIT). Hot path: returns the bytes sent, or -errno; never throws, never blocks.
 */
export function kick(fd: number): number {
  const r = sendtoKick(fd, 0, 0, c.MSG_DONTWAIT, 0, 0);
  return r < 0 ? -c.errno() : r;
}
