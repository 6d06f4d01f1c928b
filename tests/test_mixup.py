"""Tests of MixUp (sktransfer/mixup.py): mixed inputs and targets in training only."""

import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from torch import nn

from sktransfer import FineTuneClassifier
from sktransfer.devices import seeded
from sktransfer.mixup import MixedLoss, MixUp

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cnn():
    with seeded(0):
        return nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(3, 4, 3),
                relu=nn.ReLU(),
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                classifier=nn.Linear(4, 10),
            )
        )


def images(n=12, size=6):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 2


class RecordInputs(Callback):
    """Records what the network receives (after MixUp's hook, registered before this one)."""

    def on_train_begin(self, net, **kwargs):
        self.seen_ = []
        self._handle = net.module_.register_forward_pre_hook(self._record)

    def _record(self, module, args):
        self.seen_.append((module.training, args[0].detach().clone()))

    def on_train_end(self, net, **kwargs):
        self._handle.remove()
        self._handle = None


def fit_with_mixup(alpha=1.0, **params):
    X, y = images()
    recorder = RecordInputs()
    clf = FineTuneClassifier(
        tiny_cnn(),
        train_layers="all",
        max_epochs=2,
        batch_size=6,
        callbacks=[("mixup", MixUp(alpha=alpha)), ("record", recorder)],
        device="cpu",
        random_state=0,
        **params,
    ).fit(X, y)
    return clf, X, y, dict(clf.net_.callbacks_)["record"]


def test_mixed_loss_is_cross_entropy_on_the_mixed_one_hot_targets():
    logits = torch.randn(5, 3)
    y = torch.tensor([0, 2, 1, 1, 0])
    perm = torch.tensor([3, 0, 4, 1, 2])
    mixup = MixUp(alpha=0.1).initialize()
    mixup.mixing_ = (0.3, perm)
    loss = MixedLoss(nn.CrossEntropyLoss(), mixup)(logits, y)
    one_hot = nn.functional.one_hot(y, 3).float()
    soft = 0.3 * one_hot + 0.7 * one_hot[perm]
    assert torch.allclose(loss, nn.functional.cross_entropy(logits, soft))
    mixup.mixing_ = None  # off: the plain loss
    assert torch.allclose(
        MixedLoss(nn.CrossEntropyLoss(), mixup)(logits, y), nn.CrossEntropyLoss()(logits, y)
    )


def test_mixed_loss_permutes_every_target_of_a_dict():
    seen = []

    def loss(y_pred, targets):
        seen.append(targets)
        return y_pred.sum() * 0

    mixup = MixUp().initialize()
    mixup.mixing_ = (0.5, torch.tensor([1, 0]))
    targets = {"y": torch.tensor([4, 7]), "soft": torch.tensor([[0.1], [0.9]])}
    MixedLoss(loss, mixup)(torch.zeros(2, 1), targets)
    assert seen[1]["y"].tolist() == [7, 4]
    assert torch.equal(seen[1]["soft"], targets["soft"].flip(0))


def test_the_hook_mixes_inputs_out_of_place_and_only_while_a_mix_is_active():
    mixup = MixUp().initialize()
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    original = x.clone()
    assert mixup._mix_inputs(None, (x,)) is None
    perm = torch.tensor([2, 0, 1])
    mixup.mixing_ = (0.25, perm)
    (mixed,) = mixup._mix_inputs(None, (x,))
    assert torch.equal(mixed, 0.25 * x + 0.75 * x[perm])
    assert torch.equal(x, original)  # the loader's batch is untouched
    with pytest.raises(ValueError, match="float inputs"):
        mixup._mix_inputs(None, (x.long(),))


def test_training_batches_are_mixed_pairs_and_validation_batches_are_not():
    clf, X, _, recorder = fit_with_mixup(early_stopping=True, validation_fraction=0.25)
    originals = torch.from_numpy(X).permute(0, 3, 1, 2).float().div(255).flatten(1)
    lambdas = [
        b["mixup_lambda"] for epoch in clf.history_ for b in epoch["batches"] if "mixup_lambda" in b
    ]
    training = [x.flatten(1) for is_training, x in recorder.seen_ if is_training]
    assert len(training) == len(lambdas) == 2 * 2  # 9 training images, batches of 6, 2 epochs
    for lam, batch in zip(lambdas, training, strict=True):
        assert 0 < lam < 1
        for row in batch:  # lam * x_i + (1 - lam) * x_j for some pair of training images
            pairs = lam * originals[:, None] + (1 - lam) * originals[None, :]
            assert torch.isclose(pairs, row, atol=1e-6).all(-1).any()
        mixed = [not any(torch.allclose(row, o, atol=1e-6) for o in originals) for row in batch]
        assert any(mixed)  # a row paired with itself (perm[i] == i) stays an original
    validation = [x.flatten(1) for is_training, x in recorder.seen_ if not is_training]
    for batch in validation:
        for row in batch:
            assert any(torch.allclose(row, o, atol=1e-6) for o in originals)


def test_mixup_is_off_at_prediction_and_leaves_a_plain_picklable_net():
    clf, X, _, _ = fit_with_mixup()
    module = clf.net_.module_
    assert not module._forward_pre_hooks
    assert not isinstance(clf.net_.criterion_, MixedLoss)
    inputs = torch.from_numpy(X).permute(0, 3, 1, 2).float().div(255)
    with torch.no_grad():
        expected = torch.softmax(module.eval()(inputs), 1).numpy()
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-5, atol=1e-6)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))


def test_mixup_changes_training_and_seeded_runs_repeat():
    first, X, y, _ = fit_with_mixup()
    again, *_ = fit_with_mixup()
    assert first.history_[:, "train_loss"] == again.history_[:, "train_loss"]
    plain = FineTuneClassifier(
        tiny_cnn(), train_layers="all", max_epochs=2, batch_size=6, device="cpu", random_state=0
    ).fit(X, y)
    assert plain.history_[:, "train_loss"] != first.history_[:, "train_loss"]


@pytest.mark.parametrize("alpha", [0, -1.0, "0.1", True])
def test_alpha_must_be_positive(alpha):
    X, y = images()
    clf = FineTuneClassifier(tiny_cnn(), callbacks=[MixUp(alpha=alpha)], max_epochs=1)
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        clf.fit(X, y)
