"""A self-contained HTML evaluation report: inline CSS, PNGs embedded as data: URIs, no
scripts, no external links, so it opens offline and can be mailed as one file."""

from __future__ import annotations

import base64
import html

import pandas as pd

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{margin:.3em;border:1px solid #eee}
.meta{color:#555;font-size:.9em}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em}"""


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, float_format=lambda v: f"{v:.4f}", escape=True)


def render_report(title: str, facts: dict, sections: list[tuple[str, pd.DataFrame | None, list[bytes]]]) -> str:
    """facts: key -> value shown at the top; sections: (heading, table or None, PNG images)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><table class='meta'>"]
    parts += [f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items()]
    parts.append("</table>")
    for heading, table, images in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if table is not None:
            parts.append(_table(table))
        for png in images:
            parts.append(f"<img alt='{html.escape(heading)}' "
                         f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
