// The file manager (issue #7). Every name reaches the page through textContent only: file
// names on a server are whatever anyone put there, e.g. `<img src=x onerror=alert(1)>`.
import { T, fmt, bytes, el, stepUp } from "./common.js";

const data = document.getElementById("page-data").dataset;
const SERVER = data.server;
const CSRF = data.csrf;
const API = `/api/servers/${SERVER}/files`;
// Downloads up to this size go through fetch (with a progress bar) into a Blob; bigger ones are
// left to the browser's own download manager, which streams them to disk.
const BLOB_LIMIT = 512 * 1024 * 1024;
const LANG = document.documentElement.lang || "en";
// web.upload_max_bytes (0: no limit): bigger files are refused here, before any byte is sent.
const UPLOAD_MAX = Number(data.uploadMax) || 0;

const $ = (id) => document.getElementById(id);
const state = { path: "", roots: [], entries: [] };

// ------------------------------------------------------------------ talking to the API

class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

async function failure(resp) {
  let message = `${resp.status} ${resp.statusText}`, code = "", reauth = false, limit = 0;
  try {
    const body = await resp.json();
    if (body && body.error) { message = body.error; code = body.code || ""; }
    reauth = resp.status === 401 && Boolean(body && body.reauth);
    limit = (body && body.limit) || 0;
  } catch (_) { /* not JSON: keep the status line */ }
  const err = new ApiError(resp.status, message, code);
  err.reauth = reauth;
  err.limit = limit;
  return err;
}

// Changes need a recent step-up (web/files.py): a 401 {"reauth"} opens the dialog, and the
// call is made again once the password or code was accepted.
async function call(method, action, { query = {}, json, body, headers = {} } = {}) {
  const url = `${API}/${action}?` + new URLSearchParams(query);
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (method !== "GET") init.headers["X-CSRF-Token"] = CSRF;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  for (;;) {
    const resp = await fetch(url, init);
    if (resp.ok) return resp.json();
    const err = await failure(resp);
    if (err.reauth) {
      if (await stepUp(CSRF, { wrong: T["files.step_up_wrong"], network: T["files.err.network"] })) continue;
      throw new ApiError(401, T["files.step_up_cancelled"], "STEP_UP_CANCELLED");
    }
    if (resp.status === 401) location.href = "/login";
    throw err;
  }
}


// The server's reasons are English one-liners; the ones people meet daily get a sentence in the
// page's language, with the exact reason kept in brackets.
const REASONS = {
  TOO_LARGE: "files.err.too_large",
  BINARY: "files.err.binary",
  CHANGED: "files.err.changed",
  ALREADY_EXISTS: "files.err.exists",
  NOT_FOUND: "files.err.not_found",
};
function explain(err) {
  if (err instanceof ApiError) {
    if (err.status === 403 && /outside/.test(err.message)) return fmt(T["files.err.outside"], { reason: err.message });
    if (err.status === 403 && / is not enabled /.test(err.message)) return fmt(T["files.err.disabled"], { reason: err.message });
    if (err.status === 409 && /not enrolled/.test(err.message)) return fmt(T["files.err.not_enrolled"], { reason: err.message });
    if (err.code === "UPLOAD_TOO_LARGE") return fmt(T["files.err.upload_too_large"], { limit: bytes(err.limit || UPLOAD_MAX), reason: err.message });
    if (REASONS[err.code]) return fmt(T[REASONS[err.code]], { reason: err.message });
    return err.message;
  }
  return T["files.err.network"];
}

function showError(err) {
  const box = $("error");
  box.textContent = typeof err === "string" ? err : explain(err);
  box.hidden = false;
}
function clearError() { $("error").hidden = true; }
function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

// ------------------------------------------------------------------ paths

function join(dir, name) { return dir.endsWith("/") ? dir + name : `${dir}/${name}`; }
function parent(path) {
  const i = path.replace(/\/+$/, "").lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}
