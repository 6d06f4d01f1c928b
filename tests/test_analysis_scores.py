"""Transferability scores against their formulas and hand-computed cases."""

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize

from sktransfer.analysis import h_score, leep_score, linear_probe_score, logme_score


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
    # Fully shrunk, the covariance is mu * I with mu its mean variance: the score is tr(B) / mu.
    centred = X - X.mean(axis=0)
    means = np.stack([centred[y == k].mean(axis=0) for k in (0, 1)])
    trace_between = np.mean(np.sum(means[y] ** 2, axis=1))
    mu = np.mean(np.sum(centred**2, axis=1)) / X.shape[1]
    assert h_score(X, y, shrinkage=1.0) == pytest.approx(trace_between / mu)
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


@pytest.mark.parametrize("score", [logme_score, h_score, linear_probe_score])
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
    from sklearn.covariance import ledoit_wolf

    rng = np.random.default_rng(d)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d)) + y[:, None]
    centred = X - X.mean(axis=0)
    between = np.stack([centred[y == k].mean(axis=0) for k in range(3)])[y]
    cov_between = between.T @ between / n
    plain = np.trace(np.linalg.pinv(centred.T @ centred / n) @ cov_between)
    assert h_score(X, y) == pytest.approx(plain, rel=1e-8)
    shrunk_cov, _ = ledoit_wolf(centred, assume_centered=True)
    shrunk = np.trace(np.linalg.inv(shrunk_cov) @ cov_between)
    assert h_score(X, y, shrinkage="ledoit-wolf") == pytest.approx(shrunk, rel=1e-8)
