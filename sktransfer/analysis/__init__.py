"""Choose before you train: representation similarity, transferability scores, layer choice.

- :func:`linear_cka`, :func:`rbf_cka`, :func:`gram_cka`, :func:`cka_matrix`: how alike two
  representations (layers, backbones) are on the same images (Kornblith et al., 2019).
- :func:`logme_score`, :func:`h_score`, :func:`nleep_score`, :func:`transrate_score`,
  :func:`gbc_score`, :func:`sfda_score` (a layer's features) and :func:`leep_score`,
  :func:`nce_score` (a source model's outputs): how well they will serve a labelled target
  task, without training; :func:`linear_probe_score` is the cross-validated ground truth
  they estimate (all from :mod:`sktransfer.transferability`).
- :func:`rank_layers`: every layer of one or more backbones scored, as a DataFrame.
- :func:`plot_tsne_pair`, :func:`plot_layer_scores`, :func:`plot_cka_heatmap`.

These tools read features (arrays, or :func:`extract_layer_features`, which runs a
:class:`~sktransfer.DeepFeatureExtractor`), never a network's internals.
"""

from ..transferability import (
    LAYER_SCORES,
    SOURCE_SCORES,
    gbc_score,
    h_score,
    leep_score,
    linear_probe_score,
    logme_score,
    nce_score,
    nleep_score,
    sfda_score,
    transrate_score,
)
from .cka import cka_matrix, gram_cka, linear_cka, rbf_cka
from .features import extract_layer_features, logits_layer
from .plots import plot_cka_heatmap, plot_layer_scores, plot_tsne_pair
from .ranking import rank_layers

__all__ = [
    "LAYER_SCORES",
    "SOURCE_SCORES",
    "cka_matrix",
    "extract_layer_features",
    "gbc_score",
    "gram_cka",
    "h_score",
    "leep_score",
    "linear_cka",
    "linear_probe_score",
    "logits_layer",
    "logme_score",
    "nce_score",
    "nleep_score",
    "plot_cka_heatmap",
    "plot_layer_scores",
    "plot_tsne_pair",
    "rank_layers",
    "rbf_cka",
    "sfda_score",
    "transrate_score",
]
