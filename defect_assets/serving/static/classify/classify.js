// The classify page: every chosen or dropped file gets its own result card. Each file goes to
// POST /v1/predict (the whole image shrunk into the model's input: decision, class probabilities,
// model version); a photo larger than twice the model's window also goes to POST /v1/inspect
// (the model slid over it: heatmap, located defects), and then the card's decision is the one of
// the windows, because a small defect vanishes when the whole photo is shrunk. An error belongs
// to its file's card only. Only this service is asked; no library, no CDN.
"use strict";

let run = 0;  // the submission on the page: an older one still in flight stops writing to it
let photoUrls = [];  // object URLs of the shown photos, revoked when their cards are cleared

function apiKey() {
  return $("api-key").value ? { "X-API-Key": $("api-key").value } : {};
}

async function post(path, file, field) {
  const form = new FormData();
  form.append(field, file, file.name);
  return api("POST", path, { form, headers: apiKey() });
}

const part = (card, name) => card.querySelector(`.${name}`);
const fixed = (v, digits) => (v === null || v === undefined ? "(none)" : Number(v).toFixed(digits));

function cardSay(card, text, ok) {
  const m = part(card, "card-message");
  m.textContent = text || "";
  m.className = `card-message message${ok ? " ok" : ""}`;
}

function newCard(file, index) {
  const card = $("card-template").content.firstElementChild.cloneNode(true);
  card.dataset.index = String(index);
  card.dataset.file = file.name;
  part(card, "name").textContent = file.name || `file ${index + 1}`;
  cardSay(card, "waiting...", true);
  return card;
}

// The photo shown in its card; its size (0 x 0 when the browser cannot show it: no broken image box).
async function showPhoto(card, file) {
  const url = URL.createObjectURL(file);
  photoUrls.push(url);
  const photo = part(card, "photo");
  const shown = await new Promise((resolve) => {
    photo.onload = () => resolve(true);
    photo.onerror = () => resolve(false);
    photo.src = url;
  });
  if (!shown) {
    photo.removeAttribute("src");
    return { width: 0, height: 0 };
  }
  part(card, "stack").hidden = false;
  return { width: photo.naturalWidth, height: photo.naturalHeight };
}

// What /v1/predict said: the whole image shrunk into the model's input.
function showWhole(card, doc, large) {
  const r = doc.results[0];
  part(card, "whole-title").textContent = large ? "Whole photo shrunk into the model's input" : "Class probabilities";
  part(card, "whole").textContent = large ? `defect score ${r.defect_score.toFixed(4)}, threshold `
    + `${fixed(doc.threshold, 4)}: ${r.decision} (not the decision: a defect much smaller than the photo fades when `
    + "the whole photo is shrunk; the windows see it at the size training saw)" : "";
  part(card, "whole").dataset.decision = r.decision;
  part(card, "whole").dataset.score = String(r.defect_score);
  showProbabilities(part(card, "probabilities"), r.probabilities, 4);
  part(card, "model-version").textContent = r.model_version;
  part(card, "sha256").textContent = r.sha256.slice(0, 16);
}

function headline(card, decision, isDefect, basis) {
  part(card, "decision").textContent = decision;
  part(card, "basis").textContent = basis;
  card.dataset.decision = decision;
  card.dataset.defect = isDefect ? "yes" : "no";
  part(card, "result").hidden = false;
}

function windowsBasis(doc) {
  const n = doc.defects.length;
  if (!n) {
    return `none located in ${doc.windows} windows of ${doc.window} px (strongest window p=`
      + `${doc.max_window_score.toFixed(3)}, below the threshold ${fixed(doc.threshold, 3)})`;
  }
  const kinds = [...new Set(doc.defects.map((d) => d.kind))];
  const what = kinds.length > 1 || kinds[0] !== doc.decision ? ` (${kinds.join(", ")})` : "";
  return `${n} located${what} in ${doc.windows} windows of ${doc.window} px`;
}

