"""Train / validation / test assignment by a stable hash of the SOURCE image's content.

The split of an image depends only on its sha256 (and the salt), never on which batch it came
in or what else exists, so adding batches never moves an old image, and every patch of one
image lands in the same split."""

from __future__ import annotations

import hashlib

import pandas as pd

SPLITS = ("train", "validation", "test")
DEFAULT_SALT = "defect-assets/split/v1"


def split_fraction(image_sha256: str, salt: str = DEFAULT_SALT) -> float:
    """A number in [0, 1) that is a pure function of the image content and the salt."""
    digest = hashlib.sha256(f"{salt}:{image_sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(image_sha256: str, train: float = 0.70, validation: float = 0.15,
                 salt: str = DEFAULT_SALT) -> str:
    if not (0 < train < 1 and 0 <= validation < 1 and train + validation <= 1):
        raise ValueError(f"bad split fractions train={train}, validation={validation}")
    u = split_fraction(image_sha256, salt)
    if u < train:
        return "train"
    if u < train + validation:
        return "validation"
    return "test"


def find_leaks(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Source images that have patches in more than one split, across all given patch tables
    (columns image_id, split). Empty when nothing leaks."""
    frames = [t[["image_id", "split"]] for t in tables if len(t)]
    if not frames:
        return pd.DataFrame(columns=["image_id", "splits"])
    both = pd.concat(frames, ignore_index=True).drop_duplicates()
    n = both.groupby("image_id")["split"].nunique()
    leaked = n[n > 1].index
    out = both[both["image_id"].isin(leaked)].groupby("image_id")["split"].apply(lambda s: ",".join(sorted(s)))
    return out.rename("splits").reset_index()


def find_group_leaks(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Groups (parts, modules) that have patches in more than one split: columns group, splits."""
    frames = [t[["group", "split"]] for t in tables if len(t) and "group" in t.columns]
    both = pd.concat(frames, ignore_index=True).dropna().drop_duplicates() if frames else pd.DataFrame()
    if both.empty:
        return pd.DataFrame(columns=["group", "splits"])
    n = both.groupby("group")["split"].nunique()
    leaked = both[both["group"].isin(n[n > 1].index)]
    return leaked.groupby("group")["split"].apply(lambda s: ",".join(sorted(s))).rename("splits").reset_index()
