// Public status page: polls /status/servers (no login, no WebSocket). textContent only.
import { T, fmt, pct, bytes, rate, duration, ratio, el, level } from "./common.js";

const cards = document.getElementById("cards");

function meter(label, r, text) {
  const wrap = el("div", "meter");
  wrap.append(el("span", "meter-label", label), el("span", "meter-value", text));
  const bar = el("div", "bar"), fill = el("div", "fill " + level(r));
  fill.style.width = r == null ? "0" : Math.min(100, r * 100).toFixed(1) + "%";
  bar.append(fill); wrap.append(bar);
  return wrap;
}

function card(s) {
  const c = el("article", "card server" + (s.online ? "" : " offline"));
  const head = el("header");
  head.append(el("span", "dot"), el("h2", "name", s.name));
  if (s.country_code) head.append(el("span", "flag", s.country_code));
  head.append(el("span", "status muted", s.online ? T["overview.online"] : T["overview.offline"]));
  c.append(head, el("p", "sub muted", [s.region, s.os].filter(Boolean).join(" · ") || "\u00a0"));
  const mem = ratio(s.memory_used, s.memory_total), disk = ratio(s.disk_used, s.disk_total);
  c.append(meter(T["col.cpu"], s.cpu, pct(s.cpu)),
    meter(T["col.memory"], mem, s.memory_total ? `${bytes(s.memory_used)} / ${bytes(s.memory_total)}` : "–"),
    meter(T["col.disk"], disk, s.disk_total ? `${bytes(s.disk_used)} / ${bytes(s.disk_total, 0)}` : "–"));
  const facts = el("dl", "facts");
  facts.append(el("dt", null, T["col.net"]), el("dd", null, `↓ ${rate(s.net_rx)}  ↑ ${rate(s.net_tx)}`),
    el("dt", null, T["col.uptime"]), el("dd", null, duration(s.uptime)));
  c.append(facts);
  if (s.group) { const foot = el("footer", "card-foot"); foot.append(el("span", "chip group", s.group)); c.append(foot); }
  return c;
}

async function refresh() {
  try {
    const resp = await fetch("/status/servers", { cache: "no-store" });
    if (!resp.ok) return;
    const { servers } = await resp.json();
    cards.replaceChildren(...servers.map(card));
    const down = servers.filter((s) => !s.online).length;
    const overall = document.getElementById("overall");
    overall.className = "overall " + (down ? "bad" : "ok");
    overall.textContent = down ? fmt(T["status.some_down"], { down, total: servers.length })
      : servers.length ? T["status.all_up"] : T["status.empty"];
    document.getElementById("updated").textContent = fmt(T["status.updated"], { time: new Date().toLocaleTimeString() });
  } catch { /* offline for a moment: keep what we show */ }
}
refresh();
setInterval(refresh, 5000);
