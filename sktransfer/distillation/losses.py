"""Distillation losses: responses (Hinton), features (FitNets hints), relations (RKD).

The three kinds of knowledge a student can take from a teacher (Gou et al., 2021):

* **Responses**: soft targets at temperature T (Hinton, Vinyals & Dean, 2015). The soft term
  is ``T**2 * KL(softmax(t / T) || softmax(s / T))``; its gradient with respect to the
  student's logits is ``T * (q - p)``, which for large T approaches ``(s - t) / N`` (zero-mean
  logits, N classes). The ``T**2`` factor keeps the soft term's gradients at the same scale
  as the hard term's whatever the temperature, so ``alpha`` can be tuned independently of T.
* **Features**: a student layer regresses a teacher layer through a learned adapter, a 1x1
  convolution for maps or a linear layer for vectors (Romero et al., 2015, FitNets).
* **Relations**: the distances and angles between the embeddings of a batch's samples
  (Park et al., 2019, Relational Knowledge Distillation), which need no adapter.

:class:`DistillationLoss` combines them; it is the criterion the student is trained with.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DistillationLoss",
    "HintAdapter",
    "hint_loss",
    "kd_loss",
    "probabilities_to_logits",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "soft_targets",
]

#: Probabilities are clipped here before the logarithm: a teacher's hard 0 would otherwise be
#: an infinite logit. The smallest normal float32 (log = -87.3) keeps every logit gap a
#: float32 softmax can express: a floor like 1e-7 would flatten all the small probabilities
#: whose ratios are the "dark knowledge" that high temperatures reveal (measured on MNIST:
#: the student distilled at T=20 through a 1e-7 floor was worse than the student alone).
PROBABILITY_FLOOR = float(np.finfo(np.float32).tiny)


def probabilities_to_logits(proba, floor: float = PROBABILITY_FLOOR) -> np.ndarray:
    """Logits that reproduce ``proba`` under a softmax: ``log(clip(p, floor))``.

    For a teacher that only gives probabilities, ``softmax(log p / T)`` are its soft targets
    at temperature T; for a teacher whose probabilities are a softmax of logits (logistic
    regression, a network) this equals ``softmax(z / T)`` exactly, since ``log p`` is ``z``
    minus a per-sample constant.
    """
    proba = np.asarray(proba, dtype=np.float64)
    return np.log(np.clip(proba, floor, None)).astype(np.float32)


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(logits / T)``: the teacher's distribution softened by temperature T."""
    return torch.softmax(logits / temperature, dim=-1)


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton's soft-target term, ``T**2 * KL(teacher_T || student_T)``, averaged over samples.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor of shape (n_samples, n_classes)
    temperature : float
        T >= 1 softens both distributions.

    Returns
    -------
    Tensor
        A scalar. Zero when the student's logits equal the teacher's up to a per-sample
        constant.
    """
    log_student = torch.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = torch.log_softmax(teacher_logits.to(log_student.dtype) / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


class HintAdapter(nn.Module):
    """Maps a student layer's output onto a teacher layer's shape (the FitNets regressor).

    A 1x1 convolution when both are maps (N, C, H, W), followed by adaptive average pooling
    when the spatial sizes differ; a linear layer on the flattened output otherwise.

    Parameters
    ----------
    student_shape, teacher_shape : tuple of int
        One sample's shape, e.g. ``(32, 14, 14)`` or ``(800,)``.
    """

    def __init__(self, student_shape, teacher_shape):
        super().__init__()
        self.student_shape = tuple(student_shape)
        self.teacher_shape = tuple(teacher_shape)
        self.maps = len(self.student_shape) == 3 and len(self.teacher_shape) == 3
        if self.maps:
            self.regressor = nn.Conv2d(self.student_shape[0], self.teacher_shape[0], 1)
        else:
            self.regressor = nn.Linear(
                int(np.prod(self.student_shape)), int(np.prod(self.teacher_shape))
            )

    def forward(self, student_features: torch.Tensor) -> torch.Tensor:
        if not self.maps:
            return self.regressor(student_features.flatten(1))
        out = self.regressor(student_features)
        if tuple(out.shape[2:]) != self.teacher_shape[1:]:
            out = F.adaptive_avg_pool2d(out, self.teacher_shape[1:])
        return out


def hint_loss(adapted: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """FitNets' hint term: half the mean squared error between adapted student and teacher."""
    return 0.5 * F.mse_loss(adapted, teacher_features.reshape(adapted.shape).to(adapted.dtype))


