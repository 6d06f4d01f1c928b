"""DistilledClassifier: the estimator, its teachers and students, on tiny data."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback
from tiny_networks import TinyClassifier
from torch import nn

from sktransfer import DistilledClassifier, born_again
from sktransfer.distillation.students import SmallCNN, build_student

# Tiny networks: one torch thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=240, n_features=10, n_informative=6, n_classes=3, random_state=0
    )
    X = X.astype(np.float32)
    names = np.array(["ant", "bee", "wasp"])[y]
    return X, names


@pytest.fixture(scope="module")
def teacher(data):
    X, y = data
    return LogisticRegression(max_iter=500).fit(X, y)


class CountingTeacher(FrozenEstimator):
    """A frozen teacher that counts its predict_proba calls and rows."""

    calls = 0
    rows = 0

    def predict_proba(self, X):
        type(self).calls += 1
        type(self).rows += len(X)
        return self.estimator.predict_proba(X)


def _small(**params):
    defaults = dict(student="mlp-16", max_epochs=3, batch_size=32, device="cpu", random_state=0)
    return DistilledClassifier(**{**defaults, **params})


# ----------------------------------------------------------------- the "done when"


class PlainStudent(TinyClassifier):
    """The same student trained by the shared base with plain cross-entropy."""

    def _build_module(self, context):
        student = build_student("mlp-16", len(self.classes_), random_state=context.seed)
        student.module.eval()
        with torch.no_grad():  # initialise the lazy layers as DistilledClassifier's probe does
            student.module(torch.zeros(2, self.n_features_in_))
        return student.module.train()


def test_alpha_zero_equals_plain_training(data, teacher):
    X, y = data
    distilled = _small(teacher=teacher, alpha=0.0, temperature=20).fit(X, y)
    plain = PlainStudent(max_epochs=3, lr=1e-3, batch_size=32, optimizer="adam", random_state=0)
    plain.fit(X, y)
    for a, b in zip(distilled.student_module_.parameters(), plain.net_.module_.parameters()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(distilled.predict_proba(X), plain.predict_proba(X))


def test_alpha_matters(data, teacher):
    X, y = data
    zero = _small(teacher=teacher, alpha=0.0).fit(X, y).predict_proba(X)
    soft = _small(teacher=teacher, alpha=0.9).fit(X, y).predict_proba(X)
    assert not np.allclose(zero, soft)


def test_teacher_is_queried_once_per_fit(data, teacher):
    X, y = data
    CountingTeacher.calls = CountingTeacher.rows = 0
    counting = CountingTeacher(teacher)
    model = _small(teacher=counting, max_epochs=4, early_stopping=True).fit(
        X[:200], y[:200], X_unlabeled=X[200:]
    )
    assert CountingTeacher.calls == 1
    assert CountingTeacher.rows == len(X)
    assert model.teacher_queries_ == 1
    assert model.n_epochs_ >= 2


def test_distilled_student_follows_the_teacher(data, teacher):
    X, y = data
    model = _small(teacher=teacher, alpha=1.0, max_epochs=40, lr=1e-2).fit(X, None)
    agreement = np.mean(model.predict(X) == teacher.predict(X))
    assert agreement > 0.85


# ----------------------------------------------------------------- labels and teachers


def test_unlabelled_only_transfer_set_uses_the_teachers_classes(data, teacher):
    X, _ = data
    with pytest.warns(UserWarning, match="only the teacher teaches"):
        model = _small(teacher=teacher).fit(X, None)
    assert model.classes_.tolist() == ["ant", "bee", "wasp"]
    assert set(model.predict(X)) <= set(model.classes_)
    assert model.n_labelled_ == len(X) and model.n_unlabelled_ == 0


def test_classes_missing_from_the_transfer_set_are_kept(data, teacher):
    X, y = data
    keep = y != "wasp"
    model = _small(teacher=teacher).fit(X[keep], y[keep])
    assert model.classes_.tolist() == ["ant", "bee", "wasp"]
    assert model.predict_proba(X).shape == (len(X), 3)


def test_labels_the_teacher_does_not_know_are_refused(data, teacher):
    X, y = data
    y = y.copy()
    y[0] = "moth"
    with pytest.raises(ValueError, match="moth"):
        _small(teacher=teacher).fit(X, y)


def test_unfitted_teacher_is_fitted_on_a_copy(data):
    X, y = data
    teacher = LogisticRegression()
    model = _small(teacher=teacher).fit(X, y)
    assert not hasattr(teacher, "classes_")
    assert model.classes_.tolist() == ["ant", "bee", "wasp"]


def test_pipeline_teacher_with_relation_losses(data):
    X, y = data
    teacher = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    model = _small(teacher=FrozenEstimator(teacher), relation_weight=1.0, max_epochs=10, lr=1e-2)
    model.fit(X, y)
    assert model.score(X, y) > 0.7
    assert {"rkd_distance", "rkd_angle"} <= set(model.net_.criterion_.loss.terms)
    with pytest.raises(ValueError, match="embedding"):
        _small(teacher=LogisticRegression().fit(X, y), relation_weight=1.0).fit(X, y)


def test_torch_teacher_needs_labels_to_name_its_outputs(data):
    X, y = data
    module = nn.Sequential(nn.Linear(10, 3))
    model = _small(teacher=module).fit(X, y)
    assert model.classes_.tolist() == ["ant", "bee", "wasp"]
    with pytest.raises(ValueError, match="class names"):
        _small(teacher=module).fit(X, None)
    with pytest.raises(ValueError, match="4 outputs"):
        _small(teacher=nn.Linear(10, 4)).fit(X, y)


def test_no_teacher_is_plain_training_and_needs_labels(data):
    X, y = data
    model = _small(teacher=None).fit(X, y)
    assert model.teacher_queries_ == 0
    with pytest.raises(ValueError, match="labels alone"):
        _small(teacher=None).fit(X, None)


def test_hints_need_a_network(data, teacher):
    X, y = data
    with pytest.raises(ValueError, match="Hints read a teacher layer"):
        _small(teacher=teacher, hint_layers=("a", "hidden.0")).fit(X, y)


# ----------------------------------------------------------------- images, hints, born-again


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, (48, 16, 16, 3), dtype=np.uint8)
    y = np.arange(48) % 2
    X[y == 1, :8] = 255  # a learnable difference
    return X, y


def _image_teacher():
    torch.manual_seed(0)
    return SmallCNN((8, 16), 2)


class HeadSnapshots(Callback):
    def on_epoch_end(self, net, **kwargs):
        snapshots.append(net.module_.student.head.weight.detach().clone())


snapshots = []


def test_fitnets_hint_first_stage_then_distillation(images):
    X, y = images
    snapshots.clear()
    model = _small(
        teacher=_image_teacher(),
        student="cnn-4-8",
        hint_layers=("features.1", "features.0"),
        hint_epochs=2,
        max_epochs=2,
        callbacks=[HeadSnapshots()],
    ).fit(X, y)
    assert model.n_epochs_ == 4
    # stage 1 trains the student up to the guided layer only: the head does not move
    assert torch.equal(snapshots[0], snapshots[1])
    assert not torch.equal(snapshots[1], snapshots[3])
    assert not model.net_.criterion_.first_stage and model.net_.module_.hint_layer is None
    adapter = model.net_.module_.adapter
    assert isinstance(adapter.regressor, nn.Conv2d) and adapter.regressor.kernel_size == (1, 1)
    # the teacher's 16-channel map is pooled to the student's 8x8 map: a 1x1 conv suffices
    assert adapter.teacher_shape == (16, 8, 8)
    losses = [epoch["train_loss"] for epoch in model.history_]
    assert all(np.isfinite(losses))


def test_joint_hints_change_the_student(images):
    X, y = images
    params = dict(teacher=_image_teacher(), student="cnn-4-8", max_epochs=2)
    plain = _small(**params).fit(X, y)
    hinted = _small(**params, hint_layers=("features.1", "features.0"), hint_weight=5.0).fit(X, y)
    assert not np.allclose(plain.predict_proba(X), hinted.predict_proba(X))


def test_bad_hint_layer_names_are_explained(images):
    X, y = images
    with pytest.raises(ValueError, match="no layer 'features.9'"):
        _small(
            teacher=_image_teacher(), student="cnn-4-8", hint_layers=("features.1", "features.9")
        ).fit(X, y)


def test_born_again_generations_copy_the_architecture(images):
    X, y = images
    generations = born_again(
        _image_teacher(), X, y, generations=2, max_epochs=2, device="cpu", random_state=0
    )
    assert len(generations) == 2
    for model in generations:
        assert isinstance(model.student_module_, SmallCNN)
        widths = [
            m.out_channels for m in model.student_module_.modules() if isinstance(m, nn.Conv2d)
        ]
        assert widths == [8, 16]
    assert generations[1].teacher is generations[0]


def test_cnn_student_refuses_vectors(data, teacher):
    X, y = data
    with pytest.raises(ValueError, match="takes images"):
        _small(teacher=teacher, student="cnn-small").fit(X, y)


# ----------------------------------------------------------------- scikit-learn behaviour


def test_clone_pickle_and_grid_search(data, teacher):
    X, y = data
    model = _small(teacher=FrozenEstimator(teacher)).fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(restored.predict_proba(X), model.predict_proba(X))
    assert clone(model).teacher.estimator is teacher
    search = GridSearchCV(
        _small(teacher=FrozenEstimator(teacher)), {"temperature": [2.0, 8.0]}, cv=2, n_jobs=2
    ).fit(X, y)
    assert search.best_params_["temperature"] in (2.0, 8.0)


def test_parameters_are_validated(data, teacher):
    X, y = data
    with pytest.raises(ValueError, match="alpha"):
        _small(teacher=teacher, alpha=1.5).fit(X, y)
    with pytest.raises(ValueError, match="hint_layers must be a pair"):
        _small(teacher=nn.Linear(10, 3), hint_layers=("a",)).fit(X, y)


# ----------------------------------------------------------------- FineTuneClassifier teachers


@pytest.fixture(scope="module")
def finetuned(images):
    from sktransfer import FineTuneClassifier

    X, y = images
    torch.manual_seed(0)
    body = nn.Sequential(SmallCNN((8, 16), 10).features, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10))  # fmt: skip
    return FineTuneClassifier(
        body, train_layers="all", max_epochs=3, device="cpu", random_state=0
    ).fit(X, np.where(y == 1, "bee", "ant"))


def test_finetune_classifier_teacher_gives_hints_and_classes(images, finetuned):
    X, _ = images
    model = _small(
        teacher=FrozenEstimator(finetuned),
        student="cnn-4-8",
        hint_layers=("body.0.1", "features.0"),
    ).fit(X, None)
    assert model.classes_.tolist() == ["ant", "bee"]
    assert model.teacher_queries_ == 1
    assert model.net_.module_.adapter.teacher_shape == (16, 8, 8)


def test_born_again_from_a_finetune_classifier(images, finetuned):
    X, _ = images
    (generation,) = born_again(
        FrozenEstimator(finetuned), X, None, generations=1, max_epochs=1, device="cpu"
    )
    assert type(generation.student_module_) is type(finetuned.net_.module_)
    assert generation.classes_.tolist() == ["ant", "bee"]


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_network_teachers_run_on_the_chosen_engine(images, finetuned, engine, record_engines):
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    from sktransfer.distillation import teachers

    used = record_engines(teachers)
    X, _ = images
    model = _small(teacher=FrozenEstimator(finetuned), student="cnn-4-8", engine=engine,
                   max_epochs=1).fit(X, None)  # fmt: skip
    assert used == [engine]  # a FineTuneClassifier teacher goes through the frozen seam
    assert model.teacher_queries_ == 1
    # Its soft targets are its own probabilities: logits equal log p up to a constant.
    from sktransfer.images import check_images

    out = teachers.teacher_outputs(
        teachers.teacher_backbone(finetuned), X, check_images(X), engine=engine
    )
    shifted = out.logits - out.logits.max(1, keepdims=True)
    proba = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    np.testing.assert_allclose(proba, finetuned.predict_proba(X), atol=1e-5)


class _TrainingOnlyShift(nn.Module):
    """Python control flow on the batch in training mode: torch.fx cannot trace it."""

    def forward(self, x):
        if self.training:
            return x + 0.01 * len(x)
        return x


def test_untraceable_network_teacher_answers_through_predict_proba(data):
    from sktransfer.frozen import EngineWarning

    X, y = data
    net = nn.Sequential(_TrainingOnlyShift(), nn.Linear(10, 3))
    teacher = _small(student=net, teacher=None).fit(X, y)
    with pytest.warns(EngineWarning, match="cannot be traced by torch.fx"):
        model = _small(teacher=FrozenEstimator(teacher), alpha=1.0).fit(X, y)
    assert model.teacher_queries_ == 1
    assert model.classes_.tolist() == teacher.classes_.tolist()
