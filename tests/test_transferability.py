"""Transferability scores against their formulas, hand-computed cases and reference code.

Golden values marked "TLlib" were computed with thuml/Transfer-Learning-Library
(``tllib/ranking``, MIT licence) on the inputs of :func:`reference_inputs`; none of its code
is used here.
"""

import ast
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import eigh
from scipy.optimize import minimize
from scipy.special import softmax
from sklearn.covariance import ledoit_wolf
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.mixture import GaussianMixture

import sktransfer.transferability as transferability
from sktransfer.transferability import (
    LAYER_SCORES,
    gbc_score,
    h_score,
    leep_score,
    linear_probe_score,
    logme_score,
    nce_score,
    nleep_score,
    sfda_score,
    transrate_score,
)


def direct_log_evidence(X, t, alpha, beta):
    """log p(t | X, alpha, beta) of Bayesian linear regression, written out densely."""
    n, d = X.shape
    A = alpha * np.eye(d) + beta * X.T @ X
    m = beta * np.linalg.solve(A, X.T @ t)
    return (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * np.sum((X @ m - t) ** 2)
        - alpha / 2 * m @ m
        - np.linalg.slogdet(A)[1] / 2
    )


def maximised_evidence(X, t):
    result = minimize(
        lambda p: -direct_log_evidence(X, t, np.exp(p[0]), np.exp(p[1])),
        x0=[0.0, 0.0],
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 10_000},
    )
    return -result.fun


@pytest.mark.parametrize("n, d", [(60, 10), (25, 40)])  # more samples than features, and fewer
def test_logme_equals_direct_evaluation_of_its_evidence(n, d):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d))
    X[:, 0] += 2 * y
    expected = np.mean([maximised_evidence(X, (y == k).astype(float)) for k in range(3)]) / n
    assert logme_score(X, y) == pytest.approx(expected, abs=1e-6)


def test_logme_is_finite_when_features_can_interpolate_the_labels():
    # n < d: the fixed point heads for beta = inf; the score stays finite and still ranks.
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        noise = logme_score(rng.normal(size=(8, 200)), y)
        signal = logme_score(np.c_[10 * y, rng.normal(size=(8, 199))], y)
    assert np.isfinite(noise) and np.isfinite(signal)
    assert signal > noise


def test_logme_prefers_informative_features_and_ignores_label_names():
    rng = np.random.default_rng(0)
    y = np.repeat([3, 7, 9], 20)
    informative = (y[:, None] == [3, 7, 9]) + 0.3 * rng.normal(size=(60, 3))
    noise = rng.normal(size=(60, 3))
    assert logme_score(informative, y) > logme_score(noise, y)
    names = np.array(["c", "a", "b"])[np.searchsorted([3, 7, 9], y)]
    assert logme_score(informative, names) == pytest.approx(logme_score(informative, y))


def test_leep_hand_computed():
    # P(y, z) = [[.45, .05], [.10, .40]], P(z) = [.55, .45]; both samples get
    # sum_z P(y_i | z) theta_i(z) = 740 / 990.
    theta = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert leep_score(theta, ["cat", "dog"]) == pytest.approx(np.log(740 / 990), abs=1e-12)


def test_leep_three_samples_hand_computed():
    theta = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    y = [0, 0, 1]
    # P(y, z) = [[1.5, .5], [0, 1]] / 3; P(y | z0) = [1, 0], P(y | z1) = [1/3, 2/3].
    expected = np.mean(np.log([1.0, 0.5 * 1 + 0.5 / 3, 2 / 3]))
    assert leep_score(theta, y) == pytest.approx(expected, abs=1e-12)


def test_leep_is_zero_for_a_source_that_already_knows_the_labels():
    y = np.array([0, 1, 1, 2, 0])
    assert leep_score(np.eye(3)[y], y) == pytest.approx(0.0, abs=1e-12)


def test_leep_rejects_logits():
    with pytest.raises(ValueError, match="softmax"):
        leep_score(np.array([[2.0, -1.0], [0.3, 0.1]]), [0, 1])


def test_h_score_hand_computed_one_feature():
    # Centred x = [-3, -1, 1, 3]: variance 5; class means -2, 2: between-class variance 4.
    assert h_score([[0.0], [2.0], [4.0], [6.0]], [0, 0, 1, 1]) == pytest.approx(0.8)


def test_h_score_hand_computed_two_features():
    X = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 1.0], [6.0, -1.0]])
    # cov = [[5, -.5], [-.5, .5]], between = [[4, 0], [0, 0]]: tr(cov^-1 B) = 4 * .5 / 2.25.
    assert h_score(X, ["a", "a", "b", "b"]) == pytest.approx(8 / 9)


