// Two "hosts" for the uplink tests: two network namespaces, each running its own pier daemon (its
// own --socket and --state-dir, started inside the host's namespace with `ip netns exec`, so a
// port's default namespace is the host's), joined by a veth pair as the wire (`wire0` on both
// sides), each with a bridge br0 and "containers" (namespaces) on tap ports of its pier. IPv6 is
// off on the hosts, so the wire carries what the containers send and nothing else. Nothing leaves
// the machine. cleanup() removes daemons, namespaces and the wire whatever failed.
import { delNetns, makeNetns, must, TestDaemon, waitFor } from './helpers.ts';

/** A pier daemon running inside the namespace of its host (TestDaemon with a namespace). */
export class HostDaemon extends TestDaemon {
  declare readonly ns: string;
  constructor(ns: string) {
    super(ns);
  }
}

export interface Host {
  /** 'a' or 'b'. */
  name: string;
  /** The host's namespace: its pier runs here, and its end of the wire is here. */
  ns: string;
  pier: HostDaemon;
  /** Container namespaces on tap ports of this host's pier, in the order they were made. */
  containers: string[];
}

export const WIRE = 'wire0';

export class TwoHosts {
  a!: Host;
  b!: Host;
  private readonly namespaces: string[] = [];
  private readonly daemons: HostDaemon[] = [];

  /** Make both hosts: namespaces, the wire, a daemon each, bridge br0 on each. */
  async setup(opts: { wireMtu?: number; daemonArgs?: string[] } = {}): Promise<this> {
    const [na, nb] = this.netns(2) as [string, string];
    for (const ns of [na, nb]) {
      must('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
      must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    this.a = { name: 'a', ns: na, pier: new HostDaemon(na), containers: [] };
    this.b = { name: 'b', ns: nb, pier: new HostDaemon(nb), containers: [] };
    this.makeWire(opts.wireMtu);
    for (const h of [this.a, this.b]) {
      this.daemons.push(h.pier);
      await h.pier.start(opts.daemonArgs);
      h.pier.ok('add-br', 'br0');
    }
    return this;
  }

  /** `n` fresh namespaces that cleanup() removes (for devices and stations beside the hosts). */
  netns(n: number): string[] {
    const names = makeNetns(n);
    this.namespaces.push(...names);
    return names;
  }

  /** The veth pair between the hosts, `wire0` on each side, up. */
  makeWire(mtu = 1500): void {
    must('ip', ['link', 'add', 'name', WIRE, 'netns', this.a.ns, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', WIRE, 'netns', this.b.ns, 'mtu', String(mtu)]);
    must('ip', ['-n', this.a.ns, 'link', 'set', WIRE, 'up']);
    must('ip', ['-n', this.b.ns, 'link', 'set', WIRE, 'up']);
  }

  /** Delete the wire (both ends go with it). */
  deleteWire(): void {
    must('ip', ['-n', this.a.ns, 'link', 'del', WIRE]);
  }

  /**
   * A container on `host`: a namespace with a tap port of the host's pier on br0 (eth0 inside,
   * address `cidr`, MTU 1500 unless said). Returns the namespace.
   */
  container(host: Host, port: string, cidr: string, extra: string[] = []): string {
    const [ns] = this.netns(1) as [string];
    host.pier.ok('add-port', 'br0', port, 'type=tap', `netns=${ns}`, `ip=${cidr}`, 'ifname=eth0', ...extra);
    host.containers.push(ns);
    return ns;
  }

  /** The device's promiscuity counter (`ip -d link`: 0 when nobody asked for promiscuous mode). */
  promiscuity(host: Host, dev = WIRE): number {
    const j = JSON.parse(must('ip', ['-n', host.ns, '-d', '-j', 'link', 'show', 'dev', dev])) as Array<{ promiscuity: number }>;
    return j[0]!.promiscuity;
  }

  /** A port's state as its host's pier shows it ('up', 'error'), or undefined when there is no such port. */
  portState(host: Host, port: string): string | undefined {
    const r = host.pier.pier('show', port, '--json');
    if (r.code !== 0) return undefined;
    return (JSON.parse(r.stdout) as { port: { state: string } }).port.state;
  }

  async waitPortState(host: Host, port: string, state: string, timeoutMs = 15_000): Promise<void> {
    await waitFor(() => this.portState(host, port) === state, timeoutMs, () => `port ${port} on host ${host.name} to be ${state} (it is ${this.portState(host, port)})`, 100);
  }

  async cleanup(): Promise<void> {
    for (const d of this.daemons) await d.cleanup().catch(() => {});
    // The wire lives in the hosts' namespaces and goes with them.
    delNetns(this.namespaces);
  }
}
