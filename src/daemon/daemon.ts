// The pier daemon: holds the desired state, realises it (bridges and ports in the dataplane
// thread, taps in containers), serves the control socket, and re-applies everything at start.
// Every change is validated first, realised second, persisted last; a failure in any step undoes
// the earlier ones, so a failed command leaves nothing behind.
import { existsSync, unlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
import { newCounters, readCounters } from '../dataplane/counters.ts';
import { Dataplane } from './dataplane.ts';
import type { PeerNews } from '../dataplane/protocol.ts';
import { hasNetAdmin } from '../sys/index.ts';
import type { ControlHalf, KindOptions, OtherPort, Realized } from '../ports/kind.ts';
import { parseKeyValues, validatePortOptions } from '../ports/parse.ts';
import { kindOf, loadControls, loadSchemas, PORT_TYPES } from '../ports/registry.ts';
import { err, PierError } from './errors.ts';
import { type DesiredState, emptyState, StateStore, type StoredPort } from './state.ts';
import { type Commands, ControlServer } from './control.ts';

import { VERSION } from './defaults.ts';
import { Logger } from './log.ts';
const RETRY_MS = 5000;
const NAME_MAX = 64;
const NAME_RE = /^[A-Za-z0-9_.][A-Za-z0-9_.:-]*$/;

export interface DaemonOptions {
  stateDir: string;
  socket: string;
  socketMode: number;
  poolSize: number;
  /** Pin the dataplane thread to this CPU (-1: let the kernel place it). */
  dataplaneCpu: number;
}

interface PortRuntime {
  name: string;
  bridge: string;
  index: number;
  counters: Float64Array;
  /** What the kind's control half made (undefined: not running). */
  dev: Realized<unknown> | undefined;
  /** The options `dev` was made or last changed with (compared with the desired ones). */
  options: KindOptions | undefined;
  /** Why the port is not forwarding, when it is not. */
  error: string | undefined;
}

/** The control socket's commands and their arguments (`handle` below runs them). */
export const COMMANDS: Commands = {
  'add-br': ['BRIDGE'],
  'del-br': ['BRIDGE'],
  'add-port': ['BRIDGE', 'PORT', 'OPTION...'],
  'del-port': ['BRIDGE', 'PORT'],
  'set-port': ['PORT', 'OPTION...'],
  show: ['NAME'],
  stats: ['PORT'],
  fdb: ['BRIDGE'],
  ping: [],
};

export class Daemon {
  // Synchronous: few lines, and a daemon that hangs must still have said what it was doing.
  private readonly log = new Logger('pier');
  private readonly store: StateStore;
  private state: DesiredState = emptyState();
  private dataplane!: Dataplane;
  private control: ControlServer | undefined;
  private readonly bridgeIds = new Map<string, number>();
  private readonly ports = new Map<string, PortRuntime>();
  private nextBridgeId = 1;
  private nextPortIndex = 1;
  /** Each kind's control half, by type (loaded at start). */
  private controls = new Map<string, ControlHalf<KindOptions, unknown, unknown>>();
  private retryTimer: NodeJS.Timeout | undefined;
  /** Requests run one at a time, so a change never interleaves with another. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: DaemonOptions) {
    this.store = new StateStore(opts.stateDir);
  }

  async start(): Promise<void> {
    if (!hasNetAdmin()) {
      throw new PierError('EPERM', 'pier daemon needs CAP_NET_ADMIN to create taps and configure containers', 'run it as root (sudo pier daemon)');
    }
    this.controls = await loadControls();
    for (const c of new Set(this.controls.values())) c.preflight?.();
    await loadSchemas();
    this.state = this.store.load();
    await this.refuseIfRunning();
    this.dataplane = new Dataplane(this.opts.poolSize, this.opts.dataplaneCpu);
    this.dataplane.onEvent = (e) => {
      if (e.event === 'port-down') this.portDown(e.index, e.reason);
      else this.peerNews(e.index, e);
    };
    // A state file an older pier wrote is kept beside the migrated one, which is saved at once.
    const kept = this.store.keepOriginal();
    if (kept) {
      this.persist();
      this.log.info({ from: this.store.loadedVersion, kept }, 'state file migrated');
    }
    for (const [br, b] of Object.entries(this.state.bridges)) {
      await this.realizeBridge(br);
      for (const name of Object.keys(b.ports)) await this.reconcile(name, false);
    }
    await this.listen();
    this.retryTimer = setInterval(() => void this.enqueue(() => this.retryFailed()), RETRY_MS);
    this.retryTimer.unref();
    this.log.info({ socket: this.opts.socket, stateDir: this.opts.stateDir, ports: this.ports.size }, 'pier daemon ready');
  }

  private async refuseIfRunning(): Promise<void> {
    const path = this.opts.socket;
    if (!existsSync(path)) return;
    const alive = await new Promise<boolean>((resolve) => {
      const s = createConnection(path);
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (alive) throw new PierError('EBUSY', `a pier daemon is already running on ${path}`, 'stop it first, or give this one another --socket and --state-dir');
    unlinkSync(path); // stale socket of a daemon that died
  }

  private async listen(): Promise<void> {
    // Framing, limits, deadlines and the request schema are control.ts's; requests that pass
    // run here, one at a time.
    this.control = await ControlServer.listen({
      path: this.opts.socket,
      mode: this.opts.socketMode,
      commands: COMMANDS,
      run: (cmd, args) => this.enqueue(() => this.handle(cmd, args)),
      log: this.log,
      deadlineMs: deadlineFromEnv(),
    });
  }

  async stop(): Promise<void> {
    if (this.retryTimer) clearInterval(this.retryTimer);
    await this.control?.close();
    try { unlinkSync(this.opts.socket); } catch { /* gone */ }
    await this.dataplane?.stop();
    // Taps stay (persistent) so containers keep their interfaces until pier is back.
    for (const p of this.ports.values()) p.dev?.detach();
    this.log.info('pier daemon stopped');
  }

  // ---- commands from the control socket (src/daemon/control.ts), one at a time ----

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Run one command; `args` are strings, checked against COMMANDS by the control socket. */
  async handle(cmd: string, args: string[]): Promise<unknown> {
    switch (cmd) {
      case 'add-br': return this.addBridge(arg(args, 0, 'BRIDGE'));
      case 'del-br': return this.delBridge(arg(args, 0, 'BRIDGE'));
      case 'add-port': return this.addPort(arg(args, 0, 'BRIDGE'), arg(args, 1, 'PORT'), args.slice(2));
      case 'del-port': return this.delPort(arg(args, 0, 'BRIDGE'), arg(args, 1, 'PORT'));
      case 'set-port': return this.setPort(arg(args, 0, 'PORT'), args.slice(1));
      case 'show': return this.show(args[0]);
      case 'stats': return this.stats(args[0]);
      case 'fdb': return this.fdb(arg(args, 0, 'BRIDGE'));
      case 'ping': return { version: VERSION, pid: process.pid };
      default: throw new PierError('EINVAL', `unknown command ${cmd}`, 'see: pier --help');
    }
  }

  // ---- bridges ----

  private async addBridge(br: string): Promise<null> {
    checkName('bridge', br);
    if (this.state.bridges[br]) throw err.bridgeExists(br);
    if (this.ports.has(br)) throw new PierError('EEXIST', `${br} is already the name of a port`, 'bridges and ports share one namespace of names: choose another');
    await this.realizeBridge(br);
    this.state.bridges[br] = { ports: {} };
    this.persist(() => {
      delete this.state.bridges[br];
      void this.unrealizeBridge(br);
    });
    this.log.info({ bridge: br }, 'bridge added');
    return null;
  }

  private async realizeBridge(br: string): Promise<void> {
    const id = this.nextBridgeId++;
    await this.dataplane.request({ op: 'add-bridge', id, name: br });
    this.bridgeIds.set(br, id);
  }

  private async unrealizeBridge(br: string): Promise<void> {
    const id = this.bridgeIds.get(br);
    if (id === undefined) return;
    this.bridgeIds.delete(br);
    await this.dataplane.request({ op: 'del-bridge', id });
  }

  private async delBridge(br: string): Promise<null> {
    const b = this.state.bridges[br];
    if (!b) throw err.noBridge(br);
    const names = Object.keys(b.ports);
    delete this.state.bridges[br];
    for (const name of names) await this.reconcile(name, false);
    await this.unrealizeBridge(br);
    this.persist();
    this.log.info({ bridge: br }, 'bridge deleted');
    return null;
  }

  // ---- ports: desired state in, differences applied (docs/design/ports.md) ----

  /** Every port of the desired state, with its bridge. */
  private desired(name: string): { bridge: string; port: StoredPort } | undefined {
    for (const [br, b] of Object.entries(this.state.bridges)) {
      const p = b.ports[name];
      if (p) return { bridge: br, port: p };
    }
    return undefined;
  }

  /** The other ports, as a kind's control half sees them when it looks for clashes. */
  private others(name: string): OtherPort[] {
    const out: OtherPort[] = [];
    for (const b of Object.values(this.state.bridges)) {
      for (const [n, p] of Object.entries(b.ports)) if (n !== name) out.push({ name: n, options: p.options, ifname: this.ports.get(n)?.dev?.ifname });
    }
    return out;
  }

  private controlOf(type: string): ControlHalf<KindOptions, unknown, unknown> {
    const c = this.controls.get(type);
    if (!c) throw new PierError('EINVAL', `unknown port type '${type}'`, `types: ${PORT_TYPES.join(', ')}`);
    return c;
  }

  /**
   * Bring port `name` to what the desired state says: make it, remove it, change it live, or
   * (with `recreate`) make it again. The one path for start, add, del, set, retry and a device
   * that went away. With `strict` a failure is thrown, having changed nothing; without it the
   * port keeps its error and the 5 s retry comes back to it.
   */
  private async reconcile(name: string, strict: boolean, recreate = false): Promise<void> {
    const want = this.desired(name);
    let rt = this.ports.get(name);
    if (!want) {
      if (rt) {
        if (rt.dev) await this.unrealize(rt, true);
        this.ports.delete(name);
      }
      return;
    }
    if (!rt) {
      // In the map before it is made: the dataplane's news about it already finds its name.
      rt = { name, bridge: want.bridge, index: this.nextPortIndex++, counters: newCounters(), dev: undefined, options: undefined, error: undefined };
      this.ports.set(name, rt);
    }
    const o = want.port.options;
    if (rt.dev && rt.options && !recreate) {
      const changed = changedKeys(rt.options, o);
      if (changed.length === 0) return;
      const kind = kindOf(o.type)!;
      const fixed = changed.filter((k) => !kind.live.includes(k));
      if (fixed.length > 0) {
        throw new PierError('EBUSY', `${fixed.join(', ')} of port ${name} cannot change while it runs`,
          `add --recreate to make the port again with the new options (${o.type === 'tap' || (o as { netns?: string }).netns !== undefined ? 'the container\'s interface is removed and made again' : 'its peer reconnects'})`);
      }
      let spec: unknown;
      try {
        spec = this.controlOf(o.type).update(name, rt.dev, rt.options, o);
      } catch (e) {
        // Part of it may have been applied (the MAC, not the MTU): count the port as changed,
        // so the undo's reconcile applies the old options back over whatever took.
        rt.options = o;
        throw e;
      }
      if (spec !== undefined) {
        // The control half stays (the tap, the socket); the dataplane half is rebuilt from the new spec.
        await this.dataplane.request({ op: 'del-port', index: rt.index });
        rt.dev.spec = spec;
        try {
          await this.plug(rt, o.type, spec);
        } catch (e) {
          // The dataplane refused the new half: take the port down whole, so the next
          // reconcile (the undo, or the retry) makes it again instead of thinking it runs.
          await this.unrealize(rt, true);
          rt.error = (e as Error).message;
          throw e;
        }
      }
      rt.options = o;
      return;
    }
    if (rt.dev) await this.unrealize(rt, true);
    rt.bridge = want.bridge;
    try {
      const dev = this.controlOf(o.type).realize(name, o);
      try {
        await this.plug(rt, o.type, dev.spec);
      } catch (e) {
        dev.destroy();
        throw e;
      }
      rt.dev = dev;
      rt.options = o;
      if (rt.error) this.log.info({ port: name }, 'port recovered');
      rt.error = undefined;
    } catch (e) {
      rt.error = (e as Error).message;
      if (strict) throw e;
      this.log.warn({ port: name, error: rt.error }, 'port could not be started; will retry');
    }
  }

  /** Hand a spec to the dataplane: the kind's dataplane half builds the port in the engine. */
  private async plug(rt: PortRuntime, type: string, spec: unknown): Promise<void> {
    try {
      await this.dataplane.request({ op: 'add-port', port: { type, index: rt.index, name: rt.name, bridge: this.bridgeIds.get(rt.bridge)!, counters: rt.counters, spec } });
    } catch (e) {
      // The engine may hold the port already (it failed while setting up): take it out, or the
      // slot stays taken and every retry fails.
      await this.dataplane.request({ op: 'del-port', index: rt.index }).catch(() => undefined);
      if (e instanceof PierError) throw e;
      throw new PierError('EPORT', `port ${rt.name} could not be set up: ${(e as Error).message}`, 'fix what the message names; pier doctor checks what this machine offers pier');
    }
  }

  /** Take a port out of the dataplane and remove (or, on daemon stop, let go of) what it made. */
  private async unrealize(rt: PortRuntime, destroy: boolean): Promise<void> {
    await this.dataplane.request({ op: 'del-port', index: rt.index }).catch(() => undefined);
    if (rt.dev) { if (destroy) rt.dev.destroy(); else rt.dev.detach(); }
    rt.dev = undefined;
    rt.options = undefined;
  }

  /**
   * Change the desired state with `change`, reconcile port `name`, persist. A failure anywhere
   * puts the desired state back and reconciles again, so a refused command leaves nothing behind.
   */
  private async apply(name: string, change: () => () => void, recreate = false): Promise<void> {
    const undo = change();
    try {
      await this.reconcile(name, true, recreate);
      this.persist();
    } catch (e) {
      undo();
      await this.reconcile(name, false).catch(() => undefined);
      throw e;
    }
  }

  private async addPort(br: string, name: string, words: string[]): Promise<unknown> {
    checkName('port', name);
    const b = this.state.bridges[br];
    if (!b) throw err.noBridge(br);
    const owner = this.desired(name);
    if (owner) throw err.portExists(name, owner.bridge);
    if (this.state.bridges[name]) throw new PierError('EEXIST', `${name} is already the name of a bridge`, 'choose another port name');
    const parsed = validatePortOptions(parseKeyValues(words));
    const o = this.controlOf(parsed.type).prepare(name, parsed, this.others(name));
    await this.apply(name, () => {
      b.ports[name] = { options: o };
      return () => delete b.ports[name];
    });
    this.log.info({ bridge: br, port: name, options: o }, 'port added');
    return this.describePort(this.ports.get(name)!);
  }

  /**
   * `set-port PORT key=value... [--recreate]`: merge the words into the port's options (`key=`
   * with no value drops the key), check the whole result with the kind's schema, and apply it:
   * live where the kind can, else only with --recreate.
   */
  private async setPort(name: string, words: string[]): Promise<unknown> {
    const want = this.desired(name);
    if (!want) throw new PierError('ENOENT', `no port named ${name}`, 'list the ports with: pier show');
    const recreate = words.includes('--recreate');
    const kv = parseKeyValues(words.filter((w) => w !== '--recreate'));
    if (Object.keys(kv).length === 0) throw new PierError('EINVAL', 'set-port needs at least one KEY=VALUE', `for example: pier set-port ${name} mtu=9000`);
    if ('type' in kv && kv.type !== want.port.options.type) {
      throw new PierError('EINVAL', `the type of port ${name} cannot change (${want.port.options.type})`, `remove it and add it again: pier del-port ${want.bridge} ${name}; pier add-port ${want.bridge} ${name} type=${kv.type} ...`);
    }
    const merged: Record<string, unknown> = { ...want.port.options };
    for (const [k, v] of Object.entries(kv)) {
      if (v === '') delete merged[k];
      else merged[k] = v;
    }
    const parsed = validatePortOptions(merged);
    const o = this.controlOf(parsed.type).prepare(name, parsed, this.others(name));
    const ports = this.state.bridges[want.bridge]!.ports;
    const before = ports[name]!;
    await this.apply(name, () => {
      ports[name] = { ...before, options: o };
      return () => (ports[name] = before);
    }, recreate);
    this.log.info({ port: name, options: o, recreate }, 'port changed');
    return this.describePort(this.ports.get(name)!);
  }

  private async delPort(br: string, name: string): Promise<null> {
    const b = this.state.bridges[br];
    if (!b) throw err.noBridge(br);
    const p = b.ports[name];
    if (!p) throw err.noPort(br, name);
    delete b.ports[name];
    await this.reconcile(name, false);
    this.persist();
    this.log.info({ bridge: br, port: name }, 'port deleted');
    return null;
  }

  /** A port's peer came, went or was refused something: one log line, warn when it was the peer's fault. */
  private peerNews(index: number, n: PeerNews): void {
    const rt = [...this.ports.values()].find((p) => p.index === index);
    const fields = { port: rt?.name ?? `#${index}`, kind: n.kind, detail: n.detail };
    const fault = n.what === 'refused' || (n.what === 'ended' && n.kind !== 'peer-closed' && n.kind !== 'local' && n.kind !== 'superseded');
    if (fault) this.log.warn(fields, `peer ${n.what}`);
    else this.log.info(fields, `peer ${n.what}`);
  }

  private portDown(index: number, reason: string): void {
    void this.enqueue(async () => {
      for (const rt of this.ports.values()) {
        if (rt.index !== index || !rt.dev) continue;
        this.log.warn({ port: rt.name, reason }, 'port device went away; will retry');
        await this.unrealize(rt, true);
        rt.error = `device went away (${reason}); is its network namespace gone?`;
      }
    });
  }

  /** The 5 s retry: every port that is desired and not running is reconciled again. */
  private async retryFailed(): Promise<void> {
    for (const rt of [...this.ports.values()]) if (!rt.dev) await this.reconcile(rt.name, false);
  }

  /** Save the desired state; if that fails, run `undo` and report. */
  private persist(undo?: () => void): void {
    try {
      this.store.save(this.state);
    } catch (e) {
      undo?.();
      throw new PierError('ESTATE', `cannot save state in ${this.opts.stateDir}: ${(e as Error).message}`, 'check the state directory is writable (--state-dir)');
    }
  }

  // ---- views ----

  private describePort(rt: PortRuntime): Record<string, unknown> {
    const o = this.desired(rt.name)?.port.options ?? {};
    return {
      name: rt.name,
      bridge: rt.bridge,
      options: o,
      state: rt.error ? 'error' : 'up',
      error: rt.error,
      ifname: rt.dev?.ifname,
    };
  }

  /** describePort plus what the dataplane knows (a vhost-user peer's negotiated features, ...). */
  private async detail(rt: PortRuntime, kernel = false): Promise<Record<string, unknown>> {
    const d = this.describePort(rt);
    if (rt.dev) {
      const live = await this.dataplane.request({ op: 'describe', index: rt.index }).catch(() => null);
      if (live) d.peer = live;
      // The kernel's side of a tap (tap ports, vhost-net taps): its own counters and drops.
      // For one port only: it costs an `ip` call, and the listing stays as it was.
      const k = kernel ? rt.dev.kernel?.() : undefined;
      if (k) d.kernel = k;
    }
    return d;
  }

  private async show(name?: string): Promise<unknown> {
    const bridges = [];
    for (const [br, b] of Object.entries(this.state.bridges)) {
      const ports = [];
      for (const p of Object.keys(b.ports)) ports.push(await this.detail(this.ports.get(p)!));
      bridges.push({ name: br, ports });
    }
    if (name !== undefined) {
      if (this.state.bridges[name]) return { bridges: bridges.filter((b) => b.name === name) };
      const rt = this.ports.get(name);
      if (!rt) throw new PierError('ENOENT', `no bridge or port named ${name}`, 'list them with: pier show');
      return { port: await this.detail(rt, true) };
    }
    const dataplane = await this.dataplane.request({ op: 'pool' });
    return { version: VERSION, pid: process.pid, stateDir: this.opts.stateDir, socket: this.opts.socket, dataplane, bridges };
  }

  private stats(name?: string): unknown {
    const list = name === undefined ? [...this.ports.values()] : [this.ports.get(name)];
    if (list[0] === undefined) throw new PierError('ENOENT', `no port named ${name}`, 'list the ports with: pier show');
    return list.map((rt) => {
      const k = rt!.dev?.kernel?.();
      return {
        port: rt!.name,
        bridge: rt!.bridge,
        state: rt!.error ? 'error' : 'up',
        counters: readCounters(rt!.counters),
        // The kernel's own view of the tap, so a loss can be placed on the right side of it.
        kernel: k,
      };
    });
  }

  private async fdb(br: string): Promise<unknown> {
    const id = this.bridgeIds.get(br);
    if (id === undefined) throw err.noBridge(br);
    const entries = await this.dataplane.request({ op: 'fdb', bridge: id });
    const byIndex = new Map([...this.ports.values()].map((p) => [p.index, p.name]));
    return entries.map((e) => ({ mac: e.mac, port: byIndex.get(e.port) ?? `#${e.port}`, age: e.age }));
  }
}

