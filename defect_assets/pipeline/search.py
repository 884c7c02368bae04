"""A small hyperparameter search: the cartesian product of a few candidate values (learning
rate, dropout, batch size, C, l1_ratio...), every trial recorded, the best kept."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pandas as pd


def grid(base: dict, candidates: dict[str, list]) -> list[dict]:
    """Every combination of the non-empty candidate lists, on top of base (just [base] when
    every list is empty)."""
    keys = [k for k, v in candidates.items() if v]
    if not keys:
        return [dict(base)]
    return [{**base, **dict(zip(keys, combo))} for combo in itertools.product(*(candidates[k] for k in keys))]


def run_trials(settings: list[dict], train: Callable[[dict], tuple[object, dict]], metric: str = "roc_auc",
               log: Callable[[str], None] = print) -> tuple[object, dict, pd.DataFrame]:
    """train(settings) -> (model, validation metrics). Returns (best model, its settings, table of
    every trial). Ties keep the earlier trial (the first listed setting is the default)."""
    rows, best = [], None
    for i, s in enumerate(settings, start=1):
        model, metrics = train(s)
        rows.append({"trial": i, **s, **{f"val_{k}": v for k, v in metrics.items()}})
        if len(settings) > 1:
            log(f"trial {i}/{len(settings)} {s}: validation {metric} {metrics[metric]:.4f}")
        if best is None or metrics[metric] > best[2][metric]:
            best = (model, s, metrics)
    return best[0], best[1], pd.DataFrame(rows)
