"""Metadata helpers: what a person wants to read in the Dagster UI (tables, pictures)."""

from __future__ import annotations

import base64

import dagster as dg
import numpy as np
import pandas as pd

from defect_assets.ml.images import encode_png


def md_table(df: pd.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    shown = df.head(max_rows)
    more = f"\n\n({len(df) - max_rows} more rows)" if len(df) > max_rows else ""
    return dg.MetadataValue.md(shown.to_markdown(index=False) + more if len(df) else "(none)")


def md_image(pixels: np.ndarray, title: str) -> dg.MetadataValue:
    """A PNG shown inline in the UI's metadata panel."""
    b64 = base64.b64encode(encode_png(pixels)).decode()
    return dg.MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,{b64})")


def md_png(png: bytes, title: str) -> dg.MetadataValue:
    b64 = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,{b64})")


def class_split_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Patches per class (rows) and split (columns), with totals."""
    if not len(table):
        return pd.DataFrame()
    pivot = pd.crosstab(table["label"], table["split"], margins=True, margins_name="total")
    cols = [c for c in ("train", "validation", "test", "total") if c in pivot.columns]
    return pivot[cols].reset_index()
