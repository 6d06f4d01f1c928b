import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch import nn

from sktransfer.distillation import teachers
from sktransfer.distillation.students import SmallCNN
from sktransfer.distillation.teachers import prepare_teacher, teacher_module, teacher_outputs
from sktransfer.images import check_images


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=60, n_features=6, n_classes=3, n_informative=4,
                               random_state=0)  # fmt: skip
    return X.astype(np.float32), y


def test_estimator_teacher_gives_log_probabilities(data):
    X, y = data
    teacher = prepare_teacher(LogisticRegression().fit(X, y), X, y)
    out = teacher_outputs(teacher, X, check_images(X, allow_vectors=True))
    np.testing.assert_allclose(np.exp(out.logits), teacher.predict_proba(X), rtol=1e-4)
    assert out.classes.tolist() == [0, 1, 2]
    assert out.hint is None and out.embedding is None


def test_unfitted_teacher_is_cloned_and_fitted(data):
    X, y = data
    teacher = LogisticRegression()
    prepared = prepare_teacher(teacher, X, y)
    assert prepared is not teacher and hasattr(prepared, "classes_")
    assert not hasattr(teacher, "classes_")


def test_teacher_without_probabilities_is_explained(data):
    X, y = data
    with pytest.raises(TypeError, match="probability=True"):
        prepare_teacher(SVC().fit(X, y), X, y)


def test_pipeline_embedding_is_the_last_steps_input(data):
    X, y = data
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    out = teacher_outputs(pipe, X, check_images(X, allow_vectors=True), embedding=True)
    np.testing.assert_allclose(out.embedding, pipe[:-1].transform(X), rtol=1e-5)
    np.testing.assert_allclose(np.exp(out.logits), pipe.predict_proba(X), rtol=1e-4)


def test_torch_teacher_goes_through_the_frozen_forward_seam(monkeypatch):
    calls = []
    original = teachers.pooled_features

    def spy(network, inputs, **kwargs):
        calls.append(list(network.layers))
        return original(network, inputs, **kwargs)

    monkeypatch.setattr(teachers, "pooled_features", spy)
    torch.manual_seed(0)
    module = SmallCNN((4, 8), 3)
    images = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    backbone = prepare_teacher(module, images, None)
    out = teacher_outputs(
        backbone, images, check_images(images), hint_layer="features.1", hint_size=(2, 2),
        embedding=True,
    )  # fmt: skip
    assert len(calls) == 1  # one pass over the transfer set, all layers at once
    assert out.logits.shape == (5, 3)
    assert out.hint.shape == (5, 8, 2, 2)  # 4x4 maps average-pooled to the student's size
    assert out.embedding.shape == (5, 8)
    module.eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(out.logits, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_teacher_module_finds_networks():
    module = nn.Linear(2, 2)
    assert teacher_module(module) is module
    assert teacher_module(LogisticRegression()) is None


def test_hint_and_embedding_may_be_the_same_output(data):
    X, _ = data
    from sktransfer.distillation.students import MLP

    module = MLP((5, 4), 3, dropout=0.1, in_features=6)  # hidden.1 ends in its dropout node
    backbone = prepare_teacher(module, X, None)
    out = teacher_outputs(
        backbone, X, check_images(X, allow_vectors=True), hint_layer="hidden.1", embedding=True
    )
    assert out.hint.shape == (len(X), 4) and out.embedding.shape == (len(X), 4)
    np.testing.assert_array_equal(out.hint, out.embedding)
