"""The anomaly family's scoring (``ml/patchcore.py``) as one ONNX graph: what its scorer runs on ONNX
Runtime for every probability and map, and what ``ml/export.py`` writes into a bundle (the same
graph without the map output), so what is evaluated is what is served and what is exported.

uint8 NHWC 'pixels' ->
- 'features' (N, gh, gw, D) of ``features_graph``: the Lite backbone's stage maps (only up to the
  deepest stage used, ``lite_onnx.build_graph``), each a 3x3 mean over the cells present
  (AveragePool, count_include_pad=0), brought onto the grid of ``grid_stage`` (a finer stage by the
  mean of each 2x2 / 4x4 block, a coarser one bilinearly, half-pixel centres clamped at the
  edges), concatenated, projected (MatMul) when the model projects;
- 'patch_scores' (N, gh, gw): each location's distance, either
  ``location``: the Mahalanobis distance to the Gaussian of that location for the image's kind
  (the nearest kind centroid to the image's mean feature), sqrt(c . (inv_cov c)), c = f - mean;
  or ``nearest``: the Euclidean distance to the nearest memory-bank patch, ||f||^2 - 2 f.B^T +
  ||B||^2 (bank norms precomputed, in blocks of ``BANK_CHUNK`` rows) clamped at 0;
- 'score' (N,): the largest patch score, normalized by the kind's good calibration images,
  (s - median_k) / spread_k;
- 'proba' (N, 2): the logistic calibration of the score, in float64;
- 'kind' (N,): the image's kind (``location`` with more than one kind).
"""

from __future__ import annotations

import numpy as np

BANK_CHUNK = 1024
"""Bank rows per distance block of the ``nearest`` scoring (one (N, P, chunk) block alive at a time)."""
STRIDES = {"1": 2, "2": 4, "3": 8, "4": 16, "5": 16, "6": 32, "7": 32}
"""Lite0's stage -> its stride in pixels."""


class _Builder:
    def __init__(self, graph):
        self.g, self.nodes = graph, []

    def const(self, arr, name: str) -> str:
        from onnx import numpy_helper

        self.g.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output


def _backbone(backbone: str, channels: int, stages: tuple[str, ...]):
    """The backbone's ONNX model with its NCHW stage maps (the transposes to NHWC dropped) and no outputs."""
    import onnx

    from defect_assets.ml.lite_onnx import build_graph

    if not str(backbone).startswith("lite"):
        raise ValueError(f"no ONNX scoring for an anomaly model on backbone {backbone!r}")
    m = onnx.load_from_string(build_graph(backbone, channels, stages, maps=True))
    outputs = {f"stage{s}_map" for s in stages}
    nchw = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "Transpose" and n.output[0] in outputs}
    kept = [n for n in m.graph.node if not (n.op_type == "Transpose" and n.output[0] in outputs)]
    del m.graph.node[:]
    m.graph.node.extend(kept)
    del m.graph.output[:]
    return m, [nchw[f"stage{s}_map"] for s in stages]


