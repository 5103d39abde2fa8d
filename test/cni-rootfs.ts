// A real container runtime for the CNI tests: a minimal container root filesystem built from
// busybox-static (plus iperf3 and its shared libraries), a private containerd (its own root,
// state and socket under a temporary directory), and `ctr` to run containers on a CNI network.
//
// `ctr run --cni` reads its network from fixed paths, /etc/cni/net.d (the first conflist) and
// /opt/cni/bin (the plugins), and runs the plugins itself (the ctr process, not containerd). So
// every ctr command runs in a private mount namespace (unshare -m) where a directory of this
// test's is bind-mounted on each of those paths (a read-only overlay of /etc or /opt first
// provides the mount point when the host lacks it): the host's /etc/cni and /opt/cni are never
// read, written or created, and several tests can run at once. containerd itself runs with its
// CRI plugin disabled (the CRI plugin would create /etc/cni/net.d and watch it).
//
// Containers: `ctr run --rm --cni` in the foreground (a child process of the test) runs the
// plugins' ADD before the task starts and their DEL when the task ends, then deletes the
// container: that is how a test removes a container the way a runtime does. `ctr run -d`
// (detached) returns once the task runs, and no DEL is ever run for it by ctr: cniDel() runs the
// conflist's plugins' DEL directly, as libcni does.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { IN_VM, ROOT, sh, waitFor, type Prerequisite, type Run } from './helpers.ts';

export const BUSYBOX = '/usr/bin/busybox';
/** Debian's containernetworking-plugins. */
export const CNI_PLUGINS = '/usr/lib/cni';
export const PIER_CNI = join(ROOT, 'bin', 'pier-cni');
/** The PATH a container's processes get (its spec has no environment of its own with --rootfs). */
const CONTAINER_PATH = 'PATH=/bin:/usr/bin:/sbin:/usr/sbin';

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

function tool(cmd: string, how: string): Prerequisite {
  return { name: cmd, missing: () => (which(cmd) ? undefined : `${cmd} is not on PATH: ${how}`) };
}

/** What the containerd tests need; scripts/setup.sh installs the packages. */
export const CNI_NEEDS = {
  containerd: tool('containerd', 'apt-get install containerd (scripts/setup.sh installs it)'),
  ctr: tool('ctr', 'apt-get install containerd (scripts/setup.sh installs it)'),
  runc: tool('runc', 'apt-get install runc (scripts/setup.sh installs it)'),
  unshare: tool('unshare', 'apt-get install util-linux'),
  nft: tool('nft', 'apt-get install nftables (scripts/setup.sh installs it)'),
  busybox: {
    name: BUSYBOX,
    missing: () => (existsSync(BUSYBOX) ? undefined : `${BUSYBOX} is missing (the containers' root filesystem): apt-get install busybox-static (scripts/setup.sh installs it)`),
  },
  plugins: {
    name: 'containernetworking-plugins',
    missing: () => (existsSync(join(CNI_PLUGINS, 'host-local')) && existsSync(join(CNI_PLUGINS, 'bridge'))
      ? undefined : `${CNI_PLUGINS}/host-local and bridge are missing: apt-get install containernetworking-plugins (scripts/setup.sh installs it)`),
  },
  pierCni: {
    name: 'pier-cni',
    missing: () => {
      if (!existsSync(PIER_CNI)) return `${PIER_CNI} is missing (the plugin is not in this checkout)`;
      // Built and runnable: VERSION answers (an unbuilt checkout says so in its error).
      const r = spawnSync(PIER_CNI, [], { input: '{"cniVersion":"1.0.0"}', encoding: 'utf8', env: { ...process.env, CNI_COMMAND: 'VERSION' }, timeout: IN_VM ? 300_000 : 30_000 });
      return r.status === 0 ? undefined : `${PIER_CNI} VERSION failed (${r.status ?? r.signal}): ${(r.stderr || r.stdout).trim().slice(0, 500)} (run npm run build)`;
    },
  },
} satisfies Record<string, Prerequisite>;