// What /v1/inspect said: the heatmap, one circle per located defect (the window it was found in,
// drawn around the defect so the mark never covers it) and the list of defects.
async function showInspection(card, doc) {
  await drawHeatmap(part(card, "heatmap"), doc.heatmap_png, 0.67);
  part(card, "colorbar").hidden = false;
  const svg = part(card, "found");
  svg.setAttribute("viewBox", `0 0 ${doc.width} ${doc.height}`);
  svg.replaceChildren(...doc.defects.map((d) => {
    const c = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    c.setAttribute("cx", d.x);
    c.setAttribute("cy", d.y);
    c.setAttribute("r", doc.window / 2);
    c.setAttribute("stroke-width", Math.max(1, doc.width / 300));
    return c;
  }));
  part(card, "inspect-info").textContent = `${doc.windows} windows of ${doc.window} px (stride ${doc.stride}), `
    + `threshold ${fixed(doc.threshold, 3)}; strongest window p=${doc.max_window_score.toFixed(3)}`;
  part(card, "defects").replaceChildren(...doc.defects.map((d) => {
    const li = document.createElement("li");
    li.textContent = `${d.kind} at (${d.x}, ${d.y}), p=${d.score.toFixed(3)}`;
    return li;
  }));
  part(card, "inspection").hidden = false;
}

// A card whose file failed: nothing but its name and the reason.
function clearCard(card) {
  part(card, "result").hidden = true;
  part(card, "stack").hidden = true;
  part(card, "colorbar").hidden = true;
  part(card, "probabilities").replaceChildren();
  part(card, "decision").textContent = "";
  delete card.dataset.decision;
}

async function classifyOne(card, file, side, mine) {
  const stale = () => mine !== run;
  card.dataset.state = "busy";
  cardSay(card, "classifying...", true);
  try {
    const size = await showPhoto(card, file);
    const doc = await post("/v1/predict", file, "files");
    if (stale()) return;
    const large = size.width > 2 * side || size.height > 2 * side;
    const r = doc.results[0];
    showWhole(card, doc, large);
    const dims = size.width ? `${size.width}x${size.height}` : "not shown by the browser";
    if (!large) {
      headline(card, r.decision, r.is_defect, `whole image: defect score ${r.defect_score.toFixed(4)}, `
        + `threshold ${fixed(doc.threshold, 4)}`);
      cardSay(card, dims, true);
      card.dataset.state = "done";
      return;
    }
    let inspected;
    try {
      inspected = await post("/v1/inspect", file, "file");
    } catch (e) {
      if (stale()) return;
      headline(card, r.decision, r.is_defect, "from the whole photo shrunk into the model's input only: "
        + "the windows were not scored");
      cardSay(card, `${dims}; windows not scored: ${e.message}`);
      card.dataset.state = "partial";
      return;
    }
    if (stale()) return;
    await showInspection(card, inspected);
    headline(card, inspected.decision, inspected.is_defect, windowsBasis(inspected));
    cardSay(card, dims, true);
    card.dataset.state = "done";
  } catch (e) {
    if (stale()) return;
    clearCard(card);
    cardSay(card, e.message);
    card.dataset.state = "error";
  }
}

// The window side the page compares photos with: the model's patch size (64 when unknown).
async function modelWindow() {
  const model = await api("GET", "/v1/model", { headers: apiKey() }).catch(() => null);
  return (model && model.input ? model.input.patch_size || model.input.size : null) || 64;
}

async function classifyFiles(files) {
  if (!files.length) return;
  const mine = ++run;
  photoUrls.forEach((u) => URL.revokeObjectURL(u));
  photoUrls = [];
  const cards = files.map(newCard);
  $("results").replaceChildren(...cards);  // a new submission: every old card goes first
  setState("busy");
  say(`${files.length} file(s): classifying...`, true);
  const side = await modelWindow();
  for (let i = 0; i < files.length; i += 1) {
    if (mine !== run) return;
    await classifyOne(cards[i], files[i], side, mine);  // one at a time: the windows are heavy work
  }
  if (mine !== run) return;
  const failed = cards.filter((c) => c.dataset.state === "error").length;
  const text = `${files.length} file(s): ${files.length - failed} classified`
    + (failed ? `, ${failed} refused (see the card)` : "");
  say(text, failed === 0);
  setState(failed === files.length ? "error" : "done");
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  classifyFiles([...$("file").files]);
});

// Files dropped anywhere on the page are classified like chosen ones.
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.dataset.drag = "over";
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) delete document.body.dataset.drag;
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  delete document.body.dataset.drag;
  const files = [...((event.dataTransfer && event.dataTransfer.files) || [])];
  if (!files.length) return;
  try {
    $("file").files = event.dataTransfer.files;  // the file input names what is shown
  } catch (e) { /* an old browser: the cards still name the files */ }
  classifyFiles(files);
});
