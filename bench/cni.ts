// CNI ADD and DEL latency per container: pier-cni beside the reference `bridge` plugin
// (containernetworking-plugins, host-local IPAM, the same subnet size, isGateway and ipMasq on),
// invoked directly as a runtime does (CNI_* environment, config on stdin), each container in a
// fresh network namespace made beforehand and not timed; 50 sequential and batches of 20
// concurrent, alternating the plugins; `node -e 0` measured in the same run, so pier-cni's own
// work (its total minus Node's start) can be set against the reference; the parts of pier-cni's
// ADD timed alone (VERSION: Node and the plugin's modules; host-local; the daemon's request).
// Method and results: bench/cni.md. Usage (root, after npm run build):
//   node --import tsx bench/cni.ts [--seq 50] [--concurrent 20] [--rounds 3]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { machine, median, option } from './common.ts';
import { checkBuild, must, ROOT, sh, TestDaemon } from '../test/helpers.ts';
import { CNI_PLUGINS, PIER_CNI } from '../test/cni-rootfs.ts';

const SEQ = option('--seq', 50);
const CONC = option('--concurrent', 20);
const ROUNDS = option('--rounds', 3);
const WARMUP = 3;
const TARGET = 1.5;
const NODE = process.execPath;
const CA = 'NODE_EXTRA_CA_CERTS';
const tag = `${process.pid % 10000}`;

type Verb = 'ADD' | 'DEL';
interface Plugin { name: string; path: string; conf: Record<string, unknown>; dataDir: string; network: string }

function ipam(subnet: string, gateway: string, dataDir: string): Record<string, unknown> {
  return { type: 'host-local', ranges: [[{ subnet, gateway }]], routes: [{ dst: '0.0.0.0/0' }], dataDir };
}

const d = new TestDaemon();
const PIER: Plugin = {
  name: 'pier-cni', path: PIER_CNI, network: 'pier-bench', dataDir: join(d.dir, 'ipam-pier'),
  conf: {
    cniVersion: '1.0.0', name: 'pier-bench', type: 'pier-cni', bridge: `pb${tag}`, socket: d.socket, isGateway: true, ipMasq: true,
    ipam: ipam('10.199.0.0/24', '10.199.0.1', join(d.dir, 'ipam-pier')),
  },
};
const REF: Plugin = {
  name: 'bridge', path: join(CNI_PLUGINS, 'bridge'), network: 'ref-bench', dataDir: join(d.dir, 'ipam-ref'),
  conf: {
    cniVersion: '1.0.0', name: 'ref-bench', type: 'bridge', bridge: `rb${tag}`, isGateway: true, ipMasq: true,
    ipam: ipam('10.199.1.0/24', '10.199.1.1', join(d.dir, 'ipam-ref')),
  },
};
const PLUGINS = [PIER, REF];
// host-local alone, and the daemon's request alone: the parts of pier-cni's ADD and DEL.
const HOST_LOCAL_CONF = { cniVersion: '1.0.0', name: 'hl-bench', ipam: ipam('10.199.3.0/24', '10.199.3.1', join(d.dir, 'ipam-hl')) };
const DIRECT = { network: 'direct-bench', bridge: `pd${tag}`, subnet: '10.199.2' };
const directKey = (i: number): { network: string; containerId: string; ifname: string } => ({ network: DIRECT.network, containerId: `direct-${i}`, ifname: 'eth0' });
const HOST_LOCAL = join(CNI_PLUGINS, 'host-local');

/**
 * Node's start as pier-cni pays it: `node -e 0` with the environment pier-cni gives Node (it drops
 * NODE_EXTRA_CA_CERTS, whose bundle Node 20 would parse at every start, as bin/pier does).
 */
function nodeAsPluginStarts(): { cmd: string; args: string[]; env: NodeJS.ProcessEnv; label: string } {
  const drops = new RegExp(`unset ${CA}|-u ${CA}`).test(readFileSync(PIER_CNI, 'utf8'));
  const env = { ...process.env };
  if (drops) delete env[CA];
  return { cmd: NODE, args: ['-e', '0'], env, label: drops ? `node -e 0, no ${CA} (as pier-cni starts node)` : 'node -e 0 (as pier-cni starts node)' };
}

