"""Tests of PrunedClassifier (sktransfer/pruning/lottery.py) on tiny networks and synthetic data."""

import copy
import pickle

import matplotlib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from tiny_networks import TinyMLP
from torch import nn

from sktransfer import FineTuneClassifier, pruning
from sktransfer.pruning.lottery import PrunedClassifier, plot_lottery

matplotlib.use("Agg")


# Tiny networks: one torch thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


class StartRecorder(Callback):
    """Snapshots the network (with its masks) at the start of every training run."""

    def initialize(self):
        if not hasattr(self, "starts"):
            self.starts = []
        return self

    def on_train_begin(self, net, **kwargs):
        state = net.module_.state_dict()
        self.starts.append({k: v.detach().clone() for k, v in state.items()})


def data(n=90, labels=("b", "a", "c")):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    score = X[:, 0] + 0.5 * X[:, 1]
    y = np.asarray(labels)[np.digitize(score, [-0.5, 0.5])]
    return X, y


def ticket(**params):
    estimator_params = params.pop("estimator_params", {})
    estimator_params = {"max_epochs": 3, "lr": 0.01, "optimizer": "adam", **estimator_params}
    base = TinyMLP(random_state=0, **estimator_params)
    defaults = {"prune_rate": 0.5, "output_rate": 0.25, "n_rounds": 3, "random_state": 0}
    return PrunedClassifier(base, **{**defaults, **params})


def recorder_of(fitted):
    return dict(fitted.estimator_.net_.callbacks_)["user_0_StartRecorder"]


def test_sparsity_per_round_is_exact_per_layer_and_output_layer():
    X, y = data()
    clf = ticket(n_rounds=4).fit(X, y)
    history = clf.history_
    assert history["round"].tolist() == [0, 1, 2, 3, 4]
    assert clf.layers_ == ["0", "2", "4"] and clf.output_layer_ == "4"
    for k in range(5):
        expected = {
            "0": pruning.expected_remaining(96, 0.5, k),
            "2": pruning.expected_remaining(128, 0.5, k),
            "4": pruning.expected_remaining(24, 0.25, k),
        }
        assert history.loc[k, "n_remaining"] == sum(expected.values())
        for name, count in expected.items():
            total = {"0": 96, "2": 128, "4": 24}[name]
            assert history.loc[k, f"remaining_{name}"] == count / total
    assert history.loc[4, "weights_remaining"] == history.loc[4, "n_remaining"] / 248
    final = {n: int(m.sum()) for n, m in clf.masks_.items()}
    assert final == {"0": 6, "2": 8, "4": 8}


def test_global_scope_counts_all_hidden_layers_together():
    X, y = data()
    clf = ticket(scope="global", n_rounds=2).fit(X, y)
    hidden = clf.history_["remaining_0"] * 96 + clf.history_["remaining_2"] * 128
    assert hidden.round().astype(int).tolist() == [224, 112, 56]
    assert (clf.history_["remaining_4"] * 24).round().astype(int).tolist() == [24, 18, 14]


def test_pruned_weights_are_exactly_zero_after_training():
    X, y = data()
    clf = ticket(estimator_params={"optimizer": "adamw", "weight_decay": 0.1}).fit(X, y)
    module = clf.estimator_.net_.module_
    for name in clf.layers_:
        layer = module.get_submodule(name)
        pruned = ~clf.masks_[name]
        assert pruned.any()
        assert not layer.weight[pruned].any()
        assert not layer.weight_orig[pruned].any()  # not even decayed or moved by Adam
    x = torch.from_numpy(X[:4])
    module.eval()
    assert module(x).shape == (4, 3)  # the forward hook recomputes weight = orig * mask
    assert torch.equal(module[0].weight, module[0].weight_orig * module[0].weight_mask)


