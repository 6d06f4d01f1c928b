"""Pooling: a layer's activation map to one vector per sample, defined once.

A pooling is made of *statistics*, each an (N, F) summary of a batch of activations:

- ``"vec"``: a layer that is already (N, F), unchanged;
- ``"avg"`` / ``"max"``: the mean / maximum over spatial positions (N, C, H, W) or over the
  tokens of a sequence (N, T, D);
- ``"flat"``: the whole map, flattened.

``"avg"`` pooling is the ``"avg"`` statistic, ``"avgmax"`` is ``"avg"`` then ``"max"``
concatenated, ``None`` (flatten) is ``"flat"``. Engines compute statistics (ONNX Runtime inside
the exported graph, so only (N, F) arrays leave it) and the activation store keeps them per
image, so every pooling of a stored layer is served without another forward pass.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "POOLINGS",
    "STATISTICS",
    "pool",
    "features_from_statistics",
    "pooled_width",
    "statistic",
    "pooling_statistics",
]

#: The poolings ``DeepFeatureExtractor(pooling=...)`` offers (and None: flatten).
POOLINGS = ("avg", "max", "avgmax")
#: The statistics a layer is summarised by (see the module docstring).
STATISTICS = ("vec", "avg", "max", "flat")
#: Each pooling as the statistics it concatenates, in order.
_STATISTICS_OF_POOLING = {
    "avg": ("avg",),
    "max": ("max",),
    "avgmax": ("avg", "max"),
    None: ("flat",),
}


def pooling_statistics(pooling: str | None, ndim: int) -> tuple[str, ...]:
    """The statistics ``pooling`` is made of, for activations with ``ndim`` dimensions
    (batch included): vectors (``ndim == 2``) are ``("vec",)`` whatever the pooling."""
    if pooling not in _STATISTICS_OF_POOLING:
        raise ValueError(f"Unknown pooling {pooling!r}: use one of {POOLINGS} or None (flatten).")
    return ("vec",) if ndim == 2 else _STATISTICS_OF_POOLING[pooling]


def statistic(activation: torch.Tensor, name: str) -> torch.Tensor:
    """One (N, F) statistic of a batch of activations (see the module docstring)."""
    if name == "vec" or activation.ndim == 2:
        return activation
    if name == "flat":
        return activation.flatten(1)
    dims = (1,) if activation.ndim == 3 else tuple(range(2, activation.ndim))
    if name == "avg":
        return activation.mean(dim=dims)
    if name == "max":
        return activation.amax(dim=dims)
    raise ValueError(f"Unknown statistic {name!r}: use one of {STATISTICS}.")


def pool(activation: torch.Tensor, pooling: str | None) -> torch.Tensor:
    """Pool a batch of activations to shape (N, F): its statistics, concatenated.

    Spatial maps (N, C, H, W) are pooled over H and W: ``"avg"`` (global average pooling),
    ``"max"``, ``"avgmax"`` (all averages, then all maxima); ``None`` flattens. Token
    sequences (N, T, D) are pooled over the T tokens. Vectors (N, F) pass unchanged.

    Examples
    --------
    >>> import torch
    >>> from sktransfer.frozen.pooling import pool
    >>> pool(torch.ones(2, 8, 7, 7), "avgmax").shape
    torch.Size([2, 16])
    """
    parts = [statistic(activation, name) for name in pooling_statistics(pooling, activation.ndim)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def features_from_statistics(
    stats: dict[str, np.ndarray], pooling: str | None, ndim: int
) -> np.ndarray:
    """A layer's pooled features from its stored statistics (``{statistic: (N, F) array}``,
    those :func:`pooling_statistics` names), concatenated: exactly :func:`pool` of the
    activations (with ``ndim`` dimensions) they summarise, without the activations."""
    parts = [stats[name] for name in pooling_statistics(pooling, ndim)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def pooled_width(shape: tuple, pooling: str | None) -> int:
    """The number of features :func:`pool` gives for one sample of activation ``shape``
    (batch dimension excluded), e.g. ``(1280, 7, 7)`` pooled ``"avgmax"``: 2560."""
    if len(shape) == 1:
        return int(shape[0])
    widths = {"avg": shape[-1] if len(shape) == 2 else shape[0]}
    widths["max"] = widths["avg"]
    widths["flat"] = int(np.prod(shape))
    return int(sum(widths[name] for name in pooling_statistics(pooling, len(shape) + 1)))