def test_h_score_shrinkage():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 10)
    X = y[:, None] + rng.normal(size=(20, 4))
    assert h_score(X, y, shrinkage=0.0) == pytest.approx(h_score(X, y))
    # Shrunk by a: tr(((1 - a) cov + a mu I)^-1 (1 - a) B), mu the mean variance; a = 1
    # shrinks the between-class part away.
    centred = X - X.mean(axis=0)
    means = np.stack([centred[y == k].mean(axis=0) for k in (0, 1)])[y]
    between = means.T @ means / 20
    cov = centred.T @ centred / 20
    mu = np.trace(cov) / 4
    shrunk = np.trace(np.linalg.solve(0.5 * cov + 0.5 * mu * np.eye(4), 0.5 * between))
    assert h_score(X, y, shrinkage=0.5) == pytest.approx(shrunk, abs=1e-12)
    assert h_score(X, y, shrinkage=1.0) == 0.0
    assert np.isfinite(h_score(X, y, shrinkage="ledoit-wolf"))
    with pytest.raises(ValueError, match="shrinkage"):
        h_score(X, y, shrinkage=2)


def test_linear_probe_score():
    rng = np.random.default_rng(0)
    y = np.repeat(["x", "y", "z"], 12)
    separable = (y[:, None] == ["x", "y", "z"]) * 3.0 + 0.1 * rng.normal(size=(36, 3))
    assert linear_probe_score(separable, y) == 1.0
    assert linear_probe_score(rng.normal(size=(36, 3)), y) < 0.8
    with pytest.raises(ValueError, match="per class"):
        linear_probe_score(separable[[0, 1, 12, 13, 24, 25]], y[[0, 1, 12, 13, 24, 25]])


@pytest.mark.parametrize("score", [*LAYER_SCORES.values()], ids=list(LAYER_SCORES))
def test_label_errors(score):
    X = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.raises(ValueError, match="at least 2 classes"):
        score(X, np.zeros(6))
    with pytest.raises(ValueError, match="one label per sample"):
        score(X, [0, 1])
    with pytest.raises(ValueError, match="continuous|Unknown label type"):
        score(X, np.linspace(0, 1, 6))


@pytest.mark.parametrize("n, d", [(40, 6), (15, 30)])
def test_h_score_matches_the_dense_formula(n, d):
    rng = np.random.default_rng(d)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d)) + y[:, None]
    centred = X - X.mean(axis=0)
    between = np.stack([centred[y == k].mean(axis=0) for k in range(3)])[y]
    cov_between = between.T @ between / n
    plain = np.trace(np.linalg.pinv(centred.T @ centred / n) @ cov_between)
    assert h_score(X, y) == pytest.approx(plain, rel=1e-8)
    # Ibrahim et al. (2022): tr(cov_alpha^-1 (1 - alpha) cov_between), cov_alpha Ledoit-Wolf.
    shrunk_cov, alpha = ledoit_wolf(centred, assume_centered=True)
    shrunk = np.trace(np.linalg.inv(shrunk_cov) @ ((1 - alpha) * cov_between))
    assert h_score(X, y, shrinkage="ledoit-wolf") == pytest.approx(shrunk, abs=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_shrunk_h_score_never_exceeds_n_classes_minus_one(seed):
    # Fewer samples than features and separable classes: the plain score sits at the bound,
    # and the shrunk one used to pass it (9.64 with 10 classes).
    rng = np.random.default_rng(seed)
    n_classes = [2, 10][seed % 2]
    y = np.repeat(np.arange(n_classes), 6)
    X = 3 * rng.normal(size=(n_classes, 80))[y] + rng.normal(size=(y.size, 80))
    assert h_score(X, y) == pytest.approx(n_classes - 1, abs=1e-6)
    for shrinkage in ("ledoit-wolf", 0.01, 0.3, 0.9):
        assert 0 < h_score(X, y, shrinkage=shrinkage) <= n_classes - 1


def reference_inputs():
    rng = np.random.default_rng(18)
    y = np.repeat(np.arange(3), [7, 6, 5])
    X = rng.normal(size=(18, 5)) + y[:, None] * np.array([1.0, 0.5, 0.0, 0.0, -1.0])
    wide = rng.normal(size=(12, 20))
    y_wide = np.repeat([0, 1, 2], 4)
    wide[:, 0] += y_wide
    source = rng.integers(0, 4, 18)
    return X, y, wide, y_wide, source


def test_h_scores_and_transrate_and_nce_match_tllib():
    X, y, wide, y_wide, source = reference_inputs()
    assert source.tolist()[:6] == [1, 2, 0, 2, 3, 1]  # the same draw as the goldens
    assert h_score(X, y) == pytest.approx(1.1046253495951492, abs=1e-10)  # TLlib
    # TLlib's regularized_h_score takes cov(E[X | y]) with 1 / (n - 1) but the Ledoit-Wolf
    # covariance with 1 / n; the formula uses 1 / n for both.
    for features, labels, golden in (
        (X, y, 0.9440537889257844),
        (wide, y_wide, 0.39715733122921376),
    ):
        n = labels.size
        assert h_score(features, labels, shrinkage="ledoit-wolf") == pytest.approx(
            golden * (n - 1) / n, abs=1e-10
        )
    assert transrate_score(X, y) == pytest.approx(1.9729291487516534, abs=1e-10)  # TLlib
    assert transrate_score(wide, y_wide) == pytest.approx(31.160281202276444, abs=1e-9)
    assert nce_score(source, y) == pytest.approx(-0.8046898478190299, abs=1e-10)  # TLlib


def test_nce_hand_computed():
    source = ["a", "a", "b", "b", "b"]
    y = [0, 1, 1, 1, 0]
    # P(y, z): z=a -> (1/5, 1/5); z=b -> (1/5, 2/5).
    expected = 2 / 5 * np.log(1 / 2) + 1 / 5 * np.log(1 / 3) + 2 / 5 * np.log(2 / 3)
    assert nce_score(source, y) == pytest.approx(expected, abs=1e-12)
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.0, 1.0]])
    assert nce_score(probabilities, y) == pytest.approx(expected, abs=1e-12)  # argmax
    assert nce_score([5, 5, 7, 7], ["x", "x", "y", "y"]) == 0.0
    with pytest.raises(ValueError, match="source labels"):
        nce_score(np.zeros((5, 2, 2)), y)


