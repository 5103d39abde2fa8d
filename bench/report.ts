// The benchmark report (`npm run bench:report`): reads every bench/results/*.json and writes
// docs/benchmarks.md with its plots in docs/benchmarks/*.svg. Each benchmark the report knows has
// a section that reads its own JSON shape; a JSON it does not know, or one whose shape no longer
// matches, gets a generic section listing its summary instead of stopping the report. The
// answers to the thread's two questions are apart, in threadQuestions(), and take every figure
// from the loaded results. Method: bench/report.md.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { barChart, type BarChart } from './plot.ts';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Obj = { [key: string]: Json };

const isObj = (x: Json | undefined): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
const obj = (x: Json | undefined): Obj => (isObj(x) ? x : {});
const arr = (x: Json | undefined): Json[] => (Array.isArray(x) ? x : []);
const num = (x: Json | undefined): number | undefined => (typeof x === 'number' && Number.isFinite(x) ? x : undefined);
const str = (x: Json | undefined): string | undefined => (typeof x === 'string' ? x : undefined);
const unique = <T>(xs: T[]): T[] => [...new Set(xs)];

export interface Result {
  /** The file's name without .json: "vhost-net". */
  name: string;
  data: Obj;
}

export interface Loaded {
  resultsDir: string;
  results: Map<string, Result>;
  /** Files in the results directory that are not a JSON object, and why. */
  unreadable: Array<{ name: string; why: string }>;
}

export interface Report {
  markdown: string;
  /** File name in docs/benchmarks/ -> its SVG. */
  svgs: Map<string, string>;
}

/** A JSON whose shape a section does not read: the section falls back to the generic one. */
class ShapeError extends Error {}

interface Context {
  loaded: Loaded;
  /** Registers a plot and returns the markdown that shows it. */
  plot(file: string, chart: BarChart): string;
  /** A path under bench/, as a link relative to the report. */
  link(pathInBench: string): string;
}

interface Benchmark {
  name: string;
  title: string;
  /** One or two sentences: what the benchmark measures. */
  measures: string;
  render: (r: Result, ctx: Context) => string[];
}

// ---- Small writers ----

function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function table(head: string[], rows: string[][]): string[] {
  return [`| ${head.map(cell).join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`), ''];
}

const fig = (v: number | undefined): string => (v === undefined ? '-' : String(v));
const pct = (v: number | undefined): string => (v === undefined ? '-' : `${Math.round(v * 100)}%`);
const ratio = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined || !b ? undefined : Math.round((a / b) * 100) / 100);
const times = (v: number | undefined): string => (v === undefined ? '-' : `${v.toFixed(2)}x`);
/** CPU nanoseconds per byte moved: a thread's share of a core over Gbit/s (8 bits a byte). */
const nsPerByte = (cpu: number | undefined, gbps: number | undefined): number | undefined => (cpu === undefined || !gbps ? undefined : Math.round((8 * cpu / gbps) * 100) / 100);

function machineOf(d: Obj): string {
  const m = obj(d.machine);
  const parts = [num(m.cpus) !== undefined ? `${num(m.cpus)} cores` : undefined, str(m.cpu), str(m.kernel) && `kernel ${str(m.kernel)}`, str(m.node) && `Node ${str(m.node)}`];
  return parts.filter((p) => p).join(', ') || 'not recorded';
}

function dateOf(d: Obj): string {
  const t = str(d.date);
  return t ? t.replace('T', ' ').replace(/:\d\d(\.\d+)?Z$/, ' UTC') : 'not recorded';
}

function roundsOf(d: Obj): string {
  const rounds = num(d.rounds);
  const s = num(d.secondsPerRun);
  if (rounds !== undefined) return `${rounds} rounds${s !== undefined ? ` of ${s} s` : ''}`;
  if (num(d.runs) !== undefined) return `${num(d.runs)} runs`;
  return s !== undefined ? `${s} s per run` : '-';
}

/** Leaves of a JSON value as (path, text) pairs; `samples` arrays are left out (the JSON has them). */
function flatten(x: Json, path: string, out: Array<[string, string]>): Array<[string, string]> {
  if (Array.isArray(x)) {
    if (x.every((e) => !isObj(e) && !Array.isArray(e))) out.push([path, x.length > 6 ? `${x.length} values` : x.map(String).join(', ')]);
    else x.forEach((e, i) => flatten(e, `${path}[${i}]`, out));
  } else if (isObj(x)) {
    for (const [k, v] of Object.entries(x)) if (k !== 'samples') flatten(v, path ? `${path}.${k}` : k, out);
  } else {
    out.push([path, String(x)]);
  }
  return out;
}

/** Every key path in a JSON value whose last key matches. */
function keysMatching(x: Json, re: RegExp, path = ''): string[] {
  if (Array.isArray(x)) return x.flatMap((e, i) => keysMatching(e, re, `${path}[${i}]`));
  if (!isObj(x)) return [];
  return Object.entries(x).flatMap(([k, v]) => [...(re.test(k) ? [path ? `${path}.${k}` : k] : []), ...keysMatching(v, re, path ? `${path}.${k}` : k)]);
}

