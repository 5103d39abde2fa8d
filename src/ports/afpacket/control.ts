// The control-plane half of an afpacket port: open the AF_PACKET socket on the device inside its
// namespace, set up and map its rings (src/sys/packet.ts), and report the device's link state and
// the kernel's drop counters. The mapping is made and unmapped here; the dataplane half only views
// it, and is always taken out of the engine before destroy() runs.
import { PierError } from '../../errors.ts';
import { closePacketSocket, libc, linkExists, linkInfo, openPacketSocket, readPacketStats, type PacketSocket } from '../../sys/index.ts';
import type { ControlHalf, Realized } from '../kind.ts';
import { resolveNetns } from '../netns.ts';
import { checkUplinkDevice } from '../uplink.ts';
import type { AfPacketOptions, AfPacketSpec } from './options.ts';

/**
 * Ring geometry (docs/design/uplinks.md). rx: 32 blocks of 256 KiB (a block holds three 64 KiB
 * super-frames or ~170 MTU frames) retired after at most 1 ms (the kernel rounds to a jiffy).
 * tx: 32 blocks of 256 KiB, three frames of 87 376 bytes each (a 64 KiB super-frame with its
 * headers fits; a frame never spans blocks, and the kernel allocates blocks in powers of two
 * pages, so three to a block wastes least). 16 MiB of kernel memory per port.
 */
export const RX_BLOCK_SIZE = 256 * 1024;
export const RX_BLOCKS = 32;
export const RX_RETIRE_MS = 1;
export const TX_BLOCK_SIZE = 256 * 1024;
export const TX_FRAME_SIZE = 87376;
export const TX_BLOCKS = 32;

/**
 * How frames are received: `recvmmsg` into pool buffers (the default: measured faster, see
 * docs/design/uplinks.md) or the TPACKET_V3 `ring`. PIER_AFPACKET_RX=ring selects the ring, for
 * measuring; it applies to sockets opened after it is set.
 */
export function rxMode(): 'ring' | 'recvmmsg' {
  return process.env.PIER_AFPACKET_RX === 'ring' ? 'ring' : 'recvmmsg';
}

/**
 * How frames are sent: `sendmmsg` from pool buffers (the default: measured faster over a veth, see
 * docs/design/uplinks.md) or the TPACKET_V3 tx `ring`. PIER_AFPACKET_TX=ring selects the ring,
 * for measuring (or a NIC that sends from the ring's pages); it applies to sockets opened after it is set.
 */
export function txMode(): 'ring' | 'sendmmsg' {
  return process.env.PIER_AFPACKET_TX === 'ring' ? 'ring' : 'sendmmsg';
}

export interface RealizedAfPacket {
  socket: PacketSocket;
  dev: string;
  netnsPath: string | undefined;
  /** PACKET_STATISTICS resets on every read: what was read so far. */
  totals: { packets: number; drops: number; freezeQueue: number };
}


function where(o: AfPacketOptions): string {
  return o.netns ? ` in netns ${o.netns}` : '';
}

/**
 * One failure, two outcomes: add-port (and set-port --recreate) is refused, while a port already
 * added stays down until the 5 s retry finds its device: the hint holds for both.
 */
function noDeviceHint(o: AfPacketOptions): string {
  return `check the name with: ip${o.netns ? ` -n ${o.netns}` : ''} link${o.netns ? '' : ', and pass netns=NS when the device is in another namespace'}` +
    ' (a port already added comes back when its device does: pier retries it every 5 s)';
}

