"""Tests of the shared training base (sktransfer/training/) through a tiny subclass."""

import inspect
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from skorch.callbacks import Callback
from tiny_networks import TinyClassifier, labelled_images
from torch import nn

from sktransfer.devices import DeviceWarning
from sktransfer.training import (
    NeuralClassifierBase,
    count_trainable,
    frozen_submodules,
    with_training_parameters,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# Tiny networks: one torch thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=60, labels=("b", "a")):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = np.where(X[:, 0] + 0.3 * X[:, 1] > 0, labels[0], labels[1])
    return X, y


def test_predict_returns_original_labels_and_proba_follows_classes():
    X, y = labelled_images()
    clf = TinyClassifier(random_state=0).fit(X, y)
    assert clf.classes_.tolist() == [1, 5, 9]
    assert set(clf.predict(X)) <= {1, 5, 9}
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(1)])
    X, y = _data(labels=("spam", "eggs"))
    assert set(TinyClassifier(random_state=0).fit(X, y).predict(X)) <= {"spam", "eggs"}


def test_random_state_repeats_exactly_on_cpu():
    X, y = labelled_images()
    a = TinyClassifier(random_state=3, augmentation="crop_flip").fit(X, y).predict_proba(X)
    b = TinyClassifier(random_state=3, augmentation="crop_flip").fit(X, y).predict_proba(X)
    c = TinyClassifier(random_state=4, augmentation="crop_flip").fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_augmentation_is_never_applied_at_prediction():
    X, y = labelled_images()
    clf = TinyClassifier(random_state=0, augmentation="crop_flip").fit(X, y)
    first = clf.predict_proba(X)
    np.testing.assert_array_equal(first, clf.predict_proba(X))
    module = clf.net_.module_.eval()
    with torch.no_grad():
        manual = torch.softmax(module(torch.from_numpy(X).permute(0, 3, 1, 2) / 255.0), 1)
    np.testing.assert_allclose(first, manual.numpy(), rtol=1e-5, atol=1e-6)


def test_frozen_weights_and_batchnorm_statistics_do_not_change():
    X, y = _data()
    clf = TinyClassifier(freeze_first=True, random_state=0, lr=0.5)
    context = clf._prepare_fit(X, y)
    before = {k: v.clone() for k, v in clf.net_.module_[0].state_dict().items()}
    head = clf.net_.module_[3].weight.detach().clone()
    clf._continue_training(context)
    after = clf.net_.module_[0].state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key  # bit-identical, running stats included
    assert not torch.equal(head, clf.net_.module_[3].weight)


def test_trainable_parameter_counts_are_exact():
    X, y = _data()
    clf = TinyClassifier(freeze_first=True, random_state=0, max_epochs=1).fit(X, y)
    assert clf.n_trainable_params_ == 8 * 2 + 2
    assert clf.n_params_ == 5 * 8 + 8 + 2 * 8 + 8 * 2 + 2
    shared = nn.Linear(3, 3)
    assert count_trainable(nn.Sequential(shared, shared)) == (12, 12)


def test_frozen_submodules_are_the_outermost_fully_frozen_ones():
    module = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), nn.Linear(2, 2))
    module[0].requires_grad_(False)
    assert frozen_submodules(module) == [module[0]]
    module[0][1].requires_grad_(True)
    assert frozen_submodules(module) == [module[0][0]]


class _Snapshots(Callback):
    def initialize(self):
        self.weights_ = {}
        return self

    def on_epoch_end(self, net, **kwargs):
        state = {k: v.clone() for k, v in net.module_.state_dict().items()}
        self.weights_[len(net.history)] = state


def test_early_stopping_restores_the_best_epoch():
    X, y = _data(n=80)
    y[:12] = np.where(y[:12] == "a", "b", "a")  # label noise so validation loss turns up
    snapshots = _Snapshots()
    clf = TinyClassifier(
        early_stopping=True,
        max_epochs=40,
        lr=0.5,
        n_iter_no_change=2,
        callbacks=[("snap", snapshots)],
        random_state=0,
    ).fit(X, y)
    losses = clf.history_[:, "valid_loss"]
    assert clf.n_epochs_ < 40
    assert clf.best_epoch_ == int(np.argmin(losses)) + 1
    assert not hasattr(snapshots, "weights_"), "user callbacks are copied, never changed"
    used = dict(clf.net_.callbacks_)["snap"]
    best = used.weights_[clf.best_epoch_]
    for key, value in clf.net_.module_.state_dict().items():
        assert torch.equal(value, best[key]), key
    assert "valid_acc" in clf.history_[-1]


