"""Training base: one skorch-driven classifier that fine-tuning, distillation and pruning share.

:class:`NeuralClassifierBase` is a scikit-learn classifier that owns a configured skorch
``NeuralNetClassifier`` (``net_``, composition rather than inheritance, so scikit-learn's
rules hold: parameters stored verbatim, nothing built before ``fit``). It reads ``X`` through
:func:`sktransfer.images.check_images`, encodes labels, splits off a validation set for early
stopping, streams (optionally augmented) batches, runs skorch's loop with skorch's callbacks,
history and progress bar, and predicts the original labels.

Hook contract (subclasses override these; each has a working default unless marked required)
---------------------------------------------------------------------------------------------
``_setup(self, random_state) -> Preprocessing``
    Called first in ``fit``, inside ``seeded(random_state)``. Load what the estimator needs
    (backbone, teacher...), store it in ``_``-attributes, and return how inputs are read: the
    deterministic preprocessing, whether 2-D vectors are valid input, and the sizes that
    augmentation crops to (:meth:`Preprocessing.from_backbone` builds it from a
    :class:`~sktransfer.backbones.Backbone`). Default: a plain module's preprocessing (images as
    float in [0, 1] at their own size, or vectors).
``_build_module(self, n_classes) -> torch.nn.Module``  (required)
    The network to train, on the CPU, with ``requires_grad`` already set on what trains.
    Called inside ``seeded(random_state)`` after labels are known. ``self._example_batch()``
    returns a preprocessed batch of (up to) two training samples, e.g. to initialise lazy
    modules or to probe output sizes.
``_param_groups(self, module) -> list[dict]``
    Optimizer parameter groups (``{"params": [...], "lr": ...}``, torch's format). Default:
    every parameter with ``requires_grad`` at ``self.lr``. Groups without an ``lr`` get
    ``self.lr``.
``_criterion(self) -> torch.nn.Module``
    Called as ``criterion(logits, targets)`` where ``targets`` is the batch's slice of what
    :meth:`_training_targets` returned (a tensor, or a dict of tensors). Default:
    ``CrossEntropyLoss`` on class indices.
``_training_targets(self, inputs, y_encoded) -> ndarray or dict of ndarray``
    Per-sample training targets, first axis ``n_samples``; a dict must hold the class indices
    under ``"y"`` (validation accuracy and the stratified split read them). Distillation adds
    the teacher's soft targets here. Default: ``y_encoded``.
``_frozen_modules(self, module) -> list[torch.nn.Module]``
    Submodules kept in eval mode while training. Default: every submodule whose parameters
    are all frozen (:func:`frozen_submodules`), so frozen BatchNorm statistics never drift and
    dropout inside a frozen block does not perturb the features it feeds.

Subclassing: list every base parameter in the subclass's own ``__init__`` (keyword-only,
stored verbatim, passed to ``super().__init__``), extend ``_parameter_constraints`` with
``{**NeuralClassifierBase._parameter_constraints, ...}``, and keep ``fit`` as
``inputs, y_encoded = self._prepare_fit(X, y)`` then ``self._continue_training(inputs,
y_encoded)`` (plus whatever comes after). ``inputs`` is an
:class:`~sktransfer.images.ImageInputs`; to read it through a frozen network (a teacher) use
:mod:`sktransfer.frozen`. The validation loss goes through the same criterion (with the
validation samples' targets), so a criterion taking dict targets works there too.
``tests/test_training.py`` has a minimal subclass.

Continuing training (pruning rewinds weights and retrains without rebuilding): after ``fit``
or :meth:`_prepare_fit`, change ``self.net_.module_`` in place (or give a new module to
:meth:`_set_module`) and call :meth:`_continue_training`; it re-creates the optimizer from
``_param_groups`` (so newly frozen or re-parametrised weights are respected), keeps the
history (epochs accumulate) and recomputes ``n_trainable_params_``.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from PIL import Image
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)
from skorch import NeuralNetClassifier
from skorch.callbacks import (
    Callback,
    EarlyStopping,
    EpochTimer,
    PassthroughScoring,
)
from skorch.exceptions import DeviceWarning as SkorchDeviceWarning
from skorch.helper import predefined_split
from skorch.utils import noop, to_tensor
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ._compat import Interval, StrOptions, _fit_context
from .backbones import ToUnitFloat
from .devices import available_or_cpu, resolve_device, seed_from, seeded
from .images import ImageInputs, check_images
from .progress import PlainPrintLog, PlainProgressBar, training_header

__all__ = [
    "NeuralClassifierBase",
    "Preprocessing",
    "ImageDataset",
    "BatchLoader",
    "frozen_submodules",
    "count_trainable",
    "AUGMENTATIONS",
]

#: Built-in training augmentations (never applied at prediction).
AUGMENTATIONS = ("flip", "crop", "crop_flip")

_OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"momentum": 0.9}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
}


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


# --------------------------------------------------------------------------- modules


def frozen_submodules(module: nn.Module) -> list[nn.Module]:
    """The outermost submodules that hold parameters, none of them trainable."""
    frozen, covered = [], []
    for name, sub in module.named_modules():
        if any(name.startswith(prefix) for prefix in covered):
            continue
        params = list(sub.parameters())
        if params and not any(p.requires_grad for p in params):
            frozen.append(sub)
            covered.append(name + "." if name else "")
    return frozen


def count_trainable(module: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts, each shared tensor counted once."""
    seen, trainable, total = set(), 0, 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=1)


