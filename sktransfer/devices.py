"""Devices: resolving ``device="auto"`` and moving fitted networks across machines."""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
import torch

__all__ = ["resolve_device", "DeviceWarning", "seeded"]


class DeviceWarning(UserWarning):
    """A model saved on a device that is missing here was loaded onto another one."""


def resolve_device(device) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` into a usable device.

    ``"auto"`` takes CUDA when present, else the CPU. An explicit device that is not present
    raises instead of silently running elsewhere.
    """
    if device == "auto" or device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'."
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for, but no CUDA GPU is available here "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False). "
                "Use device='auto' to run on the CPU when no GPU is present."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}, but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was asked for, but MPS is not available here.")
    return resolved


def available_or_cpu(device: torch.device | str) -> torch.device:
    """On unpickling: keep a saved device if present here, else the CPU with a warning."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"This model was saved on {device} but no CUDA device is available here; it was "
            "loaded onto the CPU.",
            DeviceWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    return device


def seed_from(random_state) -> int | None:
    """An int seed for torch from scikit-learn's ``random_state`` (None stays None)."""
    if random_state is None:
        return None
    if isinstance(random_state, Integral):
        return int(random_state)
    return int(np.random.RandomState(random_state).randint(2**31 - 1))


class seeded:
    """Seed torch's CPU generator for a block, then restore it (never leak global state)."""

    def __init__(self, seed):
        self.seed = seed

    def __enter__(self):
        if self.seed is not None:
            self._state = torch.random.get_rng_state()
            torch.manual_seed(int(self.seed))
        return self

    def __exit__(self, *exc):
        if self.seed is not None:
            torch.random.set_rng_state(self._state)
