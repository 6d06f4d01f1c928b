"""Centered Kernel Alignment (Kornblith et al., 2019): how alike two representations are.

CKA compares two feature matrices computed on the same samples through their centred Gram
matrices. It is 1 for identical representations, invariant to orthogonal transforms and
isotropic scaling of either side (but not to general invertible linear maps), symmetric, and
in [0, 1].

``debiased=True`` replaces the (biased) HSIC in it with the unbiased estimator of Song et
al. (2012), as Kornblith et al.'s code (``cka(..., debiased=True)``) does: with few samples
per dimension the biased CKA of unrelated representations is well above 0; the debiased one
is not (it can then be slightly negative), and the two agree as n grows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist, squareform

__all__ = ["cka_matrix", "gram_cka", "linear_cka", "rbf_cka"]


def linear_cka(X, Y, *, debiased=False) -> float:
    """Linear CKA between two representations of the same samples.

    Uses the feature-space form ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` on
    column-centred features, which equals :func:`gram_cka` on ``X X^T`` and ``Y Y^T`` without
    building n x n matrices (also debiased: the unbiased HSIC needs only the rows' squared
    norms besides).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        Features of the same samples, in the same order; the widths may differ.
    debiased : bool, default=False
        Use the unbiased HSIC estimator (needs at least 4 samples).

    Returns
    -------
    cka : float
        In [0, 1]; debiased, it can be slightly negative.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import linear_cka
    >>> X = np.random.default_rng(0).normal(size=(50, 8))
    >>> round(linear_cka(X, 3 * X), 6)
    1.0
    """
    X, Y = _check_pair(X, Y, debiased)
    X = X - X.mean(axis=0)
    Y = Y - Y.mean(axis=0)
    cross = np.linalg.norm(Y.T @ X) ** 2
    self_x = np.linalg.norm(X.T @ X) ** 2
    self_y = np.linalg.norm(Y.T @ Y) ** 2
    if debiased:
        rows_x, rows_y = np.sum(X**2, axis=1), np.sum(Y**2, axis=1)
        cross = _debias_linear(cross, rows_x, rows_y)
        self_x = _debias_linear(self_x, rows_x, rows_x)
        self_y = _debias_linear(self_y, rows_y, rows_y)
    return _ratio(cross, self_x, self_y, debiased)


def _debias_linear(hsic: float, rows_a: np.ndarray, rows_b: np.ndarray) -> float:
    """The unbiased HSIC of linear kernels on centred features, up to 1 / (n (n - 3)).

    With ``K = A A^T`` (centred A, so ``K 1 = 0``), ``K~`` its zero-diagonal copy and
    ``r_i = ||a_i||^2``: ``tr(K~ L~) = ||A^T B||^2 - r.s``, ``1^T K~ 1 = -sum r`` and
    ``1^T K~ L~ 1 = r.s``, which Song et al.'s formula combines as below.
    """
    n = rows_a.size
    return (
        hsic - n / (n - 2) * (rows_a @ rows_b) + rows_a.sum() * rows_b.sum() / ((n - 1) * (n - 2))
    )


def rbf_cka(X, Y, sigma=None, *, debiased=False) -> float:
    """CKA with Gaussian (RBF) kernels ``exp(-||a - b||^2 / (2 sigma^2))``.

    Parameters
    ----------
    X, Y, debiased
        As in :func:`linear_cka`: features of the same samples, in the same order.
    sigma : float or None, default=None
        Kernel bandwidth, used for both sides. None: for each side, Kornblith et al.'s rule,
        the square root of the median of the full n x n matrix of squared distances (its
        zero diagonal included), which keeps the score invariant to isotropic scaling.

    Returns
    -------
    cka : float
        As :func:`linear_cka`'s, for the kernels' feature spaces.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import rbf_cka
    >>> X = np.random.default_rng(0).normal(size=(50, 8))
    >>> round(rbf_cka(X, X), 6)
    1.0
    """
    X, Y = _check_pair(X, Y, debiased)
    if sigma is not None and not (np.isscalar(sigma) and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number or None; got {sigma!r}.")
    return gram_cka(_rbf_gram(X, sigma), _rbf_gram(Y, sigma), debiased=debiased)


def gram_cka(K, L, *, debiased=False) -> float:
    """CKA from two n x n Gram (kernel) matrices of the same samples.

    ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``HSIC(K, L) = tr(K H L H)``, ``H`` the
    centring matrix (the 1/(n-1)^2 factors cancel). Debiased: the unbiased estimator
    ``[tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2 / (n-2) 1^T K~ L~ 1] / (n (n-3))``
    of Song et al. (2012), ``K~`` and ``L~`` with zeroed diagonals.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import gram_cka, linear_cka
    >>> X, Y = np.random.default_rng(0).normal(size=(2, 30, 5))
    >>> bool(np.isclose(gram_cka(X @ X.T, Y @ Y.T), linear_cka(X, Y)))
    True
    """
    K = _check_gram(K, "K", debiased)
    L = _check_gram(L, "L", debiased)
    if K.shape != L.shape:
        raise ValueError(
            f"K and L must be Gram matrices of the same samples; got shapes {K.shape} and "
            f"{L.shape}."
        )
    hsic = _unbiased_hsic if debiased else _biased_hsic
    return _ratio(hsic(K, L), hsic(K, K), hsic(L, L), debiased)


def _biased_hsic(K: np.ndarray, L: np.ndarray) -> float:
    return float(np.sum(_centre(K) * _centre(L)))  # tr(Kc Lc) for symmetric matrices


def _unbiased_hsic(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC, up to the factor 1 / (n (n - 3)) that cancels in CKA."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    k_ones, l_ones = K.sum(axis=1), L.sum(axis=1)
    return float(
        np.sum(K * L)
        + k_ones.sum() * l_ones.sum() / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (k_ones @ l_ones)
    )


def cka_matrix(
    features, other=None, *, kernel="linear", sigma=None, debiased=False
) -> pd.DataFrame:
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
    debiased : bool, default=False
        Use the unbiased HSIC estimator (see :func:`linear_cka`).

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

        def pair(a, b):
            return linear_cka(a, b, debiased=debiased)

    else:

        def pair(a, b):
            return rbf_cka(a, b, sigma=sigma, debiased=debiased)

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


def _check_pair(X, Y, debiased=False) -> tuple[np.ndarray, np.ndarray]:
    X = _as_features(X, "X", debiased)
    Y = _as_features(Y, "Y", debiased)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X and Y must hold the same samples (rows); got {X.shape[0]} and {Y.shape[0]} "
            "rows. Compute both representations on the same inputs, in the same order."
        )
    return X, Y


def _as_features(X, name: str, debiased=False) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_samples, n_features); got shape {X.shape}. Pool or "
            "flatten activation maps first."
        )
    _check_sample_count(X.shape[0], name, debiased)
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    return X


def _check_sample_count(n: int, name: str, debiased: bool) -> None:
    if n < 2:
        raise ValueError(f"{name} needs at least 2 samples to centre; got {n}.")
    if debiased and n < 4:
        raise ValueError(
            f"{name}: the unbiased HSIC estimator needs at least 4 samples; got {n}. Pass "
            "debiased=False."
        )


def _check_gram(K, name: str, debiased=False) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"{name} must be a square n x n Gram matrix; got shape {K.shape}.")
    _check_sample_count(K.shape[0], name, debiased)
    if not np.isfinite(K).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    return K


def _centre(K: np.ndarray) -> np.ndarray:
    return K - K.mean(axis=0, keepdims=True) - K.mean(axis=1, keepdims=True) + K.mean()


def _rbf_gram(X: np.ndarray, sigma) -> np.ndarray:
    sq = squareform(pdist(X, "sqeuclidean"))
    if sigma is None:
        # Kornblith et al.'s rule: the median over all n^2 entries, the zero diagonal too.
        sigma = np.sqrt(np.median(sq))
    if sigma == 0:
        raise ValueError(
            "Most samples are identical (the median pairwise distance is 0): the RBF "
            "bandwidth rule fails. Pass sigma= or remove duplicated inputs."
        )
    return np.exp(-sq / (2.0 * sigma**2))


def _ratio(cross: float, self_a: float, self_b: float, debiased: bool) -> float:
    """``cross / sqrt(self_a self_b)``: CKA from its three HSIC terms."""
    if not (self_a > 0 and self_b > 0):
        raise ValueError(
            "A representation is constant over the samples (zero after centring): CKA is "
            "undefined. Check for dead layers or duplicated inputs."
        )
    value = cross / np.sqrt(self_a * self_b)
    # Rounding can push a perfect match a few ulps past 1; the debiased estimate may
    # legitimately fall below 0.
    return float(np.clip(value, -1.0 if debiased else 0.0, 1.0))


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