def _features(b: _Builder, maps: list[str], stages: tuple[str, ...], grid_stage: str,
              projection: np.ndarray | None, raw_dims: int) -> str:
    """(N, L, D) patch features, L = the grid's locations row-major."""
    pooled = [b.node("AveragePool", [m], f"ad_pool{s}", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                     count_include_pad=0) for s, m in zip(stages, maps)]
    ref = pooled[stages.index(grid_stage)]
    grid = b.node("Shape", [ref], "ad_grid", start=2, end=4)
    parts = []
    for s, t in zip(stages, pooled):
        ratio = STRIDES[grid_stage] // STRIDES[s]
        if STRIDES[s] == STRIDES[grid_stage]:  # the same grid (stages 4 and 5 are both stride 16)
            parts.append(t)
        elif ratio > 1:  # a finer stage: the mean of each ratio x ratio block (a partial block at the end: its cells)
            parts.append(b.node("AveragePool", [t], f"ad_down{s}", kernel_shape=[ratio, ratio], strides=[ratio, ratio],
                                ceil_mode=1, count_include_pad=0))
        else:
            nc = b.node("Shape", [t], f"ad_nc{s}", start=0, end=2)
            sizes = b.node("Concat", [nc, grid], f"ad_sizes{s}", axis=0)
            parts.append(b.node("Resize", [t, "", "", sizes], f"ad_up{s}", mode="linear",
                                coordinate_transformation_mode="half_pixel"))
    cat = b.node("Concat", parts, "ad_cat", axis=1) if len(parts) > 1 else parts[0]
    nhwc = b.node("Transpose", [cat], "ad_nhwc", perm=[0, 2, 3, 1])
    f = b.node("Reshape", [nhwc, b.const(np.array([0, -1, raw_dims], np.int64), "ad_shape")], "ad_flat")
    if projection is not None:
        f = b.node("MatMul", [f, b.const(np.ascontiguousarray(projection, np.float32), "ad_projection")], "ad_proj")
    return f


def _location_scores(b: _Builder, f: str, model) -> tuple[str, str | None]:
    """(N, L) squared Mahalanobis distances to the image's kind and the (N, 1) kind index (None: one
    kind). Every kind's distances are computed (kinds x L x D^2 multiply-adds, a few million) and the
    image's picked by a one-hot mask: no (N, L, D, D) gather of the inverse covariances per image."""
    from onnx import TensorProto

    g = model.gaussians
    kinds = len(g.centroids)
    fl = b.node("Transpose", [f], "ad_lnd", perm=[1, 0, 2])  # (L, N, D): batched over locations
    dists = []
    for k in range(kinds):
        c = b.node("Sub", [fl, b.const(np.ascontiguousarray(g.means[k][:, None, :], np.float32), f"ad_mean{k}")],
                   f"ad_c{k}")
        t = b.node("MatMul", [c, b.const(np.ascontiguousarray(g.inv_covs[k], np.float32), f"ad_icov{k}")], f"ad_t{k}")
        q = b.node("ReduceSum", [b.node("Mul", [t, c], f"ad_tc{k}"), b.const(np.array([-1], np.int64), f"ad_qaxis{k}")],
                   f"ad_q{k}", keepdims=0)  # (L, N)
        dists.append(b.node("Unsqueeze", [b.node("Transpose", [q], f"ad_qt{k}", perm=[1, 0]),
                                          b.const(np.array([0], np.int64), f"ad_q0axis{k}")], f"ad_qk{k}"))  # (1, N, L)
    if kinds == 1:
        return b.node("Squeeze", [dists[0], b.const(np.array([0], np.int64), "ad_sq0")], "ad_q"), None
    # the image's kind: the nearest centroid to its mean feature
    mean = b.node("ReduceMean", [f], "ad_imgmean", axes=[1], keepdims=0)  # (N, D)
    cen = np.ascontiguousarray(g.centroids, np.float32)
    dot = b.node("MatMul", [mean, b.const(np.ascontiguousarray(cen.T), "ad_centroids")], "ad_cdot")
    cd = b.node("Sub", [b.const(np.einsum("ij,ij->i", cen, cen).astype(np.float32), "ad_csq"),
                        b.node("Mul", [dot, b.const(np.float32(2), "ad_ctwo")], "ad_c2dot")], "ad_cdist")
    kind = b.node("ArgMin", [cd], "ad_kind", axis=1, keepdims=1)  # (N, 1) int64
    onehot = b.node("Cast", [b.node("Equal", [kind, b.const(np.arange(kinds, dtype=np.int64)[None], "ad_kinds")],
                                    "ad_iskind")], "ad_onehot", to=TensorProto.FLOAT)  # (N, K)
    sel = b.node("Unsqueeze", [b.node("Transpose", [onehot], "ad_onehot_t", perm=[1, 0]),
                               b.const(np.array([2], np.int64), "ad_sel_axis")], "ad_sel")  # (K, N, 1)
    allq = b.node("Concat", dists, "ad_allq", axis=0)  # (K, N, L)
    q = b.node("ReduceSum", [b.node("Mul", [allq, sel], "ad_selq"), b.const(np.array([0], np.int64), "ad_axis0")],
               "ad_q", keepdims=0)
    return q, kind


