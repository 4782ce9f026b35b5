// The containers tab (issue #7): the list, Start/Stop/Restart with confirm and a pending state,
// live logs (WebSocket, follow/pause, tail), and inspect details with stats.
// Everything from the server reaches the page with textContent only: container names, images,
// labels and log lines may be hostile.
import { T, fmt, pct, bytes, el, stepUp } from "./common.js";

const SERVER = Number(document.getElementById("page-data").dataset.server);
const API = `/api/servers/${SERVER}`;
const MAX_LINES = 5000; // the log pane keeps this many; older lines leave the page
const POLL_MS = 5000;

const table = document.getElementById("containers");
const tbody = table.querySelector("tbody");
const empty = document.getElementById("containers-empty");
const hint = document.getElementById("docker-hint");
const status = document.getElementById("docker-status");
const panel = document.getElementById("docker-panel");
const panelTitle = document.getElementById("docker-panel-title");
const logBox = document.getElementById("docker-log");
const logState = document.getElementById("docker-log-state");
const pauseButton = document.getElementById("docker-pause");
const followBox = document.getElementById("docker-follow");
const tailSelect = document.getElementById("docker-tail");
const stampBox = document.getElementById("docker-timestamps");
const info = document.getElementById("docker-info");
const raw = document.getElementById("docker-raw");

let capability = null; // {control, reason}
let timer = null;
let active = false;
const pending = new Map(); // container name -> action under way
let rows = []; // the last list shown
let selected = null; // {id, name} in the panel
let view = "logs";

function csrf() {
  const field = document.querySelector("input[name=csrf_token]");
  return field ? field.value : "";
}

async function getJSON(path) {
  const resp = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  let body = {};
  try { body = await resp.json(); } catch { /* not JSON: keep the status */ }
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  return body;
}

function stateText(state) { return T["docker.state." + state] || state || "–"; }

// ------------------------------------------------------------------ list

async function loadCapability() {
  try {
    capability = await getJSON(`${API}/docker`);
  } catch {
    capability = { control: false, reason: null };
  }
  hint.hidden = capability.control || !capability.reason;
  hint.textContent = capability.reason ? T["docker.hint." + capability.reason] || "" : "";
  table.querySelector(".docker-actions-col").hidden = !capability.control;
}

async function loadList() {
  // The exporter's scrape gives CPU and memory; dockerd itself (when we may ask it) gives every
  // container, stopped ones too, with its id and current state.
  let scraped = [];
  try { scraped = (await getJSON(`${API}/containers`)).containers; } catch { /* keep going */ }
  let live = null;
  if (capability && capability.control) {
    try {
      live = (await getJSON(`${API}/docker/containers`)).containers;
      if (status.dataset.kind === "list") { status.textContent = ""; status.dataset.kind = ""; }
    } catch (err) {
      status.textContent = fmt(T["docker.list_failed"], { error: err.message });
      status.className = "docker-status small bad";
      status.dataset.kind = "list";
    }
  }
  const byName = new Map(scraped.map((c) => [c.name, c]));
  if (live) {
    rows = live.map((c) => {
      const s = byName.get(c.name) || {};
      const running = c.state === "running";
      return { ...c, cpu: running ? s.cpu ?? null : null, memory: running ? s.memory ?? null : null };
    });
  } else {
    rows = scraped.map((c) => ({ id: null, name: c.name, image: c.image, state: c.state, status: "", cpu: c.cpu, memory: c.memory }));
  }
  render();
}

function actionButton(c, action) {
  const b = el("button", "small" + (action === "stop" ? " danger" : ""), T["docker." + action]);
  b.type = "button";
  b.dataset.action = action;
  b.addEventListener("click", () => act(c, action));
  return b;
}

