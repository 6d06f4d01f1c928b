"""Input checks and the linear algebra the scores share (numpy and scikit-learn only)."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets


def check_features_labels(X, y, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Float64 2-D finite features and labels encoded 0..n_classes-1 (at least 2 classes)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{who} needs 2-D features (n_samples, n_features); got shape {X.shape}.")
    if not np.isfinite(X).all():
        raise ValueError(f"{who}: the features contain NaN or infinity.")
    return X, check_labels(y, X.shape[0], who)


def check_labels(y, n_samples: int, who: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n_samples:
        raise ValueError(
            f"{who} needs one label per sample: y of shape ({n_samples},); got {y.shape}."
        )
    check_classification_targets(y)
    codes = LabelEncoder().fit_transform(y)
    if codes.max() < 1:
        raise ValueError(f"{who} needs at least 2 classes in y; got only 1 class: {np.unique(y)}.")
    return codes


def check_probabilities(probabilities, y, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of class probabilities (non-negative, summing to 1) and encoded labels."""
    theta, codes = check_features_labels(probabilities, y, who)
    sums = theta.sum(axis=1)
    if np.any(theta < 0) or not np.allclose(sums, 1.0, atol=1e-4):
        raise ValueError(
            f"{who} needs probabilities: non-negative rows that sum to 1; got row sums in "
            f"[{sums.min():.4g}, {sums.max():.4g}] and minimum {theta.min():.4g}. Apply a "
            "softmax to logits first (scipy.special.softmax(logits, axis=1))."
        )
    return theta, codes


def class_means(X: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Row k: the mean of the rows of class k."""
    means = np.zeros((codes.max() + 1, X.shape[1]))
    np.add.at(means, codes, X)
    return means / np.bincount(codes)[:, None]


def spectrum(X: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero eigenvalues ``sigma`` of ``X^T X``, and ``U^T targets`` (U: X's left
    singular vectors).

    Through the smaller of the two Gram matrices (``X X^T`` when n < d, else ``X^T X``):
    cheaper than an SVD of X and all a linear-Gaussian score needs. With n >= d, U is never
    formed: ``U^T T = diag(1 / s) V^T (X^T T)``. Eigenvalues below ``max(n, d) * eps`` of the
    largest are treated as zero (numerical rank).
    """
    n, d = X.shape
    if n < d:
        sigma, vectors = np.linalg.eigh(X @ X.T)
    else:
        sigma, vectors = np.linalg.eigh(X.T @ X)
    keep = sigma > max(sigma.max(), 0.0) * max(n, d) * np.finfo(float).eps
    if not keep.any():
        raise ValueError("The features are all zero (after centring): nothing to score.")
    sigma, vectors = sigma[keep], vectors[:, keep]
    if n < d:
        return sigma, vectors.T @ targets
    return sigma, (vectors.T @ (X.T @ targets)) / np.sqrt(sigma)[:, None]


def gram_eigenvalues(X: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``X^T X`` from the smaller Gram matrix (the others are zero)."""
    n, d = X.shape
    gram = X @ X.T if n < d else X.T @ X
    return np.clip(np.linalg.eigvalsh(gram), 0.0, None)
