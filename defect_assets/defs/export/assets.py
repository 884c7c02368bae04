"""The champion's export bundles (``exported_model``, in its own group: the main job does not build
it; ``dagster asset materialize --select exported_model`` or the ``export_job`` does) and the
blocking check that each bundle scores the champion's golden full-size images as the one scorer.
The logic is in ``pipeline/export.py`` and ``ml/export.py``."""

import dagster as dg

from defect_assets.defs.metadata import readable
from defect_assets.defs.resources import StorageResource
from defect_assets.pipeline.champion import Champion
from defect_assets.pipeline.export import EXPORT_TOLERANCE, ExportedBundles, bundle_parity, export_champion
from defect_assets.storage.formats import ArrayTable
from defect_assets.storage.registry import ModelRegistry

EXPORT_PARITY_CHECK = "exported_model_parity_check"


@dg.asset(group_name="export", kinds={"onnx", "openvino"})
def exported_model(context: dg.AssetExecutionContext, champion_model: Champion,
                   artifact_store: StorageResource) -> dg.Output[ExportedBundles]:
    """The champion as ONNX and OpenVINO bundles (zips in the artifact store under
    ``exports/<version>/``): graph, model.json (threshold, preprocessing, lineage, sha256 of each
    file), a standalone predict.py, README and licence notes."""
    store = artifact_store.open()
    done = export_champion(champion_model, ModelRegistry(store), store)
    value = ExportedBundles(champion_model.model_version, champion_model.threshold, done)
    return dg.Output(value, metadata=readable({
        "model_version": champion_model.model_version,
        **{f"{fmt}_zip": dg.MetadataValue.path(info["key"]) for fmt, info in done.items()},
        **{f"{fmt}_bundle_bytes": info["bundle_bytes"] for fmt, info in done.items()}}))


@dg.asset_check(asset=exported_model, name=EXPORT_PARITY_CHECK, blocking=True,
                additional_ins={"champion_model": dg.AssetIn("champion_model"),
                                "labeled_patches": dg.AssetIn("labeled_patches")},
                description=f"Each bundle (ONNX, OpenVINO), loaded by its own predict.py, scores the champion's golden "
                            f"full-size images within {EXPORT_TOLERANCE:g} of the one scorer, with the same decisions "
                            "at the champion's threshold.")
def exported_model_parity_check(exported_model: ExportedBundles, champion_model: Champion,
                                labeled_patches: dict[str, ArrayTable],
                                artifact_store: StorageResource) -> dg.AssetCheckResult:
    store = artifact_store.open()
    bundles = {fmt: store.read_bytes(info["key"]) for fmt, info in exported_model.bundles.items()}
    result = bundle_parity(champion_model, ModelRegistry(store), labeled_patches, store, bundles)
    return dg.AssetCheckResult(passed=result.passed, severity=dg.AssetCheckSeverity.ERROR,
                               description=result.description,
                               metadata=readable({**result.metadata, "model_version": champion_model.model_version}))


export_job = dg.define_asset_job("export_job", selection=dg.AssetSelection.assets("exported_model"),
                                 description="The champion exported as ONNX and OpenVINO bundles, parity-checked.")
