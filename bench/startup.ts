// Cold start of the CLI: `pier --version` and `pier show` against a running daemon, each run a
// new process, before (the TypeScript sources through tsx) and after (the build in dist/), beside
// `ip link show` and `node -e 0`, interleaved in the same run; where `pier show`'s time goes
// (Node's own clock inside the process); what each runtime dependency costs to import.
// Method: bench/startup.md. Usage (root, after npm run build): node --import tsx bench/startup.ts [--runs N]
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { machine, median, option } from './common.ts';
import { checkBuild, delNetns, makeNetns, PIER, ROOT, TestDaemon } from '../test/helpers.ts';

const RUNS = option('--runs', 20);
const WARMUP = 2;
const TARGET_MS = 120;
const NODE = process.execPath;
const CA = 'NODE_EXTRA_CA_CERTS';
const dist = (p: string): string => pathToFileURL(join(ROOT, 'dist', p)).href;

/** 'wall': spawn to exit. 'marks': pier show with Node's clock read inside. 'import': one import, timed inside. */
interface Case { name: string; kind: 'wall' | 'marks' | 'import'; cmd: string; args: string[]; noCa?: boolean; expect?: string }
const wall = (name: string, cmd: string, args: string[], more: Partial<Case> = {}): Case => ({ name, kind: 'wall', cmd, args, ...more });
const imp = (name: string, ...specifiers: string[]): Case => ({
  name, kind: 'import', cmd: NODE,
  args: ['--input-type=module', '-e', `const t = performance.now(); ${specifiers.map((s) => `await import(${JSON.stringify(s)});`).join(' ')} process.stdout.write(String(performance.now() - t));`],
});

const CASES: Case[] = [
  wall('node -e 0', NODE, ['-e', '0']),
  wall('ip link show', 'ip', ['link', 'show']),
  wall('before: pier --version', NODE, ['--import', 'tsx', 'src/cli/main.ts', '--version']),
  wall('before: pier show', NODE, ['--import', 'tsx', 'src/cli/main.ts', 'show'], { expect: 'Bridge br0' }),
  wall('after: pier --version', PIER, ['--version']),
  wall('after: pier show', PIER, ['show'], { expect: 'Bridge br0' }),
];
// This machine's environment names a CA bundle for Node; Node 20 parses it with its own root
// certificates at every start, TLS or not. Measured beside, so the rest can be read without it.
if (process.env[CA]) {
  CASES.push(wall(`node -e 0, no ${CA}`, NODE, ['-e', '0'], { noCa: true }));
  CASES.push(wall(`after: pier show, no ${CA}`, PIER, ['show'], { noCa: true, expect: 'Bridge br0' }));
}
CASES.push(
  // Without the CA variable, as bin/pier runs itself (its shebang drops it: pier makes no TLS connection).
  { name: 'pier show, marked', kind: 'marks', cmd: NODE, args: [], expect: 'Bridge br0', noCa: true }, // args set below
  imp('import: dist/daemon/defaults.js (three constants: what any first import() costs)', dist('daemon/defaults.js')),
  imp('import: the CLI (dist/cli/main.js\'s imports)', 'commander', dist('daemon/defaults.js'), dist('daemon/errors.js'), dist('cli/client.js'), dist('cli/format.js')),
  imp('import: the port-kind registry (dist/ports/registry.js: the kinds and their renderers; schemas and halves load lazily)', dist('ports/registry.js')),
  imp('import: commander', 'commander'),
  imp('import: zod', 'zod'),
  imp('import: koffi', 'koffi'),
  imp('import: the daemon log (dist/daemon/log.js)', dist('daemon/log.js')),
  imp('import: the daemon (dist/daemon/daemon.js and all it loads)', dist('daemon/daemon.js')),
);

