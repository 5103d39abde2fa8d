// The pier daemon: holds the desired state, realises it (bridges and ports in the dataplane
// thread, taps in containers), serves the control socket, and re-applies everything at start.
// Every change is validated first, realised second, persisted last; a failure in any step undoes
// the earlier ones, so a failed command leaves nothing behind.
import { existsSync, unlinkSync } from 'node:fs';
import { createConnection } from 'node:net';
import { newCounters, readCounters } from '../dataplane/counters.ts';
import { Dataplane } from '../dataplane/handle.ts';
import type { PeerNews } from '../dataplane/protocol.ts';
import { hasNetAdmin } from '../sys/index.ts';
import { err, PierError } from './errors.ts';
import { IFNAME_MAX, parseKeyValues, randomMac, validatePortOptions } from './options.ts';
import { type DesiredState, StateStore, type StoredPort } from './state.ts';
import { realize, type Realized } from './realize.ts';
import { classifyPath } from '../vhost/path-class.ts';
import { checkTunDevice } from './tap-control.ts';
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
  dev: Realized | undefined;
  /** Why the port is not forwarding, when it is not. */
  error: string | undefined;
}

/** The control socket's commands and their arguments (`handle` below runs them). */
export const COMMANDS: Commands = {
  'add-br': ['BRIDGE'],
  'del-br': ['BRIDGE'],
  'add-port': ['BRIDGE', 'PORT', 'OPTION...'],
  'del-port': ['BRIDGE', 'PORT'],
  show: ['NAME'],
  stats: ['PORT'],
  fdb: ['BRIDGE'],
  ping: [],
};

