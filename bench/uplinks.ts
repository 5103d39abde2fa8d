// Container to container across two "hosts" (issue 11): pier over an AF_PACKET uplink, an AF_XDP
// uplink and a VXLAN tunnel, beside the Linux bridge with the wire enslaved and Linux vxlan +
// bridge, and beside Open vSwitch's userspace datapath on the same kinds of port, in the same run,
// both directions. Method: bench/uplinks.md.
// Usage (root, after npm run build): node --import tsx bench/uplinks.ts [--rounds N] [--seconds T]
//   [--paths pier-afpacket,linux-bridge] (a subset, for experiments: results are then printed, not written)
//   [--afxdp-mode native|generic] (the AF_XDP ports' XDP mode; default auto)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { machine, median, option, threadCpu } from './common.ts';
import { iperf, ROOT, TestDaemon, waitFor } from '../test/helpers.ts';

const ROUNDS = option('--rounds', 3);
const T = option('--seconds', 6);
/** --afxdp-mode native|generic: the pier-afxdp ports' mode= (default: the port's own auto). */
const AFXDP_MODE = process.argv.includes('--afxdp-mode') ? process.argv[process.argv.indexOf('--afxdp-mode') + 1] : undefined;

type Dir = 'a->b' | 'b->a';
type Path = 'linux-bridge' | 'linux-vxlan' | 'pier-afpacket' | 'pier-afxdp' | 'pier-vxlan' | 'pier-vxlan-rco' | 'ovs-afpacket' | 'ovs-afxdp' | 'ovs-vxlan';
type OvsPath = 'ovs-afpacket' | 'ovs-afxdp' | 'ovs-vxlan';
interface Sample { gbps: number; retransmits: number; cpu?: number }
/** Median ping round trip per path and round, ms (50 pings 10 ms apart, before the iperf3 runs). */
const rtts: Partial<Record<Path, number[]>> = {};

function pingRtt(): number {
  const out = run('ip', ['netns', 'exec', C.a, 'ping', '-c', '50', '-i', '0.01', '-q', INNER.b]);
  const m = /= [\d.]+\/([\d.]+)\//.exec(out);
  if (!m) throw new Error(`ping: no rtt line in ${out}`);
  return Number(m[1]);
}
const results: Partial<Record<Path, Record<Dir, Sample[]>>> = {};
const unavailable: Partial<Record<Path, string>> = {};

const tag = `ub${process.pid % 10000}`;
const H = { a: `${tag}ha`, b: `${tag}hb` };
const C = { a: `${tag}ca`, b: `${tag}cb` };
const INNER = { a: '10.61.0.1', b: '10.61.0.2' };
const UNDER = { a: '192.0.2.1', b: '192.0.2.2' };
/** A 1500-byte wire less VXLAN over IPv4's 50 bytes: the containers' MTU on both tunnel paths. */
const VXLAN_INNER_MTU = 1450;

function run(cmd: string, args: string[], allowFail = false): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0 && !allowFail) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}
const ipn = (ns: string, ...args: string[]): string => run('ip', ['-n', ns, ...args]);

/** Two hosts joined by a wire (veth wa <-> wb), and a container namespace on each. */
function topology(): void {
  teardown();
  for (const ns of [H.a, H.b, C.a, C.b]) run('ip', ['netns', 'add', ns]);
  run('ip', ['link', 'add', 'wa', 'netns', H.a, 'type', 'veth', 'peer', 'name', 'wb', 'netns', H.b]);
  for (const s of ['a', 'b'] as const) {
    ipn(H[s], 'link', 'set', 'lo', 'up');
    ipn(H[s], 'link', 'set', `w${s}`, 'up');
    ipn(C[s], 'link', 'set', 'lo', 'up');
  }
}

function teardown(): void {
  for (const ns of [H.a, H.b, C.a, C.b]) run('ip', ['netns', 'del', ns], true);
}