/** A "## heading" section of a markdown file, without its heading, or undefined. */
function sectionOf(md: string, heading: string): string | undefined {
  const lines = md.split('\n');
  const start = lines.findIndex((l) => l.replace(/^#+\s*/, '') === heading && l.startsWith('#'));
  if (start < 0) return undefined;
  const end = lines.findIndex((l, i) => i > start && /^#{1,2}\s/.test(l));
  return lines.slice(start + 1, end < 0 ? undefined : end).join('\n').trim();
}

/** The prose after the last table or list of a results .md: a note written under the figures. */
function trailingNote(md: string): string | undefined {
  const lines = md.trimEnd().split('\n');
  let last = -1;
  lines.forEach((l, i) => {
    if (/^\s*(\||- |\* )/.test(l)) last = i;
  });
  const note = lines.slice(last + 1).join('\n').trim();
  return note || undefined;
}

const quote = (text: string): string[] => [...text.split('\n').map((l) => (l ? `> ${l}` : '>')), ''];

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

// ---- vhost-user loop (bench/vhost.ts) ----

function vhostSection(r: Result, ctx: Context): string[] {
  const summary = obj(r.data.summary);
  const modes: string[] = [];
  const sizes: number[] = [];
  for (const key of Object.keys(summary)) {
    const m = /^(.+) (\d+)$/.exec(key);
    if (!m) continue;
    modes.push(m[1]!);
    sizes.push(Number(m[2]));
  }
  if (!modes.length) throw new ShapeError('summary has no "SWITCH BYTES" entry');
  const switches = unique(modes);
  const lens = unique(sizes).sort((a, b) => a - b);
  const ref = switches.includes('testpmd') ? 'testpmd' : undefined;
  const ovs = switches.includes('ovs-dpdk') ? 'ovs-dpdk' : undefined;
  const get = (mode: string, len: number, field: string): number | undefined => num(obj(summary[`${mode} ${len}`])[field]);
  const out: string[] = [];
  out.push(ctx.plot('vhost-mpps.svg', {
    title: `vhost-user loop: Mpps by packet size, pier beside testpmd${ovs ? ' and OVS-DPDK' : ''}`,
    axis: `Mpps circulating (median of ${num(r.data.rounds) ?? '?'} rounds)`,
    groups: lens.map((l) => `${l}-byte packets`),
    series: switches.map((s) => ({ name: s, values: lens.map((l) => get(s, l, 'mpps')) })),
  }), '');
  out.push(...table(
    ['packet bytes', 'switch', 'Mpps (median)', `x ${ref ?? 'reference'}`, ...(ovs ? ['x OVS-DPDK'] : []), 'dataplane CPU', 'pier CPU ns per packet', 'pier CPU ns per byte', 'pier packets per burst / per wake-up'],
    lens.flatMap((l) => switches.filter((s) => summary[`${s} ${l}`] !== undefined).map((s) => {
      const ns = get(s, l, 'nsPerPacket');
      const ppb = get(s, l, 'packetsPerBurst');
      return [String(l), s, fig(get(s, l, 'mpps')), ref ? times(ratio(get(s, l, 'mpps'), get(ref, l, 'mpps'))) : '-',
        ...(ovs ? [times(ratio(get(s, l, 'mpps'), get(ovs, l, 'mpps')))] : []), pct(get(s, l, 'cpu')), fig(ns), ns === undefined ? '-' : (ns / l).toFixed(2),
        ppb === undefined ? '-' : `${fig(ppb)} / ${fig(get(s, l, 'packetsPerWakeup'))}`];
    })),
  ));
  const measured = switches.filter((s) => lens.some((l) => get(s, l, 'nsPerPacket') !== undefined));
  if (measured.length) {
    out.push('CPU per packet: the dataplane thread\'s CPU time over the packets it received in the same interval, a figure that does not depend on how the loop\'s population fared (testpmd polls a whole core and has none).', '');
    out.push(ctx.plot('vhost-cpu-per-packet.svg', {
      title: 'vhost-user loop: pier\'s CPU per packet',
      axis: 'dataplane thread CPU ns per packet received (median)',
      groups: lens.map((l) => `${l}-byte packets`),
      series: measured.map((s) => ({ name: s, values: lens.map((l) => get(s, l, 'nsPerPacket')) })),
      format: (v) => String(Math.round(v)),
    }), '');
  }
  if (![...ctx.loaded.results.values()].some((x) => keysMatching(x.data, /ovs/i).length > 0)) {
    out.push('OVS-DPDK, the switch of the thread, is not a reference of any run yet: no result has an OVS path.', '');
  }
  return out;
}

// ---- One TCP stream each way: throughput.json, uplinks.json ----

/** Each path's references, from the ratios the benchmark wrote ("pier/linux-bridge"), in the order named. */
function referencesOf(d: Obj, paths: string[]): Map<string, string[]> {
  const refs = new Map<string, string[]>();
  for (const key of Object.keys(obj(d.ratios))) {
    const m = /^([^/\s]+)\/([^/\s]+)$/.exec(key);
    if (m && paths.includes(m[1]!) && paths.includes(m[2]!)) refs.set(m[1]!, [...(refs.get(m[1]!) ?? []), m[2]!]);
  }
  return refs;
}

interface Directional { paths: string[]; dirs: string[]; gbps(p: string, d: string): number | undefined; cpu(p: string, d: string): number | undefined }

function directional(d: Obj): Directional {
  const summary = obj(d.summary);
  const paths = Object.keys(summary).filter((p) => isObj(summary[p]));
  const dirs = unique(paths.flatMap((p) => Object.keys(obj(summary[p])).filter((k) => k.includes('->'))));
  if (!paths.length || !dirs.length) throw new ShapeError('summary has no path with a direction (a->b)');
  const at = (p: string, dir: string): Obj => obj(obj(summary[p])[dir]);
  return { paths, dirs, gbps: (p, dir) => num(at(p, dir).gbps), cpu: (p, dir) => num(at(p, dir).cpu) };
}

function directionalSection(r: Result, ctx: Context): string[] {
  const t = directional(r.data);
  const summary = obj(r.data.summary);
  const refs = referencesOf(r.data, t.paths);
  const rtt = t.paths.some((p) => num(obj(summary[p]).rttMs) !== undefined);
  const [d0, d1] = [t.dirs[0]!, t.dirs[1]];
  const out: string[] = [];
  out.push(ctx.plot(`${r.name}-gbps.svg`, {
    title: `${r.name}: Gbit/s by direction, pier beside its references`,
    axis: `Gbit/s, one TCP stream (median of ${num(r.data.rounds) ?? '?'} rounds)`,
    groups: t.paths,
    series: t.dirs.map((dir) => ({ name: dir, values: t.paths.map((p) => t.gbps(p, dir)) })),
  }), '');
  const both = (f: (dir: string) => string): string => t.dirs.map(f).join(' / ');
  out.push(...table(
    ['path', ...t.dirs.map((dir) => `${dir} Gbit/s`), `x reference (${t.dirs.join(' / ')})`, ...(d1 ? [`${d1} / ${d0}`] : []), 'switch thread CPU', 'switch CPU ns per byte', ...(rtt ? ['ping RTT ms'] : [])],
    t.paths.map((p) => {
      const rs = refs.get(p) ?? [];
      const hasCpu = t.dirs.some((dir) => t.cpu(p, dir) !== undefined);
      return [
        p, ...t.dirs.map((dir) => fig(t.gbps(p, dir))),
        rs.length ? rs.map((ref) => `${both((dir) => times(ratio(t.gbps(p, dir), t.gbps(ref, dir))))} (${ref})`).join('; ') : '-',
        ...(d1 ? [times(ratio(t.gbps(p, d1), t.gbps(p, d0)))] : []),
        hasCpu ? both((dir) => pct(t.cpu(p, dir))) : '-',
        hasCpu ? both((dir) => fig(nsPerByte(t.cpu(p, dir), t.gbps(p, dir)))) : '-',
        ...(rtt ? [fig(num(obj(summary[p]).rttMs))] : []),
      ];
    }),
  ));
  const withCpu = t.paths.filter((p) => t.dirs.some((dir) => t.cpu(p, dir) !== undefined));
  if (withCpu.length) {
    out.push('CPU per byte: the share of a core the switch\'s thread used during the stream (pier\'s dataplane thread, or the thread that serves a reference switch\'s ports where the benchmark times one; kernel work inside its system calls included) over the bytes it moved, 8 x CPU / Gbit/s. With TSO a "packet" is a super-frame of up to 64 KiB, so per byte is the figure that compares paths.', '');
    out.push(ctx.plot(`${r.name}-cpu-per-byte.svg`, {
      title: `${r.name}: the switch thread's CPU per byte by direction`,
      axis: 'switch thread CPU ns per byte',
      groups: withCpu,
      series: t.dirs.map((dir) => ({ name: dir, values: withCpu.map((p) => nsPerByte(t.cpu(p, dir), t.gbps(p, dir))) })),
    }), '');
  }
  const unavailable = Object.entries(obj(r.data.unavailable));
  if (unavailable.length) out.push('Not measured in this run:', '', ...unavailable.map(([p, why]) => `- ${p}: ${JSON.stringify(why)}`), '');
  return out;
}

// ---- virtio-user over vhost-net (bench/vhost-net.ts) ----

interface VhostNetRow { mode: string; queueSize?: number; dir: string; gbps?: number; cpu: Obj; row: Obj }

const BRIDGE = 'linux bridge';
const TAP = 'pier tap ports';
const VIRTIO = 'pier virtio-user/vhost-net';
/** One container on a virtio-user port (a), the other on a tap port (b): bench/vhost-net.ts. */
const MIXED = 'pier virtio-user (a) to tap (b)';

function vhostNetRows(d: Obj): VhostNetRow[] {
  const rows = arr(d.rows).filter(isObj).map((row) => ({ mode: str(row.mode) ?? '?', queueSize: num(row.queueSize), dir: str(row.dir) ?? '?', gbps: num(row.gbps), cpu: obj(row.cpu), row }));
  if (!rows.length) throw new ShapeError('no rows');
  return rows;
}

const pathOf = (r: { mode: string; queueSize?: number }): string => `${r.mode}${r.queueSize ? ` (queue-size ${r.queueSize})` : ''}`;

/** virtio-user (at its largest queue size) against the bridge and against pier's tap ports, per direction. */
function vhostNetRatios(rows: VhostNetRow[]): Array<{ dir: string; queueSize?: number; bridge?: number; tap?: number }> {
  const qs = Math.max(0, ...rows.filter((r) => r.mode === VIRTIO).map((r) => r.queueSize ?? 0)) || undefined;
  const at = (mode: string, dir: string, q?: number): number | undefined => rows.find((r) => r.mode === mode && r.dir === dir && r.queueSize === q)?.gbps;
  return unique(rows.map((r) => r.dir)).map((dir) => ({ dir, queueSize: qs, bridge: ratio(at(VIRTIO, dir, qs), at(BRIDGE, dir)), tap: ratio(at(VIRTIO, dir, qs), at(TAP, dir)) }));
}

function vhostNetSection(r: Result, ctx: Context): string[] {
  const rows = vhostNetRows(r.data);
  const paths = unique(rows.map(pathOf));
  const dirs = unique(rows.map((x) => x.dir));
  const find = (path: string, dir: string): VhostNetRow | undefined => rows.find((x) => pathOf(x) === path && x.dir === dir);
  const out: string[] = [];
  out.push(ctx.plot('vhost-net-gbps.svg', {
    title: 'virtio-user over vhost-net: Gbit/s by direction (emulated VM)',
    axis: 'Gbit/s, one TCP stream, QEMU TCG: compare within the plot only',
    groups: paths,
    series: dirs.map((dir) => ({ name: dir, values: paths.map((p) => find(p, dir)?.gbps) })),
  }), '');
  const ref = (mode: string, dir: string): number | undefined => rows.find((x) => x.mode === mode && x.dir === dir)?.gbps;
  out.push(...table(
    ['path', 'dir', 'Gbit/s', `x ${BRIDGE}`, `x ${TAP}`, 'pier thread CPU', 'vhost workers CPU', 'iperf3 CPU'],
    rows.map((x) => [pathOf(x), x.dir, fig(x.gbps), times(ratio(x.gbps, ref(BRIDGE, x.dir))), times(ratio(x.gbps, ref(TAP, x.dir))), pct(num(x.cpu.pier)), pct(num(x.cpu.vhost)), pct(num(x.cpu.iperf3))]),
  ));
  const sizes = unique(rows.filter((x) => x.mode === VIRTIO && x.queueSize !== undefined).map((x) => x.queueSize!)).sort((a, b) => a - b);
  if (sizes.length > 1) {
    const at = (q: number, dir: string): number | undefined => rows.find((x) => x.mode === VIRTIO && x.queueSize === q && x.dir === dir)?.gbps;
    out.push('### The effect of queue size', '');
    out.push(`The thread's advice for the receiver was a larger ring. The same ports at queue-size ${sizes.join(' and ')}, same run: ${dirs.map((dir) => `${dir} ${sizes.map((q) => `${fig(at(q, dir))}`).join(' vs ')} Gbit/s (${sizes[0]}/${sizes.at(-1)}: ${times(ratio(at(sizes[0]!, dir), at(sizes.at(-1)!, dir)))})`).join('; ')}.`, '');
    out.push(ctx.plot('vhost-net-queue-size.svg', {
      title: 'virtio-user over vhost-net: the effect of queue size',
      axis: 'Gbit/s, one TCP stream, QEMU TCG: compare within the plot only',
      groups: dirs,
      series: sizes.map((q) => ({ name: `queue-size ${q}`, values: dirs.map((dir) => at(q, dir)) })),
    }), '');
  }
  const threads = unique(rows.flatMap((x) => Object.keys(x.cpu).filter((k) => num(x.cpu[k]) !== undefined)));
  if (threads.length) {
    out.push('### Where the CPU goes', '');
    out.push(`Each thread's share of one CPU over the stream (from /proc; "vhost" is every vhost-net worker summed).`, '');
    out.push(ctx.plot('vhost-net-cpu.svg', {
      title: 'virtio-user over vhost-net: CPU by thread, path and direction',
      axis: 'share of one CPU, %',
      groups: rows.map((x) => `${pathOf(x)} ${x.dir}`),
      series: threads.map((th) => ({ name: th, values: rows.map((x) => { const v = num(x.cpu[th]); return v === undefined ? undefined : Math.round(v * 100); }) })),
      format: (v) => `${v}%`,
    }), '');
  }
  out.push(...ablationSection(r, rows, ctx));
  return out;
}

/**
 * The drop of virtio-user against pier's tap ports noted under bench/results/vhost-net.md, and its
 * investigation: runs with one change undone each, in bench/results/vhost-net-ablation.json (its
 * shape is in bench/report.md). Until that file exists the finding stays open.
 */
function ablationSection(r: Result, rows: VhostNetRow[], ctx: Context): string[] {
  const out = ['### The virtio-user ratio drop', ''];
  const note = trailingNote(readText(join(ctx.loaded.resultsDir, `${r.name}.md`)) ?? '');
  const now = vhostNetRatios(rows);
  out.push(`In this run virtio-user${now[0]?.queueSize ? ` (queue-size ${now[0].queueSize})` : ''} against pier's own tap ports: ${now.map((x) => `${x.dir} ${times(x.tap)}`).join(', ')}.`, '');
  if (note) out.push(`[results/vhost-net.md](${ctx.link(`results/${r.name}.md`)}) notes under its figures:`, '', ...quote(note));
  const ablation = ctx.loaded.results.get('vhost-net-ablation');
  if (!ablation) {
    out.push('**Open: not yet investigated in a run.** (No `bench/results/vhost-net-ablation.json`.)', '');
    return out;
  }
  const runs = arr(ablation.data.runs).filter(isObj).map((run, i) => {
    const label = str(run.label) ?? str(run.undone) ?? `run ${i + 1}`;
    let ratios: ReturnType<typeof vhostNetRatios> = [];
    try {
      ratios = vhostNetRatios(vhostNetRows(run));
    } catch { /* a run without rows shows as '-' */ }
    return { label, ratios };
  });
  const dirs = unique(runs.flatMap((x) => x.ratios.map((y) => y.dir)));
  out.push(`The investigation, ${dateOf(ablation.data)} on ${machineOf(ablation.data)} ([results/vhost-net-ablation.json](${ctx.link('results/vhost-net-ablation.json')})):`, '');
  out.push(...table(
    ['run', ...dirs.map((dir) => `virtio-user / tap ${dir}`), ...dirs.map((dir) => `virtio-user / bridge ${dir}`)],
    runs.map((x) => [x.label, ...dirs.map((dir) => times(x.ratios.find((y) => y.dir === dir)?.tap)), ...dirs.map((dir) => times(x.ratios.find((y) => y.dir === dir)?.bridge))]),
  ));
  if (runs.length) {
    out.push(ctx.plot('vhost-net-ablation.svg', {
      title: 'virtio-user / tap ports, with each change undone in turn',
      axis: 'virtio-user Gbit/s over pier tap ports Gbit/s, same VM run',
      groups: runs.map((x) => x.label),
      series: dirs.map((dir) => ({ name: dir, values: runs.map((x) => x.ratios.find((y) => y.dir === dir)?.tap) })),
      marks: [{ value: 1, label: '= tap ports' }],
    }), '');
  }
  const finding = str(ablation.data.finding);
  out.push(finding ? `**Finding:** ${finding}` : '**Open:** the runs are recorded above; no finding is written in the file yet.', '');
  return out;
}

// ---- CNI (bench/cni.ts) ----

function cniSection(r: Result, ctx: Context): string[] {
  const split = obj(r.data.split);
  const groups = Object.keys(split);
  if (!groups.length) throw new ShapeError('no split');
  const nodeStart = str(obj(r.data.config).nodeStart);
  const median = (phase: string, c: string): number | undefined => num(obj(obj(r.data[phase])[c]).median);
  const parts = groups.map((g) => /^(\S+) (\S+)$/.exec(g));
  const out: string[] = [];
  out.push(ctx.plot('cni-latency.svg', {
    title: 'CNI: pier-cni beside the bridge plugin, with Node\'s own start',
    axis: 'ms per call, spawn to exit (median)',
    groups: groups.map((g) => (g.startsWith('concurrent') ? `${g} (20 at once)` : g)),
    series: [
      { name: 'pier-cni', values: parts.map((m) => (m ? median(m[1]!, `pier-cni ${m[2]}`) : undefined)) },
      { name: 'bridge plugin', values: parts.map((m) => (m ? median(m[1]!, `bridge ${m[2]}`) : undefined)) },
      ...(nodeStart ? [{ name: 'Node\'s start', values: parts.map((m) => (m ? median(m[1]!, nodeStart) : undefined)) }] : []),
    ],
  }), '');
  const cols = unique(groups.flatMap((g) => Object.keys(obj(split[g]))));
  out.push(...table(['', ...cols], groups.map((g) => [g, ...cols.map((c) => fig(num(obj(split[g])[c])))])));
  const target = obj(r.data.target);
  const met = Object.entries(obj(target.met));
  const limit = Object.entries(target).find(([k, v]) => k !== 'met' && num(v) !== undefined);
  if (limit && met.length) out.push(`Target: ${limit[0]} <= ${num(limit[1])}; met: ${met.map(([k, v]) => `${k} ${v === true ? 'yes' : 'no'}`).join(', ')}.`, '');
  const load = obj(r.data.load);
  const la = (k: string): number | undefined => num(arr(load[k])[0]);
  if (la('before') !== undefined) out.push(`Load average during the run: ${fig(la('before'))} at the start, ${fig(la('after'))} at the end (a shared machine).`, '');
  return out;
}

// ---- CLI startup (bench/startup.ts) ----

/** A case's name without its explanation in parentheses, for a plot's label. */
const shortLabel = (s: string): string => s.replace(/\s*\(.*\)\s*$/, '');

function startupSection(r: Result, ctx: Context): string[] {
  const summary = obj(r.data.summary);
  const cases = Object.keys(summary).filter((k) => num(obj(summary[k]).median) !== undefined);
  if (!cases.length) throw new ShapeError('no case with a median in summary');
  const stat = (c: string, f: string): number | undefined => num(obj(summary[c])[f]);
  const commands = cases.filter((c) => !c.startsWith('import:'));
  const imports = cases.filter((c) => c.startsWith('import:'));
  const out: string[] = [];
  out.push(ctx.plot('startup-wall.svg', {
    title: 'CLI start: wall time of each command, a new process each',
    axis: `ms, spawn to exit (${num(r.data.runs) ?? '?'} runs)`,
    groups: commands.map(shortLabel),
    series: [{ name: 'median', values: commands.map((c) => stat(c, 'median')) }, { name: 'p90', values: commands.map((c) => stat(c, 'p90')) }],
  }), '');
  const target = obj(r.data.target);
  const goal = Object.entries(target).find(([k, v]) => k !== 'met' && num(v) !== undefined);
  if (goal) out.push(`Target: ${goal[0]} <= ${num(goal[1])}: ${target.met === true ? 'met' : 'not met'}. ${Object.entries(obj(r.data.ratios)).map(([k, v]) => `${k}: ${fig(num(v))}x`).join('; ')}.`, '');
  out.push(...table(['case', 'median ms', 'p90 ms'], commands.map((c) => [c, fig(stat(c, 'median')), fig(stat(c, 'p90'))])));
  const split = obj(r.data.split);
  if (Object.keys(split).length) {
    out.push('Where `pier show` spends its time, read inside the process:', '');
    out.push(...table(['part', 'median ms', 'p90 ms'], Object.entries(split).map(([k, v]) => [k, fig(num(obj(v).median)), fig(num(obj(v).p90))])));
  }
  if (imports.length) {
    out.push(ctx.plot('startup-imports.svg', {
      title: 'What importing costs, in a fresh process',
      axis: 'ms for await import(...) (median)',
      groups: imports.map((c) => shortLabel(c).replace(/^import: /, '')),
      series: [{ name: 'median', values: imports.map((c) => stat(c, 'median')) }],
    }), '');
    out.push(...table(['import', 'median ms', 'p90 ms'], imports.map((c) => [c.replace(/^import: /, ''), fig(stat(c, 'median')), fig(stat(c, 'p90'))])));
  }
  return out;
}

// ---- Any other result ----

function genericSection(r: Result): string[] {
  const { benchmark: _b, date: _d, machine: _m, ...rest } = r.data;
  const rows = flatten(isObj(r.data.summary) ? r.data.summary : rest, '', []);
  const shown = rows.slice(0, 60);
  return [
    ...table(['field', 'value'], shown),
    ...(rows.length > shown.length ? [`(${rows.length - shown.length} more fields in the file.)`, ''] : []),
  ];
}

const BENCHMARKS: Benchmark[] = [
  {
    name: 'vhost', title: 'vhost-user loop: pier beside DPDK testpmd and OVS-DPDK', render: vhostSection,
    measures: 'Packets circulating between two vhost-user ports of a testpmd "VM" through the switch, at 64-, 512- and 1500-byte packets: the per-packet cost of pier\'s datapath against DPDK testpmd and OVS-DPDK 3.1 (one PMD thread, port-to-port flows) switching the same loop, in the same run.',
  },
  {
    name: 'throughput', title: 'One host: container to container, pier beside the Linux bridge', render: directionalSection,
    measures: 'One iperf3 TCP stream between two network namespaces, both directions, over a veth pair, the Linux bridge and pier\'s tap ports with offloads on and off; on two cores the comparison is CPU per byte.',
  },
  {
    name: 'uplinks', title: 'Two hosts: pier\'s uplinks and tunnel beside Linux and OVS userspace', render: directionalSection,
    measures: 'One iperf3 TCP stream between containers on two emulated hosts joined by a veth wire, through pier\'s AF_PACKET, AF_XDP and VXLAN ports, through the Linux bridge and Linux vxlan, and through Open vSwitch\'s userspace datapath on the same kinds of port, with the ping round trip.',
  },
  {
    name: 'vhost-net', title: 'The thread\'s setup: virtio-user over vhost-net', render: vhostNetSection,
    measures: 'Containers on pier virtio-user ports backed by the kernel\'s vhost-net, as in the thread, beside pier tap ports and the Linux bridge, both directions, at two queue sizes, with CPU per thread; inside a software-emulated VM, so only ratios within the run mean anything.',
  },
  {
    name: 'cni', title: 'CNI ADD and DEL: pier-cni beside the bridge plugin', render: cniSection,
    measures: 'The latency of each CNI call, a new process each, one at a time and 20 at once, with Node\'s own start measured beside it in the same run.',
  },
  {
    name: 'startup', title: 'CLI start: pier --version and pier show', render: startupSection,
    measures: 'Wall time of CLI commands, each a new process, before the build (tsx compiling the sources) and after (dist/), beside `node -e 0` and `ip link show`.',
  },
];

/** Results read by another benchmark's section rather than on their own. */
const ATTACHED = new Set(['vhost-net-ablation']);

// ---- The thread's two questions ----
// Everything below is written from the loaded results: each figure is read from a result file
// when the report is made, and where the files lack what an answer needs, the answer says so.

/** A counter that says where a frame was lost, as pier stats --json names it; per port of a row. */
const LOSS_COUNTERS: Array<{ field: string; where: string }> = [
  { field: 'counters.tx_dropped_full', where: 'pier\'s transmit ring to this port\'s vhost worker was full, or held the port\'s share of the pool: the worker (handle_tx, which also runs the receiving container\'s TCP input) fell behind. On the receiver\'s port this is the thread\'s loss "on virtiouserx"' },
  { field: 'kernel.rx_dropped', where: 'the container\'s tap dropped frames the vhost worker wrote into it' },
  { field: 'counters.rx_ring_empty', where: 'times pier\'s receive ring had no buffer posted: the vhost worker (handle_rx) had nowhere to put a frame and left it in the tap' },
  { field: 'kernel.tx_dropped', where: 'the container\'s tap queue overflowed: frames vhost-net did not move into pier in time' },
  { field: 'counters.rx_post_short', where: 'pier\'s pool ran low: refills of the receive ring stopped short' },
  { field: 'counters.rx_dropped_no_buffer', where: 'pier\'s packet pool had no buffer for a received frame' },
  { field: 'counters.tx_dropped_no_buffer', where: 'pier\'s packet pool had no buffer for a frame to send' },
];

/** What a vhost-net.json row needs so that the two answers rest on counters (documented in bench/report.md). */
const NEEDED_FIELDS: Array<{ field: string; what: string }> = [
  { field: 'rows[].ports[]', what: 'one entry per pier port of the row: `{ port, side: "sender" | "receiver", counters, kernel }`, each a difference over the iperf3 run of `pier stats --json`' },
  ...LOSS_COUNTERS.map((c) => ({ field: `rows[].ports[].${c.field}`, what: c.where })),
  { field: 'rows[].ports[].counters.rx_packets, tx_packets', what: 'what the port moved, to turn drops into a share' },
  { field: 'rows[].retransmits', what: 'iperf3\'s retransmits (end.sum_sent.retransmits; test/helpers.ts iperf() returns it, bench/vhost-net.ts drops it): the loss as TCP saw it, end to end' },
  { field: 'rows[].cpu.vhostWorkers', what: 'each vhost worker\'s share of a CPU, by port (`{ pa: 0.7, pb: 0.1 }`), not only their sum `cpu.vhost`: which worker is the bottleneck of which direction' },
];

// A counter's name, as the benchmarks and pier stats write them (tx_dropped_full, retransmits), not prose.
const LOSS_KEY = /^\w*(drop|ring_empty|post_short|retransmit)\w*$/i;

function portLosses(port: Obj): Array<{ field: string; value: number; where: string }> {
  return LOSS_COUNTERS.flatMap((c) => {
    const [group, key] = c.field.split('.') as [string, string];
    const value = num(obj(port[group])[key]);
    return value ? [{ field: c.field, value, where: c.where }] : [];
  });
}

function missingFields(rows: VhostNetRow[]): Array<{ field: string; what: string }> {
  const ports = rows.flatMap((r) => arr(r.row.ports).filter(isObj));
  const has = (field: string): boolean => {
    if (field === 'rows[].ports[]') return ports.length > 0;
    if (field === 'rows[].retransmits') return rows.some((r) => num(r.row.retransmits) !== undefined);
    if (field === 'rows[].cpu.vhostWorkers') return rows.some((r) => isObj(r.cpu.vhostWorkers));
    const m = /^rows\[\]\.ports\[\]\.(\w+)\.(\w+)/.exec(field);
    // bench/vhost-net.ts writes a port's counter differences with the unmoved ones left out (runs
    // before 2026-12-04) or as zeros: a port that has the group has recorded the field.
    return !!m && ports.some((p) => isObj(p[m[1]!]));
  };
  return NEEDED_FIELDS.filter((f) => !has(f.field));
}

const fieldList = (fs: Array<{ field: string; what: string }>): string[] => fs.map((f) => `- \`${f.field}\`: ${f.what}`);

/** The rows of the thread's setup: undefined without vhost-net.json, empty when its shape is not known. */
function threadRows(l: Loaded): VhostNetRow[] | undefined {
  const vn = l.results.get('vhost-net');
  if (!vn) return undefined;
  try {
    return vhostNetRows(vn.data);
  } catch {
    return [];
  }
}

function lossAnswer(l: Loaded, ctx: Context): string[] {
  const out = ['### Where the receive-side loss happens', ''];
  out.push('The thread: "On receiver, the packet loss happens on virtiouserx. There is no packet loss on tap port." virtiouserx is the container\'s port in OVS-DPDK (virtio-user over /dev/vhost-net): on the receiving host, frames go from the switch through it and the kernel\'s vhost worker into the container\'s tap.', '');
  const vn = l.results.get('vhost-net');
  const rows = threadRows(l);
  if (!vn || !rows?.length) {
    out.push(`**Not answered: no run of the thread's setup.** \`bench/results/vhost-net.json\` ${vn ? 'has no rows this report reads' : 'is not there (`bench/vhost-net.ts` writes it)'}.`, '');
    return out;
  }
  const src = `[results/vhost-net.json](${ctx.link('results/vhost-net.json')})`;
  const withPorts = rows.filter((r) => arr(r.row.ports).some(isObj));
  if (withPorts.length) {
    out.push(`From the counters of the run of ${dateOf(vn.data)} (${src}), differences over each iperf3 stream:`, '');
    out.push(...table(['path', 'dir', 'port (side)', 'loss counters that moved', 'TCP retransmits'], withPorts.flatMap((r) => arr(r.row.ports).filter(isObj).map((p) => {
      const moved = portLosses(p);
      return [pathOf(r), r.dir, `${str(p.port) ?? '?'} (${str(p.side) ?? '?'})`, moved.length ? moved.map((x) => `${x.field} ${x.value}`).join(', ') : 'none', fig(num(r.row.retransmits))];
    }))));
    const receiving = withPorts.filter((r) => r.mode === VIRTIO).flatMap((r) => arr(r.row.ports).filter(isObj).filter((p) => p.side === 'receiver').flatMap(portLosses));
    const totals = new Map<string, { value: number; where: string }>();
    for (const x of receiving) totals.set(x.field, { value: (totals.get(x.field)?.value ?? 0) + x.value, where: x.where });
    out.push(totals.size
      ? `On the receiving container's virtio-user port, summed over the virtio-user rows: ${[...totals].map(([f, x]) => `\`${f}\` ${x.value} (${x.where})`).join('; ')}.`
      : 'On the receiving container\'s virtio-user port no loss counter moved in any virtio-user row.', '');
  } else {
    const found = [...l.results.values()].flatMap((r) => keysMatching(r.data, LOSS_KEY).map((k) => `${r.name}.json: ${k}`));
    out.push('**Not yet answered with counters.** ' + (found.length
      ? `The results record loss fields only in: ${found.slice(0, 8).join('; ')}; the run of the thread's setup (${src}) has none.`
      : `No result file records a lost packet: the ${l.results.size} JSON files in bench/results were searched for fields naming drops, an empty ring, a short refill or retransmits, and none has one. The run of the thread's setup (${src}, ${dateOf(vn.data)}) has, per path and direction, only the fields ${unique(rows.flatMap((r) => flatten(r.row, '', []).map(([k]) => `\`${k}\``))).join(', ')}.`), '');
  }
  // What the run shows without counters: the ring size the thread advised, and whose CPU is busy.
  const virtio = rows.filter((r) => r.mode === VIRTIO);
  const sizes = unique(virtio.map((r) => r.queueSize).filter((q): q is number => q !== undefined)).sort((a, b) => a - b);
  if (sizes.length > 1) {
    const lo = sizes[0]!;
    const hi = sizes.at(-1)!;
    const at = (q: number, dir: string): number | undefined => virtio.find((r) => r.queueSize === q && r.dir === dir)?.gbps;
    const dirs = unique(virtio.map((r) => r.dir));
    // Rounds of one path spread widely under emulation: a size "helped" only where every round of
    // the larger ring beat every round of the smaller one.
    const samples = (q: number, dir: string): number[] => {
      const r = virtio.find((x) => x.queueSize === q && x.dir === dir);
      const xs = arr(r?.row.samples).map(num).filter((x): x is number => x !== undefined);
      return xs.length ? xs : [r?.gbps ?? NaN];
    };
    const beat = (dir: string): boolean => Math.min(...samples(hi, dir)) > Math.max(...samples(lo, dir));
    const lost = (dir: string): boolean => Math.max(...samples(hi, dir)) < Math.min(...samples(lo, dir));
    const helped = dirs.filter(beat);
    const hurt = dirs.filter(lost);
    const each = dirs.map((dir) => `${dir} ${fig(at(hi, dir))} vs ${fig(at(lo, dir))} Gbit/s (rounds ${samples(hi, dir).join(', ')} vs ${samples(lo, dir).join(', ')})`).join(', ');
    const verdict = helped.length ? `helped (${helped.join(', ')}): every round of the larger ring beat every round of the smaller; a larger ring absorbs bursts, so part of the shortfall came in bursts`
      : hurt.length ? `was slower (${hurt.join(', ')}), every round`
      : 'made no difference beyond the spread of the rounds';
    out.push(`- Queue-size ${hi} against ${lo}: ${each} (${src}). The larger ring ${verdict}.`);
  }
  const range = (xs: Array<number | undefined>): string => {
    const v = xs.filter((x): x is number => x !== undefined);
    return v.length ? `${pct(Math.min(...v))}-${pct(Math.max(...v))}` : '-';
  };
  if (virtio.length) out.push(`- pier's dataplane thread used ${range(virtio.map((r) => num(r.cpu.pier)))} of a CPU on the virtio-user rows, the vhost workers ${range(virtio.map((r) => num(r.cpu.vhost)))} (summed over all workers): the kernel's side is the busier, pier's thread is not saturated.`);
  out.push('');
  const missing = missingFields(rows);
  if (missing.length) out.push('What vhost-net.json would need for this answer to rest on counters (the fields the report reads, per row of the JSON):', '', ...fieldList(missing), '');
  return out;
}

