/**
 * A small hand-written SVG line chart for the benchmark report: axes with ticks and labels, a light
 * grid, one polyline per series (with point markers when a series has few points) and a legend.
 * Black on white, 720 × 360 by default, no dependencies.
 */
import type { Chart } from './scenario.js';

/** Size of the drawing, in pixels. */
export interface ChartSize {
  width: number;
  height: number;
}

// Distinguishable on white and for the common kinds of colour blindness (Okabe–Ito).
const COLOURS = ['#0072b2', '#d55e00', '#009e73', '#cc79a7', '#e69f00', '#56b4e9', '#000000'];
const DASHES = ['', '6 3', '2 3', '8 3 2 3'];
/** Left margin: room for tick labels such as 100,000 and the rotated axis label. */
const LEFT = 80;

/** Colour and dash of series `i`: measurements take the palette in turn, reference lines are grey and dashed. */
function style(s: Chart['series'][number], i: number): { colour: string; dash: string } {
  if (s.reference) return { colour: '#777777', dash: '6 4' };
  return { colour: COLOURS[i % COLOURS.length]!, dash: DASHES[Math.floor(i / COLOURS.length) % DASHES.length]! };
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Round tick values covering [min, max]: steps of 1, 2 or 5 × 10ⁿ, about `count` of them. */
export function niceTicks(min: number, max: number, count = 6): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
  if (max <= min) max = min + (min === 0 ? 1 : Math.abs(min) * 0.1);
  const raw = (max - min) / Math.max(1, count - 1);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? 10 * magnitude;
  const first = Math.floor(min / step) * step;
  const ticks: number[] = [];
  for (let v = first; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1]! < max) ticks.push(Number((ticks[ticks.length - 1]! + step).toPrecision(12)));
  return ticks;
}

/** A tick label: thousands grouped, at most three significant decimals. */
function label(v: number): string {
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  return String(Number(v.toPrecision(3)));
}

/** Draw `chart` as a standalone SVG document. */
export function renderSvgChart(chart: Chart, size: ChartSize = { width: 720, height: 360 }): string {
  const { width, height } = size;
  // Legend items, laid out in rows under the title, outside the plot, so they never hide a line.
  const legend: { x: number; row: number }[] = [];
  {
    let x = LEFT;
    let row = 0;
    for (const s of chart.series) {
      const w = 28 + s.name.length * 6.6 + 22;
      if (x + w > width - 24 && x > LEFT) {
        row++;
        x = LEFT;
      }
      legend.push({ x, row });
      x += w;
    }
  }
  const legendRows = chart.series.length === 0 ? 0 : Math.max(...legend.map((l) => l.row)) + 1;
  const margin = { top: 40 + legendRows * 18, right: 24, bottom: 52, left: LEFT };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const points = chart.series.flatMap((s) => s.points);
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const xTicks = niceTicks(xs.length ? Math.min(...xs) : 0, xs.length ? Math.max(...xs) : 1);
  // A y axis starts at zero: every chart here plots rates, where the baseline matters.
  const yTicks = niceTicks(Math.min(0, ...ys), ys.length ? Math.max(...ys) : 1, 6);
  const [x0, x1] = [xTicks[0]!, xTicks[xTicks.length - 1]!];
  const [y0, y1] = [yTicks[0]!, yTicks[yTicks.length - 1]!];
  const sx = (x: number): number => margin.left + ((x - x0) / (x1 - x0 || 1)) * plotW;
  const sy = (y: number): number => margin.top + plotH - ((y - y0) / (y1 - y0 || 1)) * plotH;
  const f = (n: number): string => n.toFixed(1);

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<title>${escape(chart.title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold" fill="#000000">${escape(chart.title)}</text>`,
  );
  // Grid and ticks.
  for (const t of yTicks) {
    const y = f(sy(t));
    out.push(
      `<line x1="${margin.left}" y1="${y}" x2="${margin.left + plotW}" y2="${y}" stroke="#e3e3e3" stroke-width="1"/>`,
      `<line x1="${margin.left - 5}" y1="${y}" x2="${margin.left}" y2="${y}" stroke="#000000"/>`,
      `<text x="${margin.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle" fill="#000000">${escape(label(t))}</text>`,
    );
  }
  for (const t of xTicks) {
    const x = f(sx(t));
    out.push(
      `<line x1="${x}" y1="${margin.top}" x2="${x}" y2="${margin.top + plotH}" stroke="#e3e3e3" stroke-width="1"/>`,
      `<line x1="${x}" y1="${margin.top + plotH}" x2="${x}" y2="${margin.top + plotH + 5}" stroke="#000000"/>`,
      `<text x="${x}" y="${margin.top + plotH + 18}" text-anchor="middle" fill="#000000">${escape(label(t))}</text>`,
    );
  }
  // Axes and their labels.
  out.push(
    `<line x1="${margin.left}" y1="${margin.top}" x2="${margin.left}" y2="${margin.top + plotH}" stroke="#000000"/>`,
    `<line x1="${margin.left}" y1="${margin.top + plotH}" x2="${margin.left + plotW}" y2="${margin.top + plotH}" stroke="#000000"/>`,
    `<text x="${margin.left + plotW / 2}" y="${height - 10}" text-anchor="middle" fill="#000000">${escape(chart.xLabel)}</text>`,
    `<text transform="translate(14 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#000000">${escape(chart.yLabel)}</text>`,
  );
  // Series.
  chart.series.forEach((s, i) => {
    const { colour, dash } = style(s, i);
    const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
    const path = sorted.map(([x, y]) => `${f(sx(x))},${f(sy(y))}`).join(' ');
    if (sorted.length > 1) {
      out.push(`<polyline fill="none" stroke="${colour}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''} stroke-linejoin="round" points="${path}"/>`);
    }
    if (sorted.length <= 30 && !s.reference) {
      for (const [x, y] of sorted) out.push(`<circle cx="${f(sx(x))}" cy="${f(sy(y))}" r="3.5" fill="${colour}"/>`);
    }
  });
  chart.series.forEach((s, i) => {
    const { colour, dash } = style(s, i);
    const { x, row } = legend[i]!;
    const y = 38 + row * 18;
    out.push(
      `<line x1="${x}" y1="${y}" x2="${x + 22}" y2="${y}" stroke="${colour}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`,
      `<text x="${x + 28}" y="${y}" dominant-baseline="middle" fill="#000000">${escape(s.name)}</text>`,
    );
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
