"""Tiny networks, estimators and data shared by the tests, each defined once.

Plain functions and classes, imported (pytest puts tests/ on sys.path), because they are
called with arguments, subclassed, or needed when tests are collected (the common checks'
estimators); the fixtures built on them live in conftest.py. The convolutional networks are
seeded: each call returns the same "pretrained" weights.
"""

import numpy as np
import torch
from torch import nn

from sktransfer.training import NeuralClassifierBase, store_parameters, with_training_parameters


def tiny_network():
    """Two convolutions, a global average pool and a 5-way classifier (the report's network
    and the one given to its script are then the same)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def tiny_cnn(seed=0):
    """Two convolutions (taps "1" and "3"), a pool and a 2-way classifier ("5" is its output)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2),
    )  # fmt: skip


def pooled_conv():
    """One convolution and a pool: 4 features per image at layer "1"."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def lazy_mlp():
    """8 hidden units, 3 outputs; the lazy first layer adapts to any number of features."""
    return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 3))


def small_mlp(n_features=6, n_classes=2):
    return nn.Sequential(nn.Linear(n_features, 8), nn.ReLU(), nn.Linear(8, n_classes))


def float_images(n=12, seed=0):
    """n random float32 images in [0, 1], 16 x 16 x 3."""
    return np.random.default_rng(seed).random((n, 16, 16, 3), dtype=np.float32)


def labelled_images(n=24, size=12, coloured=(5,)):
    """n random uint8 images of classes 1, 5, 9 in turn; the k-th class of ``coloured`` has its
    k-th colour channel saturated, which makes it learnable (the others are noise)."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    y = np.array([1, 5, 9] * (n // 3))
    for channel, label in enumerate(coloured):
        X[y == label, :, :, channel] = 255
    return X, y


class TinyClassifier(NeuralClassifierBase):
    """The training base on a small MLP (vectors) or CNN (images), with a frozen first layer
    option; subclasses change only the network (``_build_module``)."""

    @with_training_parameters(
        max_epochs=5, lr=0.1, batch_size=16, validation_fraction=0.2, n_iter_no_change=2,
        device="cpu", n_jobs=1,
    )  # fmt: skip
    def __init__(self, *, freeze_first=False, **training):
        store_parameters(self, locals())

    def _build_module(self, context):
        n_classes = len(self.classes_)
        if self.input_kind_ == "vectors":
            first = nn.Sequential(nn.Linear(self.n_features_in_, 8), nn.BatchNorm1d(8))
            width = 8
        else:
            first = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1))
            width = 4
        module = nn.Sequential(first, nn.Flatten(), nn.ReLU(), nn.Linear(width, n_classes))
        if self.freeze_first:
            first.requires_grad_(False)
        return module


class TinyMLP(TinyClassifier):
    """n_features -> 16 -> 8 -> n_classes on vectors, three prunable Linear layers ("0", "2",
    "4"); ``freeze_first`` plays a pretrained layer."""

    def _build_module(self, context):
        n_classes = len(self.classes_)
        module = nn.Sequential(
            nn.Linear(self.n_features_in_, 16),
            nn.ReLU(),
            nn.Linear(16, 8),
            nn.ReLU(),
            nn.Linear(8, n_classes),
        )
        if self.freeze_first:
            module[0].requires_grad_(False)
        return module
