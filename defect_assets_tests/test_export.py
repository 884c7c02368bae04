"""The export bundle (issue 22): both formats score as the service does, from a process where
TensorFlow, Dagster and defect_assets cannot be imported; a tampered bundle fails the blocking
parity check and blocks what is downstream of it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from defect_assets.ml.export import export_bundle, load_bundle_runtime
from defect_assets.ml.scorer import load_registered
from defect_assets.pipeline.golden import golden_set
from defect_assets.storage import LocalObjectStore
from defect_assets_tests.helpers.export import register_lite_elastic_net

BLOCKED = ("tensorflow", "dagster", "defect_assets", "keras")

# runs predict.py with an import hook that refuses the training stack, after proving it refuses it
WRAPPER = """
import importlib.abc, runpy, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError('blocked in this test: ' + name)
        return None
sys.meta_path.insert(0, Block())
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit('the blocker let ' + name + ' through')
sys.argv = ['predict.py'] + sys.argv[1:]
try:
    runpy.run_path({predict!r}, run_name='__main__')
except SystemExit as e:
    code = e.code
else:
    code = 0
assert not any(m.split('.')[0] in BLOCKED for m in sys.modules), 'a blocked module was imported'
sys.exit(code)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    store = LocalObjectStore(root / "artifacts")
    registry, patch_sets, card = register_lite_elastic_net(store)
    return root, store, registry, patch_sets, card


def midway(scores: np.ndarray) -> float:
    """A threshold halfway between the two middle scores: both decisions occur, none sits on the edge."""
    s = np.sort(np.asarray(scores, np.float64))
    k = len(s) // 2
    return float((s[k - 1] + s[k]) / 2)


def run_predict(bundle_folder: Path, images: Path, runtime: str) -> list[dict]:
    code = WRAPPER.format(blocked=BLOCKED, predict=str(bundle_folder / "predict.py"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(bundle_folder), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(images), "--runtime", runtime, "--json"],
                          cwd=bundle_folder, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("fmt,runtime", [("onnx", "onnxruntime"), ("openvino", "openvino")])
def test_bundle_predicts_the_services_decisions_without_tensorflow_dagster_or_the_project(trained, fmt, runtime):
    from defect_assets.serving.client import DefectClient
    from defect_assets.serving.settings import ServiceSettings
    from defect_assets_tests.helpers.serving import ServiceThread

    root, store, registry, patch_sets, card = trained
    scorer = load_registered(registry, card.version)
    golden = golden_set(card, patch_sets, store)
    sources = list(dict.fromkeys(golden.sources))  # the golden inputs' full-size photos
    assert len(sources) >= 2
    images = root / f"images-{fmt}"
    images.mkdir()
    for i, src in enumerate(sources):
        (images / f"photo-{i:02d}.png").write_bytes(src)
    # a threshold between the photos' scores, so both decisions occur and a wrong one would show
    p_ref = scorer.predict_images(sources)[:, 1]
    threshold = midway(p_ref)
    registry.promote(card.version, threshold=threshold)

    bundle = export_bundle(registry, card.version, fmt, root / f"out-{fmt}", threshold)
    assert bundle.zip_path.is_file() and zipfile.ZipFile(bundle.zip_path).testzip() is None
    doc = json.loads((bundle.folder / "model.json").read_text())
    assert doc["threshold"] == threshold and doc["preprocessing"]["views"] == 2
    assert doc["preprocessing"]["input_size"] == 32 and doc["preprocessing"]["channels"] == 1
    assert set(doc["files"]) >= {"predict.py", "README.md", "LICENSES.md"}
    assert "Apache" in (bundle.folder / "LICENSES.md").read_text()
    source = (bundle.folder / "predict.py").read_text()
    assert "import tensorflow" not in source and "defect_assets." not in source

    printed = run_predict(bundle.folder, images, runtime)
    assert [r["file"] for r in printed] == sorted(p.name for p in images.iterdir())

    for rt in ("tensorflow", runtime):  # the service on the registered artifact and on the bundle's runtime
        settings = ServiceSettings(store=store, reload_seconds=0.1, max_wait_ms=5, runtime=rt)
        with ServiceThread(settings) as svc:
            svc.wait_ready(card.version)
            served = DefectClient(svc.url).predict([images / r["file"] for r in printed])
        assert [s["decision"] for s in served] == [r["decision"] for r in printed], rt
        got = np.array([r["proba"] for r in printed])
        want = np.array([[s["probabilities"][c] for c in card.classes] for s in served])
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert len({r["decision"] for r in printed}) == 2


def _tamper(kind: str):
    """A wrapper of export_champion that alters the stored ONNX bundle after it is written."""
    import onnx
    from onnx import numpy_helper

    from defect_assets.pipeline import export as pexport

    real = pexport.export_champion

    def tampered(champion, registry, store, formats=pexport.FORMATS):
        done = real(champion, registry, store, formats)
        key = done["onnx"]["key"]
        import io
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            zipfile.ZipFile(io.BytesIO(store.read_bytes(key))).extractall(tmp)
            folder = next(Path(tmp).iterdir())
            doc = json.loads((folder / "model.json").read_text())
            if kind == "threshold":
                doc["threshold"] = 0.999999
            else:  # the head's bias shifted, the file's sha256 updated to match: only the scores betray it
                m = onnx.load(str(folder / "model.onnx"))
                for init in m.graph.initializer:
                    if init.name == "head_b":
                        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.5, "head_b"))
                onnx.save(m, str(folder / "model.onnx"))
                import hashlib

                doc["files"]["model.onnx"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
            (folder / "model.json").write_text(json.dumps(doc))
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for f in sorted(folder.iterdir()):
                    z.write(f, f"{folder.name}/{f.name}")
            store.write_bytes(key, buf.getvalue())
        return done

    return tampered


def _materialize(store_root: Path, champion, patch_sets):
    import dagster as dg

    from defect_assets.defs.export.assets import EXPORT_PARITY_CHECK, exported_model, exported_model_parity_check
    from defect_assets.defs.resources import LocalStorage

    @dg.asset(name="champion_model")
    def champion_stub():
        return champion

    @dg.asset(name="labeled_patches")
    def patches_stub():
        return patch_sets

    @dg.asset
    def line_deployment(exported_model):
        return exported_model.model_version

    result = dg.materialize_to_memory(
        [champion_stub, patches_stub, exported_model, exported_model_parity_check, line_deployment],
        resources={"artifact_store": LocalStorage(root=str(store_root))}, raise_on_error=False)
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == EXPORT_PARITY_CHECK]
    built = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    return check, built


