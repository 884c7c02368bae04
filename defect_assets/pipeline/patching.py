"""Patch sets: images + normalized labels -> fixed-size labeled patches with a stable split,
and the train split's augmented set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from defect_assets.ml.augment import N_VARIANTS, RandomAffine, augment_48, random_affine_variants, variant_table
from defect_assets.ml.images import decode_image
from defect_assets.ml.labels import is_defect_label
from defect_assets.ml.patches import PatchSpec, center_crop_stack, context_size, cut_image_patches
from defect_assets.ml.splits import DEFAULT_SALT, assign_split
from defect_assets.storage.base import ObjectStore
from defect_assets.storage.formats import ArrayTable

PATCH_COLUMNS = ["patch_id", "image_id", "image", "kind", "label", "is_defect", "x", "y", "split", "group"]


@dataclass(frozen=True)
class SplitSpec:
    train: float = 0.70
    validation: float = 0.15
    salt: str = DEFAULT_SALT


def _empty_context(spec: PatchSpec, side: int) -> np.ndarray:
    S = context_size(side)
    return np.zeros((0, S, S) + ((3,) if spec.color == "RGB" else ()), np.uint8)


def build_patch_set(inventory: pd.DataFrame, labels: pd.DataFrame, artifacts: ObjectStore,
                    spec: PatchSpec = PatchSpec(), split: SplitSpec = SplitSpec(), seed: int = 0,
                    defect_threshold: float = 0.5,
                    progress: Callable[[int, int], None] | None = None) -> ArrayTable:
    """Cut every labeled image of a batch. Each image's negatives come from an RNG seeded by
    (seed, image content), so rebuilding gives the same patches. Windows around points and boxes
    are ``spec.size``; whole images of image-level labels are ``spec.whole_image_size``: one
    batch holds one patch size, so a batch mixing both kinds needs the two sizes equal."""
    local = labels["kind"].isin(["point", "box", "none"])  # windows of spec.size
    side = spec.size if local.any() else spec.whole_image_size
    if local.any() and (~local).any() and spec.whole_image_size != spec.size:
        raise ValueError(f"this batch mixes image-level labels (whole images at image_size={spec.whole_image_size}) "
                         f"with points/boxes (windows of size={spec.size}); one batch holds one patch size: set "
                         "image_size equal to size, or upload the two kinds as separate batches")
    images = inventory[inventory["role"] == "image"].drop_duplicates("path").set_index("path")
    by_image = {img: grp.to_dict("records") for img, grp in labels.groupby("image", sort=True)}
    groups = image_groups(labels)
    rows, contexts = [], []
    for i, (path, recs) in enumerate(by_image.items()):
        meta = images.loc[path]
        sha = str(meta["sha256"])
        pixels = decode_image(artifacts.read_bytes(meta["stored_key"]), spec.color)
        rng = np.random.default_rng([seed, int(sha[:12], 16)])
        group = groups.get(path)
        # a group (a part, a module) goes to one split as a whole; an image without one goes alone
        sp = assign_split(f"group:{group}" if group else sha, split.train, split.validation, split.salt)
        for k, cut in enumerate(cut_image_patches(pixels, recs, spec, rng)):
            rows.append(dict(patch_id=f"{sha[:16]}-{k:03d}", image_id=sha, image=path, kind=cut.kind,
                             label=cut.label, is_defect=is_defect_label(cut.label, defect_threshold),
                             x=cut.x, y=cut.y, split=sp, group=group))
            contexts.append(cut.context)
        if progress and ((i + 1) % 100 == 0 or i + 1 == len(by_image)):
            progress(i + 1, len(by_image))
    table = pd.DataFrame(rows, columns=PATCH_COLUMNS)
    table["is_defect"] = table["is_defect"].astype(bool)
    table["group"] = table["group"].astype("string")
    ctx = np.stack(contexts) if contexts else _empty_context(spec, side)
    return ArrayTable(table, {"context": ctx},
                      {"size": side, "context_size": context_size(side), "color": spec.color,
                       "split": {"train": split.train, "validation": split.validation, "salt": split.salt}})


def image_groups(labels: pd.DataFrame) -> dict[str, str]:
    """image -> its group, from the labels' ``group`` column (images without one are left out).
    An image named in two groups is a labeling error."""
    if "group" not in labels.columns:
        return {}
    named = labels[labels["group"].notna() & (labels["group"].astype(str).str.len() > 0)]
    per_image = named.groupby("image")["group"].unique()
    clash = {img: sorted(map(str, g)) for img, g in per_image.items() if len(g) > 1}
    if clash:
        shown = "; ".join(f"{img}: {', '.join(g)}" for img, g in list(clash.items())[:10])
        raise ValueError(f"{len(clash)} image(s) are in more than one group ({shown})")
    return {str(img): str(g[0]) for img, g in per_image.items()}


def patches_of(patch_set: ArrayTable) -> np.ndarray:
    """The (N, size, size[, C]) patches: the center of each stored context (a view, no copy)."""
    return center_crop_stack(patch_set.arrays["context"], int(patch_set.attrs["size"]))


def build_augmented_set(patch_set: ArrayTable, random_variants: int = 0, seed: int = 0,
                        ranges: RandomAffine = RandomAffine(), angle_step: int = 15) -> ArrayTable:
    """Train split only: the rotations whose angle is a multiple of ``angle_step`` (15: all 24,
    90: the quarter turns), each also mirrored: 48 (or 8) views per patch, + optional random
    affine views. Validation and test patches are never augmented."""
    if angle_step % 15 or not 15 <= angle_step <= 360:
        raise ValueError(f"angle_step must be a multiple of 15 between 15 and 360, not {angle_step}")
    size = int(patch_set.attrs["size"])
    train_idx = np.flatnonzero((patch_set.table["split"] == "train").to_numpy())
    src_table = patch_set.table.iloc[train_idx].reset_index(drop=True)
    ctx = np.asarray(patch_set.arrays["context"][train_idx])
    src, angle, mirrored = variant_table(len(train_idx))
    keep_view = (np.arange(N_VARIANTS) // 2 * 15) % angle_step == 0  # per view, in augment_48's order
    per_patch = int(keep_view.sum())
    # patches per augment_48 call: ~400 MB of views at most (large patches), and >= 256 so that
    # augment_48 still spreads its work over the cores
    chunk = max(256, int(4e8 // (N_VARIANTS * size * size * (ctx.shape[3] if ctx.ndim == 4 else 1))))
    views = [augment_48(ctx[lo:lo + chunk], size)[:, keep_view] for lo in range(0, len(train_idx), chunk)]
    rot = (np.concatenate(views) if views else np.zeros((0, per_patch, size, size, *ctx.shape[3:]), np.uint8)
           ).reshape(-1, size, size, *ctx.shape[3:])
    keep = np.tile(keep_view, len(train_idx))
    parts = [pd.DataFrame({"source": src[keep], "angle": angle[keep], "mirrored": mirrored[keep],
                           "variant": "rotation"})]
    images = [rot]
    if random_variants > 0 and len(train_idx):
        extra, esrc = random_affine_variants(ctx, size, random_variants, np.random.default_rng(seed), ranges)
        parts.append(pd.DataFrame({"source": esrc, "angle": -1, "mirrored": False, "variant": "random_affine"}))
        images.append(extra)
    var = pd.concat(parts, ignore_index=True)
    base = src_table.iloc[var["source"].to_numpy()].reset_index(drop=True)
    suffix = np.where(var["variant"] == "rotation",
                      [f"r{a:03d}{'m' if m else ''}" for a, m in zip(var["angle"], var["mirrored"])],
                      [f"x{j:05d}" for j in range(len(var))])
    table = pd.DataFrame({
        "augmented_id": base["patch_id"] + "-" + pd.Series(suffix, dtype="string"),
        "patch_id": base["patch_id"], "image_id": base["image_id"], "label": base["label"],
        "is_defect": base["is_defect"].astype(bool), "angle": var["angle"].astype("int16"),
        "mirrored": var["mirrored"].astype(bool), "variant": var["variant"].astype("string"),
    })
    out = np.concatenate(images) if len(images) > 1 else images[0]
    return ArrayTable(table, {"image": out}, {"size": size, "color": patch_set.attrs.get("color", "L"),
                                              "per_patch": per_patch + random_variants,
                                              "source_patches": int(len(train_idx))})
