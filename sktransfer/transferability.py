"""Transferability scores: how well features will serve a target task, without training.

A leaf module (numpy and scikit-learn only): the extractor's ``layers="auto"`` and
:mod:`sktransfer.analysis` both import it.

LogME (You et al., 2021) is the log marginal evidence of a Bayesian linear model from the
features to the one-hot labels; LEEP (Nguyen et al., 2020) is the log-likelihood of an
empirical predictor built from the source network's class probabilities; the H-score (Bao et
al., 2019) is the class-conditional feature variance relative to the total. A cheap
cross-validated linear probe (:func:`linear_probe_score`) is the ground truth they stand in
for.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.utils.multiclass import check_classification_targets

__all__ = ["LAYER_SCORES", "h_score", "leep_score", "linear_probe_score", "logme_score"]

# MacKay's fixed point converges linearly; iterate until lambda = alpha / beta moves by less
# than this relative amount (the reference code stops at 1e-2, which leaves the evidence
# about 1e-4 below its maximum; this tolerance makes it exact to well under 1e-6).
_LOGME_TOL = 1e-10
_LOGME_MAX_ITER = 500


def logme_score(X, y) -> float:
    """LogME: the mean per-class log evidence of a Bayesian linear model on the features.

    For each class, the one-hot column ``t`` is modelled as ``t = X w + noise`` with prior
    ``w ~ N(0, 1/alpha)`` and noise precision ``beta``; alpha and beta maximise the marginal
    likelihood (MacKay's fixed point), and the score is that maximum log evidence divided by
    ``n_samples``, averaged over classes. Higher is better; compare scores on the same
    labels only.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Features (not standardised: as in the reference implementation).
    y : array-like of shape (n_samples,)
        Class labels (at least 2 classes).

    Returns
    -------
    score : float

    References
    ----------
    You, Liu, Wang, Long. "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import logme_score
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> good = y[:, None] + 0.1 * rng.normal(size=(40, 3))
    >>> bool(logme_score(good, y) > logme_score(rng.normal(size=(40, 3)), y))
    True
    """
    X, codes = _check_features_labels(X, y, "logme_score")
    n, d = X.shape
    # Each class's one-hot column in the left singular basis; all classes iterate together.
    sigma, coordinates = _spectrum(X, np.eye(codes.max() + 1)[codes])
    evidences, _, _ = _logme_evidences(n, d, sigma, coordinates, np.bincount(codes))
    return float(np.mean(evidences) / n)


def _spectrum(X: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _logme_evidences(n, d, sigma, Q, t_norm2):
    """Maximised log evidence of target columns t_k from X's spectrum, and alpha, beta.

    ``Q[:, k] = U^T t_k``. With ``lam = alpha / beta`` the posterior mean is
    ``m = V diag(s / (sigma + lam)) q``, so ``|m|^2 = sum sigma q^2 / (sigma + lam)^2`` and
    ``|t - X m|^2 = sum q^2 lam^2 / (sigma + lam)^2 + (|t|^2 - |q|^2)``: every step is
    O(rank) per column, with no n x d product (the trick of the reference implementation's
    fast path), and the columns iterate together as one (rank, n_columns) array.
    """
    sigma = sigma[:, None]
    q2 = Q**2
    outside = np.maximum(t_norm2 - q2.sum(axis=0), 0.0)  # the part of t no direction reaches
    alpha = np.ones(Q.shape[1])
    beta = np.ones(Q.shape[1])
    # When n <= rank the features can interpolate t: the evidence then grows towards a
    # finite limit as lam -> 0 (noise-free fit) and the fixed point runs off to beta = inf.
    # Keep lam within [1e-10, 1e10] x the largest eigenvalue and stop when it stays at a
    # bound; the evidence is then evaluated exactly at that (alpha, beta), near its supremum.
    lam_min, lam_max = sigma.max() * 1e-10, sigma.max() * 1e10

    def moments(lam):
        denominator = sigma + lam
        m2 = np.sum(sigma * q2 / denominator**2, axis=0)
        residual = np.sum(q2 * (lam / denominator) ** 2, axis=0) + outside
        return denominator, m2, residual

    for _ in range(_LOGME_MAX_ITER):
        lam = np.clip(alpha / beta, lam_min, lam_max)
        denominator, m2, residual = moments(lam)
        gamma = np.sum(sigma / denominator, axis=0)
        alpha = gamma / np.maximum(m2, 1e-300)
        beta = np.maximum(n - gamma, 0.0) / np.maximum(residual, 1e-300)
        with np.errstate(divide="ignore"):
            new = alpha / beta
        # At a bound only when the previous step already sat there: early steps overshoot.
        settled = (
            (np.abs(new - lam) <= _LOGME_TOL * lam)
            | ((lam <= lam_min) & (new <= lam_min))
            | ((lam >= lam_max) & (new >= lam_max))
        )
        if np.all(settled):
            break
    with np.errstate(divide="ignore"):
        unclipped = alpha / beta
    lam = np.clip(unclipped, lam_min, lam_max)
    # At the upper bound alpha -> inf (no signal: m -> 0) while beta is well determined; at
    # the lower bound beta -> inf while alpha is. Keep the determined one.
    upper = unclipped > lam_max
    alpha = np.where(upper, lam * beta, alpha)
    beta = np.where(upper, beta, alpha / lam)
    _, m2, residual = moments(lam)
    # log|A| with A = alpha I + beta X^T X: the d - rank zero eigenvalues contribute log(alpha).
    log_det = np.sum(np.log(alpha + beta * sigma), axis=0) + (d - sigma.size) * np.log(alpha)
    evidence = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * residual
        - alpha / 2 * m2
        - log_det / 2
    )
    return evidence, alpha, beta


def leep_score(source_probabilities, y) -> float:
    """LEEP: log expected empirical prediction from the source model's class probabilities.

    Builds the empirical conditional ``P(y | z)`` of target label ``y`` given source class
    ``z`` from the soft joint ``P(y, z) = 1/n sum_i theta_i(z) [y_i = y]``, then averages
    ``log sum_z P(y_i | z) theta_i(z)`` over samples. At most 0; higher is better. It scores
    a source *model* (its output layer), not an intermediate layer.

    Parameters
    ----------
    source_probabilities : array-like of shape (n_samples, n_source_classes)
        The source model's predicted probabilities (rows sum to 1), e.g. the softmax of an
        ImageNet classifier's logits on the target images.
    y : array-like of shape (n_samples,)
        Target class labels.

    Returns
    -------
    score : float

    References
    ----------
    Nguyen, Hassner, Seeger, Archambeau. "LEEP: A New Measure to Evaluate Transferability of
    Learned Representations", ICML 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import leep_score
    >>> theta = np.array([[0.9, 0.1], [0.2, 0.8]])
    >>> round(leep_score(theta, ["cat", "dog"]), 4)
    -0.2911
    """
    theta, codes = _check_features_labels(source_probabilities, y, "leep_score")
    sums = theta.sum(axis=1)
    if np.any(theta < 0) or not np.allclose(sums, 1.0, atol=1e-4):
        raise ValueError(
            "source_probabilities must be probabilities: non-negative rows that sum to 1; got "
            f"row sums in [{sums.min():.4g}, {sums.max():.4g}] and minimum {theta.min():.4g}. "
            "Apply a softmax to logits first (scipy.special.softmax(logits, axis=1))."
        )
    n = theta.shape[0]
    onehot = np.eye(codes.max() + 1)[codes]
    joint = onehot.T @ theta / n  # P(y, z), shape (n_target, n_source)
    marginal = joint.sum(axis=0, keepdims=True)  # P(z)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = np.sum(theta * conditional[codes], axis=1)  # sum_z P(y_i | z) theta_i(z)
    return float(np.mean(np.log(expected)))


def h_score(X, y, *, shrinkage=None) -> float:
    """H-score: ``tr(cov(X)^+ cov(E[X | y]))``, the between-class share of feature variance.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    shrinkage : None, "ledoit-wolf" or float in [0, 1], default=None
        None: the plain score of Bao et al. with a pseudo-inverse. With few samples per
        dimension the covariance is near singular and the plain score is noisy; shrinking
        it towards a scaled identity (Ibrahim et al., 2022) steadies it. "ledoit-wolf" picks
        the amount from the data.

    Returns
    -------
    score : float
        Higher is better. The plain score is at most ``min(n_features, n_classes - 1)``
        and reaches that bound whenever n_samples <= n_features (the classes are then
        separable in-sample): use shrinkage there.

    References
    ----------
    Bao, Li, Huang, Zheng. "An Information-Theoretic Approach to Transferability in Task
    Transfer Learning", ICIP 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import h_score
    >>> X = np.array([[0.0], [2.0], [4.0], [6.0]])
    >>> round(h_score(X, [0, 0, 1, 1]), 4)
    0.8
    """
    X, codes = _check_features_labels(X, y, "h_score")
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
    means = np.zeros((codes.max() + 1, d))
    np.add.at(means, codes, X)
    means /= np.bincount(codes)[:, None]
    # Work in the eigenbasis of cov(X) = V diag(sigma / n) V^T: the between-class
    # covariance lives in the row space of X, so only those directions count, and no d x d
    # matrix is inverted (d is 1280 for MobileNetV2's last layer). The class means there
    # are m_k^T V = (1 / n_k) e_k^T U S.
    counts = np.bincount(codes)
    sigma, coordinates = _spectrum(X, np.eye(counts.size)[codes])
    projected = coordinates.T * np.sqrt(sigma) / counts[:, None]
    eigenvalues = sigma / n
    if shrinkage is not None:
        amount = _ledoit_wolf_shrinkage(X, sigma) if shrinkage == "ledoit-wolf" else shrinkage
        mu = np.sum(eigenvalues) / d
        eigenvalues = (1 - amount) * eigenvalues + amount * mu
    # tr(cov^-1 cov_between), cov_between = sum_k (n_k / n) m_k m_k^T.
    weights = counts / n
    return float(np.sum(weights[:, None] * projected**2 / eigenvalues))


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
    >>> from sktransfer.analysis import linear_probe_score
    >>> y = np.repeat([0, 1], 15)
    >>> X = y[:, None] + 0.1 * np.random.default_rng(0).normal(size=(30, 2))
    >>> linear_probe_score(X, y)
    1.0
    """
    X, codes = _check_features_labels(X, y, "linear_probe_score")
    smallest = np.bincount(codes).min()
    if smallest < cv:
        raise ValueError(
            f"linear_probe_score needs at least cv={cv} samples per class; the rarest class "
            f"has {smallest}. Lower cv or add samples."
        )
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    folds = StratifiedKFold(cv, shuffle=True, random_state=random_state)
    return float(np.mean(cross_val_score(probe, X, codes, cv=folds)))


def _check_features_labels(X, y, who: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{who} needs 2-D features (n_samples, n_features); got shape {X.shape}.")
    if not np.isfinite(X).all():
        raise ValueError(f"{who}: the features contain NaN or infinity.")
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"{who} needs one label per sample: y of shape ({X.shape[0]},); got {y.shape}."
        )
    check_classification_targets(y)
    codes = LabelEncoder().fit_transform(y)
    if codes.max() < 1:
        raise ValueError(f"{who} needs at least 2 classes in y; got only 1 class: {np.unique(y)}.")
    return X, codes


def _h_score_shrunk(X, y) -> float:
    return h_score(X, y, shrinkage="ledoit-wolf")


# Scores that rate one layer's features against labels (LEEP rates a source model's output
# instead): the choices of DeepFeatureExtractor(layers="auto", layer_score=...) and rank_layers.
LAYER_SCORES = {
    "logme": logme_score,
    "h_score": h_score,
    "h_score_shrunk": _h_score_shrunk,
    "linear_probe": linear_probe_score,
}
