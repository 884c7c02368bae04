"""The prediction log: one record per image the scoring service scored, kept in the artifact
store as immutable segment files, and read back only from segments that are provably whole.

Writing: ``PredictionLog.add`` appends records to an in-memory buffer (a lock and a list
append: requests never wait for storage). A background thread flushes the buffer every
``flush_seconds`` (1 s by default) as one new segment per UTC day touched:
``prediction_log/day=YYYY-MM-DD/<UTC time>-<host>-<pid>-<seq>.jsonl``. A segment is written
through ``ObjectStore.open_write``, so it appears whole or not at all (a temporary name then a
rename on a local folder, one committed upload on Azure Blob); an object store has no append,
so a segment, once written, is never touched again. A process that dies loses only what it had
not flushed yet (at most the last ``flush_seconds`` plus the flush in progress), never a record
in a segment already written. A flush that fails (the store is down) keeps its records for the
next one.

Reading: a segment is data only when its last line is a trailer holding its record count and
the sha256 of the lines before it. A segment cut short (a copy made by hand, a store without
atomic writes) fails that test and is reported, never read as data; in-progress temporary files
are not objects at all (``LocalObjectStore.list`` skips them).

Record fields (``RECORD_FIELDS``): ``record_id``, ``time`` (UTC ISO, microseconds),
``request_id``, ``route`` (``predict`` or ``inspect``), ``model_version``, ``sha256`` (of the
image bytes), ``scores`` (class probabilities; for inspect the largest window score),
``decision``, ``is_defect``, ``defect_score``, ``latency_ms`` (the request's time in the
service, upload included), ``warmup`` (true on the records of the first request answered after a
model load: it pays what warming did not cover, so monitoring keeps it out of the latency
percentiles and reports it apart; records written before the field existed read as false).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import pandas as pd

from defect_assets.storage.base import ObjectStore

log = logging.getLogger("defect_assets.prediction_log")

PREFIX = "prediction_log"
FORMAT = "defect-assets-prediction-log/1"
RECORD_FIELDS = ("record_id", "time", "request_id", "route", "model_version", "sha256", "scores", "decision",
                 "is_defect", "defect_score", "latency_ms", "warmup")
DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_BUFFER = 200_000
"""Records kept while the store refuses writes; beyond it the oldest are dropped (and counted)."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_record(*, request_id: str, route: str, model_version: str, sha256: str, scores: dict[str, float],
               decision: str, is_defect: bool, defect_score: float, latency_ms: float,
               at: dt.datetime | None = None, warmup: bool = False) -> dict:
    """One record, with every field of ``RECORD_FIELDS``."""
    return {"record_id": uuid.uuid4().hex, "time": (at or utc_now()).isoformat(timespec="microseconds"),
            "request_id": request_id, "route": route, "model_version": model_version, "sha256": sha256,
            "scores": {str(k): float(v) for k, v in scores.items()}, "decision": str(decision),
            "is_defect": bool(is_defect), "defect_score": float(defect_score), "latency_ms": float(latency_ms),
            "warmup": bool(warmup)}


def day_prefix(day: str, prefix: str = PREFIX) -> str:
    if not DAY_RE.match(day):
        raise ValueError(f"a day is YYYY-MM-DD, not {day!r}")
    return f"{prefix}/day={day}/"


def encode_segment(records: list[dict]) -> bytes:
    """JSON lines, then the trailer that makes the segment checkable."""
    body = b"".join(json.dumps(r, sort_keys=True, separators=(",", ":")).encode() + b"\n" for r in records)
    trailer = {"format": FORMAT, "records": len(records), "sha256": hashlib.sha256(body).hexdigest()}
    return body + json.dumps(trailer, sort_keys=True).encode() + b"\n"


class SegmentError(ValueError):
    """A segment that is not whole (cut short, altered, or not a segment at all)."""


def decode_segment(data: bytes) -> list[dict]:
    """The records of a whole segment; SegmentError for anything else."""
    if not data.endswith(b"\n"):
        raise SegmentError("does not end with a complete line")
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1
    body, last = data[:cut], data[cut:]
    try:
        trailer = json.loads(last)
    except ValueError:
        raise SegmentError("no trailer (cut short?)") from None
    if not isinstance(trailer, dict) or trailer.get("format") != FORMAT:
        raise SegmentError("no trailer (cut short?)")
    if hashlib.sha256(body).hexdigest() != trailer.get("sha256"):
        raise SegmentError("checksum does not match its lines")
    records = [json.loads(line) for line in body.splitlines()]
    if len(records) != trailer.get("records"):
        raise SegmentError(f"{len(records)} lines, trailer says {trailer.get('records')}")
    return records


@dataclass
class LogStats:
    written: int = 0
    segments: int = 0
    failed_flushes: int = 0
    dropped: int = 0
    last_error: str | None = None


