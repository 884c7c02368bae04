// The annotation view: any image of an ingested batch at full resolution with zoom (wheel, +/-, F
// to fit) and pan (right-drag, Space+drag). A click places a defect center of the current class, a
// drag draws a box, dragging a mark moves it; a selected mark is relabeled with 1-9 and deleted
// with Del. 0 answers "no defect here", U (Ctrl+Z) undoes, S saves, N/P go to the next/previous
// image (saving first). G asks the production model for suggestions and its heatmap (the
// service's sliding windows; H shows/hides the heatmap); A/R accept or reject the selected one. Every coordinate kept and sent is in image
// pixels. Talks only to this service's /v1/annotations API; no library, no CDN.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const CLICK_SLOP = 4; // screen pixels a press may wander and still be a click
const A = {
  batch: null, images: [], index: 0, classes: [], current: 0, view: null,
  marks: [], noDefect: false, suggestions: [], modelVersion: "",
  selected: null, chosen: null, history: [], dirty: false,
  zoom: 1, tx: 0, ty: 0, drag: null, space: false, busy: false,
};
window.annotator = A;

const call = (method, path, body) => api(method, path, { body, signIn: "/annotate" });

const batchPath = (rest) => `/v1/annotations/batches/${encodeURIComponent(A.batch)}${rest || ""}`;
const imageQuery = () => `image=${encodeURIComponent(A.images[A.index].image)}`;

// --- coordinates: image pixels <-> the page ---

A.toImage = (clientX, clientY) => {
  const r = $("viewport").getBoundingClientRect();
  return { x: (clientX - r.left - A.tx) / A.zoom, y: (clientY - r.top - A.ty) / A.zoom };
};
A.toScreen = (x, y) => {
  const r = $("viewport").getBoundingClientRect();
  return { x: r.left + A.tx + x * A.zoom, y: r.top + A.ty + y * A.zoom };
};

function applyTransform() {
  $("stage").style.transform = `translate(${A.tx}px, ${A.ty}px) scale(${A.zoom})`;
  $("zoom-level").textContent = `${Math.round(A.zoom * 100)}%`;
  document.body.dataset.zoom = String(A.zoom);
  draw();
}

function zoomAt(factor, clientX, clientY) {
  const r = $("viewport").getBoundingClientRect();
  const cx = clientX === undefined ? r.left + r.width / 2 : clientX;
  const cy = clientY === undefined ? r.top + r.height / 2 : clientY;
  const p = A.toImage(cx, cy);
  A.zoom = Math.min(32, Math.max(0.05, A.zoom * factor));
  A.tx = cx - r.left - p.x * A.zoom;
  A.ty = cy - r.top - p.y * A.zoom;
  applyTransform();
}

function fit() {
  if (!A.view) return;
  const r = $("viewport").getBoundingClientRect();
  A.zoom = Math.min(r.width / A.view.width, r.height / A.view.height) * 0.95;
  A.tx = (r.width - A.view.width * A.zoom) / 2;
  A.ty = (r.height - A.view.height * A.zoom) / 2;
  applyTransform();
}

// --- editing (every change first keeps a snapshot for undo) ---

const snapshot = () => JSON.stringify({ marks: A.marks, noDefect: A.noDefect, suggestions: A.suggestions });

function remember(before) {
  A.history.push(before || snapshot());
  A.dirty = true;
}

function undo() {
  const last = A.history.pop();
  if (last === undefined) { say("nothing to undo"); return; }
  const s = JSON.parse(last);
  Object.assign(A, { marks: s.marks, noDefect: s.noDefect, suggestions: s.suggestions, selected: null });
  A.dirty = true;
  render();
}

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const round2 = (v) => Math.round(v * 100) / 100;

