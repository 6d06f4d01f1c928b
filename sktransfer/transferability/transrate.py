"""TransRate (Huang et al., 2022): the coding rate the labels explain."""

from __future__ import annotations

import numpy as np

from ._checks import check_features_labels, gram_eigenvalues

__all__ = ["transrate_score"]


def transrate_score(X, y, *, eps=1e-4) -> float:
    """TransRate: the coding rate of the features minus its mean over the classes.

    With ``Z`` the column-centred features and ``R(Z, eps) = 1/2 log det(I + Z^T Z / (n eps))``
    the rate-distortion of its ``n`` rows, the score is ``R(Z, eps) - 1/C sum_c R(Z_c, eps)``,
    ``Z_c`` the rows of class ``c`` (not centred again) and ``C`` the number of classes: the
    paper's published code (also TLlib's ``tllib.ranking.transrate``). Higher is better;
    compare scores on the same labels and the same ``eps`` only.

    It rewards classes that span different directions, not shifted class means: the class
    rates are taken around the overall mean, so with two classes (whose centred means are
    collinear) a pure shift of the means leaves the score unchanged. With fewer samples per
    class than features, each rate grows with the rank of its rows by ``1/2 log(1 / eps)``
    per dimension, and the score mostly counts dimensions.

    Each log-determinant comes from the eigenvalues of the smaller Gram matrix
    (``det(I + Z^T Z / c) = det(I + Z Z^T / c)``), so a class with few samples costs little.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    eps : float, default=1e-4
        The distortion ``eps`` (the paper's default).

    Returns
    -------
    score : float

    References
    ----------
    Huang, Huang, Wei, Zhang, Dai, Zhou. "Frustratingly Easy Transferability Estimation",
    ICML 2022.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.transferability import transrate_score
    >>> X = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    >>> round(transrate_score(X, [0, 0, 1, 1], eps=1.0), 6)  # log(3 / 2) - log(2) / 2
    0.058892
    """
    X, codes = check_features_labels(X, y, "transrate_score")
    if not (np.isscalar(eps) and np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number; got {eps!r}.")
    X = X - X.mean(axis=0)
    whole = _coding_rate(X, eps)
    per_class = [_coding_rate(X[codes == k], eps) for k in range(codes.max() + 1)]
    return float(whole - np.mean(per_class))


def _coding_rate(Z: np.ndarray, eps: float) -> float:
    return 0.5 * float(np.sum(np.log1p(gram_eigenvalues(Z) / (Z.shape[0] * eps))))
