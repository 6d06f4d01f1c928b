"""Transferability scores: how well features will serve a target task, without training.

A leaf package (numpy, scipy and scikit-learn only; it never imports torch or the rest of
sktransfer): the extractor's ``layers="auto"`` and :mod:`sktransfer.analysis` both use it.
One module per family:

- :mod:`.evidence`: LogME (You et al., 2021), the log marginal evidence of a Bayesian linear
  model from the features to the one-hot labels.
- :mod:`.hscore`: the H-score (Bao et al., 2019), plain or shrunk (Ibrahim et al., 2022).
- :mod:`.leep`: label-transition scores: LEEP (Nguyen et al., 2020) and NCE (Tran et al.,
  2019) from a source model's outputs, N-LEEP (Li et al., 2021) from a layer's features.
- :mod:`.transrate`: TransRate (Huang et al., 2022), a coding-rate difference.
- :mod:`.separability`: GBC (Pandy et al., 2022) and SFDA (Shao et al., 2022).
- :mod:`.probe`: :func:`linear_probe_score`, the cross-validated ground truth they stand in
  for.

``LAYER_SCORES`` names the scores that rate one layer's features against labels (the
choices of ``DeepFeatureExtractor(layers="auto", layer_score=...)`` and ``rank_layers``);
``SOURCE_SCORES`` those that rate a source model from its class probabilities.
"""

from .evidence import logme_score
from .hscore import h_score, h_score_shrunk
from .leep import leep_score, nce_score, nleep_score
from .probe import linear_probe_score
from .separability import gbc_score, sfda_score
from .transrate import transrate_score

__all__ = [
    "LAYER_SCORES",
    "SOURCE_SCORES",
    "gbc_score",
    "h_score",
    "leep_score",
    "linear_probe_score",
    "logme_score",
    "nce_score",
    "nleep_score",
    "sfda_score",
    "transrate_score",
]

LAYER_SCORES = {
    "logme": logme_score,
    "h_score": h_score,
    "h_score_shrunk": h_score_shrunk,
    "nleep": nleep_score,
    "transrate": transrate_score,
    "gbc": gbc_score,
    "sfda": sfda_score,
    "linear_probe": linear_probe_score,
}

SOURCE_SCORES = {"leep": leep_score, "nce": nce_score}
