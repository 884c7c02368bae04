"""The EfficientNet-Lite feature extractor as an ONNX graph run by ONNX Runtime: the same
architecture and weights as the Keras port (``ml/efficientnet_lite.py``), BatchNorm folded into
the convolutions, 'same' padding as TensorFlow pads (the extra row and column at the end).

Why a second runtime for the same network: on 2 CPU cores ONNX Runtime runs Lite0's depthwise
convolutions about three times faster than TensorFlow (``bench/backbone_runtime.py`` measures
both side by side), which is what lets the main job compute features of every view of every
cell and the service answer in tens of milliseconds. It is the one runtime of the backbone
wherever features are computed (training, evaluation, serving, active learning), so what is
evaluated is what is served; the Keras model stays the reference the tests compare it with.

The graph takes raw uint8 pixels, NHWC (gray or RGB), and returns the mean- then max-pooled
channels of each requested stage (``ml.backbone``'s order), or the stage maps themselves (NHWC).
"""

from __future__ import annotations

import functools

import numpy as np

from defect_assets.ml.efficientnet_lite import BN_EPS, converted
from defect_assets.ml.settings import MlSettings


def _fold(weights: dict, conv: str, bn: str, depthwise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """ONNX (out, in/groups, kh, kw) kernel and bias of a Keras conv followed by its BatchNorm."""
    (kernel,) = weights[conv]
    gamma, beta, mean, var = weights[bn]
    scale = gamma / np.sqrt(var + BN_EPS)
    w = np.transpose(kernel, (2, 3, 0, 1)) if depthwise else np.transpose(kernel, (3, 2, 0, 1))
    return (w * scale[:, None, None, None]).astype(np.float32), (beta - mean * scale).astype(np.float32)


def build_graph(variant: str, channels: int, stages: tuple[str, ...], maps: bool = False) -> bytes:
    """The serialized ONNX model of ``variant``'s feature extractor."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    blocks, weights = converted(variant)
    nodes, inits = [], []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(arr: np.ndarray, prefix: str) -> str:
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def conv(x: str, conv_name: str, bn_name: str, stride: int = 1, depthwise: bool = False,
             relu6: bool = True) -> str:
        w, b = _fold(weights, conv_name, bn_name, depthwise)
        k = w.shape[-1]
        out = name(conv_name)
        nodes.append(helper.make_node("Conv", [x, const(w, conv_name + "_w"), const(b, conv_name + "_b")], [out],
                                      kernel_shape=[k, k], strides=[stride, stride], auto_pad="SAME_UPPER",
                                      group=w.shape[0] if depthwise else 1))
        if not relu6:
            return out
        act = name(conv_name + "_relu6")
        nodes.append(helper.make_node("Clip", [out, const(np.float32(0), "zero"), const(np.float32(6), "six")],
                                      [act]))
        return act

    # uint8 NHWC -> float NCHW, (x - 127) / 128, gray repeated to three channels
    nodes.append(helper.make_node("Cast", ["pixels"], ["pixels_f"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Transpose", ["pixels_f"], ["nchw"], perm=[0, 3, 1, 2]))
    x = "nchw"
    if channels == 1:
        nodes.append(helper.make_node("Concat", [x, x, x], ["rgb"], axis=1))
        x = "rgb"
    nodes.append(helper.make_node("Sub", [x, const(np.float32(127), "offset")], ["centered"]))
    nodes.append(helper.make_node("Div", ["centered", const(np.float32(128), "scale")], ["scaled"]))
    x = conv("scaled", "stem_conv", "stem_bn", stride=2)
    stage_out: dict[str, str] = {}
    for b in blocks:
        inp = x
        if b.expand:
            x = conv(x, f"{b.name}_expand_conv", f"{b.name}_expand_bn")
        x = conv(x, f"{b.name}_dwconv", f"{b.name}_bn", stride=b.stride, depthwise=True)
        x = conv(x, f"{b.name}_project_conv", f"{b.name}_project_bn", relu6=False)
        if b.skip:
            added = name(f"{b.name}_add")
            nodes.append(helper.make_node("Add", [x, inp], [added]))
            x = added
        stage_out[str(b.stage)] = x
    stage_out["top"] = conv(x, "top_conv", "top_bn")
    outputs = []
    for s in stages:
        if str(s) not in stage_out:
            raise ValueError(f"unknown stage {s!r}; stages are 1..7 and 'top'")
        t = stage_out[str(s)]
        if maps:
            out = f"stage{s}_map"
            nodes.append(helper.make_node("Transpose", [t], [out], perm=[0, 2, 3, 1]))
            outputs.append(out)
            continue
        for op, suffix in (("GlobalAveragePool", "mean"), ("GlobalMaxPool", "max")):
            pooled, flat = name(f"stage{s}_{suffix}"), f"stage{s}_{suffix}"
            nodes.append(helper.make_node(op, [t], [pooled]))
            nodes.append(helper.make_node("Flatten", [pooled], [flat]))
            outputs.append(flat)
    if not maps:
        nodes.append(helper.make_node("Concat", outputs, ["features"], axis=1))
        outputs = ["features"]
    nodes, inits = _needed(nodes, inits, outputs)
    graph = helper.make_graph(
        nodes, f"efficientnet_{variant}_{'maps' if maps else 'features'}",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, [None, None, None, channels])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * (4 if maps else 2)) for o in outputs],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="defect_assets")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _needed(nodes: list, inits: list, outputs: list[str]) -> tuple[list, list]:
    """Only the nodes (and weights) the outputs depend on: stage maps up to stage 5 need none of
    stages 6, 7 and the head (a third of Lite0's work at 300 px), which ONNX Runtime would
    otherwise compute and drop."""
    need, kept = set(outputs), []
    for n in reversed(nodes):
        if any(o in need for o in n.output):
            kept.append(n)
            need.update(n.input)
    return kept[::-1], [i for i in inits if i.name in need]


def threads() -> int:
    """ONNX Runtime threads per session: DEFECT_ASSETS_ONNX_THREADS, else every core."""
    return MlSettings.load().threads()


def session(graph: bytes, spinning: bool = True):
    """An ONNX Runtime CPU session of ``graph`` with the project's threads. ``spinning=False``: its
    worker threads sleep between calls instead of spinning (a call of a few tens of milliseconds
    then no longer competes with whatever else the cores run)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise RuntimeError("the EfficientNet-Lite backbone runs on ONNX Runtime: pip install onnxruntime") from e
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class OnnxExtractor:
    """Pixels (N, H, W, C) uint8 -> features (N, D) float32 (or the stage maps with ``maps``)."""

    def __init__(self, variant: str, channels: int, stages: tuple[str, ...], maps: bool = False):
        self.session = session(_graph_bytes(variant, channels, tuple(stages), maps), spinning=False)
        self.maps, self.channels = maps, channels
        self.outputs = [o.name for o in self.session.get_outputs()]
        blocks, weights = converted(variant)
        width = {str(b.stage): b.filters_out for b in blocks} | {"top": int(weights["top_conv"][0].shape[-1])}
        self.dims = 2 * sum(width[str(s)] for s in stages)

    def __call__(self, pixels: np.ndarray):
        x = np.asarray(pixels)
        if x.ndim == 3:
            x = x[..., None]
        out = self.session.run(self.outputs, {"pixels": np.ascontiguousarray(x, dtype=np.uint8)})
        return out if self.maps else out[0]


@functools.lru_cache(maxsize=8)
def _graph_bytes(variant: str, channels: int, stages: tuple[str, ...], maps: bool) -> bytes:
    return build_graph(variant, channels, stages, maps)
