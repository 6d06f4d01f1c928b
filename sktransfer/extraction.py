"""DeepFeatureExtractor: pretrained-network features as a scikit-learn transformer (DeCAF)."""

from __future__ import annotations

import copy
import os
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torchvision.models import WeightsEnum

from ._compat import Interval, StrOptions, _fit_context
from .backbones import _is_path, block_layers, load_backbone, penultimate_layer
from .devices import available_or_cpu, resolve_device, seed_from, seeded
from .frozen import (
    ENGINES,
    POOLINGS,
    PRECISIONS,
    DiskCache,
    FrozenNetwork,
    MemoryCache,
    Registry,
    batching,
    features_from_statistics,
    get_cache,
    has_lazy,
    pooled_width,
    pooling_statistics,
    resolve_engine,
    stored_statistics,
    tapped_network,
)
from .images import check_images
from .transferability import LAYER_SCORES as _LAYER_SCORES

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
        Images per forward pass. "auto": 64 on a GPU; on a CPU 2 with ONNX Runtime (which
        runs several such batches side by side, one thread each) and 16 with torch (the batch
        sizes measured fastest for each).
    device : str, default="auto"
        "auto" takes CUDA when present, else the CPU. An explicit device that is absent
        raises.
    n_jobs : int or None, default=None
        Threads that decode and resize images from files or PIL objects, and ONNX Runtime's
        threads (that many batches run side by side, up to 8). None: the number of CPU
        cores (at most 8 for decoding).
    engine : {"auto", "torch", "onnxruntime"}, default="auto"
        What runs the network (:mod:`sktransfer.frozen.engines`). "auto": ONNX Runtime on the CPU
        (about 4x eager torch; the exported graph is checked against torch on first use and
        torch runs, with an ``EngineWarning``, when it differs by more than 1e-4 relative or
        cannot be exported), torch on CUDA. "onnxruntime" needs the ``onnxruntime`` package.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        Half precision runs torch under autocast (for CUDA); features change by about 1e-2
        relative, so it is opt-in.
    cache : "memory", path, DiskCache or None, default="memory"
        Where per-image activation statistics are kept so that clones (the folds and
        candidates of a grid search) and repeated calls reuse one forward pass
        (:mod:`sktransfer.frozen.store`). "memory": this process. A folder path (or
        :class:`~sktransfer.frozen.DiskCache`): shared with parallel workers, other processes
        and later runs, as ``Pipeline(memory=...)``; exported ONNX graphs go there too. None:
        no cache.
    record_layers : list or None, default=None
        More layers to record on each forward pass, so that a later call asking for them (a
        search over ``layers``) is served from the cache. Entries are what ``layers`` accepts:
        names, lists of names, or None for the penultimate layer; passing the same list as a
        grid's ``layers`` values records all of them at once.
    layer_candidates : list of str or None, default=None
        Only with ``layers="auto"``: the layers to choose from. None: the network's blocks
        (:func:`sktransfer.block_layers`).
    layer_score : str, default="logme"
        Only with ``layers="auto"``: how candidates are rated (higher is better), one of
        :data:`sktransfer.transferability.LAYER_SCORES`: ``"logme"``, ``"h_score"``,
        ``"h_score_shrunk"``, ``"nleep"``, ``"transrate"``, ``"gbc"``, ``"sfda"`` or
        ``"linear_probe"`` (a 3-fold cross-validated logistic regression, the ground truth
        the others estimate; see ``docs/analysis.md`` for how well each ranks layers).
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
    engine_ : {"torch", "onnxruntime"}
        Who runs the frozen network (``engine`` resolved for ``device_``).
    network_ : sktransfer.frozen.FrozenNetwork
        The tapped network that ``transform`` runs (records ``recorded_layers_``).
    recorded_layers_ : list of str
        The layers each pass records into the activation cache (``layers_`` plus
        ``record_layers``), so that a grid search over layers costs one pass.
    input_kind_ : {"images", "vectors"}
        What ``fit`` received; ``transform`` must receive the same kind.
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
        "engine": [StrOptions(set(ENGINES))],
        "precision": [StrOptions(set(PRECISIONS))],
        "cache": [StrOptions({"memory"}), str, os.PathLike, DiskCache, MemoryCache, None],
        "record_layers": [list, tuple, None],
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
        engine="auto",
        precision="float32",
        cache="memory",
        record_layers=None,
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
        self.engine = engine
        self.precision = precision
        self.cache = cache
        self.record_layers = record_layers

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
        return self.transform(X) if selected is None else selected

    def _fit(self, X, y):
        """Fit; return the chosen layer's features when ``layers="auto"``, else None."""
        auto = isinstance(self.layers, str) and self.layers == "auto"
        if auto and y is None:  # before anything is loaded or set
            raise ValueError(
                "DeepFeatureExtractor with layers='auto' requires y to be passed, but the "
                "target y is None: it picks the layer whose features best predict y. Pass the "
                "labels to fit, or name the layers."
            )
        seed = seed_from(self.random_state)
        self.device_ = resolve_device(self.device)
        self.engine_ = resolve_engine(self.engine, self.device_, self.precision)
        self.backbone_ = _load_backbone(self.backbone, self.weights, seed)
        self.weights_ = self.backbone_.weights
        inputs = self._check_inputs(X, reset=True)
        if auto:
            y = _check_selection_target(y, len(inputs))
            self.layers_ = self._candidate_layers()
        else:
            self.layers_ = self._resolve_layers(self.layers)
            self.__dict__.pop("layer_scores_", None)
        self.recorded_layers_ = self._resolve_recorded()
        self.network_ = self._network()
        with seeded(seed):  # lazy modules initialise on their first batch
            batch = next(inputs[:1].batches(self.backbone_.transform, 1))
            shapes = self.network_.layer_shapes(batch)
        self.layer_shapes_ = {layer: shapes[layer] for layer in self.layers_}
        selected = None
        if auto:  # every candidate from one pass (through the cache), then keep the best
            with seeded(seed):
                activations = self._extract(inputs)
            score = _LAYER_SCORES[self.layer_score]
            self.layer_scores_ = {layer: score(activations[layer], y) for layer in self.layers_}
            best = max(self.layers_, key=self.layer_scores_.__getitem__)  # first wins ties
            selected = activations[best]
            self.layers_ = [best]
            self.layer_shapes_ = {best: shapes[best]}
            self.recorded_layers_ = self._resolve_recorded()
            self.network_ = self._network()
        self.layer_slices_, start = {}, 0
        for layer in self.layers_:
            width = pooled_width(self.layer_shapes_[layer], self.pooling)
            self.layer_slices_[layer] = slice(start, start + width)
            start += width
        self.n_features_out_ = start
        return selected

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

    def _resolve_layers(self, layers) -> list[str]:
        if layers is None:
            # Finding it traces the network (about 0.3 s): once per network, not per clone.
            identity = self.backbone_.identity
            name = None if has_lazy(self.backbone_.module) else _PENULTIMATE.get(identity)
            if name is None:
                name = penultimate_layer(self.backbone_.module)
                _PENULTIMATE.put(identity, name)
            return [name]
        layers = [layers] if isinstance(layers, str) else list(layers)
        return _distinct_names(
            layers, "layers", "a node name, a non-empty list of names, or None", self.layers
        )

    def _candidate_layers(self) -> list[str]:
        if self.layer_candidates is None:
            try:
                return block_layers(self.backbone_)
            except Exception as error:  # a plain module may not take 224 x 224 images
                raise ValueError(
                    f"Could not list the blocks of {self.backbone_.name!r} to choose a layer "
                    f"from ({error}). Pass layer_candidates=[...] (see sktransfer.list_layers)."
                ) from error
        return _distinct_names(
            list(self.layer_candidates),
            "layer_candidates",
            "a non-empty list of node names or None",
            self.layer_candidates,
        )

    def _resolve_recorded(self) -> list[str]:
        """``layers_`` and every layer named in ``record_layers``, each once, sorted: clones
        asking for different layers of one search then share one tapped network."""
        recorded = list(self.layers_)
        for entry in self.record_layers or ():
            try:
                names = self._resolve_layers(entry)
            except (ValueError, TypeError):
                raise ValueError(
                    f"record_layers entries must be what `layers` accepts (a name, a list of "
                    f"names, or None for the penultimate layer); got {entry!r} in "
                    f"{self.record_layers!r}."
                ) from None
            recorded += names
        return sorted(set(recorded))

    def _network(self) -> FrozenNetwork:
        store = get_cache(self.cache)
        return tapped_network(
            self.backbone_,
            self.recorded_layers_,
            self.device_,
            engine=self.engine_,
            precision=self.precision,
            n_threads=self.n_jobs,
            export_dir=store.onnx_dir if isinstance(store, DiskCache) else None,
        )

    def _ndim(self, layer) -> int:
        return len(self.layer_shapes_[layer]) + 1

    def _extract(self, inputs) -> dict[str, np.ndarray]:
        """Each tapped layer's pooled features, through the activation store when there is
        one. Misses record what any pooling of any recorded layer needs, so the store then
        serves every candidate of a search over ``layers`` and ``pooling``."""
        needed = {
            layer: pooling_statistics(self.pooling, self._ndim(layer)) for layer in self.layers_
        }
        recorded = ("avg", "max", "flat") if self.pooling is None else ("avg", "max")
        stats = stored_statistics(
            self.network_,
            inputs,
            needed,
            store=get_cache(self.cache),
            record={layer: recorded for layer in self.recorded_layers_},
            **batching(
                self.network_,
                len(inputs),
                batch_size=self.batch_size,
                n_jobs=self.n_jobs,
                verbose=self.verbose,
            ),
        )
        return {
            layer: features_from_statistics(
                {stat: stats[(layer, stat)] for stat in needed[layer]},
                self.pooling,
                self._ndim(layer),
            )
            for layer in self.layers_
        }

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: never drop the live object's network
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
            if self.device_.type != "cuda" and self.engine_ == "torch" and self.engine == "auto":
                self.engine_ = resolve_engine(self.engine, self.device_, self.precision)
            self.recorded_layers_ = state.get("recorded_layers_", self.layers_)
            self.network_ = self._network()


