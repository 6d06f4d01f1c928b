import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sktransfer.distillation import (
    DistillationLoss,
    HintAdapter,
    hint_loss,
    kd_loss,
    probabilities_to_logits,
    rkd_angle_loss,
    rkd_distance_loss,
    soft_targets,
)


def _zero_mean(logits):
    return logits - logits.mean(dim=1, keepdim=True)


def test_soft_targets_soften_with_temperature():
    logits = torch.tensor([[4.0, 1.0, 0.0]])
    cold, hot = soft_targets(logits, 1), soft_targets(logits, 20)
    assert torch.allclose(cold, torch.softmax(logits, 1))
    assert hot.max() < cold.max()
    assert torch.allclose(hot.sum(1), torch.ones(1))


def test_probability_only_teacher_gives_the_same_soft_targets_as_its_logits():
    logits = torch.randn(5, 4) * 3
    proba = torch.softmax(logits, 1).numpy()
    recovered = torch.from_numpy(probabilities_to_logits(proba))
    for temperature in (1, 4, 20):
        assert torch.allclose(
            soft_targets(recovered, temperature), soft_targets(logits, temperature), atol=1e-5
        )


def test_probability_zeros_are_floored_not_infinite():
    logits = probabilities_to_logits([[1.0, 0.0]])
    assert np.isfinite(logits).all()


def test_kd_loss_is_zero_when_student_matches_teacher_up_to_a_constant():
    teacher = torch.randn(6, 5)
    assert kd_loss(teacher + 3.0, teacher, 4).abs() < 1e-5
    assert kd_loss(torch.randn(6, 5), teacher, 4) > 0


def test_kd_loss_is_t_squared_times_kl():
    s, t, T = torch.randn(3, 4), torch.randn(3, 4), 5.0
    p = torch.softmax(t / T, 1)
    q = torch.softmax(s / T, 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    assert torch.allclose(kd_loss(s, t, T), T**2 * kl, atol=1e-6)


def _soft_gradient(student, teacher, temperature, scaled):
    student = student.clone().requires_grad_(True)
    loss = kd_loss(student, teacher, temperature)
    if not scaled:
        loss = loss / temperature**2
    loss.backward()
    return student.grad


def test_soft_term_gradient_scales_as_one_over_t_squared():
    """Hinton et al., section 2.1: dC/dz_i = (q_i - p_i) / T, which for large T is
    (z_i - v_i) / (N T^2) with zero-mean logits; multiplying by T^2 removes the 1/T^2."""
    n_samples, n_classes = 8, 10
    student = _zero_mean(torch.randn(n_samples, n_classes))
    teacher = _zero_mean(torch.randn(n_samples, n_classes))
    limit = (student - teacher) / n_classes / n_samples  # batchmean divides by n_samples
    for temperature in (20.0, 50.0, 100.0):
        raw = _soft_gradient(student, teacher, temperature, scaled=False)
        error = float((raw * temperature**2 - limit).norm() / limit.norm())
        assert error < 0.1, (temperature, error)
    norms = [
        float(_soft_gradient(student, teacher, t, scaled=False).norm()) for t in (10.0, 20.0, 40.0)
    ]
    # doubling T divides the raw gradient by about 4
    assert norms[0] / norms[1] == pytest.approx(4, rel=0.1)
    assert norms[1] / norms[2] == pytest.approx(4, rel=0.05)
    # the T^2 factor keeps the gradient's scale independent of T
    scaled = [float(_soft_gradient(student, teacher, t, True).norm()) for t in (10.0, 20.0, 40.0)]
    assert scaled[0] == pytest.approx(scaled[2], rel=0.1)


def test_hint_adapter_maps_conv_features_to_teacher_shape():
    adapter = HintAdapter((8, 16, 16), (32, 8, 8))
    assert isinstance(adapter.regressor, torch.nn.Conv2d)
    assert adapter.regressor.kernel_size == (1, 1)
    out = adapter(torch.randn(2, 8, 16, 16))
    assert out.shape == (2, 32, 8, 8)
    assert hint_loss(out, torch.randn(2, 32, 8, 8)) > 0


def test_hint_adapter_is_linear_for_vectors():
    adapter = HintAdapter((20,), (50,))
    assert isinstance(adapter.regressor, torch.nn.Linear)
    assert adapter(torch.randn(3, 20)).shape == (3, 50)


def test_hint_loss_is_half_mse():
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.allclose(hint_loss(a, b), 0.5 * F.mse_loss(a, b))


def test_rkd_losses_ignore_scale_and_rotation_but_not_structure():
    teacher = torch.randn(10, 6)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6))
    same_structure = 3.0 * teacher @ rotation
    assert rkd_distance_loss(same_structure, teacher) < 1e-5
    assert rkd_angle_loss(same_structure, teacher) < 1e-5
    other = torch.randn(10, 6)
    assert rkd_distance_loss(other, teacher) > 1e-3
    assert rkd_angle_loss(other, teacher) > 1e-3


