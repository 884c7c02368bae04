"""The one preprocessing function shared by training and serving: an image (bytes, PIL image or
array) becomes the model's input patch exactly as image-level training patches were made."""

from __future__ import annotations

import numpy as np

from defect_assets.ml.images import DEFAULT_MAX_PIXELS, decode_image, resize


def to_pixels(image, channels: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """bytes (decoded safely: allowlist, pixel cap), a PIL image or an array -> uint8 HxW or HxWx3."""
    color = "L" if channels == 1 else "RGB"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), color, max_pixels)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL image
        return np.asarray(image.convert(color), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"pixel arrays must be uint8, not {arr.dtype}")
    if channels == 1 and arr.ndim == 3:
        arr = np.asarray(decode_like_pil_gray(arr))
    if channels == 3 and arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr


def decode_like_pil_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB -> L with Pillow's own weights (so arrays and files give the same gray)."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)


def whole_image_patch(pixels: np.ndarray, size: int) -> np.ndarray:
    """An image-level patch: the whole image resized (area averaging) to size x size."""
    return resize(pixels, size, size)


def prepare_patch(image, size: int, channels: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """What the model sees for one whole image: uint8 (size, size) or (size, size, 3)."""
    return whole_image_patch(to_pixels(image, channels, max_pixels), size)


def shrink_patches(patches: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S[, C]) uint8 patches -> (N, size, size[, C]), each resized as whole images are
    (area averaging): how a model with a smaller input than its patches sees them."""
    if patches.shape[1] == size and patches.shape[2] == size:
        return patches
    if patches.ndim == 4 and patches.shape[3] == 1:  # gray with a channel axis: Pillow wants H x W
        return shrink_patches(patches[..., 0], size)[..., None]
    out = np.empty((len(patches), size, size, *patches.shape[3:]), np.uint8)
    for i, p in enumerate(patches):
        out[i] = whole_image_patch(np.asarray(p), size)
    return out