export class Daemon {
  // Synchronous: few lines, and a daemon that hangs must still have said what it was doing.
  private readonly log = new Logger('pier');
  private readonly store: StateStore;
  private state: DesiredState;
  private dataplane!: Dataplane;
  private control: ControlServer | undefined;
  private readonly bridgeIds = new Map<string, number>();
  private readonly ports = new Map<string, PortRuntime>();
  private nextBridgeId = 1;
  private nextPortIndex = 1;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Requests run one at a time, so a change never interleaves with another. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: DaemonOptions) {
    this.store = new StateStore(opts.stateDir);
    this.state = this.store.load();
  }

  async start(): Promise<void> {
    if (!hasNetAdmin()) {
      throw new PierError('EPERM', 'pier daemon needs CAP_NET_ADMIN to create taps and configure containers', 'run it as root (sudo pier daemon)');
    }
    checkTunDevice();
    await this.refuseIfRunning();
    this.dataplane = new Dataplane(this.opts.poolSize, this.opts.dataplaneCpu);
    this.dataplane.onEvent = (e) => {
      if (e.event === 'port-down') this.portDown(e.index, e.reason);
      else this.peerNews(e.index, e);
    };
    for (const [br, b] of Object.entries(this.state.bridges)) {
      await this.realizeBridge(br);
      for (const [name, o] of Object.entries(b.ports)) await this.startPort(br, name, o, false);
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
    for (const name of Object.keys(b.ports)) await this.stopPort(name, true);
    delete this.state.bridges[br];
    await this.unrealizeBridge(br);
    this.persist();
    this.log.info({ bridge: br }, 'bridge deleted');
    return null;
  }

  // ---- ports ----

  private async addPort(br: string, name: string, words: string[]): Promise<unknown> {
    checkName('port', name);
    const b = this.state.bridges[br];
    if (!b) throw err.noBridge(br);
    const owner = this.ports.get(name);
    if (owner) throw err.portExists(name, owner.bridge);
    if (this.state.bridges[name]) throw new PierError('EEXIST', `${name} is already the name of a bridge`, 'choose another port name');
    const o = validatePortOptions(parseKeyValues(words)) as StoredPort;
    if (o.type === 'tap') {
      const ifname = o.ifname ?? name;
      if (Buffer.byteLength(ifname) > IFNAME_MAX) {
        throw new PierError('EINVAL', `interface name ${ifname} is ${Buffer.byteLength(ifname)} bytes; Linux interface names are at most ${IFNAME_MAX} bytes`,
          o.ifname ? 'pass a shorter ifname=NAME' : `the interface is named after the port by default: pass ifname=NAME (at most ${IFNAME_MAX} bytes)`);
      }
      for (const p of this.ports.values()) {
        const po = this.state.bridges[p.bridge]?.ports[p.name];
        if (po?.type === 'tap' && (po.ifname ?? p.name) === ifname && po.netns === o.netns) {
          throw new PierError('EEXIST', `port ${p.name} already uses interface ${ifname}${o.netns ? ` in netns ${o.netns}` : ''}`, 'choose another ifname=NAME');
        }
      }
      if (!o.mac) o.mac = randomMac(); // kept in the state so a restart brings the same address back
    } else {
      if (o.type === 'virtio-user' && o.netns !== undefined && !o.mac) o.mac = randomMac(); // the vhost-net tap keeps its address too
      // Two listeners, or two connectors, on one socket path clash; one of each is pier
      // talking to itself (a virtio-user port on a vhost-user port), which is fine.
      const listens = (x: StoredPort): boolean => x.type === 'vhost-user' || (x.type === 'virtio-user' && x.server === true);
      // /dev/vhost-net is opened once per port: any number of ports share the device.
      const kernel = (x: StoredPort): boolean => x.type === 'virtio-user' && isVhostNet(x.path);
      for (const p of this.ports.values()) {
        const po = this.state.bridges[p.bridge]?.ports[p.name];
        if (po && po.type !== 'tap' && !kernel(o) && po.path === o.path && listens(po) === listens(o)) {
          throw new PierError('EEXIST', `port ${p.name} already ${listens(o) ? 'listens on' : 'connects to'} socket ${o.path}`, 'choose another path=');
        }
      }
    }
    const rt = await this.startPort(br, name, o, true);
    b.ports[name] = o;
    this.persist(() => {
      delete b.ports[name];
      void this.stopPort(name, true);
    });
    this.log.info({ bridge: br, port: name, options: o }, 'port added');
    return this.describePort(rt);
  }

  /**
   * Bring a port up. With `strict` (a user's add-port) any failure undoes everything and throws;
   * otherwise (start-up) the port is kept with its error and retried.
   */
  private async startPort(br: string, name: string, o: StoredPort, strict: boolean): Promise<PortRuntime> {
    const rt: PortRuntime = { name, bridge: br, index: this.nextPortIndex++, counters: newCounters(), dev: undefined, error: undefined };
    this.log.debug({ port: name, type: o.type }, 'starting port');
    try {
      await this.attach(rt, o);
    } catch (e) {
      if (strict) throw e;
      rt.error = (e as Error).message;
      this.log.warn({ port: name, error: rt.error }, 'port could not be started; will retry');
    }
    this.ports.set(name, rt);
    return rt;
  }

  private async attach(rt: PortRuntime, o: StoredPort): Promise<void> {
    const dev = realize(rt.name, o);
    try {
      await this.dataplane.request({
        op: 'add-port',
        port: { ...dev.spec, index: rt.index, name: rt.name, bridge: this.bridgeIds.get(rt.bridge)!, counters: rt.counters },
      });
    } catch (e) {
      // The engine may hold the port already (it failed while setting up): take it out, or the
      // slot stays taken and every retry fails.
      await this.dataplane.request({ op: 'del-port', index: rt.index }).catch(() => undefined);
      dev.destroy();
      if (e instanceof PierError) throw e;
      throw new PierError('EPORT', `port ${rt.name} could not be set up: ${(e as Error).message}`, 'fix what the message names; pier doctor checks what this machine offers pier');
    }
    rt.dev = dev;
    rt.error = undefined;
  }

  private async detach(rt: PortRuntime, destroy: boolean): Promise<void> {
    await this.dataplane.request({ op: 'del-port', index: rt.index });
    if (rt.dev) (destroy ? rt.dev.destroy : rt.dev.detach)();
    rt.dev = undefined;
  }

  private async stopPort(name: string, destroy: boolean): Promise<void> {
    const rt = this.ports.get(name);
    if (!rt) return;
    await this.detach(rt, destroy);
    this.ports.delete(name);
    const b = this.state.bridges[rt.bridge];
    if (b) delete b.ports[name];
  }

  private async delPort(br: string, name: string): Promise<null> {
    const b = this.state.bridges[br];
    if (!b) throw err.noBridge(br);
    if (!b.ports[name]) throw err.noPort(br, name);
    await this.stopPort(name, true);
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
        if (rt.index !== index) continue;
        this.log.warn({ port: rt.name, reason }, 'port device went away; will retry');
        await this.detach(rt, true);
        rt.error = `device went away (${reason}); is its network namespace gone?`;
      }
    });
  }

  private async retryFailed(): Promise<void> {
    for (const rt of this.ports.values()) {
      if (!rt.error) continue;
      const o = this.state.bridges[rt.bridge]?.ports[rt.name];
      if (!o) continue;
      try {
        await this.attach(rt, o);
        this.log.info({ port: rt.name }, 'port recovered');
      } catch (e) {
        rt.error = (e as Error).message;
      }
    }
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
    const o = this.state.bridges[rt.bridge]?.ports[rt.name] ?? {};
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
    const entries = await this.dataplane.request<Array<{ mac: string; port: number; age: number }>>({ op: 'fdb', bridge: id });
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

function isVhostNet(path: string): boolean {
  try {
    return classifyPath(path).kind === 'vhost-kernel';
  } catch {
    return false;
  }
}
