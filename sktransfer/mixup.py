"""MixUp as a skorch callback: train on convex combinations of sample pairs and their targets.

MixUp (Zhang et al. 2018; one of BiT-HyperRule's three settings, Kolesnikov et al. 2020) draws
``lam ~ Beta(alpha, alpha)`` and a permutation ``perm`` of the batch for each training batch,
feeds the network ``lam * x + (1 - lam) * x[perm]`` and trains on
``lam * loss(logits, y) + (1 - lam) * loss(logits, y[perm])`` (for cross-entropy, the same as
the mixed one-hot targets). Validation batches and prediction see the inputs unchanged.

:class:`MixUp` works with any skorch net, hence with every estimator on the shared training
base (:class:`sktransfer.training.NeuralClassifierBase`, through its ``callbacks`` parameter):
it mixes the inputs in a forward pre-hook of the network (out of place: the batch the loader
gave is not changed) and wraps the net's criterion while training; both are removed when
training ends, Ctrl-C included.
"""

from __future__ import annotations

from numbers import Real

import torch
from skorch.callbacks import Callback
from torch import nn

__all__ = ["MixUp", "MixedLoss"]


class MixedLoss(nn.Module):
    """``lam * loss(y_pred, y) + (1 - lam) * loss(y_pred, y[perm])`` while a mix is active.

    Parameters
    ----------
    loss : torch.nn.Module
        Called as ``loss(y_pred, targets)``; targets may be a tensor or a dict of tensors
        (each indexed by ``perm`` along its first axis).
    mixup : MixUp
        Whose ``mixing_`` (``(lam, perm)`` or None) says whether the current batch is mixed.
    """

    def __init__(self, loss: nn.Module, mixup: MixUp):
        super().__init__()
        self.loss = loss
        self.mixup = mixup

    def forward(self, y_pred, y_true):
        mixing = self.mixup.mixing_
        if mixing is None:
            return self.loss(y_pred, y_true)
        lam, perm = mixing
        partner = _permuted(y_true, perm)
        return lam * self.loss(y_pred, y_true) + (1.0 - lam) * self.loss(y_pred, partner)


class MixUp(Callback):
    """Train on mixed pairs of samples: ``lam * x_i + (1 - lam) * x_j`` and their targets.

    Parameters
    ----------
    alpha : float, default=0.1
        ``lam`` is drawn from ``Beta(alpha, alpha)`` for each training batch (0.1 in BiT;
        small values keep most batches close to one of the two samples).

    Attributes
    ----------
    mixing_ : tuple of (float, torch.Tensor) or None
        The current training batch's ``(lam, perm)``; None outside training batches.

    Notes
    -----
    Each training batch's ``lam`` is recorded in the net's history as ``"mixup_lambda"``
    (``net.history[-1, "batches", i, "mixup_lambda"]``). ``lam`` and ``perm`` come from
    torch's global generator, so seeded runs repeat. The recorded ``train_loss`` is the mixed
    loss that training minimises; ``valid_loss`` is the plain one.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from sktransfer import FineTuneClassifier, MixUp
    >>> X = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    >>> y = np.arange(32) % 2
    >>> network = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> clf = FineTuneClassifier(network, train_layers="all", max_epochs=1,
    ...                          callbacks=[MixUp(alpha=0.4)], random_state=0).fit(X, y)
    >>> lam = clf.history_[-1, "batches", 0, "mixup_lambda"]
    >>> 0.0 <= lam <= 1.0
    True
    """

    def __init__(self, alpha=0.1):
        self.alpha = alpha

    def initialize(self):
        if not isinstance(self.alpha, Real) or isinstance(self.alpha, bool) or self.alpha <= 0:
            raise ValueError(
                f"MixUp's alpha must be a positive number (lam ~ Beta(alpha, alpha)), e.g. "
                f"0.1; got {self.alpha!r}. Leave the callback out to train without MixUp."
            )
        self.mixing_ = None
        self._hook = None
        self._criterion = None
        return self

    def on_train_begin(self, net, **kwargs):
        self._hook = net.module_.register_forward_pre_hook(self._mix_inputs)
        self._criterion = net.criterion_
        net.criterion_ = MixedLoss(net.criterion_, self)

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        self.mixing_ = None
        if not training:
            return
        n = len(batch[0])
        beta = torch.distributions.Beta(float(self.alpha), float(self.alpha))
        lam = float(beta.sample())
        self.mixing_ = (lam, torch.randperm(n))
        net.history.record_batch("mixup_lambda", lam)

    def on_batch_end(self, net, **kwargs):
        self.mixing_ = None

    def on_train_end(self, net, **kwargs):
        self.mixing_ = None
        if self._hook is not None:
            self._hook.remove()  # prediction never mixes
            self._hook = None
        if isinstance(net.criterion_, MixedLoss):
            net.criterion_ = self._criterion
        self._criterion = None

    def _mix_inputs(self, module, args):
        """Forward pre-hook: the mixed batch replaces the first argument of ``forward``."""
        if self.mixing_ is None:
            return None
        x, *rest = args
        if not torch.is_floating_point(x):
            raise ValueError(
                f"MixUp mixes float inputs, but the network received {x.dtype} ones. Convert "
                "the inputs to float (the training base's batches are float32)."
            )
        lam, perm = self.mixing_
        mixed = lam * x + (1.0 - lam) * x[perm.to(x.device)]
        return (mixed, *rest)


def _permuted(targets, perm: torch.Tensor):
    if isinstance(targets, dict):
        return {key: _permuted(value, perm) for key, value in targets.items()}
    return targets[perm.to(targets.device)]