function addPoint(p, label) {
  remember();
  A.noDefect = false;
  A.marks.push({ kind: "point", label: label || A.classes[A.current],
                 x: round2(clamp(p.x, 0, A.view.width - 0.01)), y: round2(clamp(p.y, 0, A.view.height - 0.01)) });
  A.selected = null; // a new mark is not selected: the next number key picks the class, not relabels it
  render();
}

function addBox(a, b) {
  const xmin = Math.round(clamp(Math.min(a.x, b.x), 0, A.view.width));
  const xmax = Math.round(clamp(Math.max(a.x, b.x), 0, A.view.width));
  const ymin = Math.round(clamp(Math.min(a.y, b.y), 0, A.view.height));
  const ymax = Math.round(clamp(Math.max(a.y, b.y), 0, A.view.height));
  if (xmax <= xmin || ymax <= ymin) return;
  remember();
  A.noDefect = false;
  A.marks.push({ kind: "box", label: A.classes[A.current], xmin, ymin, xmax, ymax });
  A.selected = null;
  render();
}

function moved(mark, dx, dy) {
  if (mark.kind === "point") {
    return { ...mark, x: round2(clamp(mark.x + dx, 0, A.view.width - 0.01)),
             y: round2(clamp(mark.y + dy, 0, A.view.height - 0.01)) };
  }
  const w = mark.xmax - mark.xmin, h = mark.ymax - mark.ymin;
  const xmin = Math.round(clamp(mark.xmin + dx, 0, A.view.width - w));
  const ymin = Math.round(clamp(mark.ymin + dy, 0, A.view.height - h));
  return { ...mark, xmin, ymin, xmax: xmin + w, ymax: ymin + h };
}

function deleteSelected() {
  if (A.selected === null) return;
  remember();
  A.marks.splice(A.selected, 1);
  A.selected = null;
  render();
}

function relabelSelected(label) {
  remember();
  A.marks[A.selected] = { ...A.marks[A.selected], label };
  render();
}

function toggleNoDefect() {
  remember();
  A.noDefect = !A.noDefect;
  if (A.noDefect) { A.marks = []; A.selected = null; }
  render();
}

function decide(i, decision) {
  const s = A.suggestions[i];
  if (!s || s.decision) return;
  remember();
  s.decision = decision;
  if (decision === "accepted") {
    A.noDefect = false;
    const label = A.classes.includes(s.label) ? s.label : A.classes[A.current];
    A.marks.push({ kind: "point", label, x: round2(s.x), y: round2(s.y) });
  }
  A.chosen = A.suggestions.findIndex((t) => !t.decision);
  if (A.chosen < 0) A.chosen = null;
  render();
}

// --- drawing ---

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (parent) parent.append(e);
  return e;
}

function draw(preview) {
  const svg = $("overlay");
  if (!A.view) return;
  svg.replaceChildren();
  const unit = 1 / A.zoom;
  for (const m of A.view.file_marks || []) { // the batch's own label files: shown, not editable here
    const common = { "stroke-width": 1.5 * unit, "stroke-dasharray": `${3 * unit} ${2 * unit}`, class: "file-mark" };
    if (m.kind === "point") el("circle", { cx: m.x, cy: m.y, r: 5 * unit, ...common }, svg);
    else el("rect", { x: m.xmin, y: m.ymin, width: m.xmax - m.xmin, height: m.ymax - m.ymin, ...common }, svg);
  }
  A.suggestions.forEach((s, i) => {
    if (s.decision) return;
    el("circle", { cx: s.x, cy: s.y, r: 9 * unit, "stroke-width": 2 * unit, "data-suggestion": i,
                   "stroke-dasharray": `${4 * unit} ${3 * unit}`,
                   class: `suggestion${A.chosen === i ? " chosen" : ""}` }, svg);
  });
  A.marks.forEach((m0, i) => {
    const m = preview && preview.index === i ? preview.mark : m0;
    const cls = `mark ${m.kind}${A.selected === i ? " selected" : ""}`;
    if (m.kind === "point") {
      el("circle", { cx: m.x, cy: m.y, r: 6 * unit, "stroke-width": 2 * unit, "data-mark": i, class: cls }, svg);
      el("text", { x: m.x + 8 * unit, y: m.y - 8 * unit, "font-size": 12 * unit, "stroke-width": 3 * unit }, svg)
        .textContent = m.label;
    } else {
      el("rect", { x: m.xmin, y: m.ymin, width: m.xmax - m.xmin, height: m.ymax - m.ymin, "stroke-width": 2 * unit,
                   "data-mark": i, class: cls }, svg);
      el("text", { x: m.xmin, y: m.ymin - 4 * unit, "font-size": 12 * unit, "stroke-width": 3 * unit }, svg)
        .textContent = m.label;
    }
  });
  if (preview && preview.rubber) {
    const [a, b] = preview.rubber;
    el("rect", { x: Math.min(a.x, b.x), y: Math.min(a.y, b.y), width: Math.abs(a.x - b.x),
                 height: Math.abs(a.y - b.y), "stroke-width": unit, class: "rubber" }, svg);
  }
}

