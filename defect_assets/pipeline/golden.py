"""The golden set of a model: the validation patches whose probabilities the trained model
recorded in its card, found again with their full-size source images. The champion's parity
check scores them through the inference seam as the service does (whole images for
image-level labels, so the resize is exercised; the window around the mark for points and
boxes), and the deployment smoke test sends the same inputs over HTTP. This is the one
golden-set lookup."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from defect_assets.ml.images import decode_image, encode_png
from defect_assets.ml.patches import crop_centered
from defect_assets.ml.records import Golden, ModelCard
from defect_assets.ml.scorer import Scorer
from defect_assets.pipeline.ingest import stored_image_key
from defect_assets.pipeline.patching import patches_of
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.formats import ArrayTable


@dataclass
class GoldenSet:
    patch_ids: list[str]
    kinds: list[str]
    """'image' (the whole image is the model's input) or point / box / negative (a window)."""
    sources: list[bytes]
    """The full-size source image of each golden patch, as stored at ingestion."""
    centers: list[tuple[float, float]]
    patches: np.ndarray
    """The stored patches (what training saw)."""
    expected: np.ndarray
    """(n, K) probabilities the trained model gave, from the card."""
    color: str = "L"

    def __len__(self) -> int:
        return len(self.patch_ids)

    def upload_bytes(self) -> list[bytes]:
        """What a client would send: the source photo for whole-image labels, the window
        around the mark (as PNG) for points and boxes."""
        return [src if kind == "image" else encode_png(patch)
                for kind, src, patch in zip(self.kinds, self.sources, self.patches)]

    def score(self, scorer: Scorer) -> np.ndarray:
        """The golden inputs scored through the seam from the source images: whole images go
        through the shared preprocessing, windows are cut from the decoded photo."""
        rows = []
        for kind, src, (cx, cy) in zip(self.kinds, self.sources, self.centers):
            if kind == "image":
                rows.append(scorer.predict_images([src]))
            else:
                window = crop_centered(decode_image(src, self.color), cx, cy, scorer.patch_size)
                rows.append(scorer.predict_proba(window[None]))
        return np.concatenate(rows) if rows else np.zeros((0, len(scorer.classes)), np.float32)


def golden_set(card: ModelCard, patch_sets: dict[str, ArrayTable], store: ObjectStore) -> GoldenSet:
    """The card's golden patches found in the patch sets, with their source images from the
    artifact store (patches whose source image is gone are left out)."""
    golden = card.golden or Golden()
    ids = [str(i) for i in golden.patch_ids]
    expected_all = np.asarray(golden.proba, np.float64).reshape(len(ids), -1) if ids else None
    wanted = {pid: i for i, pid in enumerate(ids)}
    found: dict[str, tuple] = {}
    color = "L"
    for ps in patch_sets.values():
        table = ps.table
        rows = np.flatnonzero(table["patch_id"].astype(str).isin(wanted).to_numpy())
        if not len(rows):
            continue
        color = ps.attrs.get("color", "L")
        px = np.asarray(patches_of(ps))[rows]
        for r, patch in zip(rows, px):
            rec = table.iloc[int(r)]
            key = stored_image_key(store, str(rec["image_id"]))
            if key is not None:
                found[str(rec["patch_id"])] = (str(rec["kind"]), store.read_bytes(key),
                                               (float(rec["x"]), float(rec["y"])), patch)
    keep = [pid for pid in ids if pid in found]
    k = expected_all.shape[1] if expected_all is not None else len(card.classes)
    if not keep:
        return GoldenSet([], [], [], [], np.zeros((0,), np.uint8), np.zeros((0, k)), color)
    return GoldenSet(keep, [found[p][0] for p in keep], [found[p][1] for p in keep], [found[p][2] for p in keep],
                     np.stack([found[p][3] for p in keep]), expected_all[[wanted[p] for p in keep]], color)