_BACKBONES = Registry(4)
_PENULTIMATE = Registry(64)


def _load_backbone(backbone, weights, seed):
    """``load_backbone``, memoised for named networks with reproducible weights: the clones
    of a grid search share one loaded network instead of reading the weights 100 times."""
    reusable = isinstance(backbone, str) and (
        (weights is not None and not _is_path(weights)) or (weights is None and seed is not None)
    )
    if not reusable:
        return load_backbone(backbone, weights, random_state=seed)
    key = (backbone, str(weights), seed)
    loaded = _BACKBONES.get(key)
    if loaded is None:
        loaded = load_backbone(backbone, weights, random_state=seed)
        _BACKBONES.put(key, loaded)
    return loaded


def _check_selection_target(y, n_samples):
    if y is None:
        raise ValueError(
            "DeepFeatureExtractor with layers='auto' requires y to be passed, but the "
            "target y is None: it picks the layer whose features best predict y. Pass the "
            "labels to fit, or name the layers."
        )
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_samples:
        raise ValueError(f"y must hold one label per image: shape ({n_samples},); got {y.shape}.")
    check_classification_targets(y)
    return y


def _distinct_names(names: list, parameter: str, expected: str, given) -> list[str]:
    """``names`` if it is a non-empty list of distinct str, else a ValueError naming
    ``parameter``, what it should be and what it was."""
    if not names or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{parameter} must be {expected}; got {given!r}.")
    if len(set(names)) != len(names):
        raise ValueError(f"{parameter} lists a layer twice: {names}.")
    return names
