"""Metadata helpers: what a person wants to read in the Dagster UI (numbers, tables, pictures).

Every metadata dict an asset or check hands to Dagster goes through ``readable``, and every table
through ``md_table``: floats are shown to ``SIGNIFICANT`` significant digits (0.7743, not
0.7742663656884876). Only what the UI shows is rounded; stored values and reports keep full precision.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from defect_assets.ml.images import encode_png

SIGNIFICANT = 4
"""Significant digits of a float shown in the Dagster UI: a test split of a few hundred images does
not support more (an accuracy moves by about +-0.025 by chance)."""


def significant(value: float, digits: int = SIGNIFICANT) -> float:
    """``value`` rounded to ``digits`` significant digits (nan and infinities unchanged)."""
    value = float(value)
    if not math.isfinite(value) or value == 0.0:
        return value
    return float(f"{value:.{digits}g}")


def _shown(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_, int, np.integer)):  # counts stay exact (bool is an int)
        return value
    if isinstance(value, (float, np.floating)):
        return significant(value)
    if isinstance(value, dg.FloatMetadataValue):
        return dg.MetadataValue.float(significant(value.value)) if value.value is not None else value
    if isinstance(value, dg.MetadataValue):  # a table, a path, markdown ...: shown as made (and a tuple)
        return value
    if isinstance(value, Mapping):  # Dagster shows a dict as JSON
        return {k: _shown(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shown(v) for v in value]
    return value


def readable(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata of an Output, MaterializeResult, AssetCheckResult or Failure as a person reads
    it: floats (plain, NumPy, ``MetadataValue.float``, inside dicts and lists) to ``SIGNIFICANT``
    significant digits; counts, text and other metadata values unchanged."""
    return {k: _shown(v) for k, v in metadata.items()}


def readable_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose floats (float columns, and floats inside object columns) are rounded
    to ``SIGNIFICANT`` significant digits."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(significant)
        elif out[col].dtype == object:
            out[col] = out[col].map(lambda v: significant(v) if isinstance(v, (float, np.floating)) else v)
    return out


def md_table(df: pd.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    """A markdown table of the first ``max_rows`` rows, floats to ``SIGNIFICANT`` significant digits."""
    shown = readable_frame(df.head(max_rows))
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