/** A container's end of a veth into its host, addressed (the Linux paths). */
function linuxContainer(s: 'a' | 'b', br: string, mtu: number): void {
  run('ip', ['link', 'add', `v${s}`, 'netns', H[s], 'type', 'veth', 'peer', 'name', 'eth0', 'netns', C[s]]);
  ipn(H[s], 'link', 'set', `v${s}`, 'master', br, 'mtu', String(mtu), 'up');
  ipn(C[s], 'link', 'set', 'eth0', 'mtu', String(mtu));
  ipn(C[s], 'addr', 'add', `${INNER[s]}/24`, 'dev', 'eth0');
  ipn(C[s], 'link', 'set', 'eth0', 'up');
}

function linux(path: 'linux-bridge' | 'linux-vxlan'): void {
  for (const s of ['a', 'b'] as const) {
    const o = s === 'a' ? 'b' : 'a';
    ipn(H[s], 'link', 'add', 'br0', 'type', 'bridge');
    ipn(H[s], 'link', 'set', 'br0', 'up');
    if (path === 'linux-bridge') {
      ipn(H[s], 'link', 'set', `w${s}`, 'master', 'br0');
    } else {
      ipn(H[s], 'addr', 'add', `${UNDER[s]}/24`, 'dev', `w${s}`);
      ipn(H[s], 'link', 'add', 'vx42', 'type', 'vxlan', 'id', '42', 'dstport', '4789', 'local', UNDER[s], 'remote', UNDER[o]);
      ipn(H[s], 'link', 'set', 'vx42', 'master', 'br0', 'up');
    }
    linuxContainer(s, 'br0', path === 'linux-vxlan' ? VXLAN_INNER_MTU : 1500);
  }
}

/** Both hosts' pier with the uplink of `path`, each daemon pushed onto `ds` as it starts (so a failure still cleans it up). */
async function pier(path: 'pier-afpacket' | 'pier-afxdp' | 'pier-vxlan' | 'pier-vxlan-rco', ds: TestDaemon[]): Promise<void> {
  const vxlan = path.startsWith('pier-vxlan');
  for (const s of ['a', 'b'] as const) {
    const d = new TestDaemon(H[s]);
    ds.push(d);
    await d.start();
    const o = s === 'a' ? 'b' : 'a';
    d.ok('add-br', 'br0');
    if (vxlan) {
      ipn(H[s], 'addr', 'add', `${UNDER[s]}/24`, 'dev', `w${s}`);
      d.ok('add-port', 'br0', 'up0', 'type=vxlan', 'vni=42', `remote=${UNDER[o]}`, `local=${UNDER[s]}`, ...(path === 'pier-vxlan-rco' ? ['rco=on'] : []));
    } else {
      d.ok('add-port', 'br0', 'up0', `type=${path.slice(5)}`, `dev=w${s}`, ...(path === 'pier-afxdp' && AFXDP_MODE ? [`mode=${AFXDP_MODE}`] : []));
    }
    d.ok('add-port', 'br0', 'c', 'type=tap', `netns=${C[s]}`, `ip=${INNER[s]}/24`, 'ifname=eth0', ...(vxlan ? [`mtu=${VXLAN_INNER_MTU}`] : []));
  }
}

/**
 * Open vSwitch's userspace datapath (`datapath_type=netdev`, the plain ovs-vswitchd: no DPDK, no
 * PMD thread; its ports are served by the main thread as events come, as pier's are) on each
 * host, with the uplink of `path`: the wire as a `system` port (AF_PACKET), as an
 * `afxdp-nonpmd` port, or under OVS's own userspace VXLAN (the wire on bridge `brphy`, whose
 * internal port holds the underlay address; the tunnel and the container on `brint`). Containers
 * are on veths, the way OVS attaches them. OVS 3.1 takes TSO super-frames only on the
 * AF_PACKET path (`userspace-tso-enable`, which it cannot segment for an AF_XDP port or a tunnel),
 * so on the other two the containers' veths send MTU-sized frames with their checksums done.
 */
