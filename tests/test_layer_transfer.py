"""Copy the first n blocks, re-initialise the rest (Yosinski et al. 2014): which weights are
copied, which are new, which train, and the recipe as a FineTuneClassifier backbone."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from torch import nn

from sktransfer import FineTuneClassifier, TransferredBlocks, transfer_blocks, transferable_blocks

pytestmark = pytest.mark.usefixtures("one_thread")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(int)


def mlp():
    """Four layers: three transferable blocks below the classifier."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(),
        nn.Linear(8, 3),
    )  # fmt: skip


def cnn():
    """Blocks written as Sequential groups, one with BatchNorm (a block of its own)."""
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    )


class WithStem(nn.Module):
    """A stem outside the blocks one would list (as ResNet's conv1 outside layer1...)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(6, 8)
        self.layers = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.fc(x)


def same(a, b):
    return torch.equal(a.detach().cpu(), b.detach().cpu())


def clf(source, n_blocks, **params):
    recipe = {k: params.pop(k) for k in ("freeze", "blocks") if k in params}
    params = {
        "train_layers": "all",
        "max_epochs": 3,
        "lr": 0.05,
        "backbone_lr_scale": 1.0,
        "random_state": 0,
        **params,
    }
    return FineTuneClassifier(TransferredBlocks(source, n_blocks=n_blocks, **recipe), **params)


# ------------------------------------------------------------------ which blocks


def test_blocks_unroll_containers_and_leave_out_the_classifier():
    assert transferable_blocks(mlp()) == ["0", "2", "4"]
    assert transferable_blocks(cnn()) == ["0", "1"]  # Sequential(conv, bn, relu) is one block
    assert transferable_blocks(WithStem()) == ["stem", "layers.0", "layers.1"]


def test_blocks_of_a_fitted_classifier_are_its_body_then_its_head():
    fitted = FineTuneClassifier(mlp(), train_layers="all", head_hidden=(4,), max_epochs=1)
    fitted.fit(X, Y)
    assert transferable_blocks(fitted) == ["body.0", "body.2", "body.4", "head.0"]


@pytest.mark.parametrize(
    ("blocks", "match"),
    [
        (["layers.0", "nope"], "'nope' is not a module with parameters"),
        (["layers.1", "layers.0"], "bottom to top"),
        ("stem", "non-empty list of module names"),
    ],
)
def test_bad_block_lists_are_refused(blocks, match):
    with pytest.raises(ValueError, match=match):
        transferable_blocks(WithStem(), blocks=blocks)


# ------------------------------------------------------------------ transfer_blocks


def test_first_blocks_are_copied_and_the_rest_reinitialised():
    source = mlp()
    before = {k: v.clone() for k, v in source.state_dict().items()}
    new = transfer_blocks(source, 2, random_state=0)
    for i in (0, 2):
        assert same(new[i].weight, source[i].weight) and not new[i].weight.requires_grad
    for i in (4, 6):  # the third block and the classifier
        assert not same(new[i].weight, source[i].weight) and new[i].weight.requires_grad
    assert all(same(v, source.state_dict()[k]) for k, v in before.items())  # source untouched
    assert all(p.requires_grad for p in transfer_blocks(source, 2, freeze=False).parameters())


def test_zero_blocks_reinitialise_everything_and_seeds_repeat():
    source = mlp()
    fresh = transfer_blocks(source, 0, random_state=3)
    assert not any(same(a, b) for a, b in zip(fresh.parameters(), source.parameters()))
    again = transfer_blocks(source, 0, random_state=3)
    other = transfer_blocks(source, 0, random_state=4)
    assert all(same(a, b) for a, b in zip(fresh.parameters(), again.parameters()))
    assert not same(fresh[0].weight, other[0].weight)


def test_batchnorm_statistics_are_kept_when_copied_and_reset_when_not():
    source = cnn()
    source[1][1].running_mean.fill_(3.0)
    assert torch.all(transfer_blocks(source, 2)[1][1].running_mean == 3.0)
    assert torch.all(transfer_blocks(source, 1)[1][1].running_mean == 0.0)


def test_a_stem_before_the_listed_blocks_is_copied_with_them():
    source = WithStem()
    new = transfer_blocks(source, 1, blocks=["layers.0", "layers.1"], random_state=0)
    assert same(new.stem.weight, source.stem.weight)
    assert same(new.layers[0].weight, source.layers[0].weight)
    assert not same(new.layers[1].weight, source.layers[1].weight)


@pytest.mark.parametrize("n_blocks", [-1, 4])
def test_n_out_of_range_says_the_valid_range(n_blocks):
    with pytest.raises(
        ValueError, match=r"has 3 transferable blocks \('0' \.\.\. '4'\)\. Use 0 to 3"
    ):
        transfer_blocks(mlp(), n_blocks)


def test_layers_without_reset_parameters_and_bad_sources_are_refused():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(6))

        def forward(self, x):
            return x * self.gain

    with pytest.raises(ValueError, match="'1' .*Scale.* has no reset_parameters"):
        transfer_blocks(nn.Sequential(nn.Linear(6, 6), Scale(), nn.Linear(6, 2)), 1)
    with pytest.raises(TypeError, match="torch.nn.Module or a fitted"):
        transfer_blocks("resnet18", 1)
    with pytest.raises(TypeError, match="n_blocks must be an int"):
        transfer_blocks(mlp(), 1.0)
    with pytest.raises(Exception, match="not fitted"):
        transfer_blocks(FineTuneClassifier(mlp()), 1)


# ---------------------------------------------------- as a FineTuneClassifier backbone


def test_frozen_copied_blocks_stay_bit_identical_and_the_rest_trains():
    source = mlp()
    start = transfer_blocks(source, 2, random_state=0)  # what fit starts from, same seed
    body = clf(source, 2).fit(X, Y).net_.module_.body
    for i in (0, 2):
        assert same(body[i].weight, source[i].weight) and same(body[i].bias, source[i].bias)
    assert same(start[4].weight, transfer_blocks(source, 2, random_state=0)[4].weight)
    assert not same(body[4].weight, start[4].weight)  # re-initialised, then trained
    assert not same(body[4].weight, source[4].weight)


def test_fine_tuned_copies_start_from_the_source_and_change():
    source = mlp()
    body = clf(source, 2, freeze=False).fit(X, Y).net_.module_.body
    assert not same(body[0].weight, source[0].weight)
    assert (body[0].weight - source[0].weight).abs().max() < 0.5  # started from it


def test_frozen_batchnorm_in_a_copied_block_keeps_its_statistics():
    images = RNG.integers(0, 256, size=(12, 10, 10, 3), dtype=np.uint8)
    source = cnn()
    source[1][1].running_mean.fill_(0.25)
    fitted = clf(source, 2, max_epochs=1).fit(images, np.arange(12) % 2)
    bn = fitted.net_.module_.body[1][1]
    assert torch.all(bn.running_mean == 0.25) and same(bn.weight, source[1][1].weight)
    assert fitted.predict(images[:2]).shape == (2,)


def test_transfer_from_a_fitted_classifier_and_repeatable_fits():
    source = FineTuneClassifier(mlp(), train_layers="all", max_epochs=2, random_state=0)
    source.fit(X, Y)
    first = clf(source, 3).fit(X, Y)
    second = clf(source, 3).fit(X, Y)
    assert np.array_equal(first.predict_proba(X), second.predict_proba(X))
    copied = first.net_.module_.body.body[4].weight  # FineTuneNetwork inside FineTuneNetwork
    assert same(copied, source.net_.module_.body[4].weight)


def test_clone_keeps_the_fitted_source_and_pickle_round_trips():
    source = FineTuneClassifier(mlp(), train_layers="all", max_epochs=1).fit(X, Y)
    estimator = clf(source, 1)
    cloned = clone(estimator)
    assert cloned.backbone is not estimator.backbone and cloned.backbone.source is source
    assert cloned.get_params()["backbone__n_blocks"] == 1
    cloned.set_params(backbone__n_blocks=2)
    assert estimator.backbone.n_blocks == 1
    fitted = cloned.fit(X, Y)
    restored = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(restored.predict_proba(X), fitted.predict_proba(X))


def test_grid_search_over_n_blocks_and_freezing():
    grid = {"backbone__n_blocks": [0, 1, 3], "backbone__freeze": [True, False]}
    search = GridSearchCV(clf(mlp(), 1, max_epochs=2), grid, cv=2).fit(X, Y)
    assert len(search.cv_results_["params"]) == 6
    assert search.best_estimator_.backbone.n_blocks in (0, 1, 3)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"train_layers": "head"}, "train_layers='all'"),
        ({"train_layers": 1}, "would leave some at their random weights"),
        ({"weights": None}, "Leave FineTuneClassifier's weights='DEFAULT'"),
    ],
)
def test_settings_that_would_leave_random_layers_untrained_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        clf(mlp(), 1, **params).fit(X, Y)


def test_all_blocks_copied_and_frozen_train_only_the_head():
    fitted = clf(mlp(), 3, train_layers="head").fit(X, Y)
    trainable = [n for n, p in fitted.net_.module_.named_parameters() if p.requires_grad]
    assert trainable == ["head.0.weight", "head.0.bias"]
