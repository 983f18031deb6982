// Small SVG charts for the console: line charts over time and (stacked) bar charts. No library;
// colours come from a fixed palette, text and axes from `currentColor` so that both themes work.

const SVG = 'http://www.w3.org/2000/svg';

export const PALETTE = [
  '#2f7ed8', '#f28f43', '#2ca02c', '#d62728', '#9467bd',
  '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f',
];

const WIDTH = 640;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

function defaultFormat(y) {
  if (!Number.isFinite(y)) return '';
  const abs = Math.abs(y);
  if (abs >= 1e9) return `${+(y / 1e9).toFixed(1)}G`;
  if (abs >= 1e6) return `${+(y / 1e6).toFixed(1)}M`;
  if (abs >= 1e4) return `${+(y / 1e3).toFixed(1)}k`;
  if (abs >= 100 || Number.isInteger(y)) return String(Math.round(y * 100) / 100);
  return String(+y.toPrecision(3));
}

/** "Nice" ticks from 0 (or min) to at least max: about `count` steps of 1, 2 or 5 × 10^n. */
export function niceTicks(min, max, count = 4) {
  if (!(max > min)) max = min + 1;
  const rough = (max - min) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough) ?? rough;
  const ticks = [];
  const first = Math.floor(min / step) * step;
  for (let t = first; t < max + step * 0.999; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

const TIME_STEPS = [
  MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE,
  HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY,
];

function timeTicks(min, max, count = 5) {
  const span = Math.max(max - min, MINUTE);
  const step = TIME_STEPS.find((s) => span / s <= count) ?? Math.ceil(span / count / DAY) * DAY;
  // Align to the step in local time for minutes/hours, to UTC midnight for days.
  const offset = step < DAY ? new Date(min).getTimezoneOffset() * MINUTE : 0;
  const ticks = [];
  for (let t = Math.ceil((min - offset) / step) * step + offset; t <= max; t += step) ticks.push(t);
  return { ticks, step };
}

function pad2(n) {
  return String(n).padStart(2, '0');
}

function timeLabel(t, span) {
  const d = new Date(t);
  if (span < 2 * DAY) return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  return `${d.getMonth() + 1}-${pad2(d.getDate())}`;
}

function toNumber(x) {
  return x instanceof Date ? x.getTime() : Number(x);
}

function frame(title, height, extraBottom) {
  const root = svg('svg', {
    xmlns: SVG,
    viewBox: `0 0 ${WIDTH} ${height + extraBottom}`,
    width: '100%',
    role: 'img',
    'aria-label': title || 'chart',
    class: 'kiln-chart',
    style: 'max-width: 100%; height: auto; font: 11px system-ui, sans-serif; color: inherit;',
  });
  if (title) root.append(svg('text', { x: 4, y: 14, 'font-weight': 600, 'font-size': 13, fill: 'currentColor' }, title));
  return root;
}

function legend(root, names, y) {
  let x = 48;
  names.forEach((name, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const width = 22 + Math.min(String(name).length, 40) * 6.2;
    if (x + width > WIDTH && x > 48) {
      x = 48;
      y += 16;
    }
    const item = svg('g', { class: 'chart-legend-item' },
      svg('rect', { x, y: y - 9, width: 10, height: 10, rx: 2, fill: colour }),
      svg('text', { x: x + 14, y, fill: 'currentColor' }, String(name).slice(0, 40)));
    root.append(item);
    x += width + 10;
  });
}

function legendRows(names) {
  let x = 48;
  let rows = names.length ? 1 : 0;
  for (const name of names) {
    const width = 22 + Math.min(String(name).length, 40) * 6.2;
    if (x + width > WIDTH && x > 48) {
      rows += 1;
      x = 48;
    }
    x += width + 10;
  }
  return rows;
}

/** Grid lines, tick labels and the rotated axis title (`label`, if any) of a y axis. */
function yAxis(root, ticks, scaleY, { left, right, top, bottom }, format, label) {
  for (const tick of ticks) {
    const y = scaleY(tick);
    root.append(svg('line', { x1: left, x2: right, y1: y, y2: y, stroke: 'currentColor', 'stroke-opacity': 0.15 }));
    root.append(svg('text', { x: left - 6, y: y + 4, 'text-anchor': 'end', fill: 'currentColor', 'fill-opacity': 0.75 }, format(tick)));
  }
  if (label) {
    const middle = (top + bottom) / 2;
    root.append(svg('text', {
      x: 12, y: middle, fill: 'currentColor', 'fill-opacity': 0.75,
      'text-anchor': 'middle', transform: `rotate(-90 12 ${middle})`,
    }, label));
  }
}

/** Room for the widest y tick label (and the axis title). */
function leftMargin(ticks, format, yLabel) {
  const widest = Math.max(...ticks.map((tick) => String(format(tick)).length));
  return Math.min(120, Math.max(36, 12 + widest * 6.3)) + (yLabel ? 14 : 0);
}

function empty(root, height, message) {
  root.append(svg('text', { x: WIDTH / 2, y: height / 2, 'text-anchor': 'middle', fill: 'currentColor', 'fill-opacity': 0.6 }, message));
  return root;
}

/**
 * A line chart. `series`: `[{name, points: [{x: Date|number, y: number}]}]`; `options`:
 * `{title, height, yLabel, format(y), time (default: x values are dates), xFormat(x), yMin, yMax,
 * dots ('auto' | true | false)}`. Returns an `<svg>`; each data point is a `circle.chart-point`
 * with `data-x`/`data-y` and a `<title>` tooltip.
 */
export function lineChart(series, options = {}) {
  const height = options.height ?? 200;
  const format = options.format ?? defaultFormat;
  const named = (series ?? []).filter((s) => s && Array.isArray(s.points));
  const names = named.map((s) => s.name ?? '');
  const legendHeight = names.length > 1 || options.legend ? legendRows(names) * 16 + 4 : 0;
  const root = frame(options.title, height, legendHeight);
  const all = named.flatMap((s) => s.points).filter((p) => Number.isFinite(toNumber(p.x)) && Number.isFinite(Number(p.y)));
  if (!all.length) return empty(root, height, options.empty ?? 'No data in this range');
  const time = options.time ?? named.some((s) => s.points.some((p) => p.x instanceof Date));
  const right = WIDTH - 14;
  const top = options.title ? 28 : 10;
  const bottom = height - 24;
  let xMin = Math.min(...all.map((p) => toNumber(p.x)));
  let xMax = Math.max(...all.map((p) => toNumber(p.x)));
  if (options.xMin !== undefined) xMin = Math.min(xMin, toNumber(options.xMin));
  if (options.xMax !== undefined) xMax = Math.max(xMax, toNumber(options.xMax));
  if (xMax === xMin) {
    const half = time ? 30 * MINUTE : 1;
    xMin -= half;
    xMax += half;
  }
  const ys = all.map((p) => Number(p.y));
  const yMin = Math.min(options.yMin ?? 0, ...ys);
  const yTop = Math.max(options.yMax ?? 0, ...ys);
  const yTicks = niceTicks(yMin, yTop > yMin ? yTop : yMin + 1, 4);
  const lo = yTicks[0];
  const hi = yTicks[yTicks.length - 1];
  const left = leftMargin(yTicks, format, options.yLabel);
  const scaleX = (x) => left + ((toNumber(x) - xMin) / (xMax - xMin)) * (right - left);
  const scaleY = (y) => bottom - ((y - lo) / (hi - lo || 1)) * (bottom - top);
  yAxis(root, yTicks, scaleY, { left, right, top, bottom }, format, options.yLabel);
  // X axis.
  root.append(svg('line', { x1: left, x2: right, y1: bottom, y2: bottom, stroke: 'currentColor', 'stroke-opacity': 0.5 }));
  const xFormat = options.xFormat ?? (time ? (t) => timeLabel(t, xMax - xMin) : defaultFormat);
  const xTicks = time ? timeTicks(xMin, xMax).ticks : niceTicks(xMin, xMax, 5).filter((t) => t >= xMin && t <= xMax);
  for (const tick of xTicks) {
    const x = scaleX(tick);
    root.append(svg('line', { x1: x, x2: x, y1: bottom, y2: bottom + 4, stroke: 'currentColor', 'stroke-opacity': 0.5 }));
    root.append(svg('text', { x, y: bottom + 16, 'text-anchor': 'middle', fill: 'currentColor', 'fill-opacity': 0.75 }, xFormat(tick)));
  }
  const pointLabel = (p) => (time ? new Date(toNumber(p.x)).toLocaleString() : xFormat(toNumber(p.x)));
  named.forEach((s, i) => {
    const colour = s.color ?? PALETTE[i % PALETTE.length];
    const points = s.points
      .filter((p) => Number.isFinite(toNumber(p.x)) && Number.isFinite(Number(p.y)))
      .sort((a, b) => toNumber(a.x) - toNumber(b.x));
    const group = svg('g', { class: 'chart-series', 'data-series': s.name ?? '' });
    if (points.length > 1) {
      const d = points.map((p, j) => `${j ? 'L' : 'M'}${scaleX(p.x).toFixed(1)},${scaleY(Number(p.y)).toFixed(1)}`).join('');
      group.append(svg('path', { d, fill: 'none', stroke: colour, 'stroke-width': 2, 'stroke-linejoin': 'round', class: 'chart-line' }));
    }
    const dots = options.dots ?? 'auto';
    for (const p of points) {
      const show = dots === true || (dots === 'auto' && (points.length <= 60 || Number(p.y) !== 0));
      if (!show) continue;
      group.append(svg('circle', {
        cx: scaleX(p.x).toFixed(1), cy: scaleY(Number(p.y)).toFixed(1), r: 3, fill: colour,
        class: 'chart-point', 'data-x': toNumber(p.x), 'data-y': Number(p.y),
      }, svg('title', {}, `${s.name ? `${s.name}: ` : ''}${format(Number(p.y))} — ${pointLabel(p)}`)));
    }
    root.append(group);
  });
  if (legendHeight) legend(root, names, height + 12);
  return root;
}

/**
 * A bar chart, stacked when bars have parts. `bars`: `[{label, value}]` or
 * `[{label, parts: [{name, value}]}]`; `options`: `{title, height, format(y), yLabel}`. Parts
 * with the same name share a colour and a legend entry. Each bar segment is a
 * `rect.chart-bar` with a `<title>` tooltip.
 */
export function barChart(bars, options = {}) {
  const height = options.height ?? 200;
  const format = options.format ?? defaultFormat;
  const list = (bars ?? []).map((bar) => ({
    label: String(bar.label ?? ''),
    parts: Array.isArray(bar.parts)
      ? bar.parts.filter((p) => Number.isFinite(Number(p.value)))
      : [{ name: options.name ?? '', value: Number(bar.value) || 0 }],
  }));
  const names = [...new Set(list.flatMap((b) => b.parts.map((p) => p.name)))];
  const stacked = (bars ?? []).some((bar) => Array.isArray(bar.parts));
  const legendHeight = stacked && names.length ? legendRows(names) * 16 + 4 : 0;
  const root = frame(options.title, height, legendHeight);
  if (!list.length) return empty(root, height, options.empty ?? 'No data in this range');
  const right = WIDTH - 14;
  const top = options.title ? 28 : 10;
  const bottom = height - 24;
  const totals = list.map((b) => b.parts.reduce((sum, p) => sum + Math.max(0, Number(p.value)), 0));
  const yTicks = niceTicks(0, Math.max(...totals) || 1, 4);
  const hi = yTicks[yTicks.length - 1];
  const left = leftMargin(yTicks, format, options.yLabel);
  const scaleY = (y) => bottom - (y / hi) * (bottom - top);
  yAxis(root, yTicks, scaleY, { left, right, top, bottom }, format, options.yLabel);
  root.append(svg('line', { x1: left, x2: right, y1: bottom, y2: bottom, stroke: 'currentColor', 'stroke-opacity': 0.5 }));
  const slot = (right - left) / list.length;
  const width = Math.max(2, Math.min(48, slot * 0.7));
  const labelEvery = Math.max(1, Math.ceil(list.length / 12));
  list.forEach((bar, i) => {
    const x = left + slot * i + (slot - width) / 2;
    let base = 0;
    const group = svg('g', { class: 'chart-bar-group', 'data-label': bar.label });
    for (const part of bar.parts) {
      const value = Math.max(0, Number(part.value));
      if (!value) continue;
      const colour = PALETTE[Math.max(0, names.indexOf(part.name)) % PALETTE.length];
      const y1 = scaleY(base + value);
      const y0 = scaleY(base);
      group.append(svg('rect', {
        x: x.toFixed(1), y: y1.toFixed(1), width: width.toFixed(1), height: Math.max(0.5, y0 - y1).toFixed(1),
        fill: colour, class: 'chart-bar', 'data-value': value,
      }, svg('title', {}, `${bar.label}${part.name ? ` · ${part.name}` : ''}: ${format(value)}`)));
      base += value;
    }
    root.append(group);
    if (i % labelEvery === 0) {
      root.append(svg('text', { x: x + width / 2, y: bottom + 16, 'text-anchor': 'middle', fill: 'currentColor', 'fill-opacity': 0.75 }, bar.label));
    }
  });
  if (legendHeight) legend(root, names, height + 12);
  return root;
}
