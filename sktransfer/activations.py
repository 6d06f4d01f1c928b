"""Activations: the one seam for frozen forward passes.

A :class:`FrozenNetwork` is a backbone tapped at chosen layers (torchvision's
``create_feature_extractor``), placed on a device and run in inference mode. Every frozen
forward pass of the project goes through :func:`extract_activations`, which streams batches
from :class:`~sktransfer.images.ImageInputs` and returns pooled activations per layer.
"""

from __future__ import annotations

import difflib
import warnings

import numpy as np
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from tqdm.auto import tqdm

from .backbones import Backbone, _tappable
from .images import ImageInputs
from .pooling import pool

__all__ = ["FrozenNetwork", "extract_activations", "check_layers"]


def check_layers(backbone: Backbone, layers: list[str]) -> None:
    """Raise a ValueError naming the valid layers when one of ``layers`` is unknown."""
    nodes = _tappable(backbone.module)
    unknown = [layer for layer in layers if layer not in nodes]
    if not unknown:
        return
    blocks = [n for n in nodes if n.count(".") <= 1 and not n.rpartition(".")[2].startswith("_")]
    close = difflib.get_close_matches(unknown[0], nodes, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(
        f"Layer(s) {unknown} not present in backbone {backbone.name!r}.{hint} "
        f"Valid layers include: {blocks}. All {len(nodes)} valid names: "
        f"sktransfer.list_layers({backbone.name!r})."
    )


class FrozenNetwork:
    """A backbone tapped at ``layers``, on ``device``, for inference only.

    On the CPU, 4-D activations use the channels_last memory format, which torch's CPU
    convolutions run faster (measured: about 1.5x for MobileNetV2).
    """

    def __init__(self, backbone: Backbone, layers: list[str], device: torch.device):
        check_layers(backbone, layers)
        self.backbone = backbone
        self.layers = list(layers)
        self.device = torch.device(device)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NOTE: The nodes obtained by tracing")
            graph = create_feature_extractor(backbone.module, return_nodes=self.layers)
        self.channels_last = self.device.type == "cpu" and any(
            isinstance(m, nn.Conv2d) for m in backbone.module.modules()
        )
        graph = graph.eval().to(self.device)
        if self.channels_last:
            graph = graph.to(memory_format=torch.channels_last)
        self.graph = graph

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            batch = batch.to(self.device, non_blocking=True)
            if self.channels_last and batch.ndim == 4:
                batch = batch.contiguous(memory_format=torch.channels_last)
            return self.graph(batch)


def extract_activations(
    network: FrozenNetwork,
    inputs: ImageInputs,
    *,
    pooling: str | None,
    batch_size: int,
    n_workers: int = 1,
    verbose: int = 0,
) -> dict[str, np.ndarray]:
    """Run ``network`` over ``inputs`` and return each layer's pooled activations (float32).

    Outputs are written into arrays allocated once, so peak memory is the features plus one
    batch, whatever the number of images.
    """
    n = len(inputs)
    outputs: dict[str, np.ndarray] = {}
    transform = network.backbone.transform
    progress = tqdm(
        total=n, desc=f"{network.backbone.name} features", unit="img", disable=not verbose
    )
    start = 0
    with progress:
        for batch in inputs.batches(transform, batch_size, n_workers):
            activations = network(batch)
            stop = start + len(batch)
            for layer in network.layers:
                pooled = pool(activations[layer], pooling).float().cpu().numpy()
                if layer not in outputs:
                    outputs[layer] = np.empty((n, pooled.shape[1]), dtype=np.float32)
                outputs[layer][start:stop] = pooled
            start = stop
            progress.update(len(batch))
    return outputs
