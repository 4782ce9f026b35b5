// Overview: the server list, kept live over one WebSocket. Every value is set with
// textContent, never innerHTML, so hostile names stay text.
const T = JSON.parse(document.getElementById("messages").dataset.json);
const cards = document.getElementById("cards");
const tbody = document.querySelector("#table tbody");
const table = document.getElementById("table");
const search = document.getElementById("search");
const servers = new Map(); // id -> {record, live, card, row}

function fmt(template, values) {
  return template.replace(/\{(\w+)\}/g, (_, k) => values[k]);
}
function pct(ratio) {
  return ratio == null ? "–" : (ratio * 100).toFixed(1) + "%";
}
function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}
function rate(n) { return n == null ? "–" : bytes(n) + "/s"; }
function duration(s) {
  if (s == null) return "–";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}${T["unit.days"]} ${h}${T["unit.hours"]}`;
  if (h) return `${h}${T["unit.hours"]} ${m}${T["unit.minutes"]}`;
  return `${m}${T["unit.minutes"]}`;
}
function ratio(used, total) { return used == null || !total ? null : used / total; }
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}
function meter(label) {
  const wrap = el("div", "meter");
  wrap.append(el("span", "meter-label", label), el("span", "meter-value", "–"));
  const bar = el("div", "bar"); bar.append(el("div", "fill"));
  wrap.append(bar);
  return wrap;
}
function setMeter(m, r, text) {
  m.querySelector(".meter-value").textContent = text;
  const fill = m.querySelector(".fill");
  fill.style.width = r == null ? "0" : Math.min(100, r * 100).toFixed(1) + "%";
  fill.className = "fill" + (r > 0.9 ? " crit" : r > 0.75 ? " warn" : "");
}

function createEntry(record) {
  const card = el("article", "card server");
  card.dataset.id = record.id;
  const head = el("header");
  head.append(el("span", "dot"), el("h2", "name", record.name), el("span", "status muted"));
  card.append(head, el("p", "os muted"));
  const cpu = meter(T["col.cpu"]), mem = meter(T["col.memory"]), disk = meter(T["col.disk"]);
  card.append(cpu, mem, disk);
  const facts = el("dl", "facts");
  for (const key of ["col.load", "col.net", "col.uptime"]) {
    facts.append(el("dt", null, T[key]), el("dd", key.replace("col.", "f-"), "–"));
  }
  card.append(facts);
  const row = document.createElement("tr");
  row.dataset.id = record.id;
  for (let i = 0; i < 9; i++) row.append(el("td"));
  row.children[0].textContent = record.name;
  return { record, live: null, card, row, meters: { cpu, mem, disk } };
}

function render(entry) {
  const live = entry.live || {};
  const online = !!live.online;
  const status = online ? T["overview.online"]
    : live.last_seen == null && !live.error ? T["overview.waiting"] : T["overview.offline"];
  entry.card.classList.toggle("offline", !online);
  entry.card.querySelector(".status").textContent = status;
  entry.card.querySelector(".status").title = live.error || "";
  entry.card.querySelector(".os").textContent = [live.os, live.kernel].filter(Boolean).join(" · ") || "\u00a0";
  const memR = ratio(live.memory_used, live.memory_total), diskR = ratio(live.disk_used, live.disk_total);
  setMeter(entry.meters.cpu, live.cpu, pct(live.cpu));
  setMeter(entry.meters.mem, memR, live.memory_total ? `${bytes(live.memory_used)} / ${bytes(live.memory_total)}` : "–");
  setMeter(entry.meters.disk, diskR, live.disk_total ? `${bytes(live.disk_used)} / ${bytes(live.disk_total)}` : "–");
  const load = live.load1 == null ? "–" : [live.load1, live.load5, live.load15].map((v) => v.toFixed(2)).join(" ");
  const net = `${rate(live.net_rx)} / ${rate(live.net_tx)}`;
  entry.card.querySelector(".f-load").textContent = load;
  entry.card.querySelector(".f-net").textContent = net;
  entry.card.querySelector(".f-uptime").textContent = duration(live.uptime);
  const cells = entry.row.children;
  cells[1].textContent = status;
  cells[1].className = online ? "ok" : "bad";
  cells[2].textContent = pct(live.cpu);
  cells[3].textContent = pct(memR);
  cells[4].textContent = pct(diskR);
  cells[5].textContent = load;
  cells[6].textContent = net;
  cells[7].textContent = duration(live.uptime);
  cells[8].textContent = live.os || "–";
}

function summary() {
  let online = 0;
  for (const e of servers.values()) if (e.live && e.live.online) online++;
  document.getElementById("summary").textContent = fmt(T["overview.summary"], { online, total: servers.size });
  document.getElementById("empty").hidden = servers.size > 0;
}

function applyFilter() {
  const q = search.value.trim().toLowerCase();
  for (const e of servers.values()) {
    const text = [e.record.name, e.record.group, ...(e.record.tags || [])].join(" ").toLowerCase();
    const hide = q && !text.includes(q);
    e.card.hidden = hide; e.row.hidden = hide;
  }
}

function snapshot(list) {
  if (servers.size === 0) { cards.replaceChildren(); tbody.replaceChildren(); }
  const seen = new Set();
  for (const rec of list) {
    seen.add(rec.id);
    let entry = servers.get(rec.id);
    if (!entry) {
      entry = createEntry(rec);
      servers.set(rec.id, entry);
      cards.append(entry.card);
      tbody.append(entry.row);
    }
    entry.record = rec;
    entry.live = rec.live;
    render(entry);
  }
  for (const [id, e] of servers) if (!seen.has(id)) { e.card.remove(); e.row.remove(); servers.delete(id); }
  summary(); applyFilter();
}

function update(live) {
  const entry = servers.get(live.id);
  if (!entry) return;
  entry.live = live;
  render(entry);
  summary();
}

function setView(view) {
  localStorage.setItem("vpsmon.view", view);
  cards.hidden = view !== "cards";
  table.hidden = view !== "table";
  document.getElementById("view-cards").classList.toggle("current", view === "cards");
  document.getElementById("view-table").classList.toggle("current", view === "table");
}

function connect(delay = 1000) {
  const badge = document.getElementById("live-status");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/api/live`);
  ws.onopen = () => { badge.textContent = T["live.connected"]; badge.className = "pill on"; delay = 1000; };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "snapshot") snapshot(msg.servers);
    else if (msg.type === "server") update(msg.server);
  };
  ws.onclose = () => {
    badge.textContent = T["live.disconnected"]; badge.className = "pill off";
    setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
  };
}

search.addEventListener("input", applyFilter);
document.getElementById("view-cards").addEventListener("click", () => setView("cards"));
document.getElementById("view-table").addEventListener("click", () => setView("table"));
setView(localStorage.getItem("vpsmon.view") || "cards");
connect();
