"""The H-score (Bao et al., 2019) and its shrunk form (Ibrahim et al., 2022)."""

from __future__ import annotations

import numpy as np

from ._checks import check_features_labels, spectrum

__all__ = ["h_score"]


def h_score(X, y, *, shrinkage=None) -> float:
    """H-score: ``tr(cov(X)^+ cov(E[X | y]))``, the between-class share of feature variance.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    shrinkage : None, "ledoit-wolf" or float in [0, 1], default=None
        None: the plain score of Bao et al. with a pseudo-inverse. With few samples per
        dimension the covariance is near singular and the plain score is noisy. A number
        ``a`` gives the regularised H-score of Ibrahim et al. (2022),
        ``tr(((1 - a) cov(X) + a mu I)^-1 (1 - a) cov(E[X | y]))`` with ``mu`` the mean
        feature variance: both covariances are shrunk by the same ``1 - a``, so the score
        stays below ``n_classes - 1``. "ledoit-wolf" picks ``a`` from the data
        (:func:`sklearn.covariance.ledoit_wolf_shrinkage`).

    Returns
    -------
    score : float
        Higher is better. At most ``min(n_features, n_classes - 1)``, with or without
        shrinkage; the plain score reaches that bound whenever n_samples <= n_features (the
        classes are then separable in-sample): use shrinkage there.

    References
    ----------
    Bao, Li, Huang, Zheng. "An Information-Theoretic Approach to Transferability in Task
    Transfer Learning", ICIP 2019.
    Ibrahim, Ponomareva, Mazumder. "Newer is not always better: Rethinking transferability
    metrics, their peculiarities, stability and performance", ECML PKDD 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.transferability import h_score
    >>> X = np.array([[0.0], [2.0], [4.0], [6.0]])
    >>> round(h_score(X, [0, 0, 1, 1]), 4)
    0.8
    """
    X, codes = check_features_labels(X, y, "h_score")
    if not (
        shrinkage is None
        or (isinstance(shrinkage, str) and shrinkage == "ledoit-wolf")
        or (np.isscalar(shrinkage) and not isinstance(shrinkage, str) and 0 <= shrinkage <= 1)
    ):
        raise ValueError(
            f"shrinkage must be None, 'ledoit-wolf' or a number in [0, 1]; got {shrinkage!r}."
        )
    n, d = X.shape
    X = X - X.mean(axis=0)
    # Work in the eigenbasis of cov(X) = V diag(sigma / n) V^T: the between-class
    # covariance lives in the row space of X, so only those directions count, and no d x d
    # matrix is inverted (d is 1280 for MobileNetV2's last layer). The class means there
    # are m_k^T V = (1 / n_k) e_k^T U S.
    counts = np.bincount(codes)
    sigma, coordinates = spectrum(X, np.eye(counts.size)[codes])
    projected = coordinates.T * np.sqrt(sigma) / counts[:, None]
    eigenvalues = sigma / n
    kept = 1.0  # the share of cov(E[X | y]) the shrinkage keeps
    if shrinkage is not None:
        amount = _ledoit_wolf_shrinkage(X, sigma) if shrinkage == "ledoit-wolf" else shrinkage
        mu = np.sum(eigenvalues) / d
        eigenvalues = (1 - amount) * eigenvalues + amount * mu
        kept = 1 - amount
    # tr(cov^-1 cov_between), cov_between = sum_k (n_k / n) m_k m_k^T.
    weights = counts / n
    return float(kept * np.sum(weights[:, None] * projected**2 / eigenvalues))


def h_score_shrunk(X, y) -> float:
    """:func:`h_score` with ``shrinkage="ledoit-wolf"`` (a name for ``LAYER_SCORES``)."""
    return h_score(X, y, shrinkage="ledoit-wolf")


def _ledoit_wolf_shrinkage(X: np.ndarray, sigma: np.ndarray) -> float:
    """sklearn.covariance.ledoit_wolf_shrinkage of centred X, from the spectrum of X^T X.

    The same formula without the d x d products: ``||X^T X||_F^2 = sum sigma^2`` and
    ``sum_jk (X^2)^T X^2 = sum_i ||x_i||^4``.
    """
    n, d = X.shape
    trace = np.sum(sigma) / n
    mu = trace / d
    squared_norms = np.sum(X**2, axis=1)
    beta_sum = np.sum(squared_norms**2)
    delta_sum = np.sum(sigma**2) / n**2
    beta = (beta_sum / n - delta_sum) / (d * n)
    delta = (delta_sum - 2.0 * mu * trace + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else float(beta / delta)
