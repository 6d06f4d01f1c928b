"""How a training estimator reads its data: preprocessing, augmentation, dataset and batches.

:class:`Preprocessing` says how a network reads its inputs (a backbone's preset, or images as
float in [0, 1], or vectors); :class:`ImageDataset` pairs checked inputs with per-sample targets;
:class:`BatchLoader` streams (optionally shuffled and augmented) batches of it to skorch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..backbones import ToUnitFloat
from ..images import ImageInputs

__all__ = ["AUGMENTATIONS", "BatchLoader", "ImageDataset", "Preprocessing", "is_tabular"]

#: Built-in training augmentations (never applied at prediction).
AUGMENTATIONS = ("flip", "crop", "crop_flip")


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """How a network reads its inputs.

    Attributes
    ----------
    transform : callable or None
        Deterministic preprocessing of a (C, H, W) or (N, C, H, W) uint8/float tensor, used for
        prediction and validation (e.g. a torchvision ``ImageClassification`` preset). None:
        images are passed as float in [0, 1] at their own size.
    takes_vectors : bool
        Whether 2-D feature vectors are valid input.
    resize_size, crop_size : int or None
        For augmentation with a preset: images are resized (shorter side) and center-cropped
        to ``resize_size`` squares when decoded, then randomly cropped to ``crop_size``.
    mean, std : tuple of float or None
        Normalisation applied after augmentation.
    """

    transform: Callable | None = None
    takes_vectors: bool = True
    resize_size: int | None = None
    crop_size: int | None = None
    mean: tuple | None = None
    std: tuple | None = None

    @classmethod
    def from_backbone(cls, backbone) -> Preprocessing:
        """The preprocessing of a :class:`~sktransfer.backbones.Backbone`."""
        transform = backbone.transform
        if transform is None or isinstance(transform, ToUnitFloat):  # a plain module's
            return cls(None, backbone.takes_vectors)
        crop = getattr(transform, "crop_size", None)
        resize = getattr(transform, "resize_size", None)
        return cls(
            transform,
            backbone.takes_vectors,
            int(resize[0]) if resize else None,
            int(crop[0]) if crop else None,
            tuple(getattr(transform, "mean", ())) or None,
            tuple(getattr(transform, "std", ())) or None,
        )

    def decode_transform(self, augment: bool):
        """The per-image transform run while decoding (in worker threads)."""
        if not augment or self.transform is None:
            return self.transform
        if self.resize_size is None or self.crop_size is None:
            raise ValueError(
                f"Augmentation needs a preprocessing with resize and crop sizes; "
                f"{type(self.transform).__name__} has none. Pass augmentation=None."
            )
        return v2.Compose(
            [
                v2.Resize(self.resize_size, antialias=True),
                v2.CenterCrop(self.resize_size),
            ]
        )

    def finish(self, batch: torch.Tensor, augment: bool) -> torch.Tensor:
        """Float conversion and, after augmentation, normalisation of a decoded batch."""
        if batch.is_floating_point() and not (augment and self.transform is not None):
            return batch.float()
        batch = F.to_dtype(batch, torch.float32, scale=True)
        if augment and self.mean is not None:
            batch = F.normalize(batch, list(self.mean), list(self.std))
        return batch


def _augmenter(augmentation, preprocessing: Preprocessing, image_size) -> Callable:
    """A per-sample augmentation of a (C, H, W) tensor, drawing from torch's global RNG."""
    if callable(augmentation):
        return augmentation
    size = preprocessing.crop_size or tuple(image_size)
    steps = []
    if augmentation in ("crop", "crop_flip"):
        steps.append(v2.RandomResizedCrop(size, antialias=True))
    if augmentation in ("flip", "crop_flip"):
        steps.append(v2.RandomHorizontalFlip())
    if preprocessing.crop_size is not None and augmentation == "flip":
        steps.insert(0, v2.CenterCrop(preprocessing.crop_size))
    return v2.Compose(steps)


# --------------------------------------------------------------------------- data


