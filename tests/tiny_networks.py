"""Tiny networks shared by the report's tests (imported: pytest puts tests/ on sys.path)."""

import torch
from torch import nn


def tiny_network():
    """Two convolutions, a global average pool and a 5-way classifier, seeded: every call
    returns the same "pretrained" weights (the report's network and the one given to its
    script are then the same)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
