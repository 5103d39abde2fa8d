// The control half of an AF_XDP port: the XSKMAP and the XDP program (loaded by pier itself,
// src/sys/bpf.ts), attached to the device in native mode or generic, replacing a program an
// earlier pier left there; removed on del-port, left in place on daemon stop (with no socket in
// its map it passes every frame to the kernel's stack, so the device works as before). The
// sockets, their UMEM (in the worker's arena, beside the packet pool) and rings are the dataplane half's.
import { PierError } from '../../errors.ts';
import { attachXdp, createXskMap, loadXskProgram, PIER_PROG_NAME, progFdById, progInfo, runningQueues, xdpState, type XdpMode, type XdpState } from '../../sys/bpf.ts';
import { libc, linkInfo } from '../../sys/index.ts';
import type { ControlHalf, Realized } from '../kind.ts';
import { resolveNetns } from '../netns.ts';
import { checkUplinkDevice } from '../uplink.ts';
import type { AfXdpOptions, AfXdpSpec } from './options.ts';

export interface RealizedAfXdp {
  dev: string;
  netnsPath: string | undefined;
  ifindex: number;
  mapFd: number;
  progFd: number;
  progId: number;
  mode: XdpMode;
}


function where(o: AfXdpOptions): string {
  return `${o.dev}${o.netns ? ` in netns ${o.netns}` : ''}`;
}

function closeQuietly(fd: number): void {
  if (fd >= 0) libc.close(fd);
}

/**
 * The program attached in one of `modes`, replacing `old` (an fd of the pier program found on
 * the device, or -1) atomically when it runs in the mode tried; an old one in another mode is
 * detached first (native and generic cannot be attached at once).
 */
function attach(ns: string | undefined, o: AfXdpOptions, st: XdpState, progFd: number, old: number, modes: XdpMode[]): XdpMode {
  const errors: string[] = [];
  let oldFd = old; // -1 once it is detached (the caller closes it)
  const oldMode = st.attached === 'native' || st.attached === 'generic' ? st.attached : undefined;
  // The mode the old program runs in goes first: a restart then swaps programs without a gap.
  const order = oldMode && modes.includes(oldMode) ? [oldMode, ...modes.filter((m) => m !== oldMode)] : modes;
  for (const m of order) {
    try {
      if (oldFd >= 0 && m !== oldMode) {
        attachXdp(ns, st.ifindex, -1, oldMode ?? 'generic', oldFd);
        oldFd = -1;
      }
      attachXdp(ns, st.ifindex, progFd, m, oldFd);
      return m;
    } catch (e) {
      errors.push(`${m}: ${(e as Error).message}`);
    }
  }
  throw new PierError('EXDP', `cannot attach pier's XDP program to ${where(o)} (${errors.join('; ')})`,
    o.mode === 'native' ? 'the driver may lack native XDP: try mode=generic (or mode=auto)' : 'check that the kernel has XDP (pier doctor) and that no other program is attached (ip -d link show)');
}

/**
 * mode=auto: native first, then generic; on a veth generic first, unless zero-copy=on asks for
 * what only native mode can give. A veth's native XDP runs on the skbs its peer hands over, and on
 * a veth wire generic mode measured 1.17x / 1.14x native (bench/uplinks.ts, alternating runs,
 * docs/design/uplinks.md). A NIC's native mode is what AF_XDP is for, so every other device keeps
 * native first.
 */
function autoModes(st: XdpState, o: AfXdpOptions): XdpMode[] {
  return st.kind === 'veth' && o['zero-copy'] !== 'on' ? ['generic', 'native'] : ['native', 'generic'];
}

export const afxdpControl: ControlHalf<AfXdpOptions, AfXdpSpec, RealizedAfXdp> = {
  prepare(name, o, others) {
    checkUplinkDevice(name, o.dev, o.netns, others);
    return o;
  },

  realize(_name, o): Realized<AfXdpSpec, RealizedAfXdp> {
    const ns = resolveNetns(o.netns);
    let st: XdpState;
    try {
      st = xdpState(ns, o.dev);
    } catch (e) {
      throw new PierError('ENODEV', `no device ${where(o)}: ${(e as Error).message}`, 'name an existing interface with dev=IF (and netns=NS when it is in another namespace)');
    }
    const queues = o.queues ?? 1;
    const running = runningQueues(ns, o.dev, st);
    if (queues > running) {
      throw new PierError('EINVAL', `queues=${queues}, but ${where(o)} runs ${running} queue(s)`, `pass queues=${running} or fewer (ethtool -L ${o.dev} combined N changes a NIC's, rx N tx N a veth's)`);
    }
    let old = -1;
    if (st.progId !== 0) {
      try {
        old = progFdById(st.progId);
        const info = progInfo(old);
        if (info.name !== PIER_PROG_NAME) {
          closeQuietly(old);
          throw new PierError('EBUSY', `${where(o)} already has an XDP program (id ${st.progId}, ${info.name || 'unnamed'}) that is not pier's`,
            `detach it first (ip link set dev ${o.dev} xdp off) if nothing needs it`);
        }
      } catch (e) {
        if (e instanceof PierError) throw e;
        old = -1; // gone meanwhile
      }
    }
    let mapFd = -1;
    let progFd = -1;
    try {
      mapFd = createXskMap(queues);
      progFd = loadXskProgram(mapFd);
      const modes: XdpMode[] = o.mode === 'native' ? ['native'] : o.mode === 'generic' ? ['generic'] : autoModes(st, o);
      const mode = attach(ns, o, st, progFd, old, modes);
      const h: RealizedAfXdp = { dev: o.dev, netnsPath: ns, ifindex: st.ifindex, mapFd, progFd, progId: progInfo(progFd).id, mode };
      return {
        spec: { dev: o.dev, ifindex: st.ifindex, netnsPath: ns, mapFd, queues, zeroCopy: o['zero-copy'] ?? 'auto', mode, gro: process.env.PIER_AFXDP_GRO !== 'off' },
        handle: h,
        destroy: () => {
          try {
            attachXdp(ns, st.ifindex, -1, mode, progFd); // only if it is still ours
          } catch {
            /* the device went away, or another program replaced ours */
          }
          closeQuietly(progFd);
          closeQuietly(mapFd);
        },
        // The program stays: with no socket in its map it passes every frame to the kernel, and
        // the next daemon replaces it.
        detach: () => {
          closeQuietly(progFd);
          closeQuietly(mapFd);
        },
        kernel: () => {
          const k = linkInfo(ns, o.dev);
          return k ? { ifname: k.ifname, operstate: k.operstate, xdp: `${mode} prog ${h.progId}`, rx_packets: k.rxPackets, tx_packets: k.txPackets, rx_dropped: k.rxDropped, tx_dropped: k.txDropped } : undefined;
        },
      };
    } catch (e) {
      closeQuietly(progFd);
      closeQuietly(mapFd);
      if (e instanceof PierError) throw e;
      throw new PierError('EBPF', `cannot set up XDP on ${where(o)}: ${(e as Error).message}`, 'pier doctor checks what this kernel offers for AF_XDP and BPF');
    } finally {
      closeQuietly(old);
    }
  },

  update() {
    return undefined;
  },
};