let nsCount = 0;
/** Namespaces made and not yet deleted: the finally deletes them whatever happened. */
// A namespace whose container is done stays until the end of the run (deleted in the finally
// below, with the rest): the kernel tears a deleted namespace down in a worker that holds the
// RTNL lock, and whatever rtnetlink call was timed next waited for it (the daemon's cni-del alone
// measured 42 ms after one, more than pier-cni's whole DEL without Node's start).
const nsLeft = new Set<string>();
function netnsAdd(): string {
  const name = `cb${tag}x${nsCount++}`;
  must('ip', ['netns', 'add', name]);
  nsLeft.add(name);
  return name;
}
function netnsDel(name: string): void {
  sh('ip', ['netns', 'del', name]);
  nsLeft.delete(name);
}

interface Result { ms: number; code: number; stdout: string; stderr: string }

function envFor(verb: string, containerId: string, netns: string): NodeJS.ProcessEnv {
  return { ...process.env, CNI_COMMAND: verb, CNI_CONTAINERID: containerId, CNI_NETNS: `/var/run/netns/${netns}`, CNI_IFNAME: 'eth0', CNI_PATH: CNI_PLUGINS };
}

function timedSync(cmd: string, args: string[], env: NodeJS.ProcessEnv, input?: string): Result {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { env, input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { ms, code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** The same with spawn(): for concurrent runs, timed from spawn to the child's close (exit and its output read). */
function timedAsync(cmd: string, args: string[], env: NodeJS.ProcessEnv, input: string): Promise<Result> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const p = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    p.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    p.on('close', (code) => resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, code: code ?? -1, stdout, stderr }));
    p.stdin.end(input);
  });
}

function check(p: Plugin | string, verb: string, id: string, r: Result): Result {
  const name = typeof p === 'string' ? p : p.name;
  if (r.code !== 0) throw new Error(`${name} ${verb} ${id} failed (exit ${r.code}): ${r.stdout}${r.stderr}`);
  if (verb === 'ADD') {
    const j = JSON.parse(r.stdout);
    if (!Array.isArray(j.ips) || j.ips.length === 0) throw new Error(`${name} ADD ${id}: no address in the result: ${r.stdout}`);
  }
  return r;
}

/** One request on the control socket, as pier-cni sends it; resolves with the time to the reply. */
function daemonRequest(cmd: string, arg: unknown): Promise<number> {
  const line = JSON.stringify({ cmd, args: [JSON.stringify(arg)] }) + '\n';
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const s = createConnection(d.socket);
    let buf = '';
    s.setEncoding('utf8');
    s.once('connect', () => s.write(line));
    s.on('data', (x: string) => {
      buf += x;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      s.destroy();
      const r = JSON.parse(buf.slice(0, nl));
      if (r.ok) resolve(ms);
      else reject(new Error(`daemon ${cmd} refused: ${JSON.stringify(r.error)}`));
    });
    s.once('error', reject);
  });
}

const seq: Record<string, number[]> = {};
const conc: Record<string, number[]> = {};
const batches: Array<{ case: string; round: number; wallMs: number }> = [];
const push = (into: Record<string, number[]>, k: string, v: number): void => void (into[k] ??= []).push(v);
const round1 = (x: number): number => +x.toFixed(1);

