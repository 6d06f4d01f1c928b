"""DeepFeatureExtractor(layers="auto"): the layer is chosen at fit time by a score on y."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from torch import nn

from sktransfer import DeepFeatureExtractor, block_layers
from sktransfer.analysis import LAYER_SCORES


class TwoViews(nn.Module):
    """Feature vectors [signal, noise...]: layer 'noise' sees only noise, 'signal' the label."""

    def __init__(self):
        super().__init__()
        self.noise = nn.Linear(5, 3, bias=False)
        self.signal = nn.Linear(5, 2, bias=False)
        with torch.no_grad():
            self.noise.weight.copy_(torch.eye(5)[1:4])
            self.signal.weight.copy_(torch.eye(5)[[0, 4]])
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(torch.cat([self.noise(x), self.signal(x)], dim=1))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = np.repeat(["no", "yes"], 20)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    X[:, 0] += 3 * (y == "yes")
    return X, y


# TransRate does not re-centre the classes, so with two classes (whose centred means are
# always collinear) a shift of the means leaves it unchanged: see transrate_score.
@pytest.mark.parametrize("score", sorted(set(LAYER_SCORES) - {"transrate"}))
def test_auto_picks_the_informative_layer(data, score):
    X, y = data
    for candidates in (["noise", "signal"], ["signal", "noise"]):
        extractor = DeepFeatureExtractor(
            TwoViews(), layers="auto", layer_candidates=candidates, layer_score=score
        )
        extractor.fit(X, y)
        assert extractor.layers_ == ["signal"]
        assert set(extractor.layer_scores_) == {"noise", "signal"}
        assert extractor.layer_scores_["signal"] > extractor.layer_scores_["noise"]
        assert extractor.layer_slices_ == {"signal": slice(0, 2)}
        assert extractor.n_features_out_ == 2


def test_fit_transform_reuses_the_selection_pass(data):
    X, y = data
    extractor = DeepFeatureExtractor(
        TwoViews(), layers="auto", layer_candidates=["noise", "signal"]
    )
    once = extractor.fit_transform(X, y)
    assert once.dtype == np.float32
    np.testing.assert_array_equal(once, extractor.transform(X))
    np.testing.assert_allclose(once, X[:, [0, 4]])


def test_auto_needs_labels(data):
    X, y = data
    extractor = DeepFeatureExtractor(
        TwoViews(), layers="auto", layer_candidates=["noise", "signal"]
    )
    with pytest.raises(ValueError, match="requires y to be passed"):
        extractor.fit(X)
    assert not hasattr(extractor, "backbone_")  # rejected before anything was set
    with pytest.raises(ValueError, match="one label per image"):
        extractor.fit(X, y[:5])
    with pytest.raises(ValueError, match="twice"):
        extractor.set_params(layer_candidates=["noise", "noise"]).fit(X, y)
    with pytest.raises(ValueError, match="not present"):
        extractor.set_params(layer_candidates=["noise", "nope"]).fit(X, y)
    assert extractor.__sklearn_tags__().target_tags.required
    assert not DeepFeatureExtractor(TwoViews()).__sklearn_tags__().target_tags.required


def test_named_layers_unchanged_and_forget_old_scores(data):
    X, y = data
    extractor = DeepFeatureExtractor(
        TwoViews(), layers="auto", layer_candidates=["noise", "signal"]
    )
    extractor.fit(X, y)
    extractor.set_params(layers="noise").fit(X, y)
    assert extractor.layers_ == ["noise"]
    assert not hasattr(extractor, "layer_scores_")
    np.testing.assert_allclose(extractor.transform(X), X[:, 1:4])


def test_default_candidates_are_the_blocks():
    images = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    extractor = DeepFeatureExtractor("resnet18", weights=None, layers="auto", random_state=0)
    extractor.fit(images, [0, 1, 0, 1, 0, 1])
    assert list(extractor.layer_scores_) == block_layers("resnet18")
    assert extractor.layers_[0] in extractor.layer_scores_


def test_clone_pickle_and_grid_search(data):
    X, y = data
    extractor = DeepFeatureExtractor(
        TwoViews(), layers="auto", layer_candidates=["noise", "signal"]
    )
    restored = pickle.loads(pickle.dumps(extractor.fit(X, y)))
    assert restored.layers_ == ["signal"]
    np.testing.assert_array_equal(restored.transform(X), extractor.transform(X))
    assert clone(extractor).get_params()["layers"] == "auto"
    pipe = make_pipeline(extractor, LogisticRegression())
    search = GridSearchCV(
        pipe, {"deepfeatureextractor__layer_score": ["logme", "h_score"]}, cv=2, n_jobs=2
    )
    search.fit(X, y)
    assert search.best_estimator_[0].layers_ == ["signal"]
    assert search.best_score_ > 0.9


def test_pickling_leaves_the_fitted_extractor_usable(data):
    # object.__getstate__ hands back __dict__ itself; popping the network from it used to
    # break the original extractor after pickle.dumps.
    X, _ = data
    extractor = DeepFeatureExtractor(TwoViews(), layers="signal").fit(X)
    pickle.dumps(extractor)
    np.testing.assert_allclose(extractor.transform(X), X[:, [0, 4]])
