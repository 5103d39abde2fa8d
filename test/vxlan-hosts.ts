// "Hosts" for the VXLAN tests: network namespaces, each with its own pier daemon (its own socket and
// state dir, started inside the host's namespace with `ip netns exec`), joined by veth pairs as
// wires with underlay addresses; "containers" are namespaces on the hosts' tap ports. IPv6 is off
// in every namespace so the only frames on a wire are the ones a test sends (no ND, no MLD), and
// wire counters can be compared. Nothing leaves the machine.
import { delNetns, makeNetns, must, sh, type TestDaemon } from './helpers.ts';
import { HostDaemon } from './two-hosts.ts';

export { HostDaemon };

/** Namespaces and daemons a test made; cleanup() removes them all, whatever failed. */
export class Lab {
  readonly namespaces: string[] = [];
  readonly daemons: HostDaemon[] = [];

  /** `n` fresh namespaces with IPv6 off and loopback up. */
  netns(n: number): string[] {
    const names = makeNetns(n);
    this.namespaces.push(...names);
    for (const ns of names) {
      must('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
      must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    return names;
  }

  async daemon(ns: string): Promise<HostDaemon> {
    const d = new HostDaemon(ns);
    this.daemons.push(d);
    await d.start();
    return d;
  }

  async cleanup(): Promise<void> {
    for (const d of this.daemons) await d.cleanup().catch(() => {});
    delNetns(this.namespaces);
  }
}

/** A veth wire between two namespaces, each end named, addressed (ADDR/PREFIX) and up. */
export function wire(a: string, ifA: string, addrA: string, b: string, ifB: string, addrB: string, mtu = 1500): void {
  must('ip', ['link', 'add', 'name', ifA, 'netns', a, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', ifB, 'netns', b, 'mtu', String(mtu)]);
  must('ip', ['-n', a, 'addr', 'add', addrA, 'dev', ifA]);
  must('ip', ['-n', b, 'addr', 'add', addrB, 'dev', ifB]);
  must('ip', ['-n', a, 'link', 'set', ifA, 'up']);
  must('ip', ['-n', b, 'link', 'set', ifB, 'up']);
}

/** The kernel's packet counters of a device: what crossed a wire. */
export function linkPackets(ns: string, ifname: string): { rx: number; tx: number } {
  const r = sh('ip', ['-n', ns, '-j', '-s', 'link', 'show', 'dev', ifname]);
  if (r.code !== 0) throw new Error(`ip -n ${ns} -s link show ${ifname}: ${r.stderr}`);
  const s = JSON.parse(r.stdout)[0].stats64;
  return { rx: s.rx.packets, tx: s.tx.packets };
}

/** A pier port's counters (pier stats PORT --json). */
export function portCounters(d: TestDaemon, port: string): Record<string, number> {
  return d.json<Array<{ counters: Record<string, number> }>>('stats', port)[0]!.counters;
}