checkBuild();
if (!existsSync(PIER_CNI)) throw new Error(`${PIER_CNI} is missing`);
const nodeStart = nodeAsPluginStarts();
const natBefore = sh('nft', ['list', 'table', 'ip', 'nat']).code === 0;
const loadBefore = loadavg().map((x) => +x.toFixed(2));
try {
  await d.start();

  // Warm-up (discarded): page cache, the daemon's first bridge and gateway, host-local's directories.
  for (let i = 0; i < WARMUP; i++) {
    for (const p of PLUGINS) {
      const ns = netnsAdd();
      const id = `warm-${p.name}-${i}`;
      check(p, 'ADD', id, timedSync(p.path, [], envFor('ADD', id, ns), JSON.stringify(p.conf)));
      check(p, 'DEL', id, timedSync(p.path, [], envFor('DEL', id, ns), JSON.stringify(p.conf)));
    }
  }

  // Sequential: container i of each plugin, the plugin going first alternating; every ADD, then every DEL.
  const made: Array<Record<string, { id: string; ns: string }>> = [];
  for (let i = 0; i < SEQ; i++) {
    const order = i % 2 ? [REF, PIER] : [PIER, REF];
    const row: Record<string, { id: string; ns: string }> = {};
    for (const p of order) {
      const ns = netnsAdd();
      const id = `seq-${p.name}-${i}`;
      push(seq, `${p.name} ADD`, check(p, 'ADD', id, timedSync(p.path, [], envFor('ADD', id, ns), JSON.stringify(p.conf))).ms);
      row[p.name] = { id, ns };
    }
    made.push(row);
    // Beside them: Node's start, VERSION of each plugin, and pier-cni's parts alone.
    push(seq, 'node -e 0', timedSync(NODE, ['-e', '0'], process.env).ms);
    push(seq, nodeStart.label, timedSync(nodeStart.cmd, nodeStart.args, nodeStart.env).ms);
    for (const p of PLUGINS) push(seq, `${p.name} VERSION`, check(p, 'VERSION', '', timedSync(p.path, [], { ...process.env, CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: '1.0.0' }))).ms);
    // The parts alone follow the same pattern (attachments pile up over the ADDs, DELs after).
    const ns = netnsAdd();
    push(seq, 'host-local ADD', check('host-local', 'ADD', `hl-${i}`, timedSync(HOST_LOCAL, [], envFor('ADD', `hl-${i}`, ns), JSON.stringify(HOST_LOCAL_CONF))).ms);
    push(seq, 'daemon cni-add', await daemonRequest('cni-add', {
      ...directKey(i), netns: `/var/run/netns/${ns}`, bridge: DIRECT.bridge, portType: 'tap', isGateway: true, ipMasq: true,
      ips: [{ address: `${DIRECT.subnet}.${i + 2}/24`, gateway: `${DIRECT.subnet}.1` }], routes: [{ dst: '0.0.0.0/0' }],
    }));
    row.parts = { id: `hl-${i}`, ns };
  }
  for (let i = 0; i < SEQ; i++) {
    const order = i % 2 ? [REF, PIER] : [PIER, REF];
    for (const p of order) {
      const { id, ns } = made[i]![p.name]!;
      push(seq, `${p.name} DEL`, check(p, 'DEL', id, timedSync(p.path, [], envFor('DEL', id, ns), JSON.stringify(p.conf))).ms);
    }
    const { id, ns } = made[i]!.parts!;
    push(seq, 'daemon cni-del', await daemonRequest('cni-del', directKey(i)));
    push(seq, 'host-local DEL', check('host-local', 'DEL', id, timedSync(HOST_LOCAL, [], envFor('DEL', id, ns), JSON.stringify(HOST_LOCAL_CONF))).ms);
  }
  console.error(`sequential: ${SEQ} containers per plugin done`);

  // Concurrent: batches of CONC started at once, per plugin; node -e 0 in a batch of its own too.
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 ? [REF, PIER] : [PIER, REF];
    const sets: Record<string, Array<{ id: string; ns: string }>> = {};
    for (const p of order) {
      sets[p.name] = Array.from({ length: CONC }, (_, i) => ({ id: `conc-${p.name}-${r}-${i}`, ns: netnsAdd() }));
    }
    const batch = async (runs: Array<() => Promise<Result>>, into: string): Promise<void> => {
      const t0 = process.hrtime.bigint();
      const rs = await Promise.all(runs.map((f) => f()));
      batches.push({ case: into, round: r, wallMs: round1(Number(process.hrtime.bigint() - t0) / 1e6) });
      for (const x of rs) push(conc, into, x.ms);
    };
    for (const verb of ['ADD', 'DEL'] as Verb[]) {
      for (const p of order) {
        await batch(sets[p.name]!.map((s) => async () => check(p, verb, s.id, await timedAsync(p.path, [], envFor(verb, s.id, s.ns), JSON.stringify(p.conf)))), `${p.name} ${verb}`);
      }
    }
    await batch(Array.from({ length: CONC }, () => () => timedAsync(nodeStart.cmd, nodeStart.args, nodeStart.env, '')), nodeStart.label);
    console.error(`concurrent: round ${r + 1}/${ROUNDS} done`);
  }

  // Nothing left behind: no CNI port in pier, no address held in either IPAM directory.
  const show = d.json('show');
  const cniPorts = JSON.stringify(show).match(/"kind":"cni"/g)?.length ?? 0;
  if (cniPorts) throw new Error(`pier still has ${cniPorts} CNI ports after every DEL: ${JSON.stringify(show).slice(0, 2000)}`);
  for (const p of [...PLUGINS, { dataDir: join(d.dir, 'ipam-hl'), network: 'hl-bench' }]) {
    const dir = join(p.dataDir, p.network);
    const held = existsSync(dir) ? readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)) : [];
    if (held.length) throw new Error(`${p.network}: addresses still held after every DEL: ${held.join(' ')}`);
  }
} finally {
  for (const ns of [...nsLeft]) netnsDel(ns);
  await d.cleanup();
  // The reference plugin leaves its bridge (and, when it made it, iptables' nat table) behind.
  sh('ip', ['link', 'del', String(REF.conf.bridge)]);
  if (!natBefore && sh('iptables', ['-t', 'nat', '-S']).stdout.split('\n').every((l) => l === '' || l.startsWith('-P '))) sh('nft', ['delete', 'table', 'ip', 'nat']);
}