function render() {
  const trs = rows.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.name = c.name;
    const busy = pending.get(c.name);
    const state = el("td", "docker-state");
    const label = el("span", c.state === "running" ? "ok" : "muted", busy ? T["docker.pending." + busy] : stateText(c.state));
    if (busy) label.className = "pending";
    state.append(label);
    // "Exited (137)" says how it ended; for a running one the status says nothing more.
    if (c.status && !busy && c.state !== "running") state.append(" ", el("span", "muted small", c.status));
    tr.append(el("td", "docker-name", c.name), el("td", "mono", c.image || "–"), state,
      el("td", "num", c.cpu == null ? "–" : pct(c.cpu)), el("td", "num", bytes(c.memory)));
    if (capability && capability.control) {
      const cell = el("td", "docker-actions");
      const running = c.state === "running" || c.state === "restarting";
      const buttons = running ? [actionButton(c, "stop"), actionButton(c, "restart")] : [actionButton(c, "start")];
      const logs = el("button", "small link", T["docker.logs"]);
      logs.type = "button";
      logs.addEventListener("click", () => openPanel(c, "logs"));
      const details = el("button", "small link", T["docker.details"]);
      details.type = "button";
      details.addEventListener("click", () => openPanel(c, "details"));
      for (const b of buttons) b.disabled = Boolean(busy);
      cell.append(...buttons, logs, details);
      tr.append(cell);
    }
    if (selected && selected.name === c.name) tr.classList.add("selected");
    return tr;
  });
  tbody.replaceChildren(...trs);
  table.hidden = rows.length === 0;
  empty.hidden = rows.length > 0;
}

// Start, stop and restart need a recent step-up (web/docker.py), as file changes do: a 401
// {"reauth"} opens the dialog, and the call is made again once the password or code was
// accepted (the file manager's flow, web/static/files.js).
async function post(path) {
  for (;;) {
    const resp = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf(), "Content-Type": "application/json" },
      body: "{}",
    });
    let body = {};
    try { body = await resp.json(); } catch { /* not JSON */ }
    if (resp.ok) return body;
    if (resp.status === 401 && body.reauth) {
      if (await stepUp(csrf(), { wrong: T["docker.step_up_wrong"], network: T["docker.err.network"] })) continue;
      throw new Error(T["docker.step_up_cancelled"]);
    }
    if (resp.status === 401) location.href = "/login";
    throw new Error(body.error || `HTTP ${resp.status}`);
  }
}


async function act(c, action) {
  if (pending.has(c.name)) return;
  if (!window.confirm(fmt(T["docker.confirm." + action], { name: c.name }))) return;
  pending.set(c.name, action);
  render();
  const ref = encodeURIComponent(c.id || c.name);
  try {
    const body = await post(`${API}/containers/${ref}/${action}`);
    const found = body.container;
    const row = rows.find((r) => r.name === c.name);
    if (row) Object.assign(row, { state: found.state, status: found.status, id: found.id });
    status.textContent = fmt(T["docker.done"], { name: c.name, action: T["docker." + action], state: stateText(found.state) });
    status.className = "docker-status small ok";
    status.dataset.kind = "action";
    // A container that (re)started writes new output: show it from the start of this run.
    if (selected && selected.name === c.name && action !== "stop" && view === "logs") openLogs();
  } catch (err) {
    status.textContent = fmt(T["docker.failed"], { name: c.name, action: T["docker." + action], error: err.message });
    status.className = "docker-status small bad";
    status.dataset.kind = "action";
  } finally {
    pending.delete(c.name);
    render();
    loadList();
  }
}

// ------------------------------------------------------------------ panel: logs and details

let socket = null;
let held = []; // chunks that arrived while paused
let paused = false;
let lineCount = 0;
let statsTimer = null;
let lastStats = null;

function openPanel(c, which) {
  selected = { id: c.id, name: c.name };
  panel.hidden = false;
  panelTitle.textContent = c.name;
  showView(which);
  render();
  panel.scrollIntoView({ block: "nearest" });
}

function closePanel() {
  closeLogs();
  clearInterval(statsTimer);
  selected = null;
  panel.hidden = true;
  render();
}

function showView(which) {
  view = which;
  panel.querySelectorAll(".seg button").forEach((b) => b.classList.toggle("current", b.dataset.view === which));
  document.getElementById("docker-logs-view").hidden = which !== "logs";
  document.getElementById("docker-details-view").hidden = which !== "details";
  clearInterval(statsTimer);
  if (which === "logs") { openLogs(); } else { closeLogs(); loadDetails(); }
}