function ovs(path: OvsPath): void {
  for (const s of ['a', 'b'] as const) {
    const o = s === 'a' ? 'b' : 'a';
    const dir = mkdtempSync(join(tmpdir(), `${tag}ovs${s}`));
    ovsDirs.push(dir);
    const db = `unix:${dir}/db.sock`;
    run('ovsdb-tool', ['create', join(dir, 'conf.db'), '/usr/share/openvswitch/vswitch.ovsschema']);
    run('ip', ['netns', 'exec', H[s], 'ovsdb-server', join(dir, 'conf.db'), `--remote=p${db}`, `--pidfile=${dir}/ovsdb-server.pid`, `--unixctl=${dir}/ovsdb-server.ctl`, `--log-file=${dir}/ovsdb-server.log`, '--detach']);
    const vsctl = (...args: string[]): string => run('ovs-vsctl', [`--db=${db}`, '--timeout=20', ...args]);
    vsctl('--no-wait', 'init');
    vsctl('--no-wait', 'set', 'Open_vSwitch', '.', `other_config:userspace-tso-enable=${path === 'ovs-afpacket'}`);
    run('ip', ['netns', 'exec', H[s], 'env', `OVS_RUNDIR=${dir}`, 'ovs-vswitchd', db, `--pidfile=${dir}/ovs-vswitchd.pid`, `--unixctl=${dir}/ovs-vswitchd.ctl`, `--log-file=${dir}/ovs-vswitchd.log`, '--detach']);
    const mtu = path === 'ovs-vxlan' ? VXLAN_INNER_MTU : 1500;
    run('ip', ['link', 'add', `v${s}`, 'netns', H[s], 'type', 'veth', 'peer', 'name', 'eth0', 'netns', C[s]]);
    ipn(H[s], 'link', 'set', `v${s}`, 'mtu', String(mtu), 'up');
    ipn(C[s], 'link', 'set', 'eth0', 'mtu', String(mtu));
    ipn(C[s], 'addr', 'add', `${INNER[s]}/24`, 'dev', 'eth0');
    ipn(C[s], 'link', 'set', 'eth0', 'up');
    if (path !== 'ovs-afpacket') {
      run('ip', ['netns', 'exec', C[s], 'ethtool', '-K', 'eth0', 'tso', 'off', 'gso', 'off', 'tx', 'off']);
      run('ip', ['netns', 'exec', H[s], 'ethtool', '-K', `v${s}`, 'tso', 'off', 'gso', 'off', 'tx', 'off', 'gro', 'off']);
    }
    if (path === 'ovs-vxlan') {
      vsctl('add-br', 'brphy', '--', 'set', 'bridge', 'brphy', 'datapath_type=netdev', '--', 'add-port', 'brphy', `w${s}`);
      ipn(H[s], 'addr', 'add', `${UNDER[s]}/24`, 'dev', 'brphy');
      ipn(H[s], 'link', 'set', 'brphy', 'up');
      vsctl('add-br', 'brint', '--', 'set', 'bridge', 'brint', 'datapath_type=netdev', '--', 'add-port', 'brint', `v${s}`,
        '--', 'add-port', 'brint', 'vx42', '--', 'set', 'interface', 'vx42', 'type=vxlan', `options:remote_ip=${UNDER[o]}`, 'options:key=42');
    } else {
      vsctl('add-br', 'br0', '--', 'set', 'bridge', 'br0', 'datapath_type=netdev', '--', 'add-port', 'br0', `v${s}`, '--', 'add-port', 'br0', `w${s}`,
        ...(path === 'ovs-afxdp' ? ['--', 'set', 'interface', `w${s}`, 'type=afxdp-nonpmd'] : []));
    }
  }
}

/** The OVS instances of the path being measured (their rundirs). */
const ovsDirs: string[] = [];