def _pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    squared = embeddings.pow(2).sum(1)
    gram = embeddings @ embeddings.t()
    distances = (squared[:, None] + squared[None, :] - 2 * gram).clamp_min(1e-12).sqrt()
    distances = distances.clone()
    distances.fill_diagonal_(0)
    return distances


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD distance term: Huber loss between the batch's mean-normalised pairwise distances.

    Dividing by the mean distance makes the term independent of each embedding's scale, so
    student and teacher embeddings may differ in width and magnitude (Park et al., 2019).
    """
    student, teacher = student.flatten(1), teacher.flatten(1).to(student.dtype)
    with torch.no_grad():
        t = _pairwise_distances(teacher)
        t = t / t[t > 0].mean().clamp_min(1e-12)
    s = _pairwise_distances(student)
    s = s / s[s > 0].mean().clamp_min(1e-12)
    return F.smooth_l1_loss(s, t)


def _angles(embeddings: torch.Tensor) -> torch.Tensor:
    differences = embeddings[None, :, :] - embeddings[:, None, :]  # e_j - e_i, for each (i, j)
    unit = F.normalize(differences, p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2)).flatten()  # cos of angle j-i-k, every triple


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD angle term: Huber loss between the cosines of the angles of every triple."""
    student, teacher = student.flatten(1), teacher.flatten(1).to(student.dtype)
    with torch.no_grad():
        t = _angles(teacher)
    return F.smooth_l1_loss(_angles(student), t)


class DistillationLoss(nn.Module):
    """The student's training criterion: labels, soft targets, hints and relations.

    ``(1 - alpha) * CE(y, s) + alpha * T**2 * KL(t_T || s_T)
    + hint_weight * hint + relation_weight * (distance + 2 * angle)``.

    The cross-entropy is averaged over the batch's labelled samples only (label -1 marks a
    sample of the unlabelled transfer set, which only the teacher labels); the other terms
    over every sample. The 1:2 ratio of distance and angle terms is Park et al.'s (25 and 50).

    Parameters
    ----------
    temperature : float
    alpha : float in [0, 1]
        Weight of the soft-target term. ``alpha=0`` is plain training on the labels.
    hint_weight : float, default=0
        Weight of the FitNets hint term (needs ``outputs["hint"]`` and ``targets["hint"]``).
    relation_weight : float, default=0
        Weight of the RKD terms (needs ``outputs["embedding"]`` and ``targets["embedding"]``).

    The forward pass takes ``outputs``, the student's logits or a ``(logits, extras)`` tuple
    whose dict ``extras`` holds the adapted hint and the embedding, and ``targets``, a dict
    with ``"label"`` (int64, -1 for unlabelled), ``"teacher"`` (the teacher's logits) and, as
    needed, ``"hint"`` and ``"embedding"``; the hint and relation terms are left out when
    ``extras`` lacks them (a student in eval mode). It stores the last batch's terms in
    ``terms``.
    """

    def __init__(self, temperature=4.0, alpha=0.9, hint_weight=0.0, relation_weight=0.0):
        super().__init__()
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.hint_weight = float(hint_weight)
        self.relation_weight = float(relation_weight)
        self.terms: dict[str, float] = {}

    def forward(self, outputs, targets: dict) -> torch.Tensor:
        logits, extras = outputs if isinstance(outputs, tuple) else (outputs, {})
        labels = targets["label"].long()
        labelled = labels >= 0
        total = logits.sum() * 0  # keeps a graph when a batch has nothing to learn from
        terms = {}
        if self.alpha < 1 and bool(labelled.any()):
            ce = F.cross_entropy(logits[labelled], labels[labelled])
            total = total + (1 - self.alpha) * ce
            terms["ce"] = ce
        if self.alpha > 0:
            kd = kd_loss(logits, targets["teacher"], self.temperature)
            total = total + self.alpha * kd
            terms["kd"] = kd
        if self.hint_weight > 0 and "hint" in extras:  # absent in eval mode (validation)
            hint = hint_loss(extras["hint"], targets["hint"])
            total = total + self.hint_weight * hint
            terms["hint"] = hint
        if self.relation_weight > 0 and "embedding" in extras and logits.shape[0] > 2:
            distance = rkd_distance_loss(extras["embedding"], targets["embedding"])
            angle = rkd_angle_loss(extras["embedding"], targets["embedding"])
            total = total + self.relation_weight * (distance + 2 * angle)
            terms["rkd_distance"], terms["rkd_angle"] = distance, angle
        self.terms = {name: float(value.detach()) for name, value in terms.items()}
        return total