interface Balance { source: string; path: string; a?: number; b?: number; dirs: [string, string] }

function balances(l: Loaded): Balance[] {
  const out: Balance[] = [];
  const rows = threadRows(l) ?? [];
  const dirs = unique(rows.map((r) => r.dir));
  if (dirs.length === 2) {
    for (const p of unique(rows.map(pathOf))) {
      const g = (dir: string): number | undefined => rows.find((r) => pathOf(r) === p && r.dir === dir)?.gbps;
      out.push({ source: 'vhost-net', path: p, a: g(dirs[0]!), b: g(dirs[1]!), dirs: [dirs[0]!, dirs[1]!] });
    }
  }
  for (const name of ['throughput', 'uplinks']) {
    const r = l.results.get(name);
    if (!r) continue;
    try {
      const t = directional(r.data);
      if (t.dirs.length !== 2) continue;
      for (const p of t.paths) out.push({ source: name, path: p, a: t.gbps(p, t.dirs[0]!), b: t.gbps(p, t.dirs[1]!), dirs: [t.dirs[0]!, t.dirs[1]!] });
    } catch { /* shape not known: left out */ }
  }
  return out;
}

// Within this much of 1.0 the directions count as alike: bench/uplinks.md's target for balance.
const BALANCED = 0.1;