function describe(m) {
  return m.kind === "point" ? `point ${m.label} at (${m.x.toFixed(1)}, ${m.y.toFixed(1)})`
    : `box ${m.label} (${m.xmin}, ${m.ymin})-(${m.xmax}, ${m.ymax})`;
}

function renderClasses() {
  classButtons($("classes"), A.classes, (name, i) => chooseClass(i), A.current);
}

function renderLists() {
  const marks = A.marks.map((m, i) => {
    const li = document.createElement("li");
    li.className = `mark-item${A.selected === i ? " selected" : ""}`;
    li.textContent = describe(m);
    li.addEventListener("click", () => { A.selected = i; render(); });
    const del = document.createElement("button");
    del.type = "button";
    del.textContent = "delete";
    del.addEventListener("click", (e) => { e.stopPropagation(); A.selected = i; deleteSelected(); });
    li.append(del);
    return li;
  });
  $("marks").replaceChildren(...marks);
  $("mark-count").textContent = `(${A.marks.length})`;
  const sugg = A.suggestions.map((s, i) => {
    const li = document.createElement("li");
    li.className = `suggestion-item ${s.decision || "open"}`;
    li.textContent = `${s.label} at (${s.x.toFixed(1)}, ${s.y.toFixed(1)}) p=${s.score.toFixed(3)}`
      + (s.decision ? `: ${s.decision}` : "");
    if (!s.decision) {
      for (const [text, decision] of [["accept", "accepted"], ["reject", "rejected"]]) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = decision === "accepted" ? "accept" : "reject";
        b.textContent = text;
        b.addEventListener("click", () => decide(i, decision));
        li.append(b);
      }
    }
    return li;
  });
  $("suggestions").replaceChildren(...sugg);
}

function render() {
  renderClasses();
  renderLists();
  document.body.classList.toggle("no-defect", A.noDefect);
  $("no-defect").classList.toggle("on", A.noDefect);
  document.body.dataset.marks = String(A.marks.length);
  document.body.dataset.dirty = String(A.dirty);
  draw();
}

function chooseClass(i) {
  if (i >= A.classes.length) return;
  if (A.selected !== null) relabelSelected(A.classes[i]);
  else { A.current = i; render(); }
}

// --- the mouse ---

function hit(target) {
  const m = target.closest ? target.closest("[data-mark]") : null;
  if (m) return { mark: Number(m.dataset.mark) };
  const s = target.closest ? target.closest("[data-suggestion]") : null;
  return s ? { suggestion: Number(s.dataset.suggestion) } : {};
}

