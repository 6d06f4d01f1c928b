"""Class separability in Gaussian models of the features: GBC and SFDA."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from sklearn.decomposition import PCA

from ._checks import check_features_labels, class_means, gram_eigenvalues

__all__ = ["gbc_score", "sfda_score"]

# GBC's floor on a class's per-dimension variance (the authors' code), so that a constant
# feature does not give log(0).
_GBC_MIN_VARIANCE = 1e-4


def gbc_score(X, y, *, n_components=64, gaussian="spherical") -> float:
    """GBC: minus the summed Bhattacharyya coefficients between every two classes.

    The features are projected by PCA onto ``min(n_components, n_samples, n_features)``
    components; each class is modelled as a Gaussian with a diagonal covariance (its
    per-dimension variances, floored at 1e-4) or a spherical one (their mean), and the score
    is ``-sum_{i != j} exp(-D_B(i, j))`` over ordered pairs of classes, with the
    Bhattacharyya distance
    ``D_B = 1/8 (m_i - m_j)^T S^-1 (m_i - m_j) + 1/2 log(det S / sqrt(det S_i det S_j))``,
    ``S = (S_i + S_j) / 2``. At most 0 (classes that do not overlap); higher is better.

    The authors' code (google-research ``stable_transfer``, the defaults used here: 64
    components, spherical) takes the log-determinant of a spherical covariance as the log
    of its variance, without the factor ``n_components`` the formula has; this function
    follows the formula.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    n_components : int, default=64
        PCA components kept.
    gaussian : {"spherical", "diagonal"}, default="spherical"

    Returns
    -------
    score : float

    References
    ----------
    Pandy, Agostinelli, Uijlings, Ferrari, Mensink. "Transferability Estimation using
    Bhattacharyya Class Separability", CVPR 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.transferability import gbc_score
    >>> X = np.array([[0.0], [2.0], [4.0], [6.0]])
    >>> # class variances 1 and 1, means 4 apart: D_B = 16 / 8, two ordered pairs
    >>> round(gbc_score(X, [0, 0, 1, 1]), 6), round(-2 * float(np.exp(-2.0)), 6)
    (-0.270671, -0.270671)
    """
    X, codes = check_features_labels(X, y, "gbc_score")
    if not (isinstance(n_components, (int, np.integer)) and n_components >= 1):
        raise ValueError(f"n_components must be a positive integer; got {n_components!r}.")
    if gaussian not in ("spherical", "diagonal"):
        raise ValueError(f"gaussian must be 'spherical' or 'diagonal'; got {gaussian!r}.")
    kept = min(n_components, *X.shape)
    X = PCA(n_components=kept, svd_solver="full").fit_transform(X)
    means = class_means(X, codes)
    variances = np.maximum(class_means(X**2, codes) - means**2, _GBC_MIN_VARIANCE)
    if gaussian == "spherical":
        variances = np.repeat(variances.mean(axis=1, keepdims=True), kept, axis=1)
    average = (variances[:, None, :] + variances[None, :, :]) / 2  # (C, C, kept)
    gaps = (means[:, None, :] - means[None, :, :]) ** 2
    log_variances = np.log(variances)
    distance = np.sum(gaps / average, axis=2) / 8 + 0.5 * np.sum(
        np.log(average) - (log_variances[:, None, :] + log_variances[None, :, :]) / 2, axis=2
    )
    coefficients = np.exp(-distance)
    np.fill_diagonal(coefficients, 0.0)
    return float(-np.sum(coefficients))


def sfda_score(X, y) -> float:
    """SFDA: accuracy of a self-challenged, regularised Fisher discriminant on the features.

    A shrunk linear discriminant (within-class covariance ``S_w`` shrunk towards
    ``tr(S_w) / d I`` by ``lambda = max(exp(-5 sigma_max(S_w)), 1e-10)``) gives each sample
    the probability ``p_i`` of its class, softened by a second softmax; the features are then
    mixed towards the mean of the other classes' means, ``x_i <- p_i x_i + (1 - p_i)
    mean_{k != y_i} m_k`` (ConfMix), and the score is the mean probability of the true class
    under a second discriminant fitted to the mixed features (same ``lambda``). In (0, 1];
    higher is better.

    The projection onto the Fisher space in the authors' code keeps every eigenvector of
    ``(S_b, S_w)``, so its class scores are exactly the shrunk linear discriminant's
    (``x^T S_w^-1 m_k - m_k^T S_w^-1 m_k / 2 + log prior_k``), computed here directly.
    ``sigma_max`` is the exact largest eigenvalue (the authors' code: 3 power iterations).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)

    Returns
    -------
    score : float

    References
    ----------
    Shao, Zhao, Ge, Yang, Ma, Luo. "Not All Models Are Equal: Predicting Model
    Transferability in a Self-challenging Fisher Space", ECCV 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.transferability import sfda_score
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> good = 3 * y[:, None] + rng.normal(size=(40, 2))
    >>> bool(sfda_score(good, y) > sfda_score(rng.normal(size=(40, 2)), y))
    True
    """
    X, codes = check_features_labels(X, y, "sfda_score")
    n = X.shape[0]
    rows = np.arange(n)
    means = class_means(X, codes)
    within_largest = gram_eigenvalues(X - means[codes])[-1] / n
    shrinkage = max(np.exp(-5 * within_largest), 1e-10)
    softened = softmax(_shrunk_lda_probabilities(X, codes, shrinkage), axis=1)
    confidence = softened[rows, codes][:, None]
    others = (means.sum(axis=0) - means) / (means.shape[0] - 1)  # mean of the other classes
    mixed = confidence * X + (1 - confidence) * others[codes]
    return float(np.mean(_shrunk_lda_probabilities(mixed, codes, shrinkage)[rows, codes]))


def _shrunk_lda_probabilities(X: np.ndarray, codes: np.ndarray, shrinkage: float) -> np.ndarray:
    """Class probabilities of a linear discriminant with a shrunk within-class covariance.

    ``S_w = sum_k prior_k cov_k`` (population covariances), shrunk as
    ``(1 - a) S_w + a tr(S_w) / d I``: scikit-learn's ``LinearDiscriminantAnalysis(
    solver="lsqr", shrinkage=a)``.
    """
    n, d = X.shape
    means = class_means(X, codes)
    residuals = X - means[codes]
    within = residuals.T @ residuals / n
    shrunk = (1 - shrinkage) * within
    shrunk.flat[:: d + 1] += shrinkage * np.trace(within) / d
    coefficients = np.linalg.solve(shrunk, means.T).T  # (n_classes, d)
    priors = np.bincount(codes) / n
    intercepts = -0.5 * np.sum(means * coefficients, axis=1) + np.log(priors)
    return softmax(X @ coefficients.T + intercepts, axis=1)
