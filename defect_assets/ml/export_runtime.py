"""Score images with an exported defect_assets model: numpy, Pillow and one runtime (onnxruntime or
OpenVINO) only. This file is copied as it is into every export bundle as ``predict.py``; it never
imports TensorFlow, Dagster or defect_assets (the tests run it where those imports fail).

    python predict.py IMAGES_DIR [--runtime onnxruntime|openvino] [--json]

prints one line per image: file, decision, defect probability. ``model.json`` (next to this file)
holds everything the training project's one scorer applies: the decision threshold, the input size,
the resize method, the channel handling, the test-time views, the window size and stride for large
photos, and the sha256 of every file of the bundle, checked before anything is loaded.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import threading
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CHUNK = 256
NEGATIVE_LABELS = ("ok", "good", "normal", "no_defect", "none", "background", "negative", "pass")


class BundleError(ValueError):
    """The bundle is incomplete, altered or asks for something this runtime cannot do."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(folder: Path, doc: dict) -> None:
    """Every file model.json lists has the sha256 it records (model.json itself is not listed)."""
    for name, digest in sorted(doc.get("files", {}).items()):
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{name} is missing from the bundle")
        if sha256_file(path) != digest:
            raise BundleError(f"{name} does not match its sha256 in model.json (altered or corrupt)")


# --- preprocessing: the same steps as the project's ml/images.py and ml/preprocess.py ---

def decode(data: bytes, color: str, max_pixels: int) -> np.ndarray:
    """Encoded bytes -> uint8 HxW ('L') or HxWx3 ('RGB'); 16-bit gray scaled to 8 bits."""
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if w * h > max_pixels:
        raise BundleError(f"too many pixels: {w}x{h} > {max_pixels}")
    img.load()
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        gray = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return gray if color == "L" else np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("P", "LA", "RGBA"):
        img = img.convert("RGB")
    return np.asarray(img.convert(color), dtype=np.uint8)


def to_pixels(image, color: str, max_pixels: int) -> np.ndarray:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode(bytes(image), color, max_pixels)
    if isinstance(image, (str, Path)):
        return decode(Path(image).read_bytes(), color, max_pixels)
    if hasattr(image, "convert") and hasattr(image, "size"):
        return np.asarray(image.convert(color), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise BundleError(f"pixel arrays must be uint8, not {arr.dtype}")
    if color == "L" and arr.ndim == 3:
        arr = np.asarray(Image.fromarray(arr).convert("L"), dtype=np.uint8)
    if color == "RGB" and arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr


def resize(arr: np.ndarray, size: int) -> np.ndarray:
    """Area averaging (Pillow BOX) when shrinking both sides, else bilinear."""
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    method = Image.Resampling.BOX if (size < arr.shape[1] and size < arr.shape[0]) else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(arr).resize((size, size), method), dtype=np.uint8)


def shrink(patches: np.ndarray, size: int) -> np.ndarray:
    if patches.shape[1] == size and patches.shape[2] == size:
        return patches
    if patches.ndim == 4 and patches.shape[3] == 1:
        return shrink(patches[..., 0], size)[..., None]
    return np.stack([resize(np.asarray(p), size) for p in patches])


def dihedral_views(patches: np.ndarray, views: int) -> list[np.ndarray]:
    """The first ``views`` of the 8 quarter turns and mirrors, the identity first."""
    turns = [0] if views in (1, 2) else [0, 1, 2, 3]
    out = [np.rot90(patches, k, axes=(1, 2)) for k in turns]
    if views in (2, 8):
        out += [np.flip(v, axis=2) for v in out]
    return [np.ascontiguousarray(v) for v in out]


# --- the runtime ---

