"""Post-processing of deep features, where scikit-learn has no transformer for it.

Plain L2 normalisation and standardisation are scikit-learn's ``Normalizer`` and
``StandardScaler``. Added here: L2 normalisation of each layer's block separately (layers'
scales differ by orders of magnitude, so one layer would dominate a global norm) and the
Full-Network Embedding (Garcia-Gasulla et al., 2018): its standardisation, where a feature
constant on the training data is 0 everywhere, its ternary discretisation, and the layers it
taps (every convolutional and hidden fully connected layer, or every block).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ._compat import Interval, _fit_context

__all__ = [
    "FullNetworkScaler",
    "LayerwiseNormalizer",
    "TernaryDiscretizer",
    "full_network_layers",
    "make_full_network_embedding",
]


class _FittedFloatTransformer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """The base of the stateless transformers here: ``fit`` is still required (it checks
    the input and records its width), and float32 input stays float32."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class LayerwiseNormalizer(_FittedFloatTransformer):
    """Scale each layer's block of features to unit L2 norm, per sample.

    Parameters
    ----------
    block_sizes : list of int or None, default=None
        The width of each layer's block, in column order (a
        :class:`~sktransfer.DeepFeatureExtractor`'s ``layer_slices_`` give them). None reads
        the blocks from feature names ``<layer>__<name>`` (a DataFrame from
        ``set_output(transform="pandas")``); without such names the whole row is one block.

    Attributes
    ----------
    blocks_ : list of slice
        The column blocks normalised separately.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import LayerwiseNormalizer
    >>> X = np.array([[3.0, 4.0, 100.0]])
    >>> LayerwiseNormalizer(block_sizes=[2, 1]).fit_transform(X)
    array([[0.6, 0.8, 1. ]])
    """

    _parameter_constraints: dict = {"block_sizes": [list, tuple, None]}

    def __init__(self, block_sizes=None):
        self.block_sizes = block_sizes

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the column blocks (no statistics are learned)."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        self.blocks_ = self._blocks(X.shape[1])
        return self

    def transform(self, X):
        """Divide each block of each row by its L2 norm (zero blocks stay zero)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], copy=True)
        for block in self.blocks_:
            norms = np.linalg.norm(X[:, block], axis=1, keepdims=True)
            norms[norms == 0] = 1
            X[:, block] /= norms
        return X

    def _blocks(self, n_features):
        if self.block_sizes is not None:
            sizes = list(self.block_sizes)
            if not all(isinstance(s, Integral) and s > 0 for s in sizes):
                raise ValueError(f"block_sizes must be positive integers; got {sizes}.")
            if sum(sizes) != n_features:
                raise ValueError(
                    f"block_sizes {sizes} add up to {sum(sizes)} columns, but X has "
                    f"{n_features}. Pass the widths of the extractor's layer_slices_."
                )
            bounds = np.cumsum([0, *sizes])
            return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        names = getattr(self, "feature_names_in_", None)
        if names is None or not all("__" in str(n) for n in names):
            return [slice(0, n_features)]
        blocks, start = [], 0
        layers = [str(n).rsplit("__", 1)[0] for n in names]
        for i in range(1, n_features + 1):
            if i == n_features or layers[i] != layers[start]:
                blocks.append(slice(start, i))
                start = i
        return blocks


class TernaryDiscretizer(_FittedFloatTransformer):
    """Map standardised features to -1, 0 or 1 (the Full-Network Embedding's last step).

    Values above ``high`` become 1, below ``low`` become -1, the rest 0. Put a
    ``StandardScaler`` before it so the thresholds act on training-set z-scores, as in
    Garcia-Gasulla et al. (2018), whose thresholds are the defaults.

    Parameters
    ----------
    low : float, default=-0.25
    high : float, default=0.15

    Attributes
    ----------
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import TernaryDiscretizer
    >>> TernaryDiscretizer().fit_transform(np.array([[-1.0, 0.0, 0.2]]))
    array([[-1.,  0.,  1.]])
    """

    _parameter_constraints: dict = {
        "low": [Interval(Real, None, None, closed="neither")],
        "high": [Interval(Real, None, None, closed="neither")],
    }

    def __init__(self, low=-0.25, high=0.15):
        self.low = low
        self.high = high

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the thresholds and the input; nothing is learned."""
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high}).")
        validate_data(self, X, dtype=[np.float64, np.float32])
        return self

    def transform(self, X):
        """Return values in {-1, 0, 1}, float32 for float32 input, else float64."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        out = np.zeros(X.shape, dtype=X.dtype)
        out[X > self.high] = 1
        out[X < self.low] = -1
        return out


class FullNetworkScaler(StandardScaler):
    """Standardise with the training mean and deviation; a feature constant on the training
    data is 0 on every row.

    The Full-Network Embedding's rule (Garcia-Gasulla et al., 2018, and the authors' code):
    a zero training deviation means the feature carries no information, so it maps to 0 (its
    ternary code is then 0) even where a test row differs. ``StandardScaler`` would return
    ``x - mean`` there, and the discretiser would turn a tiny difference into -1 or 1.
    Parameters and attributes as for :class:`sklearn.preprocessing.StandardScaler`.

    Attributes
    ----------
    constant_features_ : ndarray of bool of shape (n_features_in_,)
        The features whose training values are all equal.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.postprocessing import FullNetworkScaler
    >>> scaler = FullNetworkScaler().fit(np.array([[0.0, 5.0], [2.0, 5.0]]))
    >>> scaler.transform(np.array([[2.0, 7.0]]))
    array([[1., 0.]])
    """

    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the mean and deviation (StandardScaler) and which features are constant."""
        if sparse.issparse(X):
            raise TypeError(
                "FullNetworkScaler needs dense features (it finds the constant ones); got a "
                f"sparse {type(X).__name__}. Pass X.toarray()."
            )
        first = not hasattr(self, "n_samples_seen_")
        super().partial_fit(X, y, sample_weight)
        values = np.asarray(X, dtype=np.float64)
        # fmin / fmax skip NaN (which StandardScaler also ignores) unless a column is all NaN.
        low, high = np.fmin.reduce(values, axis=0), np.fmax.reduce(values, axis=0)
        if not first:
            low, high = np.minimum(low, self._low), np.maximum(high, self._high)
        self._low, self._high = low, high
        self.constant_features_ = low == high
        return self

    def transform(self, X, copy=None):
        """Standardise; the features constant in training become 0."""
        out = super().transform(X, copy=copy)
        out[:, self.constant_features_] = 0
        return out


