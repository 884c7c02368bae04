"""The IO manager that puts asset values into the artifact store in open formats:
DataFrames as Parquet, ArrayTables as Parquet + .npy, typed documents (dataclasses with
``to_dict``/``from_dict``, e.g. the champion) as JSON, each as an atomic version under
``<asset>/<partition>/``. A downstream asset that reads several partitions gets a dict
{partition: value}."""


import dagster as dg

from defect_assets.defs.resources import StorageResource
from defect_assets.storage.formats import current_version, read_value, write_value
from defect_assets.storage.layout import asset_value_prefix


def asset_prefix(asset_key: dg.AssetKey, partition: str | None) -> str:
    return asset_value_prefix(asset_key.path, partition)


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Asset values <-> the artifact store (no pickle: Parquet, .npy, JSON)."""

    store: StorageResource

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        store = self.store.open()
        prefix = asset_prefix(context.asset_key, context.partition_key if context.has_partition_key else None)
        write_value(store, prefix, obj)
        context.add_output_metadata({"stored_at": dg.MetadataValue.path(f"{store.url}/{prefix}")})

    def load_input(self, context: dg.InputContext):
        store = self.store.open()
        if not context.has_asset_partitions:
            # a document comes back as the type the downstream parameter is annotated with
            return read_value(store, asset_prefix(context.asset_key, None), context.dagster_type.typing_type)
        keys = context.asset_partition_keys
        if context.has_partition_key and keys == [context.partition_key]:
            return read_value(store, asset_prefix(context.asset_key, keys[0]))
        # A downstream asset that reads every batch: batches registered but not built yet are
        # left out (and named), so one new batch does not block retraining on the others.
        built = [pk for pk in keys if current_version(store, asset_prefix(context.asset_key, pk)) is not None]
        missing = sorted(set(keys) - set(built))
        if missing:
            context.log.warning(f"{context.asset_key.to_user_string()}: not built yet for {missing}; "
                                f"using {len(built)} batch(es)")
        if not built:
            raise FileNotFoundError(f"{context.asset_key.to_user_string()} is not materialized for any batch yet")
        return {pk: read_value(store, asset_prefix(context.asset_key, pk)) for pk in built}
