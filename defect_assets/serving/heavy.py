"""Heavy routes: anything that scores many model-sized windows of one photo (/v1/inspect and the
classify page, the annotation view's suggestions, the labeling heatmap). Each is bounded four ways
so that none can take the service down or starve /v1/predict:

- a work budget: windows x the model's multiply-adds per window (``Scorer.cost``) must fit
  ``max_work_gmac``, checked before anything is scored (422 naming the stride that fits);
- bounded memory: windows are cut and scored in fixed chunks (a few windows, sized by the
  model's cost), queued as background work of the micro-batcher; only the (windows x classes)
  probabilities are kept, never the windows themselves;
- a deadline (``heavy_deadline_seconds``, 503) and cancellation when the client goes away,
  both checked between chunks;
- their own concurrency limit (``max_heavy_requests``): one more is answered 429 with
  ``Retry-After`` at once, never queued behind the others.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time

import numpy as np

from defect_assets.serving import inspection
from defect_assets.serving.errors import ApiError

CHUNK_MACS = 20e9  # multiply-adds per background chunk: about a third of a second on 2 cores
RETRY_AFTER_SECONDS = 5


class HeavyGate:
    """A non-blocking semaphore: ``slot()`` holds one of ``limit`` places or answers 429 at once.
    Thread-safe, so a test (or a benchmark) can hold a place from outside the event loop."""

    def __init__(self, limit: int):
        self.limit = limit
        self._sem = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.active = 0
        self.refused = 0

    def try_acquire(self) -> bool:
        if not self._sem.acquire(blocking=False):
            with self._lock:
                self.refused += 1
            return False
        with self._lock:
            self.active += 1
        return True

    def release(self) -> None:
        with self._lock:
            self.active -= 1
        self._sem.release()

    @contextlib.contextmanager
    def slot(self):
        if not self.try_acquire():
            raise ApiError(429, "busy", f"{self.limit} heavy request(s) (sliding windows over a photo) are being "
                                        f"scored; retry in {RETRY_AFTER_SECONDS} s",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        try:
            yield
        finally:
            self.release()


def chunk_windows(cost: int, max_batch: int) -> int:
    """Windows per background chunk: at most ``max_batch`` and about ``CHUNK_MACS`` of work."""
    return int(max(1, min(max_batch, CHUNK_MACS // max(cost, 1))))


def check_budget(grid: inspection.WindowGrid, cost: int, budget_gmac: float, step: int) -> None:
    """422 when ``grid.count`` windows of ``cost`` multiply-adds each exceed the budget, naming the
    smallest stride that fits."""
    work = grid.count * cost
    budget = budget_gmac * 1e9
    if work <= budget:
        return
    allowed = max(1, int(budget // max(cost, 1)))
    need = max(step + 1, math.ceil(math.sqrt(max(grid.width - grid.size, 1) * max(grid.height - grid.size, 1)
                                             / allowed)))
    while inspection.window_grid(grid.width, grid.height, grid.size, need).count > allowed and need < 100_000:
        need += 1  # the border windows: the estimate above is a lower bound
    raise ApiError(422, "over_work_budget",
                   f"{grid.width}x{grid.height} at stride {step} gives {grid.count:,} windows x {cost / 1e9:.3g} GMAC "
                   f"(the model's cost per window) = {work / 1e9:,.0f} GMAC, over the budget of {budget_gmac:,.0f} "
                   f"GMAC per request; use stride >= {need}")


def fitting_stride(width: int, height: int, size: int, cost: int, budget_gmac: float, max_windows: int,
                   stride: int) -> int:
    """The smallest stride >= ``stride`` whose windows fit both the window cap and the budget
    (for routes that choose their own stride, such as the labeling heatmap)."""
    allowed = max(1, min(max_windows, int(budget_gmac * 1e9 // max(cost, 1))))
    while inspection.window_grid(width, height, size, stride).count > allowed:
        stride = max(stride + 1, math.ceil(stride * 1.25))
    return stride


async def score_windows(state, model, pixels: np.ndarray, grid: inspection.WindowGrid, request=None) -> np.ndarray:
    """(windows, classes) probabilities, chunk by chunk as background work; stops with 503 past
    the deadline and with 499 when ``request``'s client has gone (nothing more is scored)."""
    deadline = time.monotonic() + state.settings.heavy_deadline_seconds
    chunk = chunk_windows(model.scorer.cost, state.settings.max_batch)
    out = np.empty((grid.count, len(model.classes)), np.float32)
    for lo in range(0, grid.count, chunk):
        if request is not None and await request.is_disconnected():
            raise ApiError(499, "client_closed_request", "the client went away; scoring stopped")
        if lo and time.monotonic() > deadline:
            raise ApiError(503, "deadline", f"scoring {grid.count:,} windows took over "
                                            f"{state.settings.heavy_deadline_seconds:g} s; stopped after {lo:,} "
                                            "(use a larger stride)", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        hi = min(lo + chunk, grid.count)
        windows = inspection.cut_windows(pixels, grid, np.arange(lo, hi))
        out[lo:hi] = await state.score(model, windows, background=True)
    return out
