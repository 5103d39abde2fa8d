// Grouped horizontal bar charts as SVG, for the benchmark report (bench/report.ts). Our own and
// small: plotting libraries on npm draw through a DOM or a canvas, and GitHub shows a plain SVG
// file as it is. The output is a function of the input alone (same chart, same bytes), so a
// regenerated report changes only where a result did. Bars run horizontally because the labels
// are long ("pier virtio-user/vhost-net (queue-size 1024)") and read best on the left.

export interface Series {
  name: string;
  /** One value per group; undefined where the run has no figure (written "n/a"). */
  values: Array<number | undefined>;
}

export interface BarChart {
  title: string;
  /** The value axis, with its unit: "Gbit/s (median of 3 rounds)". */
  axis: string;
  groups: string[];
  series: Series[];
  /** How a bar's value is written beside it (default: four significant digits, as the results record them). */
  format?: (v: number) => string;
  /** Dashed lines across the bars at given values: a target, the reference's 1.0x. */
  marks?: Array<{ value: number; label: string }>;
}

export const WIDTH = 720;
// Colour-blind-safe (Tableau 10), fixed order: a series keeps its colour across charts.
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#b07aa1', '#76b7b2', '#edc948', '#9c755f'];
const BAR_H = 16;
const GROUP_GAP = 14;
const LINE_H = 14;
const LABEL_CHARS = 34; // a group label wraps past this
const VALUE_ROOM = 64; // right of the plot, for the value written after the longest bar

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ENTITIES[c]!);
}

/** Coordinates rounded to 0.1 px: no floating-point noise in the bytes. */
function px(x: number): string {
  return String(Math.round(x * 10) / 10);
}

export function formatValue(v: number): string {
  return String(Number(v.toPrecision(4)));
}

/** Tick step for an axis from 0 to max: 1, 2 or 5 times a power of ten, about five ticks. */
export function tickStep(max: number): number {
  if (!(max > 0)) return 1;
  const raw = max / 5;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/** A label broken at spaces into lines of at most `max` characters (a longer word stays whole). */
export function wrap(text: string, max: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter((w) => w)) {
    if (line && line.length + 1 + word.length > max) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines.length ? lines : [''];
}

/** Width of a 12px sans-serif string, erring wide (DejaVu Sans, the widest usual fallback): to lay out, not to measure. */
export function textWidth(s: string): number {
  let w = 0;
  for (const ch of s) w += /[mwMW]/.test(ch) ? 10.5 : /[A-Z]/.test(ch) ? 8.4 : /[il.,:;|!'()[\] ]/.test(ch) ? 3.8 : 7;
  return w;
}

function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${px(x)}" y="${px(y)}"${attrs ? ` ${attrs}` : ''}>${escapeXml(s)}</text>`;
}

export function barChart(c: BarChart): string {
  const fmt = c.format ?? formatValue;
  const marks = c.marks ?? [];
  const finite = c.series.flatMap((s) => s.values).filter((v): v is number => v !== undefined && Number.isFinite(v));
  const top = Math.max(0, ...finite, ...marks.map((m) => m.value));
  const step = tickStep(top);
  const axisMax = Math.max(step, Math.ceil(top / step - 1e-9) * step);

  const labels = c.groups.map((g) => wrap(g, LABEL_CHARS));
  const left = Math.round(Math.max(0, ...labels.flat().map(textWidth)) + 20);
  const right = WIDTH - VALUE_ROOM;
  const x = (v: number): number => left + (Math.max(0, v) / axisMax) * (right - left);

  const out: string[] = [];
  // The legend, in rows that wrap; a single series needs none (the axis says what it is).
  let legendY = 44;
  if (c.series.length > 1) {
    let lx = 16;
    c.series.forEach((s, i) => {
      const w = 12 + 6 + textWidth(s.name) + 18;
      if (lx > 16 && lx + w > WIDTH - 16) {
        lx = 16;
        legendY += 18;
      }
      out.push(`<rect x="${px(lx)}" y="${px(legendY - 10)}" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`);
      out.push(text(lx + 18, legendY, s.name, 'font-size="12"'));
      lx += w;
    });
    legendY += 18;
  }
  // A mark's label sits above the plot, where no bar or value can cover it.
  const plotTop = legendY + (marks.length ? 18 : 8);

  // One band per group: its bars, its label beside them.
  let y = plotTop + GROUP_GAP / 2;
  const bars: string[] = [];
  c.groups.forEach((_g, gi) => {
    const lines = labels[gi]!;
    const barsH = c.series.length * BAR_H;
    const bandH = Math.max(barsH, lines.length * LINE_H);
    const barsTop = y + (bandH - barsH) / 2;
    c.series.forEach((s, si) => {
      const v = s.values[gi];
      const by = barsTop + si * BAR_H;
      if (v === undefined || !Number.isFinite(v)) {
        bars.push(text(left + 4, by + BAR_H - 4, 'n/a', 'font-size="11" fill="#777"'));
        return;
      }
      bars.push(`<rect class="bar" x="${px(left)}" y="${px(by + 1)}" width="${px(x(v) - left)}" height="${BAR_H - 2}" fill="${PALETTE[si % PALETTE.length]}"/>`);
      // A white halo keeps the value legible where it crosses a grid line or a mark.
      bars.push(text(x(v) + 4, by + BAR_H - 4, fmt(v), 'font-size="11" stroke="#ffffff" stroke-width="3" paint-order="stroke"'));
    });
    const labelTop = y + bandH / 2 - (lines.length * LINE_H) / 2 + LINE_H - 3;
    lines.forEach((l, li) => bars.push(text(left - 8, labelTop + li * LINE_H, l, 'font-size="12" text-anchor="end"')));
    y += bandH + GROUP_GAP;
  });
  const plotBottom = y - GROUP_GAP / 2;

  // Grid, ticks and marks under the bars and their values.
  const grid: string[] = [];
  for (let i = 0; i <= Math.round(axisMax / step); i++) {
    const t = i * step;
    grid.push(`<line x1="${px(x(t))}" y1="${px(plotTop)}" x2="${px(x(t))}" y2="${px(plotBottom)}" stroke="#e3e3e3"/>`);
    grid.push(text(x(t), plotBottom + 16, formatValue(t), 'font-size="11" text-anchor="middle" fill="#444"'));
  }
  for (const m of marks) {
    grid.push(`<line x1="${px(x(m.value))}" y1="${px(plotTop - 12)}" x2="${px(x(m.value))}" y2="${px(plotBottom)}" stroke="#333" stroke-dasharray="4 3"/>`);
    grid.push(text(x(m.value) + 4, plotTop - 4, m.label, 'font-size="11" fill="#333"'));
  }
  const height = Math.ceil(plotBottom + 48);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" role="img" aria-label="${escapeXml(c.title)}">`,
    // A white ground: GitHub's dark mode shows an SVG on its own dark background otherwise.
    `<rect x="0" y="0" width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    text(16, 24, c.title, 'font-size="15" font-weight="bold"'),
    ...out,
    ...grid,
    ...bars,
    `<line x1="${px(left)}" y1="${px(plotTop)}" x2="${px(left)}" y2="${px(plotBottom)}" stroke="#333"/>`,
    `<line x1="${px(left)}" y1="${px(plotBottom)}" x2="${px(right)}" y2="${px(plotBottom)}" stroke="#333"/>`,
    text((left + right) / 2, plotBottom + 36, c.axis, 'font-size="12" text-anchor="middle"'),
    '</svg>',
    '',
  ].join('\n');
}
