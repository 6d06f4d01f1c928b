"""Post-processing of deep features, where scikit-learn has no transformer for it.

Plain L2 normalisation and standardisation are scikit-learn's ``Normalizer`` and
``StandardScaler``. Added here: L2 normalisation of each layer's block separately (layers'
scales differ by orders of magnitude, so one layer would dominate a global norm) and the
Full-Network Embedding's ternary discretisation (Garcia-Gasulla et al., 2018).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["LayerwiseNormalizer", "TernaryDiscretizer", "make_full_network_embedding"]


class LayerwiseNormalizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class TernaryDiscretizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def make_full_network_embedding(backbone="mobilenet_v2", *, weights="DEFAULT", **extractor_params):
    """The Full-Network Embedding: every conv block pooled, standardised, discretised.

    Returns a Pipeline ``DeepFeatureExtractor(layers=<every block>, pooling="avg")`` ->
    ``StandardScaler`` -> ``TernaryDiscretizer``; put a linear classifier after it.

    Examples
    --------
    >>> from sktransfer import make_full_network_embedding
    >>> fne = make_full_network_embedding("mobilenet_v2", weights=None)
    >>> len(fne[0].layers)
    19
    """
    from .backbones import block_layers
    from .extraction import DeepFeatureExtractor

    layers = block_layers(backbone, weights=None)
    extractor = DeepFeatureExtractor(backbone, weights=weights, layers=layers, **extractor_params)
    return Pipeline(
        [
            ("features", extractor),
            ("standardize", StandardScaler()),
            ("discretize", TernaryDiscretizer()),
        ]
    )