def test_rkd_losses_accept_different_widths():
    student = torch.randn(5, 3, requires_grad=True)
    loss = rkd_distance_loss(student, torch.randn(5, 40)) + rkd_angle_loss(
        student, torch.randn(5, 40)
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_alpha_zero_is_cross_entropy():
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    targets = {"label": labels, "teacher": torch.randn(6, 3)}
    loss = DistillationLoss(temperature=20, alpha=0.0)(logits, targets)
    assert torch.allclose(loss, F.cross_entropy(logits, labels))


def test_alpha_one_is_soft_targets_only():
    logits = torch.randn(4, 3)
    targets = {"label": torch.tensor([0, 1, -1, -1]), "teacher": torch.randn(4, 3)}
    loss = DistillationLoss(temperature=2, alpha=1.0)(logits, targets)
    assert torch.allclose(loss, kd_loss(logits, targets["teacher"], 2))


def test_unlabelled_samples_only_enter_the_soft_term():
    logits = torch.randn(4, 3)
    teacher = torch.randn(4, 3)
    labels = torch.tensor([2, 0, -1, -1])
    loss = DistillationLoss(temperature=3, alpha=0.5)(logits, {"label": labels, "teacher": teacher})
    expected = 0.5 * F.cross_entropy(logits[:2], labels[:2]) + 0.5 * kd_loss(logits, teacher, 3)
    assert torch.allclose(loss, expected)


def test_a_batch_without_labels_still_backpropagates_at_alpha_zero():
    logits = torch.randn(3, 2, requires_grad=True)
    targets = {"label": torch.tensor([-1, -1, -1]), "teacher": torch.randn(3, 2)}
    loss = DistillationLoss(alpha=0.0)(logits, targets)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert logits.grad is not None


def test_hint_and_relation_terms_are_added_with_their_weights():
    logits = torch.randn(5, 3)
    extras = {"hint": torch.randn(5, 4), "embedding": torch.randn(5, 6)}
    targets = {
        "label": torch.tensor([0, 1, 2, 0, 1]),
        "teacher": torch.randn(5, 3),
        "hint": torch.randn(5, 4),
        "embedding": torch.randn(5, 8),
    }
    base = DistillationLoss(alpha=0.5)((logits, extras), targets)
    full = DistillationLoss(alpha=0.5, hint_weight=2.0, relation_weight=3.0)
    loss = full((logits, extras), targets)
    relation = rkd_distance_loss(extras["embedding"], targets["embedding"]) + 2 * rkd_angle_loss(
        extras["embedding"], targets["embedding"]
    )
    expected = base + 2.0 * hint_loss(extras["hint"], targets["hint"]) + 3.0 * relation
    assert torch.allclose(loss, expected)
    assert set(full.terms) == {"ce", "kd", "hint", "rkd_distance", "rkd_angle"}
