"""Keras model builders: CNNs from scratch (LeNet as in DIGITS, a small VGG-like default) and
the VGG16 transfer model. Every model takes raw 0..255 pixels (float32, NHWC) and ends in a
softmax over the classes (2 for the binary task), so all families score the same way."""

from __future__ import annotations

SCRATCH_ARCHITECTURES = ("small_vgg", "lenet")


def bn_momentum_for(total_steps: int) -> float:
    """BatchNorm's moving statistics must settle within the run: fast for short runs, smooth
    (less jumpy validation) for long ones."""
    return 0.99 if total_steps >= 1000 else 0.9


def make_scratch_cnn(input_shape: tuple[int, int, int], num_classes: int, architecture: str = "small_vgg",
                     filters: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.3, bn_momentum: float = 0.9):
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(1.0 / 255, name="to_unit")(inputs)
    if architecture == "lenet":
        # LeNet-5 as DIGITS ships it: 20 and 50 5x5 filters, 500 hidden units
        x = layers.Conv2D(20, 5, activation="relu", name="conv1")(x)
        x = layers.MaxPooling2D(2, name="pool1")(x)
        x = layers.Conv2D(50, 5, activation="relu", name="conv2")(x)
        x = layers.MaxPooling2D(2, name="pool2")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(500, activation="relu", name="fc1")(x)
    elif architecture == "small_vgg":
        for i, f in enumerate(filters):
            if i:
                x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
            for j in (1, 2):
                x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i + 1}_{j}")(x)
                x = layers.BatchNormalization(momentum=bn_momentum, name=f"bn{i + 1}_{j}")(x)
                x = layers.ReLU(name=f"relu{i + 1}_{j}")(x)
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {SCRATCH_ARCHITECTURES}")
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"scratch_{architecture}")


def make_vgg16_transfer(input_shape: tuple[int, int, int], num_classes: int, cut_block: int = 3,
                        dropout: float = 0.3, weights: str = "offline", trainable_from: int | None = None):
    """VGG16 blocks 1..cut_block (pretrained, frozen below ``trainable_from``) + a new head:
    global average and max pooling, dropout, softmax."""
    import keras
    from keras import layers

    from defect_assets.ml.backbone import vgg_backbone

    inputs = keras.Input(shape=input_shape, name="pixels")
    x = vgg_backbone(inputs, input_shape[-1], cut_block, weights, trainable_from)
    x = layers.Concatenate(name="pool_mean_max")([layers.GlobalAveragePooling2D(name="gap")(x),
                                                  layers.GlobalMaxPooling2D(name="gmp")(x)])
    # VGG activations are in the hundreds: normalize before the new head or it starts saturated
    x = layers.BatchNormalization(momentum=0.9, name="head_norm")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"vgg16_block{cut_block}_transfer")


def set_trainable_blocks(model, from_block: int | None) -> int:
    """Unfreeze VGG conv layers of blocks >= from_block (None: freeze all). Returns how many
    conv layers are trainable."""
    n = 0
    for layer in model.layers:
        if layer.name.startswith("block") and "_conv" in layer.name:
            block = int(layer.name[5])
            layer.trainable = from_block is not None and block >= from_block
            n += layer.trainable
    return n


def training_flops_per_image(model) -> float:
    """Multiply-adds x 2 of the conv and dense layers for one forward pass, x 3 for forward +
    backward (the usual estimate), so throughput can be compared with a matmul peak."""
    import numpy as np
    from keras import layers

    fwd = 0.0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            out = layer.output.shape
            k = np.prod(layer.kernel.shape)
            fwd += 2.0 * out[1] * out[2] * k
        elif isinstance(layer, layers.Dense):
            fwd += 2.0 * np.prod(layer.kernel.shape)
    return 3.0 * fwd