function onDown(e) {
  if (!A.view || A.busy) return;
  $("viewport").focus();
  if (e.button === 2 || e.button === 1 || A.space) {
    A.drag = { type: "pan", cx: e.clientX, cy: e.clientY, tx: A.tx, ty: A.ty };
    $("viewport").classList.add("panning");
    e.preventDefault();
    return;
  }
  if (e.button !== 0) return;
  e.preventDefault();
  const p = A.toImage(e.clientX, e.clientY);
  const target = hit(e.target);
  if (target.mark !== undefined) {
    A.selected = target.mark;
    A.drag = { type: "move", index: target.mark, start: p, cx: e.clientX, cy: e.clientY, moved: false,
               before: snapshot() };
    render();
  } else if (target.suggestion !== undefined) {
    A.chosen = target.suggestion;
    A.selected = null;
    render();
  } else {
    A.drag = { type: "new", start: p, cx: e.clientX, cy: e.clientY, moved: false };
  }
}

function onMove(e) {
  const d = A.drag;
  if (!d) return;
  if (d.type === "pan") {
    A.tx = d.tx + e.clientX - d.cx;
    A.ty = d.ty + e.clientY - d.cy;
    applyTransform();
    return;
  }
  if (Math.hypot(e.clientX - d.cx, e.clientY - d.cy) > CLICK_SLOP) d.moved = true;
  if (!d.moved) return;
  const p = A.toImage(e.clientX, e.clientY);
  if (d.type === "move") {
    draw({ index: d.index, mark: moved(A.marks[d.index], p.x - d.start.x, p.y - d.start.y) });
  } else {
    draw({ rubber: [d.start, p] });
  }
}

function onUp(e) {
  const d = A.drag;
  A.drag = null;
  $("viewport").classList.remove("panning");
  if (!d || d.type === "pan") return;
  const p = A.toImage(e.clientX, e.clientY);
  if (d.type === "move") {
    if (d.moved) {
      remember(d.before);
      A.marks[d.index] = moved(A.marks[d.index], p.x - d.start.x, p.y - d.start.y);
    }
    render();
  } else if (d.moved) {
    addBox(d.start, p);
  } else {
    A.selected = null;
    addPoint(d.start);
  }
}

// --- loading, saving, moving between images ---

async function loadBatch(batch, wanted) {
  A.batch = batch;
  const listing = await call("GET", batchPath());
  A.images = listing.images;
  A.classes = listing.classes;
  $("export-csv").href = batchPath("/points.csv");
  $("export-voc").href = batchPath("/voc.zip");
  const at = A.images.findIndex((i) => i.image === wanted);
  const todo = A.images.findIndex((i) => i.needs_marks);  // else the first image that still needs marks
  await loadImage(at >= 0 ? at : Math.max(todo, 0));
}

async function loadImage(index) {
  if (!A.images.length) { say("this batch has no images"); setState("ready"); return; }
  setState("busy");
  A.index = index;
  const view = await call("GET", `${batchPath("/marks")}?${imageQuery()}`);
  const ann = view.annotation;
  Object.assign(A, { view, classes: view.classes, marks: ann ? ann.marks : [], noDefect: ann ? ann.no_defect : false,
                     suggestions: ann ? ann.suggestions.map((s) => ({ ...s })) : [],
                     modelVersion: ann ? ann.model_version : "", selected: null, chosen: null, history: [],
                     dirty: false });
  if (A.current >= A.classes.length) A.current = 0;
  $("position").textContent = `${index + 1} / ${A.images.length}`;
  $("image-name").textContent = `${A.batch} / ${view.image} (${view.width}x${view.height})`;
  $("versions").textContent = (view.versions ? `${view.versions} saved version(s); latest by ${ann.labeler}` : "not annotated yet")
    + (view.file_labels ? `. The batch's own label files label this image (${view.file_labels} row(s)): they win over marks saved here.` : "");
  document.body.dataset.image = view.image;
  document.body.dataset.saved = ann ? ann.id : "";
  history.replaceState(null, "", `/annotate?batch=${encodeURIComponent(A.batch)}&${imageQuery()}`);
  $("heatmap").hidden = true;
  $("toggle-heatmap").hidden = true;
  const photo = $("photo");
  await new Promise((resolve) => {
    photo.onload = resolve;
    photo.onerror = resolve;
    photo.src = `${batchPath("/image")}?${imageQuery()}`;
  });
  photo.style.width = `${view.width}px`;
  photo.style.height = `${view.height}px`;
  $("overlay").setAttribute("width", view.width);
  $("overlay").setAttribute("height", view.height);
  $("overlay").setAttribute("viewBox", `0 0 ${view.width} ${view.height}`);
  fit();
  render();
  setState("ready");
}

