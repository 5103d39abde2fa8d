// One CNI network across two nodes, as root: each "node" is a namespace with its own pier daemon,
// the nodes joined by a veth wire; on each, the admin puts a vxlan port on the CNI network's
// bridge, and pier-cni attaches pods as a runtime would (env, config on stdin). The network is one
// subnet whose IPAM ranges and gateways differ per node, so pods on both nodes are one layer 2
// segment: they reach each other directly across the tunnel, and each its own node's gateway.
// Ports pier-cni made are secured by default, and stay so across the tunnel.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { iperf, NEEDS, nsExec, ping, pingUntil, requires, ROOT } from './helpers.ts';
import { Lab, portCounters, wire, type HostDaemon } from './vxlan-hosts.ts';

const PIER_CNI = join(ROOT, 'bin', 'pier-cni');
const CNI_DIR = '/usr/lib/cni';
const NETWORK = 'span';
const SUBNET = '10.89.0.0/16';
/** Each node's share of the subnet, and its gateway. */
const NODE = {
  a: { range: ['10.89.1.10', '10.89.1.200'], gateway: '10.89.1.1', underlay: '192.0.2.1' },
  b: { range: ['10.89.2.10', '10.89.2.200'], gateway: '10.89.2.1', underlay: '192.0.2.2' },
} as const;

const cniPlugins = { name: 'host-local', missing: () => (spawnSync('test', ['-x', join(CNI_DIR, 'host-local')]).status === 0 ? undefined : `${CNI_DIR}/host-local is missing: apt-get install containernetworking-plugins`) };

