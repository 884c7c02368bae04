"""The real ELPV data set, read from the installed package, and the CLI's main job on a slice of it."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from defect_assets.datasets.elpv import elpv_labels, elpv_root, seed_elpv
from defect_assets.ml.labels import is_defect_label
from defect_assets.ml.scorer import load_registered
from defect_assets.ml.splits import assign_split
from defect_assets.pipeline.family_registry import families
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import list_batches, read_manifest
from defect_assets.storage.registry import ModelRegistry
from defect_assets_tests.helpers.demo import check_closing_hints
from defect_assets_tests.helpers.ports import free_port


def test_elpv_labels_are_the_published_counts():
    df = elpv_labels()
    assert len(df) == 2624
    counts = df.groupby(["type", "probability"]).size()
    assert counts["mono"].tolist() == [588, 117, 56, 313]
    assert counts["poly"].tolist() == [920, 178, 50, 402]
    assert int((df["probability"] >= 0.5).sum()) == 821


def test_seed_elpv_writes_complete_batches(tmp_path):
    store = LocalObjectStore(tmp_path)
    ids = seed_elpv(store, n_batches=3, limit=30)
    assert ids == ["elpv-01", "elpv-02", "elpv-03"] and set(list_batches(store)) == set(ids)
    m = read_manifest(store, "elpv-02")
    assert len(m.files) == 11 and {f["path"] for f in m.files} >= {"labels.csv"}
    labels = pd.read_csv(tmp_path / "elpv-02" / "labels.csv", dtype=str)
    assert len(labels) == 10 and set(labels["label"]) <= {"0.0000", "0.3333", "0.6667", "1.0000"}
    assert all(is_defect_label(v) == (float(v) >= 0.5) for v in labels["label"])
    etags = list_batches(store)
    assert seed_elpv(store, n_batches=3, limit=30) == ids and list_batches(store) == etags  # idempotent


def expected_slice(limit: int, batches: int) -> pd.DataFrame:
    """The cells the main job seeds for --limit/--batches, each with its batch, binary class and
    split, computed here from the package's files (content hash -> split), not by the pipeline."""
    df = elpv_labels()
    order = np.random.default_rng(0).permutation(len(df))[:limit]
    rows = []
    for b, idx in enumerate(np.array_split(order, batches), start=1):
        for i in np.sort(idx):
            path, p = df["path"].iloc[i], float(df["probability"].iloc[i])
            sha = hashlib.sha256((elpv_root() / path).read_bytes()).hexdigest()
            rows.append({"batch": f"elpv-{b:02d}", "class": "defect" if p >= 0.5 else "ok", "split": assign_split(sha)})
    return pd.DataFrame(rows)


def printed_table(out: str, header: str, with_header: bool = False) -> list[list[str]]:
    """The rows of the table printed after the line starting with ``header`` (up to a blank line);
    with ``with_header``, the table's own header row first."""
    lines = out.split(header, 1)[1].splitlines()[1:]
    rows = [lines[0].split()] if with_header else []
    for line in lines[1:]:
        if not line.strip():
            break
        if len(line.split()) > 1:  # not the index-name line pandas prints under a crosstab's header
            rows.append(line.split())
    return rows


