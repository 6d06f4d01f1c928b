"""CKA: the properties Kornblith et al. (2019) prove, checked numerically."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ortho_group

from sktransfer.analysis import cka_matrix, gram_cka, linear_cka, rbf_cka

CKAS = {"linear": linear_cka, "rbf": rbf_cka}


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 12))
    Y = X[:, :8] @ rng.normal(size=(8, 9)) + 0.5 * rng.normal(size=(60, 9))
    return X, Y


@pytest.mark.parametrize("kind", CKAS)
def test_identical_representations_score_one(kind, pair):
    X, _ = pair
    assert CKAS[kind](X, X) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kind", CKAS)
def test_invariant_to_orthogonal_transform_and_isotropic_scaling(kind, pair):
    X, Y = pair
    cka = CKAS[kind]
    reference = cka(X, Y)
    assert reference < 0.99  # a non-trivial pair, so invariance is not vacuous
    Q = ortho_group.rvs(X.shape[1], random_state=1)
    assert cka(X @ Q, Y) == pytest.approx(reference, abs=1e-10)
    assert cka(X, 7.3 * Y) == pytest.approx(reference, abs=1e-10)
    assert cka(0.01 * X @ Q, Y) == pytest.approx(reference, abs=1e-10)
    assert cka(X @ Q, X) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("kind", CKAS)
def test_changes_under_a_general_invertible_linear_map(kind, pair):
    X, Y = pair
    rng = np.random.default_rng(2)
    A = rng.normal(size=(12, 12)) @ np.diag(np.geomspace(1, 100, 12))
    assert abs(np.linalg.det(A)) > 1e-6
    cka = CKAS[kind]
    assert cka(X, X @ A) < 0.95
    assert abs(cka(X @ A, Y) - cka(X, Y)) > 1e-3


def test_linear_gram_and_feature_forms_agree(pair):
    X, Y = pair
    assert gram_cka(X @ X.T, Y @ Y.T) == pytest.approx(linear_cka(X, Y), abs=1e-12)


def test_rbf_equals_gram_form_of_its_kernel(pair):
    X, Y = pair

    def kernel(Z, sigma):
        sq = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
        return np.exp(-sq / (2 * sigma**2))

    assert rbf_cka(X, Y, sigma=3.0) == pytest.approx(
        gram_cka(kernel(X, 3.0), kernel(Y, 3.0)), abs=1e-12
    )


def test_rbf_tends_to_linear_for_a_wide_kernel(pair):
    # exp(-d/2s^2) ~ 1 - d/2s^2: the centred kernel is then a rescaled linear Gram matrix.
    X, Y = pair
    assert rbf_cka(X, Y, sigma=1e4) == pytest.approx(linear_cka(X, Y), abs=1e-5)


@pytest.mark.parametrize("kind", CKAS)
@pytest.mark.parametrize("seed", range(5))
def test_symmetric_and_in_unit_interval(kind, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(25, rng.integers(1, 30)))
    Y = rng.exponential(size=(25, rng.integers(1, 30)))
    cka = CKAS[kind]
    value = cka(X, Y)
    assert 0.0 <= value <= 1.0
    assert cka(Y, X) == pytest.approx(value, abs=1e-12)


def test_errors_say_what_was_wrong():
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(X, X[:5])
    with pytest.raises(ValueError, match="constant"):
        linear_cka(X, np.ones((10, 2)))
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(X[:, 0], X)
    with pytest.raises(ValueError, match="sigma"):
        rbf_cka(X, X, sigma=-1)
    with pytest.raises(ValueError, match="NaN"):
        linear_cka(np.full((10, 3), np.nan), X)


def test_cka_matrix_one_network_is_symmetric_with_unit_diagonal():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 6))
    layers = {
        "a": base,
        "b": np.tanh(base @ rng.normal(size=(6, 4))),
        "c": rng.normal(size=(30, 5)),
    }
    matrix = cka_matrix(layers)
    assert isinstance(matrix, pd.DataFrame)
    assert list(matrix.index) == list(matrix.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix.to_numpy(), matrix.to_numpy().T)
    assert matrix.loc["a", "b"] > matrix.loc["a", "c"]


def test_cka_matrix_two_networks_and_rbf():
    rng = np.random.default_rng(0)
    first = {"x": rng.normal(size=(20, 3)), "y": rng.normal(size=(20, 4))}
    second = {"p": first["x"] * 2, "q": rng.normal(size=(20, 2)), "r": first["y"]}
    matrix = cka_matrix(first, second, kernel="rbf")
    assert matrix.shape == (2, 3)
    assert matrix.loc["x", "p"] == pytest.approx(1.0)
    assert matrix.loc["y", "r"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kernel"):
        cka_matrix(first, kernel="poly")
    with pytest.raises(ValueError, match="mapping"):
        cka_matrix([first["x"]])


def kornblith_rbf_gram(X, threshold=1.0):
    """Kornblith et al.'s bandwidth rule, re-derived: sigma^2 = threshold^2 x the median of
    the full matrix of squared distances (computed from dot products, diagonal included)."""
    dots = X @ X.T
    norms = np.diag(dots)
    squared = norms[:, None] + norms[None, :] - 2 * dots
    return np.exp(-squared / (2 * threshold**2 * np.median(squared)))


def unbiased_hsic(K, L):
    """Song et al. (2012), eq. 5, written out: the unbiased HSIC estimator."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    ones = np.ones(n)
    return (
        np.trace(K @ L)
        + (ones @ K @ ones) * (ones @ L @ ones) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * ones @ K @ L @ ones
    ) / (n * (n - 3))


