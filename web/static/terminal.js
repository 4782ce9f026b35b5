// The web terminal (web/terminal.py): xterm.js tabs, each one WebSocket bridged to the
// exporter's Pty. Text from the server reaches the page through xterm.js or textContent only.
import { Terminal } from "./vendor/xterm/xterm.mjs";
import { FitAddon } from "./vendor/xterm/addon-fit.mjs";
import { T, fmt, el, stepUp } from "./common.js";

const data = document.getElementById("page-data").dataset;
const serverId = data.server;
const csrf = data.csrf;
const STEP_UP = { wrong: T["terminal.step_up_wrong"], network: T["terminal.err.network"] };
const tabsBar = document.getElementById("term-tabs");
const newButton = document.getElementById("term-new");
const panes = document.getElementById("term-panes");
const stateBadge = document.getElementById("term-state");
const stateDetail = document.getElementById("term-detail");
const encoder = new TextEncoder();

const sessions = [];
let current = null;
let counter = 0;

// ------------------------------------------------------------------ step-up

// Asks the server whether a terminal may open now (the same checks as the WebSocket, as JSON:
// a refused WebSocket handshake tells the page nothing). On 401 {"reauth"} the dialog asks
// for the password or TOTP code, posts it to /api/reauth, and the check runs again.
async function mayOpen() {
  for (;;) {
    const resp = await fetch(`/api/servers/${serverId}/terminal`, { credentials: "same-origin" });
    if (resp.ok) return { ok: true };
    let body = {};
    try { body = await resp.json(); } catch { /* not JSON: a proxy's page */ }
    if (resp.status === 401 && body.reauth) {
      if (!(await stepUp(csrf, STEP_UP))) return { ok: false, message: T["terminal.step_up_cancelled"] };
      continue;
    }
    if (resp.status === 401) { location.href = "/login"; return { ok: false, message: "" }; }
    return { ok: false, message: body.error || `HTTP ${resp.status}` };
  }
}


// ------------------------------------------------------------------ sessions

function showState(session) {
  if (session !== current) return;
  stateBadge.textContent = T[`terminal.state.${session.state}`];
  stateBadge.className = "pill " + (session.state === "connected" ? "on" : "off");
  stateDetail.textContent = "";
  for (const part of session.details) {
    if (stateDetail.childNodes.length) stateDetail.append(" · ");
    if (part.href) {
      const a = el("a", null, part.text);
      a.href = part.href;
      a.target = "_blank";
      a.rel = "noopener";
      stateDetail.append(a);
    } else {
      stateDetail.append(part.text);
    }
  }
  session.tab.classList.toggle("ended", session.state === "closed" || session.state === "error");
}

function setState(session, state, details) {
  session.state = state;
  if (details) session.details = details;
  showState(session);
}

function select(session) {
  current = session;
  for (const s of sessions) {
    const on = s === session;
    s.pane.hidden = !on;
    s.tab.classList.toggle("current", on);
    s.tab.setAttribute("aria-selected", on ? "true" : "false");
  }
  showState(session);
  session.fit.fit();
  session.term.focus();
}

function closeSession(session) {
  if (session.ws && session.ws.readyState <= WebSocket.OPEN) session.ws.close(1000);
  session.term.dispose();
  session.pane.remove();
  session.tab.remove();
  sessions.splice(sessions.indexOf(session), 1);
  if (current === session) {
    current = null;
    if (sessions.length) select(sessions[sessions.length - 1]);
    else { stateBadge.textContent = T["terminal.state.idle"]; stateBadge.className = "pill off"; stateDetail.textContent = ""; }
  }
}

// Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes (plain Ctrl+C/V stay the shell's
// interrupt and literal-next). The browser's own copy and paste (menu, Ctrl+Insert …) work too.
function clipboardKeys(term) {
  return (ev) => {
    if (ev.type !== "keydown" || !ev.ctrlKey || !ev.shiftKey || ev.altKey || ev.metaKey) return true;
    const key = ev.key.toLowerCase();
    if (key === "c") {
      ev.preventDefault();  // Chromium's Ctrl+Shift+C opens the inspector
      const text = term.getSelection();
      if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
      return false;
    }
    if (key === "v") {
      if (navigator.clipboard && navigator.clipboard.readText) {
        ev.preventDefault();
        navigator.clipboard.readText().then((text) => term.paste(text)).catch(() => {});
      }
      // Without the clipboard API the browser's paste event reaches xterm.js by itself.
      return false;
    }
    return true;
  };
}

async function openSession() {
  counter += 1;
  const n = counter;
  const pane = el("div", "term-pane");
  panes.append(pane);
  const tab = el("button", "term-tab");
  tab.type = "button";
  tab.setAttribute("role", "tab");
  tab.dataset.n = String(n);
  const label = el("span", null, fmt(T["terminal.tab"], { n }));
  const close = el("span", "term-close", "×");
  close.title = T["terminal.close_tab"];
  close.setAttribute("role", "button");
  tab.append(label, close);
  tabsBar.insertBefore(tab, newButton);
  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", "Noto Sans Mono CJK SC", monospace',
    fontSize: 14,
    scrollback: 5000,
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.attachCustomKeyEventHandler(clipboardKeys(term));
  term.open(pane);
  const session = { n, pane, tab, term, fit, ws: null, state: "connecting", details: [] };
  sessions.push(session);
  tab.onclick = (ev) => { if (ev.target === close) closeSession(session); else select(session); };
  select(session);
  setState(session, "connecting", []);

  const check = await mayOpen();
  if (!check.ok) { setState(session, "error", [{ text: check.message }]); return; }
  fit.fit();
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/ws/servers/${serverId}/pty?cols=${term.cols}&rows=${term.rows}`);
  ws.binaryType = "arraybuffer";
  session.ws = ws;
  let ended = false;
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") { term.write(new Uint8Array(ev.data)); return; }
    const msg = JSON.parse(ev.data);
    if (msg.type === "started") {
      session.recording = msg.recording;
      setState(session, "connected", [{ text: fmt(T["terminal.recording"], { id: msg.recording }) }]);
    } else if (msg.type === "exit") {
      ended = true;
      const text = msg.signal ? fmt(T["terminal.signal"], { signal: msg.signal }) : fmt(T["terminal.exit_code"], { code: msg.code });
      setState(session, "closed", [{ text, exit: true }, { text: T["terminal.replay"], href: `/recordings/${session.recording}` }]);
    } else if (msg.type === "error") {
      ended = true;
      setState(session, "error", [{ text: msg.message }]);
    }
  };
  ws.onclose = () => {
    if (!ended) setState(session, session.state === "connecting" ? "error" : "closed", [{ text: T["terminal.lost"] }]);
    else if (session.state === "connected") setState(session, "closed");
  };
  term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d)); });
  term.onBinary((d) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const bytes = new Uint8Array(d.length);
    for (let i = 0; i < d.length; i++) bytes[i] = d.charCodeAt(i) & 0xff;
    ws.send(bytes);
  });
  term.onResize(({ cols, rows }) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
  });
}

newButton.addEventListener("click", () => openSession());
new ResizeObserver(() => { if (current) current.fit.fit(); }).observe(panes);
openSession();
