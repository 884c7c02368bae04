"""raw_images and image_labels: a landing-zone batch becomes content-addressed images with an
inventory, and every label source becomes one normalized table."""


import dagster as dg
import pandas as pd

from defect_assets.defs.metadata import md_table, readable
from defect_assets.defs.partitions import batch_partitions
from defect_assets.defs.resources import StorageResource
from defect_assets.ml.images import DEFAULT_MAX_PIXELS
from defect_assets.ml.labels import PAGE_SOURCE
from defect_assets.pipeline.ingest import ingest_batch
from defect_assets.pipeline.label_files import label_version, normalize_batch_labels
from defect_assets.storage.annotations import MarkLog
from defect_assets.storage.batches import read_manifest
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.labeling import LabelLog

RAW_IMAGES_READABLE = "every_file_readable"
LABEL_EVENTS_METADATA = "label_events"
"""image_labels metadata: which labeling-page events it was built from (``LabelLog.digests``)."""


class IngestConfig(dg.Config):
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Images with more pixels are refused (decompression-bomb guard)."""


@dg.asset(
    partitions_def=batch_partitions,
    group_name="ingest",
    kinds={"python", "parquet"},
    check_specs=[dg.AssetCheckSpec(RAW_IMAGES_READABLE, asset="raw_images",
                                   description="Every file of the batch is an accepted image or label file")],
)
def raw_images(context: dg.AssetExecutionContext, config: IngestConfig,
               landing_zone: StorageResource, artifact_store: StorageResource):
    """Every file of one landing-zone batch, checked (format allowlist, pixel cap, full decode,
    sha256 against the manifest) and copied content-addressed into the artifact store. The
    inventory lists images, label files and rejected files with the reason; a bad file never
    fails the batch, it is reported by the check instead."""
    batch = context.partition_key
    landing = landing_zone.open()
    manifest = read_manifest(landing, batch)
    inv = ingest_batch(landing, artifact_store.open(), batch, config.max_pixels,
                       progress=lambda i, n: context.log.info(f"raw_images[{batch}]: {i}/{n} files checked"))
    images, rejected = inv[inv["role"] == "image"], inv[inv["role"] == "rejected"]
    yield dg.Output(
        ArrayTable(inv, attrs={"batch": batch, "class_folders": manifest.class_folders,
                               "manifest_created": manifest.created}),
        metadata=readable({
            "images": len(images),
            "label_files": int((inv["role"] == "label_file").sum()),
            "rejected": len(rejected),
            "distinct_images": int(images["sha256"].nunique()),
            "bytes": int(images["bytes"].sum()) if len(images) else 0,
            "sizes": md_table(images.groupby(["width", "height", "mode"]).size().rename("images").reset_index()),
            "rejected_files": md_table(rejected[["path", "reason"]]),
            "preview": dg.MetadataValue.table(
                [dg.TableRecord({k: (str(v) if pd.notna(v) else "") for k, v in r.items()})
                 for r in inv[["path", "role", "sha256", "width", "height", "mode"]].head(10).to_dict("records")]),
        }),
    )
    yield dg.AssetCheckResult(
        check_name=RAW_IMAGES_READABLE, passed=len(rejected) == 0, severity=dg.AssetCheckSeverity.WARN,
        metadata=readable({"rejected": len(rejected), "files": md_table(rejected[["path", "reason"]])}),
        description=None if len(rejected) == 0 else f"{len(rejected)} file(s) excluded from batch {batch}",
    )


@dg.asset(partitions_def=batch_partitions, group_name="ingest", kinds={"python", "pandas"})
def image_labels(context: dg.AssetExecutionContext, raw_images: ArrayTable,
                 artifact_store: StorageResource) -> dg.Output[pd.DataFrame]:
    """Every label source of the batch (labels.csv, class sub-folders, points.csv defect
    centers, LabelImg Pascal VOC boxes, labels saved from the labeling page, points and boxes
    drawn in the annotation view) as one table:
    image, kind (image/point/box), label, coordinates, and where the label came from. A bad row
    fails the batch with file:row: reason for every bad row. New page labels make a new label
    version (``label_version``), which every model trained on it records."""
    batch = context.partition_key
    store = artifact_store.open()
    log = LabelLog(store)
    events = log.digests().get(batch, "")
    page = log.labels(batch)
    marks = MarkLog(store).marks(batch)
    labels, notes = normalize_batch_labels(raw_images.table, store, raw_images.attrs.get("class_folders"), page,
                                           marks)
    images = raw_images.table[raw_images.table["role"] == "image"]
    labeled = set(labels["image"])
    unlabeled = sorted(set(images["path"]) - labeled)
    for note in notes:
        context.log.warning(note)
    counts = labels.groupby(["kind", "label"]).size().rename("rows").reset_index()
    return dg.Output(labels, metadata=readable({
        "rows": len(labels),
        "labeled_images": len(labeled),
        "unlabeled_images": len(unlabeled),
        "label_version": label_version(labels),
        "page_labels": int(((labels["source"] == PAGE_SOURCE) & (labels["kind"] == "image")).sum()),
        "page_marks": int(((labels["source"] == PAGE_SOURCE) & (labels["kind"] != "image")).sum()),
        LABEL_EVENTS_METADATA: events,
        "counts": md_table(counts),
        "unlabeled": md_table(pd.DataFrame({"image": unlabeled})),
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in notes) or "(none)"),
    }))