function rootOf(path) {
  // The longest root the path lies in: the breadcrumb starts there.
  let best = "";
  for (const r of state.roots) {
    if ((path === r || path.startsWith(r.endsWith("/") ? r : r + "/")) && r.length > best.length) best = r;
  }
  return best;
}
function modeText(octal) {
  const m = parseInt(octal, 8);
  let s = "";
  for (const shift of [6, 3, 0]) {
    const b = (m >> shift) & 7;
    s += (b & 4 ? "r" : "-") + (b & 2 ? "w" : "-") + (b & 1 ? "x" : "-");
  }
  return s;
}
function when(seconds) {
  return new Date(seconds * 1000).toLocaleString(LANG, { hour12: false });
}

// ------------------------------------------------------------------ listing

async function load(path, { push = true } = {}) {
  $("loading").hidden = false;
  try {
    const listing = await call("GET", "list", { query: path ? { path } : {} });
    clearError();
    state.path = listing.path;
    state.roots = listing.roots;
    state.entries = listing.entries;
    render(listing);
    const url = `${location.pathname}?` + new URLSearchParams({ path: listing.path });
    if (push) history.pushState({ path: listing.path }, "", url);
    else history.replaceState({ path: listing.path }, "", url);
  } catch (err) {
    showError(err);
    if (!state.path) renderEmpty();
  } finally {
    $("loading").hidden = true;
  }
}

function renderEmpty() {
  $("files").querySelector("tbody").replaceChildren();
  $("empty").hidden = true;
}

function render(listing) {
  $("goto-path").value = listing.path;
  $("run-as").textContent = listing.run_as ? fmt(T["files.run_as"], { user: listing.run_as }) : "";
  renderCrumbs(listing.path);
  renderRoots();
  $("up").disabled = !listing.path || listing.roots.includes(listing.path) || listing.path === "/";
  const body = $("files").querySelector("tbody");
  body.replaceChildren(...listing.entries.map(row));
  $("empty").hidden = listing.entries.length > 0;
  $("truncated").hidden = !listing.truncated;
}

function renderCrumbs(path) {
  const nav = $("path-crumbs");
  nav.replaceChildren();
  const root = rootOf(path) || "/";
  const crumb = (label, target, current) => {
    const b = el("button", "crumb" + (current ? " current" : ""), label);
    b.type = "button";
    b.title = target;
    b.dataset.path = target;
    if (current) b.setAttribute("aria-current", "page");
    b.addEventListener("click", () => load(target));
    return b;
  };
  nav.append(crumb(root, root, path === root));
  const rest = path.slice(root.length).split("/").filter(Boolean);
  let at = root;
  rest.forEach((part, i) => {
    at = join(at, part);
    nav.append(el("span", "sep", "/"), crumb(part, at, i === rest.length - 1));
  });
}

function renderRoots() {
  const select = $("roots");
  select.hidden = state.roots.length < 2;
  select.replaceChildren(el("option", "", T["files.roots"]), ...state.roots.map((r) => {
    const o = el("option", "", r);
    o.value = r;
    return o;
  }));
  select.value = "";
}

function actionButton(label, handler, cls = "") {
  const b = el("button", "small " + cls, label);
  b.type = "button";
  b.addEventListener("click", handler);
  return b;
}

function row(entry) {
  const tr = el("tr");
  tr.dataset.name = entry.name;
  tr.dataset.type = entry.type;
  const name = el("td", "name");
  const cell = el("div", "name-wrap");
  name.append(cell);
  const icon = el("span", "icon " + entry.type);
  icon.setAttribute("aria-hidden", "true");
  if (entry.type === "dir") {
    const open = el("button", "link entry-name dir", entry.name);
    open.type = "button";
    open.addEventListener("click", () => load(entry.path));
    cell.append(icon, open);
  } else {
    cell.append(icon, el("span", "entry-name", entry.name));
    if (entry.type === "symlink") cell.append(el("span", "muted small link-target", "→ " + entry.target));
  }
  const actions = el("td", "actions");
  // A symlink is followed by the exporter (inside the roots only): its file can be opened too.
  if (entry.type === "file" || entry.type === "symlink") {
    actions.append(
      actionButton(T["files.edit"], () => openEditor(entry), "edit"),
      actionButton(T["files.download"], () => download(entry), "download"),
    );
  }
  actions.append(
    actionButton(T["files.rename"], () => rename(entry), "rename"),
    actionButton(T["files.chmod"], () => chmod(entry), "chmod"),
    actionButton(T["files.delete"], () => remove(entry), "danger delete"),
  );
  tr.append(
    name,
    el("td", "num", entry.type === "dir" ? "–" : bytes(entry.size)),
    el("td", "mono", `${modeText(entry.mode)} ${entry.mode}`),
    el("td", "", entry.owner + ":" + entry.group),
    el("td", "small", when(entry.modified)),
    actions,
  );
  return tr;
}