class ImageDataset(torch.utils.data.Dataset):
    """Images (or vectors) with optional per-sample targets, read the network's way.

    Indexing returns one preprocessed ``(x, target)`` pair (usable with a torch
    ``DataLoader``); :class:`BatchLoader` streams whole batches faster, decoding files in
    threads.

    Parameters
    ----------
    inputs : ImageInputs
    targets : ndarray, dict of ndarray or None
        First axis ``n_samples``. A dict holds class indices under ``"y"``.
    preprocessing : Preprocessing
    augmentation : {"flip", "crop", "crop_flip"}, callable or None
        Applied by :class:`BatchLoader` only when it iterates for training.
    """

    def __init__(self, inputs: ImageInputs, targets=None, *, preprocessing, augmentation=None):
        self.inputs = inputs
        self.targets = targets
        self.preprocessing = preprocessing
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index):
        x = next(self.inputs.take([index]).batches(self.preprocessing.transform, 1))
        x = self.preprocessing.finish(x, augment=False)[0]
        return x, _target_slice(self.targets, [index], squeeze=True)

    def subset(self, indices) -> ImageDataset:
        """The samples at ``indices`` with their targets."""
        indices = np.asarray(indices)
        return ImageDataset(
            self.inputs.take(indices),
            None if self.targets is None else _index_targets(self.targets, indices),
            preprocessing=self.preprocessing,
            augmentation=self.augmentation,
        )

    @property
    def class_indices(self):
        """The class index of each sample (None without targets)."""
        if isinstance(self.targets, dict):
            return self.targets["y"]
        return self.targets


def _index_targets(targets, indices):
    if isinstance(targets, dict):
        return {key: value[indices] for key, value in targets.items()}
    return targets[indices]


def _target_slice(targets, indices, squeeze=False):
    if targets is None:
        return torch.zeros(len(indices)) if not squeeze else torch.tensor(0.0)
    part = _index_targets(targets, indices)
    if isinstance(part, dict):
        return {k: torch.as_tensor(v[0] if squeeze else v) for k, v in part.items()}
    return torch.as_tensor(part[0] if squeeze else part)


class BatchLoader:
    """Batches of an :class:`ImageDataset`: shuffled and augmented when training.

    Files are decoded by ``n_workers`` threads one batch ahead (through
    :meth:`ImageInputs.batches`); random crops and flips run in the calling thread, so they
    draw from torch's global generator in a fixed order and seeded runs repeat exactly.
    Each iteration is one epoch; the order of each epoch comes from a numpy generator seeded
    once from torch's generator when the loader is made.
    """

    def __init__(self, dataset: ImageDataset, *, batch_size, shuffle, augment, n_workers=1):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment and dataset.augmentation is not None
        self.n_workers = n_workers
        self._rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,)))) if shuffle else None

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        dataset, n = self.dataset, len(self.dataset)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        inputs = dataset.inputs.take(order) if self.shuffle else dataset.inputs
        preprocessing = dataset.preprocessing
        decode = preprocessing.decode_transform(self.augment)
        start = 0
        for batch in inputs.batches(decode, self.batch_size, self.n_workers):
            stop = start + len(batch)
            if self.augment:
                augment = _augmenter(dataset.augmentation, preprocessing, batch.shape[-2:])
                batch = torch.stack([augment(image) for image in batch])
            batch = preprocessing.finish(batch, self.augment)
            yield batch, _target_slice(dataset.targets, order[start:stop])
            start = stop


def is_tabular(X) -> bool:
    """Whether X is a table (sparse, or numbers in at most 2 dimensions), not images."""
    if sp.issparse(X):
        return True
    if isinstance(X, str | os.PathLike | Image.Image):
        return False
    try:
        array = np.asarray(X)
    except (TypeError, ValueError):
        return False
    if array.dtype.kind in "USV" or array.ndim > 2:
        return False
    if array.dtype == object:
        return not any(isinstance(v, str | os.PathLike | Image.Image) for v in array.flat)
    return True
