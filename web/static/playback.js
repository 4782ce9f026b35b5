// Replays a recorded terminal session (asciicast v2 from /api/recordings/{id}.cast) in xterm.js:
// play/pause, speed, pauses shortened to IDLE_LIMIT seconds (asciinema's idle_time_limit), seek.
import { Terminal } from "./vendor/xterm/xterm.mjs";
import { T, fmt } from "./common.js";

const IDLE_LIMIT = 2;
const recordingId = document.getElementById("page-data").dataset.recording;
const playButton = document.getElementById("play");
const restartButton = document.getElementById("restart");
const speedSelect = document.getElementById("speed");
const skipIdle = document.getElementById("skip-idle");
const seek = document.getElementById("seek");
const clock = document.getElementById("clock");
const stateLine = document.getElementById("player-state");

let header = { width: 80, height: 24 };
let events = [];   // [time, kind, text] as recorded
let times = [];    // when each event plays, after shortening pauses
let total = 0;
let next = 0;      // index of the next event to play
let position = 0;  // seconds into the (shortened) recording
let playing = false;
let lastTick = 0;

const term = new Terminal({
  disableStdin: true,
  cursorBlink: false,
  fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", "Noto Sans Mono CJK SC", monospace',
  fontSize: 14,
  scrollback: 5000,
});
term.open(document.getElementById("player"));

function timeline() {
  times = [];
  let prev = 0, shift = 0;
  for (const [t] of events) {
    const gap = t - prev;
    if (skipIdle.checked && gap > IDLE_LIMIT) shift += gap - IDLE_LIMIT;
    times.push(t - shift);
    prev = t;
  }
  total = times.length ? times[times.length - 1] : 0;
}

function clockText(s) {
  const m = Math.floor(s / 60), sec = Math.floor(s % 60);
  return `${m}:${String(sec).padStart(2, "0")}`;
}

function showClock() {
  clock.textContent = `${clockText(position)} / ${clockText(total)}`;
  seek.value = total ? String(Math.round((position / total) * 1000)) : "0";
}

// Plays every event due by `position`; output is joined into one write per frame.
function playDue() {
  let out = "";
  while (next < events.length && times[next] <= position) {
    const [, kind, text] = events[next];
    if (kind === "o") out += text;
    else if (kind === "r") {
      if (out) { term.write(out); out = ""; }
      const [cols, rows] = text.split("x").map(Number);
      if (cols > 0 && rows > 0) term.resize(cols, rows);
    }
    next += 1;
  }
  if (out) term.write(out);
}

function setPlaying(on) {
  playing = on;
  playButton.textContent = on ? T["playback.pause"] : T["playback.play"];
  if (on) { lastTick = performance.now(); requestAnimationFrame(tick); }
}

function tick(now) {
  if (!playing) return;
  position = Math.min(total, position + ((now - lastTick) / 1000) * Number(speedSelect.value));
  lastTick = now;
  playDue();
  showClock();
  if (next >= events.length) {
    setPlaying(false);
    stateLine.textContent = T["playback.finished"];
    return;
  }
  requestAnimationFrame(tick);
}

// Seeking replays from the start up to the new position at once (xterm.js has no undo).
function jumpTo(target) {
  term.reset();
  term.resize(header.width, header.height);
  next = 0;
  position = Math.max(0, Math.min(total, target));
  playDue();
  showClock();
  stateLine.textContent = "";
}

playButton.addEventListener("click", () => {
  if (!playing && next >= events.length) jumpTo(0);
  stateLine.textContent = "";
  setPlaying(!playing);
});
restartButton.addEventListener("click", () => { jumpTo(0); setPlaying(true); });
skipIdle.addEventListener("change", () => {
  const at = next ? events[next - 1][0] : 0;  // stay at the same recorded moment
  timeline();
  let i = 0;
  while (i < events.length && events[i][0] <= at) i++;
  jumpTo(i ? times[i - 1] : 0);
});
seek.addEventListener("input", () => jumpTo((Number(seek.value) / 1000) * total));

async function load() {
  stateLine.textContent = T["playback.loading"];
  playButton.disabled = true;
  try {
    const resp = await fetch(`/api/recordings/${recordingId}.cast`, { credentials: "same-origin" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const lines = (await resp.text()).split("\n").filter((l) => l.trim());
    header = JSON.parse(lines[0]);
    events = lines.slice(1).map((l) => JSON.parse(l)).filter((e) => Array.isArray(e) && e.length === 3);
  } catch (err) {
    stateLine.textContent = fmt(T["playback.load_failed"], { error: String(err.message || err) });
    return;
  }
  term.resize(header.width || 80, header.height || 24);
  timeline();
  showClock();
  playButton.disabled = false;
  stateLine.textContent = events.length ? "" : T["playback.empty"];
}

load();
