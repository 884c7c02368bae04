"""Safe decoding: allowlist, pixel cap, corrupt and truncated files."""

import io

import numpy as np
import pytest
from PIL import Image

from defect_assets.ml.images import ImageRejected, decode_image, inspect_image
from defect_assets_tests.conftest import png_bytes, smooth_image


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_allowed_formats_decode(fmt):
    arr = smooth_image(40, 50)
    data = png_bytes(arr, fmt)
    info = inspect_image(data)
    assert (info.format, info.width, info.height, info.mode) == (fmt, 50, 40, "L")
    out = decode_image(data)
    assert out.shape == (40, 50)
    if fmt != "JPEG":
        assert np.array_equal(out, arr)


def test_truncated_png_is_rejected_with_reason():
    data = png_bytes(smooth_image(64, 64))
    with pytest.raises(ImageRejected, match="corrupt or truncated"):
        inspect_image(data[: len(data) // 2])


def test_text_and_gif_are_rejected():
    with pytest.raises(ImageRejected, match="allowed format"):
        inspect_image(b"just some text, not an image")
    buf = io.BytesIO()
    Image.fromarray(smooth_image(8, 8)).save(buf, format="GIF")
    with pytest.raises(ImageRejected, match="allowed format"):
        inspect_image(buf.getvalue())


def test_pixel_cap_refuses_decompression_bombs():
    bomb = png_bytes(np.zeros((3000, 3000), np.uint8))  # ~9 Mpx that compresses to a few KB
    assert len(bomb) < 100_000
    with pytest.raises(ImageRejected, match="too many pixels|decompression bomb"):
        inspect_image(bomb, max_pixels=1_000_000)
    assert inspect_image(bomb, max_pixels=10_000_000).width == 3000


def test_16_bit_images_are_scaled_not_clipped():
    arr16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr16).save(buf, format="PNG")
    out = decode_image(buf.getvalue())
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert abs(int(out[32, 0]) - 128) <= 2


def test_color_conversion():
    rgb = np.stack([smooth_image(20, 20, s) for s in range(3)], axis=2)
    data = png_bytes(rgb)
    assert decode_image(data, "RGB").shape == (20, 20, 3)
    assert decode_image(data, "L").shape == (20, 20)


def test_the_pixel_cap_is_checked_on_the_header_with_its_own_message():
    """A PNG that claims 40,000 x 40,000 pixels (far over Pillow's own bomb limit) is refused by our
    cap, read from its header before any decoding, and the message names our cap, not Pillow's."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 80_002)) + chunk(b"IEND", b""))
    for reader in (inspect_image, decode_image):
        with pytest.raises(ImageRejected) as e:
            reader(bomb, max_pixels=25_000_000)
        message = str(e.value)
        assert "40000x40000 = 1,600,000,000 > the cap of 25,000,000" in message and "before decoding" in message
        assert "178956970" not in message and "178,956,970" not in message
