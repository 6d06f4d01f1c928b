"""Plots for choosing a layer: t-SNE of two layers (the DeCAF figure), scores by layer, CKA.

Each function draws on a new :class:`matplotlib.figure.Figure` (no pyplot state, so they work
headless and in threads), saves it as PNG when given a path, and returns it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..transferability import LAYER_SCORES, SOURCE_SCORES

__all__ = ["plot_cka_heatmap", "plot_layer_scores", "plot_tsne_pair"]


def plot_tsne_pair(
    first,
    second,
    y,
    *,
    titles=("first layer", "second layer"),
    max_samples=1000,
    perplexity=30.0,
    random_state=0,
    path=None,
):
    """t-SNE maps of two layers' features side by side, coloured by class (DeCAF, Fig. 1).

    Parameters
    ----------
    first, second : array-like of shape (n_samples, n_features)
        Two layers' features of the same samples.
    y : array-like of shape (n_samples,)
        Class labels, for the colours.
    titles : pair of str
    max_samples : int, default=1000
        Larger inputs are subsampled (the same samples on both sides) with ``random_state``:
        t-SNE is quadratic in the number of samples.
    perplexity : float, default=30
        Capped at ``(n_samples - 1) / 3`` for small inputs.
    random_state : int, default=0
        Seed of the subsample and of both t-SNE runs.
    path : str or path-like, optional
        Save the figure there as PNG.

    Returns
    -------
    figure : matplotlib.figure.Figure
        Two panels, one t-SNE map per layer, with a legend when there are at most 10
        classes.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import plot_tsne_pair
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 15)
    >>> fig = plot_tsne_pair(rng.normal(size=(30, 5)), y[:, None] + rng.normal(size=(30, 5)), y)
    >>> len(fig.axes)
    2
    """
    from sklearn.manifold import TSNE

    Figure = _figure_class()
    first, second, y = _same_samples(first, second, y)
    keep = _subsample(len(y), max_samples, random_state)
    classes, codes = np.unique(y[keep], return_inverse=True)
    figure = Figure(figsize=(11, 5), layout="constrained")
    axes = figure.subplots(1, 2)
    tsne = TSNE(
        perplexity=min(perplexity, max(1.0, (len(keep) - 1) / 3)),
        init="pca",
        random_state=random_state,
    )
    colours = _class_colours(len(classes))
    for ax, features, title in zip(axes, (first, second), titles):
        _scatter_by_class(ax, tsne.fit_transform(features[keep]), codes, classes, colours)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(classes) <= 10:
        axes[1].legend(fontsize=8, markerscale=2, loc="best")
    note = f"{len(keep)} of {len(y)} samples (seed {random_state})"
    note = note if len(keep) < len(y) else f"{len(y)} samples"
    figure.suptitle(f"t-SNE of two layers, coloured by class ({len(classes)} classes; {note})")
    return _save(figure, path)


def _same_samples(first, second, y):
    """The two layers' features as float64 and the labels, checked to describe the same
    samples."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    y = np.asarray(y)
    if not (len(first) == len(second) == len(y)) or first.ndim != 2 or second.ndim != 2:
        raise ValueError(
            "first, second and y must describe the same samples: 2-D features with one row "
            f"per label; got shapes {first.shape}, {second.shape} and {y.shape}."
        )
    return first, second, y


def _scatter_by_class(ax, embedded, codes, classes, colours) -> None:
    for code, label in enumerate(classes):  # one artist per class, for the legend
        points = embedded[codes == code]
        ax.scatter(
            points[:, 0], points[:, 1], color=colours[code], s=8, linewidths=0, label=str(label)
        )


