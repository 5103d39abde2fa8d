// A tiny QEMU guest for the vhost-user tests: the stock Debian kernel that ../shared/tools/vmrun
// caches, an initramfs built here (static busybox, virtio_pci + virtio_net and their
// dependencies, an init script), guest RAM in a shared memfd, one vhost-user virtio-net NIC and
// the serial console on QEMU's stdin/stdout. The init script configures eth0, pings its peer,
// prints marker lines ("@@...") and then runs the commands the test writes to the console, each
// answered by "@@<id> rc=<status>".
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VMRUN, waitFor } from '../helpers.ts';

export { VMRUN };
const CACHE = process.env.VMRUN_CACHE ?? '/var/cache/vmrun';
/** What the guest must load (each with its dependencies, in order) unless it is built in. */
const GUEST_MODULES = ['virtio_pci', 'virtio_net'];

export interface GuestImage {
  qemu: string;
  kver: string;
  kernel: string;
  initrd: string;
  /** The modules in the initramfs, in load order. */
  modules: string[];
  /** What had to be done to get here (for the test log). */
  notes: string[];
}

function run(cmd: string, args: string[], opts: { input?: Buffer | string; cwd?: string; timeout?: number; env?: NodeJS.ProcessEnv } = {}): { code: number; stdout: string; stderr: string; error?: string } {
  const r = spawnSync(cmd, args, { input: opts.input, cwd: opts.cwd, env: opts.env ?? process.env, timeout: opts.timeout ?? 60_000, maxBuffer: 64 << 20, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  return { code: r.status ?? -1, stdout: r.stdout?.toString() ?? '', stderr: r.stderr?.toString() ?? '', ...(r.error ? { error: r.error.message } : {}) };
}

function readyKernel(): string | undefined {
  const dir = join(CACHE, 'kernel');
  if (!existsSync(dir)) return undefined;
  const vers = readdirSync(dir).filter((v) => !v.startsWith('.') && existsSync(join(dir, v, 'ready')));
  vers.sort((a, b) => b.localeCompare(a, 'en', { numeric: true })); // newest first, as vmrun picks
  return vers[0];
}

/**
 * What keeps a guest from being had here, with how to get it; undefined when QEMU runs and the
 * kernel and busybox are cached (or vmrun is there to fetch them: prepareGuest runs its --setup).
 */
export function guestMissing(): string | undefined {
  const q = run('qemu-system-x86_64', ['--version']);
  const why: string[] = [];
  if (q.code !== 0) why.push(`qemu-system-x86_64 cannot be run (${q.error ?? q.stderr.trim()}): apt-get install --no-install-recommends qemu-system-x86`);
  if ((!readyKernel() || !existsSync(join(CACHE, 'busybox', 'bin', 'busybox'))) && !existsSync(VMRUN)) {
    why.push(`no guest kernel and busybox in ${CACHE} and no ${VMRUN} to fetch them (\`vmrun --setup\`): the VM tests need this repository checked out next to the project's shared/ folder`);
  }
  return why.length ? why.join('; ') : undefined;
}

/**
 * The kernel and busybox from vmrun's cache (running `vmrun --setup` when the cache is cold),
 * QEMU, and an initramfs built into `dir`. Throws with the reason and the fix when anything
 * cannot be had; guestMissing() finds the missing prerequisites first, for the test's requires().
 */
export function prepareGuest(dir: string): GuestImage {
  const notes: string[] = [];
  const busybox = join(CACHE, 'busybox', 'bin', 'busybox');
  if (!readyKernel() || !existsSync(busybox)) {
    if (!existsSync(VMRUN)) throw new Error(`no guest kernel in ${CACHE} and no ${VMRUN} to fetch one: check out ../shared next to this repository`);
    const t0 = Date.now();
    // VMRUN_ACCEL=tcg: skip vmrun's 10 s KVM probe; it also installs qemu-system-x86, kmod and
    // xz-utils when they are missing, and downloads the kernel and busybox from Debian's archive.
    const r = run(VMRUN, ['--setup'], { timeout: 1_200_000, env: { ...process.env, VMRUN_ACCEL: 'tcg' } });
    if (r.code !== 0) {
      throw new Error(`the guest kernel/busybox cache ${CACHE} is missing and \`${VMRUN} --setup\` failed (exit ${r.code}${r.error ? `, ${r.error}` : ''}): ` +
        `${(r.stderr + r.stdout).slice(-2000)}\nfix: run it by hand as root with network access to Debian's archive`);
    }
    notes.push(`vmrun --setup filled the cache in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  const kver = readyKernel();
  if (!kver) throw new Error(`vmrun --setup ran but ${CACHE}/kernel holds no prepared kernel (no */ready)`);
  if (!existsSync(busybox)) throw new Error(`vmrun --setup ran but ${busybox} is missing`);
  const kdir = join(CACHE, 'kernel', kver);
  const kernel = existsSync(join(kdir, 'vmlinux')) ? join(kdir, 'vmlinux') : join(kdir, 'boot', `vmlinuz-${kver}`);
  if (!existsSync(kernel)) throw new Error(`no kernel image in ${kdir} (neither vmlinux nor boot/vmlinuz-${kver})`);

  const q = run('qemu-system-x86_64', ['--version']);
  if (q.code !== 0) {
    throw new Error(`qemu-system-x86_64 cannot be run (${q.error ?? q.stderr.trim()}): install Debian's qemu-system-x86 package ` +
      '(apt-get install --no-install-recommends qemu-system-x86; scripts/setup.sh should do it)');
  }
  const qemu = q.stdout.split('\n')[0]!.trim();

  // Modules: from modules.dep (no kmod needed on the host), dependencies first; built-ins skipped.
  const mdir = join(kdir, 'lib', 'modules', kver);
  const builtin = new Set(readFileSync(join(mdir, 'modules.builtin'), 'utf8').split('\n').filter(Boolean).map(modName));
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of readFileSync(join(mdir, 'modules.dep'), 'utf8').split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (m) deps.set(modName(m[1]!), { path: m[1]!, deps: m[2]!.split(/\s+/).filter(Boolean) });
  }
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string, why: string): void => {
    if (seen.has(name)) return;
    seen.add(name);
    if (builtin.has(name)) return;
    const e = deps.get(name);
    if (!e) throw new Error(`kernel ${kver} has no module ${name} (needed by ${why}) and does not build it in: ${mdir}/modules.dep`);
    for (const d of e.deps) visit(modName(d), name);
    order.push(e.path);
  };
  for (const m of GUEST_MODULES) visit(m, 'the guest');

  const root = join(dir, 'initramfs');
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(root, 'lib', 'modules'), { recursive: true });
  for (const d of ['dev', 'proc', 'sys', 'tmp']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(busybox, join(root, 'bin', 'busybox'));
  chmodSync(join(root, 'bin', 'busybox'), 0o755);
  const list: string[] = [];
  for (const p of order) {
    const base = p.split('/').pop()!;
    const out = join(root, 'lib', 'modules', base.replace(/\.ko\..*$/, '.ko'));
    if (base.endsWith('.ko')) copyFileSync(join(mdir, p), out);
    else {
      const tool = base.endsWith('.xz') ? 'xz' : base.endsWith('.zst') ? 'zstd' : base.endsWith('.gz') ? 'gzip' : '';
      if (!tool) throw new Error(`module ${p}: unknown compression`);
      const r = spawnSync(tool, ['-dc', join(mdir, p)], { maxBuffer: 64 << 20 });
      if (r.status !== 0) throw new Error(`${tool} -dc ${p} failed: ${r.stderr.toString()}`);
      writeFileSync(out, r.stdout);
    }
    list.push(out.split('/').pop()!);
  }
  writeFileSync(join(root, 'modules.list'), list.join('\n') + '\n');
  writeFileSync(join(root, 'init'), INIT, { mode: 0o755 });
  const files = ['bin', 'bin/busybox', 'dev', 'proc', 'sys', 'tmp', 'lib', 'lib/modules', ...list.map((m) => `lib/modules/${m}`), 'modules.list', 'init'];
  const cpio = spawnSync(busybox, ['cpio', '-o', '-H', 'newc'], { cwd: root, input: files.join('\n') + '\n', maxBuffer: 64 << 20 });
  if (cpio.status !== 0) throw new Error(`busybox cpio failed: ${cpio.stderr.toString()}`);
  const initrd = join(dir, 'initramfs.cpio');
  writeFileSync(initrd, cpio.stdout);
  return { qemu, kver, kernel, initrd, modules: list, notes };
}

