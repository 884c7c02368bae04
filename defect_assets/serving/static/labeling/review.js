// The review queue of the labeling page: the images the label_issues asset suspects of a wrong
// label, each with its given label; "Model's label" shows the out-of-fold model's on request.
// Confirm (the given label) or change it: a label event like any other (POST /v1/labeling/review);
// a reviewed image is not asked again. Hidden when label_issues has not run.
"use strict";

const review = { suggestions: false, busy: false };

function reviewCard(item, classes) {
  const card = document.createElement("div");
  card.className = "review-item";
  card.dataset.item = item.item_id;
  const img = document.createElement("img");
  img.src = item.image_url;
  img.alt = item.image;
  img.className = "review-photo";
  const name = document.createElement("p");
  name.textContent = `#${item.rank}: ${item.batch} / ${item.image}`;
  const given = document.createElement("p");
  given.className = "given";
  given.textContent = `given: ${item.given_label}${item.source ? ` (${item.source})` : ""}`;
  const hint = document.createElement("p");
  hint.className = "suggestion";
  if (item.suggested_label !== undefined) {
    hint.textContent = `model: ${item.suggested_label} (given label's p = ${item.self_confidence.toFixed(3)})`;
  }
  const buttons = document.createElement("div");
  for (const label of classes) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "review-button";
    b.dataset.label = label;
    b.textContent = label === item.given_label ? `confirm ${label}` : `change to ${label}`;
    b.addEventListener("click", () => decide(item.item_id, label));
    buttons.append(b);
  }
  card.append(img, name, given, hint, buttons);
  return card;
}

async function loadReview() {
  let doc;
  try {
    doc = await api("GET", `/v1/labeling/review${review.suggestions ? "?suggest=true" : ""}`, { signIn: "/label" });
  } catch {
    $("review").hidden = true;
    return;
  }
  $("review").hidden = false;
  $("review-info").textContent = `${doc.items.length} suspect label(s) to review, ${doc.reviewed} reviewed`;
  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.id = "review-suggestions";
  toggle.textContent = review.suggestions ? "Hide the model's labels" : "Show the model's labels";
  toggle.addEventListener("click", () => {
    review.suggestions = !review.suggestions;
    loadReview();
  });
  $("review-info").append(" ", toggle);
  $("review-list").replaceChildren(...doc.items.map((item) => reviewCard(item, doc.classes)));
  document.body.dataset.review = String(doc.items.length);
}

async function decide(itemId, label) {
  if (review.busy) return;
  review.busy = true;
  try {
    await api("POST", "/v1/labeling/review", { body: { item_id: itemId, label }, signIn: "/label" });
    await loadReview();
  } catch (e) {
    $("review-info").textContent = e.message;
  } finally {
    review.busy = false;
  }
}

loadReview();