def plot_layer_scores(table, *, scores=None, path=None):
    """Each score and the probe accuracy by layer depth, one panel per backbone.

    Parameters
    ----------
    table : pandas.DataFrame
        The output of :func:`sktransfer.analysis.rank_layers` (columns ``backbone``,
        ``layer``, ``depth``, score columns, optionally ``probe_accuracy``).
    scores : list of str, optional
        Which score columns to draw; default all of them. Scores live on different scales,
        so every curve is min-max normalised within its backbone (the shape, not the value,
        tells which layer wins).
    path : str or path-like, optional
        Save the figure there as PNG.

    Returns
    -------
    figure : matplotlib.figure.Figure
        One panel per backbone: a curve per score over the layers in depth order.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import plot_layer_scores, rank_layers
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> feats = {f"block{i}": i * y[:, None] + rng.normal(size=(40, 3)) for i in range(3)}
    >>> fig = plot_layer_scores(rank_layers(feats, y, scores=["logme", "h_score"]))
    >>> len(fig.axes)
    1
    """
    Figure = _figure_class()
    if not isinstance(table, pd.DataFrame) or not {"backbone", "layer", "depth"} <= set(
        table.columns
    ):
        raise ValueError("table must be a DataFrame from rank_layers (backbone, layer, depth).")
    known = (*LAYER_SCORES, *SOURCE_SCORES)
    if scores is None:
        scores = [c for c in known if c in table.columns]
    backbones = list(dict.fromkeys(table["backbone"]))
    figure = Figure(figsize=(6 * len(backbones), 4.5), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(backbones), squeeze=False)[0])
    for ax, backbone in zip(axes, backbones):
        rows = table[table["backbone"] == backbone].sort_values("depth")
        x = np.arange(len(rows))
        for name in scores:
            ax.plot(x, _minmax(rows[name]), marker="o", label=name)
        if "probe_accuracy" in rows:
            accuracy = rows["probe_accuracy"].to_numpy()
            ax.plot(
                x,
                _minmax(accuracy),
                color="black",
                linewidth=2.5,
                marker="s",
                label=f"probe accuracy ({accuracy.min():.3f}-{accuracy.max():.3f})",
            )
        ax.set_xticks(x, rows["layer"], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("min-max normalised within backbone")
        ax.set_title(backbone or "layers")
        ax.legend(fontsize=8)
    return _save(figure, path)


def plot_cka_heatmap(matrix, *, title="Linear CKA", path=None):
    """A CKA matrix (:func:`sktransfer.analysis.cka_matrix`) as a heatmap on [0, 1].

    Parameters
    ----------
    matrix : pandas.DataFrame
        Rows and columns are layers.
    title : str, default="Linear CKA"
    path : str or path-like, optional
        Save the figure there as PNG.

    Returns
    -------
    figure : matplotlib.figure.Figure
        The heatmap (rows and columns in the matrix's order) and its colour bar.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import cka_matrix, plot_cka_heatmap
    >>> X = np.random.default_rng(0).normal(size=(30, 6))
    >>> fig = plot_cka_heatmap(cka_matrix({"a": X, "b": X[:, :2]}))
    >>> len(fig.axes)  # the heatmap and its colour bar
    2
    """
    Figure = _figure_class()
    if not isinstance(matrix, pd.DataFrame):
        raise ValueError(
            f"matrix must be a DataFrame from cka_matrix; got {type(matrix).__name__}."
        )
    size = (max(4.0, 0.4 * matrix.shape[1] + 2), max(3.5, 0.4 * matrix.shape[0] + 1.5))
    figure = Figure(figsize=size, layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=1, cmap="magma", origin="lower")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=8)
    ax.set_title(title, fontsize=10)
    figure.colorbar(image, ax=ax)
    return _save(figure, path)


# --------------------------------------------------------------------------- helpers


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # matplotlib is an optional dependency
        raise ImportError("Plots need matplotlib: pip install 'sktransfer[plots]'.") from error
    return Figure


def _subsample(n: int, max_samples: int, random_state: int) -> np.ndarray:
    if n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng(random_state).choice(n, max_samples, replace=False))


def _class_colours(n_classes: int) -> np.ndarray:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n_classes <= 10 else "tab20" if n_classes <= 20 else "turbo"]
    if n_classes <= 20:
        return np.asarray([cmap(i) for i in range(n_classes)])
    return cmap(np.linspace(0, 1, n_classes))


def _minmax(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    span = values.max() - values.min()
    return np.zeros_like(values) if span == 0 else (values - values.min()) / span


def _save(figure, path):
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