function modName(path: string): string {
  return path.split('/').pop()!.replace(/\.ko(\..*)?$/, '').replace(/-/g, '_');
}

/**
 * PID 1. Kernel parameters: pier.ip=ADDR/PREFIX (eth0's address), pier.peer=ADDR (pinged until
 * it answers). Markers: "@@modules", "@@eth0 ...", "@@ping-peer ok|FAIL", "@@ready"; then each
 * console line "ID COMMAND" is run by sh and answered by "@@ID rc=N".
 */
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The test writes commands to the console: no echo, so its lines never look like answers.
stty -echo 2>/dev/null
arg() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
IP=$(arg pier.ip); PEER=$(arg pier.peer)
for m in $(cat /modules.list); do insmod /lib/modules/$m || echo "@@insmod-failed $m"; done
echo "@@modules up=$(cut -d' ' -f1 /proc/uptime)"
ip link set lo up
n=0; while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done
ip addr add $IP dev eth0 && ip link set eth0 up
echo "@@eth0 $(cat /sys/class/net/eth0/address 2>/dev/null) $IP up=$(cut -d' ' -f1 /proc/uptime)"
ok=FAIL; n=0
while [ $n -lt 60 ]; do
  if ping -c 1 -W 1 $PEER >/dev/null 2>&1; then ok=ok; break; fi
  n=$((n+1))
