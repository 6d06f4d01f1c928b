"""Pruning: lottery tickets found by iterative magnitude pruning.

- :mod:`~sktransfer.pruning.magnitude`: the mechanics on any torch module (masks, pruning by
  weight magnitude, snapshots and rewinding, making masks permanent);
- :mod:`~sktransfer.pruning.lottery`: :class:`PrunedClassifier`, the estimator that trains,
  prunes and rewinds round after round, and :func:`plot_lottery`.
"""

from .lottery import PrunedClassifier, plot_lottery
from .magnitude import (
    PRUNABLE_TYPES,
    attach_masks,
    expected_remaining,
    is_pruned,
    make_permanent,
    prunable_layers,
    prune_by_magnitude,
    refresh_masked_weights,
    reinitialize,
    rewind,
    snapshot,
    weights_remaining,
)

__all__ = [
    "PRUNABLE_TYPES",
    "PrunedClassifier",
    "attach_masks",
    "expected_remaining",
    "is_pruned",
    "make_permanent",
    "plot_lottery",
    "prunable_layers",
    "prune_by_magnitude",
    "refresh_masked_weights",
    "reinitialize",
    "rewind",
    "snapshot",
    "weights_remaining",
]
