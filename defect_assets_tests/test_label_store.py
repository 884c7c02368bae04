"""Labels as data: immutable label events in the artifact store. The same label twice is one
object, an undo retracts without deleting, re-labeling after an undo is a new event, writers
racing on the same new key leave exactly one object, and queues are published atomically."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from defect_assets.storage import LocalObjectStore
from defect_assets.storage.labeling import (
    EVENTS,
    LabelEvent,
    LabelLog,
    active_events,
    current_queue,
    publish_queue,
)
from defect_assets_tests.helpers.label_store import event, race_two_labels_on_one_item


def test_write_new_creates_once_and_never_overwrites(tmp_path):
    store = LocalObjectStore(tmp_path)
    assert store.write_new("x/k.json", b"first") is True
    assert store.write_new("x/k.json", b"second") is False
    assert store.read_bytes("x/k.json") == b"first"
    assert [o.key for o in store.list("x/")] == ["x/k.json"]  # no temporary file left behind


def test_racing_writers_of_one_new_key_leave_exactly_one_winner(tmp_path):
    store = LocalObjectStore(tmp_path)
    barrier = threading.Barrier(8)

    def write(i):
        barrier.wait()
        return store.write_new("race/k", f"writer {i}".encode())

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(write, range(8)))
    assert won.count(True) == 1
    assert store.read_bytes("race/k") == f"writer {won.index(True)}".encode()


def test_the_same_label_twice_is_one_stored_row_with_the_first_time(tmp_path):
    log = LabelLog(LocalObjectStore(tmp_path))
    first, created = log.append(event())
    again, created_again = log.append(event())
    assert (created, created_again) == (True, False)
    assert again.at == first.at and again.id == first.id
    assert len(log.keys()) == 1
    labels = log.labels()
    assert len(labels) == 1
    row = labels.iloc[0]
    assert (row["image"], row["label"], row["labeler"], row["model_version"], row["queue"], row["item"]) == \
           ("a.png", "defect", "ana", "m-1", "q-1", "i1")
    assert row["labeled_at"] == first.at


def test_undo_retracts_without_deleting_and_relabeling_after_it_is_a_new_event(tmp_path):
    log = LabelLog(LocalObjectStore(tmp_path))
    lab, _ = log.append(event(label="defect"))
    undo, _ = log.append(event(kind="undo", target=lab.id))
    assert log.labels().empty
    assert len(log.keys()) == 2  # both kept: append-only
    relabel, created = log.append(event(label="defect", after=undo.id))
    assert created and relabel.id != lab.id
    assert log.labels()["event_id"].tolist() == [relabel.id]
    assert [e.id for e in active_events(log.events())] == [relabel.id]


def test_two_labelers_writing_at_once_lose_and_duplicate_nothing(tmp_path):
    store = LocalObjectStore(tmp_path)
    logs = {"ana": LabelLog(store), "ben": LabelLog(store)}  # two service processes, say
    submissions = [(who, f"i{i}", f"img{i}.png", "defect" if i % 3 else "ok")
                   for i in range(30) for who in ("ana", "ben")]
    submissions += submissions[:20]  # retries of the same labels
    barrier = threading.Barrier(6)

    def submit(chunk):
        barrier.wait()
        for who, item, image, label in chunk:
            logs[who].append(event(labeler=who, item=item, image=image, label=label))

    chunks = [submissions[k::6] for k in range(6)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(submit, chunks))
    labels = LabelLog(store).labels()  # a third reader, cold cache
    assert len(labels) == 60
    assert not labels.duplicated(["labeler", "item"]).any()
    expected = {(w, i, lab) for w, i, _, lab in submissions}
    assert set(zip(labels["labeler"], labels["item"], labels["label"])) == expected


def test_two_different_labels_at_once_store_exactly_one(tmp_path):
    """"Undo first" is held by the write: both labels of one labeler for one item race for one key."""
    store = LocalObjectStore(tmp_path)
    results = race_two_labels_on_one_item(store, LocalObjectStore(tmp_path))
    assert sum(created for _, created in results) == 1
    assert len({stored.id for stored, _ in results}) == 1  # every loser is told what won
    labels = LabelLog(store).labels()
    assert len(labels) == 1 and labels["event_id"].iloc[0] == results[0][0].id
    assert len(LabelLog(store).keys()) == 1


def test_digests_change_exactly_when_a_batch_gets_an_event(tmp_path):
    store = LocalObjectStore(tmp_path)
    log = LabelLog(store)
    assert log.digests() == {}
    log.append(event())
    d1 = log.digests()
    log.append(event())  # the same label again: nothing new
    assert log.digests() == d1 and list(d1) == ["b1"]
    log.append(event(item="i2", image="b.png"))
    assert log.digests()["b1"] != d1["b1"]
    assert all(k.startswith(f"{EVENTS}/b1/") for k in log.keys())


def test_events_are_checked_when_made():
    with pytest.raises(ValueError, match="needs a label"):
        event(label="")
    with pytest.raises(ValueError, match="retracts"):
        event(kind="undo")
    with pytest.raises(ValueError, match="kind"):
        event(kind="delete")


def test_a_published_queue_becomes_current_and_keeps_the_old_one(tmp_path):
    store = LocalObjectStore(tmp_path)
    assert current_queue(store) is None
    items = pd.DataFrame({"item_id": ["i1", "i2"], "rank": [1, 2], "probabilities": [[0.4, 0.6], [0.5, 0.5]]})
    q1 = publish_queue(store, items, {"strategy": "entropy", "model_version": "m-1", "classes": ["ok", "defect"]})
    q2 = publish_queue(store, items.iloc[:1], {"strategy": "random", "model_version": "m-2",
                                               "classes": ["ok", "defect"]})
    now = current_queue(store)
    assert now.id == q2.id != q1.id and now.model_version == "m-2" and len(now.items) == 1
    assert now.item("i1")["probabilities"].tolist() == [0.4, 0.6] and now.item("i2") is None
    assert store.exists(f"labeling/queues/{q1.id}/queue.json")  # old queues stay for the record


def test_page_labels_join_the_batch_labels_with_disagreements_and_conflicts_noted(tmp_path):
    """normalize_batch_labels with the page's labels: one image-level row per image (the latest
    label when labelers disagree), a batch's own label file wins, and a label of an image that
    is gone (or was replaced) from the batch is dropped with a note instead of failing the batch."""
    from defect_assets.pipeline.label_files import normalize_batch_labels

    store = LocalObjectStore(tmp_path)
    store.write_bytes("label_files/ab/abc", b"image,label\na.png,ok\n")
    inventory = pd.DataFrame({
        "path": ["a.png", "b.png", "c.png", "labels.csv"], "role": ["image", "image", "image", "label_file"],
        "sha256": ["a" * 64, "b" * 64, "c" * 64, "f" * 64], "width": [30, 30, 30, None],
        "height": [20, 20, 20, None], "stored_key": ["i/a", "i/b", "i/c", "label_files/ab/abc"]})
    log = LabelLog(store)

    def page(image, image_id, label, labeler, at):
        log.append(LabelEvent(kind="label", queue="q", item=image, batch="b1", image=image, image_id=image_id,
                              labeler=labeler, model_version="m", label=label, at=f"2026-11-26T10:00:0{at}.000+00:00"))

    page("b.png", "b" * 64, "defect", "ana", 1)
    page("b.png", "b" * 64, "ok", "ben", 2)  # later: counts
    page("a.png", "a" * 64, "defect", "ana", 3)  # labels.csv says ok: the file wins
    page("c.png", "0" * 64, "defect", "ana", 4)  # c.png was replaced since: dropped
    labels, notes = normalize_batch_labels(inventory, store, None, log.labels("b1"))
    rows = sorted(zip(labels["image"], labels["label"], labels["source"]))
    assert rows == [("a.png", "ok", "labels.csv"), ("b.png", "ok", "labeling page")]
    assert labels.set_index("image").loc["b.png", "image_id"] == "b" * 64
    assert any("disagree on 'b.png'" in n and "by ben" in n for n in notes)
    assert any("'a.png' ignored" in n for n in notes)
    assert any("'c.png'" in n and "no longer" in n for n in notes)
