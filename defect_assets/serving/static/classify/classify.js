// The classify-one-image page: the chosen file goes to POST /v1/predict (decision, class
// probabilities, model version); a photo larger than the model's input also goes to POST
// /v1/inspect (heatmap, located defects). Only this service is asked; no library, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);

function say(text, ok) {
  $("message").textContent = text || "";
  $("message").className = ok ? "message ok" : "message";
}

async function post(path, file, field) {
  const form = new FormData();
  form.append(field, file, file.name);
  const headers = { Accept: "application/json" };
  if ($("api-key").value) headers["X-API-Key"] = $("api-key").value;
  const response = await fetch(path, { method: "POST", body: form, headers });
  const doc = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(doc.detail || `${response.status} ${response.statusText}`);
  return doc;
}

function showPrediction(doc) {
  const r = doc.results[0];
  $("decision").textContent = r.decision;
  $("defect-score").textContent = r.defect_score.toFixed(4);
  $("threshold").textContent = doc.threshold === null ? "(none)" : String(doc.threshold);
  $("model-version").textContent = r.model_version;
  $("sha256").textContent = r.sha256.slice(0, 16);
  const rows = Object.entries(r.probabilities).map(([name, p]) => {
    const tr = document.createElement("tr");
    tr.className = "probability";
    tr.dataset.label = name;
    tr.dataset.p = String(p); // the exact number /v1/predict answered
    const a = document.createElement("td");
    a.textContent = name;
    const b = document.createElement("td");
    b.textContent = p.toFixed(4);
    const c = document.createElement("td");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * p).toFixed(0)}%`;
    c.append(bar);
    tr.append(a, b, c);
    return tr;
  });
  $("probabilities").replaceChildren(...rows);
  $("result").hidden = false;
}

async function drawHeatmap(png) {
  // /v1/inspect's heatmap is gray (255 = probability 1): shown as red whose opacity is the score
  const gray = new Image();
  await new Promise((resolve) => { gray.onload = resolve; gray.onerror = resolve; gray.src = `data:image/png;base64,${png}`; });
  const canvas = $("heatmap");
  canvas.width = gray.naturalWidth;
  canvas.height = gray.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(gray, 0, 0);
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < px.data.length; i += 4) {
    const v = px.data[i];
    px.data[i] = 230; px.data[i + 1] = 40; px.data[i + 2] = 30; px.data[i + 3] = Math.round(v * 0.67);
  }
  ctx.putImageData(px, 0, 0);
  canvas.hidden = false;
}

async function showInspection(doc) {
  await drawHeatmap(doc.heatmap_png);
  const svg = $("found");
  svg.setAttribute("viewBox", `0 0 ${doc.width} ${doc.height}`);
  svg.replaceChildren(...doc.defects.map((d) => {
    const c = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    c.setAttribute("cx", d.x);
    c.setAttribute("cy", d.y);
    c.setAttribute("r", doc.window / 2);
    c.setAttribute("stroke-width", Math.max(1, doc.width / 300));
    return c;
  }));
  $("inspect-info").textContent = `${doc.windows} windows of ${doc.window} px (stride ${doc.stride}), `
    + `threshold ${doc.threshold}: ${doc.defects.length} defect(s)`;
  $("defects").replaceChildren(...doc.defects.map((d) => {
    const li = document.createElement("li");
    li.textContent = `${d.kind} at (${d.x}, ${d.y}), p=${d.score.toFixed(3)}`;
    return li;
  }));
  $("inspection").hidden = false;
}

async function imageSize(file) {
  const url = URL.createObjectURL(file);
  const photo = $("photo");
  await new Promise((resolve) => { photo.onload = resolve; photo.onerror = resolve; photo.src = url; });
  $("stack").hidden = false;
  return { width: photo.naturalWidth, height: photo.naturalHeight };
}

async function classify(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  document.body.dataset.state = "busy";
  $("inspection").hidden = true;
  $("heatmap").hidden = true;
  $("found").replaceChildren();
  try {
    const size = await imageSize(file);
    const doc = await post("/v1/predict", file, "files");
    showPrediction(doc);
    const model = await fetch("/v1/model", { headers: $("api-key").value ? { "X-API-Key": $("api-key").value } : {} })
      .then((r) => (r.ok ? r.json() : null)).catch(() => null);
    const input = model && model.input ? model.input.patch_size || model.input.size : null;
    const window = input || 64;
    if (size.width > 2 * window || size.height > 2 * window) await showInspection(await post("/v1/inspect", file, "file"));
    say(`${file.name}: ${size.width}x${size.height}`, true);
    document.body.dataset.state = "done";
  } catch (e) {
    say(e.message);
    document.body.dataset.state = "error";
  }
}

$("form").addEventListener("submit", classify);
