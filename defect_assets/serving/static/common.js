// What the service's pages share (labeling, annotate, classify): element lookup, the page's
// state, the status message, calls to this service's JSON API, the class-probability table, the
// class buttons and the red heatmap drawn from a gray PNG. Loaded (/static/common.js) before each
// page's own script; no library, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const HEATMAP_RGB = [230, 40, 30];

// The page's state as the browser tests (and CSS) see it: busy, ready, done, error.
function setState(state) {
  document.body.dataset.state = state;
}

function say(text, ok) {
  $("message").textContent = text || "";
  $("message").className = ok ? "message ok" : "message";
}

// One request to this service. `options.body` is sent as JSON, `options.form` (FormData) as
// multipart; `options.headers` are added; on a 401 the browser goes to `options.signIn` (when
// given). Any answer that is not 2xx throws an Error with the service's `detail`.
async function api(method, path, options = {}) {
  const opts = { method, credentials: "same-origin", headers: { Accept: "application/json", ...options.headers } };
  if (options.body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(options.body);
  } else if (options.form !== undefined) {
    opts.body = options.form;
  }
  const response = await fetch(path, opts);
  const doc = await response.json().catch(() => ({}));
  if (response.status === 401 && options.signIn) window.location.assign(options.signIn);
  if (!response.ok) throw new Error(doc.detail || `${response.status} ${response.statusText}`);
  return doc;
}

// The table of class probabilities (name, number, bar): one `tr.probability` per class, with the
// exact number answered in `data-p`.
function showProbabilities(table, probabilities, digits) {
  const rows = Object.entries(probabilities).map(([name, p]) => {
    const tr = document.createElement("tr");
    tr.className = "probability";
    tr.dataset.label = name;
    tr.dataset.p = String(p);
    const a = document.createElement("td");
    a.textContent = name;
    const b = document.createElement("td");
    b.textContent = p.toFixed(digits);
    const c = document.createElement("td");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * p).toFixed(0)}%`;
    c.append(bar);
    tr.append(a, b, c);
    return tr;
  });
  table.replaceChildren(...rows);
}

// A heatmap as the service sends it (base64 gray PNG, 255 = probability 1) drawn on `canvas` as
// red whose opacity is the probability times `opacity`.
async function drawHeatmap(canvas, png, opacity) {
  const gray = new Image();
  await new Promise((resolve) => {
    gray.onload = resolve;
    gray.onerror = resolve;
    gray.src = `data:image/png;base64,${png}`;
  });
  canvas.width = gray.naturalWidth;
  canvas.height = gray.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(gray, 0, 0);
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < px.data.length; i += 4) {
    const v = px.data[i];
    [px.data[i], px.data[i + 1], px.data[i + 2]] = HEATMAP_RGB;
    px.data[i + 3] = Math.round(v * opacity);
  }
  ctx.putImageData(px, 0, 0);
  canvas.hidden = false;
}

// One button per class (the first nine, keys 1-9), each calling `onChoose(name, index)`.
function classButtons(box, classes, onChoose, current) {
  box.replaceChildren();
  classes.slice(0, 9).forEach((name, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `class-button${i === current ? " current" : ""}`;
    b.dataset.label = name;
    b.append(name);
    const k = document.createElement("kbd");
    k.textContent = String(i + 1);
    b.append(k);
    b.addEventListener("click", () => onChoose(name, i));
    box.append(b);
  });
}
