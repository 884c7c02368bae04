"""One registry of model families and one table of label formats: a family or a label format is
added in one place, and everything built from them (assets, evaluations, the evaluation history,
the champion, the training job, the batch file check, label normalization) picks it up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from defect_assets.pipeline.family_registry import families, register_family
from defect_assets.pipeline.family_settings import EnsembleConfig
from defect_assets.pipeline.ingest import ingest_batch
from defect_assets.pipeline.label_files import (
    LABEL_FORMATS,
    normalize_batch_labels,
    register_label_format,
    unregister_label_format,
)
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.batches import is_label_file, upload_folder
from defect_assets.storage.label_formats import LABEL_FILE_FORMATS
from defect_assets_tests.conftest import png_bytes, smooth_image
from defect_assets_tests.waits import SUBPROCESS_SECONDS

ROOT = Path(__file__).resolve().parents[1]

BUILD_AFTER_REGISTERING = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    import dagster as dg

    import defect_assets_tests.helpers.toy_family  # registers "toy" BEFORE the definitions are built
    from defect_assets.definitions import build_defs
    defs = build_defs()
    from defect_assets.defs.partitions import BATCHES
    from defect_assets.ml.scorer import load_registered
    from defect_assets.pipeline.patching import patches_of
    from defect_assets.pipeline.tiny import synthetic_patch_set
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.formats import write_value
    from defect_assets.storage.layout import asset_value_prefix
    from defect_assets.storage.registry import ModelRegistry

    graph = defs.resolve_asset_graph()
    parents = lambda key: sorted(k.to_user_string() for k in graph.get(dg.AssetKey(key)).parent_keys)
    toy_model = defs.resolve_assets_def("toy_model")
    fields = toy_model.op.config_schema.config_type.fields
    out = {"assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
           "history_inputs": parents("evaluation_history"), "champion_inputs": parents("champion_model"),
           "ensemble_inputs": parents("ensemble_model"), "toy_inputs": parents("toy_model"),
           "toy_kinds": sorted(graph.get(dg.AssetKey("toy_model")).kinds),
           "train_job": sorted(k.to_user_string()
                               for k in defs.resolve_job_def("train_models_job").asset_layer.selected_asset_keys),
           "toy_config": {n: [f.description, f.default_value] for n, f in fields.items()}}

    # the toy model of these definitions trained on a tiny generated batch, in this process and
    # through Dagster Pipes (their artifact store is DEFECT_ASSETS_DATA_DIR, the argument)
    data = Path(sys.argv[1])
    store = LocalObjectStore(data / "artifacts")
    patch_set = synthetic_patch_set(n_scenes=14, size=32, seed=5)
    write_value(store, asset_value_prefix(["labeled_patches"], "p1"), patch_set)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(BATCHES, ["p1"])
    train_job = defs.resolve_job_def("train_models_job")
    runs = []
    for through_pipes in (False, True):
        result = train_job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("toy_model")],
            run_config={"ops": {"toy_model": {"config": {"sharpness": 2.0, "through_pipes": through_pipes}}}})
        (mat,) = result.asset_materializations_for_node("toy_model")
        runs.append({"success": result.success, "version": str(result.output_for_node("toy_model")["version"].iloc[0]),
                     "trained_through": getattr(mat.metadata.get("trained_through"), "value", None)})
    registry = ModelRegistry(store)
    cards = registry.versions("toy")
    scorer = load_registered(registry, cards[-1].version)  # through the scorer kind the family registered
    out.update(runs=runs, cards=[{"version": c.version, "kind": c.kind, "config": c.config} for c in cards],
               scored=scorer.predict_proba(patches_of(patch_set)[:5]).tolist())
    print(json.dumps(out), flush=True)
''')


@pytest.mark.slow
@pytest.mark.timeout(SUBPROCESS_SECONDS)
def test_a_family_registered_before_the_definitions_are_built_appears_everywhere(tmp_path):
    before = [f.name for f in families()]
    env = {**os.environ, "DEFECT_ASSETS_DATA_DIR": str(tmp_path / "data"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("DEFECT_ASSETS_STORAGE", None)
    out = subprocess.run([sys.executable, "-c", BUILD_AFTER_REGISTERING, str(tmp_path / "data")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=SUBPROCESS_SECONDS)
    assert out.returncode == 0, out.stderr[-4000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"toy_model", "toy_evaluation"} <= set(doc["assets"])
    assert "toy_evaluation" in doc["history_inputs"] and "toy_evaluation" in doc["champion_inputs"]
    assert doc["history_inputs"] == doc["champion_inputs"] == sorted(f"{n}_evaluation" for n in [*before, "toy"])
    assert "toy_model" in doc["train_job"] and len(doc["train_job"]) == len(before) + 1
    assert doc["toy_inputs"] == ["labeled_patches"] and doc["toy_kinds"] == ["python"]
    # the ensemble trains on the families registered before it, not on one registered later
    assert "toy_model" not in doc["ensemble_inputs"]
    # the launchpad shows the settings model's descriptions and defaults, and where it trains
    assert doc["toy_config"]["sharpness"] == ["Slope of the logistic curve per standard deviation of mean intensity.",
                                              4.0]
    assert doc["toy_config"]["direction"][0].startswith("'auto' (darker or brighter")
    assert doc["toy_config"]["through_pipes"][0].startswith("Train in an external process under Dagster Pipes")
    # trained in this run's process and in a Pipes subprocess (which imported the family's module)
    assert [r["success"] for r in doc["runs"]] == [True, True]
    assert doc["runs"][1]["trained_through"] == "dagster pipes (subprocess)"
    assert [c["version"] for c in doc["cards"]] == [r["version"] for r in doc["runs"]]
    assert all(c["kind"] == "mean_intensity" and c["config"] == {"sharpness": 2.0, "direction": "auto"}
               for c in doc["cards"])
    scored = doc["scored"]
    assert len(scored) == 5 and all(len(p) == 2 and abs(sum(p) - 1) < 1e-5 for p in scored)
    # and the test process's own registry is untouched
    assert [f.name for f in families()] == before == ["scratch_cnn", "fine_tuned_vgg16", "elastic_net", "anomaly",
                                                      "ensemble"]


def test_the_registry_holds_the_five_families_in_order_with_typed_settings():
    by_name = {f.name: f for f in families()}
    assert list(by_name) == ["scratch_cnn", "fine_tuned_vgg16", "elastic_net", "anomaly", "ensemble"]
    assert by_name["ensemble"].inputs == ("scratch_cnn_model", "fine_tuned_vgg16_model", "elastic_net_model",
                                          "anomaly_model", "labeled_patches")
    assert by_name["ensemble"].settings is EnsembleConfig
    assert {f.artifact_kind for f in families()} == {"keras", "features+linear", "ensemble", "anomaly"}


def test_register_family_refuses_a_second_family_of_a_name_and_an_unloadable_kind():
    n = len(families())
    with pytest.raises(ValueError, match="'elastic_net' is already registered"):
        register_family("elastic_net", EnsembleConfig, lambda *a: None, ("labeled_patches",), "features+linear")
    with pytest.raises(ValueError, match=r"loads no 'onnx_tree' models \(it knows keras, features\+linear, "
                                         r"ensemble"):
        register_family("trees", EnsembleConfig, lambda *a: None, ("labeled_patches",), "onnx_tree")
    assert len(families()) == n


def test_a_generated_config_keeps_descriptions_defaults_and_choices():
    """What the launchpad shows comes from the generated class's pydantic fields (public schema)."""
    from defect_assets.defs.models.families import ScratchCNNConfig, VGG16Config

    fields = ScratchCNNConfig.model_json_schema()["properties"]
    assert fields["architecture"]["description"].startswith("'small_vgg' (default")
    assert fields["architecture"]["default"] == "small_vgg"
    assert sorted(fields["architecture"]["enum"]) == ["lenet", "small_vgg"]
    assert VGG16Config.model_json_schema()["properties"]["learning_rate"]["description"] == "Head phase."
    assert list(ScratchCNNConfig.model_fields)[0] == "through_pipes"
    with pytest.raises(ValueError, match="small_vgg"):  # a typo is refused with the choices
        ScratchCNNConfig(architecture="smal_vgg")


