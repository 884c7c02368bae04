// The dashboard page: fetches /dashboard/api/summary once and draws every section with plotly.js
// (served by the app itself). Every chart gets a table (or a download link) behind it, and
// data-points says how many points it was given, so a test can compare with what it rendered. A
// chart with nothing to draw says why and what would fill it (data-empty); the charts of a section
// whose source is missing are hidden, and the section's note says what to materialize.
"use strict";

const COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d"];
const BASE = { margin: { t: 36, r: 10, b: 48, l: 56 }, height: 320, legend: { orientation: "h", y: -0.25 },
               font: { size: 11 } };
const CONFIG = { displaylogo: false, responsive: true };
const pending = [];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(4);
  return String(v);
}

function pct(v) { return v === null || v === undefined ? "n/a" : (100 * v).toFixed(1) + "%"; }

function table(columns, rows, rowClass) {
  const head = el("tr", {}, ...columns.map(c => el("th", {}, c)));
  const body = rows.map(r => el("tr", { class: rowClass ? rowClass(r) : "" },
    ...columns.map(c => el("td", { class: typeof r[c] === "number" ? "" : "text" }, fmt(r[c])))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function behind(container, title, columns, rows, downloads, open) {
  const box = typeof container === "string" ? document.getElementById(container) : container;
  const details = el("details", open ? { open: "" } : {}, el("summary", {}, `${title} (${rows.length} rows)`),
                     table(columns, rows));
  box.append(details);
  if (downloads) {
    box.append(el("div", { class: "downloads" }, "Download: ",
      ...Object.entries(downloads).map(([kind, href]) => el("a", { href, download: "" }, kind.toUpperCase()))));
  }
}

const present = v => v !== null && v !== undefined;

// A chart with nothing to draw: its title and why, in place of an empty pair of axes.
function showEmpty(div, title, reason) {
  div.dataset.points = "0";
  div.dataset.empty = reason;
  div.classList.add("empty");
  div.replaceChildren(el("p", { class: "empty-title" }, title || ""), el("p", { class: "empty-reason" }, reason));
}

// `reason`: what the chart says when none of its points has a value (why, and what would fill it).
function plot(id, traces, layout, reason) {
  const points = traces.filter(t => !t.skipCount)
    .reduce((n, t) => n + (t.type === "heatmap" ? t.z.flat().length : (t.y || []).filter(present).length), 0);
  const div = document.getElementById(id);
  const title = layout.title && layout.title.text;
  if (!points) {
    showEmpty(div, title, reason || "no data for this chart");
    return;
  }
  div.dataset.points = String(points);
  pending.push(Plotly.newPlot(div, traces, Object.assign({}, BASE, layout), CONFIG));
}

// Round numbers on an axis: one tick per round, half a round of margin (one round is not at the middle of -1..1).
function roundAxis(values, title) {
  const xs = values.filter(present);
  const lo = xs.length ? Math.min(...xs) : 0;
  const hi = xs.length ? Math.max(...xs) : 0;
  return { title: { text: title }, tickmode: "linear", tick0: 0, dtick: 1, range: [lo - 0.5, hi + 0.5],
           zeroline: false };
}

function note(section, text) {
  const n = document.querySelector(`[data-note="${section}"]`);
  if (n && text) n.textContent = text;
}

function groupBy(rows, key) {
  const out = new Map();
  for (const r of rows) {
    if (!out.has(r[key])) out.set(r[key], []);
    out.get(r[key]).push(r);
  }
  return out;
}

// --- sections ---

function drawQuality(q) {
  const rows = q.rows;
  const x = r => r.evaluated_at;
  const families = groupBy(rows, "model_family");
  const acc = [], auc = [];
  let i = 0;
  for (const [family, rs] of families) {
    const color = COLORS[i++ % COLORS.length];
    acc.push({ type: "scatter", mode: "lines+markers", name: family, x: rs.map(x), y: rs.map(r => r.accuracy),
               text: rs.map(r => r.model_version), marker: { color, size: 7 }, line: { color },
               error_y: { type: "data", symmetric: false, array: rs.map(r => r.accuracy_high - r.accuracy),
                          arrayminus: rs.map(r => r.accuracy - r.accuracy_low), color } });
    auc.push({ type: "scatter", mode: "lines+markers", name: family, x: rs.map(x), y: rs.map(r => r.roc_auc),
               text: rs.map(r => r.model_version), marker: { color, size: 7 }, line: { color } });
  }
  const withBase = rows.filter(r => r.majority_baseline !== null);
  acc.push({ type: "scatter", mode: "lines+markers", name: "majority baseline", x: withBase.map(x),
             y: withBase.map(r => r.majority_baseline), marker: { color: "#888", size: 5, symbol: "x" },
             line: { color: "#888", dash: "dash" } });
  plot("chart-quality-accuracy", acc, { title: { text: "test accuracy (95% interval) vs majority baseline" },
                                        yaxis: { title: { text: "accuracy" } } });
  plot("chart-quality-auc", auc, { title: { text: "test ROC AUC" }, yaxis: { title: { text: "ROC AUC" } } },
       "no ROC AUC in these evaluations: their reports have none (a task with a single class on the test split)");
  behind("table-quality", "Every evaluation", q.columns, rows, q.downloads);
}

function drawChampion(which, c) {
  const box = document.getElementById(`champion-${which}`);
  const charts = [[`chart-roc-${which}`, "ROC, test split"], [`chart-cm-${which}`, "confusion matrix"]];
  const none = (reason) => charts.forEach(([id, title]) => showEmpty(document.getElementById(id), title, reason));
  if (!c) {
    box.querySelector(".facts").textContent = which === "previous" ? "No previous champion yet." : "";
    none("no previous champion yet: the champion before the current one appears here once a second model "
         + "version is crowned (evaluate_job after a retrain)");
    return;
  }
  const facts = box.querySelector(".facts");
  facts.append(el("div", {}, el("b", {}, c.model_version || ""), ` (${c.family || ""}), recorded ${c.recorded_at || ""}`));
  if (c.note) {
    facts.append(el("div", { class: "note" }, c.note));
    none(`${c.note}: materialize its model's evaluation again (evaluate_job)`);
    return;
  }
  facts.append(el("div", {}, "accuracy ", el("b", {}, pct(c.accuracy)), ` [95%: ${pct(c.accuracy_low)} to `
    + `${pct(c.accuracy_high)}] vs majority baseline `, el("b", {}, pct(c.majority_baseline)),
    `; ROC AUC ${fmt(c.roc_auc)}; recall ${fmt(c.recall)}; ${c.test_patches} test patches`
    + (c.threshold !== null && c.threshold !== undefined ? `; threshold ${fmt(c.threshold)}` : "")));
  const curves = Object.entries(c.roc_curves || {});
  const traces = curves.map(([name, pts], i) => ({ type: "scatter", mode: "lines+markers", name, x: pts.x, y: pts.y,
    marker: { size: 3, color: COLORS[i % COLORS.length] }, line: { color: COLORS[i % COLORS.length] } }));
  traces.push({ type: "scatter", mode: "lines", name: "chance", x: [0, 1], y: [0, 1], skipCount: true,
                line: { color: "#aaa", dash: "dot" }, hoverinfo: "skip" });
  plot(`chart-roc-${which}`, traces, { title: { text: `ROC, test split (AUC ${fmt(c.roc_auc)})` },
    xaxis: { title: { text: "false positive rate" }, range: [0, 1] },
    yaxis: { title: { text: "true positive rate" }, range: [0, 1.02] } },
    "no ROC curve in this evaluation report (the test split held one class only)");
  const classes = c.classes || [];
  const cm = c.confusion_matrix || [];
  const annotations = [];
  const top = Math.max(1, ...cm.flat());
  cm.forEach((row, i) => row.forEach((v, j) => annotations.push({ x: classes[j], y: classes[i], text: String(v),
    showarrow: false, font: { size: 14, color: v > top / 2 ? "white" : "black" } })));
  plot(`chart-cm-${which}`, [{ type: "heatmap", z: cm, x: classes, y: classes, colorscale: "Blues",
                               reversescale: true, showscale: false, zmin: 0 }],
       { title: { text: "confusion matrix" }, annotations, height: 300,
         xaxis: { title: { text: "predicted" }, type: "category" },
         yaxis: { title: { text: "true" }, type: "category", autorange: "reversed" } },
       "no confusion matrix in this evaluation report");
  const cmRows = cm.map((row, i) => Object.fromEntries([["true", classes[i]],
    ...row.map((v, j) => [`predicted ${classes[j]}`, v])]));
  const tableBox = box.querySelector(".table");
  behind(tableBox, "Confusion matrix", ["true", ...classes.map(k => `predicted ${k}`)], cmRows, null, true);
  for (const [name, pts] of curves) {
    behind(tableBox, `ROC points: ${name}`, ["false_positive_rate", "true_positive_rate"],
           pts.x.map((v, k) => ({ false_positive_rate: v, true_positive_rate: pts.y[k] })));
  }
}

function drawBatches(b) {
  const rows = b.rows;
  const names = rows.map(r => r.batch);
  plot("chart-batches-images", [
    { type: "bar", name: "images", x: names, y: rows.map(r => r.images), marker: { color: COLORS[0] } },
    { type: "bar", name: "rejected files", x: names, y: rows.map(r => r.rejected), marker: { color: COLORS[3] } },
  ], { barmode: "group", title: { text: "images and rejected files per batch" } });
  plot("chart-batches-balance", [
    { type: "bar", name: "ok patches", x: names, y: rows.map(r => r.ok_patches), marker: { color: COLORS[2] } },
    { type: "bar", name: "defect patches", x: names, y: rows.map(r => r.defect_patches), marker: { color: COLORS[1] } },
  ], { barmode: "stack", title: { text: "class balance per batch (patches)" } }, (b.empty || {}).balance);
  behind("table-batches", "Batches", b.columns, rows, null, true);
}

function drawMonitoring(m) {
  const rows = m.rows;
  const versions = groupBy(rows, "model_version");
  const volume = [], latency = [], defects = [], drift = [];
  const empty = m.empty || {};
  let i = 0;
  for (const [version, rs] of versions) {
    const color = COLORS[i++ % COLORS.length];
    const days = rs.map(r => r.day);
    const short = versions.size > 1 ? ` (${version})` : "";
    volume.push({ type: "bar", name: `images${short}`, x: days, y: rs.map(r => r.images), marker: { color } });
    for (const [q, dash] of [["p50", "solid"], ["p95", "dash"], ["p99", "dot"]]) {
      latency.push({ type: "scatter", mode: "lines+markers", name: `predict ${q}${short}`, x: days,
                     y: rs.map(r => r[`latency_ms_${q}`]), line: { color, dash }, marker: { color } });
    }
    if (rs.some(r => r.warmup_requests > 0)) {  // the first request after a model load, not in the percentiles
      latency.push({ type: "scatter", mode: "markers", name: `warm-up: first request after a model load${short}`,
                     x: days, y: rs.map(r => r.latency_ms_warmup), marker: { color, symbol: "x-open", size: 10 } });
    }
    if (rs.some(r => r.inspect_requests > 0)) {  // hundreds of windows per photo: another population
      for (const [q, dash] of [["p50", "solid"], ["p95", "dash"]]) {
        latency.push({ type: "scatter", mode: "lines+markers", name: `inspect ${q}${short}`, x: days,
                       y: rs.map(r => r[`inspect_latency_ms_${q}`]), line: { color: "#888", dash },
                       marker: { color: "#888", symbol: "diamond" } });
      }
    }
    defects.push({ type: "scatter", mode: "lines+markers", name: `share called defective${short}`, x: days,
                   y: rs.map(r => r.defect_share), line: { color }, marker: { color } });
    const judged = rs.filter(r => r.psi !== null);
    drift.push({ type: "scatter", mode: "lines+markers", name: `PSI${short}`, x: judged.map(r => r.day),
                 y: judged.map(r => r.psi), line: { color }, marker: { color, size: 8 } });
  }
  const dayRange = rows.map(r => r.day);
  const level = m.drift_level;
  const shapes = level === null ? [] : [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: level, y1: level,
                                          line: { color: "#e45756", dash: "dash" } }];
  plot("chart-monitoring-volume", volume, { title: { text: "images scored per day" }, barmode: "stack",
                                            xaxis: { type: "category" } });
  // a log scale only when the values span decades (inspect's seconds, a slow warm-up beside predict's milliseconds)
  const ms = latency.flatMap(t => t.y.filter(v => present(v) && v > 0));
  const wide = ms.length && Math.max(...ms) > 20 * Math.min(...ms);
  plot("chart-monitoring-latency", latency, { title: { text: "request latency (ms; warm-up apart)" },
                                              xaxis: { type: "category" },
                                              yaxis: wide ? { type: "log", title: { text: "ms (log scale)" } }
                                                : { title: { text: "ms" }, rangemode: "tozero" } },
       empty.latency);
  plot("chart-monitoring-defects", defects, { title: { text: "share of images called defective" },
                                              yaxis: { range: [0, 1] }, xaxis: { type: "category" } });
  plot("chart-monitoring-drift", drift, { title: { text: `score drift (PSI); warning above ${fmt(level)}` }, shapes,
                                          xaxis: { type: "category", categoryarray: dayRange } }, empty.drift);
  behind("table-monitoring", "Days", m.columns, rows, m.downloads, true);
  document.querySelectorAll("#table-monitoring tbody tr").forEach((tr, k) => {
    if (rows[k].drift_warning) tr.className = "warn";
  });
}

function drawActiveLearning(a) {
  const xs = a.rows.map(r => r[a.x]);
  const names = a.names || {};
  const empty = a.empty || {};
  const lines = (columns) => columns.map((c, i) => ({ type: "scatter", mode: "lines+markers", name: names[c] || c,
    x: xs, y: a.rows.map(r => r[c]), marker: { color: COLORS[i % COLORS.length], size: 8 },
    line: { color: COLORS[i % COLORS.length] } }));
  plot("chart-active-learning-counts", lines(a.counts), { title: { text: `images and labels per ${a.x}` },
       xaxis: roundAxis(xs, `labeling ${a.x}`), yaxis: { title: { text: "count" }, rangemode: "tozero" } },
       empty.counts);
  plot("chart-active-learning-rates", lines(a.rates), { title: { text: `the round's model on the test split` },
       xaxis: roundAxis(xs, `labeling ${a.x}`), yaxis: { title: { text: "0 to 1" }, range: [0, 1.02] } },
       empty.rates);
  const info = document.getElementById("active-learning-info");
  info.textContent = `${a.page_labels_now} label(s) given on the labeling page so far, read from the label store `
    + "now (image_labels takes them in at the next relabel run).";
  behind("table-active-learning", "Labeling rounds", a.columns, a.rows, a.downloads, true);
}

function drawMistakes(d) {
  for (const kind of ["misses", "false_alarms"]) {
    const box = document.getElementById(`gallery-${kind}`);
    const items = d[kind] || [];
    if (!items.length) box.append(el("p", { class: "explain" }, "none on the test split"));
    for (const ex of items) {
      box.append(el("div", { class: "example" },
        el("img", { src: ex.picture_url, alt: `patch ${ex.patch_id}`, "data-kind": kind }),
        el("img", { src: ex.heatmap_url, alt: `heatmap ${ex.patch_id}`, "data-kind": kind }),
        el("div", {}, `${ex.image} (batch ${ex.batch}): label ${ex.label}, defect score ${fmt(ex.defect_score)}, `
                      + `called ${ex.decision}`)));
    }
  }
  const rows = ["misses", "false_alarms"].flatMap(k => (d[k] || []).map(ex => Object.assign({ kind: k }, ex)));
  const info = `${d.model_version}: ${d.counts.misses} misses and ${d.counts.false_alarms} false alarms among `
             + `${d.test_patches} test patches; the most confident ones are shown`;
  document.getElementById("table-mistakes").append(el("p", { class: "explain" }, info));
  behind("table-mistakes", "Shown examples", ["kind", "patch_id", "image", "batch", "label", "defect_score", "decision"],
         rows, d.downloads);
}

function drawLabelIssues(d) {
  const info = document.getElementById("label-issues-info");
  info.textContent = `${d.issues} suspects among ${d.images} labeled images; the worst ${d.shown.length} shown. `;
  info.append(el("a", { href: d.review_url, id: "review-link" }, "Review them on the labeling page"));
  if (d.note) note("label_issues", d.note);
  const box = document.getElementById("gallery-label-issues");
  for (const it of d.shown) {
    box.append(el("div", { class: "issue", "data-item": it.item_id },
      el("img", { src: it.image_url, alt: `${it.batch} / ${it.image}`, class: "issue-photo" }),
      el("div", {}, `#${it.rank} ${it.image} (batch ${it.batch})`),
      el("div", { class: "issue-labels" }, `given ${it.given_label}, suggested ${it.suggested_label}; `
                                          + `p(given) ${fmt(it.self_confidence)}`),
      el("div", {}, `source ${it.source}` + (it.labeler ? `, labeler ${it.labeler}` : "")),
      el("a", { href: it.review_url }, "review")));
  }
  behind("table-label-issues", "Shown suspects", d.columns, d.shown, d.downloads);
}

function drawLabelers(d) {
  if (d.note) note("labelers", d.note);
  const rows = d.rows.map(r => Object.assign({}, r, { gold_agreement: r.gold_agreement === null ? "n/a"
    : pct(r.gold_agreement), kappa_vs_others: r.kappa_vs_others === null ? "n/a" : r.kappa_vs_others.toFixed(3) }));
  const box = document.getElementById("table-labelers");
  box.append(el("p", { class: "explain" }, `${d.gold_items} gold items in the gold set`));
  box.append(table(d.columns, rows));
  box.append(el("div", { class: "downloads" }, "Download (written at each label_issues run): ",
    ...Object.entries(d.downloads).map(([kind, href]) => el("a", { href, download: "" }, kind.toUpperCase()))));
}

async function main() {
  const meta = document.getElementById("meta");
  let doc;
  try {
    const resp = await fetch("/dashboard/api/summary", { credentials: "same-origin" });
    if (!resp.ok) throw new Error(`${resp.status} ${await resp.text()}`);
    doc = await resp.json();
  } catch (e) {
    meta.textContent = `could not load the dashboard data: ${e.message}`;
    document.body.dataset.ready = "error";
    return;
  }
  meta.textContent = `data from ${doc.store}, read ${doc.generated_at}`;
  for (const [section, text] of Object.entries(doc.notes || {})) {
    note(section, text);
    // a missing source: its section's charts are not drawn at all (the note says what would fill them)
    const box = document.querySelector(`[data-note="${section}"]`);
    if (box) box.parentElement.querySelectorAll(".chart, .champion").forEach((c) => c.classList.add("absent"));
  }
  const draws = [];
  if (doc.quality) draws.push(() => drawQuality(doc.quality));
  if (doc.champions) {
    draws.push(() => drawChampion("current", doc.champions.current));
    draws.push(() => drawChampion("previous", doc.champions.previous));
  }
  if (doc.batches) draws.push(() => drawBatches(doc.batches));
  if (doc.monitoring) draws.push(() => drawMonitoring(doc.monitoring));
  if (doc.active_learning) draws.push(() => drawActiveLearning(doc.active_learning));
  if (doc.mistakes) draws.push(() => drawMistakes(doc.mistakes));
  if (doc.label_issues) draws.push(() => drawLabelIssues(doc.label_issues));
  if (doc.labelers) draws.push(() => drawLabelers(doc.labelers));
  for (const draw of draws) {
    try {
      draw();
    } catch (e) {
      console.error(e);
      meta.textContent += ` (a section failed to draw: ${e.message})`;
    }
  }
  await Promise.allSettled(pending);
  document.body.dataset.ready = "yes";
}

main();
