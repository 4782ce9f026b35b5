// Overview: every server as a card or a table row, kept live over one WebSocket.
// Every value is set with textContent, never innerHTML, so hostile names stay text.
import {
  T, fmt, pct, bytes, rate, duration, ratio, el, level, daysUntil, expiryText, trafficText, liveSocket,
} from "./common.js";

const cards = document.getElementById("cards");
const table = document.getElementById("table");
const tbody = table.querySelector("tbody");
const search = document.getElementById("search");
const groupSelect = document.getElementById("group-filter");
const tagBox = document.getElementById("tag-filter");
const sortSelect = document.getElementById("sort");
const servers = new Map(); // id -> entry
const store = {
  get(k, d) { try { return localStorage.getItem("vpsmon." + k) ?? d; } catch { return d; } },
  set(k, v) { try { localStorage.setItem("vpsmon." + k, v); } catch { /* private mode */ } },
};
let activeTags = new Set(JSON.parse(store.get("tags", "[]")));

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
  fill.className = "fill " + level(r);
}
function chip(text, cls) { return el("span", "chip " + (cls || ""), text); }

function createEntry(record) {
  const card = el("article", "card server");
  card.dataset.id = record.id;
  const head = el("header");
  const link = el("a", "name-link");
  link.href = `/servers/${record.id}`;
  link.append(el("h2", "name", record.name));
  head.append(el("span", "dot"), link, el("span", "flag"), el("span", "status muted"));
  const sub = el("p", "sub muted");
  const cpu = meter(T["col.cpu"]), mem = meter(T["col.memory"]), disk = meter(T["col.disk"]);
  const facts = el("dl", "facts");
  for (const key of ["col.load", "col.net", "col.uptime"]) {
    facts.append(el("dt", null, T[key]), el("dd", key.replace("col.", "f-"), "–"));
  }
  const traffic = meter(T["ov.traffic"]);
  traffic.classList.add("traffic");
  const foot = el("footer", "card-foot");
  card.append(head, sub, cpu, mem, disk, facts, traffic, foot);

  // The table row is built when the table is first shown: half the DOM for card users.
  return { record, live: null, card, row: null, meters: { cpu, mem, disk, traffic } };
}

function createRow(entry) {
  const row = document.createElement("tr");
  row.dataset.id = entry.record.id;
  const nameCell = el("td", "name-cell");
  const rowLink = el("a", null, entry.record.name);
  rowLink.href = `/servers/${entry.record.id}`;
  nameCell.append(el("span", "dot"), rowLink);
  row.append(nameCell);
  for (let i = 0; i < 11; i++) row.append(el("td"));
  entry.row = row;
  row.hidden = entry.card.hidden;
  renderRecord(entry);
  render(entry);
  return row;
}

function ensureRows() {
  const fresh = [];
  for (const e of servers.values()) if (!e.row) fresh.push(createRow(e));
  if (fresh.length) { tbody.append(...fresh); applySort(); }
}

function statusText(live, record) {
  if (live.online) return T["overview.online"];
  const seen = live.last_seen ?? record.last_seen;
  if (seen == null) return live.error ? T["overview.offline"] : T["overview.waiting"];
  return fmt(T["ov.last_seen"], { ago: duration(Date.now() / 1000 - seen) });
}

function renderRecord(entry) {
  const r = entry.record, card = entry.card;
  card.querySelector("h2.name").textContent = r.name;
  if (entry.row) entry.row.querySelector(".name-cell a").textContent = r.name;
  const flag = card.querySelector(".flag");
  flag.textContent = r.country_code || "";
  flag.hidden = !r.country_code;
  flag.title = r.region || "";
  const foot = card.querySelector(".card-foot");
  const bits = [];
  if (r.group) bits.push(chip(r.group, "group"));
  for (const t of r.tags || []) bits.push(chip(t, "tag"));
  const days = daysUntil(r.expires_on);
  if (days != null) {
    const exp = chip(`${T["ov.expires"]} ${expiryText(days)}`, "expiry " + (days < 0 ? "crit" : days <= 7 ? "warn" : ""));
    exp.title = r.expires_on;
    bits.push(exp);
  }
  foot.replaceChildren(...bits);
  foot.hidden = bits.length === 0;
}

