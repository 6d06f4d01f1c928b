"""The lottery plot: accuracy against the fraction of weights remaining."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

__all__ = ["plot_lottery"]


def plot_lottery(history, *, metric="test_accuracy_at_best", ax=None, label="winning ticket"):
    """Accuracy against the fraction of weights remaining, with the re-init control.

    Parameters
    ----------
    history : pandas.DataFrame or PrunedClassifier
        ``PrunedClassifier.history_`` (or the fitted estimator).
    metric : str, default="test_accuracy_at_best"
        A ``history_`` column; falls back to ``valid_accuracy_at_best`` when absent. The
        control is read from ``"reinit_" + metric`` when present.
    ax : matplotlib Axes or None
        Draw into this Axes; None makes a new figure.
    label : str
        Legend label of the ticket curve.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if isinstance(history, BaseEstimator):  # a PrunedClassifier
        check_is_fitted(history)
        history = history.history_
    if metric not in history:
        fallback = "valid_accuracy_at_best"
        if fallback not in history:
            raise ValueError(f"history has no column {metric!r}; columns: {list(history)}.")
        metric = fallback
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    percent = 100 * history["weights_remaining"]
    ax.plot(percent, history[metric], "o-", label=label)
    control = "reinit_" + metric
    if control in history:
        # The control shares the dense starting point; it differs from the first pruning on.
        x = percent.copy()
        y = history[control].copy()
        y.iloc[0] = history[metric].iloc[0]
        ax.plot(x, y, "s--", label="random re-init")
    ax.set_xscale("log")
    # Label the measured fractions themselves (100, 80, ..., 3.6), not powers of ten.
    picks = np.unique(np.linspace(0, len(percent) - 1, min(len(percent), 8)).round().astype(int))
    ticks = list(percent.iloc[picks])
    ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig
