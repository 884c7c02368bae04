"""Pictures a person would rather look at than read: contact sheets of patches."""

from __future__ import annotations

import numpy as np


def contact_sheet(patches: np.ndarray, columns: int = 12, gap: int = 2, background: int = 255) -> np.ndarray:
    """Tile (N, h, w[, C]) uint8 patches into one image, row-major, with a gap between tiles."""
    n = len(patches)
    if n == 0:
        return np.full((8, 8), background, np.uint8)
    h, w = patches.shape[1:3]
    cols = min(columns, n)
    rows = -(-n // cols)
    tail = patches.shape[3:]
    sheet = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, *tail), background, np.uint8)
    for i, p in enumerate(patches):
        r, c = divmod(i, cols)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        sheet[y:y + h, x:x + w] = p
    return sheet
