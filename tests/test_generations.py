"""LabelRefinery and BornAgainEnsemble: chains of DistilledClassifiers, each generation taught
by the one before, on tiny vectors and a tiny MLP."""

import pickle
import re

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback

from sktransfer import BornAgainEnsemble, DistilledClassifier, LabelRefinery
from sktransfer.distillation import generations as generations_module

pytestmark = pytest.mark.usefixtures("one_thread")

#: Training batches seen by :class:`RecordTargets`, one list per fit (in fit order).
RECORDED: list[list[tuple]] = []


class RecordTargets(Callback):
    """Keeps each training batch's inputs and targets. The module-level list survives the
    deep copies that clone and fit make of callbacks."""

    def on_train_begin(self, net, **kwargs):
        RECORDED.append([])

    def on_batch_begin(self, net, batch, training, **kwargs):
        if training:
            inputs, targets = batch
            RECORDED[-1].append((inputs.clone(), {k: v.clone() for k, v in targets.items()}))


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=90, n_features=6, n_informative=4, n_classes=3, random_state=0
    )
    return X.astype(np.float32), np.array(["a", "b", "c"])[y]


def network(**params):
    defaults = dict(student="mlp-8", max_epochs=3, lr=1e-2, batch_size=32, device="cpu",
                    engine="torch", random_state=0)  # fmt: skip
    return DistilledClassifier(None, **{**defaults, **params})


@pytest.fixture(scope="module")
def ensemble(data):
    return BornAgainEnsemble(network(), generations=3, random_state=0).fit(*data)


# ----------------------------------------------------------------- the chain


def test_there_is_one_model_per_generation_each_taught_by_the_one_before(ensemble):
    assert len(ensemble.generations_) == 3
    assert ensemble.teacher_.teacher is None  # generation 0 learnt from the labels
    previous = ensemble.teacher_
    for generation in ensemble.generations_:
        assert isinstance(generation, DistilledClassifier)
        assert generation.teacher.estimator is previous
        assert generation.teacher_queries_ == 1
        assert (generation.alpha, generation.temperature) == (1.0, 1.0)
        previous = generation
    assert [row["generation"] for row in ensemble.history_] == [0, 1, 2, 3]
    assert [row["name"] for row in ensemble.history_][:2] == ["teacher", "generation 1"]
    assert all(row["n_epochs"] == 3 and row["fit_seconds"] > 0 for row in ensemble.history_)
    assert ensemble.classes_.tolist() == ["a", "b", "c"]
    assert ensemble.n_features_in_ == 6


def test_each_generation_trains_on_the_previous_ones_soft_labels(data):
    X, y = data
    RECORDED.clear()
    model = LabelRefinery(
        network(callbacks=[RecordTargets()]), generations=2, label_weight=0.25, random_state=0
    ).fit(X, y)
    assert len(RECORDED) == 3  # teacher, generation 1, generation 2
    models = [model.teacher_, *model.generations_]
    for k in (1, 2):
        assert model.generations_[k - 1].alpha == 0.75  # 1 - label_weight
        for inputs, targets in RECORDED[k]:
            soft_labels = torch.softmax(targets["teacher"], dim=1).numpy()
            expected = models[k - 1].predict_proba(inputs.numpy())
            np.testing.assert_allclose(soft_labels, expected, atol=1e-5)
            # ... and the ground truth is still there for the label term
            labels = model.classes_[targets["label"].numpy()]
            rows = [np.flatnonzero((X == row).all(axis=1))[0] for row in inputs.numpy()]
            assert (labels == y[rows]).all()
    # the teacher itself learnt from the labels alone: no soft labels
    assert all(not targets["teacher"].any() for _, targets in RECORDED[0])


def test_the_ensemble_is_the_mean_of_the_generations(data, ensemble):
    X, _ = data
    probabilities = [g.predict_proba(X) for g in ensemble.generations_]
    np.testing.assert_allclose(ensemble.predict_proba(X), np.mean(probabilities, axis=0))
    with_teacher = clone(ensemble).set_params(include_teacher=True)
    vars(with_teacher).update({k: v for k, v in vars(ensemble).items() if k.endswith("_")})
    everyone = [ensemble.teacher_.predict_proba(X), *probabilities]
    np.testing.assert_allclose(with_teacher.predict_proba(X), np.mean(everyone, axis=0))
    assert not np.allclose(with_teacher.predict_proba(X), ensemble.predict_proba(X))
    proba = ensemble.predict_proba(X)
    assert (ensemble.predict(X) == ensemble.classes_[proba.argmax(axis=1)]).all()


