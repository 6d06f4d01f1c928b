"""Students: the small networks a teacher is distilled into, and what they cost.

A student is named (``"mlp-800-800"``: an MLP with those hidden widths; ``"cnn-small"`` or
``"cnn-16-32-64"``: a small CNN with those channel widths), any torchvision classification
model name (trained from scratch), or a ``torch.nn.Module``. :func:`build_student` turns the
name into a :class:`Student`: the module with ``n_classes`` outputs and the preprocessing of
its input images. :func:`multiply_adds` and :func:`count_parameters` measure its cost.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import get_model, get_model_weights, list_models

from ..devices import seeded
from ..training.net import count_trainable

__all__ = [
    "MLP",
    "SmallCNN",
    "Student",
    "StudentTransform",
    "build_student",
    "count_parameters",
    "multiply_adds",
    "reset_parameters",
    "NAMED_STUDENTS",
]

#: Named small students and the architecture each name stands for.
NAMED_STUDENTS = {
    "cnn-tiny": ("cnn", (8, 16, 32)),
    "cnn-small": ("cnn", (16, 32, 64, 128)),
    "cnn-medium": ("cnn", (32, 64, 128, 256)),
    "mlp-small": ("mlp", (256, 256)),
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_PATTERN = re.compile(r"^(mlp|cnn)((?:-\d+)+)$")


class MLP(nn.Sequential):
    """A multilayer perceptron on flattened inputs: Linear-ReLU(-Dropout) blocks, then a head.

    Parameters
    ----------
    widths : sequence of int
        Hidden layer widths, e.g. ``(1200, 1200)``.
    n_classes : int
    dropout : float, default=0
        Dropout after each hidden layer (Hinton et al.'s MNIST teacher used 0.5).
    input_dropout : float, default=0
        Dropout on the input (0.2 in that teacher).
    in_features : int or None
        Input width; None infers it from the first batch (``nn.LazyLinear``).

    The hidden layers are ``hidden.0``, ``hidden.1``...; the head is ``head``.

    Examples
    --------
    >>> import torch
    >>> from sktransfer.distillation.students import MLP
    >>> MLP((32, 16), 3, in_features=8)(torch.zeros(2, 8)).shape
    torch.Size([2, 3])
    """

    def __init__(self, widths, n_classes, *, dropout=0.0, input_dropout=0.0, in_features=None):
        hidden = []
        previous = in_features
        for width in widths:
            linear = nn.Linear(previous, width) if previous else nn.LazyLinear(width)
            block = [linear, nn.ReLU(inplace=True)]
            if dropout:
                block.append(nn.Dropout(dropout))
            hidden.append(nn.Sequential(*block))
            previous = width
        head = nn.Linear(previous, n_classes) if previous else nn.LazyLinear(n_classes)
        layers = [nn.Flatten()]
        if input_dropout:
            layers.append(nn.Dropout(input_dropout))
        super().__init__()
        for index, layer in enumerate(layers):
            self.add_module("flatten" if index == 0 else "input_dropout", layer)
        self.hidden = nn.Sequential(*hidden)
        self.head = head


class SmallCNN(nn.Module):
    """A small plain CNN: per width, conv 3x3 - batch norm - ReLU - max-pool 2x2; then global
    average pooling and a linear head.

    Blocks are ``features.0``, ``features.1``...; the head is ``head``.

    Examples
    --------
    >>> import torch
    >>> from sktransfer.distillation.students import SmallCNN
    >>> SmallCNN((8, 16), 4)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 4])
    """

    def __init__(self, widths, n_classes, *, in_channels=3):
        super().__init__()
        blocks, previous = [], in_channels
        for width in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(previous, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2, ceil_mode=True),
                )
            )
            previous = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(previous, n_classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


class StudentTransform:
    """Preprocessing of a batch (or one image) for a student: to float in [0, 1], optionally
    resized (shorter side) and centre-cropped to ``size``, then normalised."""

    def __init__(self, size=None, mean=_IMAGENET_MEAN, std=_IMAGENET_STD):
        self.size = size
        self.mean = mean
        self.std = std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        else:
            images = images.float()
        if self.size is not None:
            images = torchvision.transforms.functional.resize(images, self.size, antialias=True)
            images = torchvision.transforms.functional.center_crop(images, self.size)
        if self.mean is not None:
            images = torchvision.transforms.functional.normalize(images, self.mean, self.std)
        return images

    def __repr__(self):
        return f"StudentTransform(size={self.size}, mean={self.mean}, std={self.std})"


@dataclass
class Student:
    """A student network and the preprocessing of its input images.

    Attributes
    ----------
    module : torch.nn.Module
    transform : callable or None
        Applied to image batches (not to feature vectors).
    name : str
    takes_vectors : bool
        Whether 2-D feature vectors are valid input (MLPs and user modules).
    """

    module: nn.Module
    transform: object
    name: str
    takes_vectors: bool


def build_student(spec, n_classes: int, *, image_size=None, random_state=None) -> Student:
    """Build an untrained student with ``n_classes`` outputs.

    Parameters
    ----------
    spec : str or torch.nn.Module
        ``"mlp-<width>-<width>..."`` (e.g. ``"mlp-800-800"``), ``"cnn-<width>-..."`` (e.g.
        ``"cnn-16-32-64"``), one of :data:`NAMED_STUDENTS` (``"cnn-small"``...), a torchvision
        classification model name (random initialisation, ``num_classes=n_classes``), or a
        module (deep-copied; it must already output ``n_classes`` logits).
    n_classes : int
    image_size : int or None
        Images are resized (shorter side) and centre-cropped to this size. None: a named
        student takes images at their own size; a torchvision model its preset (224).
    random_state : int or None
        Seeds the initialisation.

    Returns
    -------
    Student

    Examples
    --------
    >>> from sktransfer.distillation.students import build_student
    >>> student = build_student("mlp-64-32", 10, random_state=0)
    >>> student.name, student.takes_vectors
    ('mlp-64-32', True)
    """
    if isinstance(spec, nn.Module):
        transform = StudentTransform(image_size, mean=None)
        return Student(copy.deepcopy(spec), transform, type(spec).__name__, True)
    if not isinstance(spec, str):
        raise TypeError(
            f"student must be a name such as 'mlp-800-800' or 'cnn-small', a torchvision model "
            f"name or a torch.nn.Module; got {type(spec).__name__}."
        )
    kind, widths = _parse(spec)
    with seeded(random_state):
        if kind == "mlp":
            return Student(MLP(widths, n_classes), StudentTransform(image_size), spec, True)
        if kind == "cnn":
            return Student(SmallCNN(widths, n_classes), StudentTransform(image_size), spec, False)
        module = get_model(spec, weights=None, num_classes=n_classes)
    if image_size is None:
        transform = get_model_weights(spec).DEFAULT.transforms()
    else:
        transform = StudentTransform(image_size)
    return Student(module, transform, spec, False)


def _parse(spec: str):
    if spec in NAMED_STUDENTS:
        return NAMED_STUDENTS[spec]
    match = _PATTERN.match(spec)
    if match:
        widths = tuple(int(w) for w in match.group(2).strip("-").split("-"))
        if min(widths) < 1:
            raise ValueError(f"Student {spec!r} has a layer of width 0; widths must be >= 1.")
        return match.group(1), widths
    models = list_models(module=torchvision.models)
    if spec in models:
        return "torchvision", None
    valid = sorted(NAMED_STUDENTS)
    close = difflib.get_close_matches(spec, valid + models, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(
        f"Unknown student {spec!r}.{hint} Use 'mlp-<width>-...' (e.g. 'mlp-800-800'), "
        f"'cnn-<width>-...' (e.g. 'cnn-16-32-64'), one of {valid}, a torchvision model name, "
        "or a torch.nn.Module."
    )


def reset_parameters(module: nn.Module, random_state=None) -> nn.Module:
    """Re-initialise every submodule that can (``reset_parameters``), in place; returns it.

    Born-again networks start a new generation from the teacher's architecture with fresh
    weights.
    """
    with seeded(random_state):
        for submodule in module.modules():
            reset = getattr(submodule, "reset_parameters", None)
            if callable(reset):
                reset()
    return module


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not), each shared tensor once."""
    return count_trainable(module)[1]


def multiply_adds(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-adds of one forward pass over ``example`` (a batch of one), counted by torch's
    ``FlopCounterMode`` (convolutions, matrix products) and halved: one multiply-add is two
    floating-point operations."""
    training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(example)
    finally:
        module.train(training)
    return int(counter.get_total_flops() // 2 // max(1, len(example)))
