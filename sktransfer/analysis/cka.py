"""Centered Kernel Alignment (Kornblith et al., 2019): how alike two representations are.

CKA compares two feature matrices computed on the same samples through their centred Gram
matrices. It is 1 for identical representations, invariant to orthogonal transforms and
isotropic scaling of either side (but not to general invertible linear maps), symmetric, and
in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist, squareform

__all__ = ["cka_matrix", "gram_cka", "linear_cka", "rbf_cka"]


def linear_cka(X, Y) -> float:
    """Linear CKA between two representations of the same samples.

    Uses the feature-space form ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` on
    column-centred features, which equals :func:`gram_cka` on ``X X^T`` and ``Y Y^T`` without
    building n x n matrices.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Features of the same samples, in the same order; the widths may differ.

    Returns
    -------
    cka : float in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import linear_cka
    >>> X = np.random.default_rng(0).normal(size=(50, 8))
    >>> round(linear_cka(X, 3 * X), 6)
    1.0
    """
    X, Y = _check_pair(X, Y)
    X = X - X.mean(axis=0)
    Y = Y - Y.mean(axis=0)
    cross = np.linalg.norm(Y.T @ X) ** 2
    norm_x = np.linalg.norm(X.T @ X)
    norm_y = np.linalg.norm(Y.T @ Y)
    _check_not_constant(norm_x, norm_y)
    return _clip(cross / (norm_x * norm_y))


def rbf_cka(X, Y, sigma=None) -> float:
    """CKA with Gaussian (RBF) kernels ``exp(-||a - b||^2 / (2 sigma^2))``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Features of the same samples, in the same order.
    sigma : float or None, default=None
        Kernel bandwidth, used for both sides. None: for each side, the median Euclidean
        distance between its distinct samples (Kornblith et al.'s heuristic), which keeps the
        score invariant to isotropic scaling.

    Returns
    -------
    cka : float in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import rbf_cka
    >>> X = np.random.default_rng(0).normal(size=(50, 8))
    >>> round(rbf_cka(X, X), 6)
    1.0
    """
    X, Y = _check_pair(X, Y)
    if sigma is not None and not (np.isscalar(sigma) and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number or None; got {sigma!r}.")
    return gram_cka(_rbf_gram(X, sigma), _rbf_gram(Y, sigma))


def gram_cka(K, L) -> float:
    """CKA from two n x n Gram (kernel) matrices of the same samples.

    ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``HSIC(K, L) = tr(K H L H)``, ``H`` the
    centring matrix (the 1/(n-1)^2 factors cancel).

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import gram_cka, linear_cka
    >>> X, Y = np.random.default_rng(0).normal(size=(2, 30, 5))
    >>> bool(np.isclose(gram_cka(X @ X.T, Y @ Y.T), linear_cka(X, Y)))
    True
    """
    K = _check_gram(K, "K")
    L = _check_gram(L, "L")
    if K.shape != L.shape:
        raise ValueError(
            f"K and L must be Gram matrices of the same samples; got shapes {K.shape} and "
            f"{L.shape}."
        )
    Kc, Lc = _centre(K), _centre(L)
    cross = np.sum(Kc * Lc)  # tr(Kc Lc) for symmetric matrices
    norm_k, norm_l = np.linalg.norm(Kc), np.linalg.norm(Lc)
    _check_not_constant(norm_k, norm_l)
    return _clip(cross / (norm_k * norm_l))


def cka_matrix(features, other=None, *, kernel="linear", sigma=None) -> pd.DataFrame:
    """Layer-by-layer CKA similarity of one or two networks on the same images.

    Parameters
    ----------
    features : mapping of str to array of shape (n_samples, n_features)
        Each layer's features (for example from
        :func:`sktransfer.analysis.extract_layer_features`), all on the same samples.
    other : mapping of str to array, optional
        A second network's layers on the same samples. None compares ``features`` with
        itself (a symmetric matrix with ones on the diagonal).
    kernel : {"linear", "rbf"}, default="linear"
    sigma : float or None, default=None
        RBF bandwidth (see :func:`rbf_cka`).

    Returns
    -------
    matrix : pandas.DataFrame
        Rows are the layers of ``features``, columns the layers of ``other``.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import cka_matrix
    >>> X = np.random.default_rng(0).normal(size=(40, 6))
    >>> cka_matrix({"a": X, "b": X[:, :3]}).round(2).loc["a", "a"]
    np.float64(1.0)
    """
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf'; got {kernel!r}.")
    rows = _check_layers(features, "features")
    cols = rows if other is None else _check_layers(other, "other")
    if kernel == "linear":
        pair = linear_cka
    else:

        def pair(a, b):
            return rbf_cka(a, b, sigma=sigma)

    matrix = pd.DataFrame(np.nan, index=list(rows), columns=list(cols), dtype=float)
    for i, a in enumerate(rows.values()):
        for j, b in enumerate(cols.values()):
            if other is None and j < i:  # symmetric: reuse the upper triangle
                matrix.iloc[i, j] = matrix.iloc[j, i]
            else:
                matrix.iloc[i, j] = pair(a, b)
    matrix.index.name = "layer"
    return matrix


# --------------------------------------------------------------------------- helpers


def _check_pair(X, Y) -> tuple[np.ndarray, np.ndarray]:
    X = _as_features(X, "X")
    Y = _as_features(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X and Y must hold the same samples (rows); got {X.shape[0]} and {Y.shape[0]} "
            "rows. Compute both representations on the same inputs, in the same order."
        )
    return X, Y


def _as_features(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_samples, n_features); got shape {X.shape}. Pool or "
            "flatten activation maps first."
        )
    if X.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples to centre; got {X.shape[0]}.")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    return X


def _check_gram(K, name: str) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 2:
        raise ValueError(f"{name} must be a square n x n Gram matrix (n >= 2); got {K.shape}.")
    if not np.isfinite(K).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    return K


def _centre(K: np.ndarray) -> np.ndarray:
    return K - K.mean(axis=0, keepdims=True) - K.mean(axis=1, keepdims=True) + K.mean()


def _rbf_gram(X: np.ndarray, sigma) -> np.ndarray:
    sq = squareform(pdist(X, "sqeuclidean"))
    if sigma is None:
        distances = np.sqrt(sq[np.triu_indices_from(sq, k=1)])
        sigma = np.median(distances[distances > 0]) if np.any(distances > 0) else 0.0
    if sigma == 0:
        raise ValueError("All samples are identical: CKA is undefined for a constant input.")
    return np.exp(-sq / (2.0 * sigma**2))


def _check_not_constant(norm_a: float, norm_b: float) -> None:
    if norm_a == 0 or norm_b == 0:
        raise ValueError(
            "A representation is constant over the samples (zero after centring): CKA is "
            "undefined. Check for dead layers or duplicated inputs."
        )


def _clip(value: float) -> float:
    # Rounding can push a perfect match a few ulps past 1.
    return float(np.clip(value, 0.0, 1.0))


def _check_layers(features, name: str) -> dict[str, np.ndarray]:
    if not isinstance(features, Mapping) or not features:
        raise ValueError(
            f"{name} must be a non-empty mapping of layer name to 2-D feature array; got "
            f"{type(features).__name__}."
        )
    arrays = {
        str(layer): _as_features(value, f"{name}[{layer!r}]") for layer, value in features.items()
    }
    sizes = {a.shape[0] for a in arrays.values()}
    if len(sizes) > 1:
        raise ValueError(
            f"All layers in {name} must hold the same samples; got row counts {sizes}."
        )
    return arrays
