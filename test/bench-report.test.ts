// The benchmark report (bench/report.ts) and its SVG writer (bench/plot.ts): no root, no network,
// written into temporary directories only (never docs/).
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { barChart, escapeXml, tickStep, wrap, type BarChart } from '../bench/plot.ts';
import { renderReport } from '../bench/report.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS = join(ROOT, 'bench', 'results');
const tmp = mkdtempSync(join(tmpdir(), 'pier-bench-report-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Tags open and close in order, one root: enough of XML to catch a broken writer. */
function assertWellFormed(svg: string): void {
  const stack: string[] = [];
  let roots = 0;
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z][\w-]*)[^>]*?(\/?)>/g)) {
    const [, close, name, selfClosing] = m;
    if (close) assert.equal(stack.pop(), name, `</${name}> closes what was open`);
    else if (!selfClosing) {
      if (!stack.length) roots++;
      stack.push(name!);
    } else if (!stack.length) roots++;
  }
  assert.deepEqual(stack, [], 'every tag is closed');
  assert.equal(roots, 1, 'one root element');
  assert.doesNotMatch(svg.replace(/<[^>]*>/g, ''), /[<>]|&(?!(amp|lt|gt|quot|apos);)/, 'text has no raw < > or &');
}

const chart: BarChart = {
  title: 'Title <with> "markup" & more',
  axis: 'Gbit/s',
  groups: ['one', 'a <long> label & a "quoted" word that has to wrap onto a second line', 'three'],
  series: [{ name: 'a->b', values: [1, 2, 4] }, { name: 'b->a', values: [0.5, undefined, 3] }],
  marks: [{ value: 1, label: 'reference' }],
};

describe('bench/plot.ts', () => {
  it('writes one <svg> root with width, height and a matching viewBox, on a white ground', () => {
    const svg = barChart(chart);
    assertWellFormed(svg);
    const m = /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="(\d+)" height="(\d+)" viewBox="0 0 (\d+) (\d+)"/.exec(svg);
    assert.ok(m, svg.slice(0, 200));
    assert.equal(m[1], '720');
    assert.equal(m[1], m[3]);
    assert.equal(m[2], m[4]);
    assert.match(svg, /font-family="sans-serif"/);
    assert.match(svg, /<rect x="0" y="0" width="720" height="\d+" fill="#ffffff"\/>/);
    assert.ok(svg.endsWith('</svg>\n'));
  });

  it('escapes every label', () => {
    const svg = barChart(chart);
    assert.match(svg, /Title &lt;with&gt; &quot;markup&quot; &amp; more/);
    assert.match(svg, /a &lt;long&gt; label &amp; a/);
    assert.equal(escapeXml(`<a href='x'>&</a>`), '&lt;a href=&apos;x&apos;&gt;&amp;&lt;/a&gt;');
  });

  it('draws bars in proportion to their values, and n/a where there is none', () => {
    const svg = barChart(chart);
    const widths = [...svg.matchAll(/<rect class="bar" [^>]*width="([\d.]+)"/g)].map((m) => Number(m[1]));
    // In drawing order: group by group, series by series; the missing b->a of group two has no bar.
    assert.equal(widths.length, 5);
    const [a1, b1, a2, a3, b3] = widths as [number, number, number, number, number];
    assert.ok(Math.abs(a2 / a1 - 2) < 0.01 && Math.abs(a3 / a1 - 4) < 0.01, `${widths}`);
    assert.ok(Math.abs(b1 / a1 - 0.5) < 0.01 && Math.abs(b3 / a1 - 3) < 0.01, `${widths}`);
    assert.match(svg, />n\/a</);
    assert.match(svg, />reference</);
  });

  it('is deterministic: same chart, same bytes', () => {
    assert.equal(barChart(chart), barChart(structuredClone({ ...chart, format: undefined })));
  });

  it('picks round ticks and wraps long labels at spaces', () => {
    assert.equal(tickStep(4.94), 1);
    assert.equal(tickStep(2.14), 0.5);
    assert.equal(tickStep(754), 200);
    assert.equal(tickStep(0), 1);
    assert.deepEqual(wrap('pier virtio-user/vhost-net (queue-size 1024)', 26), ['pier virtio-user/vhost-net', '(queue-size 1024)']);
    assert.deepEqual(wrap('', 10), ['']);
  });
});