export function realizeAfPacket(o: AfPacketOptions): RealizedAfPacket {
  const ns = resolveNetns(o.netns);
  if (!linkExists(ns, o.dev)) throw new PierError('ENODEV', `no device ${o.dev}${where(o)}`, noDeviceHint(o));
  let socket: PacketSocket;
  try {
    socket = openPacketSocket({
      dev: o.dev, netnsPath: ns,
      rx: rxMode() === 'ring' ? { blockSize: RX_BLOCK_SIZE, blockNr: RX_BLOCKS, frameSize: RX_BLOCK_SIZE, frameNr: RX_BLOCKS, retireTovMs: RX_RETIRE_MS } : undefined,
      tx: txMode() === 'ring' ? { blockSize: TX_BLOCK_SIZE, blockNr: TX_BLOCKS, frameSize: TX_FRAME_SIZE, frameNr: Math.floor(TX_BLOCK_SIZE / TX_FRAME_SIZE) * TX_BLOCKS } : undefined,
    });
  } catch (e) {
    const err = e as libc.SysError;
    if (err.code === 'ENETDOWN') {
      throw new PierError('ENETDOWN', `device ${o.dev}${where(o)} is down`,
        `bring it up: ip${o.netns ? ` -n ${o.netns}` : ''} link set ${o.dev} up (a port already added comes back when its device is up: pier retries it every 5 s)`);
    }
    if (err.code === 'ENODEV' || err.code === 'ENXIO') throw new PierError('ENODEV', `no device ${o.dev}${where(o)}: ${err.message}`, noDeviceHint(o));
    throw new PierError('EPACKET', `cannot open an AF_PACKET socket on ${o.dev}${where(o)}: ${err.message}`, 'check that pier runs as root with CAP_NET_RAW and that the kernel has CONFIG_PACKET_MMAP (pier doctor)');
  }
  return { socket, dev: o.dev, netnsPath: ns, totals: { packets: 0, drops: 0, freezeQueue: 0 } };
}

function specOf(r: RealizedAfPacket, offloads: boolean, positions: Int32Array): AfPacketSpec {
  const s = r.socket;
  return {
    fd: s.fd, dev: r.dev, ifindex: s.ifindex, addr: s.addr, length: s.length, rx: s.rx, tx: s.tx,
    filterOutgoing: !s.ignoresOutgoing, offloads, positions,
  };
}

/** The device as the kernel sees it, and the socket's drops (accumulated: every read resets them). */
export function afpacketKernel(r: RealizedAfPacket): Record<string, number | string> | undefined {
  const st = !r.socket.closed ? readPacketStats(r.socket.fd) : undefined;
  if (st) {
    r.totals.packets += st.packets;
    r.totals.drops += st.drops;
    r.totals.freezeQueue += st.freezeQueue;
  }
  const k = linkInfo(r.netnsPath, r.dev);
  return {
    ifname: r.dev,
    operstate: k?.operstate ?? 'gone',
    mtu: k?.mtu ?? 0,
    mac: k?.mac ?? '',
    rx_packets: k?.rxPackets ?? 0,
    tx_packets: k?.txPackets ?? 0,
    rx_dropped: k?.rxDropped ?? 0,
    tx_dropped: k?.txDropped ?? 0,
    tp_packets: r.totals.packets,
    tp_drops: r.totals.drops,
    tp_freeze_q_cnt: r.totals.freezeQueue,
  };
}

export const afpacketControl: ControlHalf<AfPacketOptions, AfPacketSpec, RealizedAfPacket> = {
  prepare(name, o, others) {
    checkUplinkDevice(name, o.dev, o.netns, others);
    return o;
  },
  realize(_name, o): Realized<AfPacketSpec, RealizedAfPacket> {
    const r = realizeAfPacket(o);
    const positions = new Int32Array(new SharedArrayBuffer(16));
    const close = (): void => closePacketSocket(r.socket);
    return {
      spec: specOf(r, o.offloads !== false, positions),
      handle: r,
      destroy: close,
      // Nothing to keep for anyone: the device is the host's, and it stays.
      detach: close,
      ifname: o.dev,
      kernel: () => afpacketKernel(r),
    };
  },
  update(_name, r, prev, next) {
    const on = next.offloads !== false;
    if (on === (prev.offloads !== false)) return undefined;
    return { ...r.spec, offloads: on };
  },
};
