"""NeuralClassifierBase: one skorch-driven classifier that fine-tuning, distillation and pruning
share.

:class:`NeuralClassifierBase` is a scikit-learn classifier that owns a configured skorch net
(``net_``, composition rather than inheritance, so scikit-learn's rules hold: parameters stored
verbatim, nothing built before ``fit``). It reads ``X`` through
:func:`sktransfer.images.check_images`, encodes labels, splits off a validation set for early
stopping, streams (optionally augmented) batches, runs skorch's loop with skorch's callbacks,
history and progress bar, and predicts the original labels.

Hooks (subclasses override these; each has a working default unless marked required). Every
hook but the last two receives the fit's :class:`~sktransfer.training.context.FitContext`
(``X``, ``y``, ``seed``, ``preprocessing``, ``inputs``, ``y_encoded``, ``targets``,
``extras``, ``example_batch()``), filled in the order below; they run inside
``seeded(context.seed)``, except ``_training_targets`` and ``_criterion``.

``_setup(context) -> Preprocessing``
    First. Load what the estimator needs (backbone, teacher...) from ``context.X``/``y`` and
    return how inputs are read (:meth:`Preprocessing.from_backbone` builds it from a
    :class:`~sktransfer.backbones.Backbone`). Default: images as float in [0, 1] at their own
    size, or vectors.
``_encode_labels(context) -> ndarray``
    Set ``classes_`` and return class indices of ``context.y`` (-1 for an unlabelled sample).
    Default: the sorted unique labels, at least two.
``_build_module(context) -> torch.nn.Module``  (required)
    The network to train, on the CPU, with ``requires_grad`` set on what trains;
    ``len(self.classes_)`` outputs. ``context.example_batch()`` gives preprocessed samples
    (lazy modules, output sizes).
``_training_targets(context) -> ndarray or dict of ndarray``
    Per-sample targets, first axis ``n_samples``; a dict holds the class indices under ``"y"``
    (validation accuracy and the stratified split read them). Default: ``context.y_encoded``.
``_criterion(context) -> torch.nn.Module``
    Called as ``criterion(logits, targets)`` with a batch's slice of the targets, for training
    and validation. Default: ``CrossEntropyLoss``.
``_param_groups(module) -> list[dict]``
    Optimizer parameter groups (torch's format; a group without ``"lr"`` gets ``self.lr``),
    read by the net through skorch's ``get_params_for_optimizer`` whenever the optimizer is
    made. Default: every parameter with ``requires_grad``.
``_frozen_modules(module) -> list[torch.nn.Module]``
    Submodules kept in eval mode while training. Default: :func:`frozen_submodules` (frozen
    BatchNorm statistics never drift, dropout in a frozen block does not perturb its output).

Subclassing: list the base parameters in the subclass's ``__init__`` (keyword-only) and store
them with :func:`store_parameters`; extend ``_parameter_constraints`` with
``{**NeuralClassifierBase._parameter_constraints, ...}``; keep ``fit`` as
``self._continue_training(self._prepare_fit(X, y))`` plus whatever comes around it.
docs/architecture.md has a complete example.

Continuing training (the protocol :class:`~sktransfer.pruning.PrunedClassifier` drives):
``_fit_to_continue(X, y)`` fits with every epoch training ``net_.module_`` itself;
``_training_context(X, y)`` reads data for a fitted estimator; after changing
``net_.module_`` in place (or giving :meth:`_set_module` a new one),
``_continue_training(context)`` trains again with a fresh optimizer and appends to the
history; ``_prediction_dataset(X)`` is what ``net_.predict_proba`` takes.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import os
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)
from skorch.helper import predefined_split
from skorch.utils import noop
from torch import nn

from .._compat import Interval, StrOptions, _fit_context
from ..devices import resolve_device, seed_from, seeded
from ..images import ImageInputs, check_images
from ..progress import PlainProgressBar, training_header
from .callbacks import EarlyStoppingRecord
from .context import FitContext
from .data import AUGMENTATIONS, ImageDataset, Preprocessing, is_tabular
from .net import OPTIMIZERS, TrainingNet, count_trainable, frozen_submodules, softmax

__all__ = ["NeuralClassifierBase", "store_parameters"]


def store_parameters(estimator, values: dict) -> None:
    """Store the parameters of an ``__init__`` verbatim, as scikit-learn wants: call it first
    thing as ``store_parameters(self, locals())`` (one line instead of one per parameter).
    A ``training`` dict (the ``**training`` of :func:`with_training_parameters`) is stored
    name by name."""
    values = {**values, **values.get("training", {})}
    values.pop("training", None)
    for name, value in values.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


def with_training_parameters(*, without=(), **defaults):
    """Decorate a subclass's ``__init__`` so that it takes the base's training parameters.

    scikit-learn reads an estimator's parameters from the signature of its ``__init__``, so
    every subclass would list the base's 15 training parameters again. Instead, the subclass
    lists its own parameters and ends with ``**training``; this decorator gives the method the
    full signature (its own parameters, then the base's as keyword-only, ``defaults``
    overriding the base's defaults, the names in ``without`` left out), which is what
    ``get_params``, ``clone``, ``help()`` and IDEs read, and fills in the defaults of the ones
    a call leaves out. An unknown keyword is a ``TypeError``, as for any function.

    Examples
    --------
    >>> from sktransfer.training import NeuralClassifierBase, with_training_parameters
    >>> class Probe(NeuralClassifierBase):
    ...     @with_training_parameters(lr=0.1, without=("augmentation",))
    ...     def __init__(self, width=8, **training):
    ...         store_parameters(self, locals())
    >>> Probe().get_params()["lr"], "augmentation" in Probe().get_params()
    (0.1, False)
    """
    shared = [
        p
        for name, p in inspect.signature(NeuralClassifierBase.__init__).parameters.items()
        if name != "self" and name not in without
    ]
    unknown = set(defaults) - {p.name for p in shared}
    if unknown:
        raise TypeError(
            f"with_training_parameters: {sorted(unknown)} are not training "
            f"parameters; choose among {[p.name for p in shared]}."
        )
    shared = [p.replace(default=defaults.get(p.name, p.default)) for p in shared]

    def decorate(init):
        own = list(inspect.signature(init).parameters.values())[:-1]  # drops **training
        signature = inspect.Signature([*own, *shared])

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError as error:  # what Python says of a written-out signature
                raise TypeError(f"{type(self).__name__}.__init__(): {error}") from None
            bound.apply_defaults()
            init(**bound.arguments)

        __init__.__signature__ = signature
        return __init__

    return decorate


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
        "optimizer": [StrOptions(set(OPTIMIZERS)), type],
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
        store_parameters(self, locals())

    # ------------------------------------------------------------------ hooks

    def _setup(self, context: FitContext) -> Preprocessing:
        return Preprocessing()

    def _encode_labels(self, context: FitContext) -> np.ndarray:
        y = column_or_1d(context.y, warn=True)
        check_classification_targets(y)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; got 1 class "
                f"({self.classes_[0]!r})."
            )
        return y_encoded.astype(np.int64)

    def _build_module(self, context: FitContext) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement _build_module.")

    def _criterion(self, context: FitContext) -> nn.Module:
        return nn.CrossEntropyLoss()

    def _training_targets(self, context: FitContext):
        return context.y_encoded

    def _param_groups(self, module: nn.Module) -> list[dict]:
        return [{"params": [p for p in module.parameters() if p.requires_grad]}]

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
        self._continue_training(self._prepare_fit(X, y))
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

    def _prepare_fit(self, X, y, **extras) -> FitContext:
        """Everything of ``fit`` before training: the hooks in order, then ``net_``.

        ``extras`` start :attr:`FitContext.extras` (what a subclass's ``fit`` hands to its
        own hooks). Returns the context that :meth:`_continue_training` trains on.
        """
        self._seed_ = seed_from(self.random_state)
        self.device_ = resolve_device(self.device)
        amp_dtype = self._amp_dtype()
        context = FitContext(X=X, y=y, seed=self._seed_, extras=extras)
        with seeded(self._seed_):
            self.preprocessing_ = context.preprocessing = self._setup(context)
            context.inputs = self._check_inputs(X, reset=True)
            check_consistent_length(context.inputs, y)
            context.y_encoded = self._encode_labels(context)
            module = self._build_module(context)
        context.targets = self._training_targets(context)
        self.net_ = self._make_net(module, amp_dtype, self._criterion(context))
        return context

    def _continue_training(self, context: FitContext, *, max_epochs=None) -> None:
        """Train ``net_.module_`` on ``context`` for ``max_epochs`` (default ``max_epochs``):
        a fresh optimizer from :meth:`_param_groups` (the trainable set may have changed since
        the last call), the history kept (epochs accumulate), the fitted attributes updated."""
        net = self.net_
        dataset = ImageDataset(
            context.inputs,
            context.targets,
            preprocessing=self.preprocessing_,
            augmentation=self.augmentation,
        )
        if dataset.augmentation is not None and context.inputs.kind == "vectors":
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
        net.initialize_optimizer()
        epochs_before = len(net.history)
        seed = None if self._seed_ is None else self._seed_ + epochs_before
        with seeded(seed):
            net.partial_fit(train)
        self._after_training(epochs_before, net.max_epochs)

    def _fit_to_continue(self, X, y):
        """``fit`` such that every epoch trains ``net_.module_`` itself (no stand-in network),
        so that callbacks see the whole network and :meth:`_continue_training` can follow.
        A subclass with a shortcut (FineTuneClassifier's head on stored features) turns it off
        here."""
        return self.fit(X, y)

    def _training_context(self, X, y) -> FitContext:
        """The context to continue training a fitted estimator on ``(X, y)``: inputs read as
        ``predict`` reads them, labels encoded against ``classes_``."""
        check_is_fitted(self)
        context = FitContext(X=X, y=y, seed=self._seed_, preprocessing=self.preprocessing_)
        context.inputs = self._check_inputs(X, reset=False)
        context.y_encoded = np.searchsorted(self.classes_, column_or_1d(y)).astype(np.int64)
        context.targets = self._training_targets(context)
        return context

    def _prediction_dataset(self, X) -> ImageDataset:
        """``X`` read the way ``predict`` reads it, as a dataset ``net_`` predicts on."""
        inputs = self._check_inputs(X, reset=False)
        return ImageDataset(inputs, None, preprocessing=self.preprocessing_)

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

    def _make_net(self, module, amp_dtype, criterion) -> TrainingNet:
        optimizer, defaults = self._optimizer_class()
        optimizer_kwargs = {f"optimizer__{k}": v for k, v in defaults.items()}
        if self.weight_decay:
            optimizer_kwargs["optimizer__weight_decay"] = self.weight_decay
        net = TrainingNet(
            self._place(module),
            criterion=criterion,
            optimizer=optimizer,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            train_split=None,
            callbacks=self._net_callbacks(),
            predict_nonlinearity=softmax,
            device=str(self.device_),
            verbose=self.verbose,
            param_groups=self._param_groups,
            frozen_modules=self._frozen_modules,
            amp_dtype=amp_dtype,
            channels_last=self._channels_last(module),
            n_workers=self.n_jobs or min(8, os.cpu_count() or 1),
            **optimizer_kwargs,
        )
        return net.initialize()

    def _optimizer_class(self):
        if isinstance(self.optimizer, str):
            return OPTIMIZERS[self.optimizer]
        if not issubclass(self.optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"optimizer must be one of {sorted(OPTIMIZERS)} or a torch.optim.Optimizer "
                f"subclass; got {self.optimizer!r}."
            )
        return self.optimizer, {}

    def _net_callbacks(self):
        callbacks = []
        if self.early_stopping:
            stopper = EarlyStoppingRecord(
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
        if self.preprocessing_.takes_vectors and is_tabular(X):
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