describe('pier-cni: one network across two nodes over VXLAN (root)', requires(NEEDS.tun, NEEDS.iperf3, cniPlugins), () => {
  const lab = new Lab();
  const ipamDir = mkdtempSync(join(tmpdir(), 'pier-cni-span-'));
  const d: Record<'a' | 'b', HostDaemon> = {} as Record<'a' | 'b', HostDaemon>;
  const pod: Record<'a' | 'b', { ns: string; ip: string; mac: string }> = {} as Record<'a' | 'b', { ns: string; ip: string; mac: string }>;

  /** The network's config on node `n`: its share of the subnet and its gateway, MTU for the tunnel. */
  const conf = (n: 'a' | 'b'): string => JSON.stringify({
    cniVersion: '1.1.0', name: NETWORK, type: 'pier-cni', socket: d[n].socket, bridge: 'cni0', isGateway: true, mtu: 1450,
    ipam: { type: 'host-local', dataDir: join(ipamDir, n), ranges: [[{ subnet: SUBNET, rangeStart: NODE[n].range[0], rangeEnd: NODE[n].range[1], gateway: NODE[n].gateway }]] },
  });

  /** pier-cni `verb` for a pod in `netns` on node `n`, as a runtime runs it; its JSON result. */
  const cni = (verb: 'ADD' | 'DEL' | 'CHECK', n: 'a' | 'b', netns: string, prev?: unknown): any => {
    const c = prev === undefined ? conf(n) : JSON.stringify({ ...JSON.parse(conf(n)), prevResult: prev });
    const r = spawnSync(PIER_CNI, [], {
      input: c, encoding: 'utf8',
      env: { PATH: process.env.PATH, CNI_COMMAND: verb, CNI_CONTAINERID: `span-${n}`, CNI_NETNS: `/var/run/netns/${netns}`, CNI_IFNAME: 'eth0', CNI_PATH: CNI_DIR },
    });
    assert.equal(r.status, 0, `${verb} on node ${n}: ${r.stdout} ${r.stderr}`);
    return r.stdout.trim() === '' ? undefined : JSON.parse(r.stdout);
  };
  const results: Record<string, unknown> = {};

  before(async () => {
    const [ha, hb, ca, cb] = lab.netns(4) as [string, string, string, string];
    wire(ha, 'wire0', `${NODE.a.underlay}/24`, hb, 'wire0', `${NODE.b.underlay}/24`);
    d.a = await lab.daemon(ha);
    d.b = await lab.daemon(hb);
    for (const [n, ns] of [['a', ca], ['b', cb]] as const) {
      // The admin's part: the network's bridge, and the tunnel to the other node on it.
      d[n].ok('add-br', 'cni0');
      const other = n === 'a' ? NODE.b : NODE.a;
      d[n].ok('add-port', 'cni0', 'vx0', 'type=vxlan', 'vni=89', `remote=${other.underlay}`, `local=${NODE[n].underlay}`, 'rco=on');
      // The runtime's part.
      const res = cni('ADD', n, ns);
      results[n] = res;
      const ip = String(res.ips[0].address).split('/')[0]!;
      pod[n] = { ns, ip, mac: String(res.interfaces.find((i: { sandbox?: string }) => i.sandbox)!.mac) };
    }
  });

  after(async () => {
    for (const n of ['a', 'b'] as const) if (pod[n]) spawnSync(PIER_CNI, [], { input: conf(n), env: { PATH: process.env.PATH, CNI_COMMAND: 'DEL', CNI_CONTAINERID: `span-${n}`, CNI_NETNS: `/var/run/netns/${pod[n].ns}`, CNI_IFNAME: 'eth0', CNI_PATH: CNI_DIR } });
    await lab.cleanup();
    rmSync(ipamDir, { recursive: true, force: true });
  });

  it('each node hands out its own share of the subnet, with its own gateway', () => {
    assert.match(pod.a.ip, /^10\.89\.1\./);
    assert.match(pod.b.ip, /^10\.89\.2\./);
    assert.match(nsExec(pod.a.ns, 'ip', ['route', 'show', 'default']).stdout, /via 10\.89\.1\.1/);
    assert.match(nsExec(pod.b.ns, 'ip', ['route', 'show', 'default']).stdout, /via 10\.89\.2\.1/);
  });

  it('a pod reaches the pod on the other node directly (one layer 2 segment), both ways, at the tunnel\'s MTU', async () => {
    await pingUntil(pod.a.ns, pod.b.ip);
    assert.equal(ping(pod.b.ns, pod.a.ip).code, 0);
    const edge = ping(pod.a.ns, pod.b.ip, ['-M', 'do', '-s', String(1450 - 28), '-c', '2']);
    assert.equal(edge.code, 0, edge.stdout + edge.stderr);
    // On-link: the neighbour is the pod itself, not a gateway.
    assert.match(nsExec(pod.a.ns, 'ip', ['neigh', 'show', pod.b.ip]).stdout, new RegExp(pod.b.mac, 'i'));
    assert.ok(portCounters(d.a, 'vx0').tx_packets! > 0 && portCounters(d.b, 'vx0').rx_packets! > 0, 'across the tunnel');
  });

  it('each pod reaches its own node\'s gateway', () => {
    assert.equal(ping(pod.a.ns, NODE.a.gateway).code, 0);
    assert.equal(ping(pod.b.ns, NODE.b.gateway).code, 0);
  });

  it('carries TCP both ways across the nodes (iperf3)', async () => {
    const up = await iperf(pod.b.ns, pod.a.ns, pod.b.ip, { seconds: 2 });
    const down = await iperf(pod.b.ns, pod.a.ns, pod.b.ip, { seconds: 2, reverse: true });
    console.log(`pod a -> pod b ${up.gbps.toFixed(2)} Gbit/s, b -> a ${down.gbps.toFixed(2)} Gbit/s across the tunnel`);
    assert.ok(up.bytes > 10e6 && down.bytes > 10e6, `moved ${up.bytes} / ${down.bytes} bytes`);
    // rco=on both ways: the secured pods' segments crossed with partial checksums, said so.
    for (const n of ['a', 'b'] as const) {
      const x = d[n].json<{ port: { peer: { counters: Record<string, number> } } }>('show', 'vx0').port.peer.counters;
      assert.ok(x.tx_rco! > 1000 && x.rx_rco! > 1000, JSON.stringify(x));
      assert.equal(x.rx_dropped_bad_rco, 0);
    }
  });

  it('the pods\' ports are secured, and CHECK passes on both nodes', () => {
    for (const n of ['a', 'b'] as const) {
      const show = d[n].json<{ bridges: Array<{ name: string; ports: Array<{ name: string; owner?: { kind: string }; security?: { portSecurity: string } }> }> }>('show');
      const port = show.bridges.find((b) => b.name === 'cni0')!.ports.find((p) => p.owner?.kind === 'cni')!;
      assert.equal(port.security?.portSecurity, 'on', JSON.stringify(port));
      cni('CHECK', n, pod[n].ns, results[n]);
    }
  });
});