function ovsStop(): void {
  for (const dir of ovsDirs.splice(0)) {
    for (const d of ['ovs-vswitchd', 'ovsdb-server']) {
      try {
        process.kill(ovsPid(dir, d), 'SIGTERM');
      } catch { /* not started, or gone */ }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The pid an OVS daemon wrote into its rundir. */
const ovsPid = (dir: string, daemon: string): number => Number(readFileSync(join(dir, `${daemon}.pid`), 'utf8').trim());

/** The main thread of host a's ovs-vswitchd, where its ports are served. */
function ovsMainThread(): { pid: number; tid: number } {
  const pid = ovsPid(ovsDirs[0]!, 'ovs-vswitchd');
  return { pid, tid: pid };
}

function record(path: Path, dir: Dir, s: Sample): void {
  const r = (results[path] ??= { 'a->b': [], 'b->a': [] });
  r[dir].push(s);
  console.error(`${path.padEnd(14)} ${dir} ${s.gbps.toFixed(2)} Gbit/s, ${s.retransmits} retransmits${s.cpu !== undefined ? `  switch thread CPU (host a) ${(s.cpu * 100).toFixed(0)}%` : ''}`);
}

/** One path's ping and iperf3 runs; `thread` is the switch thread timed on host a (none for Linux). */
async function measure(path: Path, thread?: { pid: number; tid: number }): Promise<void> {
  await waitFor(() => spawnSync('ip', ['netns', 'exec', C.a, 'ping', '-c', '1', '-W', '1', INNER.b]).status === 0, 20_000, `${path}: ${INNER.a} to reach ${INNER.b}`);
  const rtt = pingRtt();
  (rtts[path] ??= []).push(rtt);
  console.error(`${path.padEnd(14)} ping rtt avg ${rtt} ms`);
  for (const dir of ['a->b', 'b->a'] as Dir[]) {
    const c0 = thread ? threadCpu(thread.pid, thread.tid) ?? 0 : 0;
    const t0 = performance.now();
    const r = await iperf(C.b, C.a, INNER.b, { reverse: dir === 'b->a', seconds: T });
    const wall = (performance.now() - t0) / 1000;
    record(path, dir, { gbps: r.gbps, retransmits: r.retransmits, ...(thread ? { cpu: ((threadCpu(thread.pid, thread.tid) ?? c0) - c0) / wall } : {}) });
  }
}

async function onePath(path: Path): Promise<void> {
  if (unavailable[path]) return;
  topology();
  const ds: TestDaemon[] = [];
  try {
    if (path === 'linux-bridge' || path === 'linux-vxlan') linux(path);
    else if (path.startsWith('ovs-')) {
      const missing = ['ovs-vswitchd', 'ethtool'].filter((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0);
      if (missing.length > 0) {
        unavailable[path] = `${missing.join(' and ')} not installed (apt-get install openvswitch-switch ethtool)`;
        console.error(`${path}: not measured: ${unavailable[path]}`);
        return;
      }
      ovs(path as OvsPath);
      await measure(path, ovsMainThread());
      return;
    } else {
      try {
        await pier(path as Exclude<Path, OvsPath | `linux-${string}`>, ds);
      } catch (e) {
        // A port kind this checkout does not have yet: reported, not measured.
        if (/unknown port type/.test((e as Error).message)) {
          unavailable[path] = (e as Error).message.split('\n')[0]!;
          console.error(`${path}: not measured: ${unavailable[path]}`);
          return;
        }
        throw e;
      }
    }
    const show = ds[0]?.json('show');
    await measure(path, show ? { pid: show.pid, tid: show.dataplane.tid } : undefined);
  } finally {
    for (const d of ds) await d.cleanup();
    ovsStop();
    teardown();
  }
}

const ALL_PATHS: Path[] = ['linux-bridge', 'pier-afpacket', 'ovs-afpacket', 'pier-afxdp', 'ovs-afxdp', 'linux-vxlan', 'pier-vxlan', 'pier-vxlan-rco', 'ovs-vxlan'];
const pathsArg = process.argv.indexOf('--paths');
const PATHS: Path[] = pathsArg < 0 ? ALL_PATHS : process.argv[pathsArg + 1]!.split(',').map((p) => {
  if (!ALL_PATHS.includes(p as Path)) throw new Error(`--paths: unknown path ${p} (known: ${ALL_PATHS.join(', ')})`);
  return p as Path;
});
const WRITE = PATHS.length === ALL_PATHS.length;
for (let r = 0; r < ROUNDS; r++) {
  console.error(`-- round ${r + 1}/${ROUNDS}`);
  // Alternate the order each round so no path always runs on a cold (or warm) machine.
  for (const p of r % 2 ? [...PATHS].reverse() : PATHS) await onePath(p);
}

const summary: Partial<Record<Path, Record<Dir, { gbps: number; cpu?: number; samples: number[] }> & { rttMs: number; rttSamples: number[] }>> = {};
for (const [path, dirs] of Object.entries(results) as Array<[Path, Record<Dir, Sample[]>]>) {
  const s = {} as Record<Dir, { gbps: number; cpu?: number; samples: number[] }>;
  for (const dir of ['a->b', 'b->a'] as Dir[]) {
    const xs = dirs[dir];
    const cpu = xs.every((x) => x.cpu !== undefined) ? median(xs.map((x) => x.cpu!)) : undefined;
    s[dir] = { gbps: +median(xs.map((x) => x.gbps)).toFixed(2), ...(cpu !== undefined ? { cpu: +cpu.toFixed(2) } : {}), samples: xs.map((x) => x.gbps) };
  }
  const rs = rtts[path] ?? [];
  summary[path] = { ...s, rttMs: +median(rs).toFixed(3), rttSamples: rs };
}
const REF: Array<[Path, Path]> = [
  ['pier-afpacket', 'linux-bridge'], ['pier-afxdp', 'linux-bridge'], ['pier-vxlan', 'linux-vxlan'], ['pier-vxlan-rco', 'linux-vxlan'],
  ['pier-afpacket', 'ovs-afpacket'], ['pier-afxdp', 'ovs-afxdp'], ['pier-vxlan', 'ovs-vxlan'], ['pier-vxlan-rco', 'ovs-vxlan'],
];
const ratios: Record<string, Record<string, number>> = {};
for (const [p, ref] of REF) {
  const a = summary[p];
  const b = summary[ref];
  if (!a || !b) continue;
  ratios[`${p}/${ref}`] = {
    'a->b': +(a['a->b'].gbps / b['a->b'].gbps).toFixed(2),
    'b->a': +(a['b->a'].gbps / b['b->a'].gbps).toFixed(2),
    'direction balance (b->a / a->b)': +(a['b->a'].gbps / a['a->b'].gbps).toFixed(2),
  };
}
const out = { benchmark: 'container to container across two hosts (iperf3, one TCP stream)', date: new Date().toISOString(), machine: machine(), rounds: ROUNDS, secondsPerRun: T, summary, ratios, unavailable };
if (WRITE) writeFileSync(join(ROOT, 'bench', 'results', 'uplinks.json'), JSON.stringify(out, null, 2) + '\n');
const md = [
  `# Across two hosts: pier uplinks and tunnels vs Linux and OVS userspace (${out.date.slice(0, 10)})`,
  '',
  `${out.machine.cpus} cores, ${out.machine.cpu}, kernel ${out.machine.kernel}, Node ${out.machine.node}; median of ${ROUNDS} rounds of ${T} s, one iperf3 TCP stream. Method: [../uplinks.md](../uplinks.md).`,
  '',
  '| path | a->b Gbit/s | b->a Gbit/s | switch thread CPU, host a (a->b / b->a) | ping RTT a->b, ms |',
  '|---|---|---|---|---|',
  ...Object.entries(summary).map(([p, s]) => `| ${p} | ${s['a->b'].gbps} | ${s['b->a'].gbps} | ${s['a->b'].cpu !== undefined ? `${Math.round(s['a->b'].cpu * 100)}% / ${Math.round(s['b->a'].cpu! * 100)}%` : '-'} | ${s.rttMs} |`),
  '',
  ...Object.entries(ratios).map(([k, v]) => `- ${k}: a->b **${v['a->b']}x**, b->a **${v['b->a']}x**, direction balance ${v['direction balance (b->a / a->b)']}`),
  ...Object.entries(unavailable).map(([p, why]) => `- ${p}: not measured (${why})`),
  '',
].join('\n');
if (WRITE) writeFileSync(join(ROOT, 'bench', 'results', 'uplinks.md'), md);
process.stdout.write(md);
