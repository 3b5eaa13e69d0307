// A small line chart in plain SVG (no library): one polyline per series.
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#b3261e", "#1f6feb", "#2da44e", "#9a6700", "#8250df", "#cf222e"];

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

/**
 * Draw `series` ([{name, points: [[t, y], …]}]) into `box` over the last minutes
 * (at most `maxSpan` seconds); the y axis starts at 0.
 */
export function lineChart(box, series, {maxSpan = 900, now = Date.now() / 1000, unit = ""} = {}) {
  // The window grows with the data seen, from half a minute up to `maxSpan` seconds.
  const first = Math.min(now, ...series.flatMap((s) => s.points.map(([t]) => t)));
  const span = Math.min(maxSpan, Math.max(30, now - first));
  const width = 320;
  const height = 120;
  const pad = {left: 36, right: 6, top: 8, bottom: 16};
  const max = Math.max(1e-9, ...series.flatMap((s) => s.points.map(([, y]) => y)));
  const top = niceCeil(max);
  const x = (t) => pad.left + (width - pad.left - pad.right) * (1 - (now - t) / span);
  const y = (v) => height - pad.bottom - (height - pad.top - pad.bottom) * (v / top);
  const chart = svg("svg", {viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart"});
  chart.append(svg("line", {x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0), class: "axis"}));
  chart.append(svg("line", {x1: pad.left, y1: y(top), x2: width - pad.right, y2: y(top), class: "grid"}));
  for (const [value, at] of [[0, y(0)], [top, y(top)]]) {
    const label = svg("text", {x: pad.left - 4, y: at + 4, "text-anchor": "end", class: "tick"});
    label.textContent = formatNumber(value) + unit;
    chart.append(label);
  }
  const label = svg("text", {x: width - pad.right, y: height - 3, "text-anchor": "end", class: "tick"});
  label.textContent = span < 120 ? `最近 ${Math.round(span)} 秒` : `最近 ${Math.round(span / 60)} 分钟`;
  chart.append(label);
  series.forEach((s, n) => {
    const visible = s.points.filter(([t]) => t >= now - span);
    if (!visible.length) return;
    const line = svg("polyline", {
      points: visible.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      fill: "none", stroke: COLORS[n % COLORS.length], "stroke-width": 1.5,
    });
    const title = svg("title", {});
    title.textContent = s.name;
    line.append(title);
    chart.append(line);
  });
  box.replaceChildren(chart);
  return COLORS;
}

function niceCeil(v) {
  if (v <= 1) return 1;
  const step = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * step >= v) return m * step;
  return 10 * step;
}

export function formatNumber(v) {
  if (v >= 100) return String(Math.round(v));
  if (v >= 10) return v.toFixed(1).replace(/\.0$/, "");
  return v.toFixed(2).replace(/\.?0+$/, "") || "0";
}
