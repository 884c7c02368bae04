"""The champion on every test patch, and the mistakes a person should look at: its most
confident misses (defects it called ok) and false alarms (ok patches it called defective),
each as the patch the model saw and an occlusion heatmap of where the score came from.

Scored through the inference seam (``ml.scorer.load_registered``), as evaluation scores, so the
table matches the evaluation report. What it writes (keys in ``storage.layout``) is read by the
dashboard (pictures, tables) and by prediction monitoring (the test split's score distribution,
the drift reference for this model version). ``champions.json`` records every approved champion
in order, so the dashboard can put the current one beside the previous one.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from defect_assets.ml.images import encode_png
from defect_assets.ml.labels import is_defect_label
from defect_assets.ml.saliency import occlusion_map, overlay
from defect_assets.ml.scorer import Scorer, explainable, load_registered
from defect_assets.pipeline.champion import Champion
from defect_assets.pipeline.training import split_data
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.formats import ArrayTable, read_json, write_json
from defect_assets.storage.layout import CHAMPIONS, champion_predictions_key, champion_prefix, examples_key
from defect_assets.storage.registry import ModelRegistry

# The test-prediction table's columns (documented in docs/bi.md); p_<class> columns follow them.
PREDICTION_COLUMNS = ["patch_id", "image_id", "image", "batch", "kind", "label", "is_defect", "defect_score",
                      "predicted_defect", "decision", "correct", "model_version"]
HEATMAP_SCALE = 3


def defect_scores(proba: np.ndarray, classes: list[str]) -> np.ndarray:
    """Probability of any defect class: column 1 of a binary model, else the sum over the classes
    whose names are defects."""
    if len(classes) == 2:
        return proba[:, 1]
    mask = np.array([is_defect_label(c) for c in classes])
    return proba[:, mask].sum(axis=1) if mask.any() else 1 - proba[:, 0]


def enlarged(patch: np.ndarray, scale: int = HEATMAP_SCALE) -> np.ndarray:
    """The patch with every pixel repeated (no smoothing: what the model saw, bigger)."""
    return np.repeat(np.repeat(patch, scale, axis=0), scale, axis=1)


def _column(name: str) -> str:
    return "p_" + re.sub(r"[^A-Za-z0-9_]+", "_", str(name))


@dataclass
class ChampionPredictions:
    version: str
    table: pd.DataFrame
    examples: dict
    """The examples document (also stored as examples.json)."""
    sheets: dict[str, np.ndarray]
    """'misses' / 'false_alarms' -> a contact sheet of patch and heatmap pairs (for the UI)."""


def predict_test_split(scorer: Scorer, patch_sets: dict[str, ArrayTable], threshold: float | None):
    """(table, test patches): the scorer's decision and defect score for every test patch."""
    card = scorer.card
    classes, task = scorer.classes, card.task
    test = split_data(patch_sets, "test", task, classes)
    if not len(test.y):
        raise ValueError("the test split is empty: nothing to score")
    proba = scorer.predict_proba(test.x)
    score = defect_scores(proba, classes)
    if len(classes) == 2:
        predicted = score >= (threshold if threshold is not None else 0.5)
        decision = np.where(predicted, classes[1], classes[0])
    else:
        decision = np.array([classes[i] for i in proba.argmax(axis=1)])
        predicted = np.array([is_defect_label(c) for c in decision])
    t = test.table
    table = pd.DataFrame({
        "patch_id": t["patch_id"].astype(str), "image_id": t["image_id"].astype(str), "image": t["image"].astype(str),
        "batch": t["batch"].astype(str), "kind": t["kind"].astype(str), "label": t["label"].astype(str),
        "is_defect": t["is_defect"].astype(bool).to_numpy(), "defect_score": score.astype(np.float64),
        "predicted_defect": predicted.astype(bool), "decision": decision,
        "correct": predicted.astype(bool) == t["is_defect"].astype(bool).to_numpy(),
        "model_version": scorer.version})
    for i, c in enumerate(classes):
        table[_column(c)] = proba[:, i].astype(np.float64)
    return table, test.x


def worst(table: pd.DataFrame, kind: str, k: int) -> pd.DataFrame:
    """The k most confident mistakes of one kind: misses with the lowest defect score, false
    alarms with the highest."""
    if kind == "misses":
        rows = table[table["is_defect"] & ~table["predicted_defect"]]
        return rows.sort_values("defect_score", kind="stable").head(k)
    rows = table[~table["is_defect"] & table["predicted_defect"]]
    return rows.sort_values("defect_score", ascending=False, kind="stable").head(k)


