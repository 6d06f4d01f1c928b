"""The student while it is distilled: the network that exposes what the losses compare, and the
criteria that unpack it.

:class:`DistillationNetwork` wraps the student so that one forward pass in training mode returns
its logits, the adapted hint and the embedding as one tensor (the shared base casts the output
with ``.float()``, so it must be one tensor); :class:`PackedDistillationLoss` unpacks it for
:class:`~sktransfer.distillation.losses.DistillationLoss`; :class:`FitNetsStages` and
:class:`EndHintStage` run FitNets' two stages in one skorch run.
"""

from __future__ import annotations

import torch
from skorch.callbacks import Callback
from torch import nn

from ..backbones import last_linear
from .losses import DistillationLoss

__all__ = [
    "DistillationNetwork",
    "EndHintStage",
    "FitNetsStages",
    "PackedDistillationLoss",
    "probe_student",
]


class DistillationNetwork(nn.Module):
    """The student during training: its logits, plus what the hint and relation losses compare.

    In training mode with a hint layer or relation losses, ``forward`` returns one tensor,
    ``[logits | adapted hint | embedding]`` flattened per sample and concatenated: the shared
    base casts the module's output with ``.float()``, so it must be a single tensor (a
    ``(logits, extras)`` tuple would not pass). :class:`PackedDistillationLoss` unpacks it. In
    eval mode (validation, prediction) it returns the logits alone. The layers are read with
    forward hooks that live for one forward pass, so the student stays a plain module.
    """

    def __init__(self, student: nn.Module, adapter=None, hint_layer=None, embedding=False):
        super().__init__()
        self.student = student
        self.adapter = adapter
        self.hint_layer = hint_layer
        self.embedding = embedding

    def forward(self, x):
        if not self.training or (self.hint_layer is None and not self.embedding):
            return self.student(x)
        captured, handles = {}, []
        if self.hint_layer is not None:
            layer = _named_module(self.student, self.hint_layer)
            handles.append(layer.register_forward_hook(lambda m, i, o: captured.update(hint=o)))
        if self.embedding:
            head = _output_layer(self.student)
            handles.append(
                head.register_forward_pre_hook(lambda m, args: captured.update(embedding=args[0]))
            )
        try:
            logits = self.student(x)
        finally:
            for handle in handles:
                handle.remove()
        parts = [logits]
        if self.hint_layer is not None:
            parts.append(self.adapter(captured["hint"]).flatten(1))
        if self.embedding:
            parts.append(captured["embedding"].flatten(1))
        return torch.cat([p.to(logits.dtype) for p in parts], dim=1)


class PackedDistillationLoss(nn.Module):
    """Unpacks :class:`DistillationNetwork`'s training output for
    :class:`~sktransfer.distillation.DistillationLoss`; plain logits pass through."""

    def __init__(self, loss: DistillationLoss, n_classes: int, hint_width: int = 0):
        super().__init__()
        self.loss = loss
        self.n_classes = n_classes
        self.hint_width = hint_width

    def forward(self, outputs, targets):
        if outputs.shape[1] == self.n_classes:
            return self.loss(outputs, targets)
        logits = outputs[:, : self.n_classes]
        rest = outputs[:, self.n_classes :]
        extras = {}
        if self.hint_width:
            extras["hint"], rest = rest[:, : self.hint_width], rest[:, self.hint_width :]
        if rest.shape[1]:
            extras["embedding"] = rest
        targets = dict(targets)
        if "hint" in targets:
            targets["hint"] = targets["hint"].flatten(1)
        return self.loss((logits, extras), targets)


def _named_module(module: nn.Module, name: str) -> nn.Module:
    modules = dict(module.named_modules())
    if name not in modules:
        blocks = [n for n in modules if n and n.count(".") <= 1]
        raise ValueError(
            f"The student has no layer {name!r}. Student layers are module names, e.g. "
            f"{blocks[:12]}."
        )
    return modules[name]


def _output_layer(module: nn.Module) -> nn.Module:
    last = last_linear(module)
    if last is None:
        raise ValueError(
            f"Relation losses compare embeddings, the input of the student's last nn.Linear; "
            f"{type(module).__name__} has none. Pass relation_weight=0."
        )
    return last[1]


class FitNetsStages(nn.Module):
    """FitNets' two stages (Romero et al., 2015): first the hint alone (labels and soft
    targets ignored), then ``main`` without the hint; :class:`EndHintStage` switches.

    Validation (the student in eval mode, logits only) is scored with ``main`` in both
    stages, so the validation loss always measures the student's outputs.
    """

    def __init__(self, hint: PackedDistillationLoss, main: PackedDistillationLoss):
        super().__init__()
        self.hint = hint
        self.main = main
        self.first_stage = True

    def forward(self, outputs, targets):
        if self.first_stage and outputs.shape[1] != self.main.n_classes:
            unlabelled = dict(targets, label=torch.full_like(targets["label"], -1))
            return self.hint(outputs, unlabelled)
        return self.main(outputs, targets)


class EndHintStage(Callback):
    """Ends FitNets' first stage after ``epochs`` epochs: the student stops exposing its hint
    layer and the criterion moves to the main loss."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_begin(self, net, **kwargs):
        stages = net.criterion_
        if stages.first_stage and len(net.history) > self.epochs:
            stages.first_stage = False
            net.module_.hint_layer = None


def probe_student(module: nn.Module, example: torch.Tensor, hint_layer):
    """Run two samples through the student in eval mode: initialises lazy layers (seeded by
    the caller) and returns the hint layer's output shape for one sample."""
    captured, handle = {}, None
    if hint_layer is not None:
        layer = _named_module(module, hint_layer)
        handle = layer.register_forward_hook(lambda m, i, o: captured.update(hint=o))
    module.eval()
    try:
        with torch.no_grad():
            module(example)
    finally:
        module.train()
        if handle is not None:
            handle.remove()
    return tuple(captured["hint"].shape[1:]) if hint_layer is not None else None
