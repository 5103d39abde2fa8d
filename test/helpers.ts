// Test helpers for the root integration tests: a private daemon, the CLI, namespaces, iperf3;
// waitFor(), the one way a test waits for something; requires(), what a test needs from the
// machine (skipped with the reason when it is missing, a failure under CI=true).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test, type TestContext } from 'node:test';
import { flowHash } from '../src/dataplane/flow-hash.ts';

export const ROOT = resolve(import.meta.dirname, '..');
export const PIER = join(ROOT, 'bin', 'pier');
/** Inside ../shared/tools/vmrun (software emulation): everything is 10-30x slower. */
export const IN_VM = hostname() === 'vmrun';
/** The VM runner of this project's layout: a checkout of shared/ next to this repository. */
export const VMRUN = resolve(ROOT, '..', 'shared', 'tools', 'vmrun');
/** Under CI=true a missing prerequisite fails the run instead of skipping. */
const CI = process.env.CI === 'true';

/** Wait this long for nothing in particular: pacing only. To wait for something, use waitFor(). */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Poll `cond` every `everyMs` until it returns something truthy, and return that. After
 * `timeoutMs` throw "timed out after N ms waiting for WHAT" (`what` may be a function, for the
 * state worth showing at that moment). An exception from `cond` ends the wait at once.
 */
export async function waitFor<T>(cond: () => T | Promise<T>, timeoutMs: number, what: string | (() => string), everyMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(everyMs);
  }
}

/** Something a test needs from the machine; missing() says what is not there and how to get it. */
export interface Prerequisite {
  name: string;
  missing(): string | undefined;
}

function command(cmd: string, how: string): Prerequisite {
  let found: boolean | undefined;
  return {
    name: cmd,
    missing: () => {
      found ??= spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
      return found ? undefined : `${cmd} is not on PATH: ${how}`;
    },
  };
}

/** What the tests need beyond Node, root and iproute2. scripts/setup.sh installs the packages. */
export const NEEDS = {
  tun: {
    name: '/dev/net/tun',
    missing: () => (existsSync('/dev/net/tun') ? undefined : '/dev/net/tun is missing (tap ports): modprobe tun, or mknod /dev/net/tun c 10 200'),
  },
  testpmd: command('dpdk-testpmd', 'apt-get install dpdk-dev (scripts/setup.sh installs it)'),
  iperf3: command('iperf3', 'apt-get install iperf3 (scripts/setup.sh installs it)'),
  python3: command('python3', 'apt-get install python3'),
  tshark: command('tshark', 'apt-get install tshark (scripts/setup.sh installs it)'),
  capinfos: command('capinfos', 'apt-get install wireshark-common (scripts/setup.sh installs it)'),
  tcpdump: command('tcpdump', 'apt-get install tcpdump (scripts/setup.sh installs it)'),
  vmrun: {
    name: 'vmrun',
    missing: () => {
      try {
        accessSync(VMRUN, constants.X_OK);
        return undefined;
      } catch {
        return `${VMRUN} is missing: the VM tests boot a stock Debian kernel (one with /dev/vhost-net) through ../shared/tools/vmrun, ` +
          'which exists only where this repository is checked out next to the project\'s shared/ folder (as on the project\'s machines and in CI)';
      }
    },
  },
} satisfies Record<string, Prerequisite>;

/**
 * Options for describe() or it(): skip the suite or test when a prerequisite is missing, with a
 * message naming it and how to get it. Under CI=true a missing prerequisite fails the run: a
 * failing test that says what is missing stands next to the skipped one.
 */
export function requires(...needs: Prerequisite[]): { skip?: string } {
  const why = needs.map((n) => n.missing()).filter((m): m is string => m !== undefined);
  if (why.length === 0) return {};
  const message = `missing prerequisite: ${why.join('; ')}`;
  if (CI) {
    test(`${message} (CI=true: a missing prerequisite fails the run)`, () => {
      throw new Error(message);
    });
  }
  return { skip: message };
}

/** A prerequisite found missing only while the test runs: skip it with the reason (return after), or fail it under CI=true. */
export function skipMissing(t: TestContext, why: string): void {
  if (CI) throw new Error(`missing prerequisite (CI=true: a missing prerequisite fails the run): ${why}`);
  t.skip(`missing prerequisite: ${why}`);
}

