"""Micro-batching: patches of concurrent requests are queued and scored in one model call.

A request puts its patches and the model it started with on a thread-safe queue and awaits a
future. One dedicated model thread takes what is queued (up to ``max_batch`` patches, all for
one model), runs the model and hands each request its rows back on the event loop. The event
loop never waits for the model and the model thread never waits for the event loop: while
the loop parses the next uploads, the thread is already scoring the queue. After an idle
batch is sent to the model when it is full or when its oldest request has waited
``max_wait_ms``: a lone request waits that long for company, and under load the oldest one has
usually waited that long during the previous model call, so nobody waits more.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from defect_assets.serving.models import ServedModel

log = logging.getLogger("defect_assets.serving")

_STOP = object()


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
        self.model_seconds = 0.0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._carry: list[_Item] = []  # taken from the queue, for the next batch (another model)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="defect-scorer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None
        while True:  # whatever is still queued will not be scored
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Item) and not item.future.done():
                item.future.set_exception(RuntimeError("the service is shutting down"))

    async def score(self, model: ServedModel, patches: np.ndarray) -> np.ndarray:
        """Class probabilities of ``patches`` (N, size, size[, C]) by ``model``, batched with others."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the micro-batcher is not running")
        future = self._loop.create_future()
        self._queue.put(_Item(model, patches, future, time.perf_counter()))
        return await future

    def stats(self) -> dict:
        return {"model_calls": self.model_calls, "images": self.images, "largest_batch": self.largest_batch,
                "mean_batch": round(self.images / self.model_calls, 2) if self.model_calls else 0.0,
                "model_seconds": round(self.model_seconds, 3), "max_batch": self.max_batch,
                "max_wait_ms": self.max_wait * 1000}

    # --- the model thread ---

    def _next(self, timeout: float | None):
        if self._carry:
            return self._carry.pop(0)
        return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()

    def _take(self) -> list[_Item] | None:
        """One batch: the oldest item, then more for the same model up to max_batch patches.
        None when asked to stop."""
        first = self._next(None)
        if first is _STOP:
            return None
        batch, n, later = [first], len(first.patches), []
        deadline = first.queued + self.max_wait
        while n < self.max_batch:
            try:
                item = self._next(deadline - time.perf_counter())
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)  # stop after this batch
                break
            if item.model is first.model and n + len(item.patches) <= self.max_batch:
                batch.append(item)
                n += len(item.patches)
            else:
                later.append(item)
                if item.model is first.model:
                    break  # full: the rest waits for the next batch
        self._carry = later + self._carry
        return [it for it in batch if not it.future.done()]  # a cancelled request is not scored

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                self._score(batch)

    def _score(self, batch: list[_Item]) -> None:
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
