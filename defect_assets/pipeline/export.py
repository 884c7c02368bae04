"""The champion's export bundles (ONNX and OpenVINO) and their parity gate: each bundle, loaded by
its own ``predict.py`` (hash check included), scores the champion's golden inputs from their
full-size source images (whole images through the bundle's own resize, windows cut from the decoded
photo) and must give the one scorer's probabilities within ``tolerance`` and the very same
decisions at the champion's threshold."""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from defect_assets.ml.export import FORMATS, export_bundle, load_bundle_runtime
from defect_assets.ml.images import decode_image
from defect_assets.ml.patches import crop_centered
from defect_assets.ml.scorer import load_registered
from defect_assets.pipeline.champion import Champion
from defect_assets.pipeline.golden import GoldenSet, golden_set
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry

EXPORT_PREFIX = "exports"
EXPORT_TOLERANCE = 1e-4


@dataclass
class ExportedBundles:
    """What ``exported_model`` stores: the champion's version, threshold and each bundle's zip key."""

    model_version: str
    threshold: float | None
    bundles: dict = field(default_factory=dict)
    """format -> {key, zip_bytes, bundle_bytes, files (name -> sha256)}."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> ExportedBundles:
        return cls(**doc)


def export_key(version: str, fmt: str) -> str:
    return f"{EXPORT_PREFIX}/{version}/{version}-{fmt}.zip"


def export_champion(champion: Champion, registry: ModelRegistry, store: ObjectStore,
                    formats: tuple[str, ...] = FORMATS) -> dict:
    """Both bundles of the champion, built in a temporary folder and stored as zips (atomic
    writes through the store). Returns {format: {key, bytes, files}}."""
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        for fmt in formats:
            bundle = export_bundle(registry, champion.model_version, fmt, tmp, champion.threshold,
                                   lineage={"evaluation_id": champion.evaluation_id, "champion_metric": champion.metric,
                                            "test_metrics": champion.test_metrics},
                                   threshold_source="champion (chosen on validation)")
            data = bundle.zip_path.read_bytes()
            key = export_key(champion.model_version, fmt)
            store.write_bytes(key, data)
            out[fmt] = {"key": key, "zip_bytes": len(data), "bundle_bytes": bundle.size_bytes,
                        "files": bundle.doc["files"]}
    return out


def export_registered(store: ObjectStore, version: str, fmt: str, out, threshold: float | None = None):
    """``defect-assets export``: one bundle of a registered version; the threshold given, else the
    production pointer's when it names this version (the champion's, chosen on validation), else 0.5."""
    registry = ModelRegistry(store)
    source = "given (--threshold)"
    if threshold is None:
        pointer = registry.production() or {}
        if str(pointer.get("version")) == version and pointer.get("threshold") is not None:
            threshold, source = float(pointer["threshold"]), "production pointer (the champion's, chosen on validation)"
    return export_bundle(registry, version, fmt, out, threshold, threshold_source=source)


def decisions(proba: np.ndarray, classes: list[str], threshold: float | None) -> list[str]:
    if len(classes) == 2:
        return [classes[int(h)] for h in proba[:, 1] >= (0.5 if threshold is None else threshold)]
    return [classes[int(i)] for i in proba.argmax(axis=1)]


def score_golden(model, golden: GoldenSet) -> np.ndarray:
    """The golden inputs through an exported model (``predict.py``'s ExportedModel)."""
    side = model.root.patch_size
    rows = []
    for kind, src, (cx, cy) in zip(golden.kinds, golden.sources, golden.centers):
        if kind == "image":
            rows.append(model.predict_images([src]))
        else:
            rows.append(model.predict_proba(crop_centered(decode_image(src, golden.color), cx, cy, side)[None]))
    return np.concatenate(rows)


@dataclass
class ParityResult:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def bundle_parity(champion: Champion, registry: ModelRegistry, patch_sets: dict[str, ArrayTable],
                  store: ObjectStore, bundles: dict[str, bytes], tolerance: float = EXPORT_TOLERANCE) -> ParityResult:
    """Each stored bundle (zip bytes by format) against ``load_registered`` on the golden set."""
    scorer = load_registered(registry, champion.model_version, compiled=True)
    golden = golden_set(scorer.card, patch_sets, store)
    if not len(golden):
        return ParityResult(False, "no golden input with its source image found to compare", {"golden_inputs": 0})
    ref = golden.score(scorer)
    ref_decisions = decisions(ref, scorer.classes, champion.threshold)
    meta: dict = {"golden_inputs": len(golden), "from_whole_images": sum(k == "image" for k in golden.kinds),
                  "tolerance": tolerance, "threshold": champion.threshold}
    problems = []
    for fmt in FORMATS:
        if fmt not in bundles:
            problems.append(f"{fmt}: no bundle")
            continue
        with tempfile.TemporaryDirectory(prefix=f"parity-{fmt}-") as tmp:
            with zipfile.ZipFile(_bytes_io(bundles[fmt])) as z:
                z.extractall(tmp)
            folder = next(p for p in Path(tmp).iterdir() if p.is_dir())
            try:
                model = load_bundle_runtime(folder)
                proba = score_golden(model, golden)
            except Exception as e:  # noqa: BLE001 - a bundle that cannot load or score fails with the reason
                problems.append(f"{fmt}: {type(e).__name__}: {e}"[:300])
                meta[f"{fmt}_max_abs_difference"] = None
                continue
            diff = float(np.abs(proba - ref).max())
            got = [d for d, _ in model.decide(proba)]
            # a golden input whose reference score lies within the tolerance of the threshold may
            # flip on a last-bit difference (a max-F1 threshold IS a validation score, and the golden
            # inputs are validation patches): counted apart, every other decision must be identical
            edge = (np.abs(ref[:, 1] - champion.threshold) <= tolerance if len(scorer.classes) == 2
                    and champion.threshold is not None else np.zeros(len(ref), bool))
            flips = np.array([a != b for a, b in zip(ref_decisions, got)])
            differ = int((flips & ~edge).sum())
            meta[f"{fmt}_max_abs_difference"] = diff
            meta[f"{fmt}_decisions_differing"] = differ
            meta[f"{fmt}_decisions_differing_on_the_threshold"] = int((flips & edge).sum())
            meta[f"{fmt}_threshold"] = model.threshold
            if model.threshold != champion.threshold and len(scorer.classes) == 2:
                problems.append(f"{fmt}: threshold {model.threshold} in model.json, the champion's is "
                                f"{champion.threshold}")
            if diff > tolerance:
                problems.append(f"{fmt}: probabilities differ by {diff:.3g} (tolerance {tolerance:g})")
            if differ:
                problems.append(f"{fmt}: {differ} of {len(golden)} decisions differ at the threshold")
    ok = not problems
    return ParityResult(ok, "every bundle scores the golden set as the one scorer" if ok else "; ".join(problems),
                        meta)


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)
