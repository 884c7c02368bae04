"""The one way the service slides the model over a photo: /v1/inspect (and the classify page),
the annotation view's suggestions and the labeling heatmap all call ``slide_windows``.

Windows are cut at the model's patch size (``Scorer.patch_size``: the size training cut its
patches at) and the scorer shrinks each to its input size itself, exactly as training did; so
the same photo at the same stride gives the same numbers on every route. The default stride is
a quarter window. The caller holds a heavy slot (``serving.heavy``)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import numpy as np

from defect_assets.ml.labels import is_defect_label
from defect_assets.serving import heavy, inspection
from defect_assets.serving.errors import ApiError

HEATMAP_MAX_PIXELS = 4_000_000  # larger photos get a coarser heatmap (1 heatmap pixel per scale^2 photo pixels)


@dataclass(frozen=True)
class SlidWindows:
    grid: inspection.WindowGrid
    proba: np.ndarray
    """(windows, classes) probabilities, row-major over the grid."""
    score: np.ndarray
    """The defect probability of every window."""
    stride: int
    pixels: np.ndarray | None = None
    """The photo the windows were cut from (for a model with its own anomaly map)."""
    scorer: object | None = None

    @property
    def size(self) -> int:
        return self.grid.size


def window_size(model) -> int:
    """Windows as the model's patches were cut (it shrinks them to its input if needed)."""
    return model.scorer.patch_size


def default_stride(model) -> int:
    return max(1, window_size(model) // 4)


async def slide_windows(state, model, pixels: np.ndarray, stride: int | None = None, request=None,
                        fit: bool = False) -> SlidWindows:
    """The model's class probabilities for every window of ``pixels`` at ``stride`` (default: a
    quarter window). Over the window cap or the work budget: 422 naming the stride that fits, or
    with ``fit`` the smallest larger stride that fits (for routes that choose their own stride).
    Chunked, with a deadline and cancellation (``serving.heavy``)."""
    h, w = pixels.shape[:2]
    size, settings = window_size(model), state.settings
    step = stride or default_stride(model)
    if fit:
        step = heavy.fitting_stride(w, h, size, model.scorer.cost, settings.max_work_gmac, settings.max_windows, step)
    grid = inspection.window_grid(w, h, size, step)
    if grid.count > settings.max_windows:
        need = math.ceil(math.sqrt(w * h / settings.max_windows))
        raise ApiError(422, "too_many_windows", f"{w}x{h} at stride {step} gives {grid.count:,} windows, over the "
                                                f"cap of {settings.max_windows:,}; use stride >= {need}")
    heavy.check_budget(grid, model.scorer.cost, settings.max_work_gmac, step)
    proba = await heavy.score_windows(state, model, pixels, grid, request)
    return SlidWindows(grid, proba, model.defect_score(proba), step, pixels, model.scorer)


def heatmap_scale(width: int, height: int) -> int:
    return max(1, math.ceil(math.sqrt(width * height / HEATMAP_MAX_PIXELS)))


async def heatmap(slid: SlidWindows) -> tuple[np.ndarray, int]:
    """(the gray heatmap, uint8 with 255 = probability 1, of the photo's size / scale; scale). A
    model with an anomaly map of its own (``photo_map``: the anomaly family) draws that map of the
    whole photo instead of the windows' scores."""
    scale = heatmap_scale(slid.grid.width, slid.grid.height)
    photo_map = getattr(slid.scorer, "photo_map", None)
    if photo_map is not None and slid.pixels is not None:
        def draw() -> np.ndarray:
            m = photo_map(slid.pixels)[::scale, ::scale]
            return np.clip(np.rint(m * 255), 0, 255).astype(np.uint8)

        return await asyncio.to_thread(draw), scale
    return await asyncio.to_thread(inspection.heatmap, slid.score, slid.grid, scale), scale


def locate_defects(model, slid: SlidWindows, threshold: float, min_distance: float) -> list[dict]:
    """Defect centers above ``threshold`` (``inspection.locate``), each with the defect class its
    window scored highest."""
    proba = slid.proba
    found = inspection.locate(slid.score, slid.grid, threshold, min_distance)
    kinds = [i for i, c in enumerate(model.classes) if is_defect_label(c)] or list(range(1, len(model.classes)))
    for d in found:
        window = d.pop("window")
        d["kind"] = model.classes[1] if model.binary else model.classes[max(kinds, key=lambda i: proba[window, i])]
    return found


def photo_decision(model, found: list[dict]) -> tuple[str, bool]:
    """(decision, is_defect) of a whole photo from its located defects: the strongest one's class,
    else the model's non-defect class. What /v1/inspect answers and logs, and what the classify page
    shows as a large photo's decision (the photo shrunk whole into the model's input is another
    quantity: a small dent vanishes in it)."""
    if found:
        return str(found[0]["kind"]), True
    if model.binary:
        return model.classes[0], False
    return next((c for c in model.classes if not is_defect_label(c)), model.classes[0]), False


def threshold_of(model, asked: float | None) -> float:
    """The threshold asked for, else the production threshold, else 0.5."""
    return asked if asked is not None else (model.threshold if model.threshold is not None else 0.5)
