// 运维: every instance of the fleet (GET /api/metrics?scope=fleet, admin), refreshed
// every few seconds; charts of the last 15 minutes kept in this page; cache clearing.
import {NEED_KEY, api, canCall, explain} from "./api.js";
import {confirmDialog, el, fill, toast} from "./dom.js";
import {formatNumber, lineChart} from "./chart.js";

const REFRESH_MS = 3000;
const SPAN_S = 15 * 60;
const MAX_POINTS = Math.ceil(SPAN_S / (REFRESH_MS / 1000)) + 1;
// As core/ops/history.py counts errors: 429, 503, 502, 504.
const ERROR_COUNTERS = ["rate_limited_requests", "busy_rejections", "upstream_errors", "upstream_timeouts"];
let ui = null;
let timer = null;
// server_id → {last: snapshot, seenAt, history: [{t, rps, p95, errors}]} (bounded)
const instances = new Map();

export function mount(root) {
  ui = {
    status: el("p", {class: "status", role: "status", id: "ops-status"}),
    health: el("p", {class: "muted", id: "ops-health"}),
    totals: el("div", {class: "totals", id: "ops-totals"}),
    table: el("tbody", {id: "ops-instances"}),
    charts: el("div", {class: "charts"}),
    cleared: el("p", {class: "status", role: "status", id: "ops-cache-status"}),
  };
  const head = ["实例", "状态", "进程", "运行", "处理中", "请求/秒", "p95", "缓存命中", "429", "503", "内存"];
  fill(root,
    el("div", {class: "panel"},
      el("h2", {}, "运维"),
      el("p", {class: "muted"}, "每 3 秒刷新（配置了密钥的服务需要管理员密钥）。经 Nginx 打开时显示整台机器的所有实例。"),
      ui.status, ui.health, ui.totals,
      el("div", {class: "scroll"}, el("table", {class: "instances"},
        el("thead", {}, el("tr", {}, head.map((h) => el("th", {scope: "col"}, h)))), ui.table)),
      ui.charts,
      el("div", {class: "row"}, el("button", {type: "button", class: "danger", id: "ops-clear", onclick: clearCache}, "清空响应缓存")),
      ui.cleared));
  document.addEventListener("keychange", () => timer && refresh());
}

export function show() {
  refresh();
  timer ||= setInterval(refresh, REFRESH_MS);
}

export function hide() {
  clearInterval(timer);
  timer = null;
}

function interval() {
  return parseFloat(document.body.dataset.metricsInterval) || 60;
}

/** Chart points from the instance's own history ([t, total, p95, errors], cumulative). */
function fromServer(points) {
  const out = [];
  for (let i = 1; i < points.length; i++) {
    const [t0, total0, , errors0] = points[i - 1];
    const [t, total, p95, errors] = points[i];
    if (t > t0) out.push({t, rps: Math.max(0, total - total0) / (t - t0), p95, errors: Math.max(0, errors - errors0) / (t - t0)});
  }
  return out;
}

function record(row, now) {
  // A freshly opened page starts from the past the instance kept (core/ops/history.py).
  const entry = instances.get(row.server_id) || {history: fromServer(row.history || [])};
  const previous = entry.last;
  const fresh = !previous || row.published_at !== previous.published_at;
  if (previous && fresh && row.pid === previous.pid) {
    const dt = row.published_at - previous.published_at;
    if (dt > 0) {
      const errors = ERROR_COUNTERS
        .reduce((sum, name) => sum + Math.max(0, (row[name] || 0) - (previous[name] || 0)), 0);
      entry.history.push({t: row.published_at, rps: Math.max(0, row.total_requests - previous.total_requests) / dt,
        p95: row.latency_ms?.p95 || 0, errors: errors / dt});
      if (entry.history.length > MAX_POINTS) entry.history.splice(0, entry.history.length - MAX_POINTS);
    }
  }
  if (fresh) entry.last = row;
  // Taken from every view, fresh or not: a frozen instance's snapshot keeps its
  // published_at while its age grows.
  entry.age = row.age_s;
  entry.seenAt = now;
  entry.gone = false;
  instances.set(row.server_id, entry);
}

/** "正常" / "滞后" (snapshot older than 1.5 publishing intervals) / "已下线" (left the board). */
function state(entry, newest) {
  if (entry.gone) return ["down", "已下线"];
  const age = entry.age ?? Math.max(0, newest - entry.last.published_at);
  return age > 1.5 * interval() ? ["stale", `滞后 ${Math.round(age)} 秒`] : ["ok", "正常"];
}