def test_interrupt_is_not_mistaken_for_early_stopping():
    class Interrupt(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 2:
                raise KeyboardInterrupt

    X, y = _data()
    with pytest.warns(UserWarning, match="interrupted after 2 of 5 epochs"):
        clf = TinyClassifier(callbacks=[Interrupt()], random_state=0).fit(X, y)
    assert clf.n_epochs_ == 2


def test_continue_training_accumulates_epochs_and_respects_new_freezing():
    X, y = _data()
    clf = TinyClassifier(random_state=0, max_epochs=2)
    context = clf._prepare_fit(X, y)
    clf._continue_training(context)
    clf.net_.module_[3].requires_grad_(False)
    frozen = clf.net_.module_[3].weight.detach().clone()
    clf._continue_training(context, max_epochs=3)
    assert clf.n_epochs_ == 5
    assert torch.equal(frozen, clf.net_.module_[3].weight)
    assert clf.n_trainable_params_ == 5 * 8 + 8 + 2 * 8


def test_training_targets_hook_feeds_dicts_to_the_criterion():
    seen = []

    class SoftLoss(nn.Module):
        def forward(self, logits, targets):
            seen.append(sorted(targets))
            return nn.functional.cross_entropy(logits, targets["y"]) + 0 * targets["w"].sum()

    class WithTargets(TinyClassifier):
        def _training_targets(self, context):
            y_encoded = context.y_encoded
            return {"y": y_encoded, "w": np.ones(len(y_encoded), np.float32)}

        def _criterion(self, context):
            return SoftLoss()

    X, y = _data()
    WithTargets(random_state=0, max_epochs=1, early_stopping=True).fit(X, y)
    assert seen and seen[0] == ["w", "y"]


def test_clone_and_pickle_keep_predictions():
    X, y = labelled_images()
    clf = TinyClassifier(random_state=0).fit(X, y)
    assert clone(clf).get_params() == clf.get_params()
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"early_stopping": True, "validation_fraction": 0.01}, "one validation sample per class"),
        ({"mixed_precision": True}, "mixed_precision=True needs a CUDA device"),
        ({"augmentation": "flip"}, "augmentation=None for vector input"),
    ],
)
def test_errors_say_what_and_how_to_fix(params, match):
    X, y = _data(n=20)
    clf = TinyClassifier(**params)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)


def test_predict_rejects_another_kind_of_input():
    X, y = _data()
    clf = TinyClassifier(random_state=0, max_epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="fitted on vectors but got images"):
        clf.predict(np.zeros((2, 8, 8, 3), np.uint8))


@needs_cuda
def test_gpu_model_unpickles_on_cpu(monkeypatch):
    X, y = labelled_images()
    clf = TinyClassifier(random_state=0, device="cuda").fit(X, y)
    expected = clf.predict_proba(X)
    data = pickle.dumps(clf)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(DeviceWarning, match="loaded onto the CPU"):
        restored = pickle.loads(data)
    assert restored.device_.type == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(restored.predict_proba(X), expected, atol=2e-2)


def test_model_saved_for_a_missing_gpu_loads_on_cpu_with_a_warning():
    # Without a GPU here, mark the net as a CUDA one: unpickling must map it to the CPU, say
    # so with sktransfer's DeviceWarning, and predict as before.
    X, y = labelled_images()
    clf = TinyClassifier(random_state=0).fit(X, y)
    expected = clf.predict_proba(X)
    clf.net_.device = "cuda"
    data = pickle.dumps(clf)
    clf.net_.device = "cpu"
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present, so nothing is remapped")
    with pytest.warns(DeviceWarning, match="no CUDA device is available here"):
        restored = pickle.loads(data)
    assert restored.device_.type == "cpu" and restored.net_.device == "cpu"
    np.testing.assert_array_equal(restored.predict_proba(X), expected)


def test_the_architecture_docs_example_estimator_runs():
    """docs/architecture.md's hook-protocol example is a complete estimator: run it as is."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    section = doc.split("## The training hook protocol", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the hook protocol section should hold one example"
    namespace = {}
    exec(compile(blocks[0], "docs/architecture.md", "exec"), namespace)
    probe = namespace["probe"]
    assert isinstance(probe, NeuralClassifierBase) and probe.n_epochs_ == 20
    assert clone(probe).get_params() == probe.get_params()


def test_training_parameters_come_from_one_signature():
    # FineTuneClassifier and DistilledClassifier do not list the base's parameters again:
    # with_training_parameters gives them the full signature that get_params and clone read.
    from sktransfer import DistilledClassifier, FineTuneClassifier

    base = set(inspect.signature(NeuralClassifierBase.__init__).parameters) - {"self"}
    assert base <= set(FineTuneClassifier().get_params())
    distilled = DistilledClassifier(None, lr=0.5)
    assert base - {"augmentation"} <= set(distilled.get_params())
    assert "augmentation" not in distilled.get_params()
    assert (distilled.lr, distilled.batch_size, distilled.optimizer) == (0.5, 64, "adam")
    assert clone(distilled).get_params() == distilled.get_params()
    with pytest.raises(TypeError, match=r"DistilledClassifier.__init__\(\): .*'augmentation'"):
        DistilledClassifier(augmentation="flip")
    with pytest.raises(TypeError, match="not training parameters; choose among"):
        with_training_parameters(learning_rate=0.1)
