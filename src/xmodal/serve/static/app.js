// The search page: the query lives in the URL (?q= or ?like=, target, collection, k), so the
// back button and shared links work; an uploaded image is searched without changing the URL.
"use strict";

const $ = (id) => document.getElementById(id);
const KEYS = ["q", "like", "target", "collection", "k"];

function stateFromUrl() {
  const p = new URLSearchParams(location.search);
  return Object.fromEntries(KEYS.filter((k) => p.get(k)).map((k) => [k, p.get(k)]));
}

function urlOf(state) {
  const p = new URLSearchParams();
  for (const k of KEYS) if (state[k]) p.set(k, state[k]);
  return "?" + p.toString();
}

function target() {
  return document.querySelector("input[name=target]:checked").value;
}

function showForm(state) {
  $("q").value = state.q || "";
  const t = state.target === "text" ? "text" : "image";
  document.querySelector(`input[name=target][value=${t}]`).checked = true;
  if (state.collection) $("collection").value = state.collection;
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function call(url, options) {
  const started = performance.now();
  const res = await fetch(url, options);
  const body = await res.json().catch(() => ({ detail: res.statusText }));
  if (!res.ok) throw new Error(body.detail || res.statusText);
  return [body, performance.now() - started];
}

function render(body, ms) {
  const list = $("results");
  list.replaceChildren();
  const q = body.query;
  const what = q.text ? `“${q.text}”` : q.like ? `more like ${q.like}` : `image ${q.image}`;
  status(`${body.results.length} ${body.target === "image" ? "images" : "captions"} for ${what} ` +
         `in ${body.collection} (${Math.round(ms)} ms)`);
  for (const r of body.results) {
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.href = urlOf({ like: r.id, target: body.target, collection: body.collection });
    link.className = "result";
    link.setAttribute("aria-label", `${r.rank}. ${r.caption || r.captions[0] || r.id}: more like this`);
    const img = document.createElement("img");
    img.src = r.image_url;
    img.alt = r.captions[0] || r.id;
    img.loading = "lazy";
    const meta = document.createElement("div");
    meta.className = "meta";
    if (r.caption) meta.append(Object.assign(document.createElement("div"),
                                             { className: "match", textContent: r.caption }));
    for (const c of r.captions) {
      if (c !== r.caption) meta.append(Object.assign(document.createElement("div"), { textContent: c }));
    }
    meta.append(Object.assign(document.createElement("div"),
                              { className: "score", textContent: `#${r.rank} · score ${r.score.toFixed(4)}` }),
                Object.assign(document.createElement("div"), { className: "id", textContent: r.id }));
    link.append(img, meta);
    link.addEventListener("click", (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey) return; // a new tab keeps its own page
      e.preventDefault();
      go({ like: r.id, target: body.target, collection: body.collection });
    });
    li.append(link);
    list.append(li);
  }
}

async function run(state) {
  showForm(state);
  if (!state.q && !state.like) {
    $("results").replaceChildren();
    status("Type a caption, or drop an image.");
    return;
  }
  const p = new URLSearchParams(urlOf(state).slice(1));
  status("Searching…");
  try {
    render(...(await call("/api/search?" + p.toString())));
  } catch (e) {
    status(e.message, true);
  }
}

function go(state) {
  history.pushState(state, "", urlOf(state));
  run(state);
}

async function upload(file) {
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  form.append("target", target());
  form.append("collection", $("collection").value);
  status(`Searching by ${file.name}…`);
  try {
    render(...(await call("/api/search", { method: "POST", body: form })));
  } catch (e) {
    status(e.message, true);
  }
}

async function init() {
  try {
    const [collections] = await call("/api/collections");
    for (const c of collections) {
      const opt = new Option(`${c.name} (${c.images} images)`, c.name);
      $("collection").append(opt);
    }
    $("about").textContent = collections
      .map((c) => `${c.name}: ${c.image_encoder} + ${c.text_encoder}, ${c.aligner}`).join(" · ");
  } catch (e) {
    status(e.message, true);
  }
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    go({ q: $("q").value.trim(), target: target(), collection: $("collection").value });
  });
  for (const radio of document.querySelectorAll("input[name=target]")) {
    radio.addEventListener("change", () => {
      const now = stateFromUrl();
      if (now.q || now.like) go({ ...now, target: target() });
    });
  }
  $("collection").addEventListener("change", () => {
    const now = stateFromUrl(); // an item id belongs to its collection: only a caption carries over
    if (now.q) go({ q: now.q, target: target(), collection: $("collection").value });
  });
  $("upload").addEventListener("change", (e) => upload(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("keydown", (e) => {
    if (e.target === drop && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      $("upload").click();
    }
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    upload(e.dataTransfer.files[0]);
  });
  window.addEventListener("popstate", () => run(stateFromUrl()));
  run(stateFromUrl());
}

init();