def unbiased_cka(K, L):
    return unbiased_hsic(K, L) / np.sqrt(unbiased_hsic(K, K) * unbiased_hsic(L, L))


def test_default_rbf_bandwidth_is_kornblith_rule(pair):
    X, Y = pair
    expected = gram_cka(kornblith_rbf_gram(X), kornblith_rbf_gram(Y))
    assert rbf_cka(X, Y) == pytest.approx(expected, abs=1e-10)
    # The median of the distinct distances (the former default) is a different bandwidth.
    distinct = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))[np.triu_indices(60, 1)]
    assert abs(rbf_cka(X, Y, sigma=np.median(distinct)) - expected) > 1e-4


@pytest.mark.parametrize("n", [6, 40])
def test_debiased_cka_is_the_unbiased_hsic_estimator(n):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 7)) + 3.0  # uncentred: the estimator does not need centring
    Y = np.tanh(X[:, :4]) + 0.3 * rng.normal(size=(n, 4))
    expected = unbiased_cka(X @ X.T, Y @ Y.T)
    assert linear_cka(X, Y, debiased=True) == pytest.approx(expected, abs=1e-10)
    assert gram_cka(X @ X.T, Y @ Y.T, debiased=True) == pytest.approx(expected, abs=1e-10)
    rbf = unbiased_cka(kornblith_rbf_gram(X), kornblith_rbf_gram(Y))
    assert rbf_cka(X, Y, debiased=True) == pytest.approx(rbf, abs=1e-10)
    matrix = cka_matrix({"x": X}, {"y": Y}, debiased=True)
    assert matrix.loc["x", "y"] == pytest.approx(expected, abs=1e-10)


def test_debiased_cka_tends_to_the_biased_value_as_n_grows():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(10, 6))
    gaps = {"linear": [], "rbf": []}
    for n in (25, 250, 2500):
        X = rng.normal(size=(n, 10))
        Y = X @ mixing + 2.0 * rng.normal(size=(n, 6))
        gaps["linear"].append(linear_cka(X, Y) - linear_cka(X, Y, debiased=True))
        if n <= 250:  # n x n kernels
            gaps["rbf"].append(rbf_cka(X, Y) - rbf_cka(X, Y, debiased=True))
    # The biased estimate is the larger one, and the gap shrinks roughly like 1 / n.
    assert gaps["linear"][0] > gaps["linear"][1] > gaps["linear"][2] > 0
    assert gaps["linear"][2] < 2e-3
    assert gaps["rbf"][0] > gaps["rbf"][1] > 0


def test_debiased_cka_of_unrelated_features_is_near_zero():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(2, 30, 50))
    assert linear_cka(X, Y) > 0.5  # few samples per dimension: the biased value is high
    assert abs(linear_cka(X, Y, debiased=True)) < 0.1
    with pytest.raises(ValueError, match="at least 4 samples"):
        linear_cka(X[:3], Y[:3], debiased=True)
