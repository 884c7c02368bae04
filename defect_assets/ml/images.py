"""Safe image decoding: a format allowlist, a pixel cap against decompression bombs, and
clear reasons for every rejected file. Every image that enters the pipeline goes through here."""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 64_000_000  # e.g. 8000 x 8000; a large inspection photo fits


class ImageRejected(ValueError):
    """The bytes are not an acceptable image; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    format: str
    width: int
    height: int
    mode: str
    bytes: int


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _header(data: bytes) -> Image.Image:
    """The image with only its header read, in an allowed format. Like ``Image.open`` without
    Pillow's own decompression-bomb check (its 89/179-Mpx limits): the caller checks its own cap
    on the header's size, with its own message, before anything is decoded."""
    Image.init()
    prefix = data[:16]
    for fmt in ALLOWED_FORMATS:
        factory, accept = Image.OPEN[fmt]
        verdict = accept(prefix) if accept else True
        if not verdict or isinstance(verdict, (str, bytes)):
            continue
        try:
            return factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, ValueError, OSError, struct.error):
            continue
    raise ImageRejected(f"not an image in an allowed format ({', '.join(ALLOWED_FORMATS)})")


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    img = _header(data)
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageRejected(f"empty image ({w}x{h})")
    if w * h > max_pixels:
        raise ImageRejected(f"too many pixels: {w}x{h} = {w * h:,} > the cap of {max_pixels:,} (checked on the "
                            "header, before decoding: a decompression bomb is refused unread)")
    return img


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Fully decode the bytes (catches truncated files) and describe them."""
    img = _open_checked(data, max_pixels)
    fmt, mode, (w, h) = img.format, img.mode, img.size
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageRejected(f"corrupt or truncated {fmt}: {e}") from None
    return ImageInfo(sha256_bytes(data), fmt or "?", w, h, mode, len(data))


def decode_image(data: bytes, color: str = "L", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes -> uint8 array, HxW for color='L' or HxWx3 for color='RGB'.

    16-bit grayscale (common for industrial cameras and TIFF) is scaled to 8 bits, not clipped.
    """
    if color not in ("L", "RGB"):
        raise ValueError(f"color must be 'L' or 'RGB', not {color!r}")
    img = _open_checked(data, max_pixels)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageRejected(f"corrupt or truncated {img.format}: {e}") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        gray = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return gray if color == "L" else np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "P" or img.mode == "LA" or img.mode == "RGBA":
        img = img.convert("RGB")
    return np.asarray(img.convert(color), dtype=np.uint8)


def encode_png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-averaging resize (keeps thin structures better than bilinear when shrinking)."""
    if arr.shape[1] == width and arr.shape[0] == height:
        return arr
    img = Image.fromarray(arr)
    method = Image.Resampling.BOX if (width < arr.shape[1] and height < arr.shape[0]) else Image.Resampling.BILINEAR
    return np.asarray(img.resize((width, height), method), dtype=np.uint8)
