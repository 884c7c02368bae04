"""The prediction log: whole segments only, a failed flush kept for the next one, a process
killed mid-flush leaving every earlier record readable (and the partial file never read as
data), and the real service writing exactly one record per scored image under a burst of
concurrent requests."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from defect_assets.serving.client import DefectClient, ServiceError, multipart
from defect_assets.serving.settings import ServiceSettings
from defect_assets.storage import LocalObjectStore
from defect_assets.storage.prediction_log import (
    RECORD_FIELDS,
    PredictionLog,
    decode_segment,
    logged_days,
    new_record,
    read_day,
)
from defect_assets_tests.conftest import png_bytes, smooth_image
from defect_assets_tests.helpers.serving import ServiceThread, model_registry, raw_request
from defect_assets_tests.waits import READY_SECONDS

DAY1 = dt.datetime(2026, 11, 10, 23, 59, 59, 500000, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 11, 11, 0, 0, 0, 250000, tzinfo=dt.UTC)


def record(i: int, at: dt.datetime, version: str = "m-1") -> dict:
    return new_record(request_id=f"req-{i // 2}", route="predict", model_version=version, sha256=f"{i:064x}",
                      scores={"ok": 1 - i / 100, "defect": i / 100}, decision="defect" if i >= 50 else "ok",
                      is_defect=i >= 50, defect_score=i / 100, latency_ms=10 + i, at=at)


def test_records_land_in_one_segment_per_day_and_read_back_whole(tmp_path):
    store = LocalObjectStore(tmp_path)
    log = PredictionLog(store, flush_seconds=60)
    first = [record(i, DAY1) for i in range(3)]
    second = [record(i, DAY2) for i in range(3, 7)]
    log.add(first + second)  # a flush that spans midnight (UTC) writes one segment per day
    assert log.pending == 7 and log.flush() == 7 and log.pending == 0
    assert logged_days(store) == ["2026-11-10", "2026-11-11"]
    day1, day2 = read_day(store, "2026-11-10"), read_day(store, "2026-11-11")
    assert (day1.segments, day2.segments) == (1, 1) and day1.rejected == day2.rejected == []
    assert list(day1.records["record_id"]) == [r["record_id"] for r in first]
    assert list(day2.records["sha256"]) == [r["sha256"] for r in second]
    assert set(RECORD_FIELDS) - {"scores"} <= set(day1.records.columns)
    assert day2.records["defect_score"].tolist() == [0.03, 0.04, 0.05, 0.06]
    assert log.flush() == 0  # nothing left: no empty segment
    assert len(store.list("prediction_log/")) == 2


def test_a_segment_cut_short_or_altered_is_never_read_as_data(tmp_path):
    store = LocalObjectStore(tmp_path)
    log = PredictionLog(store)
    records = [record(i, DAY1) for i in range(5)]
    log.add(records)
    log.flush()
    [whole] = store.list("prediction_log/")
    data = store.read_bytes(whole.key)
    assert len(decode_segment(data)) == 5
    # what a store without atomic writes could leave: the first half of a segment
    store.write_bytes("prediction_log/day=2026-11-10/zz-cut.jsonl", data[: len(data) // 2])
    # a whole-looking segment whose lines were edited after the fact
    store.write_bytes("prediction_log/day=2026-11-10/zz-edited.jsonl", data.replace(b'"ok"', b'"OK"', 1))
    day = read_day(store, "2026-11-10")
    assert list(day.records["record_id"]) == [r["record_id"] for r in records]  # the 5 whole records only
    assert sorted(r.split(":")[0] for r in day.rejected) == ["prediction_log/day=2026-11-10/zz-cut.jsonl",
                                                            "prediction_log/day=2026-11-10/zz-edited.jsonl"]
    assert "checksum" in next(r for r in day.rejected if "edited" in r)


class FlakyStore(LocalObjectStore):
    """Refuses the first ``failures`` writes (a store that is briefly down)."""

    def __init__(self, root, failures: int):
        super().__init__(root)
        self.failures = failures

    @contextlib.contextmanager
    def open_write(self, key):
        if self.failures > 0:
            self.failures -= 1
            raise OSError("the store is down")
        with super().open_write(key) as f:
            yield f


def test_a_failed_flush_keeps_its_records_for_the_next_one(tmp_path):
    store = FlakyStore(tmp_path, failures=1)
    log = PredictionLog(store)
    log.add([record(i, DAY1) for i in range(4)])
    assert log.flush() == 0 and log.pending == 4 and log.stats.failed_flushes == 1
    log.add([record(9, DAY1)])
    assert log.flush() == 5 and log.pending == 0
    assert sorted(read_day(store, "2026-11-10").records["sha256"]) == sorted(f"{i:064x}" for i in (0, 1, 2, 3, 9))


CHILD = textwrap.dedent('''
    import contextlib, json, os, sys, time
    from defect_assets.storage.local import LocalObjectStore
    from defect_assets.storage.prediction_log import PredictionLog, new_record

    class StopsInThirdWrite(LocalObjectStore):
        """The third segment: half its bytes reach the disk, then the writer hangs (to be killed)."""
        writes = 0

        @contextlib.contextmanager
        def open_write(self, key):
            StopsInThirdWrite.writes += 1
            with super().open_write(key) as f:
                if StopsInThirdWrite.writes < 3:
                    yield f
                    return

                class Half:
                    def write(self, data):
                        f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
                        print("MID-FLUSH", flush=True)
                        time.sleep(600)
                yield Half()

    log = PredictionLog(StopsInThirdWrite(sys.argv[1]), flush_seconds=0.2)
    log.start()  # the background flusher, as in the service
    for round_ in range(3):
        batch = [new_record(request_id=f"r{round_}-{i}", route="predict", model_version="m-1", sha256=f"{i:064x}",
                            scores={"ok": 0.5, "defect": 0.5}, decision="ok", is_defect=False, defect_score=0.5,
                            latency_ms=5.0) for i in range(4)]
        log.add(batch)
        print("ADDED " + json.dumps([r["record_id"] for r in batch]), flush=True)
        while round_ < 2 and log.stats.segments < round_ + 1:
            time.sleep(0.01)
    time.sleep(600)
''')


@pytest.mark.slow
def test_a_process_killed_mid_flush_leaves_every_earlier_record_readable(tmp_path):
    root = tmp_path / "artifacts"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    added = []
    try:
        deadline = time.monotonic() + READY_SECONDS
        for line in proc.stdout:
            if line.startswith("ADDED "):
                added.append(json.loads(line[6:]))
            if line.startswith("MID-FLUSH"):
                os.kill(proc.pid, signal.SIGKILL)  # killed while its third segment is half on disk
                break
            assert time.monotonic() < deadline, "the child never reached its third flush"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and len(added) == 3
    store = LocalObjectStore(root)
    today = logged_days(store)
    assert len(today) == 1
    day = read_day(store, today[0])
    assert list(day.records["record_id"]) == added[0] + added[1]  # every record written before the kill
    assert day.rejected == [] and day.segments == 2
    folder = root / "prediction_log" / f"day={today[0]}"
    partial = [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the half-written third segment ...
    first_line = json.loads(partial[0].read_bytes().split(b"\n", 1)[0])
    assert first_line["record_id"] == added[2][0]  # ... holding the third round's records
    # even where a store had left those bytes under a segment's name, they are not data
    (folder / "zz-left-by-a-non-atomic-store.jsonl").write_bytes(partial[0].read_bytes())
    again = read_day(store, today[0])
    assert list(again.records["record_id"]) == added[0] + added[1] and len(again.rejected) == 1


@pytest.mark.slow
def test_a_burst_of_concurrent_requests_leaves_one_record_per_scored_image(tmp_path):
    store, registry, versions = model_registry(tmp_path)
    registry.promote(versions["a"], threshold=0.4)
    settings = ServiceSettings(store=store, reload_seconds=0.1, prediction_log_flush_seconds=0.2)
    requests = [[png_bytes(smooth_image(32 + 2 * (k % 5), 32, seed=100 * r + k)) for k in range(1 + r % 3)]
                for r in range(60)]
    requests[7] = [requests[3][0]]  # the same image twice, in two requests: two scorings, two records
    with ServiceThread(settings) as svc:
        svc.wait_ready(versions["a"])
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda imgs: DefectClient(svc.url).predict(imgs), requests))
        # rejected requests score nothing and log nothing
        body, ctype = multipart("files", [("x.png", b"not an image", "image/png")])
        assert raw_request(svc.port, "POST", "/v1/predict", body, {"Content-Type": ctype})[0] == 422
        with pytest.raises(ServiceError):
            DefectClient(svc.url).predict([b"%PDF-1.4"])
        sent = [im for imgs in requests for im in imgs]
        # flushed while serving (every 0.2 s), before any shutdown
        deadline = time.monotonic() + 20
        while sum(len(read_day(store, d).records) for d in logged_days(store)) < len(sent):
            assert time.monotonic() < deadline, "records were not flushed while the service ran"
            time.sleep(0.1)
        status = DefectClient(svc.url).model()["prediction_log"]
        assert (status["written"], status["pending"], status["failed_flushes"]) == (len(sent), 0, 0)
    logged = [read_day(store, d) for d in logged_days(store)]
    records = pd.concat([d.records for d in logged], ignore_index=True)
    assert all(not d.rejected for d in logged)
    assert len(records) == len(sent) == sum(len(r) for r in requests)
    assert collections.Counter(records["sha256"]) == collections.Counter(hashlib.sha256(im).hexdigest() for im in sent)
    assert records["record_id"].is_unique and records["request_id"].nunique() == len(requests)
    assert set(records["model_version"]) == {versions["a"]} and set(records["route"]) == {"predict"}
    assert (records.groupby("request_id")["latency_ms"].nunique() == 1).all() and (records["latency_ms"] > 0).all()
    # every record says what the client was told
    told = {(r["sha256"], round(r["defect_score"], 6), r["decision"]) for a in answers for r in a}
    assert {(s, round(d, 6), c) for s, d, c in zip(records["sha256"], records["defect_score"], records["decision"])} \
        == told


@pytest.mark.slow
def test_the_first_request_after_each_model_load_is_marked_warmup(tmp_path):
    """Monitoring keeps the warm-up out of its latency percentiles: the service marks the first
    request it answers on each loaded model (every record of it), and no other; a new threshold
    on the same model is not a new load."""
    store, registry, versions = model_registry(tmp_path)
    registry.promote(versions["a"], threshold=0.4)
    settings = ServiceSettings(store=store, reload_seconds=0.1, prediction_log_flush_seconds=0.2)
    images = [png_bytes(smooth_image(32, 32, seed=s)) for s in range(6)]
    with ServiceThread(settings) as svc:
        svc.wait_ready(versions["a"])
        client = DefectClient(svc.url)
        client.predict(images[:2])  # the first request on model a: two records, both warm-up
        client.predict(images[2:3])
        registry.promote(versions["a"], threshold=0.6)  # same model, new threshold: no new load
        deadline = time.monotonic() + READY_SECONDS
        while client.model()["threshold"] != 0.6:
            assert time.monotonic() < deadline, "the new threshold was not picked up"
            time.sleep(0.05)
        client.predict(images[3:4])
        registry.promote(versions["b"], threshold=0.5)
        svc.wait_ready(versions["b"])
        client.predict(images[4:5])  # the first on model b
        client.predict(images[5:6])
        deadline = time.monotonic() + 20
        while sum(len(read_day(store, d).records) for d in logged_days(store)) < 6:
            assert time.monotonic() < deadline, "records were not flushed while the service ran"
            time.sleep(0.1)
    records = pd.concat([read_day(store, d).records for d in logged_days(store)], ignore_index=True)
    records = records.sort_values("time", kind="stable")
    assert records["model_version"].tolist() == [versions["a"]] * 4 + [versions["b"]] * 2
    assert records["warmup"].tolist() == [True, True, False, False, True, False]
    assert records.loc[records["warmup"], "request_id"].nunique() == 2