function p90(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.ceil(0.9 * s.length) - 1]!;
}
const stats = (xs: number[]): { median: number; p90: number; n: number; samples: number[] } => ({ median: round1(median(xs)), p90: round1(p90(xs)), n: xs.length, samples: xs.map(round1) });
const summarize = (of: Record<string, number[]>): Record<string, ReturnType<typeof stats>> => Object.fromEntries(Object.entries(of).map(([k, v]) => [k, stats(v)]));
const S = summarize(seq);
const C = summarize(conc);

function split(of: Record<string, ReturnType<typeof stats>>, verb: Verb): Record<string, number> {
  const node = of[nodeStart.label]!.median;
  const pier = of[`pier-cni ${verb}`]!.median;
  const ref = of[`bridge ${verb}`]!.median;
  const own = pier - node;
  return {
    [`${nodeStart.label} (median)`]: node, 'pier-cni total': pier, 'pier-cni own work (total - node start)': round1(own),
    'bridge total': ref, 'own work / bridge': +(own / ref).toFixed(2), 'total / bridge': +(pier / ref).toFixed(2),
  };
}
/** Where pier-cni's sequential time goes: the parts timed alone, and what is left (the plugin's own glue). */
function parts(verb: Verb): Record<string, number> {
  const node = S[nodeStart.label]!.median;
  const modules = S['pier-cni VERSION']!.median - node;
  const ipam = S[`host-local ${verb}`]!.median;
  const daemon = S[verb === 'ADD' ? 'daemon cni-add' : 'daemon cni-del']!.median;
  const total = S[`pier-cni ${verb}`]!.median;
  return {
    'Node start': node, 'loading pier-cni (VERSION - Node start)': round1(modules), [`host-local ${verb} alone`]: ipam,
    [`the daemon's request alone`]: daemon, 'the rest (total - the parts: the sh wrapper, parsing, spawning IPAM, the socket, exit)': round1(total - node - modules - ipam - daemon), total,
  };
}
const split2 = { ADD: parts('ADD'), DEL: parts('DEL') };
const splits = {
  'sequential ADD': split(S, 'ADD'), 'sequential DEL': split(S, 'DEL'),
  'concurrent ADD': split(C, 'ADD'), 'concurrent DEL': split(C, 'DEL'),
};
const out = {
  benchmark: 'CNI ADD/DEL latency per container: pier-cni beside the reference bridge plugin (host-local, /24, isGateway, ipMasq), direct invocation',
  date: new Date().toISOString(),
  machine: machine(),
  // The machine is shared: its load averages (1, 5, 15 min) when the run started and ended.
  load: { before: loadBefore, after: loadavg().map((x) => +x.toFixed(2)) },
  config: { sequential: SEQ, concurrent: CONC, concurrentRounds: ROUNDS, warmup: WARMUP, cniVersion: '1.0.0', nodeStart: nodeStart.label },
  env: { [CA]: process.env[CA] ?? null },
  plugins: { 'pier-cni': PIER.conf, bridge: REF.conf },
  sequential: S,
  concurrent: C,
  concurrentBatches: batches,
  split: splits,
  parts: split2,
  target: { 'own work / bridge': TARGET, met: Object.fromEntries(Object.entries(splits).map(([k, v]) => [k, v['own work / bridge']! <= TARGET])) },
};
writeFileSync(join(ROOT, 'bench', 'results', 'cni.json'), JSON.stringify(out, null, 2) + '\n');