def parse_marks_json(text: str, source: str, folder: str = "") -> pd.DataFrame:
    """``{"marks": [{"image": ..., "label": ...}, ...]}``: image-level labels, as labels.csv rows."""
    from defect_assets.ml.labels import parse_labels_csv

    rows = json.loads(text)["marks"]
    csv = "image,label\n" + "".join(f"{r['image']},{r['label']}\n" for r in rows)
    return parse_labels_csv(csv, source, folder)


@pytest.fixture
def marks_format():
    fmt = register_label_format("marks.json", parse_marks_json, "image labels", file_names=("marks.json",),
                                sniff=lambda data: data.lstrip().startswith(b"{"))
    try:
        yield fmt
    finally:
        unregister_label_format("marks.json")
    assert "marks.json" not in LABEL_FORMATS and "marks.json" not in LABEL_FILE_FORMATS


def _batch(folder: Path, label_file: tuple[str, str] | None, extra: tuple[str, bytes] | None = None) -> Path:
    folder.mkdir(parents=True)
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        (folder / name).write_bytes(png_bytes(smooth_image(48, 40, seed=i)))
    if label_file:
        (folder / label_file[0]).write_text(label_file[1])
    if extra:
        (folder / extra[0]).write_bytes(extra[1])
    return folder


def _labels(tmp_path: Path, batch: str, folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    landing, artifacts = LocalObjectStore(tmp_path / "landing"), LocalObjectStore(tmp_path / "artifacts")
    upload_folder(folder, landing, batch)
    inventory = ingest_batch(landing, artifacts, batch)
    labels, _ = normalize_batch_labels(inventory, artifacts)
    return inventory, labels


def test_a_registered_label_format_is_checked_and_normalized_like_labels_csv(tmp_path, marks_format):
    marks = {"marks": [{"image": "a.png", "label": "ok"}, {"image": "b.png", "label": "scratch"}]}
    assert is_label_file("line-1/marks.json") and not is_label_file("line-1/marks.json", b"not json")
    inv_json, from_json = _labels(tmp_path, "json", _batch(tmp_path / "json", ("marks.json", json.dumps(marks))))
    inv_csv, from_csv = _labels(tmp_path, "csv", _batch(tmp_path / "csv", ("labels.csv",
                                                                          "image,label\na.png,ok\nb.png,scratch\n")))
    assert inv_json.set_index("path").loc["marks.json", "role"] == "label_file"
    same = ["image", "kind", "label", "image_id", "x", "y", "group"]
    assert from_json[same].equals(from_csv[same])
    assert from_json["label"].tolist() == ["ok", "scratch"]
    assert set(from_json["source"]) == {"marks.json"} and set(from_csv["source"]) == {"labels.csv"}


def test_a_file_no_format_claims_is_refused_naming_the_formats(tmp_path):
    inventory, labels = _labels(tmp_path, "yaml", _batch(tmp_path / "yaml", ("labels.csv", "image,label\na.png,ok\n"),
                                                         extra=("marks.yaml", b"a.png: ok\n")))
    row = inventory.set_index("path").loc["marks.yaml"]
    assert row["role"] == "rejected"
    assert "nor a label file of a known format (labels.csv (image labels), points.csv (points), voc_xml (*.xml: " \
           "boxes))" in row["reason"]
    assert labels["image"].tolist() == ["a.png"]
    # a label file no format claims (the table changed since ingestion) is refused, not taken for VOC XML
    from defect_assets.ml.labels import LabelFileError

    artifacts = LocalObjectStore(tmp_path / "artifacts")
    artifacts.write_bytes("label_files/x/notes", b"a.png ok")
    bad = inventory.copy()
    bad.loc[bad["path"] == "marks.yaml", ["role", "stored_key"]] = ["label_file", "label_files/x/notes"]
    with pytest.raises(LabelFileError, match=r"marks.yaml: no label format claims this file; known formats: "
                                             r"labels.csv \(image labels\), points.csv"):
        normalize_batch_labels(bad, artifacts)
