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

// One navigation bar on every page (dashboard, label, annotate, classify, the API schema and, when
// DEFECT_ASSETS_DAGSTER_UI_URL is set, the Dagster UI), inserted first in <body>, the current page
// marked with aria-current="page". Its style is here too, so every page looks the same.
const NAV_LINKS = [
  ["/dashboard", "Dashboard"], ["/label", "Label"], ["/annotate", "Annotate"], ["/classify", "Classify"],
  ["/openapi.json", "API (OpenAPI)"],
];
const NAV_STYLE = `
#site-nav { display: flex; flex-wrap: wrap; gap: .2em .9em; align-items: center; padding: .35em 1.2em;
  background: #0f1419; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
#site-nav a { color: #9ecbff; text-decoration: none; padding: .1em .3em; border-radius: .2em; }
#site-nav a:hover { text-decoration: underline; }
#site-nav a[aria-current="page"] { color: #0f1419; background: #9ecbff; font-weight: 600; }
#site-nav .brand { color: #fff; font-weight: 600; margin-right: .4em; }`;

function navBar() {
  if (document.getElementById("site-nav")) return;
  const style = document.createElement("style");
  style.textContent = NAV_STYLE;
  document.head.append(style);
  const nav = document.createElement("nav");
  nav.id = "site-nav";
  nav.setAttribute("aria-label", "pages of this service");
  const brand = document.createElement("span");
  brand.className = "brand";
  brand.textContent = "defect_assets";
  nav.append(brand);
  const add = (href, text, external) => {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    a.dataset.page = text;
    if (external) a.target = "_blank";
    if (!external && window.location.pathname === href) a.setAttribute("aria-current", "page");
    nav.append(a);
  };
  NAV_LINKS.forEach(([href, text]) => add(href, text, false));
  document.body.prepend(nav);
  fetch("/v1/nav", { credentials: "same-origin" }).then((r) => (r.ok ? r.json() : {})).then((doc) => {
    if (doc && doc.dagster_ui_url) add(doc.dagster_ui_url, "Dagster UI", true);
    nav.dataset.ready = "1";
  }).catch(() => { nav.dataset.ready = "1"; });
}

if (document.body) navBar();
else document.addEventListener("DOMContentLoaded", navBar);