/** Images and relative links of a report: every one names a file that is there. */
function assertReferencesExist(outDir: string, markdown: string): void {
  const images = [...markdown.matchAll(/!\[[^\]]*\]\((benchmarks\/[^)]+\.svg)\)/g)].map((m) => m[1]!);
  assert.ok(images.length > 0);
  for (const img of images) assert.ok(existsSync(join(outDir, img)), `${img} is written`);
  const written = readdirSync(join(outDir, 'benchmarks')).map((f) => `benchmarks/${f}`).sort();
  assert.deepEqual(written, [...new Set(images)].sort(), 'every plot written is shown, and no other');
  for (const svg of written) assertWellFormed(readFileSync(join(outDir, svg), 'utf8'));
  for (const m of markdown.matchAll(/\]\(((?:\.\.\/)+[^)]+)\)/g)) assert.ok(existsSync(resolve(outDir, m[1]!)), `link ${m[1]} resolves`);
}

function vhostNetWithCounters(): unknown {
  const j = JSON.parse(readFileSync(join(RESULTS, 'vhost-net.json'), 'utf8')) as { rows: Array<Record<string, unknown>> };
  for (const row of j.rows) {
    delete (row.cpu as Record<string, unknown>).vhostWorkers; // a run from before they were recorded
    if (row.mode !== 'pier virtio-user/vhost-net') continue;
    const [sender, receiver] = row.dir === 'a->b' ? ['pa', 'pb'] : ['pb', 'pa'];
    row.retransmits = 7;
    row.ports = [
      { port: sender, side: 'sender', counters: { rx_packets: 1000, tx_packets: 500, rx_ring_empty: 3, tx_dropped_full: 0 }, kernel: { rx_dropped: 0, tx_dropped: 2 } },
      { port: receiver, side: 'receiver', counters: { rx_packets: 500, tx_packets: 990, tx_dropped_full: 10 }, kernel: { rx_dropped: 0, tx_dropped: 0 } },
    ];
  }
  // A figure changed here must show in the answers: they are read from the file, not written in.
  const at = (dir: string): Record<string, unknown> => j.rows.find((r) => r.mode === 'pier virtio-user/vhost-net' && r.queueSize === 1024 && r.dir === dir)!;
  at('a->b').gbps = 0.081;
  j.rows.find((r) => r.mode === 'pier tap ports' && r.dir === 'a->b')!.gbps = 0.262;
  at('b->a').gbps = 0.243;
  return j;
}