function closeLogs() {
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
}

function setLogState(text) { logState.textContent = text; }

function openLogs() {
  closeLogs();
  if (!selected) return;
  logBox.replaceChildren();
  lineCount = 0;
  held = [];
  const query = new URLSearchParams({
    tail: tailSelect.value,
    follow: followBox.checked ? "1" : "0",
    timestamps: stampBox.checked ? "1" : "0",
  });
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ref = encodeURIComponent(selected.id || selected.name);
  const ws = new WebSocket(`${proto}//${location.host}${API}/containers/${ref}/logs?${query}`);
  socket = ws;
  let finished = false;
  setLogState(T["docker.log.connecting"]);
  ws.onopen = () => setLogState(followBox.checked ? T["docker.log.live"] : "");
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "log") {
      if (paused) {
        held.push(msg);
        if (held.length > MAX_LINES) held.splice(0, held.length - MAX_LINES);
        setLogState(fmt(T["docker.log.paused"], { count: countLines(held) }));
      } else {
        append([msg]);
      }
    } else if (msg.type === "end") {
      finished = true;
      setLogState(T["docker.log.ended"]);
      if (!logBox.childNodes.length) logBox.append(el("span", "muted", T["docker.log.empty"]));
    } else if (msg.type === "error") {
      finished = true;
      setLogState(fmt(T["docker.log.error"], { error: msg.error }));
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    socket = null;
    if (!finished) setLogState(T["docker.log.closed"]);
  };
}

function countLines(chunks) {
  let n = 0;
  for (const c of chunks) n += (c.data.match(/\n/g) || []).length;
  return n;
}

function append(chunks) {
  const atBottom = logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 24;
  const spans = chunks.map((c) => {
    const span = el("span", c.stream === "stderr" ? "stderr" : null, c.data);
    span.dataset.lines = String((c.data.match(/\n/g) || []).length);
    lineCount += Number(span.dataset.lines);
    return span;
  });
  logBox.append(...spans);
  let trimmed = false;
  while (lineCount > MAX_LINES && logBox.firstChild) {
    lineCount -= Number(logBox.firstChild.dataset?.lines || 0);
    logBox.firstChild.remove();
    trimmed = true;
  }
  if (trimmed) logBox.title = fmt(T["docker.log.trimmed"], { count: MAX_LINES });
  if (atBottom) logBox.scrollTop = logBox.scrollHeight;
}

function togglePause() {
  paused = !paused;
  pauseButton.textContent = paused ? T["docker.log.resume"] : T["docker.log.pause"];
  pauseButton.classList.toggle("current", paused);
  if (!paused) {
    append(held);
    held = [];
    setLogState(socket ? (followBox.checked ? T["docker.log.live"] : "") : logState.textContent);
  } else {
    setLogState(fmt(T["docker.log.paused"], { count: 0 }));
  }
}

function addInfo(key, value) {
  if (value == null || value === "" || (Array.isArray(value) && !value.length)) return;
  info.append(el("dt", null, T["docker.info." + key]), el("dd", key === "id" || key === "command" ? "mono" : null, String(value)));
}