// A module that moved since this was written is left out, not a failed run.
for (const c of CASES.filter((c) => c.kind === 'import' && c.args[2]!.match(/file:\/\/[^"]+/g)?.some((u) => !existsSync(new URL(u))))) {
  console.error(`startup: ${c.name}: a module is missing from dist/, left out`);
  CASES.splice(CASES.indexOf(c), 1);
}

// Read inside the `pier show` process: Node's milestones (ms since the process's time origin),
// the moment the CLI opens its connection (diagnostics channel net.client.socket: every module
// loaded, the command line parsed) and the exit event.
const MARKS = `
import dc from 'node:diagnostics_channel';
const t = {};
dc.subscribe('net.client.socket', () => { t.connect ??= performance.now(); });
process.on('exit', () => {
  const n = performance.nodeTiming;
  Object.assign(t, { v8Start: n.v8Start, bootstrap: n.bootstrapComplete, exit: performance.now() });
  process.stderr.write('PIER-MARKS ' + JSON.stringify(t) + '\\n');
});`;
type Marks = { v8Start: number; bootstrap: number; connect: number; exit: number };
const PHASES = {
  'exec, dynamic linking, process exit, spawn (outside Node\'s clock: wall - exit event)': (m: Marks, w: number) => w - m.exit,
  ['Node before V8 starts (bin/pier drops NODE_EXTRA_CA_CERTS, whose bundle Node would parse here)']: (m: Marks) => m.v8Start,
  'Node bootstrap (V8 start to bootstrap complete)': (m: Marks) => m.bootstrap - m.v8Start,
  'loading the CLI\'s modules and parsing the command line (bootstrap to connect)': (m: Marks) => m.connect - m.bootstrap,
  'the request, the answer and its output (connect to exit)': (m: Marks) => m.exit - m.connect,
};

function run(c: Case, env: NodeJS.ProcessEnv): number | { wall: number; marks: Marks } {
  const e = { ...env };
  if (c.noCa) delete e[CA];
  const t0 = performance.now();
  const r = spawnSync(c.cmd, c.args, { cwd: ROOT, env: e, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const ms = performance.now() - t0;
  if (r.status !== 0 || (c.expect && !r.stdout.includes(c.expect))) throw new Error(`${c.name} failed (${r.status}): ${r.stderr}${r.stdout}`);
  if (c.kind === 'import') return Number(r.stdout);
  if (c.kind === 'marks') {
    const m = /^PIER-MARKS (.*)$/m.exec(r.stderr);
    if (!m) throw new Error(`no marks from ${c.name}: ${r.stderr}`);
    return { wall: ms, marks: JSON.parse(m[1]!) as Marks };
  }
  return ms;
}

function p90(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.ceil(0.9 * s.length) - 1]!;
}
const round = (x: number): number => +x.toFixed(1);

checkBuild(); // "after" is dist/: it must be the build of these sources
const d = new TestDaemon();
const [ns] = makeNetns(1) as [string];
const samples: Record<string, number[]> = Object.fromEntries(CASES.map((c) => [c.name, []]));
const phases: Record<string, number[]> = Object.fromEntries(Object.keys(PHASES).map((k) => [k, []]));
try {
  await d.start();
  const marks = join(d.dir, 'marks.mjs');
  writeFileSync(marks, MARKS);
  CASES.find((c) => c.kind === 'marks')!.args = ['--import', pathToFileURL(marks).href, PIER, 'show'];
  d.ok('add-br', 'br0');
  d.ok('add-port', 'br0', 'c1', 'type=tap', `netns=${ns}`, 'ip=10.81.0.1/24', 'ifname=eth0');
  d.ok('add-port', 'br0', 'c2', 'type=tap', `netns=${ns}`, 'ip=10.81.0.2/24', 'ifname=eth1');
  const env = { ...process.env, PIER_SOCKET: d.socket };
  // Interleaved: every round runs each case once, so drift on the machine hits all alike.
  for (let r = 0; r < WARMUP + RUNS; r++) {
    for (const c of CASES) {
      const x = run(c, env);
      if (r < WARMUP) continue;
      if (typeof x === 'number') samples[c.name]!.push(x);
      else {
        samples[c.name]!.push(x.wall);
        for (const [k, f] of Object.entries(PHASES)) phases[k]!.push(f(x.marks, x.wall));
      }
    }
    console.error(`round ${r + 1}/${WARMUP + RUNS}${r < WARMUP ? ' (warm-up)' : ''}`);
  }
} finally {
  await d.cleanup();
  delNetns([ns]);
}

const stats = (xs: number[]): { median: number; p90: number; samples: number[] } => ({ median: round(median(xs)), p90: round(p90(xs)), samples: xs.map(round) });
const summary = Object.fromEntries(CASES.map((c) => [c.name, stats(samples[c.name]!)]));
const split = Object.fromEntries(Object.keys(PHASES).map((k) => [k, stats(phases[k]!)]));
const m = (name: string): number => summary[name]!.median;
const show = m('after: pier show');
const out = {
  benchmark: 'CLI cold start: pier --version and pier show against a running daemon (new process each run)',
  date: new Date().toISOString(),
  machine: machine(),
  runs: RUNS,
  warmup: WARMUP,
  env: { [CA]: process.env[CA] ?? null },
  summary,
  split,
  target: { 'pier show ms': TARGET_MS, met: show < TARGET_MS },
  ratios: {
    'before/after pier show': +(m('before: pier show') / show).toFixed(2),
    'pier show / ip link show': +(show / m('ip link show')).toFixed(1),
  },
};
writeFileSync(join(ROOT, 'bench', 'results', 'startup.json'), JSON.stringify(out, null, 2) + '\n');
const table = (names: string[], of: Record<string, { median: number; p90: number }>): string[] =>
  ['| | median ms | p90 ms |', '|---|---|---|', ...names.map((n) => `| ${n} | ${of[n]!.median} | ${of[n]!.p90} |`)];
const md = [
  `# CLI startup: pier --version and pier show, before and after the build (${out.date.slice(0, 10)})`,
  '',
  `${out.machine.cpus} cores, ${out.machine.cpu}, kernel ${out.machine.kernel}, Node ${out.machine.node}; ${RUNS} runs of each case after ${WARMUP} warm-up rounds, interleaved, each a new process. ${CA}=${process.env[CA] ?? '(not set)'}. Method: [../startup.md](../startup.md).`,
  '',
  'Wall time, spawn to exit. "before": `node --import tsx src/cli/main.ts` (the sources, compiled by tsx on the fly); "after": `bin/pier` running `dist/`.',
  '',
  ...table(CASES.filter((c) => c.kind === 'wall').map((c) => c.name), summary),
  '',
  `**pier show: ${show} ms (target ${TARGET_MS} ms: ${show < TARGET_MS ? 'met' : 'not met'}); ${out.ratios['before/after pier show']}x faster than before; ${out.ratios['pier show / ip link show']}x ip link show.**`,
  '',
  `Where \`pier show\` (after) spends its time, read inside the process (median of each part; wall time of these runs: ${m('pier show, marked')} ms):`,
  '',
  ...table(Object.keys(PHASES), split),
  '',
  'What importing costs, timed inside a fresh process (`await import(...)`):',
  '',
  ...table(CASES.filter((c) => c.kind === 'import').map((c) => c.name), summary),
  '',
].join('\n');
writeFileSync(join(ROOT, 'bench', 'results', 'startup.md'), md);
process.stdout.write(md);