def test_every_round_starts_from_the_initial_weights_of_the_survivors():
    X, y = data()
    recorder = StartRecorder()
    clf = ticket(estimator_params={"callbacks": [recorder]}).fit(X, y)
    starts = recorder_of(clf).starts
    assert len(starts) == 4  # dense training + 3 rounds
    init = clf.init_state_
    assert clf.rewind_state_ is init or all(
        torch.equal(init[k], clf.rewind_state_[k]) for k in init
    )
    for start in starts[1:]:
        for name in clf.layers_:
            mask = start[f"{name}.weight_mask"]
            assert mask.sum() < mask.numel()
            assert torch.equal(start[f"{name}.weight_orig"], init[f"{name}.weight"] * mask)
            assert torch.equal(start[f"{name}.bias"], init[f"{name}.bias"])


@pytest.mark.parametrize("rewind", [("iteration", 3), ("epoch", 1)])
def test_late_rewinding_resets_to_the_weights_after_k_steps(rewind):
    X, y = data()
    recorder = StartRecorder()
    clf = ticket(rewind=rewind, estimator_params={"callbacks": [recorder]}).fit(X, y)
    late, init = clf.rewind_state_, clf.init_state_
    assert not torch.equal(late["0.weight"], init["0.weight"])  # it trained before k
    for start in recorder_of(clf).starts[1:]:
        mask = start["2.weight_mask"]
        assert torch.equal(start["2.weight_orig"], late["2.weight"] * mask)


def test_rewinding_past_the_first_training_is_an_error():
    X, y = data()
    with pytest.raises(ValueError, match=r"after 10 epoch\(s\).*ran only 3 epoch"):
        ticket(rewind=("epoch", 10)).fit(X, y)


def test_reinit_control_trains_the_same_masks_from_new_weights():
    X, y = data()
    clf = ticket(reinit_control=True, n_rounds=2).fit(X, y, eval_set=data(45))
    history = clf.history_
    assert np.isnan(history.loc[0, "reinit_valid_accuracy"])
    assert history.loc[1:, "reinit_test_accuracy"].between(0, 1).all()
    assert history.loc[1:, "test_accuracy"].between(0, 1).all()
    figure = plot_lottery(clf)
    assert isinstance(figure, matplotlib.figure.Figure)
    assert len(figure.axes[0].lines) == 2


def test_pretrained_frozen_layers_are_neither_pruned_nor_changed():
    X, y = data()
    clf = ticket(estimator_params={"freeze_first": True}, rewind=("iteration", 2)).fit(X, y)
    assert clf.layers_ == ["2", "4"]
    module = clf.estimator_.net_.module_
    assert not pruning.is_pruned(module[0])
    assert torch.equal(module[0].weight.cpu(), clf.init_state_["0.weight"])


def test_a_fine_tuned_network_is_pruned_where_it_trains_and_rewound_late():
    X, y = data()
    torch.manual_seed(0)
    pretrained = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5)
    )
    bottom = pretrained[0].weight.detach().clone()
    recorder = StartRecorder()
    finetune = FineTuneClassifier(
        pretrained,
        train_layers=1,  # the top block (body.2) and the new head
        optimizer="adam",
        lr=0.01,
        max_epochs=3,
        early_stopping=True,
        validation_fraction=0.25,
        callbacks=[recorder],
        random_state=0,
    )
    clf = PrunedClassifier(finetune, prune_rate=0.5, n_rounds=2, rewind=("iteration", 2))
    clf.set_params(random_state=0).fit(X, y)
    assert clf.layers_ == ["body.2", "head.0"] and clf.output_layer_ == "head.0"
    module = clf.estimator_.net_.module_
    assert torch.equal(module.body[0].weight, bottom)  # frozen: neither pruned nor trained
    assert clf.history_["n_remaining"].tolist() == [152, 76, 38]
    assert clf.history_["valid_accuracy_at_best"].notna().all()
    late = clf.rewind_state_
    assert not torch.equal(late["head.0.weight"], clf.init_state_["head.0.weight"])
    for start in recorder_of(clf).starts[1:]:
        mask = start["body.2.weight_mask"]
        assert torch.equal(start["body.2.weight_orig"], late["body.2.weight"] * mask)
    assert set(clf.predict(X)) <= {"a", "b", "c"}