function directionAnswer(l: Loaded, ctx: Context): string[] {
  const out = ['### Why the directions differ', ''];
  out.push('The thread, against kernel OVS: the sender\'s throughput rose about 100 %, the receiver\'s about 50 %; "Is there any explanation why the kernel vhost thread speed is different for two direction (from kernel to user, and vice versa)?"', '');
  const bs = balances(l);
  if (!bs.length) {
    out.push('**Not answered: no result measures both directions** (vhost-net.json, throughput.json and uplinks.json are missing or have no two directions).', '');
    return out;
  }
  const bal = (x: Balance): number | undefined => ratio(x.b, x.a);
  out.push(ctx.plot('directions.svg', {
    title: 'Direction balance of every path measured both ways',
    axis: 'Gbit/s of b->a over Gbit/s of a->b, same run',
    groups: bs.map((x) => `${x.path} (${x.source})`),
    series: [{ name: 'b->a / a->b', values: bs.map(bal) }],
    marks: [{ value: 1, label: 'alike' }],
  }), '');
  out.push(...table(['result', 'path', 'a->b Gbit/s', 'b->a Gbit/s', 'b->a / a->b'], bs.map((x) => [`[${x.source}.json](${ctx.link(`results/${x.source}.json`)})`, x.path, fig(x.a), fig(x.b), times(bal(x))])));
  const uneven = bs.filter((x) => Math.abs((bal(x) ?? 1) - 1) > BALANCED);
  out.push(uneven.length
    ? `Paths whose directions differ by more than ${BALANCED * 100} %: ${uneven.map((x) => `${x.path} (${x.source}, ${times(bal(x))})`).join(', ')}. Every other path is within ${BALANCED * 100} %.`
    : `Every path is within ${BALANCED * 100} % of balanced: no run reproduces the thread's difference.`, '');
  const method = readText(join(l.resultsDir, '..', 'vhost-net.md'));
  const why = method && sectionOf(method, 'Why the two directions differ');
  if (why) out.push(`The explanation in the method note, [bench/vhost-net.md](${ctx.link('vhost-net.md')}):`, '', ...quote(why));
  const rows = threadRows(l) ?? [];
  const virtio = rows.filter((r) => r.mode === VIRTIO);
  const mixed = rows.filter((r) => r.mode === MIXED);
  const g = (mode: string, dir: string, qs?: number): number | undefined => rows.find((r) => r.mode === mode && r.dir === dir && (qs === undefined || r.queueSize === qs))?.gbps;
  // How far apart two rounds of one path and direction landed: the noise a difference must beat.
  const spreads = rows.map((r) => arr(r.row.samples).map(num).filter((x): x is number => x !== undefined && x > 0)).filter((xs) => xs.length > 1).map((xs) => Math.max(...xs) / Math.min(...xs));
  const noise = spreads.length ? Math.max(...spreads) : undefined;
  if (mixed.length) {
    const send = ratio(g(MIXED, 'a->b'), g(TAP, 'a->b'));
    const recv = ratio(g(MIXED, 'b->a'), g(TAP, 'b->a'));
    const workers = (dir: string): string => {
      const w = obj(mixed.find((r) => r.dir === dir)?.cpu.vhostWorkers);
      return Object.entries(w).map(([k, v]) => `${k} ${pct(num(v))}`).join(', ') || '-';
    };
    const pierCpu = (dir: string): string => pct(num(mixed.find((r) => r.dir === dir)?.cpu.pier));
    out.push(`**What this run shows.** With both containers on virtio-user ports (the main rows) every stream crosses both kernel paths the note describes, one in each port's vhost worker, so the two directions do the same kinds of work. The row with container a on a virtio-user port and b on a tap port separates them, as on each host of the thread: a virtio-user container sending (a->b, its worker's handle_rx) reached ${times(send)} of the same direction on tap ports, receiving (b->a, handle_tx with its TCP input) ${times(recv)}. The vhost worker used ${workers('a->b')} of a CPU sending and ${workers('b->a')} receiving, pier's thread ${pierCpu('a->b')} and ${pierCpu('b->a')}: nobody saturated a CPU, so in this VM the difference is one of waiting (wake-ups, queueing between the threads), not of work.${noise ? ` Every path ran ${arr(rows[0]?.row.samples).length} rounds, and two rounds of one path and direction landed up to ${times(noise)} apart: a difference between directions smaller than that is not resolved by this run.` : ''}`, '');
  }
  if (virtio.length) {
    const missing = new Set(missingFields(rows).map((f) => f.field));
    const wanted: string[] = [];
    if (missing.has('rows[].cpu.vhostWorkers')) wanted.push(...fieldList(NEEDED_FIELDS.filter((f) => f.field === 'rows[].cpu.vhostWorkers')));
    if (missing.has('rows[].ports[]')) wanted.push('- `rows[].ports[]` with the counters listed under the first question: on which port, sender\'s or receiver\'s, a ring filled or ran empty in each direction;');
    if (!mixed.length) wanted.push('- a row with one container on a virtio-user port and the other on a tap port, so that each direction crosses only one of handle_rx and handle_tx, as on each host of the thread.');
    if (wanted.length) out.push('What would back it:', '', ...wanted, '');
  }
  return out;
}