// ------------------------------------------------------------------ dialogs

// One dialog for every question: resolves to {value, checked, mode} or null (cancelled).
function ask({ title, text = "", label = "", value = null, ok, danger = false, mode = null, check = null, validate = null }) {
  const dialog = $("ask");
  $("ask-title").textContent = title;
  $("ask-text").textContent = text;
  $("ask-text").hidden = !text;
  $("ask-field").hidden = value === null;
  $("ask-label").textContent = label;
  $("ask-input").value = value ?? "";
  $("ask-error").hidden = true;
  const grid = $("ask-mode");
  grid.hidden = mode === null;
  const boxes = [...grid.querySelectorAll("input[data-bit]")];
  const syncBoxes = () => {
    const m = parseInt($("ask-input").value, 8);
    boxes.forEach((b) => { b.checked = !Number.isNaN(m) && (m & Number(b.dataset.bit)) !== 0; });
  };
  if (mode !== null) {
    syncBoxes();
    $("ask-input").oninput = syncBoxes;
    boxes.forEach((b) => {
      b.onchange = () => {
        const m = parseInt($("ask-input").value, 8) || 0;
        const bit = Number(b.dataset.bit);
        $("ask-input").value = ((b.checked ? m | bit : m & ~bit) & 0o7777).toString(8).padStart(4, "0");
      };
    });
  } else {
    $("ask-input").oninput = null;
  }
  $("ask-check").hidden = check === null;
  $("ask-checkbox").checked = false;
  $("ask-check-label").textContent = check || "";
  const okButton = $("ask-ok");
  okButton.textContent = ok;
  okButton.className = danger ? "danger" : "primary";
  return new Promise((resolve) => {
    const form = $("ask-form");
    form.onsubmit = (ev) => {
      const submitter = ev.submitter;
      if (submitter && submitter.value === "cancel") return;
      const problem = validate ? validate($("ask-input").value) : "";
      if (problem) {
        ev.preventDefault();
        $("ask-error").textContent = problem;
        $("ask-error").hidden = false;
      }
    };
    dialog.onclose = () => {
      resolve(dialog.returnValue === "ok"
        ? { value: $("ask-input").value, checked: $("ask-checkbox").checked }
        : null);
    };
    dialog.returnValue = "";
    dialog.showModal();
    if (value !== null) { $("ask-input").focus(); $("ask-input").select(); } else okButton.focus();
  });
}

const validName = (v) => (!v || v.includes("/") || v === "." || v === ".." ? T["files.err.name"] : "");

async function mkdir() {
  const answer = await ask({ title: T["files.mkdir"], label: T["files.name"], value: "", ok: T["files.create"], validate: validName });
  if (!answer) return;
  try {
    await call("POST", "mkdir", { json: { path: join(state.path, answer.value) } });
    notice(fmt(T["files.done.mkdir"], { name: answer.value }));
    await load(state.path, { push: false });
  } catch (err) { showError(err); }
}

async function rename(entry) {
  const answer = await ask({ title: fmt(T["files.rename_title"], { name: entry.name }), label: T["files.new_name"], value: entry.name, ok: T["files.rename"], validate: validName });
  if (!answer || answer.value === entry.name) return;
  try {
    await call("POST", "rename", { json: { path: entry.path, new_path: join(parent(entry.path), answer.value) } });
    notice(fmt(T["files.done.rename"], { name: entry.name, new: answer.value }));
    await load(state.path, { push: false });
  } catch (err) { showError(err); }
}