class PredictionLog:
    """The buffered writer (one per service process)."""

    def __init__(self, store: ObjectStore, flush_seconds: float = 1.0, prefix: str = PREFIX,
                 max_buffer: int = MAX_BUFFER):
        if flush_seconds <= 0:
            raise ValueError("flush_seconds must be > 0")
        self.store, self.flush_seconds, self.prefix, self.max_buffer = store, flush_seconds, prefix, max_buffer
        self.stats = LogStats()
        self._buffer: list[dict] = []
        self._lock = threading.Lock()  # guards the buffer: held for a list append or swap only
        self._flushing = threading.Lock()  # one flush at a time (the thread, close())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._in_flight = 0  # records taken by a flush and not written yet
        self._origin = f"{re.sub(r'[^A-Za-z0-9.-]', '-', socket.gethostname())[:40]}-{os.getpid()}"

    def add(self, records: list[dict]) -> None:
        with self._lock:
            self._buffer.extend(records)

    @property
    def pending(self) -> int:
        """Records not in a written segment yet (buffered, or in a flush under way)."""
        with self._lock:
            return len(self._buffer) + self._in_flight

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the thread and flush what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the flusher must outlive any one bad flush
                log.exception("prediction log flush failed")

    def flush(self) -> int:
        """Write everything buffered now; returns the records written."""
        with self._flushing:
            with self._lock:
                batch, self._buffer = self._buffer, []
                self._in_flight = len(batch)
            if not batch:
                return 0
            try:
                return self._write_days(batch)
            finally:
                with self._lock:
                    self._in_flight = 0

    def _write_days(self, batch: list[dict]) -> int:
        by_day: dict[str, list[dict]] = {}
        for r in batch:
            by_day.setdefault(r["time"][:10], []).append(r)
        written = 0
        for day, records in sorted(by_day.items()):
            try:
                self._write_segment(day, records)
            except Exception as e:  # noqa: BLE001 - keep the records for the next flush
                self._keep(records, e)
                continue
            written += len(records)
        return written

    def _write_segment(self, day: str, records: list[dict]) -> None:
        self._seq += 1
        stamp = utc_now().strftime("%Y%m%dT%H%M%S%fZ")
        key = f"{day_prefix(day, self.prefix)}{stamp}-{self._origin}-{self._seq:06d}.jsonl"
        with self.store.open_write(key) as f:
            f.write(encode_segment(records))
        self.stats.written += len(records)
        self.stats.segments += 1

    def _keep(self, records: list[dict], error: Exception) -> None:
        self.stats.failed_flushes += 1
        self.stats.last_error = f"{type(error).__name__}: {error}"[:300]
        log.error("prediction log: could not write %d record(s) (%s); retrying", len(records), self.stats.last_error)
        with self._lock:
            self._buffer[:0] = records
            over = len(self._buffer) - self.max_buffer
            if over > 0:
                del self._buffer[:over]
                self.stats.dropped += over


    def status(self) -> dict:
        return {"written": self.stats.written, "segments": self.stats.segments, "pending": self.pending,
                "failed_flushes": self.stats.failed_flushes, "dropped": self.stats.dropped,
                "last_error": self.stats.last_error, "flush_seconds": self.flush_seconds}


@dataclass
class LogDay:
    """What was read for one day: the records, and the segments that were not whole."""

    records: pd.DataFrame
    segments: int
    rejected: list[str] = field(default_factory=list)


LOG_COLUMNS = [c for c in RECORD_FIELDS if c != "scores"] + ["scores_json", "segment"]


def logged_days(store: ObjectStore, prefix: str = PREFIX) -> list[str]:
    """Days (YYYY-MM-DD) that have at least one segment."""
    days = {head[4:] for head in store.walk_prefixes(prefix + "/") if head.startswith("day=")}
    return sorted(d for d in days if DAY_RE.match(d))


def read_day(store: ObjectStore, day: str, prefix: str = PREFIX) -> LogDay:
    """Every record of ``day`` from its whole segments, oldest first; segments that are not
    whole are named in ``rejected`` and contribute nothing."""
    rows, rejected, segments = [], [], 0
    for obj in store.list(day_prefix(day, prefix)):
        if not obj.key.endswith(".jsonl"):
            continue
        try:
            records = decode_segment(store.read_bytes(obj.key))
        except (SegmentError, ValueError) as e:
            rejected.append(f"{obj.key}: {e}")
            log.warning("prediction log: skipping %s (%s)", obj.key, e)
            continue
        segments += 1
        for r in records:
            rows.append({**{k: r.get(k) for k in RECORD_FIELDS if k != "scores"}, "warmup": bool(r.get("warmup")),
                         "scores_json": json.dumps(r.get("scores", {}), sort_keys=True), "segment": obj.key})
    df = pd.DataFrame(rows, columns=LOG_COLUMNS)
    if len(df):
        df = df.sort_values("time", kind="stable").reset_index(drop=True)
    return LogDay(df, segments, rejected)


def wait_for_records(store: ObjectStore, day: str, count: int, timeout: float = 10.0,
                     prefix: str = PREFIX) -> int:
    """Poll until ``day`` has at least ``count`` readable records (a flush is at most a second
    away); returns how many there are."""
    deadline = time.monotonic() + timeout
    while True:
        n = len(read_day(store, day, prefix).records)
        if n >= count or time.monotonic() > deadline:
            return n
        time.sleep(0.1)

