"""MaxNorm: every unit's incoming weights stay inside the ball, and only where asked."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone

from sktransfer import DistilledClassifier
from sktransfer.constraints import MaxNorm

pytestmark = pytest.mark.usefixtures("one_thread")


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 10)).astype(np.float32) * 5
    return X, (X[:, 0] > 0).astype(int)


def fitted(callbacks, lr=0.5):
    clf = DistilledClassifier(
        None,
        student="mlp-32-32",
        max_epochs=4,
        lr=lr,
        optimizer="sgd",
        device="cpu",
        callbacks=callbacks,
        random_state=0,
    )
    return clf.fit(*data())


def row_norms(clf):
    student = clf.student_module_
    return {
        n: m.weight.norm(dim=1).max().item()
        for n, m in student.named_modules()
        if hasattr(m, "weight") and m.weight.dim() == 2
    }


def test_unconstrained_weights_grow_past_the_bound():
    # The check below could not fail if the weights never grew: make sure they do.
    assert max(row_norms(fitted(None)).values()) > 1.0


def test_every_layer_respects_the_bound():
    norms = row_norms(fitted([("max_norm", MaxNorm(1.0))]))
    assert norms and all(value <= 1.0 + 1e-5 for value in norms.values()), norms


def test_only_named_layers_are_constrained():
    norms = row_norms(fitted([("max_norm", MaxNorm(0.3, layers=["student.hidden.0.0"]))]))
    assert norms["hidden.0.0"] <= 0.3 + 1e-5
    assert max(v for n, v in norms.items() if n != "hidden.0.0") > 0.3


def test_bad_bound_and_unknown_layer_say_how_to_fix():
    with pytest.raises(ValueError, match="max_norm must be > 0; got 0"):
        fitted([("max_norm", MaxNorm(0))])
    with pytest.raises(TypeError, match="max_norm must be a number"):
        fitted([("max_norm", MaxNorm("3"))])
    with pytest.raises(ValueError, match=r"\['nope'\] are not layers.*Hint: choose among"):
        fitted([("max_norm", MaxNorm(1.0, layers=["nope"]))])


def test_clones_and_pickles_with_the_estimator():
    clf = fitted([("max_norm", MaxNorm(1.0))])
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict(data()[0]), clf.predict(data()[0]))
    params = clone(clf).get_params()["callbacks"][0][1].get_params()
    assert params == {"max_norm": 1.0, "layers": None}
