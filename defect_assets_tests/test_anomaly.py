"""The anomaly-detection family (ml/patchcore.py): trained on good images only, with either scoring
(a Gaussian per location, or the nearest memory-bank patch) it ranks injected synthetic defects
above good surfaces and its map points at them; the position-aware scoring finds structure moved
out of place, which the position-blind one misses, and tells kinds of good image apart without a
label; its graph computes the Mahalanobis distance it documents; it is stored without pickle and
loaded through its own scorer kind, and with no defect in validation its threshold is a quantile of
the good validation scores, a rule the champion records."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from defect_assets.ml.patchcore import KIND, MODEL_FILE, AnomalyScorer, fit_anomaly, greedy_coreset
from defect_assets.ml.scorer import explainable, load_registered, scorer_kinds
from defect_assets.ml.synthetic import make_surface_scene
from defect_assets.pipeline.anomaly import train_anomaly
from defect_assets.pipeline.champion import pick_champion, recall_gate
from defect_assets.pipeline.evaluate import EvalSettings, evaluate, history_row
from defect_assets.pipeline.family_registry import families, family
from defect_assets.pipeline.family_settings import AnomalyConfig
from defect_assets.pipeline.patching import patches_of
from defect_assets.pipeline.tiny import synthetic_patch_set
from defect_assets.pipeline.training import golden_indices, split_data
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry

SIZE = 64


def scenes(seed: int, n: int, defects: int, size: int = 128):
    out, where = [], []
    for i in range(n):
        im, found = make_surface_scene(np.random.default_rng(seed + i), size, size, defects=defects, margin=4,
                                       min_separation=40)
        out.append(im)
        where.append(found)
    return np.stack(out), where


@pytest.fixture(scope="module", params=["location", "nearest"])
def photo_model(request):
    good, _ = scenes(0, 40, 0)  # 8 held out to calibrate (with 24, 5: too few for a stable 99th percentile)
    return fit_anomaly(good, scoring=request.param, coreset_size=600, seed=0)


def test_trained_on_good_photos_only_it_finds_injected_defects_and_its_map_points_at_them(photo_model):
    good, _ = scenes(1000, 16, 0)
    bad, where = scenes(2000, 16, 1)
    scores = photo_model.image_scores(np.concatenate([good, bad]))
    auc = roc_auc_score([0] * len(good) + [1] * len(bad), scores)
    assert auc > 0.9, auc
    p = photo_model.probability(scores)
    assert ((p >= 0) & (p <= 1)).all() and np.median(p[:len(good)]) < 0.5 < np.median(p[len(good):])
    hits = 0
    for im, (d,) in zip(bad, where):
        prob, amap = photo_model.anomaly_map(im)
        assert amap.shape == im.shape and amap.max() == pytest.approx(prob, rel=1e-5)
        y, x = np.unravel_index(int(amap.argmax()), amap.shape)
        hits += np.hypot(y - d.y, x - d.x) <= 12
    assert hits >= 0.9 * len(bad), hits


def cell(rng, kind: int = 0, bars: tuple[int, ...] = (30, 66), size: int = 96) -> np.ndarray:
    """An aligned synthetic cell: smooth noise crossed by two dark bars (rows for kind 0, columns for
    kind 1), each within a pixel of its place."""
    from PIL import Image, ImageFilter

    noise = rng.normal(150, 25, (size, size)).clip(0, 255).astype(np.uint8)
    im = np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(1.5)), np.float32)
    for b in bars:
        b += int(rng.integers(-1, 2))
        if kind == 0:
            im[b:b + 4] *= 0.35
        else:
            im[:, b:b + 4] *= 0.35
    return im.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cells():
    rng = np.random.default_rng(0)
    good = np.stack([cell(rng, k) for k in (0, 1) for _ in range(70)])
    test_good = np.stack([cell(rng, k) for k in (0, 1) for _ in range(15)])
    moved = np.stack([cell(rng, k, (34, 70)) for k in (0, 1) for _ in range(15)])  # both bars 4 px off their places
    return good, test_good, moved


def test_the_position_aware_scoring_finds_bars_out_of_place_which_the_nearest_bank_patch_misses(cells):
    good, test_good, moved = cells
    y = [0] * len(test_good) + [1] * len(moved)
    auc = {s: roc_auc_score(y, fit_anomaly(good, scoring=s, coreset_size=500).image_scores(
        np.concatenate([test_good, moved]))) for s in ("location", "nearest")}
    assert auc["location"] >= 0.95 and auc["location"] - auc["nearest"] >= 0.2, auc


def test_two_kinds_of_good_cell_get_their_own_gaussians_without_any_label(cells):
    good, test_good, moved = cells
    model = fit_anomaly(good, kinds=2)
    assert model.kinds == 2 and sum(model.info["kind_images"]) == 112 and min(model.info["kind_images"]) >= 50
    kind = model.run(np.concatenate([test_good, moved]))["kind"]
    truth = np.array([0] * 15 + [1] * 15 + [0] * 15 + [1] * 15)
    assert (kind == truth).all() or (kind == 1 - truth).all()
    # too few images for two kinds: one
    assert fit_anomaly(good[:60], kinds=2).kinds == 1


@pytest.mark.parametrize("size", [96, 72])  # 72 px: stage 3's 9x9 grid onto stage 5's 5x5 (a partial block)
def test_the_graph_computes_the_mahalanobis_distance_of_each_location_to_its_kinds_gaussian(cells, size):
    from defect_assets.ml.lite_onnx import OnnxExtractor

    good, test_good, moved = cells
    x = np.concatenate([test_good, moved])[:, :size, :size]
    model = fit_anomaly(good[:, :size, :size], kinds=2)
    out = model.run(x)
    # the same in NumPy from the backbone's stage maps and the stored arrays
    s3, s5 = (np.asarray(m, np.float64) for m in OnnxExtractor("lite0", 1, ("3", "5"), maps=True)(x[..., None]))

    def mean3(m):  # each location's 3x3 neighbourhood, the cells present
        n, h, w, c = m.shape
        p, ones = np.pad(m, ((0, 0), (1, 1), (1, 1), (0, 0))), np.pad(np.ones((h, w)), 1)
        total = sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
        return total / sum(ones[i:i + h, j:j + w] for i in range(3) for j in range(3))[None, :, :, None]

    a3, a5 = mean3(s3), mean3(s5)
    gh, gw = a5.shape[1:3]
    blocks = np.stack([a3[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(1, 2)) for i in range(gh) for j in range(gw)],
                      axis=1)  # (N, L, 40): stage 3 by 2x2 blocks, a partial block at an odd edge
    f = np.concatenate([blocks, a5.reshape(len(x), gh * gw, -1)], axis=-1) @ model.projection
    g = model.gaussians
    kind = ((f.mean(axis=1)[:, None] - g.centroids[None]) ** 2).sum(-1).argmin(1)
    c = f - g.means[kind]
    d = np.sqrt(np.einsum("nld,nlde,nle->nl", c, g.inv_covs[kind].astype(np.float64), c))
    assert (kind == out["kind"]).all()
    np.testing.assert_allclose(out["patch_scores"].reshape(len(x), -1), d, rtol=1e-3, atol=1e-3 * d.max())
    norm = model.normalization
    score = (d.max(axis=1) - np.asarray(norm["center"])[kind]) / np.asarray(norm["spread"])[kind]
    np.testing.assert_allclose(out["score"], score, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(out["proba"][:, 1], model.probability(out["score"]), atol=1e-6)


def test_the_greedy_coreset_covers_every_cluster_a_random_sample_would_miss():
    rng = np.random.default_rng(0)
    big = rng.normal(0, 0.1, (5000, 16))
    small = rng.normal(0, 0.1, (5, 16)) + 10.0  # a rare kind of patch, 0.1% of the pool
    x = np.concatenate([big, small]).astype(np.float32)
    idx = greedy_coreset(x, 20, project_dims=8, seed=1)
    assert len(set(idx.tolist())) == 20 and (idx >= 5000).any()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("anomaly")
    store = LocalObjectStore(root / "artifacts")
    registry = ModelRegistry(store)
    patch_set = synthetic_patch_set(n_scenes=28, size=SIZE, seed=3, store=store)
    logs: list[str] = []
    config = AnomalyConfig(coreset_size=500)
    trained = family("anomaly").train(config, {"labeled_patches": {"s1": patch_set}}, registry, logs.append)
    return store, registry, patch_set, trained, logs


def test_the_family_trains_on_good_patches_only_and_is_served_through_its_scorer_kind(trained):
    store, registry, patch_set, result, logs = trained
    card = result.card
    assert card.kind == KIND == "anomaly" and KIND in scorer_kinds() and card.family == "anomaly"
    train = split_data({"s1": patch_set}, "train", "binary", card.classes)
    good = int((train.y == 0).sum())
    meta = card.to_dict()["anomaly"]
    assert meta["fit_images"] + meta["calibration_images"] == good < len(train.y)
    assert meta["scoring"] == "location" and meta["grid"] == [SIZE // 16] * 2 and meta["bank_size"] == 0
    assert (meta["raw_dims"], meta["dims"]) == (152, 64)  # stages 3 and 5, randomly projected
    # stored as plain arrays: an npz without pickled objects, and the card's JSON
    raw = registry.read_file(card.version, MODEL_FILE)
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        assert sorted(z.namelist()) == ["centroids.npy", "inv_covs.npy", "means.npy", "projection.npy"]
    inv = np.load(io.BytesIO(raw), allow_pickle=False)["inv_covs"]
    assert inv.shape == (meta["kinds"], (SIZE // 16) ** 2, meta["dims"], meta["dims"])
    scorer = load_registered(registry, card.version)
    assert isinstance(scorer, AnomalyScorer) and explainable(scorer)
    test = split_data({"s1": patch_set}, "test", "binary", card.classes)
    proba = scorer.predict_proba(test.x)
    assert proba.shape == (len(test.y), 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert roc_auc_score(test.y, proba[:, 1]) > 0.9
    # the golden predictions recorded at training are what the stored model gives
    val = split_data({"s1": patch_set}, "validation", "binary", card.classes)
    golden = golden_indices(val)
    assert np.allclose(scorer.predict_proba(val.x[golden]), np.asarray(card.golden.proba), atol=1e-5)
    p, heat = scorer.explain(test.x[int(np.argmax(test.y))])
    assert heat.shape == (SIZE, SIZE) and 0 <= heat.min() and heat.max() == pytest.approx(p, rel=1e-4)
    assert any("training patches used as normal" in m for m in logs)


def _without_validation_defects(ps: ArrayTable) -> ArrayTable:
    keep = ~((ps.table["split"] == "validation") & ps.table["is_defect"]).to_numpy()
    return ArrayTable(ps.table[keep].reset_index(drop=True), {k: np.asarray(v)[keep] for k, v in ps.arrays.items()},
                      dict(ps.attrs))


def test_with_no_defect_in_validation_the_threshold_is_a_good_quantile_and_the_champion_says_so(trained):
    store, registry, patch_set, _, _ = trained
    sets = {"s1": _without_validation_defects(patch_set)}
    val = split_data(sets, "validation", "binary", ["ok", "defect"])
    assert len(val.y) > 5 and val.y.sum() == 0 and split_data(sets, "test", "binary", ["ok", "defect"]).y.sum() > 0
    config = AnomalyConfig(coreset_size=500, threshold_quantile=0.95)
    card = train_anomaly(config, {"labeled_patches": sets}, registry, lambda _m: None).card
    assert np.isnan(card.validation.roc_auc)  # nothing to rank on validation, and training did not fail
    report, _ = evaluate(registry, card.version, sets, EvalSettings("max_f1"), store, latency_runs=0)
    assert report.threshold_method == "good_quantile(0.95)"
    p_val = load_registered(registry, card.version).predict_proba(patches_of(sets["s1"])[
        (sets["s1"].table["split"] == "validation").to_numpy()])[:, 1]
    assert report.threshold == pytest.approx(float(np.quantile(p_val, 0.95)))
    assert report.recall > 0.5  # the injected defects of the test split are found at that threshold
    import pandas as pd

    champion = pick_champion(pd.DataFrame([history_row(report)]), registry, min_defect_recall=0.5)
    assert champion.model_version == card.version and champion.threshold_method == "good_quantile(0.95)"
    gate = recall_gate(champion)
    assert gate.passed and gate.metadata["threshold_rule"] == "good_quantile(0.95)"


def test_a_supervised_model_still_refuses_a_validation_split_without_defects(trained):
    from defect_assets.ml.evaluation import ThresholdError
    from defect_assets.pipeline.evaluate import binary_threshold

    card = trained[3].card.model_copy(update={"config": {}})
    with pytest.raises(ThresholdError):
        binary_threshold(card, np.zeros(5), np.linspace(0, 1, 5), EvalSettings())
    assert binary_threshold(card, np.array([0, 0, 1, 1]), np.array([.1, .2, .8, .9]), EvalSettings()) == (0.8, "max_f1")


def test_the_family_is_in_the_registry_built_graph_and_a_member_of_the_ensemble():
    import dagster as dg

    from defect_assets.definitions import build_defs

    names = [f.name for f in families()]
    assert names[-1] == "ensemble" and names.index("anomaly") < names.index("ensemble")
    assert family("anomaly").settings is AnomalyConfig
    graph = build_defs().resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("anomaly_model")).parent_keys}
    assert parents == {"labeled_patches"}
    assert "anomaly_model" in {k.to_user_string() for k in graph.get(dg.AssetKey("anomaly_evaluation")).parent_keys}
    champion_inputs = {k.to_user_string() for k in graph.get(dg.AssetKey("champion_model")).parent_keys}
    assert "anomaly_evaluation" in champion_inputs
    ensemble_inputs = {k.to_user_string() for k in graph.get(dg.AssetKey("ensemble_model")).parent_keys}
    assert "anomaly_model" in ensemble_inputs


def test_the_service_predicts_with_it_and_inspect_draws_its_anomaly_map(trained):
    import base64

    from PIL import Image

    from defect_assets.ml.images import encode_png
    from defect_assets.serving.client import DefectClient
    from defect_assets.serving.settings import ServiceSettings
    from defect_assets_tests.helpers.serving import ServiceThread

    store, registry, patch_set, result, _ = trained
    version = result.card.version
    registry.promote(version, threshold=0.5)
    img, defects = make_surface_scene(np.random.default_rng(21), 256, 192, defects=2, min_separation=90)
    good, _ = make_surface_scene(np.random.default_rng(22), 256, 192, defects=0)
    with ServiceThread(ServiceSettings(store=store, reload_seconds=0.1, max_wait_ms=5)) as svc:
        svc.wait_ready(version)
        client = DefectClient(svc.url)
        scores = [r["defect_score"] for r in client.predict([encode_png(img), encode_png(good)])]
        expected = load_registered(registry, version).predict_images([encode_png(img), encode_png(good)])[:, 1]
        assert np.allclose(scores, expected, atol=1e-5)
        r = client.inspect(encode_png(img), stride=16)
    heat = np.asarray(Image.open(io.BytesIO(base64.b64decode(r["heatmap_png"])))).astype(float)
    assert heat.shape == (192, 256)
    scorer = load_registered(registry, version)
    assert np.abs(heat - np.rint(scorer.photo_map(scorer.pixels(encode_png(img))) * 255)).max() <= 1
    # the map of the whole photo: within 12 px of every planted defect it is higher than anywhere
    # farther than 40 px from all of them
    yy, xx = np.mgrid[:192, :256]
    far = np.all([np.hypot(yy - d.y, xx - d.x) > 40 for d in defects], axis=0)
    for d in defects:
        near = heat[np.hypot(yy - d.y, xx - d.x) <= 12]
        assert near.max() > heat[far].max() + 20, (d, near.max(), heat[far].max())
    assert r["defects"], "nothing located"


@pytest.mark.slow
def test_a_service_process_without_the_family_registry_serves_an_anomaly_champion(trained, tmp_path):
    """`defect-assets serve` never imports the pipeline's family registry, so the anomaly kind must be
    known to ml/scorer.py itself (a clean-clone main job whose champion held an anomaly member once
    deployed to a service that refused to load it)."""
    import os
    import shutil
    import subprocess
    import sys
    import time

    from defect_assets.ml.images import encode_png
    from defect_assets.serving.client import DefectClient
    from defect_assets_tests.helpers.ports import free_port
    from defect_assets_tests.waits import READY_SECONDS

    store, _, patch_set, result, _ = trained
    data = tmp_path / "data"
    shutil.copytree(store.root, data / "artifacts")  # the module's registry stays unpromoted
    registry = ModelRegistry(LocalObjectStore(data / "artifacts"))
    registry.promote(result.card.version, threshold=0.5)
    test = split_data({"s1": patch_set}, "test", "binary", result.card.classes)
    images = [encode_png(test.x[i]) for i in (int(np.argmax(test.y)), int(np.argmin(test.y)))]
    want = load_registered(registry, result.card.version).predict_images(images)[:, 1]
    port = free_port()
    env = {**os.environ, "DEFECT_ASSETS_DATA_DIR": str(data)}
    env.pop("DEFECT_ASSETS_API_KEY", None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "defect_assets.cli", "serve", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        client, deadline = DefectClient(f"http://127.0.0.1:{port}"), time.monotonic() + READY_SECONDS
        while not client.ready():
            output = log_path.read_text()
            assert "unknown model kind" not in output, output[-3000:]
            assert proc.poll() is None and time.monotonic() < deadline, output[-3000:]
            time.sleep(0.2)
        answers = client.predict(images)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert [a["model_version"] for a in answers] == [result.card.version] * 2
    np.testing.assert_allclose([a["probabilities"]["defect"] for a in answers], want, atol=1e-5)
    assert f"serving model {result.card.version}" in log_path.read_text()


def test_with_an_elastic_net_on_its_backbone_one_pass_gives_both_members_their_own_numbers(trained):
    """An ensemble of the anomaly model and an elastic net on Lite0 features runs the backbone once
    (the scoring graph merged with the pooled features): each member's probabilities are what it
    gives alone, so evaluating and serving the ensemble is unchanged but for the cost."""
    from defect_assets.ml.backbone import LITE_STAGES, extract_features, make_extractor
    from defect_assets.ml.linear import fit_elastic_net
    from defect_assets.ml.scorer import LinearScorer, shared_predictions

    store, registry, patch_set, result, _ = trained
    anomaly = load_registered(registry, result.card.version)
    train = split_data({"s1": patch_set}, "train", "binary", result.card.classes)
    test = split_data({"s1": patch_set}, "test", "binary", result.card.classes)
    spec = {"backbone": "lite0", "stages": list(LITE_STAGES), "runtime": "onnxruntime"}
    fx = make_extractor(spec, (SIZE, SIZE, 1))
    head = fit_elastic_net(extract_features(fx, train.x), train.y, result.card.classes, C=0.05, max_iter=300)
    card = registry.register("elastic_net", {"linear.npz": head.to_bytes()}, {
        "kind": "features+linear", "task": "binary", "classes": result.card.classes, "features": spec,
        "inference": {"views": 1}, "input": {"size": SIZE, "channels": 1},
        "data_version": {"id": "synthetic-3", "batches": ["s1"]}})
    linear = load_registered(registry, card.version)
    assert isinstance(linear, LinearScorer) and anomaly.shares_backbone_with(linear)
    alone = [anomaly.predict_proba(test.x), linear.predict_proba(test.x)]
    shared = shared_predictions([anomaly, linear], test.x)
    for a, b in zip(shared, alone):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert len(anomaly.model._shared) == 1  # the merged graph was built (and is reused)
    shared_predictions([linear, anomaly], test.x[:3])
    assert len(anomaly.model._shared) == 1
    # a head on other features (two views) keeps its own pass
    two_views = registry.register("elastic_net", {"linear.npz": head.to_bytes()}, {
        **{k: v for k, v in card.to_dict().items() if k not in ("version", "family", "created", "files")},
        "inference": {"views": 2}})
    assert not anomaly.shares_backbone_with(load_registered(registry, two_views.version))