/**
 * PIER_CONTROL_DEADLINE_MS shortens the control socket's client deadline (default 10 s); for
 * tests only, which would otherwise wait that long to see a stale client closed.
 */
function deadlineFromEnv(): number | undefined {
  const v = Number(process.env.PIER_CONTROL_DEADLINE_MS);
  return Number.isInteger(v) && v > 0 ? v : undefined;
}

function arg(args: string[], i: number, what: string): string {
  const v = args[i];
  if (v === undefined || v === '') throw new PierError('EINVAL', `missing ${what}`, 'see: pier --help');
  return v;
}

function checkName(what: string, name: string): void {
  if (name.length > NAME_MAX) {
    throw new PierError('EINVAL', `${what} name '${name}' is ${name.length} characters; names are at most ${NAME_MAX}`, `choose a shorter ${what} name`);
  }
  if (!NAME_RE.test(name)) throw err.badName(what, name);
}

/** Option keys whose values differ (compared as stored: JSON). */
function changedKeys(a: KindOptions, b: KindOptions): string[] {
  const ra = a as unknown as Record<string, unknown>;
  const rb = b as unknown as Record<string, unknown>;
  return [...new Set([...Object.keys(ra), ...Object.keys(rb)])].filter((k) => JSON.stringify(ra[k]) !== JSON.stringify(rb[k]));
}
