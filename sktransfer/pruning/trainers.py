"""How PrunedClassifier drives the estimator it wraps: one adapter per kind of estimator.

A trainer is a class of static methods: ``fit(estimator, X, y, callbacks) -> (fitted, data)``
(round 0, with the lottery's callbacks), ``train(fitted, data)`` (a later round: the network
trained again in place, with a fresh optimizer, epochs appended to the history), and readers of
the fitted estimator (``module``, ``history``, ``callback``, ``classes``, ``n_features``,
``predict_proba``). :class:`EstimatorTrainer` drives a
:class:`~sktransfer.training.NeuralClassifierBase` through its continued-training protocol
(``_fit_to_continue``, ``_training_context``, ``_continue_training``,
``_prediction_dataset``); :class:`SkorchTrainer` a plain ``skorch.NeuralNetClassifier``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_consistent_length, column_or_1d

__all__ = ["EstimatorTrainer", "SkorchTrainer", "trainer_for"]


def _with_lottery_callbacks(callbacks, lottery) -> list:
    """The estimator's own callbacks, then the lottery's rewind capture and eval scoring."""
    named = [("lottery_rewind", lottery[0]), ("lottery_eval", lottery[1])]
    return list(callbacks or []) + named


class EstimatorTrainer:
    """Drives a :class:`sktransfer.training.NeuralClassifierBase` through its protocol.

    Round 0 is the estimator's ``_fit_to_continue`` (its own ``fit``, with every epoch
    training the whole network); later rounds call ``_continue_training``, which trains
    ``net_.module_`` in place with a fresh optimizer (no Adam or momentum state carries over
    between rounds) and appends to the history.
    """

    @staticmethod
    def fit(estimator, X, y, callbacks):
        fitted = clone(estimator)
        fitted.set_params(callbacks=_with_lottery_callbacks(estimator.callbacks, callbacks))
        callbacks[1].read = fitted._prediction_dataset  # the test set, read as predict reads
        fitted._fit_to_continue(X, y)
        return fitted, fitted._training_context(X, y)

    @staticmethod
    def n_features(fitted, data):
        return getattr(fitted, "n_features_in_", None)

    @staticmethod
    def classes(fitted, y):
        return fitted.classes_

    @staticmethod
    def module(fitted):
        return fitted.net_.module_

    @staticmethod
    def history(fitted):
        return fitted.net_.history

    @staticmethod
    def callback(fitted, name):
        return dict(fitted.net_.callbacks_)[name]

    @staticmethod
    def train(fitted, data):
        fitted._continue_training(data)

    @staticmethod
    def predict_proba(fitted, X, n_features):
        return fitted.predict_proba(X)  # the base validates X against what it was fitted on


def _float_array(X):
    return check_array(X, dtype=np.float32, allow_nd=True)


class SkorchTrainer:
    """Drives a plain ``skorch.NeuralNetClassifier`` on numeric arrays (X as given)."""

    @staticmethod
    def fit(estimator, X, y, callbacks):
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        classes, y_encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"PrunedClassifier needs at least 2 classes; got {classes}.")
        X = _float_array(X)
        check_consistent_length(X, y)
        fitted = clone(estimator)
        if fitted.callbacks == "disable":
            raise ValueError(
                "PrunedClassifier needs skorch callbacks to take the rewind snapshot; the "
                "wrapped net has callbacks='disable'. Pass callbacks=None or a list."
            )
        fitted.set_params(callbacks=_with_lottery_callbacks(fitted.callbacks, callbacks))
        callbacks[1].read = _float_array
        data = (X, y_encoded.astype(np.int64))
        fitted.fit(*data)
        return fitted, data

    @staticmethod
    def n_features(fitted, data):
        return data[0].shape[1] if data[0].ndim == 2 else None

    @staticmethod
    def classes(fitted, y):
        return np.unique(column_or_1d(y))  # the net itself was trained on their indices

    @staticmethod
    def module(fitted):
        return fitted.module_

    @staticmethod
    def history(fitted):
        return fitted.history

    @staticmethod
    def callback(fitted, name):
        return dict(fitted.callbacks_)[name]

    @staticmethod
    def train(fitted, data):
        # A new optimizer each round: Adam or momentum state carried over would be stale.
        fitted.initialize_optimizer()
        fitted.partial_fit(*data)

    @staticmethod
    def predict_proba(fitted, X, n_features):
        X = _float_array(X)
        if n_features is not None and X.ndim == 2 and X.shape[1] != n_features:
            raise ValueError(
                f"X has {X.shape[1]} features, but PrunedClassifier is expecting "
                f"{n_features} features as input (the number it was fitted with)."
            )
        return fitted.predict_proba(X)


def trainer_for(estimator):
    """The trainer of ``estimator``, or a TypeError saying what PrunedClassifier wraps."""
    from skorch import NeuralNet

    from ..training import NeuralClassifierBase

    if isinstance(estimator, NeuralClassifierBase):
        return EstimatorTrainer
    if isinstance(estimator, NeuralNet):
        return SkorchTrainer
    raise TypeError(
        "PrunedClassifier wraps a skorch-based classifier: an sktransfer estimator built on "
        "sktransfer.training.NeuralClassifierBase (FineTuneClassifier, a student) or a "
        f"skorch.NeuralNetClassifier; got {type(estimator).__name__}."
    )