async function chmod(entry) {
  const answer = await ask({
    title: fmt(T["files.chmod_title"], { name: entry.name }), label: T["files.mode"], value: entry.mode, mode: true, ok: T["files.apply"],
    validate: (v) => (/^0?[0-7]{3,4}$/.test(v.trim()) ? "" : T["files.err.mode"]),
  });
  if (!answer) return;
  try {
    await call("POST", "chmod", { json: { path: entry.path, mode: answer.value.trim() } });
    notice(fmt(T["files.done.chmod"], { name: entry.name, mode: answer.value.trim() }));
    await load(state.path, { push: false });
  } catch (err) { showError(err); }
}

async function remove(entry) {
  const dir = entry.type === "dir";
  const answer = await ask({
    title: fmt(T["files.delete_title"], { name: entry.name }),
    text: dir ? T["files.delete_dir_text"] : T["files.delete_text"],
    ok: T["files.delete"], danger: true, check: dir ? T["files.recursive"] : null,
  });
  if (!answer) return;
  try {
    await call("POST", "delete", { json: { path: entry.path, recursive: dir && answer.checked } });
    notice(fmt(T["files.done.delete"], { name: entry.name }));
    await load(state.path, { push: false });
  } catch (err) { showError(err); }
}

// ------------------------------------------------------------------ transfers

function transferRow(label) {
  const li = el("li", "transfer");
  const name = el("span", "transfer-name", label);
  const bar = el("progress");
  bar.max = 1; bar.value = 0;
  const status = el("span", "muted small transfer-status", "");
  li.append(name, bar, status);
  $("transfers").prepend(li);
  return {
    progress(done, total) {
      if (total) { bar.max = total; bar.value = done; } else bar.removeAttribute("value");
      status.textContent = total ? `${bytes(done)} / ${bytes(total)} (${Math.floor((done / total) * 100)}%)` : bytes(done);
    },
    finish(ok, text) {
      li.classList.add(ok ? "ok" : "failed");
      if (ok) { bar.max = 1; bar.value = 1; }
      status.textContent = text;
      setTimeout(() => li.remove(), ok ? 8000 : 30000);
    },
  };
}

async function exists(path) {
  try {
    await call("GET", "stat", { query: { path } });
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return false;
    throw err;
  }
}

function uploadOne(file, dir, overwrite) {
  const path = join(dir, file.name);
  const view = transferRow(fmt(T["files.uploading"], { name: file.name }));
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    const query = new URLSearchParams({ path });
    if (overwrite) query.set("overwrite", "1");
    xhr.open("PUT", `${API}/upload?${query}`);
    xhr.setRequestHeader("X-CSRF-Token", CSRF);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (ev) => view.progress(ev.loaded, ev.lengthComputable ? ev.total : file.size);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        view.finish(true, fmt(T["files.uploaded"], { size: bytes(file.size) }));
      } else {
        let err = new ApiError(xhr.status, `${xhr.status} ${xhr.statusText}`, "");
        try {
          const body = JSON.parse(xhr.responseText);
          if (body && body.error) err = new ApiError(xhr.status, body.error, body.code || "");
          if (body && body.limit) err.limit = body.limit;
        } catch (_) { /* not JSON: keep the status line */ }
        view.finish(false, explain(err));
        showError(err);
      }
      resolve();
    };
    xhr.onerror = () => { view.finish(false, T["files.err.network"]); resolve(); };
    xhr.send(file);
  });
}

async function upload(files) {
  const dir = state.path;
  // Asked first (step-up dialog included): an upload's body cannot be taken back once sent.
  try {
    await call("GET", "may-change");
  } catch (err) { showError(err); return; }
  for (const file of files) {
    if (UPLOAD_MAX && file.size > UPLOAD_MAX) {
      const text = fmt(T["files.err.file_too_large"], { name: file.name, size: bytes(file.size), limit: bytes(UPLOAD_MAX) });
      transferRow(fmt(T["files.uploading"], { name: file.name })).finish(false, text);
      showError(text);
      continue;
    }
    try {
      let overwrite = false;
      if (await exists(join(dir, file.name))) {
        const answer = await ask({ title: T["files.exists_title"], text: fmt(T["files.exists_text"], { name: file.name }), ok: T["files.replace"], danger: true });
        if (!answer) continue;
        overwrite = true;
      }
      await uploadOne(file, dir, overwrite);
    } catch (err) { showError(err); }
  }
  if (dir === state.path) await load(state.path, { push: false });
}

