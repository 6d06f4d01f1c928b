"""The ground truth the scores stand in for: a cross-validated linear probe."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ._checks import check_features_labels

__all__ = ["linear_probe_score"]


def linear_probe_score(X, y, *, cv=3, C=1.0, max_iter=1000, random_state=0) -> float:
    """Cross-validated accuracy of a standardised logistic regression: the ground truth.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    cv : int, default=3
        Stratified folds (shuffled with ``random_state``).
    C : float, default=1.0
        Inverse L2 regularisation strength of the logistic regression.
    max_iter : int, default=1000
    random_state : int, default=0

    Returns
    -------
    accuracy : float
        Mean accuracy over the folds.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.transferability import linear_probe_score
    >>> y = np.repeat([0, 1], 15)
    >>> X = y[:, None] + 0.1 * np.random.default_rng(0).normal(size=(30, 2))
    >>> linear_probe_score(X, y)
    1.0
    """
    X, codes = check_features_labels(X, y, "linear_probe_score")
    smallest = np.bincount(codes).min()
    if smallest < cv:
        raise ValueError(
            f"linear_probe_score needs at least cv={cv} samples per class; the rarest class "
            f"has {smallest}. Lower cv or add samples."
        )
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    folds = StratifiedKFold(cv, shuffle=True, random_state=random_state)
    return float(np.mean(cross_val_score(probe, X, codes, cv=folds)))
