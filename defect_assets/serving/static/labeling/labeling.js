// The labeling page: shows the next queued image large (with the model's heatmap where one
// exists), the model's guess, one button per class (keys 1-9), skip (S), undo (U or Ctrl+Z),
// heatmap on/off (H). Talks only to this service's /v1/labeling API; no library, no CDN.
"use strict";

const page = { view: null, item: null, busy: false, heatmap: true, photoShown: false };

const call = (method, path, body) => api(method, path, { body, signIn: "/label" });

function renderProgress(progress) {
  const done = progress.items ? (100 * progress.done) / progress.items : 100;
  $("progress-bar").style.width = `${done.toFixed(1)}%`;
  $("progress-text").textContent =
    `${progress.labeled} labeled, ${progress.skipped} skipped, ${progress.remaining} to go of ${progress.items}`;
  document.body.dataset.labeled = String(progress.labeled);
  document.body.dataset.remaining = String(progress.remaining);
}

function renderClasses(classes) {
  const box = $("classes");
  if (box.dataset.classes === JSON.stringify(classes)) return;
  box.dataset.classes = JSON.stringify(classes);
  classButtons(box, classes, (name) => act("label", name));
}

// The next photo replaces the previous one only once it is decoded, and the page is "ready" (takes
// labels) only then: a fast labeler must never label an image while still looking at the last one.
// (No other item can be rendered meanwhile: `page.busy` holds every action until it is shown.)
async function showPhoto(item) {
  const photo = $("photo");
  page.photoShown = false;
  photo.style.visibility = "hidden";
  photo.src = item.image_url;
  try {
    await photo.decode();
  } catch {
    throw new Error(`${item.image} could not be shown: skip it (S) or reload the page`);
  }
  photo.style.visibility = "visible";
  page.photoShown = true;
}

async function renderItem(item) {
  page.item = item;
  if (!item) {
    $("desk").hidden = true;
    $("done").hidden = false;
    document.body.dataset.item = "";
    setState("done");
    return;
  }
  $("desk").hidden = false;
  $("done").hidden = true;
  document.body.dataset.item = item.item_id;
  $("image-name").textContent = `#${item.rank}: ${item.batch} / ${item.image} (${item.width}x${item.height})`;
  $("annotate-link").href =
    `/annotate?batch=${encodeURIComponent(item.batch)}&image=${encodeURIComponent(item.image)}`;
  $("guess").textContent = item.guess;
  $("guess-p").textContent = `(p = ${item.guess_probability.toFixed(3)})`;
  $("model-version").textContent = item.model_version;
  $("strategy").textContent = `${item.strategy} score ${item.score.toFixed(3)}`;
  showProbabilities($("probabilities"), item.probabilities, 3);
  for (const b of document.querySelectorAll(".class-button")) {
    b.classList.toggle("guessed", b.dataset.label === item.guess);
  }
  const heat = $("heatmap");
  $("toggle-heatmap").hidden = !item.heatmap_url;
  if (item.heatmap_url) {
    heat.onerror = () => { heat.hidden = true; };
    heat.src = item.heatmap_url;
    heat.hidden = !page.heatmap;
  } else {
    heat.removeAttribute("src");
    heat.hidden = true;
  }
  await showPhoto(item);
  setState("ready");
}

function render(view) {
  page.view = view;
  $("queue-info").textContent =
    `${view.labeler} | queue ${view.queue} | ${view.strategy}${view.diversity ? " + diversity" : ""}`;
  renderClasses(view.classes);
  renderProgress(view.progress);
  $("undo").disabled = !view.can_undo;
}

async function load() {
  page.busy = true;
  setState("busy");
  try {
    const view = await call("GET", "/v1/labeling/queue");
    render(view);
    await renderItem(view.next);
  } catch (e) {
    say(e.message);
    setState(page.item ? "ready" : "error");
  } finally {
    page.busy = false;
  }
}

async function act(kind, label) {
  if (page.busy) return;
  if (kind !== "undo" && !page.item) return;
  if (kind === "label" && !page.photoShown) {
    say("this image is not shown: skip it (S) or reload the page");
    return;
  }
  page.busy = true;
  setState("busy");
  try {
    let doc;
    if (kind === "label") {
      doc = await call("POST", "/v1/labeling/labels", { item_id: page.item.item_id, label });
      say(`${page.item.image}: ${label}${doc.stored ? "" : " (already stored)"}`, true);
    } else if (kind === "skip") {
      doc = await call("POST", "/v1/labeling/skips", { item_id: page.item.item_id });
      say(`${page.item.image}: skipped`, true);
    } else {
      doc = await call("POST", "/v1/labeling/undo");
      say(`undone: ${doc.restored.image} is back`, true);
    }
    page.view.progress = doc.progress;
    page.view.can_undo = doc.can_undo;
    render(page.view);
    await renderItem(kind === "undo" ? doc.restored : doc.next);
  } catch (e) {
    say(e.message);
    setState(page.item ? "ready" : "done");
  } finally {
    page.busy = false;
  }
}

function onKey(event) {
  if (event.target instanceof HTMLInputElement) return;
  const key = event.key.toLowerCase();
  if ((event.ctrlKey || event.metaKey) && key === "z") {
    event.preventDefault();
    act("undo");
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (/^[1-9]$/.test(key)) {
    const classes = page.view ? page.view.classes : [];
    const name = classes[Number(key) - 1];
    if (name !== undefined) {
      event.preventDefault();
      act("label", name);
    }
  } else if (key === "s") {
    act("skip");
  } else if (key === "u" || key === "backspace") {
    event.preventDefault();
    act("undo");
  } else if (key === "h") {
    toggleHeatmap();
  }
}

function toggleHeatmap() {
  page.heatmap = !page.heatmap;
  $("heatmap").hidden = !page.heatmap || !(page.item && page.item.heatmap_url);
}

$("skip").addEventListener("click", () => act("skip"));
$("undo").addEventListener("click", () => act("undo"));
$("toggle-heatmap").addEventListener("click", toggleHeatmap);
document.addEventListener("keydown", onKey);
load();
