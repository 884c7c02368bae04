"""Thin Dagster definitions: each stage folder holds its assets and checks; shared resources,
partitions and the IO manager live beside them."""