def _nearest_scores(b: _Builder, f: str, model) -> str:
    """(N, L) squared distances to the nearest bank row."""
    sq = b.node("Mul", [f, f], "ad_sq")
    xsq = b.node("ReduceSum", [sq, b.const(np.array([-1], np.int64), "ad_last")], "ad_xsq", keepdims=1)
    bank = np.ascontiguousarray(model.bank, np.float32)
    two = b.const(np.float32(2), "ad_two")
    mins = []
    for i, lo in enumerate(range(0, len(bank), BANK_CHUNK)):
        blk = bank[lo:lo + BANK_CHUNK]
        dot = b.node("MatMul", [f, b.const(np.ascontiguousarray(blk.T), f"ad_bank{i}")], f"ad_dot{i}")
        d = b.node("Sub", [xsq, b.node("Mul", [dot, two], f"ad_2dot{i}")], f"ad_dd{i}")
        d = b.node("Add", [d, b.const(np.einsum("ij,ij->i", blk, blk).astype(np.float32), f"ad_bsq{i}")],
                   f"ad_dist{i}")
        mins.append(b.node("ReduceMin", [d], f"ad_min{i}", axes=[-1], keepdims=0))
    return b.node("Min", mins, "ad_nearest") if len(mins) > 1 else mins[0]


def features_graph(model, channels: int):
    """uint8 NHWC 'pixels' -> (N, gh, gw, D) 'features' of ``model`` (training reads its features here)."""
    from onnx import TensorProto, helper

    m, maps = _backbone(model.backbone, channels, model.stages)
    b = _Builder(m.graph)
    f = _features(b, maps, model.stages, model.grid_stage, model.projection, model.raw_dims)
    ref = [n for n in b.nodes if n.output[0] == "ad_nhwc"][0].output[0]
    shape = b.node("Shape", [ref], "ad_nhwc_shape")
    b.node("Reshape", [f, b.node("Concat", [b.node("Slice", [shape, b.const(np.array([0], np.int64), "ad_s0"),
                                                            b.const(np.array([3], np.int64), "ad_s3")], "ad_nhw"),
                                           b.const(np.array([-1], np.int64), "ad_m1")], "ad_fshape", axis=0)],
           "features")
    m.graph.node.extend(b.nodes)
    m.graph.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, [None] * 4))
    return _finish(m)


