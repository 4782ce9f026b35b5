// Server detail: live and historical charts (uPlot), host facts, containers.
// One JSON request per range; live points arrive over the page's one WebSocket.
import {
  T, fmt, pct, bytes, rate, duration, ratio, el, trafficText, liveSocket,
} from "./common.js";
import { showContainers, hideContainers } from "./docker.js";

const data = document.getElementById("page-data").dataset;
const SERVER = Number(data.server);
const LIVE_WINDOW = 30 * 60; // seconds of history the live view keeps
const chartsBox = document.getElementById("charts");
const loadState = document.getElementById("load-state");
const resetZoom = document.getElementById("reset-zoom");
const PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16",
  "#f97316", "#6366f1", "#14b8a6", "#a855f7"];
const ORDER = ["cpu", "memory", "load", "net", "disk", "diskio", "tcp", "procs", "temp"];
const plots = new Map(); // chart id -> {plot, names, card}
// Dates and times in the page's language (uPlot's own axis labels are English: "Nov 22", "3pm").
const LANG = document.documentElement.lang || "en";
const DAY_FMT = new Intl.DateTimeFormat(LANG, { month: "short", day: "numeric" });
const TIME_FMT = new Intl.DateTimeFormat(LANG, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const SECOND_FMT = new Intl.DateTimeFormat(LANG, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
const FULL_FMT = new Intl.DateTimeFormat(LANG, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});
const fullDate = (seconds) => FULL_FMT.format(new Date(seconds * 1000));

// x-axis tick labels: days when ticks are a day or more apart, else times, with the day under
// the first tick of each day.
function timeTicks(u, splits, axisIdx, space, incr) {
  let lastDay = null;
  return splits.map((s) => {
    if (s == null) return "";
    const d = new Date(s * 1000);
    const day = DAY_FMT.format(d);
    if (incr >= 86400) return day;
    const time = (incr < 60 ? SECOND_FMT : TIME_FMT).format(d);
    const label = day !== lastDay ? `${time}\n${day}` : time;
    lastDay = day;
    return label;
  });
}
let mode = { range: "live" };
let liveData = null; // {t: [], charts: {id: {unit, names, values: {name: []}}}}
let lastLive = null;

// ------------------------------------------------------------------ stats and host facts

function renderStats(live) {
  const set = (k, v) => { const e = document.querySelector(`#stats [data-k="${k}"]`); if (e) e.textContent = v; };
  set("cpu", pct(live.cpu));
  set("memory", live.memory_total ? `${pct(ratio(live.memory_used, live.memory_total))} · ${bytes(live.memory_used)}` : "–");
  set("disk", live.disk_total ? `${pct(ratio(live.disk_used, live.disk_total))} · ${bytes(live.disk_total, 0)}` : "–");
  set("load", live.load1 == null ? "–" : [live.load1, live.load5, live.load15].map((v) => v.toFixed(2)).join(" "));
  set("net", `↓ ${rate(live.net_rx)} ↑ ${rate(live.net_tx)}`);
  set("uptime", duration(live.uptime));
  const tr0 = live.traffic;
  set("traffic", !tr0 ? "–" : tr0.quota ? `${pct(tr0.used / tr0.quota)} · ${bytes(tr0.used)}` : bytes(tr0.used));
  const dot = document.getElementById("d-dot");
  dot.classList.toggle("down", !live.online);
  const status = document.getElementById("d-status");
  if (live.online) status.textContent = "";
  else if (live.last_seen) status.textContent = fmt(T["ov.last_seen"], { ago: duration(Date.now() / 1000 - live.last_seen) });
  else status.textContent = T["ov.never_seen"];
  const host = (k, v) => { const e = document.querySelector(`#host-info [data-k="${k}"]`); if (e && v != null && v !== "") e.textContent = v; };
  host("hostname", live.hostname); host("os", live.os); host("kernel", live.kernel); host("arch", live.arch);
  host("cpu_model", live.cpu_model); host("cores", live.cores); host("virtualization", live.virtualization);
  host("memory_total", live.memory_total ? bytes(live.memory_total) : null);
  host("swap_total", live.swap_total != null ? bytes(live.swap_total) : null);
  host("boot_time", live.boot_time ? fullDate(live.boot_time) : null);
  const tr = live.traffic;
  if (tr) {
    document.getElementById("traffic-detail").textContent =
      `${trafficText(tr)} (↓ ${bytes(tr.rx)} ↑ ${bytes(tr.tx)}) · ` + fmt(T["detail.record.period"], { start: tr.period_start, end: tr.period_end });
  }
}

// ------------------------------------------------------------------ charts

function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

const UNIT_FMT = {
  percent: (v) => (v == null ? "–" : v.toFixed(v < 10 ? 1 : 0) + "%"),
  bytes: (v) => bytes(v),
  "bytes/s": (v) => rate(v),
  number: (v) => (v == null ? "–" : Math.abs(v) >= 100 ? v.toFixed(0) : String(+v.toFixed(2))),
  celsius: (v) => (v == null ? "–" : v.toFixed(1) + " °C"),
};

// Axis steps that are round in binary units (1, 2, 4 … 512 × 1024^k), so ticks read 2 GiB, 4 GiB.
const BYTE_INCRS = [];
for (let k = 0; k < 6; k++) for (const m of [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]) BYTE_INCRS.push(m * 1024 ** k);

function seriesLabel(chartId, name) {
  const key = {
    memory: { used: "detail.s.used", cache: "detail.s.cache", swap: "detail.s.swap" },
    diskio: { read: "detail.s.read", write: "detail.s.write" },
    tcp: { established: "detail.s.established", inuse: "detail.s.inuse", tw: "detail.s.tw" },
    procs: { running: "detail.s.running", blocked: "detail.s.blocked" },
  }[chartId]?.[name];
  if (key) return T[key];
  if (chartId === "cpu" && T["detail.mode." + name]) return T["detail.mode." + name];
  if (chartId === "load") return name + "m";
  if (chartId === "net") return name.replace(/ rx$/, " ↓").replace(/ tx$/, " ↑");
  return name;
}

function chartCard(id) {
  const card = el("section", "card chart");
  card.dataset.chart = id;
  const head = el("header", "chart-head");
  head.append(el("h2", null, T["detail.chart." + id] || id));
  const body = el("div", "plot");
  card.append(head, body);
  return card;
}

function makePlot(id, unit, names, columns, t) {
  const card = chartCard(id);
  const body = card.querySelector(".plot");
  const fmtv = UNIT_FMT[unit] || UNIT_FMT.number;
  const grid = { stroke: css("--line"), width: 1 };
  const axis = { stroke: css("--muted"), grid, ticks: { stroke: css("--line"), width: 1 }, font: "11px system-ui, sans-serif" };
  const single = names.length === 1 || id === "cpu" || id === "memory";
  const opts = {
    width: Math.max(280, body.clientWidth || 500),
    height: 200,
    // Dragging selects a range; we load it (finer data) instead of stretching these points.
    cursor: { sync: { key: "vpsmon-detail" }, drag: { x: true, y: false, setScale: false } },
    legend: { live: true },
    scales: { x: { time: true }, y: id === "cpu" || id === "disk" ? { range: [0, 100] } : { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
    axes: [
      { ...axis, values: timeTicks, size: 44 },
      { ...axis, size: unit === "bytes/s" ? 78 : unit === "bytes" ? 70 : 52, values: (u, vals) => vals.map(fmtv),
        ...(unit === "bytes" || unit === "bytes/s" ? { incrs: BYTE_INCRS } : {}) },
    ],
    series: [
      { label: T["detail.time"], value: (u, v) => (v == null ? "–" : fullDate(v)) },
      ...names.map((n, i) => ({
        label: seriesLabel(id, n),
        stroke: PALETTE[i % PALETTE.length],
        width: 1.5,
        fill: single && i < 3 ? PALETTE[i % PALETTE.length] + "22" : undefined,
        value: (u, v) => fmtv(v),
        spanGaps: false,
        points: { show: false },
      })),
    ],
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 5) return;
        const start = u.posToVal(u.select.left, "x"), end = u.posToVal(u.select.left + u.select.width, "x");
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        zoomTo(start, end);
      }],
    },
  };
  const plot = new uPlot(opts, [t, ...columns], body);
  return { plot, names, card, unit };
}

