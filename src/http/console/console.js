// airlock's console: reads /api/v1/ and fills the tables of index.html.
// Plain JavaScript, no build step, no inline code (the page runs under
// "default-src 'self'"). Everything shown is set with textContent, never
// parsed as HTML: bundle, image and pack names come from outside.
"use strict";

// How often the open view asks the daemon again.
const REFRESH_MS = 3000;
// Records read for the imports view (the API's own cap).
const IMPORTS_LIMIT = 1000;

const params = () => new URLSearchParams(window.location.search);
let lastBody = "";
let timer = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  cells.forEach((cell) => {
    if (cell instanceof Node) {
      const td = document.createElement("td");
      td.appendChild(cell);
      tr.appendChild(td);
    } else {
      tr.appendChild(el("td", cell === undefined ? "" : cell));
    }
  });
  return tr;
}

function fill(table, rows) {
  const body = document.querySelector(table + " tbody");
  const list = body.closest("table").id.endsWith("-table");
  if (!list && rows.length === 0) {
    // A part of a bundle it does not have: say so inside the table.
    const none = el("td", "none", "muted");
    none.colSpan = body.closest("table").tHead.rows[0].cells.length;
    const tr = el("tr");
    tr.appendChild(none);
    rows = [tr];
  }
  body.replaceChildren(...rows);
  const empty = body.closest("section").querySelector(".empty");
  if (empty && list) empty.hidden = rows.length > 0;
}

function bytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
}

function duration(from, to) {
  if (!from || !to) return "";
  const s = (Date.parse(to) - Date.parse(from)) / 1000;
  if (!(s >= 0)) return "";
  return s < 60 ? s.toFixed(1) + " s" : Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
}

function when(t) {
  return t ? t.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

function short(digest) {
  return digest ? digest.replace(/^(sha256:[0-9a-f]{12})[0-9a-f]+$/, "$1…") : "";
}

function code(text, title) {
  const c = el("code", text);
  if (title) c.title = title;
  return c;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  const text = await response.text();
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = JSON.parse(text).error || message; } catch (e) { /* not JSON */ }
    throw new Error(path.split("?")[0] + ": " + message);
  }
  return { text, json: JSON.parse(text) };
}

// What a bundle's reason for its status is, in one line.
function reason(r) {
  if (r.status === "waiting") return "waiting for " + (r.missing || []).join(" or ");
  if (r.progress) {
    const p = r.progress;
    const done = p.bytesToPush ? Math.floor((100 * p.bytesPushed) / p.bytesToPush) + "% of " + bytes(p.bytesToPush) : bytes(p.bundleBytesRead) + " read";
    return p.stage + ", " + done;
  }
  return r.error ? r.error.message : "";
}

function statusCell(r) {
  const label = r.status === "importing" ? "in progress" : r.status;
  const span = el("span", label, "status status-" + r.status);
  if (r.progress && r.progress.bytesToPush) {
    const meter = el("progress");
    meter.max = r.progress.bytesToPush;
    meter.value = r.progress.bytesPushed;
    meter.setAttribute("aria-label", "pushed of " + r.names[0]);
    const wrap = el("span");
    wrap.append(span, " ", meter);
    return wrap;
  }
  return span;
}

function matchesImport(r, status, q) {
  if (status && r.status !== status) return false;
  if (!q) return true;
  const texts = (r.names || []).concat(r.id || []);
  ((r.pushed && r.pushed.images) || []).forEach((i) => texts.push(i.source, i.target));
  return texts.some((t) => t.toLowerCase().includes(q));
}