# Layers that rescale or gate a convolution's output without mixing channels: the
# Full-Network Embedding taps a convolution after them. Activations count only inside an
# nn.Sequential, where each child runs once, in order (a block's shared ReLU module may run
# twice, its second call after the residual sum).
_NORMALISATION = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)
_ACTIVATION = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.Hardswish,
    nn.GELU,
    nn.LeakyReLU,
    nn.ELU,
    nn.Hardtanh,
    nn.Tanh,
    nn.Sigmoid,
    nn.Dropout,
    nn.Identity,
)


def full_network_layers(backbone="mobilenet_v2", weights=None) -> list[str]:
    """Every convolutional and hidden fully connected layer: the Full-Network Embedding's taps.

    As Garcia-Gasulla et al. (2018) define it: the output of every ``nn.Conv2d`` and every
    ``nn.Linear`` but the last (the source-task logits), each taken after the normalisation
    that follows it and, inside an ``nn.Sequential`` unit, after its activation (VGG16: 13
    convolutions and fc6, fc7; MobileNetV2: 52 convolutions). Compare
    :func:`sktransfer.block_layers`, one tap per block.

    Examples
    --------
    >>> from sktransfer.postprocessing import full_network_layers
    >>> layers = full_network_layers("mobilenet_v2")
    >>> len(layers), layers[:3]
    (52, ['features.0', 'features.1.conv.0', 'features.1.conv.2'])
    """
    from .backbones import Backbone, last_linear, load_backbone

    bb = backbone if isinstance(backbone, Backbone) else load_backbone(backbone, weights)
    modules = dict(bb.module.named_modules())
    output = (last_linear(bb.module) or (None,))[0]
    taps = [
        _tap_after(modules, name)
        for name, m in modules.items()
        if isinstance(m, nn.Conv2d) or (isinstance(m, nn.Linear) and name != output)
    ]
    if not taps:
        raise ValueError(
            f"{type(bb.module).__name__} has no convolutional or hidden fully connected layer "
            "to tap. Use block_layers or name the layers yourself."
        )
    return taps


def _tap_after(modules: dict, name: str) -> str:
    """The layer whose output is ``name``'s after its normalisation (and activation)."""
    parent_name, _, own = name.rpartition(".")
    parent = modules[parent_name]
    children = list(parent.named_children())
    position = [child for child, _ in children].index(own)
    absorbable = _NORMALISATION + (_ACTIVATION if isinstance(parent, nn.Sequential) else ())
    last = position
    while last + 1 < len(children) and isinstance(children[last + 1][1], absorbable):
        last += 1
    if isinstance(parent, nn.Sequential) and position == 0 and last == len(children) - 1:
        return parent_name  # a conv-norm-activation unit: its own name reads better
    return f"{parent_name}.{children[last][0]}" if parent_name else children[last][0]


def make_full_network_embedding(
    backbone="mobilenet_v2", *, taps="blocks", weights="DEFAULT", **extractor_params
):
    """The Full-Network Embedding: many layers pooled, standardised, discretised.

    Returns a Pipeline ``DeepFeatureExtractor(layers=<taps>, pooling="avg")`` ->
    :class:`FullNetworkScaler` -> :class:`TernaryDiscretizer`; put a linear classifier after
    it.

    Parameters
    ----------
    backbone : str, default="mobilenet_v2"
    taps : {"blocks", "conv"}, default="blocks"
        "conv": the paper's definition, every convolutional and hidden fully connected layer
        (:func:`full_network_layers`; 52 layers, 17,056 features for MobileNetV2). "blocks":
        one tap per block (:func:`sktransfer.block_layers`; 19 layers, 2,816 features),
        six times fewer features (benchmarks/decaf_caltech101.py compares the two).
    weights : str, default="DEFAULT"
    **extractor_params
        Other :class:`~sktransfer.DeepFeatureExtractor` parameters.

    Examples
    --------
    >>> from sktransfer import make_full_network_embedding
    >>> fne = make_full_network_embedding("mobilenet_v2", weights=None)
    >>> len(fne[0].layers)
    19
    >>> len(make_full_network_embedding("mobilenet_v2", taps="conv", weights=None)[0].layers)
    52
    """
    from .backbones import block_layers
    from .extraction import DeepFeatureExtractor

    if taps not in ("blocks", "conv"):
        raise ValueError(f"taps must be 'blocks' or 'conv'; got {taps!r}.")
    pick = block_layers if taps == "blocks" else full_network_layers
    layers = pick(backbone, weights=None)
    extractor = DeepFeatureExtractor(backbone, weights=weights, layers=layers, **extractor_params)
    return Pipeline(
        [
            ("features", extractor),
            ("standardize", FullNetworkScaler()),
            ("discretize", TernaryDiscretizer()),
        ]
    )