@pytest.mark.services
def test_main_job_cli_on_a_slice_of_elpv(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "DEFECT_ASSETS_DATA_DIR": str(tmp_path / "data")}
    port = free_port()
    cmd = [sys.executable, "-m", "defect_assets.cli", "demo", "--limit", "120", "--batches", "2", "--quick",
           "--port", str(port)]
    try:
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout + out.stderr
        # the demo ends with the dashboard's URL; the page and its data answer while the service runs
        last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        dashboard = re.fullmatch(r"Dashboard \(.*\): (http://127\.0\.0\.1:\d+/dashboard)", last)
        assert dashboard and dashboard.group(1) == f"http://127.0.0.1:{port}/dashboard", out.stdout[-2000:]
        with urllib.request.urlopen(dashboard.group(1), timeout=30) as page:
            assert page.status == 200 and b"plotly.min.js" in page.read()
        with urllib.request.urlopen(dashboard.group(1) + "/api/summary", timeout=30) as r:
            summary = json.load(r)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/nav", timeout=30) as r:
            nav = json.load(r)
    finally:
        pid_file = tmp_path / "data" / "serve.pid"
        if pid_file.exists():  # the demo leaves its scoring service running: stop it
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    cells = expected_slice(120, 2)

    # counts: images per batch, and patches per class and split, as computed independently above
    per_batch = {r[0]: [int(v) for v in r[1:]] for r in printed_table(text, "Images per batch:")}
    # columns: images, rejected, patches, augmented (8 views of every train cell: quarter turns and mirrors)
    assert "whole images (image-level labels) at 300 px" in text and "train split x 8 views" in text
    assert per_batch == {b: [len(g), 0, len(g), 8 * int((g["split"] == "train").sum())]
                         for b, g in cells.groupby("batch")}
    crosstab = pd.crosstab(cells["class"], cells["split"], margins=True, margins_name="total")
    shown = {r[0]: [int(v) for v in r[1:]] for r in printed_table(text, "Patches per split and class")}
    assert shown == {k: crosstab.loc[k].tolist() for k in crosstab.index}
    assert f"Total images ingested: {len(cells)}" in text

    # metrics: every family evaluated on exactly the test cells; printed = stored; each figure in its
    # range and consistent with the stored confusion matrix
    test = cells[cells["split"] == "test"]
    history = pd.read_parquet(tmp_path / "data" / "artifacts" / "evaluation_history" / "evaluation_history.parquet")
    assert sorted(history["model_family"]) == sorted(f.name for f in families())
    header, *rows = printed_table(text, "Test split (", with_header=True)
    printed = {r[0]: dict(zip(header[1:], r[1:])) for r in rows}
    for row in history.to_dict("records"):
        n, tn, fp, fn, tp = (int(row[k]) for k in ("test_patches", "tn", "fp", "fn", "tp"))
        assert n == len(test) == tn + fp + fn + tp and tp + fn == int((test["class"] == "defect").sum())
        assert row["accuracy"] == pytest.approx((tp + tn) / n)
        assert row["recall"] == pytest.approx(tp / (tp + fn) if tp + fn else 0.0)
        assert 0.0 <= row["roc_auc"] <= 1.0 and 0.0 <= row["threshold"] <= 1.0
        shown = printed[row["model_family"]]
        for col, key in [("threshold", "threshold"), ("accuracy", "accuracy"), ("bal_acc", "balanced_accuracy"),
                         ("precision", "precision"), ("recall", "recall"), ("f1", "f1"), ("roc_auc", "roc_auc")]:
            assert float(shown[col]) == pytest.approx(row[key], abs=5e-4), col
        lo, hi = (float(v) for v in shown["acc_ci95"].split("-"))
        assert lo <= row["accuracy"] <= hi and (lo, hi) == pytest.approx(
            (row["accuracy_ci_low"], row["accuracy_ci_high"]), abs=5e-4)
        assert row["majority_baseline"] == pytest.approx(max(tp + fn, tn + fp) / n)
        # latency measured through the served scorer, printed beside quality with the training time
        assert float(shown["p99_ms"]) == pytest.approx(row["latency_p99_ms"], abs=5e-3) and row["latency_p99_ms"] > 0
        assert float(shown["train_s"]) >= 0

    champion = re.search(r"Champion: (\S+) \((\S+)\), why: (.+)\. Checks: all passed", text)
    assert champion and champion.group(2) in {f.name for f in families()}, text
    # the champion is the best on validation among the candidates whose measured p99 fits 50 ms
    registry = ModelRegistry(LocalObjectStore(tmp_path / "data" / "artifacts"))
    val_auc = {v: registry.card(v).validation.roc_auc for v in history["model_version"]}
    fits = history[history["latency_p99_ms"] <= 50.0]
    if len(fits):
        best = max(fits["model_version"], key=lambda v: val_auc[v])
        assert champion.group(1) == best and champion.group(3).startswith(
            f"best validation roc_auc ({val_auc[best]:.4f}) within the 50 ms p99 budget"), champion.group(3)
    else:  # a very busy machine: the fastest, and the reason says so
        assert champion.group(3).startswith("no candidate fits the 50 ms p99 budget"), champion.group(3)
    html = re.search(r"HTML report: (\S+\.html)", text).group(1)
    assert open(html).read().startswith("<!doctype html>")

    # the deployed champion answers the example with what the seam computes in this process
    assert f"http://127.0.0.1:{port} serves {champion.group(1)}" in text
    example = re.search(r"Example: \S+ score (\S+) --url", text).group(1)
    want = load_registered(registry, champion.group(1)).predict_images([Path(example).read_bytes()])[0, 1]
    scored = next(r for r in printed_table(text, "Example:") if r[0] == Path(example).name)
    assert scored[-2] == champion.group(1) and float(scored[-3]) == pytest.approx(float(want), abs=1e-4)
    assert (tmp_path / "home" / "dagster.yaml").exists()
    # the hints name this run's instance, data folder and ports, and absolute paths that exist; the
    # service's pages link to the Dagster UI the hint names
    assert check_closing_hints(text, tmp_path / "home", tmp_path / "data") == nav["dagster_ui_url"]

    # the dashboard's data: this run's evaluations, its champion and its mistakes, today's one request
    assert len(summary["quality"]["rows"]) == len(history)
    assert summary["champions"]["current"]["model_version"] == champion.group(1)
    mistakes = summary["mistakes"]
    shown = re.search(r"the champion's mistakes on the test split: (\d+) missed defect\(s\), (\d+) false alarm", text)
    assert shown and [int(shown.group(1)), int(shown.group(2))] == [mistakes["counts"]["misses"],
                                                                  mistakes["counts"]["false_alarms"]]
    assert mistakes["test_patches"] == len(test)
    [today] = summary["monitoring"]["rows"]
    from defect_assets.storage.prediction_log import read_day

    logged = read_day(LocalObjectStore(tmp_path / "data" / "artifacts"), today["day"]).records
    example_sha = hashlib.sha256(Path(example).read_bytes()).hexdigest()
    assert example_sha in set(logged["sha256"]) and set(logged["model_version"]) == {champion.group(1)}
    # every request the service answered (the smoke test's and the example) was monitored
    assert (today["requests"], today["images"]) == (logged["request_id"].nunique(), len(logged))
    assert {r["batch"] for r in summary["batches"]["rows"]} == set(cells["batch"])

    again = subprocess.run([*cmd, "--no-serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("already materialized") == 2, \
        again.stdout[-4000:] + again.stderr[-2000:]
    assert "Models are up to date" in again.stdout
    # no service this time: the hint says how to start one on this data folder, on the port asked for
    serve = re.search(r"^Dashboard: (http://127\.0\.0\.1:(\d+)/dashboard), once the service is started with:\n"
                      r"    DEFECT_ASSETS_DAGSTER_UI_URL=(\S+) (\S+) serve --port (\d+)$", again.stdout, re.M)
    assert serve and serve.group(2) == serve.group(5) and Path(serve.group(4)).is_file(), again.stdout[-2000:]
    assert serve.group(3).startswith("http://127.0.0.1:")
