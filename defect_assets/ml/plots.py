"""Plots as PNG bytes (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import io

import pandas as pd


def _figure(w: float = 9, h: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(1, 3, figsize=(w, h))


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def training_curves_png(history: pd.DataFrame, title: str) -> bytes:
    """Loss, accuracy and AUC per epoch, train vs validation."""
    plt, (fig, axes) = _figure()
    x = range(1, len(history) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy", "auc")):
        if metric in history:
            ax.plot(x, history[metric], label="train")
        if f"val_{metric}" in history:
            ax.plot(x, history[f"val_{metric}"], label="validation")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    return _png(plt, fig)
