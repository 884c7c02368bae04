"""What the routes share to answer with something other than a JSON model: the HTML pages
(``pages/*.html``, with the sign-in form's message and where it returns to) and a stored image
as a browser shows it."""

from __future__ import annotations

from html import escape as html_escape
from pathlib import Path

from fastapi.responses import HTMLResponse, Response

from defect_assets.ml.images import decode_image, encode_png
from defect_assets.storage.base import ObjectStore

PAGES = Path(__file__).resolve().parent / "pages"
PASS_THROUGH = {".png": "image/png", ".jpg": "image/jpeg"}  # what every browser shows as stored

AFTER_SIGN_IN = ("/label", "/annotate")
"""Where the sign-in form may send the browser back to (these pages, with their query: never
another site, so no open redirect)."""


def after_sign_in(target: str) -> str:
    path, _, query = target.partition("?")
    return target if path in AFTER_SIGN_IN and not any(c in query for c in "\r\n\\") else "/label"


def html_page(name: str, status: int = 200, message: str = "", after: str = "/label") -> HTMLResponse:
    html = (PAGES / name).read_text(encoding="utf-8").replace("{{message}}", message).replace(
        "{{next}}", html_escape(after_sign_in(after), quote=True))
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def stored_image(store: ObjectStore, key: str, max_pixels: int) -> Response:
    """The stored image: as stored (PNG and JPEG), else converted to PNG. Blocking: run in a thread."""
    data = store.read_bytes(key)
    suffix = Path(key).suffix.lower()
    if suffix in PASS_THROUGH:
        return Response(data, media_type=PASS_THROUGH[suffix], headers={"Cache-Control": "private, max-age=3600"})
    return Response(encode_png(decode_image(data, "RGB", max_pixels)), media_type="image/png")
