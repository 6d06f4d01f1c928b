"""Per-layer features of a backbone, from one forward pass through DeepFeatureExtractor.

Analysis tools read features, never a network's internals: this is their one way to get them,
through the extractor (and so through :mod:`sktransfer.frozen`).
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from torch import nn

from ..backbones import Backbone, block_layers, last_linear, load_backbone
from ..extraction import DeepFeatureExtractor

__all__ = ["extract_layer_features", "logits_layer"]


def extract_layer_features(
    X, backbone="mobilenet_v2", layers=None, *, source_probabilities=False, **extractor_params
):
    """Pooled features of several layers of one backbone, in one forward pass.

    Parameters
    ----------
    X : images
        Anything :func:`sktransfer.check_images` accepts.
    backbone : str or torch.nn.Module, default="mobilenet_v2"
        As for :class:`sktransfer.DeepFeatureExtractor`.
    layers : list of str or None, default=None
        Layers to tap. None: the network's blocks (:func:`sktransfer.block_layers`).
    source_probabilities : bool, default=False
        Also return the source task's class probabilities (the softmax of the network's last
        Linear layer, e.g. ``classifier.1`` of MobileNetV2), tapped in the same pass: the
        input of :func:`sktransfer.analysis.leep_score`.
    **extractor_params
        Other :class:`~sktransfer.DeepFeatureExtractor` parameters (``weights``, ``pooling``,
        ``batch_size``, ``device``, ``n_jobs``, ``verbose``, ``random_state``).

    Returns
    -------
    features : dict of str to ndarray of shape (n_samples, n_features_layer)
        Each layer's pooled features, in network order as given.
    probabilities : ndarray of shape (n_samples, n_source_classes)
        Only when ``source_probabilities=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import extract_layer_features
    >>> images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    >>> feats, probs = extract_layer_features(images, "resnet18", ["layer1", "layer4"],
    ...     source_probabilities=True, weights=None, random_state=0)
    >>> {k: v.shape for k, v in feats.items()}, probs.shape
    ({'layer1': (4, 64), 'layer4': (4, 512)}, (4, 1000))
    """
    if "layers" in extractor_params:
        raise TypeError("Pass the layers as the 'layers' argument, not as an extractor param.")
    weights = extractor_params.get("weights", "DEFAULT")
    loaded = None
    if layers is None or source_probabilities:
        loaded = load_backbone(backbone, weights, random_state=extractor_params.get("random_state"))
    layers = block_layers(loaded) if layers is None else _check_layer_list(layers)
    tapped = list(layers)
    logits = None
    if source_probabilities:
        logits = logits_layer(loaded)
        if logits not in tapped:
            tapped.append(logits)
    extractor = DeepFeatureExtractor(backbone, layers=tapped, **extractor_params)
    stacked = extractor.fit_transform(X)
    features = {layer: stacked[:, extractor.layer_slices_[layer]] for layer in layers}
    if not source_probabilities:
        return features
    probabilities = softmax(stacked[:, extractor.layer_slices_[logits]].astype(np.float64), axis=1)
    return features, probabilities


def logits_layer(backbone) -> str:
    """The name of a network's last ``nn.Linear`` layer: its source-task logits.

    Examples
    --------
    >>> from sktransfer.analysis import logits_layer
    >>> logits_layer("mobilenet_v2")
    'classifier.1'
    """
    if isinstance(backbone, Backbone):
        module = backbone.module
    elif isinstance(backbone, nn.Module):
        module = backbone
    else:
        module = load_backbone(backbone, None).module
    last = last_linear(module)
    if last is None:
        raise ValueError(
            f"{type(module).__name__} has no nn.Linear layer, so it has no source-task "
            "probabilities for LEEP. Compute them yourself and pass them to leep_score."
        )
    return last[0]


def _check_layer_list(layers) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers or not all(isinstance(layer, str) for layer in layers):
        raise ValueError(f"layers must be a non-empty list of node names or None; got {layers!r}.")
    return layers