done
echo "@@ping-peer $ok tries=$((n+1)) up=$(cut -d' ' -f1 /proc/uptime)"
echo "@@ready"
while read -r id cmd; do
  [ -n "$id" ] || continue
  ( eval "$cmd" ) 2>&1
  echo "@@$id rc=$?"
done
echo "@@console-eof"
poweroff -f
`;

let vmCounter = 0;
/** Hard limit on a VM's life (s), whatever happens to the test runner. */
const MAX_LIFE_S = 900;

export interface VmOptions {
  /** Guest RAM in MiB (the memfd backend's size). */
  memMiB?: number;
  /** The vhost-user chardev, e.g. `socket,id=c0,path=/x.sock,reconnect=1`; its id must be c0. */
  chardev: string;
  mac: string;
  ip: string;
  peer: string;
}

/** One QEMU process: serial console on stdin/stdout, vhost-user messages traced on stderr. */
export class QemuVm {
  readonly name = `pierq${process.pid % 100000}x${vmCounter++}`;
  proc: ChildProcess | undefined;
  console = '';
  stderr = '';
  private nextId = 1;
  private qemuPid = -1;

  constructor(readonly img: GuestImage, readonly opts: VmOptions) {}

  args(): string[] {
    const mem = this.opts.memMiB ?? 256;
    return [
      '-name', this.name, '-M', 'q35', '-accel', 'tcg,thread=multi', '-cpu', 'max', '-smp', '1', '-m', `${mem}M`,
      '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`, '-numa', 'node,memdev=mem',
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-kernel', this.img.kernel, '-initrd', this.img.initrd,
      '-append', `console=ttyS0 quiet loglevel=4 panic=-1 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.nopnp pier.ip=${this.opts.ip} pier.peer=${this.opts.peer}`,
      '-chardev', 'stdio,id=ser,signal=off', '-serial', 'chardev:ser',
      '-chardev', this.opts.chardev,
      '-netdev', 'vhost-user,id=n0,chardev=c0',
      // vectors=0 (INTx, no MSI-X): QEMU 7.2 under TCG segfaults in vhost_net_start when MSI-X
      // is on (msix_set_vector_notifiers -> virtio_pci_vector_unmask), with every vhost-user
      // backend (pier and DPDK's net_vhost alike); see the test's header.
      '-device', `virtio-net-pci,netdev=n0,mac=${this.opts.mac},vectors=0`,
      // Every message QEMU sends to the backend, and each device start/stop, on stderr.
      '-trace', 'enable=vhost_user_write', '-trace', 'enable=vhost_dev_start', '-trace', 'enable=vhost_dev_stop',
    ];
  }

  /**
   * Start QEMU under `timeout`, so that a VM outlives a test runner killed without its after()
   * hooks by at most MAX_LIFE_S. `proc` is timeout's process, `pid` QEMU's.
   */
  start(): void {
    const p = spawn('timeout', ['-s', 'KILL', String(MAX_LIFE_S), 'qemu-system-x86_64', ...this.args()], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc = p;
    this.qemuPid = -1;
    p.stdout.on('data', (d: Buffer) => (this.console += d.toString().replace(/\r/g, '')));
    p.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    p.stdin.on('error', () => {}); // a killed VM: EPIPE on the next command is reported by waitFor
  }

  /** QEMU's pid (timeout's only child). */
  get pid(): number {
    if (this.qemuPid < 0 && this.proc?.pid) {
      try {
        const kids = readFileSync(`/proc/${this.proc.pid}/task/${this.proc.pid}/children`, 'utf8').trim();
        if (kids) this.qemuPid = Number(kids.split(/\s+/)[0]);
      } catch { /* timeout has exited */ }
    }
    return this.qemuPid;
  }

  /** Send QEMU a signal (SIGSTOP: a hung VM whose connection stays open). */
  signal(sig: NodeJS.Signals): void {
    const pid = this.pid;
    if (pid <= 0) throw new Error(`QEMU ${this.name} has no pid (not started, or gone)`);
    process.kill(pid, sig);
  }

  running(): boolean {
    const p = this.proc;
    return !!p && p.exitCode === null && p.signalCode === null;
  }

  /** Wait for a console line matching `re` (searching from `from`); throws with the console's tail. */
  async waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    return waitFor(() => {
      const m = re.exec(this.console.slice(from));
      if (m) return m;
      if (!this.running()) throw new Error(`QEMU ${this.name} exited (${this.proc?.exitCode ?? this.proc?.signalCode}) before ${re}: ${this.tail()}`);
      return null;
    }, timeoutMs, () => `QEMU ${this.name} to print ${re}: ${this.tail()}`, 50);
  }

  /** Run a shell command in the guest; its output (console lines between) and exit status. */
  async run(cmd: string, timeoutMs = 60_000): Promise<{ rc: number; out: string }> {
    const id = `c${this.nextId++}`;
    const from = this.console.length;
    this.proc!.stdin!.write(`${id} ${cmd}\n`);
    const m = await this.waitFor(new RegExp(`@@${id} rc=(\\d+)\\n`), timeoutMs, from);
    return { rc: Number(m[1]), out: this.console.slice(from, from + m.index) };
  }

  /** vhost-user requests QEMU sent (numbers, in order), from its trace. */
  requests(): number[] {
    return [...this.stderr.matchAll(/vhost_user_write req:(\d+) /g)].map((m) => Number(m[1]));
  }

  tail(n = 3000): string {
    return `\n--- console ---\n${this.console.slice(-n)}\n--- qemu stderr (trace) ---\n${this.stderr.split('\n').filter((l) => !l.includes('vhost_user_write')).join('\n').slice(-n)}`;
  }

  /** Signal QEMU and wait until it is gone (timeout exits with it). */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.proc;
    if (!p || !this.running()) return;
    const done = new Promise((r) => p.once('exit', r));
    const pid = this.pid;
    if (pid > 0) {
      process.kill(pid, signal);
      if (signal !== 'SIGKILL') process.kill(pid, 'SIGCONT'); // a stopped QEMU must run to die of SIGTERM
    } else p.kill('SIGTERM'); // QEMU not found yet: timeout passes SIGTERM on to its child, if any
    await done;
  }
}