class _ValidAccuracy(Callback):
    """Validation accuracy from the logits skorch already computed (no second pass)."""

    def on_epoch_begin(self, net, **kwargs):
        self.correct_, self.total_ = 0, 0

    def on_batch_end(self, net, batch, training, y_pred, **kwargs):
        if training:
            return
        y = batch[1]["y"] if isinstance(batch[1], dict) else batch[1]
        self.correct_ += int((y_pred.argmax(1).cpu() == y.cpu()).sum())
        self.total_ += len(y)

    def on_epoch_end(self, net, **kwargs):
        if self.total_:
            net.history.record("valid_acc", self.correct_ / self.total_)


class _EarlyStopping(EarlyStopping):
    """skorch's early stopping, recording that it (not a Ctrl-C) ended training."""

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        self.stopped_ = False

    def on_epoch_end(self, net, **kwargs):
        try:
            super().on_epoch_end(net, **kwargs)
        except KeyboardInterrupt:
            self.stopped_ = True
            raise


class _Net(NeuralNetClassifier):
    """skorch's classifier with the estimator's hooks, streaming batches and mixed precision.

    ``owner`` is the estimator: parameter groups and frozen modules come from its hooks.
    """

    def __init__(
        self, *args, owner=None, amp_dtype=None, channels_last=False, n_workers=1, **kwargs
    ):
        self.owner = owner
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.n_workers = n_workers
        super().__init__(*args, **kwargs)

    @property
    def _default_callbacks(self):
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_acc", _ValidAccuracy()),
            ("print_log", PlainPrintLog()),
        ]

    def initialize(self):
        super().initialize()
        self.grad_scaler_ = (
            torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        )
        return self

    def initialize_optimizer(self, triggered_directly=None):
        groups = self.owner._param_groups(self.module_)
        kwargs = self.get_params_for("optimizer")
        groups = [{**group, "lr": group.get("lr", self.lr)} for group in groups]
        self.optimizer_ = self.optimizer(groups, **{"lr": self.lr, **kwargs})
        return self

    def get_dataset(self, X, y=None):
        if isinstance(X, ImageDataset):
            return X
        return super().get_dataset(X, y)

    def get_iterator(self, dataset, training=False):
        if not isinstance(dataset, ImageDataset):
            return super().get_iterator(dataset, training)
        return BatchLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=training,
            augment=training,
            n_workers=self.n_workers,
        )

    def _set_training(self, training=True):
        super()._set_training(training)
        if training:
            for sub in self.owner._frozen_modules(self.module_):
                sub.eval()

    def infer(self, x, **fit_params):
        x = to_tensor(x, device=self.device)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is None:
            return self.module_(x, **fit_params)
        with torch.autocast(device_type=torch.device(self.device).type, dtype=self.amp_dtype):
            return self.module_(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = to_tensor(y_true, device=self.device)
        return self.criterion_(y_pred.float(), y_true)

    def train_step_single(self, batch, **fit_params):
        if self.grad_scaler_ is None:
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = batch
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        self.grad_scaler_.scale(loss).backward()
        return {"loss": loss, "y_pred": y_pred}

    def train_step(self, batch, **fit_params):
        if self.grad_scaler_ is None:
            return super().train_step(batch, **fit_params)
        self._zero_grad_optimizer()
        step = self.train_step_single(batch, **fit_params)
        for name in self._optimizers:
            self.grad_scaler_.step(getattr(self, name + "_"))
        self.grad_scaler_.update()
        return step

    def __getstate__(self):
        state = super().__getstate__()
        # module_/criterion_ travel in skorch's device-mapped blob; the constructor arguments
        # are the same objects and would otherwise be pickled a second time, unmapped.
        state["module"] = None
        state["criterion"] = None
        state["grad_scaler_"] = None  # re-created on load: its scale is a CUDA tensor
        return state

    def __setstate__(self, state):
        saved = state["device"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkorchDeviceWarning)
            super().__setstate__(state)
        device = available_or_cpu(saved)  # warns with sktransfer's DeviceWarning
        self.device = str(device)
        if device.type != "cuda":
            self.amp_dtype = None
        if self.amp_dtype == torch.float16:
            self.grad_scaler_ = torch.amp.GradScaler("cuda")


# --------------------------------------------------------------------------- estimator


class NeuralClassifierBase(ClassifierMixin, BaseEstimator):
    """Base of the project's trained classifiers (fine-tuning, distillation, pruning).

    Not used directly: a subclass implements :meth:`_build_module` (and the other hooks of
    the module docstring) and lists the parameters below in its own ``__init__``.

    Parameters
    ----------
    max_epochs : int, default=10
        Passes over the training data (fewer when early stopping ends training).
    lr : float, default=0.01
        Learning rate (of the new head, for fine-tuning).
    batch_size : int, default=32
        Samples per optimisation step and per prediction batch.
    optimizer : {"sgd", "adam", "adamw"} or torch.optim.Optimizer subclass, default="sgd"
        "sgd" uses momentum 0.9.
    weight_decay : float, default=0.0
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop when the
        validation loss has not improved for ``n_iter_no_change`` epochs, and restore the
        weights of the best epoch.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=3
    augmentation : {"flip", "crop", "crop_flip"}, callable or None, default=None
        Training-time augmentation, never applied at prediction (nor to the validation
        split). "crop" is a random resized crop (torchvision's ``RandomResizedCrop``) from the
        image resized and center-cropped to the preset's resize size; "flip" a random
        horizontal flip. A callable receives one (C, H, W) tensor (uint8 for presets, float
        in [0, 1] otherwise) and returns it augmented, at a size the network takes.
    mixed_precision : {"auto"} or bool, default="auto"
        Autocast on CUDA (bfloat16 where supported, else float16 with gradient scaling).
        "auto": on for CUDA, off on the CPU. True on a CPU raises.
    device : str, default="auto"
        "auto" takes CUDA when present, else the CPU; an absent device raises.
    n_jobs : int or None, default=None
        Threads decoding image files. None: the CPU count, at most 8.
    callbacks : list of skorch callbacks or (name, callback) pairs, or None
        Added to skorch's defaults (copied at ``fit``; the given objects are not changed).
    verbose : int, default=0
        1 prints a line naming the estimator (its non-default parameters, so that the
        candidates of a grid search can be told apart) and skorch's epoch table; 2 adds a
        per-batch progress bar. Colours and redrawn bars only on a terminal: plain lines in
        logs, widgets in notebooks (:mod:`sktransfer.progress`).
    random_state : int, RandomState or None, default=None
        Seeds initialisation, splitting, shuffling, augmentation and dropout; runs on the CPU
        with the same seed are identical.

    Attributes
    ----------
    classes_ : ndarray
        The original labels; ``predict`` returns them, ``predict_proba`` columns follow them.
    net_ : skorch.NeuralNetClassifier
        The configured skorch net (its ``module_`` is the trained network).
    history_ : skorch.History
        Per-epoch losses, ``valid_acc``, durations.
    n_epochs_ : int
        Epochs trained.
    best_epoch_ : int or None
        With early stopping, the epoch whose weights were restored.
    n_trainable_params_ : int
    n_params_ : int
        Parameters of the whole network (each shared tensor once).
    device_ : torch.device
    preprocessing_ : Preprocessing
        How inputs are read (the backbone's preset, whether vectors are valid input).
    input_kind_ : {"images", "vectors"}
        What ``fit`` received; ``predict`` must receive the same kind.
    n_features_in_ : int
        Only for 2-D vector input.

    Notes
    -----
    Ctrl-C (``KeyboardInterrupt``) during training stops it where it is (skorch's loop
    catches it): ``fit`` returns ``self`` with a ``UserWarning`` saying after how many epochs,
    and the estimator stays usable with the weights it had then (with ``early_stopping``, the
    best epoch's weights are restored as after a normal end); ``history_`` holds the epochs
    that ran. Early stopping itself is not reported as an interrupt. A Ctrl-C before training
    starts (loading the backbone, a teacher's query) propagates as usual.
    """

    _parameter_constraints: dict = {
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [StrOptions(set(_OPTIMIZERS)), type],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "augmentation": [StrOptions(set(AUGMENTATIONS)), callable, None],
        "mixed_precision": [StrOptions({"auto"}), "boolean"],
        "device": [str],
        "n_jobs": [Interval(Integral, 1, None, closed="left"), None],
        "callbacks": [list, None],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        max_epochs=10,
        lr=0.01,
        batch_size=32,
        optimizer="sgd",
        weight_decay=0.0,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=3,
        augmentation=None,
        mixed_precision="auto",
        device="auto",
        n_jobs=None,
        callbacks=None,
        verbose=0,
        random_state=None,
    ):
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.augmentation = augmentation
        self.mixed_precision = mixed_precision
        self.device = device
        self.n_jobs = n_jobs
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state

    # ------------------------------------------------------------------ hooks

    def _setup(self, random_state) -> Preprocessing:
        return Preprocessing()

    def _build_module(self, n_classes: int) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement _build_module.")

    def _param_groups(self, module: nn.Module) -> list[dict]:
        return [{"params": [p for p in module.parameters() if p.requires_grad]}]

    def _criterion(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def _training_targets(self, inputs: ImageInputs, y_encoded: np.ndarray):
        return y_encoded

    def _frozen_modules(self, module: nn.Module) -> list[nn.Module]:
        return frozen_submodules(module)

    # ------------------------------------------------------------------ public API

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Build the network and train it.

        Parameters
        ----------
        X : images or vectors
            Anything :func:`sktransfer.images.check_images` accepts (2-D vectors only for
            networks that take them).
        y : array-like of shape (n_samples,)
            Class labels of any type (strings, integers with gaps...).

        Returns
        -------
        self
        """
        inputs, y_encoded = self._prepare_fit(X, y)
        self._continue_training(inputs, y_encoded)
        return self

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : images or vectors

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float64
        """
        check_is_fitted(self)
        return self._probabilities(self._check_inputs(X, reset=False))

    def _probabilities(self, inputs: ImageInputs) -> np.ndarray:
        """Class probabilities of checked inputs, float64: the whole network through skorch
        (a subclass that can answer faster, e.g. through a frozen pass, overrides this)."""
        dataset = ImageDataset(inputs, None, preprocessing=self.preprocessing_)
        with torch.inference_mode():
            proba = self.net_.predict_proba(dataset)
        return proba.astype(np.float64)

    def predict(self, X):
        """The most probable class of each sample, as an original label.

        Parameters
        ----------
        X : images or vectors

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    # ------------------------------------------------------------------ training steps

    def _prepare_fit(self, X, y):
        """Everything of ``fit`` before training: returns ``(inputs, y_encoded)``."""
        self._seed_ = seed_from(self.random_state)
        self.device_ = resolve_device(self.device)
        amp_dtype = self._amp_dtype()
        with seeded(self._seed_):
            self.preprocessing_ = self._setup(self._seed_)
            inputs = self._check_inputs(X, reset=True)
            check_consistent_length(inputs, y)
            y_encoded = self._encode_labels(y)
            self._build_inputs = inputs
            try:
                module = self._build_module(len(self.classes_))
            finally:
                del self._build_inputs
        self.net_ = self._make_net(module, amp_dtype)
        return inputs, y_encoded

    def _continue_training(self, inputs, y_encoded, *, max_epochs=None):
        """Train ``self.net_.module_`` for ``max_epochs`` (default ``self.max_epochs``)."""
        net = self.net_
        targets = self._training_targets(inputs, y_encoded)
        dataset = ImageDataset(
            inputs, targets, preprocessing=self.preprocessing_, augmentation=self.augmentation
        )
        if dataset.augmentation is not None and inputs.kind == "vectors":
            raise ValueError(
                "augmentation crops and flips images, but X holds feature vectors. Pass "
                "augmentation=None for vector input."
            )
        with seeded(self._seed_):
            train, valid = self._split(dataset)
        if self.verbose:  # names the candidate above its table (grid searches print many)
            print(training_header(self, len(train), None if valid is None else len(valid)))
        net.train_split = predefined_split(valid) if valid is not None else None
        net.max_epochs = max_epochs or self.max_epochs
        net.initialize_optimizer()  # the trainable set may have changed since the last call
        epochs_before = len(net.history)
        seed = None if self._seed_ is None else self._seed_ + epochs_before
        with seeded(seed):
            net.partial_fit(train)
        self._after_training(epochs_before, net.max_epochs)

    def _example_batch(self) -> torch.Tensor:
        """Up to two preprocessed training samples (only while ``_build_module`` runs)."""
        inputs = self._build_inputs[: min(2, len(self._build_inputs))]
        batch = next(inputs.batches(self.preprocessing_.transform, 2))
        return self.preprocessing_.finish(batch, augment=False)

    def _set_module(self, module: nn.Module) -> None:
        """Replace the trained network (on the CPU; it is moved to ``device_``)."""
        self.net_.module_ = self._place(module)
        self.net_.module = None
        self.net_.initialize_optimizer()

    # ------------------------------------------------------------------ internals

    def _amp_dtype(self):
        if self.mixed_precision is True and self.device_.type != "cuda":
            raise ValueError(
                f"mixed_precision=True needs a CUDA device; this estimator runs on "
                f"{self.device_}. Use mixed_precision='auto' (on for CUDA only) or False."
            )
        if self.mixed_precision is False or self.device_.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _place(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device_)
        if self._channels_last(module):
            module = module.to(memory_format=torch.channels_last)
        return module

    def _channels_last(self, module) -> bool:
        # torch's CPU convolutions run faster on channels_last tensors (see activations.py).
        return self.device_.type == "cpu" and any(
            isinstance(m, nn.Conv2d) for m in module.modules()
        )

    def _make_net(self, module, amp_dtype) -> _Net:
        optimizer, defaults = self._optimizer_class()
        optimizer_kwargs = {f"optimizer__{k}": v for k, v in defaults.items()}
        if self.weight_decay:
            optimizer_kwargs["optimizer__weight_decay"] = self.weight_decay
        net = _Net(
            self._place(module),
            criterion=self._criterion(),
            optimizer=optimizer,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            train_split=None,
            callbacks=self._net_callbacks(),
            predict_nonlinearity=_softmax,
            device=str(self.device_),
            verbose=self.verbose,
            owner=self,
            amp_dtype=amp_dtype,
            channels_last=self._channels_last(module),
            n_workers=self.n_jobs or min(8, os.cpu_count() or 1),
            **optimizer_kwargs,
        )
        return net.initialize()

    def _optimizer_class(self):
        if isinstance(self.optimizer, str):
            return _OPTIMIZERS[self.optimizer]
        if not issubclass(self.optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"optimizer must be one of {sorted(_OPTIMIZERS)} or a torch.optim.Optimizer "
                f"subclass; got {self.optimizer!r}."
            )
        return self.optimizer, {}

    def _net_callbacks(self):
        callbacks = []
        if self.early_stopping:
            stopper = _EarlyStopping(
                monitor="valid_loss",
                patience=self.n_iter_no_change,
                load_best=True,
                sink=print if self.verbose else noop,
            )
            callbacks.append(("early_stopping", stopper))
        if self.verbose >= 2:
            callbacks.append(("progress_bar", PlainProgressBar()))
        for index, callback in enumerate(copy.deepcopy(self.callbacks or [])):
            if isinstance(callback, tuple):
                callbacks.append(callback)
            else:
                callbacks.append((f"user_{index}_{type(callback).__name__}", callback))
        return callbacks

    def _check_inputs(self, X, reset: bool) -> ImageInputs:
        if self.preprocessing_.takes_vectors and _is_tabular(X):
            # scikit-learn's own validation, for its error messages (sparse, 1-D, dtype)
            X = validate_data(
                self, X, reset=reset, dtype=[np.float32, np.float64], ensure_all_finite=True
            )
        inputs = check_images(X, allow_vectors=self.preprocessing_.takes_vectors)
        if inputs.kind != "vectors" and reset and hasattr(self, "n_features_in_"):
            del self.n_features_in_
        kind = "vectors" if inputs.kind == "vectors" else "images"
        if reset:
            self.input_kind_ = kind
        elif kind != self.input_kind_:
            raise ValueError(
                f"{type(self).__name__} was fitted on {self.input_kind_} but got {kind}; pass "
                "the same kind of input to fit and predict."
            )
        return inputs

    def _encode_labels(self, y) -> np.ndarray:
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; got 1 class "
                f"({self.classes_[0]!r})."
            )
        return y_encoded.astype(np.int64)

    def _split(self, dataset: ImageDataset):
        if not self.early_stopping:
            return dataset, None
        y = dataset.class_indices
        counts = np.bincount(y)
        n_valid = math.ceil(self.validation_fraction * len(y))
        if counts.min() < 2 or n_valid < len(counts) or len(y) - n_valid < len(counts):
            raise ValueError(
                f"early_stopping holds out validation_fraction={self.validation_fraction} of "
                f"{len(y)} samples, stratified by class, which needs at least 2 samples per "
                f"class and one validation sample per class; got class counts "
                f"{counts.tolist()} ({n_valid} validation samples). Raise validation_fraction, "
                "add samples, or pass early_stopping=False."
            )
        splitter = StratifiedShuffleSplit(
            n_splits=1, test_size=n_valid, random_state=int(torch.randint(2**31 - 1, (1,)))
        )
        train_index, valid_index = next(splitter.split(np.zeros(len(y)), y))
        return dataset.subset(np.sort(train_index)), dataset.subset(np.sort(valid_index))

    def _after_training(self, epochs_before: int, max_epochs: int) -> None:
        net = self.net_
        self.n_trainable_params_, self.n_params_ = count_trainable(net.module_)
        self.history_ = net.history
        self.n_epochs_ = len(net.history)
        ran = self.n_epochs_ - epochs_before
        stopper = dict(net.callbacks_).get("early_stopping")
        self.best_epoch_ = int(stopper.best_epoch_) if stopper is not None else None
        if ran < max_epochs and not (stopper is not None and stopper.stopped_):
            warnings.warn(
                f"Training was interrupted after {ran} of {max_epochs} epochs "
                "(KeyboardInterrupt); the estimator keeps the weights it had then.",
                UserWarning,
                stacklevel=3,
            )

    def __setstate__(self, state):
        super().__setstate__(state)
        if "net_" in state:
            self.device_ = torch.device(self.net_.device)
            self.net_.channels_last = self._channels_last(self.net_.module_)


def _is_tabular(X) -> bool:
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