const table = (of: Record<string, ReturnType<typeof stats>>): string[] =>
  ['| | median ms | p90 ms | n |', '|---|---|---|---|', ...Object.entries(of).map(([k, v]) => `| ${k} | ${v.median} | ${v.p90} | ${v.n} |`)];
const splitTable = ['| | ' + Object.keys(splits['sequential ADD']).join(' | ') + ' |', '|---|' + Object.keys(splits['sequential ADD']).map(() => '---').join('|') + '|',
  ...Object.entries(splits).map(([k, v]) => `| ${k} | ${Object.values(v).join(' | ')} |`)];
const md = [
  `# CNI ADD/DEL latency: pier-cni and the reference bridge plugin (${out.date.slice(0, 10)})`,
  '',
  `${out.machine.cpus} cores, ${out.machine.cpu}, kernel ${out.machine.kernel}, Node ${out.machine.node}; ${SEQ} sequential containers per plugin, ${ROUNDS} batches of ${CONC} concurrent, after ${WARMUP} warm-up containers; load average ${out.load.before[0]} at the start, ${out.load.after[0]} at the end; ${CA}=${process.env[CA] ?? '(not set)'}. Method: [../cni.md](../cni.md).`,
  '',
  'The split (medians, ms; own work = pier-cni total - Node\'s start, target own work / bridge <= 1.5):',
  '',
  ...splitTable,
  '',
  'Where pier-cni\'s sequential time goes (medians, ms; each part timed alone in the same run: Node\'s start with the environment pier-cni gives it, pier-cni VERSION for Node and its modules, host-local run directly, the daemon\'s cni-add/cni-del sent on the socket directly):',
  '',
  '| | ' + Object.keys(split2.ADD).map((k) => k.replace(/ADD|DEL/, 'ADD/DEL')).join(' | ') + ' |',
  '|---|' + Object.keys(split2.ADD).map(() => '---').join('|') + '|',
  ...Object.entries(split2).map(([k, v]) => `| ${k} | ${Object.values(v).join(' | ')} |`),
  '',
  'Sequential (each a new process, spawn to exit):',
  '',
  ...table(S),
  '',
  `Concurrent (${CONC} started at once, spawn to close):`,
  '',
  ...table(C),
  '',
  'Each concurrent batch, first spawn to last close (ms), by round:',
  '',
  '| | ' + Array.from({ length: ROUNDS }, (_, r) => `round ${r + 1}`).join(' | ') + ' |',
  '|---|' + Array.from({ length: ROUNDS }, () => '---').join('|') + '|',
  ...[...new Set(batches.map((b) => b.case))].map((k) => `| ${k} | ${batches.filter((b) => b.case === k).map((b) => b.wallMs).join(' | ')} |`),
  '',
].join('\n');
writeFileSync(join(ROOT, 'bench', 'results', 'cni.md'), md);
process.stdout.write(md);
