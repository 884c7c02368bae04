// The labeling page: shows the next queued image large (with the model's heatmap where one
// exists), the model's guess, one button per class (keys 1-9), skip (S), undo (U or Ctrl+Z),
// heatmap on/off (H), the model's guess on request (G), zoom and contrast sliders, the project
// owner's instructions (markdown, rendered here) and a practice round on images with known labels
// (N: next practice image). Talks only to this service's /v1/labeling API; no library, no CDN.
"use strict";

const page = { view: null, item: null, busy: false, heatmap: true, photoShown: false, showGuess: false,
  guessShown: false, practice: null, instructionsFor: undefined };

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
  $("viewer").hidden = false;
  document.body.dataset.item = item.item_id;
  $("image-name").textContent = `#${item.rank}: ${item.batch} / ${item.image} (${item.width}x${item.height})`;
  $("annotate-link").href =
    `/annotate?batch=${encodeURIComponent(item.batch)}&image=${encodeURIComponent(item.image)}`;
  showGuess(page.showGuess);  // hidden again for every new image unless the setting says otherwise
  loadInstructions(item.batch);
  $("guess").textContent = item.guess;
  $("guess-p").textContent = `(p = ${item.guess_probability.toFixed(3)})`;
  $("model-version").textContent = item.model_version;
  $("strategy").textContent = `${item.strategy} score ${item.score.toFixed(3)}`;
  showProbabilities($("probabilities"), item.probabilities, 3);
  markGuess();
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
    if (!page.item) {  // nothing to show: no empty photo frame, no "loading" left standing
      $("viewer").hidden = true;
      $("queue-info").textContent = "no queue loaded";
    }
    setState(page.item ? "ready" : "error");
  } finally {
    page.busy = false;
  }
}

async function act(kind, label) {
  if (page.practice) {
    if (kind === "label") practiceAnswer(label);
    return;
  }
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
    const classes = page.practice ? page.practice.classes : (page.view ? page.view.classes : []);
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
  } else if (key === "g") {
    showGuess(true);
  } else if (key === "n" && page.practice && page.practice.answered) {
    practiceNext();
  }
}

function toggleHeatmap() {
  page.heatmap = !page.heatmap;
  $("heatmap").hidden = !page.heatmap || !(page.item && page.item.heatmap_url);
}

// --- the model's guess, shown on request ---

function markGuess() {
  const on = page.guessShown && page.item && !page.practice;
  for (const b of document.querySelectorAll(".class-button")) {
    b.classList.toggle("guessed", Boolean(on && b.dataset.label === page.item.guess));
  }
}

function showGuess(on) {
  page.guessShown = Boolean(on);
  $("guess-details").hidden = !page.guessShown;
  $("show-guess").hidden = page.guessShown;
  document.body.dataset.guess = page.guessShown ? "shown" : "hidden";
  markGuess();
}

// --- zoom (the figure scrolls: pan) and contrast ---

function applyView() {
  const zoom = Number($("zoom").value);
  $("figure").style.setProperty("--zoom", String(zoom));
  $("figure").classList.toggle("zoomed", zoom > 1);
  $("photo").style.setProperty("--contrast", $("contrast").value);
}

// --- the project owner's instructions: a small markdown subset, built as DOM nodes (no HTML passes) ---