async function save() {
  if (A.busy || !A.view) return false;
  const decided = A.suggestions.filter((s) => s.decision);
  if (!A.marks.length && !A.noDefect && !decided.length) {
    say("nothing to save: mark a defect or answer 'no defect here' (0)");
    return false;
  }
  A.busy = true;
  setState("busy");
  try {
    const doc = await call("POST", batchPath("/marks"), {
      image: A.view.image, marks: A.marks, no_defect: A.noDefect,
      suggestions: decided.map(({ x, y, score, label, decision }) => ({ x, y, score, label, decision })),
      model_version: decided.length ? A.modelVersion : "",
    });
    A.dirty = false;
    A.marks = doc.annotation.marks;
    document.body.dataset.saved = doc.annotation.id;
    if (doc.stored) A.view.versions += 1;
    $("versions").textContent = `${A.view.versions} saved version(s); latest by ${doc.annotation.labeler}`;
    say(`${A.view.image}: ${doc.stored ? "saved" : "already saved"} (${A.marks.length} mark(s)` +
        `${A.noDefect ? ", no defect" : ""})`, true);
    A.images[A.index].needs_marks = false;
    A.images[A.index].annotated = true;
    render();
    refreshBatchCounts();
    return true;
  } catch (e) {
    say(e.message);
    return false;
  } finally {
    A.busy = false;
    setState("ready");
  }
}

async function go(step) {
  const to = A.index + step;
  if (to < 0 || to >= A.images.length) return;
  if (A.dirty && (A.marks.length || A.noDefect) && !(await save())) return;
  try { await loadImage(to); } catch (e) { say(e.message); setState("error"); }
}

async function showHeatmap(png) {
  const canvas = $("heatmap");
  canvas.style.width = `${A.view.width}px`;
  canvas.style.height = `${A.view.height}px`;
  await drawHeatmap(canvas, png, 0.6);
  $("toggle-heatmap").hidden = false;
}

function toggleHeatmap() {
  if ($("toggle-heatmap").hidden) return;
  $("heatmap").hidden = !$("heatmap").hidden;
}

async function suggest() {
  if (!A.view || A.busy) return;
  A.busy = true;
  setState("busy");
  try {
    const t = $("threshold").value;
    const body = { image: A.view.image };
    if (t !== "") body.threshold = Number(t);
    const doc = await call("POST", batchPath("/suggestions"), body);
    await showHeatmap(doc.heatmap_png);
    remember();
    A.modelVersion = doc.model_version;
    const decided = A.suggestions.filter((s) => s.decision);
    const fresh = doc.suggestions.filter((s) => !decided.some((d) => Math.hypot(d.x - s.x, d.y - s.y) < 1));
    A.suggestions = decided.concat(fresh.map((s) => ({ ...s, decision: null })));
    A.chosen = A.suggestions.findIndex((s) => !s.decision);
    if (A.chosen < 0) A.chosen = null;
    const at = Number(doc.threshold).toFixed(3);  // 0.515, not 0.5149708390235901
    say(doc.suggestions.length
      ? `${doc.suggestions.length} suggestion(s) from ${doc.model_version} at threshold ${at}`
      : `no suggestion: no window of this photo scores above the threshold ${at} (${doc.model_version}); `
        + "a lower threshold offers more", true);
    render();
  } catch (e) {
    say(e.message);
  } finally {
    A.busy = false;
    setState("ready");
  }
}