function save(blob, name) {
  const a = el("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

async function download(entry) {
  const url = `${API}/download?` + new URLSearchParams({ path: entry.path });
  if (entry.size > BLOB_LIMIT) {
    // Too big to hold in the page: the browser streams it to disk and shows its own progress.
    const a = el("a");
    a.href = url;
    a.download = entry.name;
    document.body.append(a);
    a.click();
    a.remove();
    return;
  }
  const view = transferRow(fmt(T["files.downloading"], { name: entry.name }));
  try {
    const resp = await fetch(url, { credentials: "same-origin" });
    if (!resp.ok) throw await failure(resp);
    const total = Number(resp.headers.get("Content-Length")) || entry.size;
    const reader = resp.body.getReader();
    const parts = [];
    let done = 0;
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      parts.push(value);
      done += value.length;
      view.progress(done, total);
    }
    if (done !== total) throw new Error(T["files.err.short"]);
    save(new Blob(parts, { type: "application/octet-stream" }), entry.name);
    view.finish(true, fmt(T["files.downloaded"], { size: bytes(done) }));
  } catch (err) {
    view.finish(false, explain(err));
    showError(err);
  }
}

// ------------------------------------------------------------------ editor

const editor = { entry: null, modified: null, original: "" };

async function openEditor(entry) {
  try {
    const file = await call("GET", "text", { query: { path: entry.path } });
    editor.entry = entry;
    editor.modified = file.modified;
    editor.original = file.content;
    $("editor-title").textContent = entry.path;
    $("editor-text").value = file.content;
    $("editor-state").textContent = bytes(file.size);
    $("editor").showModal();
    $("editor-text").focus();
  } catch (err) { showError(err); }
}

async function saveEditor() {
  const text = $("editor-text").value;
  $("editor-state").textContent = T["files.saving"];
  try {
    const saved = await call("PUT", "text", {
      query: { path: editor.entry.path, modified: String(editor.modified) },
      body: new Blob([text], { type: "text/plain;charset=utf-8" }),
    });
    editor.modified = saved.modified;
    editor.original = text;
    $("editor-state").textContent = fmt(T["files.saved"], { size: bytes(saved.size) });
  } catch (err) {
    $("editor-state").textContent = explain(err);
  }
}

async function closeEditor() {
  if ($("editor-text").value !== editor.original) {
    const answer = await ask({ title: T["files.unsaved_title"], text: T["files.unsaved_text"], ok: T["files.discard"], danger: true });
    if (!answer) return;
  }
  $("editor").close();
  await load(state.path, { push: false });
}

// ------------------------------------------------------------------ wiring

$("refresh").addEventListener("click", () => load(state.path, { push: false }));
$("up").addEventListener("click", () => load(parent(state.path)));
$("mkdir").addEventListener("click", mkdir);
$("upload-input").addEventListener("change", async (ev) => {
  const files = [...ev.target.files];
  ev.target.value = "";
  await upload(files);
});
$("goto").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const path = $("goto-path").value.trim();
  if (path) load(path);
});
$("roots").addEventListener("change", (ev) => { if (ev.target.value) load(ev.target.value); });
$("editor-save").addEventListener("click", saveEditor);
$("editor-close").addEventListener("click", closeEditor);
$("editor").addEventListener("cancel", (ev) => { ev.preventDefault(); closeEditor(); });
$("editor-text").addEventListener("keydown", (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "s") { ev.preventDefault(); saveEditor(); }
  if (ev.key === "Tab" && !ev.shiftKey) {
    // A tab character, not focus moving away (config files use them).
    ev.preventDefault();
    const t = ev.target, s = t.selectionStart;
    t.setRangeText("\t", s, t.selectionEnd, "end");
  }
});
const zone = $("drop-zone");
zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (ev) => {
  ev.preventDefault();
  zone.classList.remove("over");
  if (ev.dataTransfer && ev.dataTransfer.files.length) upload([...ev.dataTransfer.files]);
});
window.addEventListener("popstate", (ev) => { if (ev.state && ev.state.path) load(ev.state.path, { push: false }); });

if ($("upload-limit")) $("upload-limit").textContent = fmt(T["files.upload_limit"], { limit: bytes(UPLOAD_MAX) });
load(data.start, { push: false });