function render(entry) {
  const live = entry.live || {};
  const r = entry.record;
  const online = !!live.online;
  const status = statusText(live, r);
  entry.card.classList.toggle("offline", !online);
  const st = entry.card.querySelector(".status");
  st.textContent = online ? "" : status;
  st.title = live.error || "";
  const where = [r.region, live.os].filter(Boolean).join(" · ");
  entry.card.querySelector(".sub").textContent = where || "\u00a0";
  const memR = ratio(live.memory_used, live.memory_total), diskR = ratio(live.disk_used, live.disk_total);
  setMeter(entry.meters.cpu, live.cpu, pct(live.cpu));
  setMeter(entry.meters.mem, memR, live.memory_total ? `${bytes(live.memory_used)} / ${bytes(live.memory_total)}` : "–");
  setMeter(entry.meters.disk, diskR, live.disk_total ? `${bytes(live.disk_used)} / ${bytes(live.disk_total, 0)}` : "–");
  const tr = live.traffic;
  const trR = tr && tr.quota ? tr.used / tr.quota : null;
  setMeter(entry.meters.traffic, trR, trafficText(tr));
  entry.meters.traffic.hidden = !tr || (!tr.quota && !tr.used);
  entry.meters.traffic.classList.toggle("no-quota", !!tr && !tr.quota);
  const load = live.load1 == null ? "–" : [live.load1, live.load5, live.load15].map((v) => v.toFixed(2)).join(" ");
  const net = `↓ ${rate(live.net_rx)}  ↑ ${rate(live.net_tx)}`;
  entry.card.querySelector(".f-load").textContent = load;
  entry.card.querySelector(".f-net").textContent = net;
  entry.card.querySelector(".f-uptime").textContent = duration(live.uptime);
  if (!entry.row) return;
  entry.row.classList.toggle("offline", !online);
  const c = entry.row.children;
  c[1].textContent = online ? T["overview.online"] : status;
  c[1].className = online ? "ok" : "bad";
  c[2].textContent = [r.country_code, r.region].filter(Boolean).join(" ") || "–";
  c[3].textContent = pct(live.cpu); c[3].className = "num " + level(live.cpu);
  c[4].textContent = pct(memR); c[4].className = "num " + level(memR);
  c[5].textContent = pct(diskR); c[5].className = "num " + level(diskR);
  c[6].textContent = load; c[6].className = "num";
  c[7].textContent = `${rate(live.net_rx)} / ${rate(live.net_tx)}`; c[7].className = "num";
  c[8].textContent = tr ? (tr.quota ? `${bytes(tr.used)} / ${bytes(tr.quota, 0)}` : bytes(tr.used)) : "–";
  c[8].className = "num " + level(trR);
  c[9].textContent = duration(live.uptime); c[9].className = "num";
  const days = daysUntil(r.expires_on);
  c[10].textContent = expiryText(days);
  c[10].className = days == null ? "" : days < 0 ? "crit" : days <= 7 ? "warn" : "";
  c[11].textContent = live.os || "–";
}

function summary() {
  let online = 0;
  for (const e of servers.values()) if (e.live && e.live.online) online++;
  document.getElementById("summary").textContent = fmt(T["overview.summary"], { online, total: servers.size });
  document.getElementById("empty").hidden = servers.size > 0;
}

function rebuildFilters() {
  const groups = new Set(), tags = new Set();
  for (const e of servers.values()) {
    groups.add(e.record.group || "");
    for (const t of e.record.tags || []) tags.add(t);
  }
  const current = store.get("group", "*");
  const options = [new Option(T["ov.all_groups"], "*")];
  for (const g of [...groups].sort()) options.push(new Option(g || T["ov.ungrouped"], g));
  groupSelect.replaceChildren(...options);
  groupSelect.value = [...groups, "*"].includes(current) ? current : "*";
  groupSelect.hidden = groups.size < 2;
  const chips = [...tags].sort().map((t) => {
    const b = el("button", "chip tag" + (activeTags.has(t) ? " on" : ""), t);
    b.type = "button";
    b.setAttribute("aria-pressed", activeTags.has(t) ? "true" : "false");
    b.addEventListener("click", () => {
      if (activeTags.has(t)) activeTags.delete(t); else activeTags.add(t);
      store.set("tags", JSON.stringify([...activeTags]));
      rebuildFilters(); applyFilter();
    });
    return b;
  });
  activeTags = new Set([...activeTags].filter((t) => tags.has(t)));
  tagBox.replaceChildren(...chips);
  tagBox.hidden = chips.length === 0;
}