@pytest.mark.parametrize("tamper", [None, "threshold", "weights"])
def test_tampered_bundle_fails_the_parity_check_and_blocks_downstream(trained, tamper, monkeypatch):
    from defect_assets.pipeline.champion import Champion

    root, store, registry, patch_sets, card = trained
    scorer = load_registered(registry, card.version)
    golden = golden_set(card, patch_sets, store)
    threshold = midway(golden.score(scorer)[:, 1])
    champion = Champion(model_version=card.version, family="elastic_net", metric="roc_auc", validation_value=1.0,
                        threshold=threshold, evaluation_id="test", report_html="", test_metrics={},
                        min_defect_recall=0.5, margin=0.02)
    if tamper:
        import defect_assets.defs.export.assets as assets_mod

        monkeypatch.setattr(assets_mod, "export_champion", _tamper(tamper))
    check, built = _materialize(store.root, champion, patch_sets)
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["golden_inputs"] == len(golden) > 0
    assert "exported_model" in built
    if tamper is None:
        assert check.passed, check.description
        assert meta["onnx_max_abs_difference"] <= 1e-4 and meta["openvino_max_abs_difference"] <= 1e-4
        assert meta["onnx_decisions_differing"] == meta["openvino_decisions_differing"] == 0
        assert "line_deployment" in built
    else:
        assert not check.passed
        assert "onnx" in check.description and "openvino" not in check.description, check.description
        assert meta["openvino_max_abs_difference"] <= 1e-4  # the untouched bundle still agrees
        if tamper == "weights":
            assert meta["onnx_max_abs_difference"] > 1e-4
        else:
            # the description names the exact value; the metadata shows it as the UI does (4 significant digits)
            assert "threshold 0.999999 in model.json" in check.description and meta["onnx_threshold"] == 1.0
        assert "line_deployment" not in built  # blocked by the failed check