function when(iso) {
  if (!iso || iso.startsWith("0001-")) return null;
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

async function loadDetails() {
  if (!selected) return;
  const ref = encodeURIComponent(selected.id || selected.name);
  info.replaceChildren(el("dd", "muted", T["docker.info.loading"]));
  raw.textContent = "";
  try {
    const { inspect: doc } = await getJSON(`${API}/containers/${ref}/inspect`);
    const state = doc.State || {};
    const config = doc.Config || {};
    const host = doc.HostConfig || {};
    info.replaceChildren();
    addInfo("id", doc.Id);
    addInfo("image", config.Image || doc.Image);
    addInfo("command", [...(config.Entrypoint || []), ...(config.Cmd || [])].join(" "));
    addInfo("created", when(doc.Created));
    addInfo("state", stateText(state.Status));
    addInfo("started", when(state.StartedAt));
    if (state.Status !== "running") { addInfo("finished", when(state.FinishedAt)); addInfo("exit_code", state.ExitCode); }
    addInfo("restarts", doc.RestartCount);
    addInfo("restart_policy", host.RestartPolicy && host.RestartPolicy.Name);
    addInfo("health", state.Health && state.Health.Status);
    const ports = Object.entries((doc.NetworkSettings || {}).Ports || {}).map(([p, binds]) =>
      binds && binds.length ? binds.map((b) => `${b.HostIp || ""}:${b.HostPort} → ${p}`).join(", ") : p);
    addInfo("ports", ports.join(", "));
    addInfo("mounts", (doc.Mounts || []).map((m) => `${m.Source || m.Name} → ${m.Destination}${m.RW === false ? " (ro)" : ""}`).join(", "));
    addInfo("networks", Object.keys((doc.NetworkSettings || {}).Networks || {}).join(", ") || host.NetworkMode);
    addInfo("labels", Object.entries(config.Labels || {}).map(([k, v]) => `${k}=${v}`).join(", "));
    for (const k of ["cpu", "memory", "pids", "net", "block"]) {
      const dd = el("dd", "num", "–");
      dd.dataset.stat = k;
      info.append(el("dt", null, T["docker.info." + k]), dd);
    }
    raw.textContent = JSON.stringify(doc, null, 2);
    lastStats = null;
    if (state.Status === "running") {
      // CPU needs two samples: take the second one soon, then every POLL_MS.
      loadStats().then(() => setTimeout(loadStats, 1000));
      statsTimer = setInterval(loadStats, POLL_MS);
    }
  } catch (err) {
    info.replaceChildren(el("dd", "bad", err.message));
  }
}

async function loadStats() {
  if (!selected || view !== "details") return;
  const ref = encodeURIComponent(selected.id || selected.name);
  let s;
  try { ({ stats: s } = await getJSON(`${API}/containers/${ref}/stats`)); } catch { return; }
  const set = (k, v) => { const e = info.querySelector(`[data-stat="${k}"]`); if (e) e.textContent = v; };
  if (lastStats && s.cpu_total != null && s.system_total > lastStats.system_total) {
    const share = ((s.cpu_total - lastStats.cpu_total) / (s.system_total - lastStats.system_total)) * (s.online_cpus || 1);
    set("cpu", pct(Math.max(0, share)));
  }
  lastStats = s;
  set("memory", s.memory_limit ? `${bytes(s.memory)} / ${bytes(s.memory_limit)}` : bytes(s.memory));
  set("pids", s.pids == null ? "–" : String(s.pids));
  set("net", `↓ ${bytes(s.net_rx)} ↑ ${bytes(s.net_tx)}`);
  set("block", `${bytes(s.block_read)} / ${bytes(s.block_write)}`);
}

panel.querySelectorAll(".seg button").forEach((b) => b.addEventListener("click", () => showView(b.dataset.view)));
document.getElementById("docker-panel-close").addEventListener("click", closePanel);
document.getElementById("docker-clear").addEventListener("click", () => { logBox.replaceChildren(); lineCount = 0; held = []; });
pauseButton.addEventListener("click", togglePause);
for (const input of [followBox, tailSelect, stampBox]) input.addEventListener("change", () => { if (view === "logs") openLogs(); });
window.addEventListener("pagehide", closeLogs);

// ------------------------------------------------------------------ the tab

export async function showContainers() {
  active = true;
  if (capability === null) await loadCapability();
  if (!active) return;
  await loadList();
  clearInterval(timer);
  timer = setInterval(() => { if (!pending.size) loadList(); }, POLL_MS);
  if (selected && view === "logs" && !socket) openLogs();
  if (selected && view === "details") loadDetails();
}

export function hideContainers() {
  active = false;
  clearInterval(timer);
  clearInterval(statsTimer);
  closeLogs(); // a hidden tab keeps no `docker logs -f` running on the server
}
