// The classify-one-image page: the chosen file goes to POST /v1/predict (decision, class
// probabilities, model version); a photo larger than the model's input also goes to POST
// /v1/inspect (heatmap, located defects). Only this service is asked; no library, no CDN.
"use strict";

function apiKey() {
  return $("api-key").value ? { "X-API-Key": $("api-key").value } : {};
}

async function post(path, file, field) {
  const form = new FormData();
  form.append(field, file, file.name);
  return api("POST", path, { form, headers: apiKey() });
}

function showPrediction(doc) {
  const r = doc.results[0];
  $("decision").textContent = r.decision;
  $("defect-score").textContent = r.defect_score.toFixed(4);
  $("threshold").textContent = doc.threshold === null ? "(none)" : Number(doc.threshold).toFixed(4);
  $("model-version").textContent = r.model_version;
  $("sha256").textContent = r.sha256.slice(0, 16);
  showProbabilities($("probabilities"), r.probabilities, 4);
  $("result").hidden = false;
}

async function showInspection(doc) {
  await drawHeatmap($("heatmap"), doc.heatmap_png, 0.67);
  $("colorbar").hidden = false;
  const svg = $("found");
  svg.setAttribute("viewBox", `0 0 ${doc.width} ${doc.height}`);
  svg.replaceChildren(...doc.defects.map((d) => {
    const c = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    c.setAttribute("cx", d.x);
    c.setAttribute("cy", d.y);
    c.setAttribute("r", doc.window / 2);  // the window the defect was found in, drawn around it (not over it)
    c.setAttribute("stroke-width", Math.max(1, doc.width / 300));
    return c;
  }));
  $("inspect-info").textContent = `${doc.windows} windows of ${doc.window} px (stride ${doc.stride}), `
    + `threshold ${Number(doc.threshold).toFixed(3)}: ${doc.defects.length} defect(s)`;
  $("defects").replaceChildren(...doc.defects.map((d) => {
    const li = document.createElement("li");
    li.textContent = `${d.kind} at (${d.x}, ${d.y}), p=${d.score.toFixed(3)}`;
    return li;
  }));
  $("inspection").hidden = false;
}

// Everything the last file showed, removed: decision, probabilities, photo, heatmap and its colour bar, marks.
function clearResult() {
  $("result").hidden = true;
  ["decision", "defect-score", "threshold", "model-version", "sha256"].forEach((id) => { $(id).textContent = ""; });
  $("probabilities").replaceChildren();
  $("inspection").hidden = true;
  $("defects").replaceChildren();
  $("heatmap").hidden = true;
  $("colorbar").hidden = true;
  $("found").replaceChildren();
  $("stack").hidden = true;
  $("photo").removeAttribute("src");
}

async function imageSize(file) {
  const url = URL.createObjectURL(file);
  const photo = $("photo");
  const shown = await new Promise((resolve) => {
    photo.onload = () => resolve(true);
    photo.onerror = () => resolve(false);
    photo.src = url;
  });
  if (shown) $("stack").hidden = false;  // a file the browser cannot show leaves no broken image box
  return { width: photo.naturalWidth, height: photo.naturalHeight };
}

async function classify(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  clearResult();  // the previous photo's decision never stays beside a new file
  document.body.dataset.state = "busy";
  say(`${file.name}: classifying...`, true);
  try {
    const size = await imageSize(file);
    const doc = await post("/v1/predict", file, "files");
    showPrediction(doc);
    const model = await api("GET", "/v1/model", { headers: apiKey() }).catch(() => null);
    const input = model && model.input ? model.input.patch_size || model.input.size : null;
    const window = input || 64;
    if (size.width > 2 * window || size.height > 2 * window) await showInspection(await post("/v1/inspect", file, "file"));
    say(`${file.name}: ${size.width}x${size.height}`, true);
    document.body.dataset.state = "done";
  } catch (e) {
    clearResult();  // an error replaces the result: no stale decision, no broken image box
    say(`${file.name}: ${e.message}`);
    document.body.dataset.state = "error";
  }
}

$("form").addEventListener("submit", classify);
