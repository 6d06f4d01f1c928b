"""PrunedClassifier: lottery tickets by iterative magnitude pruning with rewinding.

Frankle & Carbin (ICLR 2019): (1) randomly initialise a network, (2) train it, (3) prune a
fraction of the smallest-magnitude remaining weights, (4) reset the survivors to their initial
values, and repeat from (2). Late rewinding (Frankle et al., 2020) resets to the weights after
``k`` epochs or iterations of the first training run instead, which is what deeper and
pretrained networks need. The mechanics live in :mod:`sktransfer.pruning`.
"""

from __future__ import annotations

import copy
import math
from numbers import Integral, Real

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted, column_or_1d
from skorch.callbacks import Callback

from .._compat import Interval, StrOptions, _fit_context
from ..devices import seed_from, seeded
from ..training.base import store_parameters
from . import magnitude
from .plots import plot_lottery
from .trainers import trainer_for

__all__ = ["PrunedClassifier", "plot_lottery"]

_REWIND_UNITS = ("epoch", "iteration")


class PrunedClassifier(ClassifierMixin, BaseEstimator):
    """Lottery tickets: iterative magnitude pruning with weight rewinding.

    Trains ``estimator``'s network, prunes ``prune_rate`` of the smallest-magnitude remaining
    weights of each layer (``torch.nn.utils.prune``), resets the surviving weights to their
    values at initialisation (or after ``k`` epochs / iterations: late rewinding) and trains
    again, ``n_rounds`` times. Masks stay applied while training: pruned weights are exactly
    zero and receive no updates. The fitted estimator predicts with the last, sparsest ticket.

    Parameters
    ----------
    estimator : skorch-based classifier
        The network and its training recipe (optimizer, learning rate, batch size, epochs,
        validation split), unfitted; it is cloned. A project estimator built on
        :mod:`sktransfer.training` or a ``skorch.NeuralNetClassifier``.
    prune_rate : float in [0, 1), default=0.2
        Fraction of the remaining weights removed per round (per layer, or across layers with
        ``scope="global"``).
    output_rate : float in [0, 1) or None, default=None
        Rate for the output layer; the paper uses half of ``prune_rate`` (0.1 for 0.2). None:
        the same as ``prune_rate``.
    n_rounds : int, default=10
        Pruning rounds after the first, dense training. ``history_`` has ``n_rounds + 1`` rows.
    rewind : "init" or tuple ("epoch", k) or ("iteration", k), default="init"
        Where the survivors are reset to: their values before the first training, or after
        ``k`` epochs / optimizer steps of it (late rewinding; for pretrained networks, "init"
        means the pretrained weights the estimator starts from).
    scope : {"layer", "global"}, default="layer"
        Prune each layer at its own rate, or by one magnitude threshold across layers.
    layers : list of str or None, default=None
        Layers to prune (``named_modules`` names). None: every trainable ``Linear``/``Conv``.
    output_layer : "auto", str or None, default="auto"
        Which layer gets ``output_rate``: "auto" is the last pruned layer; None prunes every
        layer at ``prune_rate``.
    reinit_control : bool, default=False
        Also train, every round, the same sparse structure from a fresh random initialisation
        (the paper's control). Doubles the training time; results go to ``history_``.
    permanent : bool, default=False
        Fold the masks into the weights at the end (``torch.nn.utils.prune.remove``): plain
        parameters with zeros, no hooks, ready for export. The masks are then read from the
        zeros.
    random_state : int, RandomState or None, default=None
        Seeds the network's initialisation, data shuffling and the re-initialisation control.
    verbose : int, default=0
        Print one line per round.

    Attributes
    ----------
    estimator_ : skorch-based classifier
        The fitted wrapped estimator; its network is the last round's pruned network.
    classes_ : ndarray
        The labels seen in ``fit``.
    layers_ : list of str
        The pruned layers.
    output_layer_ : str or None
        The layer pruned at ``output_rate``.
    masks_ : dict of str to torch.Tensor
        Final 0/1 mask of each pruned layer (CPU, bool).
    init_state_ : dict of str to torch.Tensor
        The network's state before training (unpruned names).
    rewind_state_ : dict of str to torch.Tensor
        The state the survivors were reset to each round (``init_state_`` for ``"init"``).
    history_ : pandas.DataFrame
        One row per round: ``round``, ``weights_remaining`` (fraction, overall),
        ``remaining_<layer>`` (fraction per layer), ``n_remaining``, ``valid_accuracy`` (last
        epoch), ``best_epoch`` (1-based epoch of the lowest validation loss),
        ``valid_accuracy_at_best``, and with an ``eval_set`` ``test_accuracy`` (last epoch)
        and ``test_accuracy_at_best`` (the early-stopping criterion of the paper). With
        ``reinit_control``, the same metrics prefixed ``reinit_``.
    n_features_in_ : int
        Number of features, for 2-D inputs.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skorch import NeuralNetClassifier
    >>> from sktransfer import PrunedClassifier
    >>> X = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> net = NeuralNetClassifier(
    ...     torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)),
    ...     criterion=torch.nn.CrossEntropyLoss, max_epochs=3, verbose=0)
    >>> ticket = PrunedClassifier(net, prune_rate=0.5, n_rounds=2, random_state=0).fit(X, y)
    >>> ticket.history_["n_remaining"].tolist()
    [160, 80, 40]
    >>> ticket.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints: dict = {
        "estimator": [object],
        "prune_rate": [Interval(Real, 0, 1, closed="left")],
        "output_rate": [Interval(Real, 0, 1, closed="left"), None],
        "n_rounds": [Interval(Integral, 0, None, closed="left")],
        "rewind": [StrOptions({"init"}), tuple, list],
        "scope": [StrOptions({"layer", "global"})],
        "layers": [list, tuple, str, None],
        "output_layer": [str, None],
        "reinit_control": ["boolean"],
        "permanent": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        estimator,
        *,
        prune_rate=0.2,
        output_rate=None,
        n_rounds=10,
        rewind="init",
        scope="layer",
        layers=None,
        output_layer="auto",
        reinit_control=False,
        permanent=False,
        random_state=None,
        verbose=0,
    ):
        store_parameters(self, locals())

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, eval_set=None):
        """Find a winning ticket: train, prune, rewind, ``n_rounds`` times.

        Parameters
        ----------
        X : array-like
            Training inputs, as the wrapped estimator takes them.
        y : array-like of shape (n_samples,)
            Labels (any hashable values; ``predict`` returns them).
        eval_set : tuple (X_test, y_test) or None, default=None
            Held-out data scored after every epoch of every round (``test_accuracy*`` columns
            of ``history_``); it never influences training.

        Returns
        -------
        self : PrunedClassifier
        """
        unit, rewind_at = _check_rewind(self.rewind)
        _reject_sparse(X)
        seed = seed_from(self.random_state)
        trainer = trainer_for(self.estimator)
        capture = _RewindCapture(unit, rewind_at)
        scoring = _EvalSetScoring()
        if eval_set is not None:
            scoring.evaluation = _check_eval_set(eval_set, y)
        with seeded(seed):
            # Round 0: the wrapped estimator's own fit (a FineTuneClassifier fine-tunes), with
            # callbacks that snapshot the weights to rewind to and score the eval set.
            fitted, data = trainer.fit(self.estimator, X, y, [capture, scoring])
            self.classes_ = trainer.classes(fitted, y)
            n_features = trainer.n_features(fitted, data)
            if n_features is not None:
                self.n_features_in_ = n_features
            elif hasattr(self, "n_features_in_"):
                del self.n_features_in_
            capture = trainer.callback(fitted, "lottery_rewind")
            module = trainer.module(fitted)
            self.layers_ = magnitude.prunable_layers(module, self.layers)
            self.output_layer_ = self._resolve_output_layer()
            magnitude.attach_masks(module, self.layers_)
            self.init_state_ = capture.init_state
            rows = [self._record(trainer, fitted, 0, 0, "")]
            if capture.state is None:
                raise ValueError(
                    f"rewind={self.rewind!r} asks for the weights after {rewind_at} "
                    f"{unit}(s), but the first training ran only {capture.epochs} epoch(s) / "
                    f"{capture.iterations} iteration(s). Rewind earlier or train longer."
                )
            capture.active = False
            self.rewind_state_ = capture.state
            for round_ in range(1, self.n_rounds + 1):
                magnitude.prune_by_magnitude(
                    module,
                    self.layers_,
                    self.prune_rate,
                    output_layer=self.output_layer_,
                    output_rate=self.output_rate,
                    scope=self.scope,
                )
                control = {}
                if self.reinit_control:
                    control = self._train_control(trainer, fitted, data, seed, round_)
                magnitude.rewind(module, self.rewind_state_)
                rows.append({**self._train_round(trainer, fitted, data, round_, ""), **control})
        evaluator = trainer.callback(fitted, "lottery_eval")
        evaluator.evaluation = evaluator.prepared = evaluator.read = None  # no test set kept
        self.masks_ = {
            name: module.get_submodule(name).weight_mask.detach().to("cpu", torch.bool)
            for name in self.layers_
        }
        if self.permanent:
            magnitude.make_permanent(module)
        self.estimator_ = fitted
        self.history_ = pd.DataFrame(rows)
        return self

    def predict_proba(self, X):
        """Class probabilities from the pruned network, columns in ``classes_`` order.

        Parameters
        ----------
        X : array-like or images
            As the wrapped estimator takes them.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        _reject_sparse(X)
        trainer = trainer_for(self.estimator_)
        return trainer.predict_proba(self.estimator_, X, getattr(self, "n_features_in_", None))

    def predict(self, X):
        """Labels predicted by the pruned network (values from ``classes_``).

        Parameters
        ----------
        X : array-like or images

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            tags.input_tags = get_tags(self.estimator).input_tags
        except (TypeError, AttributeError):  # a skorch net predates sklearn's tags
            pass
        return tags

    # ------------------------------------------------------------------ internals

    def _resolve_output_layer(self):
        if self.output_layer is None:
            return None
        if self.output_layer == "auto":
            return self.layers_[-1]
        if self.output_layer not in self.layers_:
            raise ValueError(
                f"output_layer={self.output_layer!r} is not among the pruned layers "
                f"{self.layers_}. Pass one of them, 'auto' (the last) or None."
            )
        return self.output_layer

    def _train_round(self, trainer, fitted, data, round_, prefix):
        epochs_before = len(trainer.history(fitted))
        trainer.train(fitted, data)
        return self._record(trainer, fitted, round_, epochs_before, prefix)

    def _record(self, trainer, fitted, round_, epochs_before, prefix):
        magnitude.refresh_masked_weights(trainer.module(fitted))
        history = trainer.history(fitted)
        module = trainer.module(fitted)
        counts = magnitude.weights_remaining(module, self.layers_)
        remaining = sum(r for r, _ in counts.values())
        total = sum(t for _, t in counts.values())
        row = {"round": round_, "weights_remaining": remaining / total, "n_remaining": remaining}
        for name, (r, t) in counts.items():
            row[f"remaining_{name}"] = r / t
        row.update(_history_metrics(history[epochs_before:]))
        if prefix:
            row = {prefix + k: v for k, v in row.items() if "accuracy" in k or "epoch" in k}
        if self.verbose:
            metrics = ", ".join(
                f"{k}={v:.4f}" for k, v in row.items() if k.endswith("accuracy_at_best")
            )
            print(
                f"[PrunedClassifier] round {round_}: {100 * remaining / total:.1f}% "
                f"weights remaining{' (random re-init)' if prefix else ''}, {metrics}",
                flush=True,
            )
        return row

    def _train_control(self, trainer, fitted, data, seed, round_):
        """The same mask, freshly re-initialised, trained the same way (the paper's control)."""
        magnitude.refresh_masked_weights(trainer.module(fitted))
        control = copy.deepcopy(fitted)
        module = trainer.module(control)
        magnitude.rewind(module, self.rewind_state_)
        reinit_seed = None if seed is None else seed + 7919 * round_
        magnitude.reinitialize(module, self.layers_, random_state=reinit_seed)
        return self._train_round(trainer, control, data, round_, "reinit_")


# ---------------------------------------------------------------------- callbacks


class _RewindCapture(Callback):
    """Snapshots at initialisation and, for late rewinding, after ``k`` epochs / iterations."""

    def __init__(self, unit="init", k=0):
        self.unit = unit
        self.k = k
        self.active = True
        self.init_state = None
        self.state = None
        self.epochs = 0
        self.iterations = 0

    def initialize(self):
        # skorch re-initialises callbacks when a net is (re)built; the snapshots stay.
        return self

    def on_train_begin(self, net, **kwargs):
        if self.active:
            self.init_state = magnitude.snapshot(net.module_)
            if self.unit == "init" or self.k == 0:
                self.state = self.init_state

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if self.active and training:
            self.iterations += 1
            if self.unit == "iteration" and self.iterations == self.k:
                self.state = magnitude.snapshot(net.module_)

    def on_epoch_end(self, net, **kwargs):
        if self.active:
            self.epochs += 1
            if self.unit == "epoch" and self.epochs == self.k:
                self.state = magnitude.snapshot(net.module_)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["state"] = state["init_state"] = None  # kept by the estimator (rewind_state_)
        return state


class _EvalSetScoring(Callback):
    """Accuracy on a held-out set after every epoch, written to the history as ``test_acc``.

    ``evaluation`` is ``(X_test, y_test_encoded)``; ``read(X_test)``, given by the trainer,
    turns X into what the net predicts on, once, when training starts (the estimator's
    preprocessing is only known then).
    """

    def __init__(self, evaluation=None):
        self.evaluation = evaluation
        self.read = None
        self.prepared = None

    def initialize(self):
        return self

    def __deepcopy__(self, memo):
        # Nets are copied (the base copies its callbacks, the re-init control copies the whole
        # estimator); share the read-only test set instead of copying it.
        copied = type(self)(self.evaluation)
        copied.read, copied.prepared = self.read, self.prepared
        return copied

    def on_train_begin(self, net, **kwargs):
        if self.evaluation is not None and self.prepared is None:
            self.prepared = self.read(self.evaluation[0])

    def on_epoch_end(self, net, **kwargs):
        if self.evaluation is None:
            return
        proba = net.predict_proba(self.prepared)
        y_test = self.evaluation[1]
        net.history.record("test_acc", float(np.mean(np.argmax(proba, axis=1) == y_test)))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["evaluation"] = state["prepared"] = state["read"] = None
        return state


def _history_metrics(history) -> dict:
    """Validation/test metrics of one round from a skorch history."""
    out = {}
    valid_loss = [row.get("valid_loss", math.nan) for row in history]
    valid_acc = [row.get("valid_acc", math.nan) for row in history]
    test_acc = [row.get("test_acc", math.nan) for row in history]
    best = int(np.nanargmin(valid_loss)) if not np.all(np.isnan(valid_loss)) else None
    out["valid_accuracy"] = valid_acc[-1] if valid_acc else math.nan
    out["best_epoch"] = best + 1 if best is not None else math.nan
    out["valid_accuracy_at_best"] = valid_acc[best] if best is not None else math.nan
    if any(not math.isnan(a) for a in test_acc):
        out["test_accuracy"] = test_acc[-1]
        out["test_accuracy_at_best"] = test_acc[best] if best is not None else math.nan
    return out


def _check_eval_set(eval_set, y):
    """``(X_test, y_test encoded)``; labels encoded as the base does (sorted unique of y)."""
    if not (isinstance(eval_set, tuple | list) and len(eval_set) == 2):
        raise ValueError(
            f"eval_set must be a pair (X_test, y_test); got a {type(eval_set).__name__}."
        )
    X_test, y_test = eval_set
    _reject_sparse(X_test)
    classes = np.unique(column_or_1d(y))
    y_test = column_or_1d(y_test)
    unknown = np.setdiff1d(y_test, classes)
    if unknown.size:
        raise ValueError(
            f"eval_set holds labels {unknown[:10].tolist()} that are not in the training "
            f"labels {classes[:10].tolist()}."
        )
    return X_test, np.searchsorted(classes, y_test).astype(np.int64)


def _reject_sparse(X):
    if sp.issparse(X):
        raise TypeError(
            f"PrunedClassifier got a sparse {type(X).__name__}; sparse input is not supported "
            "by its networks. Convert it with X.toarray() first."
        )


def _check_rewind(rewind):
    if isinstance(rewind, str):
        return "init", 0
    if (
        len(rewind) == 2
        and rewind[0] in _REWIND_UNITS
        and isinstance(rewind[1], Integral)
        and rewind[1] >= 0
    ):
        return rewind[0], int(rewind[1])
    raise ValueError(
        f"rewind must be 'init', ('epoch', k) or ('iteration', k) with k >= 0; got {rewind!r}."
    )
