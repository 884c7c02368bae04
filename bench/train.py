"""Benchmark: scratch-CNN training throughput through the pipeline's code path
(defect_assets.ml.training.fit on the ELPV augmented set) next to the same model trained by a
plain `model.fit` script, and this machine's float32 matmul peak, all in one run.

    .venv/bin/python bench/train.py [--size 64] [--steps 120] [--batch 64]

Prints images/s, achieved GFLOP/s of the training step (forward + backward ~ 3x forward
multiply-adds), the ratio to the matmul peak (target >= 40%) and to the plain script
(target >= 0.95: orchestration adds nothing). Steady state: the first 10 steps are excluded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from defect_assets.datasets.elpv import elpv_labels, elpv_root  # noqa: E402
from defect_assets.ml.augment import augment_48  # noqa: E402
from defect_assets.ml.images import decode_image, sha256_bytes  # noqa: E402
from defect_assets.ml.labels import is_defect_label  # noqa: E402
from defect_assets.ml.patches import PatchSpec, cut_image_patches  # noqa: E402
from defect_assets.ml.splits import assign_split  # noqa: E402

WARMUP = 10


def elpv_augmented(size: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    root, ctx, ys = elpv_root(), [], []
    labels = elpv_labels()
    for rel, p in zip(labels["path"], labels["probability"]):
        data = (root / rel).read_bytes()
        if assign_split(sha256_bytes(data)) == "train":
            (cut,) = cut_image_patches(decode_image(data), [dict(kind="image", label=str(p))],
                                       PatchSpec(size=size), None)
            ctx.append(cut.context)
            ys.append(int(is_defect_label(str(p))))
        if len(ctx) >= limit:
            break
    x = augment_48(np.stack(ctx), size).reshape(-1, size, size)
    return x, np.repeat(np.array(ys), 48)


class StepClock:
    """Keras callback: wall time from the end of step WARMUP to the end of the last step."""

    def __init__(self):
        import keras

        clock = self

        class CB(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch == WARMUP - 1:
                    clock.t0 = time.perf_counter()
                clock.t1, clock.last = time.perf_counter(), batch

        self.callback = CB()

    def images_per_second(self, batch_size: int) -> float:
        return (self.last - WARMUP + 1) * batch_size / (self.t1 - self.t0)


def matmul_peak(n: int = 4096, reps: int = 10) -> tuple[float, float]:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.matmul(a, b).numpy()
    t = time.perf_counter()
    for _ in range(reps):
        c = tf.matmul(a, b)
    c.numpy()
    tf_peak = 2 * n**3 * reps / (time.perf_counter() - t) / 1e9
    an, bn = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
    an @ bn
    t = time.perf_counter()
    for _ in range(3):
        an @ bn
    np_peak = 2 * n**3 * 3 / (time.perf_counter() - t) / 1e9
    return tf_peak, np_peak


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per path; the best counts (noisy machine)")
    args = p.parse_args()

    import keras

    from defect_assets.ml.cnn import make_scratch_cnn, training_flops_per_image
    from defect_assets.ml.training import FitSettings, seed_everything

    n_img = args.steps * args.batch
    x, y = elpv_augmented(args.size, limit=max(64, n_img // 48 + 1))
    x, y = x[:n_img], y[:n_img]
    xv, yv = x[:256], y[:256]
    print(f"ELPV augmented train images {x.shape}, {args.steps} steps of {args.batch}; {os.cpu_count()} cores")

    def model():
        seed_everything(0)
        return make_scratch_cnn((args.size, args.size, 1), 2)

    flops = training_flops_per_image(model())

    import defect_assets.ml.training as training

    def pipeline_path():
        m1, clock = model(), StepClock()
        settings = FitSettings(epochs=1, batch_size=args.batch, images_per_epoch=n_img, patience=1)
        t = time.perf_counter()
        _fit_with_extra_callback(training.fit, m1, x, y, xv, yv, settings, clock.callback)
        return clock.images_per_second(args.batch), time.perf_counter() - t

    xf, yf = x[..., None].astype(np.float32), keras.utils.to_categorical(y, 2)

    def plain_path():
        m2, clock = model(), StepClock()
        m2.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
                   metrics=["accuracy", keras.metrics.AUC(name="auc")])
        t = time.perf_counter()
        m2.fit(xf, yf, batch_size=args.batch, epochs=1, callbacks=[clock.callback], verbose=0)
        return clock.images_per_second(args.batch), time.perf_counter() - t

    runs = {"pipeline": [], "plain": []}
    for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits both alike
        runs["pipeline"].append(pipeline_path())
        runs["plain"].append(plain_path())
    (r1, pipe_total), (r2, plain_total) = max(runs["pipeline"]), max(runs["plain"])

    tf_peak, np_peak = matmul_peak()
    g1, g2 = r1 * flops / 1e9, r2 * flops / 1e9
    print(f"training step: {flops / 1e9:.3f} GFLOP per image (forward + backward)")
    print(f"{'path':<36}{'images/s':>10}{'GFLOP/s':>10}{'of peak':>9}{'wall s':>8}")
    print(f"{'pipeline (defect_assets fit)':<36}{r1:>10.1f}{g1:>10.1f}{g1 / tf_peak:>9.0%}{pipe_total:>8.1f}")
    print(f"{'plain model.fit script':<36}{r2:>10.1f}{g2:>10.1f}{g2 / tf_peak:>9.0%}{plain_total:>8.1f}")
    print(f"matmul peak: TensorFlow {tf_peak:.0f} GFLOP/s, NumPy {np_peak:.0f} GFLOP/s (float32 4096^3)")
    print(f"pipeline / peak: {g1 / tf_peak:.0%} (target >= 40%)   "
          f"pipeline / plain script: {r1 / r2:.2f} (target >= 0.95)")


def _fit_with_extra_callback(fit_fn, model, x, y, xv, yv, settings, callback):
    """Run the pipeline's fit with one more Keras callback (the step clock)."""
    import keras

    orig = keras.Model.fit

    def patched(self, *a, callbacks=None, **kw):
        return orig(self, *a, callbacks=[*(callbacks or []), callback], **kw)

    keras.Model.fit = patched
    try:
        return fit_fn(model, x, y, xv, yv, settings, 2)
    finally:
        keras.Model.fit = orig


if __name__ == "__main__":
    main()
