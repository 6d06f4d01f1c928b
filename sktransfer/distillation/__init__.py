"""Knowledge distillation: a small student learns from a large teacher.

One module per part, read in this order:

- :mod:`~sktransfer.distillation.losses`: what the student is taught (soft targets at a
  temperature, FitNets hints, relational distances and angles), as torch losses;
- :mod:`~sktransfer.distillation.students`: the small networks that learn (named CNNs and MLPs);
- :mod:`~sktransfer.distillation.teachers`: what the teacher says about each image (a fitted
  estimator's probabilities, a network's logits and hint maps);
- :mod:`~sktransfer.distillation.classifier`: :class:`DistilledClassifier`, the estimator that
  puts them together, and :func:`born_again` generations;
- :mod:`~sktransfer.distillation.generations`: a network retrained on its own soft labels,
  :class:`LabelRefinery` (the last generation) and :class:`BornAgainEnsemble` (their mean).
"""

from .classifier import DistilledClassifier, born_again
from .generations import BornAgainEnsemble, LabelRefinery
from .losses import (
    DistillationLoss,
    HintAdapter,
    hint_loss,
    kd_loss,
    probabilities_to_logits,
    rkd_angle_loss,
    rkd_distance_loss,
    soft_targets,
)
from .students import build_student, count_parameters, multiply_adds

__all__ = [
    "BornAgainEnsemble",
    "DistillationLoss",
    "DistilledClassifier",
    "HintAdapter",
    "LabelRefinery",
    "born_again",
    "build_student",
    "count_parameters",
    "hint_loss",
    "kd_loss",
    "multiply_adds",
    "probabilities_to_logits",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "soft_targets",
]
