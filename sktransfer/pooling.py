"""Pooling: turning a layer's activation map into one vector per sample."""

from __future__ import annotations

import torch

__all__ = ["POOLINGS", "pool"]

POOLINGS = ("avg", "max", "avgmax")


def pool(activation: torch.Tensor, method: str | None) -> torch.Tensor:
    """Pool a batch of activations to shape (N, F).

    Spatial maps (N, C, H, W) are pooled over H and W: ``"avg"`` (global average pooling),
    ``"max"``, ``"avgmax"`` (both, concatenated per channel block: all averages, then all
    maxima); ``None`` flattens. Token sequences (N, T, D), as transformers produce, are pooled
    over the T tokens. Vectors (N, F) pass unchanged whatever the method: there is nothing to
    pool.
    """
    if activation.ndim == 2:
        return activation
    if method is None:
        return activation.flatten(1)
    if activation.ndim == 3:
        dims = (1,)
    else:
        dims = tuple(range(2, activation.ndim))
    if method == "avg":
        return activation.mean(dim=dims)
    if method == "max":
        return activation.amax(dim=dims)
    if method == "avgmax":
        return torch.cat([activation.mean(dim=dims), activation.amax(dim=dims)], dim=1)
    raise ValueError(f"Unknown pooling {method!r}: use one of {POOLINGS} or None (flatten).")
