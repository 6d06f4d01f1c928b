"""Training base: one skorch-driven classifier that fine-tuning, distillation and pruning share.

One module per part, read in this order:

- :mod:`~sktransfer.training.data`: how inputs are read (:class:`Preprocessing`, augmentation,
  :class:`ImageDataset`, :class:`BatchLoader`);
- :mod:`~sktransfer.training.callbacks`: the skorch callbacks every estimator runs;
- :mod:`~sktransfer.training.net`: the skorch net (mixed precision, streamed batches, the
  estimator's parameter groups and frozen modules) and the module helpers;
- :mod:`~sktransfer.training.context`: :class:`FitContext`, what the hooks receive;
- :mod:`~sktransfer.training.base`: :class:`NeuralClassifierBase` and its hook protocol.
"""

from .base import NeuralClassifierBase, store_parameters, with_training_parameters
from .context import FitContext
from .data import AUGMENTATIONS, BatchLoader, ImageDataset, Preprocessing
from .net import count_trainable, frozen_submodules

__all__ = [
    "AUGMENTATIONS",
    "BatchLoader",
    "FitContext",
    "ImageDataset",
    "NeuralClassifierBase",
    "Preprocessing",
    "count_trainable",
    "frozen_submodules",
    "store_parameters",
    "with_training_parameters",
]