def scoring_graph(model, channels: int, with_map: bool = True):
    """uint8 NHWC 'pixels' -> 'proba' (N, 2), 'score' (N,) and, ``with_map``, 'patch_scores' (N, gh, gw)."""
    from onnx import TensorProto, helper

    m, maps = _backbone(model.backbone, channels, model.stages)
    b = _Builder(m.graph)
    f = _features(b, maps, model.stages, model.grid_stage, model.projection, model.raw_dims)
    if model.scoring == "location":
        q, kind = _location_scores(b, f, model)
    else:
        q = _nearest_scores(b, f, model)
        kind = None
    d = b.node("Sqrt", [b.node("Max", [q, b.const(np.float32(0), "ad_zero")], "ad_clamped")], "ad_dist")  # (N, L)
    raw = b.node("ReduceMax", [d], "ad_raw", axes=[1], keepdims=1)  # (N, 1)
    norm = model.normalization
    center = np.asarray(norm["center"], np.float32)
    spread = np.asarray(norm["spread"], np.float32)
    if kind is not None and len(center) > 1:
        cen = b.node("Gather", [b.const(center, "ad_ncenter"), kind], "ad_kcenter", axis=0)
        spr = b.node("Gather", [b.const(spread, "ad_nspread"), kind], "ad_kspread", axis=0)
    else:
        cen, spr = b.const(center[:1].reshape(1, 1), "ad_ncenter"), b.const(spread[:1].reshape(1, 1), "ad_nspread")
    score = b.node("Div", [b.node("Sub", [raw, cen], "ad_shifted"), spr], "ad_score")  # (N, 1)
    cal = model.calibration
    z = b.node("Div", [b.node("Sub", [b.node("Cast", [score], "ad_score64", to=TensorProto.DOUBLE),
                                      b.const(np.float64(cal.get("center", 0.0)), "ad_center")], "ad_shift"),
                       b.const(np.float64(cal.get("width", 1.0)), "ad_width")], "ad_z")
    z = b.node("Clip", [z, b.const(np.float64(-60), "ad_lo"), b.const(np.float64(60), "ad_hi")], "ad_zc")
    p1 = b.node("Cast", [b.node("Sigmoid", [z], "ad_p64")], "ad_p1", to=TensorProto.FLOAT)
    b.node("Concat", [b.node("Sub", [b.const(np.float32(1), "ad_one"), p1], "ad_p0"), p1], "proba", axis=1)
    outputs = [helper.make_tensor_value_info("proba", TensorProto.FLOAT, [None, 2])]
    if with_map:
        b.node("Squeeze", [score, b.const(np.array([1], np.int64), "ad_sq1")], "score")
        grid = b.node("Shape", [[n for n in b.nodes if n.output[0] == "ad_nhwc"][0].output[0]], "ad_nhw_shape",
                      start=0, end=3)
        b.node("Reshape", [d, grid], "patch_scores")
        outputs += [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None]),
                    helper.make_tensor_value_info("patch_scores", TensorProto.FLOAT, [None, None, None])]
        if kind is not None:
            b.node("Squeeze", [kind, b.const(np.array([1], np.int64), "ad_sqk")], "kind")
            outputs.append(helper.make_tensor_value_info("kind", TensorProto.INT64, [None]))
    m.graph.node.extend(b.nodes)
    m.graph.output.extend(outputs)
    return _finish(m)


def _finish(m):
    import onnx

    m.producer_name = "defect_assets"
    onnx.checker.check_model(m)
    return m


def with_pooled_features(model, channels: int, stages: tuple[str, ...]):
    """The scoring graph without the map, plus the pooled features of ``stages`` (what
    ``lite_onnx.build_graph`` gives an elastic net on the same backbone) as a second output
    'features': an ensemble of the two runs the backbone once. Both graphs are built by the same
    ``build_graph``, whose backbone nodes and weights get the same names whatever the outputs, so the
    union keeps one copy of each; a name the two use for different things is refused (ValueError)."""
    import onnx

    from defect_assets.ml.lite_onnx import _graph_bytes

    merged = scoring_graph(model, channels, with_map=False)
    extra = onnx.load_from_string(_graph_bytes(model.backbone, channels, tuple(stages), False))
    nodes = {o: n for n in merged.graph.node for o in n.output}
    for n in extra.graph.node:
        same = nodes.get(n.output[0])
        if same is None:
            merged.graph.node.append(n)
        elif (same.op_type, list(same.input)) != (n.op_type, list(n.input)):
            raise ValueError(f"{n.output[0]!r} is computed differently by the two graphs")
    weights = {i.name: i for i in merged.graph.initializer}
    for i in extra.graph.initializer:
        if i.name not in weights:
            merged.graph.initializer.append(i)
        elif weights[i.name].raw_data != i.raw_data or list(weights[i.name].dims) != list(i.dims):
            raise ValueError(f"weight {i.name!r} differs between the two graphs")
    merged.graph.output.extend(o for o in extra.graph.output if o.name == "features")
    return _finish(merged)
