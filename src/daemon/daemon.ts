// The pier daemon: holds the desired state, realises it (bridges and ports in the dataplane
// thread, taps in containers), serves the control socket, and re-applies everything at start.
// Every change is validated first, realised second, persisted last; a failure in any step undoes
// the earlier ones, so a failed command leaves nothing behind.
import { existsSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { execFile, execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { createConnection } from 'node:net';
import { newCounters, readCounters } from '../dataplane/counters.ts';
import { resolveNetns } from '../ports/netns.ts';
import { DEFAULT_FDB_SIZE } from '../dataplane/bridge.ts';
import { Dataplanes } from './threads.ts';
import type { PeerNews } from '../dataplane/protocol.ts';
import { addRoutes, deleteLink, hasNetAdmin, setSysctl, linkInfo, netnsExists, netnsPath } from '../sys/index.ts';
import { attachmentPort, namespaceId, cniAddRequest, cniGcRequest, cniKeyRequest, gatewayPort, masqueradeRuleset, ownerOf, parseRequest, portOptionsOf, socketPathOf, type CniAddRequest, type CniOwner } from './cni.ts';
import type { ControlHalf, KindOptions, OtherPort, Realized } from '../ports/kind.ts';
import { COMMON_KEYS, parseKeyValues, threadOf, validatePortOptions, vlanOf, type VlanOptions } from '../ports/parse.ts';
import { securityOf, touchesSecurity } from '../ports/security.ts';
import type { SecurityConfig } from '../dataplane/security.ts';
import { kindOf, loadControls, loadSchemas, PORT_TYPES } from '../ports/registry.ts';
import { err, PierError } from './errors.ts';
import { type DesiredState, emptyState, StateStore, type StoredPort } from './state.ts';
import { type Commands, ControlServer } from './control.ts';

import { VERSION } from './defaults.ts';
import type { Server as HttpServer } from 'node:http';
import { Logger } from './log.ts';
import type { MetricsPort } from './metrics.ts';
import { EventLog } from './events.ts';
import { Captures, parseCaptureArgs } from './capture.ts';
import { threadCpuSeconds } from './cpu.ts';
import { BRIDGE_GAUGE_FDB_ENTRIES, BRIDGE_GAUGE_SLOTS, GAUGE_POOL_AVAILABLE, GAUGE_POOL_SIZE, GAUGE_TID, LEVEL_SLOTS } from '../dataplane/gauges.ts';
const RETRY_MS = 5000;
/** Deleted ports remembered by name (nameOf). */
const FORMER_NAMES_MAX = 256;
const NAME_MAX = 64;
const NAME_RE = /^[A-Za-z0-9_.][A-Za-z0-9_.:-]*$/;

export interface DaemonOptions {
  stateDir: string;
  socket: string;
  socketMode: number;
  poolSize: number;
  /** Dataplane threads (docs/design/threads.md). */
  dataplaneThreads: number;
  /** CPUs to pin the dataplane threads to, thread i on cpus[i % length] (empty: the kernel places them). */
  dataplaneCpus: number[];
  /** Serve Prometheus metrics here (`--metrics`); undefined: off. */
  metrics?: { host: string; port: number } | undefined;
  /** Addresses each bridge's FDB holds (`--fdb-size`; default 8192). */
  fdbSize?: number | undefined;
}

interface PortRuntime {
  name: string;
  bridge: string;
  index: number;
  counters: Float64Array;
  /** Ring levels the engine writes once a second (LEVEL_* slots; NaN for kinds without rings). */
  levels: Float64Array;
  /** What the kind's control half made (undefined: not running). */
  dev: Realized<unknown> | undefined;
  /** The options `dev` was made or last changed with (compared with the desired ones). */
  options: KindOptions | undefined;
  /** Why the port is not forwarding, when it is not. */
  error: string | undefined;
  /** A vhost-user peer (or virtio-user backend) is connected; undefined for kinds without one. */
  peerConnected?: boolean;
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
  events: ['AFTER'],
  top: [],
  // PORT names, then direction=, snaplen=, count=; the reply is a pcapng stream (src/daemon/capture.ts)
  capture: ['ARG...'],
  fdb: ['BRIDGE'],
  'fdb-ports': ['BRIDGE'],
  ping: [],
  // pier-cni's requests, one JSON object each (docs/design/cni.md)
  'cni-add': ['JSON'],
  'cni-del': ['JSON'],
  'cni-check': ['JSON'],
  'cni-gc': ['JSON'],
};

export class Daemon {
  // Synchronous: few lines, and a daemon that hangs must still have said what it was doing.
  private readonly log = new Logger('pier');
  /** What happened to ports and peers, for `pier events` (the log has it too). */
  private readonly events = new EventLog();
  /** Running `pier capture`s, each streaming to its client. */
  private readonly captures = new Captures((slots) => this.dataplanes.captureThread(slots), this.log, `pier ${VERSION}`);
  private readonly store: StateStore;
  private state: DesiredState = emptyState();
  private dataplanes!: Dataplanes;
  private control: ControlServer | undefined;
  private metrics: HttpServer | undefined;
  private readonly bridgeIds = new Map<string, number>();
  /** Each running bridge's gauges, shared with the dataplane (its FDB's size, for metrics). */
  private readonly bridgeGauges = new Map<string, Float64Array>();
  private readonly ports = new Map<string, PortRuntime>();
  /**
   * Ports of the state this daemon started with that it has not made yet: only theirs may take
   * back an existing tap (the one the stopped daemon left); any other add finds it someone else's.
   */
  private readonly restoring = new Set<string>();
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
    await this.refuseIfRunning();
    this.store.lock();
    this.state = this.store.load();
    this.dataplanes = new Dataplanes(this.opts.dataplaneThreads, this.opts.poolSize, this.opts.dataplaneCpus, () => this.nextPortIndex++, this.opts.fdbSize);
    this.dataplanes.onEvent = (e) => {
      if (e.event === 'port-down') this.portDown(e.index, e.reason);
      else this.peerNews(e.index, e);
    };
    // A state file an older pier wrote is kept beside the migrated one, which is saved at once.
    const kept = this.store.keepOriginal();
    if (kept) {
      this.persist();
      this.log.info({ from: this.store.loadedVersion, kept }, 'state file migrated');
    }
    // Rules an earlier run of this daemon wrote are its own to remove, even when no attachment
    // that needs them outlives the reaping below.
    this.masqueradeOwned = this.attachments().some((a) => a.owner.masquerade.length > 0);
    // Attachments whose containers went away while the daemon was down (a reboot) go first.
    await this.reapAttachments(true);
    for (const b of Object.values(this.state.bridges)) for (const name of Object.keys(b.ports)) this.restoring.add(name);
    for (const br of Object.keys(this.state.bridges)) await this.realizeBridge(br);
    // Ports that listen first (vhost-user, virtio-user server=): a port of this daemon that
    // connects to one of them (pier as driver against itself) then finds its socket at once, not
    // at the next 5 s retry.
    const ports = Object.values(this.state.bridges).flatMap((b) => Object.entries(b.ports));
    const listens = (o: { type: string; server?: unknown }): boolean => o.type === 'vhost-user' || (o.type === 'virtio-user' && o.server === true);
    for (const [name, p] of ports) if (listens(p.options)) await this.reconcile(name, false);
    for (const [name, p] of ports) if (!listens(p.options)) await this.reconcile(name, false);
    await this.syncDerived().catch((e: Error) => this.log.warn({ error: e.message }, 'cni: gateway or masquerade not brought up to date'));
    // A DEL that came while this daemon was starting found no socket and left a tombstone after
    // the read above. The first job of the queue, ahead of any request, reads them once more: no
    // ADD can have come between (an ADD needs the daemon's answer), so they are still the
    // runtime's last word on their attachments.
    let listening: () => void = () => {};
    const listened = new Promise<void>((resolve) => (listening = resolve));
    void this.enqueue(async () => {
      await listened;
      await this.reapAttachments(true);
    }).catch((e: Error) => this.log.warn({ error: e.message }, 'cni: DELs left while starting not applied'));
    try {
      await this.listen();
    } finally {
      listening(); // (a start that failed here ends the daemon; the job must not hold the queue)
    }
    if (this.opts.metrics) {
      const { metricsRegistry, serveMetrics } = await import('./metrics.ts'); // prom-client only when asked
      try {
        this.metrics = await serveMetrics(this.opts.metrics, metricsRegistry({
          ports: () => this.metricsPorts(), gauges: this.dataplanes.gauges, version: VERSION,
          fdbSizes: () => [...this.bridgeGauges].map(([bridge, g]) => ({ bridge, entries: g[BRIDGE_GAUGE_FDB_ENTRIES]! })),
        }));
      } catch (e) {
        // A daemon that does not start leaves nothing behind: the control socket goes, the taps stay as on any stop.
        await this.stop();
        throw e;
      }
      this.log.info({ metrics: `http://${this.opts.metrics.host.includes(':') ? `[${this.opts.metrics.host}]` : this.opts.metrics.host}:${this.opts.metrics.port}/metrics` }, 'serving metrics');
    }
    this.retryTimer = setInterval(() => void this.enqueue(() => this.retryFailed()), RETRY_MS);
    this.retryTimer.unref();
    this.log.info({ socket: this.opts.socket, stateDir: this.opts.stateDir, ports: this.ports.size, fdbSize: this.opts.fdbSize ?? DEFAULT_FDB_SIZE, dataplaneThreads: this.opts.dataplaneThreads }, 'pier daemon ready');
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
    if (this.metrics) {
      this.metrics.closeAllConnections();
      await new Promise<void>((resolve) => this.metrics!.close(() => resolve()));
    }
    await this.captures.stopAll(); // their readers get the statistics before the socket closes
    await this.control?.close();
    try { unlinkSync(this.opts.socket); } catch { /* gone */ }
    await this.dataplanes?.stop();
    // Taps stay (persistent) so containers keep their interfaces until pier is back.
    for (const p of this.ports.values()) p.dev?.detach();
    this.store.unlock();
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
      case 'top': return this.topSample();
      case 'capture': return this.capture(args);
      case 'events': return this.events.since(args[0] === undefined ? 0 : eventSeq(args[0]));
      case 'fdb': return this.fdb(arg(args, 0, 'BRIDGE'));
      case 'fdb-ports': return this.fdbPorts(arg(args, 0, 'BRIDGE'));
      case 'ping': return { version: VERSION, pid: process.pid };
      case 'cni-add': return this.cniAdd(parseRequest(cniAddRequest, cmd, args[0]));
      case 'cni-del': return this.cniDel(parseRequest(cniKeyRequest, cmd, args[0]));
      case 'cni-check': return this.cniCheck(parseRequest(cniKeyRequest, cmd, args[0]));
      case 'cni-gc': return this.cniGc(parseRequest(cniGcRequest, cmd, args[0]));
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
    const gauges = new Float64Array(new SharedArrayBuffer(8 * BRIDGE_GAUGE_SLOTS));
    await this.dataplanes.addBridge(id, br, gauges);
    this.bridgeIds.set(br, id);
    this.bridgeGauges.set(br, gauges);
  }

  private async unrealizeBridge(br: string): Promise<void> {
    const id = this.bridgeIds.get(br);
    if (id === undefined) return;
    this.bridgeIds.delete(br);
    this.bridgeGauges.delete(br);
    await this.dataplanes.delBridge(id);
  }

  private async delBridge(br: string): Promise<null> {
    const b = this.state.bridges[br];
    if (!b) throw new PierError('ENOBRIDGE', `bridge ${br} does not exist`, 'list the bridges with: pier show');
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
      this.restoring.delete(name);
      if (rt) {
        if (rt.dev) await this.unrealize(rt, true);
        this.ports.delete(name);
        this.formerNames.set(rt.index, name);
        if (this.formerNames.size > FORMER_NAMES_MAX) this.formerNames.delete(this.formerNames.keys().next().value!);
        this.captures.portDeleted(name);
      }
      return;
    }
    if (!rt) {
      // In the map before it is made: the dataplane's news about it already finds its name.
      rt = { name, bridge: want.bridge, index: this.nextPortIndex++, counters: newCounters(), levels: new Float64Array(new SharedArrayBuffer(8 * LEVEL_SLOTS)).fill(NaN), dev: undefined, options: undefined, error: undefined };
      this.ports.set(name, rt);
    }
    const o = want.port.options;
    if (rt.dev && rt.options && !recreate) {
      const all = changedKeys(rt.options, o);
      if (all.length === 0) return;
      // tag= and trunks= are every kind's and always live: the dataplane changes the port's VLANs
      // between bursts. thread= too: the dataplane half moves to the other engine.
      const vlanChanged = all.includes('tag') || all.includes('trunks');
      const securityChanged = touchesSecurity(all);
      const asked = threadOf(o);
      const thread = asked === undefined ? this.dataplanes.threadOf(rt.index) ?? this.dataplanes.place(undefined, name) : this.dataplanes.place(asked, name);
      const moved = thread !== this.dataplanes.threadOf(rt.index);
      const changed = all.filter((k) => !(COMMON_KEYS as readonly string[]).includes(k));
      const kind = kindOf(o.type)!;
      const fixed = changed.filter((k) => !kind.live.includes(k));
      if (fixed.length > 0) {
        throw new PierError('EBUSY', `${fixed.join(', ')} of port ${name} cannot change while it runs`,
          `add --recreate to make the port again with the new options (${o.type === 'tap' || (o as { netns?: string }).netns !== undefined ? 'the container\'s interface is removed and made again' : 'its peer reconnects'})`);
      }
      let spec: unknown;
      try {
        if (changed.length > 0) spec = this.controlOf(o.type).update(name, rt.dev, rt.options, o);
      } catch (e) {
        // Part of it may have been applied (the MAC, not the MTU): count the port as changed,
        // so the undo's reconcile applies the old options back over whatever took.
        rt.options = o;
        throw e;
      }
      // A new spec that differs from the running one only in busyPoll: set in place, so the
      // peer's session goes on (a rebuilt vhost-user half ends it, and a DPDK virtio-user client
      // does not come back).
      if (spec !== undefined && !moved && onlyBusyPollDiffers(rt.dev.spec, spec)) {
        await this.dataplanes.setBusyPoll(rt.index, (spec as { busyPoll: boolean }).busyPoll);
        rt.dev.spec = spec;
        spec = undefined; // nothing to rebuild: tag=, trunks= and security follow below as for any port
      }
      if (spec !== undefined || moved) {
        if (o.type === 'vhost-user' || o.type === 'vhost-user-client') this.sessionsEnded.add(name);
        await this.rebuild(rt, o, spec ?? rt.dev.spec, thread);
      } else {
        // Counted as changed first: if the dataplane refuses, the undo's reconcile puts back the old options whole.
        rt.options = o;
        const bridge = this.bridgeIds.get(rt.bridge)!;
        if (vlanChanged) await this.dataplanes.setVlan(rt.index, vlanOf(o), bridge, securityOf(o));
        if (securityChanged) await this.dataplanes.setSecurity(rt.index, securityOf(o), bridge, vlanOf(o));
      }
      rt.options = o;
      if (vlanChanged) await this.syncLinkVlans(rt.bridge);
      return;
    }
    // A namespace that is not there fails the port's making: find out before its interface is
    // unmade (set-port --recreate netns=typo would otherwise take the container's interface away).
    if (strict && rt.dev) resolveNetns((o as { netns?: string }).netns);
    if (rt.dev) await this.unrealize(rt, true);
    rt.bridge = want.bridge;
    try {
      const dev = this.controlOf(o.type).realize(name, o, this.restoring.has(name));
      try {
        this.addOwnerRoutes(want.port, dev);
        await this.plug(rt, o.type, dev.spec, vlanOf(o), this.dataplanes.place(threadOf(o), name), securityOf(o));
      } catch (e) {
        dev.destroy();
        throw e;
      }
      this.restoring.delete(name);
      rt.dev = dev;
      rt.options = o;
      if (rt.error) {
        this.log.info({ port: name }, 'port recovered');
        this.events.add('link-up', { port: name, bridge: rt.bridge, detail: `recovered from: ${rt.error}` });
      }
      rt.error = undefined;
    } catch (e) {
      const prev = rt.error;
      // With the fix when there is one: a port that fails at a restart shows it in pier show
      // and its event, where no command is there to print the hint.
      const hint = e instanceof PierError ? e.hint : undefined;
      rt.error = hint ? `${(e as Error).message} (fix: ${hint})` : (e as Error).message;
      // Once per distinct error, not at every 5 s retry.
      if (rt.error !== prev) this.events.add('reconcile-failed', { port: name, bridge: rt.bridge, reason: rt.error });
      if (strict) throw e;
      this.log.warn({ port: name, error: rt.error }, 'port could not be started; will retry');
    }
  }

  /** An attachment's routes in its container, once its interface exists (each realisation: they go with the interface). */
  private addOwnerRoutes(p: StoredPort, dev: Realized<unknown>): void {
    const owner = p.owner;
    if (owner?.kind !== 'cni' || owner.routes.length === 0 || !dev.ifname) return;
    try {
      addRoutes(owner.netns === undefined ? undefined : netnsPath(owner.netns), dev.ifname, owner.routes);
    } catch (e) {
      throw new PierError('ECONFIG', `cannot add the routes of ${dev.ifname} in ${owner.netns}: ${(e as Error).message}`, 'check the routes IPAM returned (ipam.routes) against the addresses it gave');
    }
  }

  /** Hand a spec to dataplane thread `thread`: the kind's dataplane half builds the port in its engine. */
  private async plug(rt: PortRuntime, type: string, spec: unknown, vlan: VlanOptions | undefined, thread: number, security: SecurityConfig): Promise<void> {
    try {
      await this.dataplanes.addPort(thread, { type, index: rt.index, name: rt.name, bridge: this.bridgeIds.get(rt.bridge)!, counters: rt.counters, levels: rt.levels, spec, vlan, security });
    } catch (e) {
      // The engine may hold the port already (it failed while setting up): take it out, or the
      // slot stays taken and every retry fails.
      await this.dataplanes.delPort(rt.index).catch(() => undefined);
      if (e instanceof PierError) throw e;
      throw new PierError('EPORT', `port ${rt.name} could not be set up: ${(e as Error).message}`, 'fix what the message names; pier doctor checks what this machine offers pier');
    }
    if (vlan !== undefined) await this.syncLinkVlans(rt.bridge);
  }

  /** Take a port out of the dataplane and remove (or, on daemon stop, let go of) what it made. */
  private async unrealize(rt: PortRuntime, destroy: boolean): Promise<void> {
    await this.dataplanes.delPort(rt.index).catch(() => undefined);
    const hadVlans = rt.options !== undefined && vlanOf(rt.options) !== undefined;
    if (rt.dev) { if (destroy) rt.dev.destroy(); else rt.dev.detach(); }
    rt.dev = undefined;
    rt.options = undefined;
    if (hadVlans) await this.syncLinkVlans(rt.bridge).catch(() => undefined);
  }

  /** The links between threads carry VLANs while some running port of the bridge has tag= or trunks= (docs/design/threads.md). */
  private async syncLinkVlans(br: string): Promise<void> {
    const id = this.bridgeIds.get(br);
    if (id === undefined || this.dataplanes.count === 1) return;
    const vlans = [...this.ports.values()].some((p) => p.bridge === br && p.dev !== undefined && p.options !== undefined && vlanOf(p.options) !== undefined);
    await this.dataplanes.bridgeVlans(id, vlans);
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
    securityOf(o); // a secured port pier cannot identify is refused here, before anything changes
    await this.apply(name, () => {
      b.ports[name] = { options: o };
      return () => delete b.ports[name];
    });
    this.log.info({ bridge: br, port: name, options: o }, 'port added');
    this.events.add('port-added', { port: name, bridge: br, detail: `type=${o.type}` });
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
    securityOf(o); // a secured port pier cannot identify is refused here, before anything changes
    const ports = this.state.bridges[want.bridge]!.ports;
    const before = ports[name]!;
    this.sessionsEnded.delete(name);
    await this.apply(name, () => {
      ports[name] = { ...before, options: o };
      return () => (ports[name] = before);
    }, recreate);
    const ended = this.sessionsEnded.delete(name);
    this.log.info({ port: name, options: o, recreate }, 'port changed');
    this.events.add('port-changed', { port: name, detail: recreate ? 'made again (--recreate)' : ended ? 'changed live; the device was made again' : 'changed live' });
    // What the user must know and would otherwise find only in the events: the frontend was cut off.
    const note = ended ? `${name}: the device was made again to apply this, which ended its frontend's session: a frontend that reconnects (QEMU with reconnect=, DPDK virtio-user with server=1) comes back; others must be restarted` : undefined;
    return { ...this.describePort(this.ports.get(name)!), ...(note !== undefined ? { note } : {}) };
  }

  private async delPort(br: string, name: string): Promise<null> {
    const b = this.state.bridges[br];
    if (!b) throw err.noBridge(br);
    const p = b.ports[name];
    if (!p) throw err.noPort(br, name, Object.entries(this.state.bridges).find(([, x]) => x.ports[name] !== undefined)?.[0]);
    delete b.ports[name];
    await this.reconcile(name, false);
    this.persist();
    this.log.info({ bridge: br, port: name }, 'port deleted');
    this.events.add('port-deleted', { port: name, bridge: br });
    return null;
  }

  /** Start `pier capture`: every named port must exist (running or not: a port that comes back is captured again). */
  private async capture(args: string[]): Promise<unknown> {
    const o = parseCaptureArgs(args);
    const ports = o.ports.map((name) => {
      const rt = this.ports.get(name);
      if (!rt) throw new PierError('ENOENT', `no port named ${name}`, 'list the ports with: pier show');
      return { name, index: rt.index, bridge: rt.bridge, type: this.state.bridges[rt.bridge]?.ports[name]?.options.type ?? 'unknown' };
    });
    return this.captures.start(ports, o);
  }

  /** The ports as the metrics endpoint reports them (read at each scrape). */
  private metricsPorts(): MetricsPort[] {
    const out: MetricsPort[] = [];
    for (const rt of this.ports.values()) {
      const type = this.state.bridges[rt.bridge]?.ports[rt.name]?.options.type ?? 'unknown';
      const hasPeer = type.startsWith('vhost-user') || type === 'virtio-user';
      out.push({ name: rt.name, bridge: rt.bridge, type, up: rt.error === undefined, peerConnected: hasPeer ? rt.peerConnected === true : undefined, counters: rt.counters, levels: rt.levels });
    }
    return out;
  }

  /**
   * Names of deleted ports by dataplane index, the newest FORMER_NAMES_MAX: news and FDB entries
   * about a port that is gone (a flap with it, an entry not aged out yet) still name it.
   */
  private readonly formerNames = new Map<number, string>();
  /** Ports whose vhost-user device reconcile() made again (its frontend's session ended): set-port says so. */
  private readonly sessionsEnded = new Set<string>();

  /** The port with dataplane index `index`: its name, a deleted one's name marked so, or #index. */
  private nameOf(index: number): string {
    for (const p of this.ports.values()) if (p.index === index) return p.name;
    const gone = this.formerNames.get(index);
    return gone !== undefined ? `${gone} (deleted)` : `#${index}`;
  }

  /** A port's peer came, went or was refused something: one log line, warn when it was the peer's fault. */
  private peerNews(index: number, n: PeerNews): void {
    const rt = [...this.ports.values()].find((p) => p.index === index);
    if (rt && n.what === 'connected') rt.peerConnected = true;
    if (rt && n.what === 'ended') rt.peerConnected = false;
    if (n.what === 'spoofed' || n.what === 'flapping') return this.securityNews(rt, index, n);
    const type = n.what === 'connected' ? 'peer-connected' : n.what === 'ended' ? 'peer-disconnected' : n.what === 'features' ? 'features' : 'peer-refused';
    this.events.add(type, { port: rt?.name ?? this.nameOf(index), bridge: rt?.bridge, reason: n.kind, detail: n.detail });
    const fields = { port: rt?.name ?? this.nameOf(index), kind: n.kind, detail: n.detail };
    const fault = n.what === 'refused' || (n.what === 'ended' && n.kind !== 'peer-closed' && n.kind !== 'local' && n.kind !== 'superseded');
    if (fault) this.log.warn(fields, `peer ${n.what}`);
    else this.log.info(fields, `peer ${n.what}`);
  }

  /** Forged frames dropped on a secured port, frames over its storm limit, or a flapping MAC: an event and a warning, already rate-limited by the engine. */
  private securityNews(rt: PortRuntime | undefined, index: number, n: PeerNews): void {
    const port = rt?.name ?? this.nameOf(index);
    if (n.what === 'spoofed') {
      this.events.add('port-security', { port, bridge: rt?.bridge, reason: n.kind?.replace(/^rx_dropped_/, ''), detail: n.detail });
      this.log.warn({ port, reason: n.kind, detail: n.detail }, n.kind === 'rx_dropped_storm' ? 'storm control dropped frames' : 'port security dropped forged frames');
      return;
    }
    const other = this.nameOf(Number(n.kind));
    const detail = `${n.detail}: ${other} and ${port}`;
    this.events.add('fdb-flapping', { port, bridge: rt?.bridge, detail });
    this.log.warn({ port, other, detail }, 'MAC flapping between ports');
  }

  private portDown(index: number, reason: string): void {
    void this.enqueue(async () => {
      for (const rt of this.ports.values()) {
        if (rt.index !== index || !rt.dev) continue;
        this.log.warn({ port: rt.name, reason }, 'port device went away; will retry');
        this.events.add('link-down', { port: rt.name, bridge: rt.bridge, reason });
        await this.unrealize(rt, true);
        const dev = (this.desired(rt.name)?.port.options as { dev?: string } | undefined)?.dev;
        rt.error = dev !== undefined
          ? `device ${dev} went down or away (${reason}); the port comes back with it`
          : `device went away (${reason}); is its network namespace gone?`;
      }
    });
  }

  /** The 5 s retry: every port that is desired and not running is reconciled again. */
  private async retryFailed(): Promise<void> {
    await this.reapAttachments();
    if (this.derivedStale) await this.syncDerived().then(() => this.persist(), (e: Error) => this.log.warn({ error: e.message }, 'cni: gateway or masquerade still not up to date; will retry'));
    for (const rt of [...this.ports.values()]) if (!rt.dev) await this.reconcile(rt.name, false);
    for (const rt of [...this.ports.values()]) if (rt.dev?.refresh) await this.refresh(rt);
  }

  /**
   * What a running port read from the system when it was made changed (a vxlan port's underlay
   * MTU): its dataplane half is rebuilt from the new spec, on the thread it runs on. A failure
   * takes the port down whole, and the retry makes it again.
   */
  private async refresh(rt: PortRuntime): Promise<void> {
    const dev = rt.dev!;
    const news = dev.refresh!();
    const o = rt.options;
    if (news === undefined || o === undefined) return;
    this.log.info({ port: rt.name, change: news.why }, 'port follows a change of the system');
    this.events.add('port-changed', { port: rt.name, detail: news.why });
    const thread = this.dataplanes.threadOf(rt.index) ?? this.dataplanes.place(threadOf(o), rt.name);
    await this.rebuild(rt, o, news.spec, thread).catch(() => {}); // (the port keeps its error; the retry makes it again)
  }

  /**
   * Rebuild a running port's dataplane half from `spec` on `thread`; the control half stays (the
   * tap, the socket). If the dataplane refuses the new half, the port is taken down whole, so the
   * next reconcile (an undo, or the retry) makes it again instead of thinking it runs; throws.
   */
  private async rebuild(rt: PortRuntime, o: KindOptions, spec: unknown, thread: number): Promise<void> {
    const dev = rt.dev!;
    await this.dataplanes.delPort(rt.index);
    dev.spec = spec;
    try {
      await this.plug(rt, o.type, spec, vlanOf(o), thread, securityOf(o));
    } catch (e) {
      await this.unrealize(rt, true);
      rt.error = (e as Error).message;
      throw e;
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

  // ---- pier-cni's attachments (docs/design/cni.md) ----

  /** Every port an attachment of the CNI plugin made, with its bridge and owner record. */
  private attachments(): Array<{ name: string; bridge: string; port: StoredPort; owner: CniOwner }> {
    const out = [];
    for (const [br, b] of Object.entries(this.state.bridges)) {
      for (const [name, p] of Object.entries(b.ports)) if (p.owner?.kind === 'cni') out.push({ name, bridge: br, port: p, owner: p.owner });
    }
    return out;
  }

  /** Take a port out of the desired state and away (no error for one that is not there). */
  private async dropPort(name: string): Promise<boolean> {
    const want = this.desired(name);
    if (!want) return false;
    delete this.state.bridges[want.bridge]!.ports[name];
    await this.reconcile(name, false);
    return true;
  }

  /**
   * ADD: the bridge (made if missing), the port, its routes, the bridge's gateway port and the
   * masquerade table, then the state file. Any failure undoes all of it before the reply.
   */
  private async cniAdd(req: CniAddRequest): Promise<unknown> {
    const name = attachmentPort(req.network, req.containerId, req.ifname);
    checkName('bridge', req.bridge);
    const taken = this.desired(name);
    if (taken && taken.port.owner?.kind !== 'cni') throw new PierError('EEXIST', `port ${name} exists and was not made by pier-cni`, `rename or remove that port (pier del-port ${taken.bridge} ${name}): the cni- names are pier-cni's`);
    if (this.desired(req.bridge)) throw new PierError('EEXIST', `${req.bridge} is the name of a port, not a bridge`, 'set "bridge" in the network config to another name');
    // An older port of the same attachment (a runtime that lost ADD's answer and tries again) goes first.
    if (await this.dropPort(name)) this.log.info({ port: name }, 'cni: replacing the port of the same attachment');
    const madeBridge = !this.state.bridges[req.bridge];
    if (madeBridge) {
      await this.realizeBridge(req.bridge);
      this.state.bridges[req.bridge] = { ports: {} };
    }
    const b = this.state.bridges[req.bridge]!;
    try {
      const socketPath = req.portType === 'vhost-user' ? socketPathOf(req) : undefined;
      const parsed = validatePortOptions(portOptionsOf(req, socketPath ?? ''));
      const o = this.controlOf(parsed.type).prepare(name, parsed, this.others(name));
    securityOf(o); // a secured port pier cannot identify is refused here, before anything changes
      await this.apply(name, () => {
        b.ports[name] = { options: o, owner: ownerOf(req, req.netns === undefined ? undefined : namespaceId(netnsPath(req.netns))) };
        return () => delete b.ports[name];
      });
      try {
        await this.syncDerived();
      } catch (e) {
        delete b.ports[name];
        await this.reconcile(name, false);
        await this.syncDerived().catch(() => undefined);
        this.persist();
        throw e;
      }
      const d = this.describePort(this.ports.get(name)!);
      const opts = o as { mac?: string; mtu?: number };
      this.log.info({ port: name, network: req.network, container: req.containerId, ifname: req.ifname, bridge: req.bridge }, 'cni: attached');
      return { port: name, bridge: req.bridge, type: o.type, ifname: req.portType === 'vhost-user' ? req.ifname : d.ifname, mac: opts.mac, mtu: opts.mtu, sandbox: req.portType === 'vhost-user' ? undefined : req.netns, socketPath };
    } catch (e) {
      if (madeBridge && Object.keys(b.ports).length === 0) {
        delete this.state.bridges[req.bridge];
        await this.unrealizeBridge(req.bridge);
        this.persist();
      }
      throw e;
    }
  }

  /** DEL: never an error for what is already gone (the port, its namespace, the bridge). */
  private async cniDel(req: { network: string; containerId: string; ifname: string }): Promise<unknown> {
    const name = attachmentPort(req.network, req.containerId, req.ifname);
    // Only a port pier-cni made: a user's port that happens to have the name stays.
    const removed = this.desired(name)?.port.owner?.kind === 'cni' && await this.dropPort(name);
    if (removed) {
      await this.syncDerived().catch((e: Error) => this.log.warn({ error: e.message }, 'cni: gateway or masquerade not brought up to date'));
      this.persist();
      this.log.info({ port: name, network: req.network, container: req.containerId, ifname: req.ifname }, 'cni: detached');
    }
    return { removed: removed ? name : null };
  }

  /** CHECK: the port exists, runs, has the addresses asked about, and its interface is in the container. */
  private cniCheck(req: { network: string; containerId: string; ifname: string; ips?: string[] | undefined; portSecurity?: boolean | undefined }): unknown {
    const name = attachmentPort(req.network, req.containerId, req.ifname);
    const want = this.desired(name);
    const rt = this.ports.get(name);
    if (!want || !rt) {
      throw new PierError('ENOATTACH', `container ${req.containerId} has no interface ${req.ifname} on network ${req.network} in pier`, 'the attachment was never made or was removed: the runtime should DEL and ADD it again');
    }
    if (rt.error || !rt.dev) throw new PierError('EPORTDOWN', `port ${name} of container ${req.containerId} is not running: ${rt.error ?? 'not realised'}`, 'pier retries every 5 s; pier show ' + name + ' says more');
    const o = want.port.options as { ip?: string[]; mac?: string; netns?: string };
    if (req.ips && o.ip && [...req.ips].sort().join() !== [...o.ip].sort().join()) {
      throw new PierError('EMISMATCH', `port ${name} has addresses ${o.ip.join(', ')}, the result says ${req.ips.join(', ')}`, 'DEL and ADD the attachment again');
    }
    // Port security as the config asks, allowing every address of the result.
    const sec = securityOf(want.port.options);
    if (req.portSecurity !== undefined && (sec.secured !== null) !== req.portSecurity) {
      throw new PierError('EMISMATCH', `port ${name} has port security ${sec.secured ? 'on' : 'off'}, the config says ${req.portSecurity ? 'on' : 'off'}`, 'DEL and ADD the attachment again (or pier set-port ' + name + ` port-security=${req.portSecurity ? 'on' : 'off'})`);
    }
    const allowed = new Set(sec.secured?.addresses.map((a) => a.ip) ?? []);
    const missing = sec.secured ? (req.ips ?? []).map((a) => a.split('/')[0]!).filter((a) => !allowed.has(a)) : [];
    if (missing.length > 0) {
      throw new PierError('EMISMATCH', `port ${name} may not send from ${missing.join(', ')}, which the result gives it`, `pier set-port ${name} allowed-addresses=... or DEL and ADD the attachment again`);
    }
    if (o.netns !== undefined && rt.dev.ifname) {
      const k = linkInfo(netnsPath(o.netns), rt.dev.ifname);
      if (!k) throw new PierError('ENOLINK', `interface ${rt.dev.ifname} is missing in ${o.netns}`, 'DEL and ADD the attachment again');
      if (o.mac && k.mac !== o.mac) throw new PierError('EMISMATCH', `interface ${rt.dev.ifname} has MAC ${k.mac}, pier gave it ${o.mac}`, 'something in the container changed it; DEL and ADD the attachment again');
    }
    return this.describePort(rt);
  }

  /** GC: every port of the network whose attachment the runtime no longer lists goes. */
  private async cniGc(req: { network: string; valid: Array<{ containerId: string; ifname: string }> }): Promise<unknown> {
    const valid = new Set(req.valid.map((v) => `${v.containerId}\0${v.ifname}`));
    const removed: string[] = [];
    for (const a of this.attachments()) {
      if (a.owner.network !== req.network || valid.has(`${a.owner.containerId}\0${a.owner.ifname}`)) continue;
      await this.dropPort(a.name);
      // The runtime no longer knows the attachment, so no DEL will free its addresses: pier does
      // (an IPAM plugin with a GC of its own, host-local 1.1.1 has none, frees them a second time).
      this.releaseAddresses(a.owner);
      removed.push(a.name);
    }
    if (removed.length > 0) {
      await this.syncDerived().catch((e: Error) => this.log.warn({ error: e.message }, 'cni: gateway or masquerade not brought up to date'));
      this.persist();
      this.log.info({ network: req.network, removed }, 'cni: garbage collected');
    }
    return { removed };
  }

  /**
   * Ports whose container is gone for good: their namespace file no longer exists (a reboot, a
   * runtime that died before DEL), and the DELs the plugin left while the daemon was down. Their
   * addresses go back to IPAM. At start and on every retry.
   */
  private async reapAttachments(starting = false): Promise<void> {
    const gone: Array<{ name: string; owner: CniOwner }> = [];
    for (const a of this.attachments()) {
      if (a.owner.netns === undefined) continue;
      const path = netnsPath(a.owner.netns);
      if (!netnsExists(path) || (a.owner.netnsId !== undefined && namespaceId(path) !== a.owner.netnsId)) gone.push(a);
    }
    // Tombstones only at start: they were left while no daemon ran. Read later, one could name an
    // attachment the runtime has made again since (the same container and interface).
    for (const t of starting ? this.tombstones() : []) {
      const a = this.attachments().find((x) => x.name === attachmentPort(t.network, t.containerId, t.ifname));
      if (a && !gone.some((g) => g.name === a.name)) gone.push(a);
    }
    if (gone.length === 0) return;
    for (const g of gone) {
      const running = this.ports.get(g.name)?.dev !== undefined;
      const options = this.desired(g.name)?.port.options as { ifname?: string; netns?: string } | undefined;
      await this.dropPort(g.name);
      // Not running (the daemon is starting): the persistent tap a stopped daemon left is still in
      // a container whose namespace lives on (a DEL while the daemon was down): remove it there.
      if (!running && options?.netns !== undefined && g.owner.netnsId !== undefined) {
        const path = netnsPath(options.netns);
        if (namespaceId(path) === g.owner.netnsId) {
          try {
            deleteLink(path, options.ifname ?? g.name);
          } catch (e) {
            this.log.warn({ port: g.name, error: (e as Error).message }, 'cni: interface left in the container');
          }
        }
      }
      this.log.info({ port: g.name, network: g.owner.network, container: g.owner.containerId, netns: g.owner.netns }, 'cni: container gone; port removed');
      this.releaseAddresses(g.owner);
    }
    await this.syncDerived().catch((e: Error) => this.log.warn({ error: e.message }, 'cni: gateway or masquerade not brought up to date'));
    this.persist();
  }

  /** DELs pier-cni could not deliver (the daemon was down): read once and removed. */
  private tombstones(): Array<{ network: string; containerId: string; ifname: string }> {
    const dir = join(dirname(this.opts.socket), 'cni-del');
    let files: string[];
    try {
      files = readdirSync(dir).filter((f) => f.endsWith('.json'));
    } catch {
      return [];
    }
    const out = [];
    for (const f of files) {
      try {
        const t = cniKeyRequest.safeParse(JSON.parse(readFileSync(join(dir, f), 'utf8')));
        if (t.success) out.push(t.data);
      } catch { /* unreadable: dropped below */ }
      try { unlinkSync(join(dir, f)); } catch { /* gone */ }
    }
    return out;
  }

  /** Run the attachment's IPAM plugin's DEL, as the plugin would have. Best effort, logged. */
  private releaseAddresses(owner: CniOwner): void {
    const ipam = owner.ipam;
    const type = (ipam?.conf.ipam as { type?: unknown } | undefined)?.type;
    if (!ipam || typeof type !== 'string' || type.includes('/')) return;
    const bin = ipam.cniPath.split(':').map((d) => join(d, type)).find((p) => existsSync(p));
    if (!bin) {
      this.log.warn({ container: owner.containerId, ipam: type, cniPath: ipam.cniPath },
        'cni: addresses not released: the IPAM plugin is not in the CNI_PATH its ADD had (a daemon in a container needs the runtime\'s CNI bin directory mounted at the same path)');
      return;
    }
    const child = execFile(bin, [], {
      timeout: 10_000,
      env: { ...process.env, CNI_COMMAND: 'DEL', CNI_CONTAINERID: owner.containerId, CNI_NETNS: '', CNI_IFNAME: owner.ifname, CNI_PATH: ipam.cniPath },
    }, (e, stdout) => {
      if (e) this.log.warn({ container: owner.containerId, ipam: type, error: e.message, reply: stdout.slice(0, 300) }, 'cni: addresses not released');
    });
    child.stdin?.end(JSON.stringify(ipam.conf));
  }

  /** The last syncDerived failed: the 5 s retry runs it again until it succeeds. */
  private derivedStale = false;

  /** Bring the gateway ports and the masquerade table to what the attachments need (both, even if one fails). */
  private async syncDerived(): Promise<void> {
    let failed: Error | undefined;
    try {
      await this.syncGateways();
    } catch (e) {
      failed = e as Error;
    }
    try {
      this.syncMasquerade();
    } catch (e) {
      failed ??= e as Error;
    }
    this.derivedStale = failed !== undefined;
    if (failed !== undefined) throw failed;
  }

  private async syncGateways(): Promise<void> {
    const want = new Map<string, { ip: Set<string>; mtu: number | undefined }>();
    for (const a of this.attachments()) {
      if (a.owner.gateways.length === 0) continue;
      const w = want.get(a.bridge) ?? { ip: new Set<string>(), mtu: undefined };
      for (const g of a.owner.gateways) w.ip.add(g);
      const mtu = (a.port.options as { mtu?: number }).mtu;
      if (mtu !== undefined) w.mtu = Math.max(w.mtu ?? 0, mtu);
      want.set(a.bridge, w);
    }
    let forwarding = false;
    for (const [br, b] of Object.entries(this.state.bridges)) {
      const name = gatewayPort(br);
      const cur = this.desired(name);
      const w = want.get(br);
      if (cur && cur.port.owner?.kind !== 'cni-gateway') {
        if (w) throw new PierError('EEXIST', `port ${name} exists and is not pier-cni's gateway of bridge ${br}`, `remove or rename port ${name}, or turn isGateway off`);
        continue;
      }
      if (!w) {
        if (cur) await this.dropPort(name);
        continue;
      }
      const ip = [...w.ip].sort();
      forwarding = true;
      const next = validatePortOptions({ type: 'tap', ip, ...(w.mtu ? { mtu: w.mtu } : {}), ...(cur ? { mac: (cur.port.options as { mac?: string }).mac } : {}) });
      const o = this.controlOf('tap').prepare(name, next, this.others(name));
      if (cur && JSON.stringify(cur.port.options) === JSON.stringify(o)) continue;
      const before = b.ports[name];
      await this.apply(name, () => {
        b.ports[name] = { options: o, owner: { kind: 'cni-gateway', bridge: br } };
        return () => { if (before) b.ports[name] = before; else delete b.ports[name]; };
      });
      this.log.info({ port: name, bridge: br, ip }, 'cni: gateway port up to date');
    }
    if (forwarding) enableForwarding(want);
  }

  /** The last ruleset written (undefined: none yet since the daemon started, so the first sync writes). */
  private masquerade: string | undefined;
  /** The state this daemon started from had masquerading attachments: the table is its own. */
  private masqueradeOwned = false;

  private syncMasquerade(): void {
    const rules = new Map<string, { network: string; subnet: string }>();
    for (const a of this.attachments()) for (const subnet of a.owner.masquerade) rules.set(`${a.owner.network}\0${subnet}`, { network: a.owner.network, subnet });
    const text = masqueradeRuleset([...rules.values()].sort((x, y) => (x.network + x.subnet).localeCompare(y.network + y.subnet)));
    if (text === this.masquerade) return;
    // No rules, none written by this daemon since it started and none by the run before it (its
    // state had no masquerading attachment): the table is not touched. It is host-wide, so another
    // pier on the host (a second daemon with its own state dir) may be using it. A daemon whose
    // last masquerading attachment went while it was down (reaped at start) removes it.
    if (rules.size === 0 && this.masquerade === undefined && !this.masqueradeOwned) return;
    try {
      execFileSync('nft', ['-f', '-'], { input: text, stdio: ['pipe', 'ignore', 'pipe'], encoding: 'utf8' });
    } catch (e) {
      const err = e as { stderr?: string; code?: string; message: string };
      if (err.code === 'ENOENT' && rules.size === 0) {
        // No nft, no rules wanted: there is no table to remove either (not retried every 5 s).
        this.masqueradeOwned = false;
        return;
      }
      if (err.code === 'ENOENT') throw new PierError('ENONFT', 'ipMasq needs nftables, and the nft command is missing', 'install it (apt-get install nftables) or set "ipMasq": false');
      throw new PierError('ENFT', `cannot write the masquerade rules: ${(err.stderr || err.message).trim()}`, 'check that this kernel has nf_tables with NAT (modprobe nft_masq)');
    }
    this.masquerade = text;
    this.log.info({ rules: rules.size }, 'cni: masquerade rules written');
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
      owner: ownerView(this.desired(rt.name)?.port.owner),
      // The dataplane thread it runs on (docs/design/threads.md), with more than one; absent while it is not running.
      thread: this.dataplanes.count > 1 ? this.dataplanes.threadOf(rt.index) : undefined,
      security: securityView(o),
    };
  }

  /** describePort plus what the dataplane knows (a vhost-user peer's negotiated features, ...). */
  private async detail(rt: PortRuntime, kernel = false): Promise<Record<string, unknown>> {
    const d = this.describePort(rt);
    if (rt.dev) {
      const live = await this.dataplanes.describe(rt.index).catch(() => null);
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
    // `dataplane`: the threads' figures summed (its shape predates threads); with more than one
    // thread, each thread's and the links between them beside it.
    const { total, threads, links } = await this.dataplanes.stats();
    const dataplane = this.dataplanes.count > 1 ? { ...total, threads, links } : total;
    return { version: VERSION, pid: process.pid, stateDir: this.opts.stateDir, socket: this.opts.socket, dataplane, bridges };
  }

  /**
   * One sample for `pier top`: every port's counters and type, the pool and the dataplane thread's
   * CPU time, all read from shared memory and /proc (the dataplane thread is not asked).
   */
  private topSample(): unknown {
    const gs = this.dataplanes.gauges;
    const sum = (f: (g: Float64Array) => number): number => gs.reduce((s, g) => s + f(g), 0);
    return {
      time: Date.now(),
      dataplane: { cpuSeconds: sum((g) => threadCpuSeconds(g[GAUGE_TID]!)), poolSize: sum((g) => g[GAUGE_POOL_SIZE]!), poolAvailable: sum((g) => g[GAUGE_POOL_AVAILABLE]!), threads: gs.length },
      ports: this.metricsPorts().map((p) => ({ port: p.name, bridge: p.bridge, type: p.type, up: p.up, counters: readCounters(p.counters) })),
    };
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
    const { entries } = await this.dataplanes.fdb(id);
    const byIndex = new Map([...this.ports.values()].map((p) => [p.index, p.name]));
    return entries.map((e) => ({ mac: e.mac, vlan: e.vlan, port: byIndex.get(e.port) ?? this.nameOf(e.port), age: e.age, ...(e.static ? { static: true } : {}) }));
  }

  /** Learned addresses and the limit of each port of a bridge (pier fdb's summary). */
  private async fdbPorts(br: string): Promise<unknown> {
    const id = this.bridgeIds.get(br);
    if (id === undefined) throw err.noBridge(br);
    const { ports, full, moves, evicted } = await this.dataplanes.fdb(id);
    const byIndex = new Map([...this.ports.values()].map((p) => [p.index, p.name]));
    return { ports: ports.map((p) => ({ port: byIndex.get(p.port) ?? this.nameOf(p.port), learned: p.learned, limit: p.limit })), moves, full, evicted, size: this.opts.fdbSize ?? DEFAULT_FDB_SIZE };
  }
}

/** `events AFTER`: a sequence number the client saw last. */
function eventSeq(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new PierError('EINVAL', `events: ${v} is not an event number`, 'pass the seq of the last event seen, or nothing for all');
  return n;
}

/**
 * PIER_CONTROL_DEADLINE_MS shortens the control socket's client deadline (default 10 s); for
 * tests only, which would otherwise wait that long to see a stale client closed.
 */
function deadlineFromEnv(): number | undefined {
  const v = Number(process.env.PIER_CONTROL_DEADLINE_MS);
  return Number.isInteger(v) && v > 0 ? v : undefined;
}

/** A host that is the containers' gateway forwards for them (as the reference bridge plugin does for isGateway). */
function enableForwarding(want: Map<string, { ip: Set<string> }>): void {
  const v6 = [...want.values()].some((w) => [...w.ip].some((a) => a.includes(':')));
  const set = (key: string): void => {
    try {
      // Read first: in a pod /proc/sys is read-only, and a node that forwards already is fine.
      if (readFileSync(`/proc/sys/${key.replaceAll('.', '/')}`, 'utf8').trim() !== '1') setSysctl(key, 1);
    } catch (e) {
      throw new PierError('ESYSCTL', `cannot turn on forwarding (${key}): ${(e as Error).message}`, `set ${key}=1 on the host (sysctl -w ${key}=1), or run the daemon with /proc/sys writable`);
    }
  };
  set('net.ipv4.ip_forward');
  if (v6) set('net.ipv6.conf.all.forwarding');
}

/** Who made a port, for show: the attachment without its IPAM config. */
function ownerView(o: StoredPort['owner']): Record<string, unknown> | undefined {
  if (!o) return undefined;
  if (o.kind === 'cni-gateway') return o;
  return { kind: o.kind, network: o.network, containerId: o.containerId, ifname: o.ifname, netns: o.netns };
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

/** A port's security as `pier show` gives it: on or off, what it may send from, its limits. */
function securityView(o: Record<string, unknown>): Record<string, unknown> | undefined {
  if (typeof o.type !== 'string') return undefined;
  try {
    const s = securityOf(o as unknown as Parameters<typeof securityOf>[0]);
    return { portSecurity: s.secured ? 'on' : 'off', ...(s.secured ? { macs: s.secured.macs, addresses: s.secured.addresses } : {}), macLimit: s.macLimit, stormLimit: s.stormLimit };
  } catch (e) {
    return { portSecurity: 'on', error: (e as Error).message };
  }
}

/** Two dataplane specs that are the same but for busyPoll (a vhost-user port's busy-poll=). */
function onlyBusyPollDiffers(a: unknown, b: unknown): boolean {
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return false;
  const x = a as { busyPoll?: unknown };
  const y = b as { busyPoll?: unknown };
  if (typeof x.busyPoll !== 'boolean' || typeof y.busyPoll !== 'boolean' || x.busyPoll === y.busyPoll) return false;
  return JSON.stringify({ ...x, busyPoll: false }) === JSON.stringify({ ...y, busyPoll: false });
}