async function refresh() {
  if (!canCall()) {
    ui.status.textContent = NEED_KEY;
    return;
  }
  let view;
  try {
    view = await api("/api/metrics", {params: {scope: "fleet"}});
  } catch (exc) {
    ui.status.textContent = "读取失败：" + explain(exc);
    return;
  }
  const now = Date.now() / 1000;
  const seen = new Set();
  for (const row of view.servers || []) {
    record(row, now);
    seen.add(row.server_id);
  }
  for (const [id, entry] of instances) if (!seen.has(id)) entry.gone = true;
  const newest = Math.max(0, ...(view.servers || []).map((r) => r.published_at || 0));
  ui.status.textContent = `${view.instances} 个实例在线${view.degraded ? "（共享存储不可用：只显示当前实例）" : ""} · 更新于 ${new Date().toLocaleTimeString("zh-CN")}`;
  const t = view.totals || {};
  fill(ui.totals, [
    ["总请求", t.total_requests], ["处理中", t.concurrent_requests],
    ["缓存命中率", pct(t.cache_hit_rate)], ["缓存条目", t.cache_size],
    ["429", t.rate_limited_requests], ["503", t.busy_rejections],
  ].map(([name, value]) => el("div", {class: "total"}, el("small", {}, name), el("strong", {}, String(value ?? "–")))));
  fill(ui.table, [...instances.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([id, entry]) => {
    const r = entry.last;
    const [kind, label] = state(entry, newest);
    const last = entry.history[entry.history.length - 1];
    return el("tr", {class: kind, dataset: {server: id, state: kind}},
      el("th", {scope: "row"}, id), el("td", {}, el("span", {class: "badge " + kind}, label)),
      el("td", {class: "num"}, r.pid), el("td", {class: "num"}, duration(r.uptime_s)),
      el("td", {class: "num"}, r.concurrent_requests), el("td", {class: "num"}, last ? formatNumber(last.rps) : "–"),
      el("td", {class: "num"}, `${formatNumber(r.latency_ms?.p95 || 0)} ms`), el("td", {class: "num"}, pct(r.cache_hit_rate)),
      el("td", {class: "num"}, r.rate_limited_requests), el("td", {class: "num"}, r.busy_rejections),
      el("td", {class: "num"}, mib(r.memory_rss_bytes)));
  }));
  drawCharts(now);
  health();
}

function drawCharts(now) {
  const series = (key) => [...instances.entries()].map(([id, e]) => ({name: id, points: e.history.map((h) => [h.t, h[key]])}));
  const box = () => el("div", {class: "chart-box"});
  const boxes = [["请求/秒", "rps", ""], ["p95 延迟", "p95", " ms"], ["错误/秒（429、503、502、504）", "errors", ""]].map(([title, key, unit]) => {
    const target = box();
    const colors = lineChart(target, series(key), {maxSpan: SPAN_S, now, unit});
    return el("figure", {}, el("figcaption", {}, title), target,
      el("p", {class: "legend"}, [...instances.keys()].map((id, n) => el("span", {class: "swatch", dataset: {color: n % colors.length}}, id))));
  });
  fill(ui.charts, boxes);
}

async function health() {
  try {
    const h = await api("/health");
    ui.health.textContent = `当前连接的实例 ${h.server_id}：${Object.entries(h.checks).map(([k, v]) => `${k} ${v}`).join("，")}`;
  } catch (exc) {
    ui.health.textContent = "当前实例健康检查未通过：" + explain(exc);
  }
}

async function clearCache() {
  if (!(await confirmDialog("确定清空所有实例共享的响应缓存吗？之后的相同问题会重新调用大模型。", "清空"))) return;
  try {
    const body = await api("/api/cache/clear", {method: "POST"});
    ui.cleared.textContent = `已清空 ${body.cleared} 条缓存。`;
    toast(ui.cleared.textContent);
  } catch (exc) {
    ui.cleared.textContent = "清空失败：" + explain(exc);
  }
}

const pct = (v) => (typeof v === "number" ? `${(v * 100).toFixed(1)}%` : "–");
const mib = (b) => (typeof b === "number" ? `${(b / 1048576).toFixed(0)} MiB` : "–");
function duration(s) {
  if (typeof s !== "number") return "–";
  if (s < 120) return `${Math.round(s)} 秒`;
  if (s < 7200) return `${Math.round(s / 60)} 分`;
  return `${(s / 3600).toFixed(1)} 时`;
}