function onKey(e) {
  if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
  const key = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && key === "z") { e.preventDefault(); undo(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (key === " ") { A.space = true; e.preventDefault(); return; }
  if (/^[1-9]$/.test(key)) chooseClass(Number(key) - 1);
  else if (key === "0") toggleNoDefect();
  else if (key === "delete" || key === "backspace") { e.preventDefault(); deleteSelected(); }
  else if (key === "u") undo();
  else if (key === "s") save();
  else if (key === "n" || key === "arrowright") go(1);
  else if (key === "p" || key === "arrowleft") go(-1);
  else if (key === "f") fit();
  else if (key === "+" || key === "=") zoomAt(1.25);
  else if (key === "-") zoomAt(0.8);
  else if (key === "g") suggest();
  else if (key === "h") toggleHeatmap();
  else if (key === "a" && A.chosen !== null) decide(A.chosen, "accepted");
  else if (key === "r" && A.chosen !== null) decide(A.chosen, "rejected");
  else if (key === "escape") { A.selected = null; A.chosen = null; render(); }
}

function renderBatchOptions(batches) {
  const select = $("batch");
  const value = select.value;
  select.replaceChildren(...batches.map((b) => {
    const o = document.createElement("option");
    o.value = b.batch;
    o.textContent = `${b.batch} (${b.annotated}/${b.images} annotated, ${b.needs_marks} to mark)`;
    o.dataset.needsMarks = String(b.needs_marks);
    return o;
  }));
  if (value) select.value = value;
}

// the drop-down's counts again, after a save (live, not as they were when the page opened)
async function refreshBatchCounts() {
  try {
    renderBatchOptions((await call("GET", "/v1/annotations/batches")).batches);
  } catch { /* the counts stay as they were; the save itself succeeded */ }
}

async function start() {
  setState("busy");
  try {
    const params = new URLSearchParams(window.location.search);
    const { batches } = await call("GET", "/v1/annotations/batches");
    const select = $("batch");
    renderBatchOptions(batches);
    if (!batches.length) { say("no ingested batch yet: upload photos first"); setState("ready"); return; }
    // the batch the address names, else the first batch with images that still need marks, else the first
    const todo = batches.find((b) => b.needs_marks > 0) || batches[0];
    const wanted = batches.some((b) => b.batch === params.get("batch")) ? params.get("batch") : todo.batch;
    select.value = wanted;
    await loadBatch(wanted, params.get("image"));
  } catch (e) {
    say(e.message);
    setState("error");
  }
}

const vp = $("viewport");
vp.addEventListener("mousedown", onDown);
window.addEventListener("mousemove", onMove);
window.addEventListener("mouseup", onUp);
vp.addEventListener("contextmenu", (e) => e.preventDefault());
vp.addEventListener("wheel", (e) => { e.preventDefault(); zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.clientX, e.clientY); },
                    { passive: false });
document.addEventListener("keydown", onKey);
document.addEventListener("keyup", (e) => { if (e.key === " ") A.space = false; });
$("zoom-in").addEventListener("click", () => zoomAt(1.25));
$("zoom-out").addEventListener("click", () => zoomAt(0.8));
$("zoom-fit").addEventListener("click", fit);
$("no-defect").addEventListener("click", toggleNoDefect);
$("undo").addEventListener("click", undo);
$("save").addEventListener("click", save);
$("next").addEventListener("click", () => go(1));
$("prev").addEventListener("click", () => go(-1));
$("suggest").addEventListener("click", suggest);
$("toggle-heatmap").addEventListener("click", toggleHeatmap);
$("batch").addEventListener("change", async (e) => {
  if (A.dirty && (A.marks.length || A.noDefect) && !(await save())) { e.target.value = A.batch; return; }
  try { await loadBatch(e.target.value); } catch (err) { say(err.message); }
});
window.addEventListener("resize", fit);
start();