function draw(payload) {
  // payload: {t: [...], charts: [{id, unit, series: [{name, values}]}]}
  const seen = new Set();
  const list = [...payload.charts].sort((a, b) => ORDER.indexOf(a.id) - ORDER.indexOf(b.id));
  for (const c of list) {
    seen.add(c.id);
    const names = c.series.map((s) => s.name);
    const columns = c.series.map((s) => s.values);
    const old = plots.get(c.id);
    if (old && old.names.join("\u0000") === names.join("\u0000")) {
      old.plot.setData([payload.t, ...columns]);
      continue;
    }
    if (old) { old.plot.destroy(); old.card.remove(); }
    const entry = makePlot(c.id, c.unit, names, columns, payload.t);
    plots.set(c.id, entry);
  }
  for (const [id, p] of plots) if (!seen.has(id)) { p.plot.destroy(); p.card.remove(); plots.delete(id); }
  // Keep the cards in a fixed order.
  for (const id of ORDER) { const p = plots.get(id); if (p) chartsBox.append(p.card); }
  for (const p of plots.values()) p.plot.setSize({ width: p.card.querySelector(".plot").clientWidth, height: 200 });
  const empty = payload.charts.length === 0;
  loadState.textContent = empty ? T["detail.no_data"] : "";
}

new ResizeObserver(() => {
  for (const p of plots.values()) {
    const w = p.card.querySelector(".plot").clientWidth;
    if (w && Math.abs(w - p.plot.width) > 2) p.plot.setSize({ width: w, height: 200 });
  }
}).observe(chartsBox);

