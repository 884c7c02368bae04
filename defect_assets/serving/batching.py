"""Micro-batching: patches of concurrent requests are queued and scored in one model call.

A request puts its patches and the model it started with on a thread-safe queue and awaits a
future. One dedicated model thread takes what is queued (up to ``max_batch`` patches, all for
one model), runs the model and hands each request its rows back on the event loop. The event
loop never waits for the model and the model thread never waits for the event loop: while
the loop parses the next uploads, the thread is already scoring the queue. After an idle
batch is sent to the model when it is full or when its oldest request has waited
``max_wait_ms``: a lone request waits that long for company, and under load the oldest one has
usually waited that long during the previous model call, so nobody waits more.

Heavy routes (sliding windows over a photo) queue their chunks as *background* work: the model
thread takes one only when no other request waits, and scores it alone, so a photo with
thousands of windows delays a concurrent /v1/predict by one chunk at most.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from defect_assets.serving.models import ServedModel

log = logging.getLogger("defect_assets.serving")


@dataclass
class _Item:
    model: ServedModel
    patches: np.ndarray
    future: asyncio.Future
    queued: float  # perf_counter() when it was queued


class MicroBatcher:
    def __init__(self, max_batch: int = 16, max_wait_ms: float = 5.0):
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.model_calls = 0
        self.images = 0
        self.largest_batch = 0
        self.background_calls = 0
        self.model_seconds = 0.0
        self._cond = threading.Condition()
        self._fg: deque[_Item] = deque()  # /v1/predict and other light work, in arrival order
        self._bg: deque[_Item] = deque()  # chunks of heavy routes: scored only when no light work waits
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="defect-scorer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None
        with self._cond:  # whatever is still queued will not be scored
            left = list(self._fg) + list(self._bg)
            self._fg.clear()
            self._bg.clear()
        for item in left:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the service is shutting down"))

    async def score(self, model: ServedModel, patches: np.ndarray, background: bool = False) -> np.ndarray:
        """Class probabilities of ``patches`` (N, size, size[, C]) by ``model``, batched with others.
        ``background``: a chunk of a heavy route, scored alone and only when no other request waits,
        so a sliding window over a large photo never delays /v1/predict by more than one chunk."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the micro-batcher is not running")
        future = self._loop.create_future()
        with self._cond:
            (self._bg if background else self._fg).append(_Item(model, patches, future, time.perf_counter()))
            self._cond.notify()
        return await future

    def queued(self) -> int:
        """Requests waiting for the model thread (light work only)."""
        with self._cond:
            return len(self._fg)

    def stats(self) -> dict:
        return {"model_calls": self.model_calls, "images": self.images, "largest_batch": self.largest_batch,
                "mean_batch": round(self.images / self.model_calls, 2) if self.model_calls else 0.0,
                "model_seconds": round(self.model_seconds, 3), "max_batch": self.max_batch,
                "max_wait_ms": self.max_wait * 1000, "background_calls": self.background_calls}

    # --- the model thread ---

    def _take(self) -> tuple[list[_Item], bool] | None:
        """One batch and whether it is background work: the oldest light item, then more light items
        for the same model up to max_batch patches (waiting up to max_wait for company); with no light
        work queued, one background chunk alone. None when asked to stop (light work queued before the
        stop is still scored; background chunks are dropped)."""
        with self._cond:
            while not self._fg and not (self._bg and not self._stopping):
                if self._stopping:
                    return None
                self._cond.wait()
            if not self._fg:
                item = self._bg.popleft()
                return ([item] if not item.future.done() else []), True
            first = self._fg.popleft()
            batch, n = [first], len(first.patches)
            deadline = first.queued + self.max_wait
            while n < self.max_batch:
                same = next((it for it in self._fg if it.model is first.model), None)
                if same is not None:
                    if n + len(same.patches) > self.max_batch:
                        break  # full: the rest waits for the next batch
                    self._fg.remove(same)
                    batch.append(same)
                    n += len(same.patches)
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
            return [it for it in batch if not it.future.done()], False  # a cancelled request is not scored

    def _work(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            batch, background = taken
            if batch:
                self._score(batch, background)

    def _score(self, batch: list[_Item], background: bool = False) -> None:
        model = batch[0].model
        x = batch[0].patches if len(batch) == 1 else np.concatenate([it.patches for it in batch])
        t0 = time.perf_counter()
        try:
            proba = model.scorer.predict_proba(x)
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error, the thread goes on
            log.exception("model %s failed on a batch of %d patches", model.version, len(x))
            self._loop.call_soon_threadsafe(self._deliver, batch, None, e)
            return
        self.model_seconds += time.perf_counter() - t0
        self.model_calls += 1
        self.background_calls += background
        self.images += len(x)
        self.largest_batch = max(self.largest_batch, len(x))
        self._loop.call_soon_threadsafe(self._deliver, batch, proba, None)

    @staticmethod
    def _deliver(batch: list[_Item], proba: np.ndarray | None, error: Exception | None) -> None:
        lo = 0
        for it in batch:
            hi = lo + len(it.patches)
            if not it.future.done():
                if error is not None:
                    it.future.set_exception(error)
                else:
                    it.future.set_result(proba[lo:hi])
            lo = hi
