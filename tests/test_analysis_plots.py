"""Plots return a Figure and save a PNG."""

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="plots need matplotlib (the 'plots' extra)")

from matplotlib.figure import Figure  # noqa: E402

from sktransfer.analysis import (  # noqa: E402
    cka_matrix,
    plot_cka_heatmap,
    plot_layer_scores,
    plot_tsne_pair,
    rank_layers,
)

PNG_MAGIC = b"\x89PNG"


def test_tsne_pair_subsamples_with_seed(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    path = tmp_path / "tsne.png"
    figure = plot_tsne_pair(
        rng.normal(size=(90, 5)),
        y[:, None] + rng.normal(size=(90, 4)),
        y,
        max_samples=40,
        titles=("a", "b"),
        path=path,
    )
    assert isinstance(figure, Figure)
    assert [ax.get_title() for ax in figure.axes] == ["a", "b"]
    assert "40 of 90 samples (seed 0)" in figure.get_suptitle()
    assert sum(len(c.get_offsets()) for c in figure.axes[0].collections) == 40
    assert [t.get_text() for t in figure.axes[1].get_legend().get_texts()] == ["0", "1", "2"]
    assert path.read_bytes()[:4] == PNG_MAGIC
    with pytest.raises(ValueError, match="same samples"):
        plot_tsne_pair(rng.normal(size=(10, 2)), rng.normal(size=(9, 2)), y[:10])


def test_layer_scores_one_panel_per_backbone(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 15)
    layers = {f"l{i}": i * y[:, None] + rng.normal(size=(30, 3)) for i in range(4)}
    table = rank_layers({"n1": layers, "n2": layers}, y, scores=["logme", "h_score"], probe=True)
    figure = plot_layer_scores(table, path=tmp_path / "scores.png")
    assert len(figure.axes) == 2
    # Two scores and the probe accuracy, drawn in layer order.
    assert len(figure.axes[0].lines) == 3
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["l0", "l1", "l2", "l3"]
    assert (tmp_path / "scores.png").read_bytes()[:4] == PNG_MAGIC


def test_cka_heatmap(tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 4))
    figure = plot_cka_heatmap(cka_matrix({"a": X, "b": X[:, :2]}), path=tmp_path / "cka.png")
    image = figure.axes[0].images[0].get_array()
    assert image.shape == (2, 2)
    assert image[0, 0] == pytest.approx(1.0)
    assert (tmp_path / "cka.png").read_bytes()[:4] == PNG_MAGIC