def test_nleep_hand_computed_on_clusters_a_mixture_recovers():
    # Two far-apart clusters, one component per class: the posteriors are one-hot, so
    # P(y | A) = (4/6, 2/6), P(y | B) = (0, 1) and N-LEEP = mean log P(y_i | z_i).
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(6, 2)), 100 + rng.normal(size=(6, 2))]
    y = [0, 0, 0, 0, 1, 1] + [1] * 6
    expected = (4 * np.log(4 / 6) + 2 * np.log(2 / 6)) / 12
    score = nleep_score(X, y, components_per_class=1, explained_variance=1.0)
    assert score == pytest.approx(expected, abs=1e-9)


def test_nleep_is_leep_of_a_mixture_on_the_pca_features():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 15)
    X = rng.normal(size=(45, 8)) + 2 * y[:, None]
    reduced = PCA(n_components=0.8, svd_solver="full").fit_transform(X)
    posteriors = GaussianMixture(15, random_state=3).fit(reduced).predict_proba(reduced)
    assert nleep_score(X, y, random_state=3) == pytest.approx(leep_score(posteriors, y), abs=1e-12)
    with pytest.raises(ValueError, match="components_per_class"):
        nleep_score(X, y, components_per_class=0)
    with pytest.raises(ValueError, match="explained_variance"):
        nleep_score(X, y, explained_variance=1.5)


def test_transrate_hand_computed_and_dense():
    # Z^T Z = 2 I: 1/2 log det(I + 2 I / 4) = log(3 / 2); each class: 1/2 log(1 + 2 / 2).
    X = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    expected = np.log(1.5) - 0.5 * np.log(2)
    assert transrate_score(X + 7.0, [0, 0, 1, 1], eps=1.0) == pytest.approx(expected, abs=1e-12)
    # The smaller Gram matrix gives the d x d log-determinant also when n < d.
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 5)
    Z = rng.normal(size=(10, 30))
    Z -= Z.mean(axis=0)

    def rate(part):
        return 0.5 * np.linalg.slogdet(np.eye(30) + part.T @ part / (len(part) * 1e-2))[1]

    dense = rate(Z) - (rate(Z[y == 0]) + rate(Z[y == 1])) / 2
    assert transrate_score(Z, y, eps=1e-2) == pytest.approx(dense, abs=1e-10)
    with pytest.raises(ValueError, match="eps"):
        transrate_score(Z, y, eps=0)


def test_gbc_hand_computed_diagonal_and_spherical():
    # Total covariance diag(5, 2.5), so PCA keeps the axes. Class 0: mean (-2, 0),
    # variances (1, 1); class 1: mean (2, 0), variances (1, 4).
    X = np.array(
        [[-3, 1], [-3, -1], [-1, 1], [-1, -1], [1, 2], [1, -2], [3, 2], [3, -2]], dtype=float
    )
    y = np.repeat([0, 1], 4)
    diagonal = 16 / 8 + 0.5 * (np.log(2.5) - 0.5 * np.log(4))
    assert gbc_score(X, y, gaussian="diagonal") == pytest.approx(-2 * np.exp(-diagonal))
    # Spherical: variances 1 and 2.5; det of a 2-d spherical covariance is sigma^2.
    spherical = 16 / (8 * 1.75) + (2 / 2) * (np.log(1.75) - 0.5 * np.log(2.5))
    assert gbc_score(X, y) == pytest.approx(-2 * np.exp(-spherical))
    with pytest.raises(ValueError, match="gaussian"):
        gbc_score(X, y, gaussian="full")