/**
 * bin/pier runs the build in dist/: refuse to test a build older than its sources (a test file
 * run by hand after an edit would otherwise test the old code). Unit tests are not built.
 */
export function checkBuild(): void {
  const built = join(ROOT, 'dist', 'cli', 'main.js');
  let builtAt: number;
  try {
    builtAt = statSync(built).mtimeMs;
  } catch {
    throw new Error(`dist/ is missing (${built}): run npm run build (or scripts/setup.sh)`);
  }
  const src = join(ROOT, 'src');
  for (const f of readdirSync(src, { recursive: true, encoding: 'utf8' })) {
    if (f.endsWith('.test.ts')) continue;
    const s = statSync(join(src, f), { throwIfNoEntry: false });
    if (s?.isFile() && s.mtimeMs > builtAt) throw new Error(`dist/ is older than src/ (src/${f} changed after the build): run npm run build`);
  }
}

export interface Run { code: number; stdout: string; stderr: string }

export function sh(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeout?: number } = {}): Run {
  const slow = IN_VM ? 5 : 1;
  // stdin is /dev/null: a child must never wait on, or poll, the test runner's stdin.
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: opts.env ?? process.env, timeout: (opts.timeout ?? 60_000) * slow, stdio: ['ignore', 'pipe', 'pipe'] });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

