// `pier doctor`: what this machine offers pier, each finding with its fix. The answers to the
// thread's failures are here: is there a vhost-net (and is it a character device, not a socket
// to connect() to), can taps be made, may this user configure networks, will a socket path fit.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { call } from './client.ts';

export type Level = 'ok' | 'warn' | 'fail';
export interface Finding { check: string; level: Level; detail: string; fix?: string }

function charDev(path: string, major: number, minor: number, what: string, missingFix: string, level: Level): Finding {
  if (!existsSync(path)) return { check: path, level, detail: `missing: ${what}`, fix: missingFix };
  const st = statSync(path);
  if (!st.isCharacterDevice()) {
    return { check: path, level: 'fail', detail: `exists but is not a character device (${st.isSocket() ? 'a socket' : 'another file type'})`, fix: `remove it and ${missingFix}` };
  }
  const maj = Math.floor(st.rdev / 256);
  const min = st.rdev % 256;
  const dev = `${maj}:${min}`;
  if (maj !== major || min !== minor) return { check: path, level: 'warn', detail: `character device ${dev}, expected ${major}:${minor}`, fix: `recreate it: mknod ${path} c ${major} ${minor}` };
  return { check: path, level: 'ok', detail: `character device ${dev}` };
}

function readParam(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function hasTool(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export async function doctor(socket: string): Promise<Finding[]> {
  const f: Finding[] = [];
  f.push({ check: 'kernel', level: 'ok', detail: release() });

  f.push(charDev('/dev/net/tun', 10, 200, 'no tap ports can be made', 'modprobe tun, or mkdir -p /dev/net && mknod /dev/net/tun c 10 200', 'fail'));
  // vhost-net is only needed by virtio-user ports with path=/dev/vhost-net: a warning otherwise.
  const vhostNet = charDev('/dev/vhost-net', 10, 238, 'the kernel has no vhost-net loaded or built in (virtio-user ports with path=/dev/vhost-net cannot work)',
    'modprobe vhost_net (a kernel built with CONFIG_VHOST_NET), or use type=tap ports', 'warn');
  f.push(vhostNet);

  const vhostMod = '/sys/module/vhost/parameters';
  if (existsSync(vhostMod)) {
    const params = readdirSync(vhostMod).map((p) => `${p}=${readParam(`${vhostMod}/${p}`) ?? '?'}`).join(' ');
    f.push({ check: 'vhost module parameters', level: 'ok', detail: params });
    // vhost-net refuses a memory table with more regions than max_mem_regions.
    const { DRIVER_MEM_REGIONS, memTableProblem, readMaxMemRegions } = await import('../vhost/mem-table.ts');
    const max = readMaxMemRegions(`${vhostMod}/max_mem_regions`);
    const mem = max.source === 'parameter' ? memTableProblem(DRIVER_MEM_REGIONS, max.value) : null;
    if (mem) f.push({ check: 'vhost max_mem_regions', level: 'warn', detail: `${mem.message}: virtio-user ports with path=/dev/vhost-net cannot work`, fix: mem.hint });
  } else {
    f.push({ check: 'vhost module parameters', level: vhostNet.level === 'ok' ? 'ok' : 'warn', detail: vhostNet.level === 'ok' ? 'built in (no module parameters)' : 'vhost module not loaded', fix: vhostNet.level === 'ok' ? undefined : 'modprobe vhost_net' });
  }

  const { hasNetAdmin, hasSysAdmin } = await import('../sys/caps.ts');
  f.push(hasNetAdmin()
    ? { check: 'CAP_NET_ADMIN', level: 'ok', detail: 'may create taps and configure interfaces' }
    : { check: 'CAP_NET_ADMIN', level: 'fail', detail: 'missing: the daemon cannot create taps or configure containers', fix: 'run pier as root' });
  f.push(hasSysAdmin()
    ? { check: 'CAP_SYS_ADMIN', level: 'ok', detail: 'may enter network namespaces (setns)' }
    : { check: 'CAP_SYS_ADMIN', level: 'fail', detail: 'missing: taps cannot be made inside containers', fix: 'run pier as root' });

  const nsDir = '/var/run/netns';
  const named = existsSync(nsDir) ? readdirSync(nsDir).length : 0;
  f.push({ check: 'network namespaces', level: existsSync('/proc/self/ns/net') ? 'ok' : 'fail', detail: `${named} named under ${nsDir}; netns= also takes pid:PID and /proc/PID/ns/net`, ...(existsSync('/proc/self/ns/net') ? {} : { fix: 'a kernel with CONFIG_NET_NS' }) });
  for (const tool of ['ip', 'nsenter']) {
    f.push(hasTool(tool)
      ? { check: tool, level: 'ok', detail: 'found' }
      : { check: tool, level: 'fail', detail: 'not found: pier configures interfaces with it', fix: `apt-get install ${tool === 'ip' ? 'iproute2' : 'util-linux'}` });
  }

  const len = Buffer.byteLength(socket);
  f.push(len <= 107
    ? { check: 'unix socket paths', level: 'ok', detail: `control socket ${socket} is ${len} bytes; vhost-user socket paths must be at most 107 bytes too` }
    : { check: 'unix socket paths', level: 'fail', detail: `control socket ${socket} is ${len} bytes, over the 107-byte limit`, fix: 'use a shorter --socket path' });

  try {
    const { memfd, libc } = await import('../sys/index.ts');
    const fd = memfd('pier-doctor', 1 << 20);
    const addr = Number(libc.mmap(0, 1 << 20, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0));
    const ok = addr > 0 && addr < 2 ** 53;
    if (ok) libc.munmap(addr, 1 << 20);
    libc.close(fd);
    f.push(ok ? { check: 'memfd', level: 'ok', detail: 'shared memory for rings and packets can be made and mapped' }
      : { check: 'memfd', level: 'fail', detail: 'mmap of a memfd failed', fix: 'check memory limits (ulimit -l, cgroup memory)' });
  } catch (e) {
    f.push({ check: 'memfd', level: 'fail', detail: (e as Error).message, fix: 'a kernel with memfd_create (3.17+)' });
  }

  f.push(await afpacketFinding());
  f.push(...await afxdpFindings());

  try {
    const r = (await call(socket, 'ping')) as { version: string; pid: number };
    f.push({ check: 'daemon', level: 'ok', detail: `pier ${r.version} running (pid ${r.pid}) on ${socket}` });
  } catch (e) {
    f.push({ check: 'daemon', level: 'fail', detail: (e as Error).message, fix: 'start it with: pier daemon' });
  }
  return f;
}

/**
 * What afxdp ports need: AF_XDP sockets, BPF (pier loads its own XDP program: loading it here is
 * the check), and per device whether an XDP program is attached and whose. Which modes a device
 * offers is not probed: attaching in native mode resets some NICs' links. Generic mode works on
 * every device; native needs the driver's support (veth has it).
 */
/** What afpacket ports need: an AF_PACKET socket with TPACKET_V3, virtio-net headers, auxdata and a mapped tx ring. */
async function afpacketFinding(): Promise<Finding> {
  const { packet } = await import('../sys/index.ts');
  try {
    const p = packet.probePacketSocket();
    return p.ignoresOutgoing
      ? { check: 'AF_PACKET sockets', level: 'ok', detail: 'TPACKET_V3 tx ring, virtio-net headers, auxdata and PACKET_IGNORE_OUTGOING (afpacket ports)' }
      : { check: 'AF_PACKET sockets', level: 'warn', detail: 'no PACKET_IGNORE_OUTGOING (Linux 4.20): afpacket ports work, and pier skips its own transmissions itself, at a cost per frame', fix: 'a kernel of 4.20 or later' };
  } catch (e) {
    return { check: 'AF_PACKET sockets', level: 'warn', detail: `${(e as Error).message}: afpacket ports cannot work`, fix: 'a kernel with CONFIG_PACKET, run as root (CAP_NET_RAW)' };
  }
}

async function afxdpFindings(): Promise<Finding[]> {
  const out: Finding[] = [];
  const { libc } = await import('../sys/index.ts');
  const xsk = await import('../sys/xsk.ts');
  const bpf = await import('../sys/bpf.ts');
  try {
    libc.close(xsk.xskSocket());
    out.push({ check: 'AF_XDP sockets', level: 'ok', detail: 'an AF_XDP socket can be made (afxdp ports)' });
  } catch (e) {
    out.push({ check: 'AF_XDP sockets', level: 'warn', detail: `${(e as Error).message}: afxdp ports cannot work`, fix: 'a kernel with CONFIG_XDP_SOCKETS (5.4 or later), or use type=afpacket uplinks' });
  }
  let map = -1;
  let prog = -1;
  try {
    map = bpf.createXskMap(1);
    prog = bpf.loadXskProgram(map);
    out.push({ check: 'BPF (XDP programs)', level: 'ok', detail: `pier's XDP program loads (${bpf.PIER_PROG_NAME}, id ${bpf.progInfo(prog).id}, XSKMAP, bpf_redirect_map): XDP generic on any device, native where the driver has it` });
  } catch (e) {
    out.push({ check: 'BPF (XDP programs)', level: 'warn', detail: `${(e as Error).message}: afxdp ports cannot work`, fix: 'a kernel with CONFIG_BPF_SYSCALL and CONFIG_XDP_SOCKETS, run as root (CAP_BPF, CAP_NET_ADMIN)' });
  } finally {
    if (prog >= 0) libc.close(prog);
    if (map >= 0) libc.close(map);
  }
  let devs: string[] = [];
  try {
    devs = readdirSync('/sys/class/net').filter((d) => d !== 'lo').sort();
  } catch {
    /* no sysfs */
  }
  const parts: string[] = [];
  for (const d of devs.slice(0, 32)) {
    try {
      const st = bpf.xdpState(undefined, d);
      let driver = 'virtual';
      try {
        driver = readlinkSync(`/sys/class/net/${d}/device/driver`).split('/').pop() ?? driver;
      } catch {
        /* no device: veth, bridge, ... */
      }
      const q = bpf.runningQueues(undefined, d, st);
      parts.push(`${d} (${driver}, ${q} queue(s), ${bpf.xdpModes(bpf.xdpFeatures(undefined, st.ifindex))}${st.attached === 'none' ? '' : `, XDP ${st.attached} prog ${st.progId}`})`);
    } catch {
      /* gone meanwhile */
    }
  }
  if (parts.length) out.push({ check: 'XDP devices', level: 'ok', detail: `${parts.join('; ')}; mode=auto tries native, then generic` });
  return out;
}

export function formatFindings(fs: Finding[]): string {
  const mark: Record<Level, string> = { ok: ' ok ', warn: 'WARN', fail: 'FAIL' };
  const lines = fs.map((x) => `[${mark[x.level]}] ${x.check}: ${x.detail}${x.fix ? `\n       fix: ${x.fix}` : ''}`);
  const bad = fs.filter((x) => x.level === 'fail').length;
  const warn = fs.filter((x) => x.level === 'warn').length;
  lines.push(bad ? `${bad} problem(s) to fix${warn ? `, ${warn} warning(s)` : ''}` : `all is well${warn ? ` (${warn} warning(s))` : ''}`);
  return lines.join('\n');
}