// ------------------------------------------------------------------ ranges

let loadSeq = 0;
async function load(query) {
  const seq = ++loadSeq;
  loadState.textContent = T["detail.loading"];
  chartsBox.classList.add("loading");
  try {
    const resp = await fetch(`/api/servers/${SERVER}/history?${query}`, { credentials: "same-origin" });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || resp.status);
    if (seq !== loadSeq) return null;
    return body;
  } catch (err) {
    if (seq === loadSeq) loadState.textContent = fmt(T["detail.load_failed"], { error: err.message });
    return null;
  } finally {
    if (seq === loadSeq) chartsBox.classList.remove("loading");
  }
}

function toLive(body) {
  // A server added a minute ago has a minute of data: start the live window at its first point.
  let first = body.t.length;
  for (const c of body.charts) for (const s of c.series) {
    const i = s.values.findIndex((v) => v != null);
    if (i >= 0 && i < first) first = i;
  }
  first = Math.max(0, Math.min(first, body.t.length - 1) - 1);
  body = { ...body, t: body.t.slice(first), charts: body.charts.map((c) => ({ ...c, series: c.series.map((s) => ({ ...s, values: s.values.slice(first) })) })) };
  const charts = {};
  for (const c of body.charts) {
    charts[c.id] = { unit: c.unit, names: c.series.map((s) => s.name), values: Object.fromEntries(c.series.map((s) => [s.name, s.values])) };
  }
  return { t: body.t, charts };
}
function fromLive(ld) {
  return {
    t: ld.t,
    charts: Object.entries(ld.charts).map(([id, c]) => ({ id, unit: c.unit, series: c.names.map((n) => ({ name: n, values: c.values[n] })) })),
  };
}
const UNITS = { cpu: "percent", memory: "bytes", load: "number", disk: "percent", diskio: "bytes/s", net: "bytes/s", tcp: "number", procs: "number", temp: "celsius" };

