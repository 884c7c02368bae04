"""Benchmark: the EfficientNet-Lite0 feature extractor on TensorFlow (the Keras port, traced
once) and on ONNX Runtime (the graph every stage of the project runs), side by side in one run,
alternating, on full-size 300 px gray cells; prints milliseconds per image and the ratio, and
the largest difference between their features.

    .venv/bin/python bench/backbone_runtime.py [--size 300] [--batch 1 4 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def per_image_ms(fn, x: np.ndarray, seconds: float = 3.0) -> float:
    fn(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(x)
        n += 1
    return (time.perf_counter() - t0) / (n * len(x)) * 1000


def main() -> None:
    import tensorflow as tf

    from defect_assets.ml.backbone import LITE_STAGES, lite_feature_extractor
    from defect_assets.ml.lite_onnx import OnnxExtractor

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    keras_model = lite_feature_extractor((args.size, args.size, 1))
    traced = tf.function(lambda t: keras_model(tf.cast(t, tf.float32), training=False),
                         input_signature=[tf.TensorSpec([None, args.size, args.size, 1], tf.uint8)])
    ort = OnnxExtractor("lite0", 1, LITE_STAGES)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (max(args.batch), args.size, args.size, 1), dtype=np.uint8)
    diff = float(np.abs(np.asarray(traced(x[:4])) - ort(x[:4])).max())
    print(f"Lite0 features at {args.size} px, {os.cpu_count()} cores, load before {os.getloadavg()[0]:.2f}; "
          f"max |TF - ORT| on 4 images: {diff:.2e}")
    for b in args.batch:
        tf_ms, ort_ms = [], []
        for r in range(args.rounds):
            pair = [("tf", lambda v: np.asarray(traced(v))), ("ort", ort)]
            for name, fn in (pair if r % 2 == 0 else pair[::-1]):
                (tf_ms if name == "tf" else ort_ms).append(per_image_ms(fn, x[:b]))
        t, o = float(np.median(tf_ms)), float(np.median(ort_ms))
        print(f"batch {b:>3}: TensorFlow {t:6.1f} ms/image, ONNX Runtime {o:6.1f} ms/image: {t / o:.2f}x "
              f"(medians of {args.rounds} alternating rounds)")


if __name__ == "__main__":
    main()