def test_gbc_ranks_separated_classes_higher_and_stays_at_most_zero():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2], 20)
    noise = rng.normal(size=(60, 100))
    separated = noise + 4 * np.eye(3, 100)[y]
    assert gbc_score(noise, y) < gbc_score(separated, y) <= 0


def direct_sfda(X, y):
    """SFDA re-derived with scikit-learn's shrunk LDA and the authors' generalised
    eigenproblem for the first discriminant's directions."""
    n, d = X.shape
    classes = np.unique(y)
    means = np.stack([X[y == k].mean(axis=0) for k in classes])
    within = sum(np.mean(y == k) * np.cov(X[y == k].T, bias=True) for k in classes)
    shrinkage = max(np.exp(-5 * np.linalg.eigvalsh(within)[-1]), 1e-10)
    shrunk = (1 - shrinkage) * within + shrinkage * np.trace(within) / d * np.eye(d)
    total = np.cov(X.T, bias=True)
    total = (1 - shrinkage) * total + shrinkage * np.trace(total) / d * np.eye(d)
    _, vectors = eigh(total - shrunk, shrunk)  # every direction of the Fisher space
    coef = means @ vectors @ vectors.T
    scores = X @ coef.T - 0.5 * np.sum(means * coef, axis=1) + np.log(np.bincount(y) / n)
    first = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(X, y)
    np.testing.assert_allclose(softmax(scores, axis=1), first.predict_proba(X), atol=1e-10)
    confidence = softmax(first.predict_proba(X), axis=1)[np.arange(n), y][:, None]
    others = (means.sum(axis=0) - means) / (len(classes) - 1)
    mixed = confidence * X + (1 - confidence) * others[y]
    second = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(mixed, y)
    return np.mean(second.predict_proba(mixed)[np.arange(n), y])


@pytest.mark.parametrize("n, d, scale", [(30, 4, 1.0), (24, 10, 0.1)])
def test_sfda_matches_its_formula(n, d, scale):
    rng = np.random.default_rng(d)
    y = np.arange(n) % 3
    X = scale * (rng.normal(size=(n, d)) + y[:, None])
    assert sfda_score(X, y) == pytest.approx(direct_sfda(X, y), abs=1e-10)


def test_sfda_hand_computed_two_points_per_class():
    # 1-d, classes {-2, 0} and {0, 2}: means -+1, S_w = 1 (shrinking 1 x 1 changes nothing),
    # class scores x m_k - m_k^2 / 2 + log(1/2): p(class 1 | x) = sigmoid(2 x).
    X = np.array([[-2.0], [0.0], [0.0], [2.0]])
    y = [0, 0, 1, 1]

    def sigmoid(t):
        return 1 / (1 + np.exp(-t))

    # Softened: the softmax of (p, 1 - p) gives sigmoid(2 p - 1) to the true class.
    a = sigmoid(2 * sigmoid(4.0) - 1)  # the outer points (|x| = 2)
    b = sigmoid(0.0)  # the points at 0 (p = 1/2)
    # ConfMix towards the other class's mean: x' = p x + (1 - p) m_other.
    mixed = np.array([a * -2 + (1 - a) * 1, (1 - b) * 1, (1 - b) * -1, a * 2 + (1 - a) * -1])
    m1 = (mixed[2] + mixed[3]) / 2  # = -m0 by symmetry
    variance = ((mixed[3] - mixed[2]) / 2) ** 2  # each class: two points
    # Second discriminant: p(class 1 | x') = sigmoid(2 x' m1 / variance).
    p1 = sigmoid(2 * mixed * m1 / variance)
    expected = np.mean([1 - p1[0], 1 - p1[1], p1[2], p1[3]])
    assert sfda_score(X, y) == pytest.approx(expected, abs=1e-12)


def test_new_scores_are_layer_scores_and_prefer_informative_features():
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], 15)
    informative = np.eye(3)[y] + 0.3 * rng.normal(size=(45, 3))
    noise = rng.normal(size=(45, 3))
    for name in ("transrate", "gbc", "sfda"):  # N-LEEP: its hand-computed test
        score = LAYER_SCORES[name]
        assert score(informative, y) > score(noise, y), name


def test_the_package_is_a_leaf():
    # numpy, scipy and scikit-learn only: no torch, no other sktransfer module.
    allowed = {"__future__", "numpy", "scipy", "sklearn"}
    for module in Path(transferability.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = set() if node.level else {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{module.name} imports {roots - allowed}"