export function must(cmd: string, args: string[]): string {
  const r = sh(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** One line of pier events --json. */
export interface DaemonEvent { seq: number; time: string; type: string; port?: string; bridge?: string; reason?: string; detail?: string }

/** A daemon with its own socket and state dir, so tests never touch a real installation. */
export class TestDaemon {
  /** `ns`: run the daemon inside that named network namespace (a "host" of the uplink tests), so its ports' default namespace is the host's. */
  constructor(readonly ns?: string) {}

  readonly dir = mkdtempSync(join(tmpdir(), 'pier-test-'));
  readonly socket = join(this.dir, 'pier.sock');
  readonly stateDir = join(this.dir, 'state');
  proc: ChildProcess | undefined;
  log = '';

  async start(extra: string[] = []): Promise<void> {
    // Inside vmrun (QEMU TCG, software emulation) everything is 10-30x slower, and loading the
    // daemon's modules has been seen to fail there now and then with no fault of pier's (a
    // "Parse error" from the module lexer on an intact node_modules file, or a silent hang
    // before the first log line; the same start works on the next try). There, and only there,
    // a failed start is retried once; the first attempt's output goes to stderr.
    const attempts = IN_VM ? 2 : 1;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.startOnce(extra, IN_VM ? 300_000 : 20_000);
        return;
      } catch (e) {
        if (attempt >= attempts) throw e;
        console.error(`TestDaemon: start attempt ${attempt} failed under emulation, retrying: ${(e as Error).message}`);
        await this.stop('SIGKILL');
        rmSync(this.socket, { force: true });
      }
    }
  }

  private async startOnce(extra: string[], timeoutMs: number): Promise<void> {
    this.log = '';
    checkBuild();
    const argv = ['daemon', '--socket', this.socket, '--state-dir', this.stateDir, ...extra];
    const p = this.ns === undefined
      ? spawn(PIER, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('ip', ['netns', 'exec', this.ns, PIER, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = p;
    p.stdout.on('data', (d) => (this.log += d));
    p.stderr.on('data', (d) => (this.log += d));
    await waitFor(() => {
      if (p.exitCode !== null || p.signalCode !== null) throw new Error(`daemon${this.where} exited (${p.exitCode ?? p.signalCode}): ${this.log}`);
      return this.log.includes('pier daemon ready');
    }, timeoutMs, () => `the daemon${this.where} to be ready: ${this.log}`, 50);
  }

  private get where(): string {
    return this.ns === undefined ? '' : ` in ${this.ns}`;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const done = new Promise((r) => p.once('exit', r));
    p.kill(signal);
    await done;
    this.proc = undefined;
  }

  pier(...args: string[]): Run {
    return sh(PIER, args, { env: { ...process.env, PIER_SOCKET: this.socket } });
  }

  /** Run a pier command that must succeed; returns stdout. */
  ok(...args: string[]): string {
    const r = this.pier(...args);
    if (r.code !== 0) throw new Error(`pier ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return r.stdout;
  }

  json<T = any>(...args: string[]): T {
    return JSON.parse(this.ok(...args, '--json')) as T;
  }

  /** pier events --json: one object per line, oldest first. */
  events(): DaemonEvent[] {
    return this.ok('events', '--json').trim().split('\n').filter((l) => l).map((l) => JSON.parse(l) as DaemonEvent);
  }

  async cleanup(): Promise<void> {
    // del-br removes the taps; then stop and forget the state.
    if (this.proc) {
      const show = this.pier('show', '--json');
      if (show.code === 0) for (const b of JSON.parse(show.stdout).bridges) this.pier('del-br', b.name);
    }
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

let nsCounter = 0;
/** Fresh named network namespaces, unique to this process. */
export function makeNetns(n: number): string[] {
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const name = `pt${process.pid % 100000}x${nsCounter++}`;
    sh('ip', ['netns', 'del', name]);
    must('ip', ['netns', 'add', name]);
    names.push(name);
  }
  return names;
}

export function delNetns(names: string[]): void {
  for (const n of names) sh('ip', ['netns', 'del', n]);
}

export function nsExec(ns: string, cmd: string, args: string[], timeout?: number): Run {
  return sh('ip', ['netns', 'exec', ns, cmd, ...args], { timeout });
}

export function ping(ns: string, addr: string, extra: string[] = []): Run {
  return nsExec(ns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', ...extra, addr]);
}

/**
 * Ping (2 echoes) until `addr` answers: a peer that is still starting, a guest bringing its link
 * up, ARP not resolved yet. Returns ping's output; throws with the last one after `timeoutMs`.
 */
export async function pingUntil(ns: string, addr: string, extra: string[] = [], timeoutMs = 30_000): Promise<string> {
  let last = '';
  return waitFor(() => {
    const r = ping(ns, addr, ['-c', '2', ...extra]);
    last = r.stdout + r.stderr;
    return r.code === 0 ? r.stdout : '';
  }, timeoutMs, () => `ping ${addr} from ${ns} to be answered: ${last}`, 300);
}

/** Whether something in netns `ns` listens on TCP `port` (ss). */
export function listening(ns: string, port: number): boolean {
  return nsExec(ns, 'ss', ['-Hltn', `sport = :${port}`]).stdout.trim() !== '';
}

/** iperf3 from `client` to a server in `server`; returns receiver Gbit/s. reverse = server sends. */
export async function iperf(server: string, client: string, addr: string, opts: { reverse?: boolean; seconds?: number; parallel?: number } = {}): Promise<{ gbps: number; bytes: number; retransmits: number }> {
  const srv = spawn('ip', ['netns', 'exec', server, 'iperf3', '-s', '-1'], { stdio: 'ignore' });
  try {
    await waitFor(() => {
      if (srv.exitCode !== null) throw new Error(`iperf3 -s in ${server} exited (${srv.exitCode}) before it listened`);
      return listening(server, 5201);
    }, IN_VM ? 60_000 : 10_000, `iperf3 -s in ${server} to listen on 5201`);
    const args = ['-c', addr, '-t', String(opts.seconds ?? 2), '-J'];
    if (opts.reverse) args.push('-R');
    if (opts.parallel) args.push('-P', String(opts.parallel));
    const r = nsExec(client, 'iperf3', args, 60_000);
    if (r.code !== 0) throw new Error(`iperf3 failed: ${r.stdout.slice(0, 500)} ${r.stderr}`);
    const j = JSON.parse(r.stdout);
    return { gbps: j.end.sum_received.bits_per_second / 1e9, bytes: j.end.sum_received.bytes, retransmits: j.end.sum_sent.retransmits ?? 0 };
  } finally {
    srv.kill();
  }
}

/** The queue pair pier sends an ICMP packet from src to dst on (its flow hash: addresses only). */
export function icmpPair(src: string, dst: string, pairs: number): number {
  const f = new Uint8Array(98);
  f[12] = 0x08;
  f[14] = 0x45;
  f[23] = 1;
  f.set(src.split('.').map(Number), 26);
  f.set(dst.split('.').map(Number), 30);
  return flowHash(f, 0, f.length) % pairs;
}
