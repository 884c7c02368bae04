"""Training loop for the Keras families: seeded and deterministic, an input pipeline that does
not starve 2 CPU cores (uint8 arrays gathered by index, cast on the fly, prefetched), early
stopping on validation AUC, learning-rate reduction on plateau, and a per-epoch callback for
live progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FitSettings:
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    images_per_epoch: int | None = None  # draw this many training images per epoch (None: all)
    patience: int = 4  # epochs without validation-AUC gain before stopping
    class_weight: bool = True  # balance the classes in the loss
    seed: int = 0
    time_budget_s: float | None = None  # stop before an epoch would end past this (the best epoch is kept)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    history: pd.DataFrame  # one row per epoch: loss, accuracy, auc, val_loss, val_accuracy, val_auc, lr, seconds
    seconds: float
    images_seen: int
    best_epoch: int
    extra: dict = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.seconds if self.seconds else 0.0


def seed_everything(seed: int) -> None:
    """Same data + config + seed -> the same weights (CPU ops made deterministic)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - older TF without the switch: seeding alone still helps
        pass


def _dataset(x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int, shuffle: bool, seed: int,
             count: int | None = None):
    import tensorflow as tf

    X = tf.constant(np.ascontiguousarray(x))
    Y = tf.one_hot(tf.constant(y.astype(np.int32)), num_classes)
    if X.shape.rank == 3:
        X = X[..., None]
    n = int(X.shape[0])
    idx = tf.data.Dataset.range(n)
    if shuffle:
        idx = idx.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
        if count:
            idx = idx.take(count)
    ds = idx.batch(batch_size).map(lambda i: (tf.cast(tf.gather(X, i), tf.float32), tf.gather(Y, i)),
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def balanced_class_weight(y: np.ndarray, num_classes: int) -> dict[int, float]:
    counts = np.bincount(y, minlength=num_classes).astype(float)
    present = counts > 0
    w = np.where(present, len(y) / (present.sum() * np.maximum(counts, 1)), 0.0)
    return {i: float(w[i]) for i in range(num_classes)}


def fit(model, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
        settings: FitSettings, num_classes: int, on_epoch: Callable[[int, dict], None] | None = None,
        initial_epoch: int = 0) -> FitResult:
    """Compile and train ``model``; the best epoch by validation AUC is restored at the end."""
    import keras

    per_epoch = min(settings.images_per_epoch or len(x_train), len(x_train))
    steps = max(1, per_epoch // settings.batch_size)
    train = _dataset(x_train, y_train, num_classes, settings.batch_size, True, settings.seed,
                     count=None)
    val = _dataset(x_val, y_val, num_classes, 256, False, settings.seed)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate),
                  loss="categorical_crossentropy",
                  metrics=["accuracy", keras.metrics.AUC(name="auc")])

    rows: list[dict] = []

    class Progress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                   "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                   "seconds": time.perf_counter() - self.t0}
            rows.append(row)
            if on_epoch:
                on_epoch(epoch + 1, row)

    class TimeBudget(keras.callbacks.Callback):
        """Stop when another epoch as long as the slowest so far would end past the budget; early
        stopping then restores the best epoch's weights, as after a plateau."""

        def on_train_begin(self, logs=None):
            self.t0, self.slowest = time.perf_counter(), 0.0

        def on_epoch_end(self, epoch, logs=None):
            self.slowest = max(self.slowest, rows[-1]["seconds"] if rows else 0.0)
            if time.perf_counter() - self.t0 + self.slowest > settings.time_budget_s:
                self.model.stop_training = True
                if rows:
                    rows[-1]["stopped_by_time_budget"] = 1.0

    callbacks = [
        Progress(),
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=settings.patience,
                                      restore_best_weights=True, verbose=0),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(1, settings.patience // 2),
                                          min_lr=settings.learning_rate / 64, verbose=0),
    ]
    if settings.time_budget_s:
        callbacks.append(TimeBudget())
    cw = balanced_class_weight(y_train, num_classes) if settings.class_weight else None
    t0 = time.perf_counter()
    model.fit(train, validation_data=val, epochs=initial_epoch + settings.epochs, initial_epoch=initial_epoch,
              steps_per_epoch=steps, class_weight=cw, callbacks=callbacks, shuffle=False, verbose=0)
    seconds = time.perf_counter() - t0
    hist = pd.DataFrame(rows)
    best = int(hist.loc[hist["val_auc"].idxmax(), "epoch"]) if len(hist) else 0
    return FitResult(hist, seconds, images_seen=len(hist) * steps * settings.batch_size, best_epoch=best)


def predict_proba(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, K) for uint8 or float pixels (N, H, W[, C])."""
    import tensorflow as tf

    if x.ndim == 3:
        x = x[..., None]
    out = []
    for lo in range(0, len(x), batch_size):
        out.append(model(tf.cast(tf.constant(np.ascontiguousarray(x[lo:lo + batch_size])), tf.float32), training=False))
    if not out:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return np.concatenate([np.asarray(o) for o in out]).astype(np.float32)


def model_to_bytes(model) -> bytes:
    """The model as a .keras archive (config JSON + weights; no pickle)."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def model_from_bytes(data: bytes):
    """Load a .keras archive with safe_mode=True (no arbitrary code, e.g. Lambda layers, runs)."""
    import os
    import tempfile

    import keras

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.keras")
        with open(path, "wb") as f:
            f.write(data)
        return keras.models.load_model(path, safe_mode=True, compile=False)