def heat_map(scorer: Scorer, score, patch: np.ndarray) -> np.ndarray:
    """Where the defect score comes from: the exact share of each location in a linear head's
    logit on backbone features (``Scorer.explain``) where the model has one, otherwise occlusion."""
    if explainable(scorer):
        return scorer.explain(patch)[1]
    return occlusion_map(score, patch)[1]


def picture(scorer: Scorer, score, patch: np.ndarray, row: pd.Series, prefix: str,
            store: ObjectStore) -> tuple[dict, np.ndarray]:
    """Store one mistake as the enlarged patch and its heatmap; returns its entry in
    examples.json and a side-by-side tile (for the UI's contact sheet)."""
    if patch.ndim == 3 and patch.shape[2] == 1:
        patch = patch[..., 0]
    heat = heat_map(scorer, score, patch)
    big, heatmap = enlarged(patch), overlay(patch, heat, HEATMAP_SCALE)
    base = f"{prefix}/examples/{row['patch_id']}"
    store.write_bytes(f"{base}.png", encode_png(big))
    store.write_bytes(f"{base}-heatmap.png", encode_png(heatmap))
    entry = {"patch_id": row["patch_id"], "image": row["image"], "batch": row["batch"], "label": row["label"],
             "defect_score": float(row["defect_score"]), "decision": str(row["decision"]),
             "picture": f"{base}.png", "heatmap": f"{base}-heatmap.png"}
    rgb = np.repeat(big[..., None], 3, axis=2) if big.ndim == 2 else big
    return entry, np.concatenate([rgb, heatmap], axis=1)


def champion_test_predictions(champion: Champion, registry: ModelRegistry, patch_sets: dict[str, ArrayTable],
                              store: ObjectStore, per_kind: int = 6) -> ChampionPredictions:
    """Score the test split with the champion, store the table (Parquet + CSV), the pictures of
    its worst mistakes with their heatmaps, and record it in champions.json."""
    version = champion.model_version
    scorer = load_registered(registry, version)
    table, patches = predict_test_split(scorer, patch_sets, champion.threshold)
    with store.open_write(champion_predictions_key(version)) as f:
        table.to_parquet(f, index=False)
    store.write_bytes(champion_predictions_key(version, "csv"), table.to_csv(index=False, lineterminator="\n").encode())

    def score(x: np.ndarray) -> np.ndarray:
        return defect_scores(scorer.predict_proba(x), scorer.classes)

    doc = {"model_version": version, "family": champion.family, "threshold": champion.threshold,
           "task": scorer.card.task, "classes": scorer.classes, "test_patches": len(table),
           "counts": {"misses": int((table["is_defect"] & ~table["predicted_defect"]).sum()),
                      "false_alarms": int((~table["is_defect"] & table["predicted_defect"]).sum())},
           "heatmap": ("feature map: each location's share of the linear head's defect logit, red pushing towards "
                       "defect, blue away" if explainable(scorer) else
                       "occlusion: red where covering a square lowers the defect score, blue where it raises it")}
    sheets = {}
    for kind in ("misses", "false_alarms"):
        shown = [picture(scorer, score, np.asarray(patches[i]), row, champion_prefix(version), store)
                 for i, row in worst(table, kind, per_kind).iterrows()]
        doc[kind] = [entry for entry, _ in shown]
        sheets[kind] = np.stack([tile for _, tile in shown]) if shown else np.zeros((0, 1, 1, 3), np.uint8)
    write_json(store, examples_key(version), doc)
    record_champion(store, champion, len(table))
    return ChampionPredictions(version, table, doc, sheets)


def record_champion(store: ObjectStore, champion: Champion, test_patches: int) -> list[dict]:
    """Append the champion to champions.json (or refresh its entry when it is the latest one)."""
    doc = read_json(store, CHAMPIONS) if store.exists(CHAMPIONS) else {"champions": []}
    entry = {"model_version": champion.model_version, "family": champion.family,
             "evaluation_id": champion.evaluation_id, "report_html": champion.report_html,
             "threshold": champion.threshold, "test_metrics": champion.test_metrics, "test_patches": test_patches,
             "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    items = doc["champions"]
    if items and items[-1]["model_version"] == champion.model_version:
        items[-1] = entry
    else:
        items.append(entry)
    store.write_bytes(CHAMPIONS, json.dumps({"champions": items}, indent=2, default=str).encode())
    return items


def reference_scores(store: ObjectStore, version: str) -> np.ndarray | None:
    """The model's defect scores on the test split (the drift reference), or None when the model
    never went through champion_test_predictions."""
    key = champion_predictions_key(version)
    if not store.exists(key):
        return None
    with store.open_read(key) as f:
        return pd.read_parquet(f, columns=["defect_score"])["defect_score"].to_numpy(np.float64)