async function showImports() {
  const p = params();
  const status = p.get("status") || "";
  const q = (p.get("q") || "").toLowerCase();
  const { text, json } = await getJSON("/api/v1/imports?limit=" + IMPORTS_LIMIT);
  const key = text + status + q;
  if (key === lastBody) return;
  lastBody = key;
  const rows = json.filter((r) => matchesImport(r, status, q)).map((r) => {
    const name = r.names[0] + (r.names.length > 1 ? " (+" + (r.names.length - 1) + ")" : "");
    let bundle;
    if (r.id) {
      bundle = el("a", name);
      bundle.href = "/?view=bundle&id=" + r.id;
      const wrap = el("span");
      wrap.append(bundle, el("br"), code(r.id.slice(0, 12), "sha256:" + r.id));
      bundle = wrap;
    } else {
      bundle = el("span", name);
    }
    const images = r.pushed ? r.pushed.images.filter((i) => artifactKind(i.target) === "image").length : "";
    const signer = r.verifiedBy ? r.verifiedBy.label + " (" + r.verifiedBy.algorithm + ")" : "";
    const tr = row([bundle, statusCell(r), when(r.finished || r.started || r.firstSeen),
      duration(r.started, r.finished), images, bytes(r.size), signer, reason(r)]);
    tr.dataset.status = r.status;
    tr.cells[4].className = "num";
    tr.cells[5].className = "num";
    return tr;
  });
  fill("#imports-table", rows);
}

// Which area of the target an artifact landed in, by the area's path.
function artifactKind(target) {
  if (target.includes("/spectro-packs/archive/")) return "pack";
  if (target.includes("/charts/")) return "chart";
  if (target.includes("/installers/")) return "installer";
  return "image";
}

async function showBundle() {
  const id = params().get("id") || "";
  const { text, json: r } = await getJSON("/api/v1/imports/" + encodeURIComponent(id));
  if (text === lastBody) return;
  lastBody = text;
  document.getElementById("bundle-title").textContent = "Bundle " + r.names[0];
  const facts = [
    ["Digest", "sha256:" + r.id], ["Names", r.names.join(", ")], ["Status", r.status],
    ["Size", bytes(r.size)], ["First seen", when(r.firstSeen)], ["Started", when(r.started)],
    ["Finished", when(r.finished)], ["Duration", duration(r.started, r.finished)], ["Attempts", r.attempts],
    ["Verified by", r.verifiedBy ? r.verifiedBy.label + " (" + r.verifiedBy.algorithm + ", " + r.verifiedBy.fingerprint + ")" : "not verified"],
    ["Reason", reason(r)],
  ];
  if (r.pushed) {
    facts.push(["Blobs", r.pushed.blobsUploaded + " uploaded (" + bytes(r.pushed.bytesUploaded) + "), " +
      r.pushed.blobsMounted + " mounted, " + r.pushed.blobsPresent + " already there"]);
  }
  const dl = document.getElementById("bundle-facts");
  dl.replaceChildren(...facts.filter((f) => f[1] !== "" && f[1] !== undefined).flatMap((f) => [el("dt", f[0]), el("dd", f[1])]));
  const pushed = (r.pushed && r.pushed.images) || [];
  fill("#bundle-images", pushed.filter((i) => artifactKind(i.target) === "image")
    .map((i) => row([i.source, code(i.target), code(i.digest)])));
  fill("#bundle-artifacts", pushed.filter((i) => ["chart", "installer"].includes(artifactKind(i.target)))
    .map((i) => row([artifactKind(i.target), code(i.target), code(i.digest)])));
  fill("#bundle-packs", ((r.pushed && r.pushed.packs) || [])
    .map((p) => row([p.name, p.version, code(p.targetRef || ""), (p.missingImages || []).join(", ") || "none", p.heldBack ? "yes" : "no"])));
  fill("#bundle-held", ((r.pushed && r.pushed.heldTags) || [])
    .map((h) => row([code(h.targetRef), code(h.existing), code(h.bundle), h.policy])));
}