def test_the_refinery_predicts_with_its_last_generation(data):
    X, y = data
    refinery = LabelRefinery(network(), generations=2, random_state=0).fit(X, y)
    last = refinery.generations_[-1]
    np.testing.assert_allclose(refinery.predict_proba(X), last.predict_proba(X))
    assert not np.allclose(refinery.predict_proba(X), refinery.teacher_.predict_proba(X))


def test_a_frozen_teacher_is_used_as_it_is(data, ensemble):
    X, y = data
    teacher = ensemble.teacher_
    chain = BornAgainEnsemble(FrozenEstimator(teacher), generations=1, random_state=0).fit(X, y)
    assert chain.teacher_ is teacher
    assert chain.history_[0]["fit_seconds"] is None
    assert chain.generations_[0].teacher.estimator is teacher
    assert clone(chain).estimator.estimator is teacher  # kept through clone


def test_unlabelled_samples_teach_the_generations_but_not_the_teacher(data):
    X, y = data
    chain = LabelRefinery(network(), generations=1, random_state=0)
    chain.fit(X[:60], y[:60], X_unlabeled=X[60:])
    assert chain.teacher_.n_labelled_ == 60 and chain.teacher_.n_unlabelled_ == 0
    assert chain.generations_[0].n_unlabelled_ == 30


def test_a_random_state_repeats_the_fit_and_seeds_each_generation_differently(data):
    X, y = data
    first = BornAgainEnsemble(network(), generations=2, random_state=3).fit(X, y)
    again = BornAgainEnsemble(network(), generations=2, random_state=3).fit(X, y)
    np.testing.assert_array_equal(first.predict_proba(X), again.predict_proba(X))
    seeds = [m.random_state for m in (first.teacher_, *first.generations_)]
    assert len(set(seeds)) == 3
    other = BornAgainEnsemble(network(), generations=2, random_state=4).fit(X, y)
    assert not np.allclose(other.predict_proba(X), first.predict_proba(X))


# ----------------------------------------------------------------- scikit-learn behaviour


def test_clone_pickle_and_grid_search(data, ensemble):
    X, y = data
    restored = pickle.loads(pickle.dumps(ensemble))
    np.testing.assert_allclose(restored.predict_proba(X), ensemble.predict_proba(X))
    assert restored.generations_[1].teacher.estimator is restored.generations_[0]
    copy = clone(ensemble)
    assert copy.get_params()["estimator__max_epochs"] == 3
    assert not hasattr(copy, "generations_")
    search = GridSearchCV(
        LabelRefinery(network(max_epochs=2), generations=1, random_state=0),
        {"label_weight": [0.0, 0.5], "estimator__lr": [1e-2]},
        cv=2,
    ).fit(X, y)
    assert search.best_params_["label_weight"] in (0.0, 0.5)
    assert len(search.best_estimator_.generations_) == 1


@pytest.mark.parametrize(
    "params, message",
    [
        ({"generations": 0}, "'generations' parameter"),
        ({"label_weight": 1.5}, "'label_weight' parameter"),
        ({"temperature": 0.0}, "'temperature' parameter"),
        ({"random_state": "seed"}, "'random_state' parameter"),
    ],
)
def test_bad_parameters_are_refused(data, params, message):
    with pytest.raises(ValueError, match=message):
        LabelRefinery(network(), **params).fit(*data)


def test_the_estimator_must_be_a_distilled_classifier(data):
    with pytest.raises(TypeError, match="needs a DistilledClassifier.*got LogisticRegression"):
        BornAgainEnsemble(LogisticRegression()).fit(*data)
    with pytest.raises(ValueError, match="'include_teacher' parameter"):
        BornAgainEnsemble(network(), include_teacher="yes").fit(*data)
    with pytest.raises(NotFittedError):
        BornAgainEnsemble(FrozenEstimator(network())).fit(*data)
    with pytest.raises(NotFittedError):
        LabelRefinery(network()).predict(data[0])


@pytest.mark.parametrize("estimator", [LabelRefinery, BornAgainEnsemble])
def test_fitted_attributes_are_documented(ensemble, estimator):
    attributes = [a for a in vars(ensemble) if a.endswith("_") and not a.startswith("_")]
    section = estimator.__doc__.split("Attributes\n    ----------", 1)[1]
    section = re.split(r"\n    (Examples|Notes|See Also)\n    -+", section)[0]
    assert not [a for a in attributes if not re.search(rf"\b{re.escape(a)} :", section)]
    for name in ("estimator", "generations", "label_weight", "temperature", "random_state"):
        assert f"\n    {name} :" in estimator.__doc__
    assert ("include_teacher :" in estimator.__doc__) == (estimator is BornAgainEnsemble)


def test_the_module_says_how_it_relates_to_born_again():
    assert "born_again" in generations_module.__doc__