def test_predict_returns_the_original_labels():
    X, _ = data()
    y = np.array([1, 5, 9])[np.arange(len(X)) % 3]
    clf = ticket(n_rounds=1).fit(X, y)
    assert set(clf.predict(X)) <= {1, 5, 9}
    assert clf.predict_proba(X).shape == (len(X), 3)
    assert np.allclose(clf.predict_proba(X).sum(axis=1), 1)


def test_masks_survive_pickle_and_deepcopy():
    X, y = data()
    clf = ticket().fit(X, y)
    expected = clf.predict_proba(X)
    for copied in (pickle.loads(pickle.dumps(clf)), copy.deepcopy(clf)):
        module = copied.estimator_.net_.module_
        assert pruning.is_pruned(module)
        for name, mask in clf.masks_.items():
            assert torch.equal(module.get_submodule(name).weight_mask.bool().cpu(), mask)
        np.testing.assert_allclose(copied.predict_proba(X), expected, rtol=1e-6)


def test_clone_refits_to_the_same_masks():
    X, y = data()
    clf = ticket().fit(X, y)
    again = clone(clf)
    assert not hasattr(again, "masks_")
    again.fit(X, y)
    for name, mask in clf.masks_.items():
        assert torch.equal(again.masks_[name], mask)


def test_permanent_pruning_leaves_plain_sparse_weights():
    X, y = data()
    masked = ticket().fit(X, y)
    permanent = ticket(permanent=True).fit(X, y)
    module = permanent.estimator_.net_.module_
    assert not pruning.is_pruned(module)
    assert not any(key.endswith("_mask") for key in module.state_dict())
    for name, mask in permanent.masks_.items():
        weight = module.get_submodule(name).weight
        assert isinstance(weight, nn.Parameter)
        assert torch.equal(weight != 0, mask)
    np.testing.assert_allclose(permanent.predict_proba(X), masked.predict_proba(X), rtol=1e-6)
    restored = pickle.loads(pickle.dumps(permanent))
    np.testing.assert_allclose(restored.predict_proba(X), masked.predict_proba(X), rtol=1e-6)


def test_a_plain_skorch_net_can_be_wrapped():
    X, y = data()
    net = NeuralNetClassifier(
        nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3)),
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=0.01,
        max_epochs=2,
        verbose=0,
    )
    clf = PrunedClassifier(net, prune_rate=0.2, n_rounds=2, random_state=0).fit(X, y)
    assert clf.history_["n_remaining"].tolist() == [108, 87, 69]
    assert set(clf.predict(X)) <= {"a", "b", "c"}
    assert "valid_accuracy_at_best" in clf.history_


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"rewind": "late"}, ValueError, "rewind"),
        ({"rewind": ("step", 3)}, ValueError, r"'init', \('epoch', k\) or \('iteration', k\)"),
        ({"output_layer": "2x"}, ValueError, "output_layer='2x' is not among the pruned layers"),
        ({"layers": ["1"]}, ValueError, "'1' is a ReLU"),
        ({"prune_rate": 1.0}, ValueError, "prune_rate"),
    ],
)
def test_bad_parameters_say_what_and_how(params, error, match):
    X, y = data()
    with pytest.raises(error, match=match):
        ticket(**params).fit(X, y)


def test_other_estimators_and_bad_eval_sets_are_rejected():
    X, y = data()
    with pytest.raises(TypeError, match="wraps a skorch-based classifier.*got LogisticRegression"):
        from sklearn.linear_model import LogisticRegression

        PrunedClassifier(LogisticRegression()).fit(X, y)
    with pytest.raises(ValueError, match=r"eval_set holds labels \['z'\]"):
        ticket(n_rounds=1).fit(X, y, eval_set=(X[:3], ["a", "b", "z"]))


def test_grid_search_in_parallel():
    X, y = data()
    search = GridSearchCV(ticket(n_rounds=1), {"prune_rate": [0.2, 0.5]}, cv=2, n_jobs=2)
    search.fit(X, y)
    assert set(search.cv_results_["param_prune_rate"]) == {0.2, 0.5}
    assert hasattr(search.best_estimator_, "masks_")