describe('bench/report.ts', () => {
  it('reports the real bench/results: every benchmark, every plot, every link', () => {
    const out = join(tmp, 'real', 'docs');
    const { markdown } = renderReport(RESULTS, out);
    assert.equal(readFileSync(join(out, 'benchmarks.md'), 'utf8'), markdown);
    assert.match(markdown, /^# Benchmarks\n\nGenerated by `npm run bench:report`/);
    assert.match(markdown, /do not edit by hand/);
    for (const f of readdirSync(RESULTS).filter((x) => x.endsWith('.json'))) assert.ok(markdown.includes(`results/${f}`), `${f} is in the report`);
    for (const heading of ['## The thread\'s two questions', '### Where the receive-side loss happens', '### Why the directions differ', '### The virtio-user ratio drop', '## MTU and offloads']) {
      assert.ok(markdown.includes(heading), heading);
    }
    assert.doesNotMatch(markdown, /does not have the shape|could not be written/, 'every known result is read as such');
    assertReferencesExist(out, markdown);
    assert.equal(renderReport(RESULTS, out).markdown, markdown, 'a second run writes the same report');
  });

  it('skips a missing file, survives broken and unknown ones, and answers from counters when a run has them', () => {
    const bench = join(tmp, 'fixture', 'bench');
    const results = join(bench, 'results');
    cpSync(RESULTS, results, { recursive: true });
    cpSync(join(ROOT, 'bench', 'vhost-net.md'), join(bench, 'vhost-net.md'));
    rmSync(join(results, 'startup.json'));
    rmSync(join(results, 'vhost-net-ablation.json'), { force: true }); // written again below
    writeFileSync(join(results, 'broken.json'), '{"benchmark": ');
    writeFileSync(join(results, 'mystery.json'), JSON.stringify({ benchmark: 'a benchmark from the future', date: '2027-01-01T00:00:00.000Z', summary: { warp: { median: 9.5, samples: [9, 10] } } }));
    const cni = JSON.parse(readFileSync(join(RESULTS, 'cni.json'), 'utf8')) as Record<string, unknown>;
    delete cni.split;
    writeFileSync(join(results, 'cni.json'), JSON.stringify(cni));
    writeFileSync(join(results, 'vhost-net.json'), JSON.stringify(vhostNetWithCounters()));
    const out = join(tmp, 'fixture', 'docs');
    const { markdown } = renderReport(results, out);

    assert.match(markdown, /Skipped: bench\/results\/startup\.json is not there/);
    assert.match(markdown, /Skipped: bench\/results\/broken\.json could not be read/);
    assert.match(markdown, /## Other result: mystery\n\na benchmark from the future\./);
    assert.match(markdown, /\| warp\.median \| 9\.5 \|/);
    assert.match(markdown, /## CNI ADD and DEL[^]*does not have the shape the report reads \(no split\)/);
    assert.match(markdown, /vhost-net\.json\) \| pier virtio-user\/vhost-net \(queue-size 1024\) \| 0\.081 \| 0\.243 \| 3\.00x/);
    assert.match(markdown, /`counters\.tx_dropped_full` 40 /, 'the receivers\' drops, summed over the four virtio-user rows');
    assert.match(markdown, /\| pa \(sender\) \| counters\.rx_ring_empty 3, kernel\.tx_dropped 2 \| 7 \|/);
    assert.doesNotMatch(markdown, /`rows\[\]\.ports\[\]`:/, 'the counters it has are not asked for');
    assert.match(markdown, /`rows\[\]\.cpu\.vhostWorkers`/, 'what it still lacks is');
    assert.match(markdown, /> Where the work of each direction runs, for a container on a virtio-user port:/, 'the method note is quoted');
    assert.match(markdown, /\*\*Open: not yet investigated in a run\.\*\*/);
    assertReferencesExist(out, markdown);

    // The investigation of the ratio drop, once it has run.
    const base = vhostNetWithCounters() as { rows: unknown[] };
    writeFileSync(join(results, 'vhost-net-ablation.json'), JSON.stringify({
      benchmark: 'vhost-net ablation', date: '2027-01-02T00:00:00.000Z', machine: { cpus: 2 },
      runs: [{ label: 'as committed', rows: base.rows }, { label: 'EVENT_IDX undone', undone: 'event-idx', rows: base.rows }],
      finding: 'the emulator, not pier',
    }));
    const again = renderReport(results, out).markdown;
    assert.match(again, /\| EVENT_IDX undone \| 0\.31x \|/);
    assert.match(again, /\*\*Finding:\*\* the emulator, not pier/);
    assert.ok(existsSync(join(out, 'benchmarks', 'vhost-net-ablation.svg')));
    assert.doesNotMatch(again, /## Other result: vhost-net-ablation/, 'the ablation belongs to the vhost-net section');
    assertReferencesExist(out, again);
  });
});