async function showPacks() {
  const p = params();
  const query = new URLSearchParams();
  ["q", "layer", "cloudType", "architecture", "fips"].forEach((k) => { if (p.get(k)) query.set(k, p.get(k)); });
  const version = (p.get("version") || "").toLowerCase();
  const { text, json } = await getJSON("/api/v1/packs?" + query.toString());
  const key = text + version;
  if (key === lastBody) return;
  lastBody = key;
  const rows = json.packs.filter((k) => !version || k.version.toLowerCase().includes(version)).map((k) => {
    const missing = k.missingImages.length ? k.missingImages.join(", ") : "none";
    const fips = k.fips === undefined ? "unknown" : k.fips ? "yes" : "no";
    const name = el("span", k.name);
    if (k.displayName && k.displayName !== k.name) name.append(el("br"), el("span", k.displayName, "muted"));
    const tr = row([name, k.version, k.layer || "",
      (k.cloudTypes || []).join(", "), (k.architectures || []).join(", "), fips, missing, code(k.reference)]);
    if (k.missingImages.length) tr.cells[6].className = "warn";
    return tr;
  });
  fill("#packs-table", rows);
  if (json.truncated) setStatus("The target holds more packs than one listing reads; some are not shown.");
}

async function showImages() {
  const p = params();
  const query = new URLSearchParams();
  ["q", "after"].forEach((k) => { if (p.get(k)) query.set(k, p.get(k)); });
  const { text, json } = await getJSON("/api/v1/images?" + query.toString());
  if (text === lastBody) return;
  lastBody = text;
  const rows = json.repositories.flatMap((repo) => repo.tags.map((t) => row([code(repo.name), t.tag, code(t.digest || "", t.digest)])));
  fill("#images-table", rows);
  const next = document.getElementById("images-next");
  next.hidden = !json.next;
  if (json.next) {
    const link = new URLSearchParams(p);
    link.set("after", json.next);
    next.href = "/?" + link.toString();
  }
}

const VIEWS = { imports: showImports, bundle: showBundle, packs: showPacks, images: showImages };

function currentView() {
  const view = params().get("view") || "imports";
  return VIEWS[view] ? view : "imports";
}

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

async function refresh() {
  const view = currentView();
  const query = window.location.search;
  try {
    await VIEWS[view]();
    setStatus("Updated " + new Date().toLocaleTimeString());
    document.body.dataset.state = "ready";
    // What was drawn, and how often: tools (and tests) wait on these.
    document.body.dataset.drawnFor = query;
    document.body.dataset.draws = String(Number(document.body.dataset.draws || 0) + 1);
  } catch (e) {
    setStatus("Cannot reach the daemon: " + e.message);
    document.body.dataset.state = "error";
  }
  clearTimeout(timer);
  timer = setTimeout(refresh, REFRESH_MS);
}

// Shows the view the URL names, with its filters set from the URL.
function open() {
  const view = currentView();
  lastBody = "";
  document.body.dataset.view = view;
  document.querySelectorAll("main > section").forEach((s) => { s.hidden = s.id !== view; });
  document.querySelectorAll("nav a").forEach((a) => {
    const here = a.dataset.view === view || (view === "bundle" && a.dataset.view === "imports");
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  const section = document.getElementById(view);
  const form = section.querySelector("form");
  if (form) {
    const p = params();
    Array.from(form.elements).forEach((field) => { if (field.name) field.value = p.get(field.name) || ""; });
  }
  refresh();
}

// A filter change rewrites the URL's query (so it can be shared) and
// redraws, without reloading the page.
function onFilter(event) {
  const form = event.target.form;
  if (!form) return;
  const p = new URLSearchParams();
  p.set("view", currentView());
  Array.from(form.elements).forEach((field) => { if (field.name && field.value) p.set(field.name, field.value); });
  window.history.replaceState(null, "", "/?" + p.toString());
  lastBody = "";
  refresh();
}

// Links inside the page switch views without a reload.
function onClick(event) {
  const a = event.target.closest("a");
  if (!a || !a.href || a.origin !== window.location.origin || a.pathname !== "/" || !a.search) return;
  if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  window.history.pushState(null, "", a.href);
  open();
  document.getElementById("main").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form.filters").forEach((form) => {
    form.addEventListener("input", onFilter);
    form.addEventListener("submit", (e) => e.preventDefault());
  });
  document.addEventListener("click", onClick);
  window.addEventListener("popstate", open);
  open();
});