function inline(text) {
  const out = [];
  const re = /(\*\*[^*]+\*\*|\*[^*]+\*|`[^`]+`)/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
    const t = m[0];
    const el = document.createElement(t.startsWith("**") ? "strong" : t.startsWith("`") ? "code" : "em");
    el.textContent = t.startsWith("**") ? t.slice(2, -2) : t.slice(1, -1);
    out.push(el);
    last = m.index + t.length;
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

function renderMarkdown(markdown) {
  const nodes = [];
  let para = [];
  let list = null;
  const flush = () => {
    if (para.length) {
      const p = document.createElement("p");
      p.append(...inline(para.join(" ")));
      nodes.push(p);
    }
    para = [];
  };
  for (const raw of markdown.split(/\r?\n/)) {
    const line = raw.trim();
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const bullet = /^[-*+]\s+(.*)$/.exec(line);
    if (!line) {
      flush();
      list = null;
    } else if (heading) {
      flush();
      list = null;
      const h = document.createElement(heading[1].length <= 2 ? "h3" : "h4");
      h.append(...inline(heading[2]));
      nodes.push(h);
    } else if (bullet) {
      flush();
      if (!list) {
        list = document.createElement("ul");
        nodes.push(list);
      }
      const li = document.createElement("li");
      li.append(...inline(bullet[1]));
      list.append(li);
    } else {
      list = null;
      para.push(line);
    }
  }
  flush();
  return nodes;
}

async function loadInstructions(batch) {
  if (page.instructionsFor === batch) return;
  page.instructionsFor = batch;
  try {
    const doc = await call("GET", `/v1/labeling/instructions?batch=${encodeURIComponent(batch || "")}`);
    $("instructions").replaceChildren(...renderMarkdown(doc.markdown));
    $("instructions-box").hidden = !doc.markdown;
    $("instructions-box").dataset.source = doc.source || "";
  } catch {
    $("instructions-box").hidden = true;
  }
}

// --- the practice round: known labels, the answer compared, nothing stored ---

async function practiceStart() {
  if (page.busy) return;
  try {
    const doc = await call("GET", "/v1/labeling/practice");
    if (!doc.items.length) {
      say("no practice images: no ingested batch has image labels of its own (labels.csv)");
      return;
    }
    page.practice = { items: doc.items, i: 0, agreed: 0, answered: false, classes: [] };
    document.body.classList.add("practising");
    $("practice-box").hidden = false;
    say("practice: these answers are not stored", true);
    await practiceShow();
  } catch (e) {
    say(e.message);
  }
}

async function practiceShow() {
  const pr = page.practice;
  const item = pr.items[pr.i];
  pr.answered = false;
  pr.classes = item.classes;
  $("practice-feedback").textContent = "";
  $("practice-feedback").className = "";
  $("practice-next").hidden = true;
  $("practice-progress").textContent = `image ${pr.i + 1} of ${pr.items.length}; ${pr.agreed} agreed so far`;
  const box = $("classes");
  box.dataset.classes = "";
  classButtons(box, item.classes, (name) => act("label", name));
  document.body.dataset.item = `practice:${item.item_id}`;
  $("image-name").textContent = `practice: ${item.batch} / ${item.image} (${item.width}x${item.height})`;
  $("heatmap").hidden = true;
  $("viewer").hidden = false;
  setState("busy");
  try {
    await showPhoto(item);
    setState("ready");
  } catch (e) {
    say(e.message);
    setState("ready");
  }
}

async function practiceAnswer(label) {
  const pr = page.practice;
  if (pr.answered || page.busy || !page.photoShown) return;
  page.busy = true;
  try {
    const doc = await call("POST", "/v1/labeling/practice/answers", { item_id: pr.items[pr.i].item_id, label });
    pr.answered = true;
    if (doc.agreed) pr.agreed += 1;
    const fb = $("practice-feedback");
    fb.textContent = doc.agreed ? `Agreed: it is ${doc.known}.`
      : `Not the same: you said ${doc.label}, the known label is ${doc.known}.`;
    fb.className = doc.agreed ? "agreed" : "disagreed";
    document.body.dataset.practice = doc.agreed ? "agreed" : "disagreed";
    const last = pr.i + 1 >= pr.items.length;
    $("practice-progress").textContent = `image ${pr.i + 1} of ${pr.items.length}; ${pr.agreed} agreed so far`
      + (last ? " (the last one: End practice returns to the queue)" : "");
    $("practice-next").hidden = last;
  } catch (e) {
    say(e.message);
  } finally {
    page.busy = false;
  }
}

function practiceNext() {
  if (page.practice.i + 1 < page.practice.items.length) {
    page.practice.i += 1;
    practiceShow();
  }
}

function practiceEnd() {
  page.practice = null;
  document.body.classList.remove("practising");
  delete document.body.dataset.practice;
  $("practice-box").hidden = true;
  $("classes").dataset.classes = "";
  say("");
  load();
}

$("show-guess").addEventListener("click", () => showGuess(true));
$("zoom").addEventListener("input", applyView);
$("contrast").addEventListener("input", applyView);
$("view-reset").addEventListener("click", () => { $("zoom").value = "1"; $("contrast").value = "1"; applyView(); });
$("practice-start").addEventListener("click", practiceStart);
$("practice-next").addEventListener("click", practiceNext);
$("practice-end").addEventListener("click", practiceEnd);
$("skip").addEventListener("click", () => act("skip"));
$("undo").addEventListener("click", () => act("undo"));
$("toggle-heatmap").addEventListener("click", toggleHeatmap);
document.addEventListener("keydown", onKey);
call("GET", "/v1/labeling/options").then((o) => { page.showGuess = Boolean(o.show_guess); showGuess(page.showGuess); })
  .catch(() => {}).finally(load);
