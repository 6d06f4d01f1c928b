"""Scores built on an empirical label-transition table ``P(y | z)``: LEEP, N-LEEP and NCE.

Each rates how well the target label ``y`` can be read off a "source label" ``z``: the
source model's soft prediction (LEEP, Nguyen et al., 2020), its hard prediction (NCE, Tran
et al., 2019), or the posterior of a Gaussian mixture fitted to a layer's features (N-LEEP,
Li et al., 2021). LEEP and NCE rate a source *model* (its output layer); N-LEEP rates any
layer's features.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from ._checks import check_features_labels, check_labels, check_probabilities

__all__ = ["leep_score", "nce_score", "nleep_score"]


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
        The mean log of the expected empirical prediction, in nats.

    References
    ----------
    Nguyen, Hassner, Seeger, Archambeau. "LEEP: A New Measure to Evaluate Transferability of
    Learned Representations", ICML 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.transferability import leep_score
    >>> theta = np.array([[0.9, 0.1], [0.2, 0.8]])
    >>> round(leep_score(theta, ["cat", "dog"]), 4)
    -0.2911
    """
    theta, codes = check_probabilities(source_probabilities, y, "leep_score")
    return _leep(theta, codes)


def _leep(theta: np.ndarray, codes: np.ndarray) -> float:
    n = theta.shape[0]
    onehot = np.eye(codes.max() + 1)[codes]
    joint = onehot.T @ theta / n  # P(y, z), shape (n_target, n_source)
    marginal = joint.sum(axis=0, keepdims=True)  # P(z)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = np.sum(theta * conditional[codes], axis=1)  # sum_z P(y_i | z) theta_i(z)
    return float(np.mean(np.log(expected)))


def nce_score(source, y) -> float:
    """NCE: the negative conditional entropy ``-H(Y | Z)`` of target given source labels.

    ``Z`` is the source model's hard prediction. ``-H(Y | Z) = sum_{y,z} P(y, z) log P(y | z)``
    with the empirical joint of the ``n`` pairs (``0 log 0 = 0``). At most 0, reached when
    the source label determines the target label; higher is better.

    Parameters
    ----------
    source : array-like of shape (n_samples,) or (n_samples, n_source_classes)
        The source model's predicted labels, or its class probabilities or logits (their
        row-wise argmax is taken).
    y : array-like of shape (n_samples,)
        Target class labels.

    Returns
    -------
    score : float
        ``-H(Y | Z)`` in nats.

    References
    ----------
    Tran, Nguyen, Hassner. "Transferability and Hardness of Supervised Classification
    Tasks", ICCV 2019.

    Examples
    --------
    >>> from sktransfer.transferability import nce_score
    >>> round(nce_score(["a", "a", "b", "b"], [0, 1, 1, 1]), 4)  # -P(z=a) H(1/2, 1/2)
    -0.3466
    """
    source = np.asarray(source)
    if source.ndim == 2:
        source = np.argmax(source, axis=1)
    if source.ndim != 1:
        raise ValueError(
            "nce_score needs the source labels (n_samples,) or the source model's "
            f"probabilities (n_samples, n_source_classes); got shape {source.shape}."
        )
    codes = check_labels(y, source.shape[0], "nce_score")
    _, z = np.unique(source, return_inverse=True)
    joint = np.zeros((codes.max() + 1, z.max() + 1))
    np.add.at(joint, (codes, z), 1.0 / codes.size)
    conditional = joint / joint.sum(axis=0, keepdims=True)  # every z column occurs
    terms = np.where(joint > 0, joint * np.log(np.where(joint > 0, conditional, 1.0)), 0.0)
    return float(np.sum(terms))


def nleep_score(X, y, *, components_per_class=5, explained_variance=0.8, random_state=0) -> float:
    """N-LEEP: LEEP with a Gaussian mixture on the features as the "source model".

    The features are reduced by PCA to the components explaining ``explained_variance`` of
    their variance, a full-covariance Gaussian mixture with ``components_per_class x
    n_classes`` components (at most ``n_samples``) is fitted to them, and its posteriors
    take the place of the source model's probabilities in :func:`leep_score`. At most 0;
    higher is better.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    components_per_class : int, default=5
        Mixture components per target class (5 in the paper).
    explained_variance : float in (0, 1], default=0.8
        Share of the variance the PCA keeps (0.8 in the paper); 1 keeps every component.
    random_state : int, default=0
        Seed of the mixture's k-means initialisation.

    Returns
    -------
    score : float

    References
    ----------
    Li, Jia, Sun, Liu, Zhang, Belongie, Cui. "Ranking Neural Checkpoints", CVPR 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.transferability import nleep_score
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> X = 10 * y[:, None] + rng.normal(size=(40, 2))
    >>> round(nleep_score(X, y, components_per_class=1), 6)
    0.0
    """
    X, codes = check_features_labels(X, y, "nleep_score")
    if not (isinstance(components_per_class, (int, np.integer)) and components_per_class >= 1):
        raise ValueError(
            f"components_per_class must be a positive integer; got {components_per_class!r}."
        )
    if not (np.isscalar(explained_variance) and 0 < explained_variance <= 1):
        raise ValueError(
            f"explained_variance must be a number in (0, 1]; got {explained_variance!r}."
        )
    if explained_variance < 1:
        X = PCA(n_components=explained_variance, svd_solver="full").fit_transform(X)
    n_components = min(components_per_class * (codes.max() + 1), X.shape[0])
    mixture = GaussianMixture(n_components=n_components, random_state=random_state)
    posteriors = mixture.fit(X).predict_proba(X)
    return _leep(posteriors, codes)
