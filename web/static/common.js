// Formatting shared by the dashboard pages. Values reach the page with textContent only.
export const T = JSON.parse(document.getElementById("messages").dataset.json);

export function fmt(template, values) {
  return template.replace(/\{(\w+)\}/g, (_, k) => (k in values ? values[k] : `{${k}}`));
}
export function pct(ratio) {
  return ratio == null ? "–" : (ratio * 100).toFixed(1) + "%";
}
export function bytes(n, digits = 1) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? (n >= 100 ? 0 : digits) : 0) + " " + units[i];
}
export function rate(n) { return n == null ? "–" : bytes(n) + "/s"; }
export function bits(n) {
  if (n == null) return "–";
  const units = ["bps", "Kbps", "Mbps", "Gbps"];
  let v = n * 8, i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return v.toFixed(v >= 100 || i === 0 ? 0 : 1) + " " + units[i];
}
export function duration(s) {
  if (s == null) return "–";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}${T["unit.days"]} ${h}${T["unit.hours"]}`;
  if (h) return `${h}${T["unit.hours"]} ${m}${T["unit.minutes"]}`;
  return `${m}${T["unit.minutes"]}`;
}
export function ratio(used, total) { return used == null || !total ? null : used / total; }
export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}
export function level(r) { return r == null ? "" : r > 0.9 ? "crit" : r > 0.75 ? "warn" : ""; }
export function daysUntil(isoDate) {
  if (!isoDate) return null;
  const [y, m, d] = isoDate.split("-").map(Number);
  const today = new Date();
  const t0 = Date.UTC(today.getFullYear(), today.getMonth(), today.getDate());
  return Math.round((Date.UTC(y, m - 1, d) - t0) / 86400000);
}
export function expiryText(days) {
  if (days == null) return "–";
  if (days > 0) return fmt(T["ov.expires_in"], { days });
  if (days === 0) return T["ov.expires_today"];
  return fmt(T["ov.expired"], { days: -days });
}
export function trafficText(tr) {
  if (!tr) return "–";
  return tr.quota ? `${bytes(tr.used)} / ${bytes(tr.quota, 0)}` : fmt(T["ov.traffic_unlimited"], { used: bytes(tr.used) });
}
// One socket per page; handlers get every message. Reconnects with backoff.
export function liveSocket(onMessage, onOpen) {
  const badge = document.getElementById("live-status");
  let delay = 1000;
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/api/live`);
    ws.onopen = () => {
      if (badge) { badge.textContent = T["live.connected"]; badge.className = "pill on"; }
      delay = 1000;
      if (onOpen) onOpen(ws);
    };
    ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
    ws.onclose = () => {
      if (badge) { badge.textContent = T["live.disconnected"]; badge.className = "pill off"; }
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  connect();
}
// The step-up dialog (the page's #step-up <dialog>: terminal, files and detail pages):
// posts the password or TOTP code to /api/reauth; resolves true once accepted, false when
// cancelled. `messages` are the page's texts for a wrong code and an unreachable collector.
export function stepUp(csrf, messages) {
  const dialog = document.getElementById("step-up");
  const form = document.getElementById("step-up-form");
  const error = document.getElementById("step-up-error");
  const cancel = document.getElementById("step-up-cancel");
  error.hidden = true;
  form.reset();
  return new Promise((resolve) => {
    const done = (ok) => {
      form.onsubmit = null; cancel.onclick = null; dialog.oncancel = null;
      if (dialog.open) dialog.close();
      resolve(ok);
    };
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const password = form.elements.password.value, code = form.elements.code.value.trim();
      let resp;
      try {
        resp = await fetch("/api/reauth", {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify(code ? { code } : { password }),
        });
      } catch {
        error.textContent = messages.network;
        error.hidden = false;
        return;
      }
      if (resp.ok) { done(true); return; }
      let body = {};
      try { body = await resp.json(); } catch { /* not JSON */ }
      error.textContent = resp.status === 401 ? messages.wrong : (body.error || `HTTP ${resp.status}`);
      error.hidden = false;
    };
    cancel.onclick = () => done(false);
    dialog.oncancel = (ev) => { ev.preventDefault(); done(false); };
    dialog.showModal();
    form.elements.password.focus();
  });
}