function addPoint(point) {
  if (!liveData || mode.range !== "live" || mode.zoomed) return;
  const t = liveData.t;
  if (t.length && point.t <= t[t.length - 1]) return;
  t.push(point.t);
  const n = t.length;
  for (const [id, values] of Object.entries(point.charts)) {
    let c = liveData.charts[id];
    if (!c) c = liveData.charts[id] = { unit: UNITS[id] || "number", names: [], values: {} };
    for (const [name, v] of Object.entries(values)) {
      if (!c.values[name]) { c.names.push(name); c.values[name] = new Array(n - 1).fill(null); }
      c.values[name].push(v);
    }
  }
  for (const c of Object.values(liveData.charts)) for (const name of c.names) if (c.values[name].length < n) c.values[name].push(null);
  // Drop what scrolled out of the window.
  let drop = 0;
  while (drop < t.length && t[drop] < point.t - LIVE_WINDOW) drop++;
  if (drop) {
    t.splice(0, drop);
    for (const c of Object.values(liveData.charts)) for (const name of c.names) c.values[name].splice(0, drop);
  }
  draw(fromLive(liveData));
}

async function showRange(range, query) {
  mode = { range, zoomed: false };
  resetZoom.hidden = true;
  document.querySelectorAll("#ranges button").forEach((b) => b.classList.toggle("current", b.dataset.range === range));
  const now = Date.now() / 1000;
  const body = await load(query || (range === "live" ? `start=${now - LIVE_WINDOW}&end=${now}` : `range=${range}`));
  if (!body) return;
  if (range === "live") { liveData = toLive(body); draw(fromLive(liveData)); } else draw(body);
}

async function zoomTo(start, end) {
  if (!(end > start)) return;
  const previous = mode;
  const body = await load(`start=${start.toFixed(3)}&end=${end.toFixed(3)}`);
  if (!body) return;
  mode = { range: previous.range, zoomed: true, back: previous.back || previous };
  resetZoom.hidden = false;
  draw(body);
}

resetZoom.addEventListener("click", () => {
  const back = mode.back || { range: "live" };
  if (back.range === "custom") showRange("custom", back.query); else showRange(back.range);
});

document.querySelectorAll("#ranges button").forEach((b) => b.addEventListener("click", () => {
  const form = document.getElementById("custom-range");
  if (b.dataset.range === "custom") {
    form.hidden = !form.hidden;
    if (!form.from.value) {
      const pad = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
      const now = new Date();
      form.from.value = pad(new Date(now.getTime() - 2 * 86400000));
      form.to.value = pad(now);
    }
    return;
  }
  form.hidden = true;
  showRange(b.dataset.range);
}));

document.getElementById("custom-range").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const start = new Date(f.from.value).getTime() / 1000, end = new Date(f.to.value).getTime() / 1000;
  if (!(end > start)) { loadState.textContent = T["detail.bad_range"]; return; }
  const query = `start=${start}&end=${end}`;
  mode = { range: "custom", query };
  showRange("custom", query).then(() => { mode.query = query; });
});

// ------------------------------------------------------------------ tabs and containers

document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
  const name = tab.dataset.tab;
  document.querySelectorAll(".tab").forEach((t) => {
    t.classList.toggle("current", t === tab);
    t.setAttribute("aria-selected", t === tab ? "true" : "false");
  });
  for (const panel of ["charts", "host", "containers"]) document.getElementById("tab-" + panel).hidden = panel !== name;
  if (name === "containers") showContainers(); else hideContainers();
  if (name === "charts") for (const p of plots.values()) p.plot.setSize({ width: p.card.querySelector(".plot").clientWidth, height: 200 });
}));

// ------------------------------------------------------------------ start

lastLive = JSON.parse(data.live);
const initialTraffic = JSON.parse(data.traffic);
if (initialTraffic && !lastLive.traffic) lastLive.traffic = initialTraffic;
renderStats(lastLive);
showRange("live");
liveSocket((msg) => {
  if (msg.type === "snapshot") {
    const me = msg.servers.find((s) => s.id === SERVER);
    if (me) { lastLive = me.live; renderStats(lastLive); }
  } else if (msg.type === "server" && msg.server.id === SERVER) {
    lastLive = msg.server; renderStats(lastLive);
  } else if (msg.type === "servers") {
    const me = msg.servers.find((s) => s.id === SERVER);
    if (me) { lastLive = me; renderStats(lastLive); }
  } else if (msg.type === "point" && msg.id === SERVER && msg.point) {
    addPoint(msg.point);
  } else if (msg.type === "removed" && msg.id === SERVER) {
    location.href = "/";
  }
}, (ws) => ws.send(JSON.stringify({ watch: SERVER })));