function threadQuestions(l: Loaded, ctx: Context): string[] {
  return [
    '## The thread\'s two questions', '',
    'The project answers a dpdk-users thread ("VIRTIO for containers", October 2017): containers on virtio-user ports over vhost-net, behind OVS-DPDK. Its two open questions, answered from the result files alone:', '',
    ...lossAnswer(l, ctx),
    ...directionAnswer(l, ctx),
  ];
}

// ---- MTU and offloads ----

function mtuAndOffloads(l: Loaded, ctx: Context): string[] {
  const out = ['## MTU and offloads', ''];
  const pairs: Array<{ source: string; on: string; off: string; t: Directional }> = [];
  for (const r of l.results.values()) {
    let t: Directional;
    try {
      t = directional(r.data);
    } catch {
      continue;
    }
    for (const off of t.paths.filter((p) => /-offloads-off$/.test(p))) {
      const on = off.replace(/-offloads-off$/, '');
      if (t.paths.includes(on)) pairs.push({ source: r.name, on, off, t });
    }
  }
  for (const { source, on, off, t } of pairs) {
    out.push(`**Offloads** ([${source}.json](${ctx.link(`results/${source}.json`)})): ${on} with TSO and checksum offload passed through against \`offloads=off\` (MTU-sized frames, every checksum computed): ${t.dirs.map((dir) => `${dir} ${fig(t.gbps(on, dir))} vs ${fig(t.gbps(off, dir))} Gbit/s (${times(ratio(t.gbps(off, dir), t.gbps(on, dir)))}), CPU ${fig(nsPerByte(t.cpu(on, dir), t.gbps(on, dir)))} vs ${fig(nsPerByte(t.cpu(off, dir), t.gbps(off, dir)))} ns per byte`).join('; ')}.`, '');
    out.push(ctx.plot(`offloads-${source}.svg`, {
      title: `${source}: pier with offloads on and off`,
      axis: 'Gbit/s, one TCP stream (median)',
      groups: t.dirs,
      series: [{ name: `${on} (offloads on)`, values: t.dirs.map((dir) => t.gbps(on, dir)) }, { name: off, values: t.dirs.map((dir) => t.gbps(off, dir)) }],
    }), '');
  }
  if (!pairs.length) out.push('**Offloads**: no run measures a path with offloads off beside the same path with them on.', '');
  // MTU: a path "X-mtuN" beside its "X" at the default MTU (1500), in the same run.
  const mtuPairs: Array<{ source: string; base: string; big: string; mtu: number; t: Directional }> = [];
  for (const r of l.results.values()) {
    let t: Directional;
    try {
      t = directional(r.data);
    } catch {
      continue;
    }
    for (const big of t.paths) {
      const m = /^(.+)-mtu(\d+)$/.exec(big);
      if (m && t.paths.includes(m[1]!)) mtuPairs.push({ source: r.name, base: m[1]!, big, mtu: Number(m[2]), t });
    }
  }
  for (const source of unique(mtuPairs.map((p) => p.source))) {
    const ps = mtuPairs.filter((p) => p.source === source);
    out.push(`**MTU** ([${source}.json](${ctx.link(`results/${source}.json`)})): each path at MTU 1500 and at ${unique(ps.map((p) => p.mtu)).join(', ')}, same run: ${ps.map((p) => `${p.base}: ${p.t.dirs.map((dir) => `${dir} ${fig(p.t.gbps(p.base, dir))} vs ${fig(p.t.gbps(p.big, dir))} Gbit/s (${times(ratio(p.t.gbps(p.big, dir), p.t.gbps(p.base, dir)))}), CPU ${fig(nsPerByte(p.t.cpu(p.base, dir), p.t.gbps(p.base, dir)))} vs ${fig(nsPerByte(p.t.cpu(p.big, dir), p.t.gbps(p.big, dir)))} ns per byte`).join('; ')}`).join('. ')}.`, '');
    const groups = ps.flatMap((p) => p.t.dirs.map((dir) => `${p.base} ${dir}`));
    out.push(ctx.plot(`mtu-${source}.svg`, {
      title: `${source}: the effect of the MTU`,
      axis: 'Gbit/s, one TCP stream (median)',
      groups,
      series: [
        { name: 'MTU 1500', values: ps.flatMap((p) => p.t.dirs.map((dir) => p.t.gbps(p.base, dir))) },
        ...unique(ps.map((p) => p.mtu)).map((m) => ({ name: `MTU ${m}`, values: ps.flatMap((p) => p.t.dirs.map((dir) => (p.mtu === m ? p.t.gbps(p.big, dir) : undefined))) })),
      ],
    }), '');
  }
  if (!mtuPairs.length) out.push('**MTU**: no run has varied it yet. bench/throughput.ts does, with `mtu=` on its tap ports (paths named `X-mtuN`); every figure above is at one MTU per path (bench/uplinks.md: the tunnels\' containers at 1450).', '');
  return out;
}

