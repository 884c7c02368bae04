"""The local object store and the open formats written through it."""

import numpy as np
import pandas as pd
import pytest

from defect_assets.storage import LocalObjectStore, StoreKeyError
from defect_assets.storage.formats import (
    ArrayTable,
    current_version,
    read_array,
    read_value,
    write_array,
    write_value,
)


def test_write_read_list_and_etag_changes(tmp_path):
    store = LocalObjectStore(tmp_path)
    info1 = store.write_bytes("a/b/c.bin", b"hello")
    assert store.read_bytes("a/b/c.bin") == b"hello"
    assert info1.size == 5
    store.write_bytes("a/other.bin", b"x")
    assert [o.key for o in store.list("a/")] == ["a/b/c.bin", "a/other.bin"]
    assert list(store.walk_prefixes("a/")) == ["b", "other.bin"]
    info2 = store.write_bytes("a/b/c.bin", b"hello, again")
    assert info2.etag != info1.etag and info2.size == 12


def test_failed_write_leaves_old_object_and_no_temp_file(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.write_bytes("k.bin", b"old")
    with pytest.raises(RuntimeError):
        with store.open_write("k.bin") as f:
            f.write(b"half of the new")
            raise RuntimeError("crash mid-write")
    assert store.read_bytes("k.bin") == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["k.bin"]


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a/../../b", "a\\b"])
def test_bad_keys_are_refused(tmp_path, key):
    with pytest.raises(StoreKeyError):
        LocalObjectStore(tmp_path).write_bytes(key, b"x")


def test_missing_key_error_names_the_key(tmp_path):
    with pytest.raises(StoreKeyError, match="nope.bin"):
        LocalObjectStore(tmp_path).read_bytes("nope.bin")


def test_object_arrays_are_refused_no_pickle(tmp_path):
    store = LocalObjectStore(tmp_path)
    with pytest.raises(TypeError, match="pickle"):
        write_array(store, "x.npy", np.array([{"a": 1}], dtype=object))
    write_array(store, "ok.npy", np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert read_array(store, "ok.npy").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_versioned_value_survives_a_crash_mid_write(tmp_path):
    store = LocalObjectStore(tmp_path)
    good = ArrayTable(pd.DataFrame({"a": [1, 2]}), {"img": np.ones((2, 3, 3), np.uint8)}, {"size": 3})
    write_value(store, "asset/p1", good)

    class Boom(ArrayTable):
        pass

    bad = Boom(pd.DataFrame({"a": [7]}), {"img": np.zeros((1, 3, 3), np.uint8)})
    bad.arrays["img"] = np.array([object()], dtype=object)  # fails half-way through the write
    with pytest.raises(TypeError):
        write_value(store, "asset/p1", bad)
    back = read_value(store, "asset/p1")
    assert back.table["a"].tolist() == [1, 2]
    assert back.arrays["img"].shape == (2, 3, 3) and back.attrs == {"size": 3}
    assert current_version(store, "asset/p1")["rows"] == 2


def test_rewrite_removes_the_old_version(tmp_path):
    store = LocalObjectStore(tmp_path)
    write_value(store, "t/p", pd.DataFrame({"x": [1]}))
    write_value(store, "t/p", pd.DataFrame({"x": [2, 3]}))
    versions = {o.key.split("/")[2] for o in store.list("t/p/") if o.key.split("/")[2].startswith("v-")}
    assert len(versions) == 1
    assert read_value(store, "t/p")["x"].tolist() == [2, 3]
