"""The report's figures, as PNG bytes: scores by layer, t-SNE of two layers, feature
extraction against fine-tuning, and the recommended model's confusion matrix."""

from __future__ import annotations

import io

import numpy as np

from .plan import TSNE_SAMPLES

__all__ = ["plot_comparison", "plot_confusion", "plot_scores", "png", "tsne_png"]


def png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def tsne_png(shallow, deep, y, titles, random_state) -> bytes:
    """t-SNE of a shallow and a deep layer's features, side by side (memoised by the
    t-SNE stage: it is the report's slowest plot)."""
    from threadpoolctl import threadpool_limits

    from ..analysis import plot_tsne_pair

    # One thread: on shared or oversubscribed cores, OpenMP's spin-waits made t-SNE 10x slower.
    with threadpool_limits(1):
        figure = plot_tsne_pair(
            shallow, deep, y, titles=titles, max_samples=TSNE_SAMPLES, random_state=random_state
        )
    return png(figure)


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def plot_scores(table):
    """Probe accuracy (left axis) and the unsupervised scores (normalised, right) by depth."""
    rows = table.sort_values("depth")
    figure = _figure(figsize=(8, 4.5))
    ax = figure.subplots()
    x = np.arange(len(rows))
    if "probe_accuracy" in rows:
        ax.plot(x, rows["probe_accuracy"], "ks-", linewidth=2.5, label="probe accuracy (3-fold)")
    ax.set_ylabel("linear-probe accuracy")
    ax.set_xticks(x, rows["layer"], rotation=60, ha="right", fontsize=8)
    twin = ax.twinx()
    for name, style in (("logme", "o--"), ("h_score", "^--"), ("leep", "v:")):
        if name in rows and rows[name].nunique() > 1:
            values = rows[name].to_numpy(float)
            span = values.max() - values.min()
            twin.plot(x, (values - values.min()) / (span or 1), style, label=name)
    twin.set_ylabel("score, min-max normalised")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower right")
    ax.set_title("Transfer scores and linear-probe accuracy by layer")
    return figure


def plot_comparison(extraction, finetune):
    names = ["feature extraction"] + (["fine-tuning"] if finetune else [])
    accuracy = [extraction["accuracy"]] + ([finetune["accuracy"]] if finetune else [])
    seconds = [extraction["fit_seconds"]] + ([finetune["fit_seconds"]] if finetune else [])
    figure = _figure(figsize=(8, 3.5))
    left, right = figure.subplots(1, 2)
    colours = ["tab:blue", "tab:orange"][: len(names)]
    left.bar(names, accuracy, color=colours)
    left.set_ylim(0, 1)
    left.set_ylabel("held-out accuracy")
    for i, value in enumerate(accuracy):
        left.text(i, value, f"{value:.3f}", ha="center", va="bottom")
    right.bar(names, seconds, color=colours)
    right.set_ylabel("fit time (s)")
    right.set_ylim(0, max(seconds) * 1.15)  # room for the labels
    for i, value in enumerate(seconds):
        right.text(i, value, f"{value:.0f} s", ha="center", va="bottom")
    figure.suptitle("Feature extraction against light fine-tuning")
    return figure


def plot_confusion(y_true, y_pred, classes, recommendation):
    from sklearn.metrics import ConfusionMatrixDisplay

    figure = _figure(figsize=(5.5, 5))
    ax = figure.subplots()
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=classes, ax=ax, colorbar=False, xticks_rotation=45
    )
    ax.set_title(f"Recommended: {recommendation['approach']} (test)")
    return figure
