"""Weight constraints applied during training, as skorch callbacks.

:class:`MaxNorm` is the max-norm constraint of the dropout papers (Hinton et al. 2012,
Srivastava et al. 2014): after every optimiser step, each unit's vector of incoming weights is
scaled back onto the ball of radius ``max_norm`` if it left it. With dropout it lets training
use large learning rates without the weights blowing up; Hinton, Vinyals & Dean's MNIST teacher
(2015, section 3) was trained with it.
"""

from __future__ import annotations

from numbers import Real

import torch
from skorch.callbacks import Callback
from torch import nn

__all__ = ["MaxNorm", "constrained_layers"]

_CONSTRAINED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def constrained_layers(module: nn.Module, layers=None) -> dict[str, nn.Module]:
    """The layers whose incoming weights a constraint applies to, by name.

    ``layers=None`` takes every linear and convolution layer; otherwise each name must be a
    submodule of ``module`` that holds a ``weight``.
    """
    named = dict(module.named_modules())
    if layers is None:
        return {n: m for n, m in named.items() if isinstance(m, _CONSTRAINED_TYPES)}
    missing = [n for n in layers if not hasattr(named.get(n), "weight")]
    if missing:
        candidates = [n for n, m in named.items() if isinstance(m, _CONSTRAINED_TYPES)]
        raise ValueError(
            f"MaxNorm: layers {missing} are not layers with weights in the network. Hint: "
            f"choose among {candidates}, or pass layers=None for all of them."
        )
    return {n: named[n] for n in layers}


class MaxNorm(Callback):
    """Max-norm constraint on each unit's incoming weights, applied after every training step.

    Parameters
    ----------
    max_norm : float, default=3.5
        The largest L2 norm a unit's incoming weight vector may have (3 to 4 in Srivastava et
        al. 2014). For a convolution, a unit is an output channel (its whole kernel).
    layers : list of str or None, default=None
        Names of the constrained layers in the trained network ``net.module_`` (a
        :class:`DistilledClassifier` wraps its student: ``"student.hidden.0.0"``; a wrong name
        lists the right ones). None constrains every linear and convolution layer. Biases are
        never constrained.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import DistilledClassifier
    >>> from sktransfer.constraints import MaxNorm
    >>> X = np.random.default_rng(0).random((40, 8), dtype=np.float32)
    >>> y = np.arange(40) % 2
    >>> clf = DistilledClassifier(None, student="mlp-16", max_epochs=2, device="cpu",
    ...                           callbacks=[("max_norm", MaxNorm(0.5))], random_state=0)
    >>> hidden = clf.fit(X, y).student_module_.hidden[0][0].weight
    >>> bool(hidden.norm(dim=1).max() <= 0.5 + 1e-6)
    True
    """

    def __init__(self, max_norm=3.5, *, layers=None):
        self.max_norm = max_norm
        self.layers = layers

    def initialize(self):
        if isinstance(self.max_norm, bool) or not isinstance(self.max_norm, Real):
            raise TypeError(f"MaxNorm: max_norm must be a number; got {self.max_norm!r}.")
        if not self.max_norm > 0:
            raise ValueError(f"MaxNorm: max_norm must be > 0; got {self.max_norm!r}.")
        return self

    def on_train_begin(self, net, **kwargs):
        self.layers_ = constrained_layers(net.module_, self.layers)
        self._apply()  # the initial weights obey the constraint too

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self._apply()

    @torch.no_grad()
    def _apply(self):
        for layer in self.layers_.values():
            weight = layer.weight
            if isinstance(weight, nn.parameter.UninitializedParameter):
                continue  # a lazy layer before its first batch has nothing to constrain
            weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=float(self.max_norm)))