def open_session(path: Path, runtime: str):
    """(uint8 NHWC patches) -> (N, K) float32 probabilities, on onnxruntime or OpenVINO."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: np.asarray(session.run(None, {name: np.ascontiguousarray(x, np.uint8)})[0], np.float32)
    if runtime == "openvino":
        import openvino as ov

        # fp32 on every CPU: on CPUs with bf16 (AVX512-BF16, AMX) OpenVINO otherwise runs in bf16 by
        # default and its probabilities move by about 1e-2, far outside the parity tolerance
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        out = compiled.outputs[0]
        local = threading.local()  # an infer request is not thread-safe: one per calling thread

        def call(x):
            request = getattr(local, "request", None)
            if request is None:
                request = local.request = compiled.create_infer_request()
            return np.array(request.infer([np.ascontiguousarray(x, np.uint8)])[out], np.float32)
        return call
    raise BundleError(f"unknown runtime {runtime!r} (onnxruntime or openvino)")


class Node:
    """One graph (``file``) or a weighted average of members, with its own input and views."""

    def __init__(self, folder: Path, spec: dict, runtime: str):
        self.size = int(spec["input"]["size"])
        self.channels = int(spec["input"]["channels"])
        self.patch_size = int(spec["input"].get("patch_size") or self.size)
        self.views = int(spec.get("views", 1))
        self.batch = max(1, int(spec.get("batch", CHUNK)))  # images per graph call (model.json may bound it)
        if "file" in spec:
            self.session = open_session(folder / spec["file"], runtime)
            self.members, self.weights = [], np.zeros(0)
        else:
            self.session = None
            self.members = [Node(folder, m, runtime) for m in spec["members"]]
            self.weights = np.asarray([m["weight"] for m in spec["members"]], np.float64)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Patches already at this node's input size, one view."""
        if self.session is not None:
            if len(x) <= self.batch:
                return self.session(x)
            return np.concatenate([self.session(x[lo:lo + self.batch]) for lo in range(0, len(x), self.batch)])
        probas = np.stack([m.proba(x) for m in self.members])
        return np.tensordot(self.weights, probas, axes=1).astype(np.float32)

    def proba(self, patches: np.ndarray) -> np.ndarray:
        x = np.asarray(patches)
        if x.ndim == 3 and self.channels == 1:
            x = x[..., None]
        if x.ndim == 4 and x.shape[1] == x.shape[2] == self.patch_size != self.size:
            x = shrink(x, self.size)
        if x.ndim != 4 or x.shape[1:] != (self.size, self.size, self.channels):
            raise BundleError(f"patches must be (N, {self.size}, {self.size}, {self.channels}), not {x.shape}")
        out = []
        for lo in range(0, len(x), self.batch):
            chunk = x[lo:lo + self.batch]
            if self.views == 1:
                out.append(self.raw(chunk))
            else:
                out.append(np.mean([self.raw(v) for v in dihedral_views(chunk, self.views)], axis=0).astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class ExportedModel:
    """The bundle in ``folder``: hash-checked, then loaded on ``runtime`` (default: its format's)."""

    def __init__(self, folder: Path | str = HERE, runtime: str | None = None):
        self.folder = Path(folder)
        self.doc = json.loads((self.folder / "model.json").read_text())
        verify(self.folder, self.doc)
        self.runtime = runtime or {"onnx": "onnxruntime", "openvino": "openvino"}[self.doc["format"]]
        self.root = Node(self.folder, self.doc["graph"], self.runtime)
        pre = self.doc["preprocessing"]
        self.color = "L" if int(pre["channels"]) == 1 else "RGB"
        self.max_pixels = int(pre.get("max_pixels", 64_000_000))

    @property
    def classes(self) -> list[str]:
        return list(self.doc["classes"])

    @property
    def threshold(self) -> float | None:
        t = self.doc.get("threshold")
        return None if t is None else float(t)

    def prepare(self, image) -> np.ndarray:
        """One image (bytes, a path, a PIL image or uint8 array) -> the model's input patch."""
        patch = resize(to_pixels(image, self.color, self.max_pixels), self.root.patch_size)
        return shrink(patch[None], self.root.size)[0] if self.root.patch_size != self.root.size else patch

    def predict_images(self, images) -> np.ndarray:
        patches = [self.prepare(im) for im in images]
        if not patches:
            return np.zeros((0, len(self.classes)), np.float32)
        return self.root.proba(np.stack(patches))

    def predict_proba(self, patches: np.ndarray) -> np.ndarray:
        """(N, size, size[, C]) uint8 patches at the input size (or the window size) -> (N, K)."""
        return self.root.proba(patches)

    def decide(self, proba: np.ndarray) -> list[tuple[str, bool]]:
        """(decision, is_defect) per row: binary at the threshold, else the arg-max class."""
        if len(self.classes) == 2:
            hit = proba[:, 1] >= (0.5 if self.threshold is None else self.threshold)
            return [(self.classes[int(h)], bool(h)) for h in hit]
        names = [self.classes[int(i)] for i in proba.argmax(axis=1)]
        negatives = tuple(self.doc.get("negative_labels", NEGATIVE_LABELS))
        return [(n, n.strip().lower() not in negatives) for n in names]

    def windows(self, image, stride: int | None = None) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """A large photo's windows (window size and stride from model.json): (probabilities, (x, y) corners)."""
        pixels = to_pixels(image, self.color, self.max_pixels)
        side = self.root.patch_size
        step = int(stride or self.doc["preprocessing"]["window_stride"])
        h, w = pixels.shape[:2]
        if h < side or w < side:
            return self.predict_images([pixels]), [(0, 0)]
        ys = list(range(0, h - side + 1, step)) + ([h - side] if (h - side) % step else [])
        xs = list(range(0, w - side + 1, step)) + ([w - side] if (w - side) % step else [])
        corners = [(x, y) for y in ys for x in xs]
        crops = np.stack([pixels[y:y + side, x:x + side] for x, y in corners])
        return self.predict_proba(crops), corners


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Score a folder of images with this exported model.")
    p.add_argument("images", type=Path, help="a folder of images (or one image)")
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"), default=None)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    args = p.parse_args(argv)
    model = ExportedModel(HERE, args.runtime)
    files = [args.images] if args.images.is_file() else sorted(
        f for f in args.images.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    for f in files:
        proba = model.predict_images([f.read_bytes()])
        (decision, is_defect), = model.decide(proba)
        defect = float(proba[0, 1]) if len(model.classes) == 2 else float(1 - proba[0, 0])
        if args.json:
            print(json.dumps({"file": f.name, "decision": decision, "is_defect": is_defect,
                              "proba": [float(v) for v in proba[0]]}))
        else:
            print(f"{f.name}\t{decision}\t{defect:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
