"""The context a training estimator's hooks receive: one fit's data, explicitly.

A :class:`FitContext` is made by ``NeuralClassifierBase._prepare_fit`` and filled step by step
(raw input, then preprocessing, then checked inputs and encoded labels, then targets); every
hook gets it as its argument instead of reading half-built attributes of the estimator. A
subclass keeps what its own hooks pass to each other (a teacher, a student) in
:attr:`FitContext.extras`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..images import ImageInputs
from .data import Preprocessing

__all__ = ["FitContext"]


@dataclass
class FitContext:
    """What the hooks of one fit see.

    Attributes
    ----------
    X, y : as given to ``fit``
        The raw input and labels (``y`` may be None for estimators that allow it).
    seed : int or None
        The fit's seed (``random_state`` resolved once); hooks run inside ``seeded(seed)``.
    preprocessing : Preprocessing or None
        How inputs are read; set by the ``_setup`` hook's return value.
    inputs : ImageInputs or None
        The checked training inputs (set before ``_encode_labels``).
    y_encoded : ndarray of int64 or None
        Class indices into ``classes_`` (set by ``_encode_labels``; -1 marks unlabelled
        samples of a distillation transfer set).
    targets : ndarray, dict of ndarray or None
        Per-sample training targets (set by ``_training_targets``).
    extras : dict
        The subclass's own, passed between its hooks (never read by the base).
    """

    X: Any = None
    y: Any = None
    seed: int | None = None
    preprocessing: Preprocessing | None = None
    inputs: ImageInputs | None = None
    y_encoded: np.ndarray | None = None
    targets: Any = None
    extras: dict = field(default_factory=dict)

    def example_batch(self, n: int = 2) -> torch.Tensor:
        """Up to ``n`` preprocessed training samples, e.g. to initialise lazy modules or to
        probe output sizes in ``_build_module``."""
        inputs = self.inputs[: min(n, len(self.inputs))]
        batch = next(inputs.batches(self.preprocessing.transform, n))
        return self.preprocessing.finish(batch, augment=False)
