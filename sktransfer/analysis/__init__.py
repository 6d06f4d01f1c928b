"""Choose before you train: representation similarity, transferability scores, layer choice.

- :func:`linear_cka`, :func:`rbf_cka`, :func:`gram_cka`, :func:`cka_matrix`: how alike two
  representations (layers, backbones) are on the same images (Kornblith et al., 2019).
- :func:`logme_score`, :func:`leep_score`, :func:`h_score`: how well features (or a source
  model's outputs) will serve a labelled target task, without training;
  :func:`linear_probe_score` is the cross-validated ground truth they estimate.
- :func:`rank_layers`: every layer of one or more backbones scored, as a DataFrame.
- :func:`plot_tsne_pair`, :func:`plot_layer_scores`, :func:`plot_cka_heatmap`.

These tools read features (arrays, or :func:`extract_layer_features`, which runs a
:class:`~sktransfer.DeepFeatureExtractor`), never a network's internals.
"""

from ..transferability import LAYER_SCORES, h_score, leep_score, linear_probe_score, logme_score
from .cka import cka_matrix, gram_cka, linear_cka, rbf_cka
from .features import extract_layer_features, logits_layer
from .plots import plot_cka_heatmap, plot_layer_scores, plot_tsne_pair
from .ranking import rank_layers

__all__ = [
    "LAYER_SCORES",
    "cka_matrix",
    "extract_layer_features",
    "gram_cka",
    "h_score",
    "leep_score",
    "linear_cka",
    "linear_probe_score",
    "logits_layer",
    "logme_score",
    "plot_cka_heatmap",
    "plot_layer_scores",
    "plot_tsne_pair",
    "rank_layers",
    "rbf_cka",
]
