"""Plots as PNG bytes (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import io

import pandas as pd

from defect_assets.ml.records import EvaluationReport


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


def _single(w: float = 4.2, h: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(w, h))
    return plt, fig, ax


def roc_png(report: EvaluationReport, title: str) -> bytes:
    plt, fig, ax = _single()
    if report.task == "binary" and report.roc_curve is not None:
        c = report.roc_curve
        ax.plot(c.x, c.y, label=f"AUC {report.roc_auc:.3f}")
    for name, c in (report.ovr_roc_curves or {}).items():
        auc = next(p.roc_auc_ovr for p in report.per_class if p.class_name == name)
        ax.plot(c.x, c.y, label=f"{name} vs rest, AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return _png(plt, fig)


def pr_png(report: EvaluationReport, title: str) -> bytes:
    plt, fig, ax = _single()
    if report.pr_curve is not None:
        c = report.pr_curve
        ax.plot(c.x, c.y, label=f"PR AUC {report.pr_auc:.3f}")
        ax.axhline(report.positives / max(report.n, 1), ls="--", color="gray", lw=0.8, label="chance")
        ax.legend(loc="lower left", fontsize=8)
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    return _png(plt, fig)


def confusion_png(matrix: list[list[int]], classes: list[str], title: str) -> bytes:
    import numpy as np

    plt, fig, ax = _single()
    m = np.asarray(matrix)
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _png(plt, fig)


def score_histogram_png(y, score, classes: list[str], threshold: float | None, title: str) -> bytes:
    """Defect-probability histograms per true class, with the decision threshold."""
    import numpy as np

    plt, fig, ax = _single(5, 3.4)
    bins = np.linspace(0, 1, 26)
    for c, name in enumerate(classes):
        ax.hist(np.asarray(score)[np.asarray(y) == c], bins=bins, alpha=0.55, label=f"true {name}")
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="defect probability", ylabel="patches", title=title)
    ax.legend(fontsize=8)
    return _png(plt, fig)


def drift_png(reference_share: list[float], current_share: list[float], edges: list[float], psi: float,
              title: str) -> bytes:
    """Share of scores per bin (bins at the reference's quantiles): reference vs current."""
    import numpy as np

    plt, fig, ax = _single(5, 3.4)
    x = np.arange(len(reference_share))
    ax.bar(x - 0.2, reference_share, 0.4, label="test split (reference)")
    ax.bar(x + 0.2, current_share, 0.4, label="production")
    bounds = [0.0, *edges, 1.0]
    ax.set_xticks(x, [f"{bounds[i]:.2f}-{bounds[i + 1]:.2f}" for i in x], rotation=60, fontsize=7)
    ax.set(xlabel="defect score bin", ylabel="share of images")
    ax.set_title(f"{title}\nPSI {psi:.3f}", fontsize=9)
    ax.legend(fontsize=8)
    return _png(plt, fig)


def histogram_png(values, title: str, xlabel: str, bins: int = 30) -> bytes:
    plt, fig, ax = _single(5, 3.2)
    ax.hist(values, bins=bins, color="#4c78a8")
    ax.set(xlabel=xlabel, ylabel="count", title=title)
    return _png(plt, fig)


def tradeoff_png(candidates: list[dict], budget_ms: float | None, champion: str, metric: str) -> bytes:
    """Each candidate's validation ``metric`` against its p99 latency (the one the budget judged;
    log scale), the latency
    budget as a line and the champion ringed: the quality-latency trade-off at a glance."""
    import numpy as np

    plt, fig, ax = _single(5.2, 3.8)
    for c in candidates:
        x, y = c.get("budget_p99_ms", c.get("latency_p99_ms")), c.get("val_metric")
        if x is None or y is None or not np.isfinite(x) or not np.isfinite(y):
            continue
        chosen = c.get("model_version") == champion
        ax.scatter([x], [y], s=90 if chosen else 40, color="#c0392b" if chosen else "#2c7fb8",
                   edgecolors="black" if chosen else "none", zorder=3)
        ax.annotate(c.get("model_family", "?"), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if budget_ms:
        ax.axvline(budget_ms, color="#777", linestyle="--", linewidth=1)
        ax.text(budget_ms, ax.get_ylim()[0], f" budget {budget_ms:g} ms", fontsize=8, color="#555", va="bottom")
    ax.set_xscale("log")
    ax.set_xlabel("p99 latency, one full-size image, one client (ms)")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("quality against latency (champion ringed)")
    ax.grid(alpha=0.3)
    return _png(plt, fig)