// ---- Loading and writing ----

export function loadResults(resultsDir: string): Loaded {
  const loaded: Loaded = { resultsDir, results: new Map(), unreadable: [] };
  const files = existsSync(resultsDir) ? readdirSync(resultsDir).filter((f) => f.endsWith('.json')).sort() : [];
  for (const f of files) {
    const name = f.slice(0, -'.json'.length);
    try {
      const data = JSON.parse(readFileSync(join(resultsDir, f), 'utf8')) as Json;
      if (!isObj(data)) throw new Error('not a JSON object');
      loaded.results.set(name, { name, data });
    } catch (e) {
      loaded.unreadable.push({ name, why: (e as Error).message });
    }
  }
  return loaded;
}

/** A part of the report that failed says so in its place; the rest is still written. */
function safely(title: string, part: () => string[]): string[] {
  try {
    return part();
  } catch (e) {
    return [`## ${title}`, '', `This part could not be written from the results: ${String(e)}.`, ''];
  }
}

export function buildReport(l: Loaded, outDir: string): Report {
  const svgs = new Map<string, string>();
  const benchDir = resolve(l.resultsDir, '..');
  const ctx: Context = {
    loaded: l,
    plot(file, chart) {
      svgs.set(file, barChart(chart));
      return `![${chart.title.replace(/[[\]]/g, '')}](benchmarks/${file})`;
    },
    link: (p) => relative(resolve(outDir), join(benchDir, p)).split(sep).join('/'),
  };
  const others = [...l.results.keys()].filter((n) => !BENCHMARKS.some((b) => b.name === n) && !ATTACHED.has(n));
  const md: string[] = [
    '# Benchmarks',
    '',
    `Generated by \`npm run bench:report\` (bench/report.ts) from the JSON results in [bench/results](${ctx.link('results')}): do not edit by hand. Change a benchmark or the report script, re-run it, and regenerate.${existsSync(join(benchDir, 'report.md')) ? ` How each plot is made: [bench/report.md](${ctx.link('report.md')}).` : ''}`,
    '',
    '## The runs',
    '',
    ...table(['result', 'what', 'date', 'machine', 'rounds'], [...BENCHMARKS.map((b) => b.name), ...ATTACHED, ...others].flatMap((n) => {
      const r = l.results.get(n);
      return r ? [[`[${n}.json](${ctx.link(`results/${n}.json`)})`, str(r.data.benchmark) ?? '-', dateOf(r.data), machineOf(r.data), roundsOf(r.data)]] : [];
    })),
    ...BENCHMARKS.filter((b) => !l.results.has(b.name)).map((b) => `- Skipped: bench/results/${b.name}.json is not there (bench/${b.name}.ts writes it).`),
    ...l.unreadable.map((u) => `- Skipped: bench/results/${u.name}.json could not be read (${u.why}).`),
    '',
  ];
  const section = (r: Result, title: string, measures: string, render: (r: Result, ctx: Context) => string[]): string[] => {
    const method = existsSync(join(benchDir, `${r.name}.md`)) ? ` Method: [bench/${r.name}.md](${ctx.link(`${r.name}.md`)}).` : '';
    const tables = existsSync(join(l.resultsDir, `${r.name}.md`)) ? `, its tables in [results/${r.name}.md](${ctx.link(`results/${r.name}.md`)})` : '';
    let body: string[];
    try {
      body = render(r, ctx);
    } catch (e) {
      // A benchmark that changed its JSON must not stop the report: its fields are listed as they are.
      body = [`This file does not have the shape the report reads (${e instanceof ShapeError ? e.message : String(e)}); its fields as they are:`, '', ...genericSection(r)];
    }
    return [
      `## ${title}`, '',
      `${measures}${method} Run of ${dateOf(r.data)} on ${machineOf(r.data)}; every figure in [results/${r.name}.json](${ctx.link(`results/${r.name}.json`)})${tables}.`, '',
      ...body,
    ];
  };
  md.push(...safely('The thread\'s two questions', () => threadQuestions(l, ctx)));
  for (const b of BENCHMARKS) {
    const r = l.results.get(b.name);
    if (r) md.push(...section(r, b.title, b.measures, b.render));
  }
  md.push(...safely('MTU and offloads', () => mtuAndOffloads(l, ctx)));
  for (const n of others) {
    const r = l.results.get(n)!;
    md.push(...section(r, `Other result: ${n}`, `${str(r.data.benchmark) ?? 'A result this report does not know yet'}.`, genericSection));
  }
  return { markdown: md.join('\n').replace(/\n{3,}/g, '\n\n').trimEnd() + '\n', svgs };
}

/** Reads resultsDir, writes outDir/benchmarks.md and outDir/benchmarks/*.svg (removing plots no longer made). */
export function renderReport(resultsDir: string, outDir: string): Report {
  const report = buildReport(loadResults(resultsDir), outDir);
  const svgDir = join(outDir, 'benchmarks');
  mkdirSync(svgDir, { recursive: true });
  for (const f of readdirSync(svgDir)) if (f.endsWith('.svg') && !report.svgs.has(f)) rmSync(join(svgDir, f));
  for (const [f, svg] of report.svgs) writeFileSync(join(svgDir, f), svg);
  writeFileSync(join(outDir, 'benchmarks.md'), report.markdown);
  return report;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const report = renderReport(join(root, 'bench', 'results'), join(root, 'docs'));
  console.log(`docs/benchmarks.md and ${report.svgs.size} plots in docs/benchmarks/`);
}