const SORTS = {
  name: (a, b) => a.record.name.localeCompare(b.record.name),
  status: (a, b) => Number(!!b.live?.online) - Number(!!a.live?.online) || SORTS.name(a, b),
  cpu: (a, b) => (b.live?.cpu ?? -1) - (a.live?.cpu ?? -1),
  memory: (a, b) => (ratio(b.live?.memory_used, b.live?.memory_total) ?? -1) - (ratio(a.live?.memory_used, a.live?.memory_total) ?? -1),
  net: (a, b) => ((b.live?.net_rx ?? 0) + (b.live?.net_tx ?? 0)) - ((a.live?.net_rx ?? 0) + (a.live?.net_tx ?? 0)),
  traffic: (a, b) => (b.live?.traffic?.used ?? -1) - (a.live?.traffic?.used ?? -1),
  expiry: (a, b) => (daysUntil(a.record.expires_on) ?? 1e9) - (daysUntil(b.record.expires_on) ?? 1e9),
};

function applySort() {
  const sorter = SORTS[sortSelect.value] || SORTS.name;
  const list = [...servers.values()].sort(sorter);
  cards.append(...list.map((e) => e.card));
  const rows = list.filter((e) => e.row).map((e) => e.row);
  if (rows.length) tbody.append(...rows);
}

function applyFilter() {
  const q = search.value.trim().toLowerCase();
  const group = groupSelect.value;
  let shown = 0;
  for (const e of servers.values()) {
    const r = e.record;
    const text = [r.name, r.group, r.region, r.provider, r.country_code, e.live?.os, ...(r.tags || [])].join(" ").toLowerCase();
    let hide = q && !text.includes(q);
    if (group !== "*" && (r.group || "") !== group) hide = true;
    for (const t of activeTags) if (!(r.tags || []).includes(t)) hide = true;
    e.card.hidden = !!hide;
    if (e.row) e.row.hidden = !!hide;
    if (!hide) shown++;
  }
  document.getElementById("no-match").hidden = !(servers.size > 0 && shown === 0);
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
    }
    entry.record = rec;
    entry.live = rec.live;
    renderRecord(entry);
    render(entry);
  }
  for (const [id, e] of servers) {
    if (!seen.has(id)) { e.card.remove(); if (e.row) e.row.remove(); servers.delete(id); }
  }
  if (!table.hidden) ensureRows();
  rebuildFilters(); applySort(); applyFilter(); summary();
}

let refetching = null;
function refetch() {
  if (refetching) return;
  refetching = fetch("/api/servers", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : null))
    .then((body) => { if (body) snapshot(body.servers); })
    .finally(() => { refetching = null; });
}

let sortTimer = null;
function update(live) {
  const entry = servers.get(live.id);
  if (!entry) { refetch(); return; }
  entry.live = live;
  render(entry);
  if (sortSelect.value !== "name" && !sortTimer) {
    // Re-sorting on every scrape would make cards jump; once every few seconds is calm.
    sortTimer = setTimeout(() => { sortTimer = null; applySort(); }, 5000);
  }
}

function setView(view) {
  store.set("view", view);
  cards.hidden = view !== "cards";
  table.hidden = view !== "table";
  if (view === "table") ensureRows();
  for (const v of ["cards", "table"]) {
    const b = document.getElementById("view-" + v);
    b.classList.toggle("current", view === v);
    b.setAttribute("aria-pressed", view === v ? "true" : "false");
  }
}

search.value = store.get("search", "");
sortSelect.value = store.get("sort", "name");
search.addEventListener("input", () => { store.set("search", search.value); applyFilter(); });
groupSelect.addEventListener("change", () => { store.set("group", groupSelect.value); applyFilter(); });
sortSelect.addEventListener("change", () => { store.set("sort", sortSelect.value); applySort(); });
document.getElementById("view-cards").addEventListener("click", () => setView("cards"));
document.getElementById("view-table").addEventListener("click", () => setView("table"));
setView(store.get("view", "cards"));
// Statuses like "last seen 5m ago" age without messages.
setInterval(() => { for (const e of servers.values()) if (!e.live?.online) render(e); }, 30000);
liveSocket((msg) => {
  if (msg.type === "snapshot") snapshot(msg.servers);
  else if (msg.type === "server") { update(msg.server); summary(); }
  else if (msg.type === "servers") { for (const s of msg.servers) update(s); summary(); }
  else if (msg.type === "changed" || msg.type === "removed") refetch();
});