const APPLETS = ['sh', 'ash', 'ping', 'ip', 'ifconfig', 'route', 'sleep', 'cat', 'echo', 'ls', 'wget', 'nc', 'ps', 'kill',
  'true', 'false', 'hostname', 'grep', 'sed', 'awk', 'head', 'tail', 'wc', 'mkdir', 'rm', 'date', 'env', 'arping', 'netstat', 'traceroute'];

export interface Rootfs { dir: string; iperf3: boolean }

/**
 * A container root filesystem in `dir` (created): busybox-static as bin/busybox with its applets
 * linked, iperf3 with its shared libraries and the dynamic loader at the paths ldd names (when
 * iperf3 is installed), /etc/passwd, group and hosts, and the empty mount points runc wants.
 * Containers may share it: nothing in it is written while they run but /tmp.
 */
export function buildRootfs(dir: string): Rootfs {
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'root', 'run', 'var/tmp']) mkdirSync(join(dir, d), { recursive: true });
  chmodSync(join(dir, 'tmp'), 0o1777);
  copyFileSync(BUSYBOX, join(dir, 'bin', 'busybox'));
  chmodSync(join(dir, 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) if (!existsSync(join(dir, 'bin', a))) symlinkSync('busybox', join(dir, 'bin', a));
  writeFileSync(join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  writeFileSync(join(dir, 'etc', 'group'), 'root:x:0:\nnogroup:x:65534:\n');
  writeFileSync(join(dir, 'etc', 'hosts'), '127.0.0.1 localhost\n::1 localhost\n');
  writeFileSync(join(dir, 'etc', 'resolv.conf'), '');
  const iperf3 = which('iperf3');
  if (iperf3) {
    const files = [iperf3];
    const ldd = spawnSync('ldd', [iperf3], { encoding: 'utf8' });
    if (ldd.status !== 0) throw new Error(`ldd ${iperf3} failed: ${ldd.stderr}`);
    for (const line of ldd.stdout.split('\n')) {
      // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
      const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
      if (m) files.push(m[1]!);
    }
    for (const f of files) {
      const to = join(dir, f);
      mkdirSync(dirname(to), { recursive: true });
      copyFileSync(f, to); // follows symlinks: the real library under the name the loader looks for
      chmodSync(to, 0o755);
    }
  }
  return { dir, iperf3: iperf3 !== undefined };
}

/** One CNI plugin run: the spec's environment, the config on stdin, the result (or error) on stdout. */
export interface CniRun extends Run { ms: number; result: any }

export interface CniArgs { command: 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC'; containerId?: string; netns?: string; ifname?: string; path: string; args?: string }

/** Run a plugin as a runtime does: env CNI_COMMAND etc., config JSON on stdin. */
export function cniExec(plugin: string, a: CniArgs, conf: object, extraEnv: NodeJS.ProcessEnv = {}): CniRun {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extraEnv, CNI_COMMAND: a.command, CNI_PATH: a.path };
  if (a.containerId !== undefined) env.CNI_CONTAINERID = a.containerId;
  if (a.netns !== undefined) env.CNI_NETNS = a.netns;
  if (a.ifname !== undefined) env.CNI_IFNAME = a.ifname;
  if (a.args !== undefined) env.CNI_ARGS = a.args;
  const t0 = process.hrtime.bigint();
  const r = spawnSync(plugin, [], { input: JSON.stringify(conf), encoding: 'utf8', env, timeout: IN_VM ? 600_000 : 60_000 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  let result: any;
  try {
    result = r.stdout ? JSON.parse(r.stdout) : undefined;
  } catch {
    result = undefined;
  }
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '', ms, result };
}

/** The config one plugin of a conflist gets: its own object with the list's name and cniVersion. */
export function pluginConf(list: { name: string; cniVersion: string; plugins: object[] }, i: number, prevResult?: object): object {
  return { ...list.plugins[i], name: list.name, cniVersion: list.cniVersion, ...(prevResult ? { prevResult } : {}) };
}

let execCounter = 0;

export interface Container {
  name: string;
  /** CNI_CONTAINERID as ctr passes it: "<namespace>-<name>". */
  cniId: string;
  pid: number;
  /** /proc/PID/ns/net, as ctr passes it to the plugins. */
  netns: string;
  detached: boolean;
  /** The foreground `ctr run --rm` process (not for detached containers). */
  proc?: ChildProcess;
  /** What the foreground ctr printed (the container's output and ctr's own, CNI errors among them). */
  log: string;
  /** Set when the container is gone (task ended, ctr exited, CNI DEL run or attempted). */
  removed: boolean;
}

export interface Conflist { cniVersion: string; name: string; plugins: Array<{ type: string; [k: string]: unknown }> }

/**
 * A private containerd and the CNI configuration its `ctr` commands see. Construct, add plugins
 * (linkPlugin) and the network (setConflist), start(), run containers, cleanup() (kills and
 * deletes every container it started, runs DEL for detached ones, stops containerd, removes
 * its directory).
 */
export class Containerd {
  readonly dir = mkdtempSync(join(tmpdir(), 'pier-ctd-'));
  readonly address = join(this.dir, 'containerd.sock');
  /** Bind-mounted on /etc/cni/net.d and /opt/cni/bin for ctr. */
  readonly netd = join(this.dir, 'net.d');
  readonly cniBin = join(this.dir, 'cni-bin');
  readonly namespace = 'pier-test';
  /** Where ctr puts the containers' stdio fifos and runc its state: the test's, not /run/containerd's. */
  private readonly fifoDir = join(this.dir, 'fifo');
  private readonly runcRoot = join(this.dir, 'runc');
  /** containerd 1.6 puts its shims' sockets in /run/containerd/s whatever its state dir: removed after, if this test made it. */
  private readonly runContainerdExisted = existsSync('/run/containerd');
  proc: ChildProcess | undefined;
  log = '';
  conflist: Conflist | undefined;
  readonly containers = new Map<string, Container>();

  constructor() {
    mkdirSync(this.netd);
    mkdirSync(this.cniBin);
    // Mount points for hosts without /etc/cni/net.d or /opt/cni/bin: read-only overlay layers.
    mkdirSync(join(this.dir, 'mnt', 'etc', 'cni', 'net.d'), { recursive: true });
    mkdirSync(join(this.dir, 'mnt', 'opt', 'cni', 'bin'), { recursive: true });
    // ctr's wrapper: runs inside `unshare -m --propagation private`.
    writeFileSync(join(this.dir, 'ctr.sh'), [
      '#!/bin/sh',
      'set -e',
      `D='${this.dir}'`,
      '[ -d /etc/cni/net.d ] || mount -t overlay overlay -o "lowerdir=$D/mnt/etc:/etc" /etc',
      '[ -d /opt/cni/bin ] || mount -t overlay overlay -o "lowerdir=$D/mnt/opt:/opt" /opt',
      'mount --bind "$D/net.d" /etc/cni/net.d',
      'mount --bind "$D/cni-bin" /opt/cni/bin',
      `exec ctr --address "$D/containerd.sock" --namespace ${this.namespace} "$@"`,
      '',
    ].join('\n'), { mode: 0o755 });
  }

  /** A plugin in the bin directory ctr sees (/opt/cni/bin): a symlink to `target`. */
  linkPlugin(name: string, target: string): void {
    rmSync(join(this.cniBin, name), { force: true });
    symlinkSync(target, join(this.cniBin, name));
  }

  /** Every plugin of Debian's containernetworking-plugins (host-local, loopback, bridge, ...). */
  linkReferencePlugins(): void {
    for (const p of readdirSync(CNI_PLUGINS)) this.linkPlugin(p, join(CNI_PLUGINS, p));
  }

  /** The one network ctr sets up (the only file in its /etc/cni/net.d). */
  setConflist(list: Conflist): void {
    for (const f of readdirSync(this.netd)) rmSync(join(this.netd, f));
    writeFileSync(join(this.netd, `10-${list.name}.conflist`), JSON.stringify(list, null, 2));
    this.conflist = list;
  }

  async start(): Promise<void> {
    const cfg = join(this.dir, 'config.toml');
    writeFileSync(cfg, [
      'version = 2',
      // The CRI plugin would load (and create) /etc/cni/net.d; ctr does not need it.
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      `root = "${join(this.dir, 'root')}"`,
      `state = "${join(this.dir, 'state')}"`,
      '[grpc]',
      `  address = "${this.address}"`,
      '[ttrpc]',
      `  address = "${this.address}.ttrpc"`,
      '[plugins]',
      '  [plugins."io.containerd.internal.v1.opt"]',
      `    path = "${join(this.dir, 'opt')}"`,
      '',
    ].join('\n'));
    const p = spawn('containerd', ['--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = p;
    p.stdout.on('data', (d) => (this.log += d));
    p.stderr.on('data', (d) => (this.log += d));
    await waitFor(() => {
      if (p.exitCode !== null || p.signalCode !== null) throw new Error(`containerd exited (${p.exitCode ?? p.signalCode}): ${this.log.slice(-3000)}`);
      return existsSync(this.address) && sh('ctr', ['--address', this.address, 'version'], { timeout: 5000 }).code === 0;
    }, 30_000, () => `containerd to answer on ${this.address}: ${this.log.slice(-3000)}`, 100);
  }

  /** A ctr command, in the mount namespace where the test's CNI directories are the fixed paths. */
  ctr(args: string[], timeout = 60_000): Run {
    return sh('unshare', ['--mount', '--propagation', 'private', join(this.dir, 'ctr.sh'), ...args], { timeout });
  }

  ctrOk(args: string[], timeout?: number): string {
    const r = this.ctr(args, timeout);
    if (r.code !== 0) throw new Error(`ctr ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  /** Tasks by name: pid and status (RUNNING, STOPPED, CREATED...). */
  tasks(): Map<string, { pid: number; status: string }> {
    const out = this.ctrOk(['task', 'ls']);
    const m = new Map<string, { pid: number; status: string }>();
    for (const line of out.split('\n').slice(1)) {
      const [name, pid, status] = line.trim().split(/\s+/);
      if (name && pid && status) m.set(name, { pid: Number(pid), status });
    }
    return m;
  }

  containerNames(): string[] {
    return this.ctrOk(['container', 'ls', '-q']).split('\n').map((s) => s.trim()).filter(Boolean);
  }

  private runFlags(): string[] {
    return ['--env', CONTAINER_PATH, '--fifo-dir', this.fifoDir, '--runc-root', this.runcRoot];
  }

  private track(name: string, detached: boolean, proc?: ChildProcess): Container {
    const c: Container = { name, cniId: `${this.namespace}-${name}`, pid: 0, netns: '', detached, proc, log: '', removed: false };
    this.containers.set(name, c);
    return c;
  }

  /**
   * A long-running container whose network ctr sets up and tears down: `ctr run --rm --cni` in
   * the foreground, as a child process. Resolves once its task runs (ctr runs the plugins' ADD
   * before it starts the task); throws with ctr's output if ctr exits first (a failed ADD).
   * remove() ends it the runtime's way (task killed: ctr runs DEL and deletes the container).
   */
  async run(name: string, cmd: string[] = ['/bin/sleep', '3600'], rootfs: string, timeoutMs = 60_000): Promise<Container> {
    const p = spawn('unshare', ['--mount', '--propagation', 'private', join(this.dir, 'ctr.sh'),
      'run', '--rm', '--cni', ...this.runFlags(), '--rootfs', rootfs, name, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
    const c = this.track(name, false, p);
    p.stdout.on('data', (d) => (c.log += d));
    p.stderr.on('data', (d) => (c.log += d));
    await waitFor(() => {
      if (p.exitCode !== null || p.signalCode !== null) {
        // A failed ADD: ctr runs DEL, but its container.Delete fails while the task it created
        // exists, so both stay behind. Removed here (no CNI verb is involved any more).
        c.removed = true;
        this.forget(name);
        this.ctr(['task', 'delete', '--force', name]);
        this.ctr(['container', 'delete', name]);
        throw new Error(`ctr run ${name} exited (${p.exitCode ?? p.signalCode}) before its task ran: ${c.log}`);
      }
      const t = this.tasks().get(name);
      if (t?.status !== 'RUNNING') return false;
      c.pid = t.pid;
      c.netns = `/proc/${t.pid}/ns/net`;
      return true;
    }, timeoutMs, () => `container ${name} to run: ${c.log}`, 50);
    return c;
  }

  /** `ctr run -d --cni`: returns once the task runs. No DEL is run by ctr for it: remove() runs cniDel(). */
  runDetached(name: string, cmd: string[], rootfs: string): Container {
    const c = this.track(name, true);
    const r = this.ctr(['run', '-d', '--cni', ...this.runFlags(), '--rootfs', rootfs, name, ...cmd]);
    c.log = r.stdout + r.stderr;
    const t = this.tasks().get(name);
    if (r.code !== 0 || !t) {
      this.forget(name);
      throw new Error(`ctr run -d ${name} failed (${r.code}): ${c.log}`);
    }
    c.pid = t.pid;
    c.netns = `/proc/${t.pid}/ns/net`;
    return c;
  }

  /** Run a command in a running container (`ctr task exec`); a fresh exec id each time. */
  exec(c: Container, cmd: string[], timeout = 60_000): Run {
    return this.ctr(['task', 'exec', '--fifo-dir', this.fifoDir, '--exec-id', `x${process.pid}-${execCounter++}`, c.name, ...cmd], timeout);
  }

  /** The same, started in the background (a server in the container); kill the returned process to stop waiting for it. */
  execBackground(c: Container, cmd: string[]): ChildProcess & { out: string } {
    const p = spawn('unshare', ['--mount', '--propagation', 'private', join(this.dir, 'ctr.sh'),
      'task', 'exec', '--fifo-dir', this.fifoDir, '--exec-id', `x${process.pid}-${execCounter++}`, c.name, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] }) as ChildProcess & { out: string };
    p.out = '';
    p.stdout!.on('data', (d) => (p.out += d));
    p.stderr!.on('data', (d) => (p.out += d));
    return p;
  }

  /** A command in the container's network namespace, run from the host (its tools, not busybox's). */
  inNetns(c: Container, cmd: string, args: string[], timeout?: number): Run {
    return sh('nsenter', [`--net=${c.netns}`, cmd, ...args], { timeout });
  }

  /** The IPv4 addresses (ADDRESS/PREFIX) on `ifname` in the container. */
  addresses(c: Container, ifname = 'eth0'): string[] {
    const r = this.inNetns(c, 'ip', ['-j', '-4', 'addr', 'show', 'dev', ifname]);
    if (r.code !== 0) return [];
    const j = JSON.parse(r.stdout) as Array<{ addr_info: Array<{ local: string; prefixlen: number }> }>;
    return j.flatMap((l) => l.addr_info.map((a) => `${a.local}/${a.prefixlen}`));
  }

  /** The container's first IPv4 address on `ifname`, without the prefix. */
  ip(c: Container, ifname = 'eth0'): string {
    const a = this.addresses(c, ifname)[0];
    if (!a) throw new Error(`container ${c.name} has no IPv4 address on ${ifname}: ${this.inNetns(c, 'ip', ['addr']).stdout}`);
    return a.split('/')[0]!;
  }

  /**
   * Remove a container the way its runtime would. Foreground: the task is killed and ctr, seeing
   * it end, runs the plugins' DEL and deletes the container; resolves with ctr's exit code and
   * output. Detached: the task is killed and deleted, the container deleted, then cniDel() (ctr
   * never runs DEL for these); resolves with DEL's results.
   */
  async remove(c: Container, timeoutMs = 60_000): Promise<{ code: number | null; log: string; del?: CniRun[] }> {
    if (c.removed) return { code: c.proc?.exitCode ?? null, log: c.log };
    const p = c.proc;
    if (p && (p.exitCode !== null || p.signalCode !== null)) {
      c.removed = true;
      this.forget(c.name);
      return { code: p.exitCode, log: c.log };
    }
    this.ctr(['task', 'kill', '-s', 'SIGKILL', c.name]);
    if (p) {
      await waitFor(() => p.exitCode !== null || p.signalCode !== null, timeoutMs, () => `ctr run ${c.name} to exit after its task was killed: ${c.log}`, 50);
      c.removed = true;
      this.forget(c.name);
      return { code: p.exitCode, log: c.log };
    }
    await waitFor(() => this.tasks().get(c.name)?.status !== 'RUNNING', timeoutMs, `task ${c.name} to stop`, 50);
    this.ctr(['task', 'delete', '--force', c.name]);
    this.ctr(['container', 'delete', c.name]);
    const del = this.cniDel(c);
    c.removed = true;
    this.forget(c.name);
    return { code: del.every((d) => d.code === 0) ? 0 : 1, log: del.map((d) => d.stdout + d.stderr).join(''), del };
  }

  private forget(name: string): void {
    this.containers.delete(name);
  }

  /** The conflist's plugins' DEL for a container, last plugin first, as libcni runs it. */
  cniDel(c: Pick<Container, 'cniId' | 'netns'>, ifname = 'eth0'): CniRun[] {
    const list = this.conflist;
    if (!list) return [];
    const out: CniRun[] = [];
    for (let i = list.plugins.length - 1; i >= 0; i--) {
      out.push(cniExec(join(this.cniBin, list.plugins[i]!.type), { command: 'DEL', containerId: c.cniId, netns: c.netns, ifname, path: this.cniBin }, pluginConf(list, i)));
    }
    return out;
  }

  /**
   * Everything goes, whatever state the test left: each container this object started is
   * killed and removed (DEL run), any other container and task in containerd deleted,
   * containerd stopped, the directory removed. Returns what went wrong, for the test to report.
   */
  async cleanup(): Promise<string[]> {
    const problems: string[] = [];
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      for (const c of [...this.containers.values()]) {
        try {
          const r = await this.remove(c, 30_000);
          if (r.code !== 0 && r.code !== 137) problems.push(`removing ${c.name}: exit ${r.code}: ${r.log.slice(-500)}`);
        } catch (e) {
          problems.push(`removing ${c.name}: ${(e as Error).message}`);
          c.proc?.kill('SIGKILL');
        }
      }
      try {
        for (const name of this.tasks().keys()) this.ctr(['task', 'delete', '--force', name]);
        for (const name of this.containerNames()) this.ctr(['container', 'delete', name]);
      } catch (e) {
        problems.push(`listing leftovers: ${(e as Error).message}`);
      }
      const p = this.proc;
      const done = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(t);
    }
    for (const c of this.containers.values()) c.proc?.kill('SIGKILL');
    this.proc = undefined;
    // containerd leaves its shims' mounts (the rootfs bind mounts) behind only if a task outlived it.
    const mounts = sh('findmnt', ['-rn', '-o', 'TARGET']).stdout.split('\n').filter((m) => m.startsWith(this.dir + '/'));
    for (const m of mounts.reverse()) sh('umount', ['-l', m]);
    rmSync(this.dir, { recursive: true, force: true });
    if (!this.runContainerdExisted) {
      // Only empty directories go: another containerd's shims may have come since.
      for (const d of ['/run/containerd/s', '/run/containerd/fifo', '/run/containerd/runc', '/run/containerd']) {
        try {
          rmdirSync(d);
        } catch {
          // not empty, or not there
        }
      }
    }
    return problems;
  }
}
