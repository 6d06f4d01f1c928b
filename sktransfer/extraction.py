"""DeepFeatureExtractor: pretrained-network features as a scikit-learn transformer (DeCAF)."""

from __future__ import annotations

import copy
import os
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torchvision.models._api import WeightsEnum

from .activations import FrozenNetwork, extract_activations
from .analysis.scores import LAYER_SCORES as _LAYER_SCORES
from .backbones import block_layers, load_backbone, penultimate_layer
from .devices import available_or_cpu, resolve_device, seeded
from .images import check_images
from .pooling import POOLINGS, pool

__all__ = ["DeepFeatureExtractor"]


class DeepFeatureExtractor(TransformerMixin, BaseEstimator):
    """Activations of a pretrained network's layers, pooled, as features.

    Pushes images through a frozen network, taps the chosen layers (torchvision's
    ``create_feature_extractor``), pools each layer's activation map and concatenates the
    layers. Put a classical classifier after it: the DeCAF recipe (Donahue et al., 2014).

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="mobilenet_v2"
        A torchvision classification model name, ``"efficientnet_lite0"``, or a module. A
        plain module takes images as float tensors in [0, 1] at their own size (no resizing
        or normalisation) or 2-D feature vectors.
    weights : str, path or None, default="DEFAULT"
        Which weights, resolved offline first (see :func:`sktransfer.load_backbone`):
        ``"DEFAULT"`` (the best available offline), an enum member name such as
        ``"IMAGENET1K_V1"``, a state-dict file, or None for random initialisation.
    layers : str, list of str, "auto" or None, default=None
        Graph node names to tap (:func:`sktransfer.list_layers`). A list concatenates the
        layers' pooled features in the given order. None: the penultimate features (the input
        of the final Linear layer). "auto": ``fit`` needs ``y`` and taps the one layer of
        ``layer_candidates`` that ``layer_score`` rates best on the training images (all
        candidates come from a single forward pass; see :mod:`sktransfer.analysis`).
    pooling : {"avg", "max", "avgmax"} or None, default="avg"
        How spatial maps become vectors: global average, global max, both concatenated, or
        None to flatten. Layers that are already vectors are not pooled.
    batch_size : int or "auto", default="auto"
        Images per forward pass. "auto": 16 on CPU (small batches are fastest there), 64 on
        a GPU.
    device : str, default="auto"
        "auto" takes CUDA when present, else the CPU. An explicit device that is absent
        raises.
    n_jobs : int or None, default=None
        Threads that decode and resize images from files or PIL objects. None: the number of
        CPU cores (at most 8).
    layer_candidates : list of str or None, default=None
        Only with ``layers="auto"``: the layers to choose from. None: the network's blocks
        (:func:`sktransfer.block_layers`).
    layer_score : {"logme", "h_score", "h_score_shrunk", "linear_probe"}, default="logme"
        Only with ``layers="auto"``: how candidates are rated (higher is better), by
        :func:`sktransfer.analysis.logme_score`, :func:`~sktransfer.analysis.h_score` (plain
        or Ledoit-Wolf shrunk) or a 3-fold :func:`~sktransfer.analysis.linear_probe_score`.
    verbose : int, default=0
        Show a progress bar while extracting.
    random_state : int or None, default=None
        Seed for randomly initialised weights (``weights=None``, lazy modules).

    Attributes
    ----------
    backbone_ : sktransfer.backbones.Backbone
        The loaded network, its preprocessing and identity.
    weights_ : str or None
        The weights actually loaded, e.g. ``"MobileNet_V2_Weights.IMAGENET1K_V1"``.
    layers_ : list of str
        The tapped layers, resolved (with ``layers="auto"``: the chosen layer).
    layer_scores_ : dict of str to float
        Only with ``layers="auto"``: each candidate layer's ``layer_score``.
    layer_slices_ : dict of str to slice
        The columns of each layer's block in the output (for per-layer post-processing).
    layer_shapes_ : dict of str to tuple
        Each layer's activation shape for one sample before pooling, e.g. ``(1280, 7, 7)``.
    n_features_out_ : int
        Number of output features.
    device_ : torch.device
        The device the network runs on.
    n_features_in_ : int
        Only for 2-D feature-vector input (a plain-module backbone): the vector length.
        Images of any size are accepted, so it is not defined for images.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import DeepFeatureExtractor
    >>> images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    >>> extractor = DeepFeatureExtractor("resnet18", weights=None, layers=["layer3", "layer4"],
    ...                                  random_state=0)
    >>> extractor.fit_transform(images).shape
    (4, 768)
    >>> extractor.layer_slices_["layer4"]
    slice(256, 768, None)

    Let the labels pick the layer:

    >>> auto = DeepFeatureExtractor("resnet18", weights=None, layers="auto",
    ...                             layer_candidates=["layer2", "layer3"], random_state=0)
    >>> auto.fit(images, [0, 0, 1, 1]).layers_[0] in ("layer2", "layer3")
    True
    """

    _parameter_constraints: dict = {
        "backbone": [str, nn.Module],
        "weights": [str, os.PathLike, None, WeightsEnum],
        "layers": [str, list, tuple, None],
        "pooling": [StrOptions(set(POOLINGS)), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "device": [str],
        "n_jobs": [Interval(Integral, 1, None, closed="left"), None],
        "layer_candidates": [list, tuple, None],
        "layer_score": [StrOptions(set(_LAYER_SCORES))],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        backbone="mobilenet_v2",
        *,
        weights="DEFAULT",
        layers=None,
        pooling="avg",
        batch_size="auto",
        device="auto",
        n_jobs=None,
        layer_candidates=None,
        layer_score="logme",
        verbose=0,
        random_state=None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layers = layers
        self.pooling = pooling
        self.batch_size = batch_size
        self.device = device
        self.n_jobs = n_jobs
        self.layer_candidates = layer_candidates
        self.layer_score = layer_score
        self.verbose = verbose
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load the network and tap its layers.

        Parameters
        ----------
        X : images
            Anything :func:`sktransfer.images.check_images` accepts. One sample is run through
            the network to learn the output sizes (all of them with ``layers="auto"``).
        y : array-like of shape (n_samples,) or None
            Class labels; needed only by ``layers="auto"``, ignored otherwise.

        Returns
        -------
        self : DeepFeatureExtractor
        """
        self._fit(X, y)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit, then extract the features of ``X``.

        With ``layers="auto"`` the chosen layer's features come from the selection pass, so
        the images go through the network once.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out_), float32
        """
        selected = self._fit(X, y)
        if selected is None:
            return self.transform(X)
        return selected

    def _fit(self, X, y):
        """Fit; return the chosen layer's features when ``layers="auto"``, else None."""
        auto = isinstance(self.layers, str) and self.layers == "auto"
        if auto and y is None:  # before anything is loaded or set
            raise ValueError(
                "DeepFeatureExtractor with layers='auto' requires y to be passed, but the "
                "target y is None: it picks the layer whose features best predict y. Pass the "
                "labels to fit, or name the layers."
            )
        seed = _seed(self.random_state)
        self.device_ = resolve_device(self.device)
        self.backbone_ = load_backbone(self.backbone, self.weights, random_state=seed)
        self.weights_ = self.backbone_.weights
        inputs = self._check_inputs(X, reset=True)
        selected = None
        if auto:
            with seeded(seed):
                selected = self._select_layer(inputs, y)
            self.layers_ = [next(iter(selected))]
        else:
            self.layers_ = self._resolve_layers()
            self.__dict__.pop("layer_scores_", None)
        self.network_ = FrozenNetwork(self.backbone_, self.layers_, self.device_)
        with seeded(seed):  # lazy modules initialise on their first batch
            batch = next(inputs[:1].batches(self.backbone_.transform, 1))
            probe = self.network_(batch)
        self.layer_shapes_ = {layer: tuple(probe[layer].shape[1:]) for layer in self.layers_}
        self.layer_slices_, start = {}, 0
        for layer in self.layers_:
            width = pool(probe[layer], self.pooling).shape[1]
            self.layer_slices_[layer] = slice(start, start + width)
            start += width
        self.n_features_out_ = start
        return None if selected is None else selected[self.layers_[0]]

    def transform(self, X):
        """Extract the pooled features of ``X``.

        Parameters
        ----------
        X : images
            Anything :func:`sktransfer.images.check_images` accepts.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out_), float32
        """
        check_is_fitted(self)
        inputs = self._check_inputs(X, reset=False)
        activations = self._extract(inputs)
        return np.concatenate([activations[layer] for layer in self.layers_], axis=1)

    def get_feature_names_out(self, input_features=None):
        """Feature names ``<layer>__<pooling><index>``, e.g. ``features.18__avg7``."""
        check_is_fitted(self)
        names = []
        for layer, block in self.layer_slices_.items():
            width = block.stop - block.start
            if self.pooling == "avgmax" and width % 2 == 0 and self._is_map(layer):
                half = width // 2
                names += [f"{layer}__avg{i}" for i in range(half)]
                names += [f"{layer}__max{i}" for i in range(half)]
            else:
                kind = self.pooling if self._is_map(layer) and self.pooling else "f"
                names += [f"{layer}__{kind}{i}" for i in range(width)]
        return np.asarray(names, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = isinstance(self.layers, str) and self.layers == "auto"
        tags.input_tags.two_d_array = isinstance(self.backbone, nn.Module)
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # ------------------------------------------------------------------ internals

    def _is_map(self, layer) -> bool:
        return len(self.layer_shapes_[layer]) > 1

    def _check_inputs(self, X, reset):
        inputs = check_images(X, allow_vectors=self.backbone_.takes_vectors)
        if inputs.kind == "vectors":
            X = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=True)
        elif reset and hasattr(self, "n_features_in_"):
            del self.n_features_in_
        if not reset and (inputs.kind == "vectors") != (self.input_kind_ == "vectors"):
            raise ValueError(
                f"This extractor was fitted on {self.input_kind_} but transform got "
                f"{inputs.kind}; pass the same kind of input to fit and transform."
            )
        if reset:
            self.input_kind_ = "vectors" if inputs.kind == "vectors" else "images"
        return inputs

    def _resolve_layers(self) -> list[str]:
        if self.layers is None:
            return [penultimate_layer(self.backbone_.module)]
        layers = [self.layers] if isinstance(self.layers, str) else list(self.layers)
        if not layers or not all(isinstance(layer, str) for layer in layers):
            raise ValueError(
                f"layers must be a node name, a non-empty list of names, or None; got "
                f"{self.layers!r}."
            )
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers lists a layer twice: {layers}.")
        return layers

    def _select_layer(self, inputs, y) -> dict[str, np.ndarray]:
        """Score every candidate layer on (inputs, y); return the best one's features."""
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(inputs):
            raise ValueError(
                f"y must hold one label per image: shape ({len(inputs)},); got {y.shape}."
            )
        check_classification_targets(y)
        candidates = self._candidate_layers()
        network = FrozenNetwork(self.backbone_, candidates, self.device_)
        activations = self._extract(inputs, network)
        score = _LAYER_SCORES[self.layer_score]
        self.layer_scores_ = {layer: score(activations[layer], y) for layer in candidates}
        best = max(candidates, key=self.layer_scores_.__getitem__)  # first wins ties
        return {best: activations[best]}

    def _candidate_layers(self) -> list[str]:
        if self.layer_candidates is None:
            try:
                return block_layers(self.backbone_)
            except Exception as error:  # a plain module may not take 224 x 224 images
                raise ValueError(
                    f"Could not list the blocks of {self.backbone_.name!r} to choose a layer "
                    f"from ({error}). Pass layer_candidates=[...] (see sktransfer.list_layers)."
                ) from error
        candidates = list(self.layer_candidates)
        if not candidates or not all(isinstance(layer, str) for layer in candidates):
            raise ValueError(
                f"layer_candidates must be a non-empty list of node names or None; got "
                f"{self.layer_candidates!r}."
            )
        if len(set(candidates)) != len(candidates):
            raise ValueError(f"layer_candidates lists a layer twice: {candidates}.")
        return candidates

    def _extract(self, inputs, network=None):
        batch_size = self.batch_size
        if batch_size == "auto":
            batch_size = 64 if self.device_.type == "cuda" else 16
        n_workers = self.n_jobs or min(8, os.cpu_count() or 1)
        activations = extract_activations(
            self.network_ if network is None else network,
            inputs,
            pooling=self.pooling,
            batch_size=batch_size,
            n_workers=n_workers,
            verbose=self.verbose and len(inputs) > batch_size,
        )
        return activations

    def __getstate__(self):
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        # The tapped graph is rebuilt on load; the network travels on the CPU so that a model
        # used on a GPU unpickles on a CPU-only machine.
        state.pop("network_", None)
        if "backbone_" in state:
            backbone = copy.copy(state["backbone_"])
            if next(backbone.module.parameters(), None) is not None and any(
                p.device.type != "cpu" for p in backbone.module.parameters()
            ):
                backbone.module = copy.deepcopy(backbone.module).cpu()
            state["backbone_"] = backbone
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "backbone_" in state:
            self.device_ = available_or_cpu(self.device_)
            self.network_ = FrozenNetwork(self.backbone_, self.layers_, self.device_)


def _seed(random_state):
    if random_state is None:
        return None
    if isinstance(random_state, Integral):
        return int(random_state)
    return int(np.random.RandomState(random_state).randint(2**31 - 1))