def test_bundle_refuses_a_file_that_does_not_match_its_sha256(trained):
    root, store, registry, patch_sets, card = trained
    bundle = export_bundle(registry, card.version, "onnx", root / "out-sha", 0.5)
    load_bundle_runtime(bundle.folder)  # intact: loads
    with open(bundle.folder / "model.onnx", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(ValueError, match="model.onnx does not match its sha256"):
        load_bundle_runtime(bundle.folder)


def test_cli_exports_with_the_production_threshold(trained, monkeypatch, capsys):
    from defect_assets.cli import main

    root, store, registry, patch_sets, card = trained
    registry.promote(card.version, threshold=0.3125)
    monkeypatch.setenv("DEFECT_ASSETS_DATA_DIR", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
    assert main(["export", card.version, "--format", "onnx", "--out", str(root / "cli-out")]) == 0
    folder = root / "cli-out" / f"{card.version}-onnx"
    doc = json.loads((folder / "model.json").read_text())
    assert doc["threshold"] == 0.3125 and doc["threshold_source"].startswith("production pointer")
    assert (root / "cli-out" / f"{card.version}-onnx.zip").is_file()
    assert str(folder) in capsys.readouterr().out


def test_an_ensemble_exports_as_its_members_averaged(trained):
    root, store, registry, patch_sets, card = trained
    other = register_lite_elastic_net(store, views=1, seed=0)[2]
    members = [card.version, other.version]
    weights = [0.7, 0.3]
    ens = registry.register("ensemble", {"members.json": json.dumps({"members": members, "weights": weights}).encode()},
                            {"kind": "ensemble", "task": "binary", "classes": card.classes,
                             "input": {"size": 32, "channels": 1}, "members": members, "weights": weights})
    scorer = load_registered(registry, ens.version)
    golden = golden_set(card, patch_sets, store)
    for fmt in ("onnx", "openvino"):
        bundle = export_bundle(registry, ens.version, fmt, root / f"ens-{fmt}", 0.5)
        assert len(bundle.doc["graph"]["members"]) == 2
        model = load_bundle_runtime(bundle.folder)
        np.testing.assert_allclose(model.predict_images(golden.sources), scorer.predict_images(golden.sources),
                                   atol=1e-4)
        np.testing.assert_allclose(model.predict_proba(golden.patches), scorer.predict_proba(golden.patches),
                                   atol=1e-4)


@pytest.mark.slow
def test_a_keras_cnn_exports_through_tf2onnx(tmp_path):
    from defect_assets.pipeline.tiny import register_tiny_model, synthetic_patch_set
    from defect_assets.storage.registry import ModelRegistry

    store = LocalObjectStore(tmp_path / "artifacts")
    registry = ModelRegistry(store)
    patches = synthetic_patch_set(size=32, seed=0, store=store)
    card = register_tiny_model(registry, {"s": patches}, epochs=1)
    scorer = load_registered(registry, card.version)
    golden = golden_set(card, {"s": patches}, store)
    for fmt in ("onnx", "openvino"):
        model = load_bundle_runtime(export_bundle(registry, card.version, fmt, tmp_path / fmt, 0.5).folder)
        np.testing.assert_allclose(model.predict_images(golden.sources), scorer.predict_images(golden.sources),
                                   atol=1e-4)
        np.testing.assert_allclose(model.predict_proba(golden.patches), scorer.predict_proba(golden.patches),
                                   atol=1e-4)


@pytest.fixture(scope="module", params=["location", "nearest"])
def anomaly_trained(request, tmp_path_factory):
    """A tiny anomaly model (issue 23) trained the way test_anomaly.py trains it: good 64 px synthetic
    patches of the train split only, projected to 64 dimensions, with each scoring (Gaussians per
    location, or a small coreset)."""
    from defect_assets.pipeline.family_registry import family
    from defect_assets.pipeline.family_settings import AnomalyConfig
    from defect_assets.pipeline.tiny import synthetic_patch_set
    from defect_assets.storage.registry import ModelRegistry

    root = tmp_path_factory.mktemp(f"export-anomaly-{request.param}")
    store = LocalObjectStore(root / "artifacts")
    registry = ModelRegistry(store)
    patch_set = synthetic_patch_set(n_scenes=16, size=64, seed=3, store=store)
    result = family("anomaly").train(AnomalyConfig(scoring=request.param, coreset_size=300, dims=64),
                                     {"labeled_patches": {"s1": patch_set}}, registry, lambda _m: None)
    return root, store, registry, {"s1": patch_set}, result.card


def test_an_anomaly_model_exports_its_whole_scoring_in_one_graph(anomaly_trained, monkeypatch):
    import defect_assets.ml.anomaly_onnx as anomaly_onnx
    import defect_assets.ml.export as export_mod
    from defect_assets.pipeline.champion import Champion
    from defect_assets.pipeline.export import bundle_parity, export_champion

    root, store, registry, patch_sets, card = anomaly_trained
    meta = card.to_dict()["anomaly"]
    assert card.kind == "anomaly" and meta["dims"] == 64  # projected
    bank_size = int(meta["bank_size"])
    if meta["scoring"] == "nearest":
        monkeypatch.setattr(anomaly_onnx, "BANK_CHUNK", max(1, bank_size // 3))  # several distance blocks
    scorer = load_registered(registry, card.version)
    golden = golden_set(card, patch_sets, store)
    import io

    from PIL import Image

    # real images: the golden inputs' full-size photos and every golden patch encoded as a PNG
    crops = []
    for patch in golden.patches:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(patch, np.uint8).squeeze()).save(buf, "PNG")
        crops.append(buf.getvalue())
    sources = list(dict.fromkeys(golden.sources)) + crops
    assert len(sources) >= 6
    images = root / "images"
    images.mkdir(exist_ok=True)
    for i, src in enumerate(sources):
        (images / f"image-{i:02d}.png").write_bytes(src)
    p_ref = scorer.predict_images(sources)
    assert 0.05 < np.median(p_ref[:, 1]) < 0.95 or np.ptp(p_ref[:, 1]) > 0.5, p_ref[:, 1]
    threshold = midway(p_ref[:, 1])
    want = [card.classes[int(h)] for h in p_ref[:, 1] >= threshold]
    assert len(set(want)) == 2

    for fmt, runtime in (("onnx", "onnxruntime"), ("openvino", "openvino")):
        bundle = export_bundle(registry, card.version, fmt, root / f"ad-{fmt}", threshold)
        node = bundle.doc["graph"]
        assert node["kind"] == "anomaly" and node["anomaly"]["bank_size"] == bank_size
        assert "not exported" in node["anomaly"]["anomaly_map"]
        assert bundle.doc["lineage"]["backbones"] == ["lite0"]
        if fmt == "onnx":
            import onnx

            ops = {n.op_type for n in onnx.load(str(bundle.folder / "model.onnx")).graph.node}
            assert {"AveragePool", "MatMul", "ReduceMax", "Sqrt", "Sigmoid"} <= ops
            assert {"ReduceMin", "Min"} <= ops if meta["scoring"] == "nearest" else "ReduceSum" in ops
        printed = run_predict(bundle.folder, images, runtime)  # training stack blocked
        assert [r["file"] for r in printed] == sorted(p.name for p in images.iterdir())
        got = np.array([r["proba"] for r in printed])
        np.testing.assert_allclose(got, p_ref, atol=1e-4, err_msg=fmt)
        assert [r["decision"] for r in printed] == want, fmt
        # patches as the golden set holds them, through the bundle in this process
        model = load_bundle_runtime(bundle.folder)
        np.testing.assert_allclose(model.predict_proba(golden.patches), scorer.predict_proba(golden.patches),
                                   atol=1e-4)

    # the calibration saturates most of these at 0 or 1: the same graph with a curve as wide as the
    # scores' spread shows the raw score itself agrees (p within 1e-4 of a slope-1/std sigmoid)
    import onnxruntime as ort
    import openvino as ov

    from defect_assets.ml.patchcore import MODEL_FILE, AnomalyModel

    pc = AnomalyModel.from_parts(registry.read_file(card.version, MODEL_FILE), meta)
    x = np.asarray(golden.patches, np.uint8).reshape(len(golden), 64, 64, 1)
    scores = pc.image_scores(x)
    pc.calibration = {"center": float(np.median(scores)), "width": float(max(np.std(scores), 1e-3))}
    want_p = pc.predict_proba(x)
    assert 0.1 < want_p[:, 1].max() - want_p[:, 1].min()
    graph = export_mod.anomaly_graph(pc, 1)
    path = root / "wide.onnx"
    path.write_bytes(graph.SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"pixels": x})[0], want_p, atol=1e-4)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(np.asarray(compiled([x])[compiled.outputs[0]]), want_p, atol=1e-4)

    # the exported_model parity check's own comparison (both formats, golden inputs from their photos)
    champion = Champion(model_version=card.version, family="anomaly", metric="roc_auc", validation_value=1.0,
                        threshold=midway(golden.score(scorer)[:, 1]), evaluation_id="test", report_html="",
                        test_metrics={}, min_defect_recall=0.5, margin=0.02)
    done = export_champion(champion, registry, store)
    result = bundle_parity(champion, registry, patch_sets, store,
                           {fmt: store.read_bytes(done[fmt]["key"]) for fmt in ("onnx", "openvino")})
    assert result.passed, result.description
    assert result.metadata["onnx_max_abs_difference"] <= 1e-4 and result.metadata["openvino_max_abs_difference"] <= 1e-4
    assert result.metadata["onnx_decisions_differing"] == result.metadata["openvino_decisions_differing"] == 0
