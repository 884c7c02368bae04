"""labeled_patches and augmented_training_set, with the blocking split-leak check."""


from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd

from defect_assets.defs.metadata import class_split_counts, md_image, md_table, readable
from defect_assets.defs.partitions import batch_partitions
from defect_assets.defs.resources import StorageResource
from defect_assets.ml.augment import RandomAffine
from defect_assets.ml.patches import PatchSpec
from defect_assets.ml.splits import DEFAULT_SALT, find_group_leaks, find_leaks
from defect_assets.ml.visual import contact_sheet
from defect_assets.pipeline.label_files import label_version
from defect_assets.pipeline.patching import SplitSpec, build_augmented_set, build_patch_set, patches_of
from defect_assets.storage.formats import ArrayTable, current_version, read_table

NO_SPLIT_LEAK = "no_image_in_two_splits"


class PatchConfig(dg.Config):
    size: int = 64
    """Side of the windows cut around points and boxes, in pixels (the dent tutorial's 64)."""
    image_size: int | None = None
    """Side of the whole-image patch of image-level labels (None: the same as size). Thin defects
    need resolution: ELPV cells are 300 px and the main job uses its --image-size for them."""
    color: Literal["L", "RGB"] = "L"
    """'L' grayscale or 'RGB'."""
    negatives_per_positive: float = 1.0
    """Random defect-free windows cut per point/box label."""
    defect_radius: float | None = None
    """Half-side of the square around a point that negatives must avoid (default: size/2)."""
    train_fraction: float = 0.70
    validation_fraction: float = 0.15
    split_salt: str = DEFAULT_SALT
    """Changing the salt re-deals every image: only do it for a fresh project."""
    defect_threshold: float = 0.5
    """Numeric labels (ELPV defect probability) at or above this are defects."""
    seed: int = 0


class AugmentConfig(dg.Config):
    angle_step: int = 15
    """Keep the rotations whose angle is a multiple of this (each also mirrored): 15 gives the
    48 views of the dent tutorial; 90 gives the 8 quarter turns and mirrors, which is all the
    Keras families train on by default and a sixth of the bytes for large image-level patches."""
    random_variants: int = 0
    """Extra random affine views per patch (shift, scale, shear, stretch, flips) beyond the 48."""
    max_shift: float = 10.0
    max_scale: float = 1.6
    max_shear_deg: float = 20.0
    max_stretch: float = 1.3
    seed: int = 0


def stored_patch_tables(store, exclude: str | None = None) -> dict[str, pd.DataFrame]:
    """The patch tables of every batch already in the artifact store (tables only, no pixels)."""
    out = {}
    root = "/".join(dg.AssetKey("labeled_patches").path)  # where the IO manager keeps it (asset_prefix)
    for batch in store.walk_prefixes(root + "/"):
        meta = current_version(store, f"{root}/{batch}")
        if batch != exclude and meta is not None:
            out[batch] = read_table(store, meta["files"]["table"])
    return out


def _sample_sheet(images: np.ndarray, table: pd.DataFrame, per_class: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = []
    for _, grp in table.groupby("label", sort=True):
        picks += list(rng.choice(grp.index.to_numpy(), min(per_class, len(grp)), replace=False))
    return contact_sheet(np.asarray(images[np.sort(np.asarray(picks, dtype=int))]), columns=per_class)


@dg.asset(
    partitions_def=batch_partitions,
    group_name="patches",
    kinds={"numpy", "parquet"},
    check_specs=[dg.AssetCheckSpec(NO_SPLIT_LEAK, asset="labeled_patches", blocking=True,
                                   description="No source image has patches in two splits, "
                                               "in this batch or across batches")],
)
def labeled_patches(context: dg.AssetExecutionContext, config: PatchConfig, raw_images: ArrayTable,
                    image_labels: pd.DataFrame, artifact_store: StorageResource):
    """Fixed-size labeled patches of one batch: a patch centered on every defect point or box
    (mirrored at the border) plus random defect-free windows, or the whole image resized for
    image-level labels. Each patch row names its source image, center, label and split; the
    split is a stable hash of the source image, so images never move and never leak."""
    batch = context.partition_key
    store = artifact_store.open()
    spec = PatchSpec(size=config.size, color=config.color, negatives_per_positive=config.negatives_per_positive,
                     defect_radius=config.defect_radius, image_size=config.image_size)
    split = SplitSpec(config.train_fraction, config.validation_fraction, config.split_salt)
    ps = build_patch_set(raw_images.table, image_labels, store, spec, split, config.seed, config.defect_threshold,
                         progress=lambda i, n: context.log.info(f"labeled_patches[{batch}]: {i}/{n} images cut"))
    ps.attrs["label_version"] = label_version(image_labels)
    t = ps.table
    tables = [t, *stored_patch_tables(store, exclude=batch).values()]
    leaks, group_leaks = find_leaks(tables), find_group_leaks(tables)
    yield dg.Output(ps, metadata=readable({
        "patches": len(t),
        "images": int(t["image_id"].nunique()),
        "defect_fraction": float(t["is_defect"].mean()) if len(t) else 0.0,
        "per_split_and_class": md_table(class_split_counts(t)),
        "by_kind": md_table(t.groupby("kind").size().rename("patches").reset_index()),
        "samples": md_image(_sample_sheet(patches_of(ps), t), "sample patches, one row per class") if len(t)
        else dg.MetadataValue.md("(no patches)"),
        "label_version": ps.attrs["label_version"],
    }))
    clean = leaks.empty and group_leaks.empty
    yield dg.AssetCheckResult(
        check_name=NO_SPLIT_LEAK, passed=clean, severity=dg.AssetCheckSeverity.ERROR,
        metadata=readable({"leaked_images": len(leaks), "leaks": md_table(leaks), "leaked_groups": len(group_leaks),
                           "group_leaks": md_table(group_leaks)}),
        description=None if clean else
        f"{len(leaks)} source image(s) and {len(group_leaks)} group(s) have patches in more than one split "
        "(changed split settings, or a group's images spread over batches before groups were labeled?)",
    )


@dg.asset(partitions_def=batch_partitions, group_name="patches", kinds={"numpy", "parquet"})
def augmented_training_set(context: dg.AssetExecutionContext, config: AugmentConfig,
                           labeled_patches: ArrayTable) -> dg.Output[ArrayTable]:
    """The train split of one batch, each patch turned 24 times (every 15 degrees) and each turn
    mirrored: 48 views per patch, plus optional seeded random affine views. Validation and test
    patches are never augmented."""
    ranges = RandomAffine(max_shift=config.max_shift, scale=(1 / config.max_scale, config.max_scale),
                          max_shear_deg=config.max_shear_deg, stretch=(1 / config.max_stretch, config.max_stretch))
    aug = build_augmented_set(labeled_patches, config.random_variants, config.seed, ranges, config.angle_step)
    n_src = aug.attrs["source_patches"]
    context.log.info(f"augmented_training_set[{context.partition_key}]: {n_src} train patches -> {len(aug)} images")
    meta = {
        "images": len(aug),
        "train_patches": n_src,
        "per_patch": aug.attrs["per_patch"],
        "per_class": md_table(aug.table.groupby("label").size().rename("images").reset_index()),
    }
    if n_src:
        first = aug.arrays["image"][: aug.attrs["per_patch"]][:48]
        meta["one_patch_48_views"] = md_image(contact_sheet(np.asarray(first), columns=12),
                                              "one patch: rows of 12 angles (0-165, 180-345 deg), mirrored every other")
    return dg.Output(aug, metadata=readable(meta))
