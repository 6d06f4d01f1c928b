"""BiT-HyperRule: fine-tuning settings chosen from the data (Kolesnikov et al. 2020, "Big
Transfer (BiT): General Visual Representation Learning", section 3.3).

The seeds (lecture 002): "per-task hyper-parameter tuning is essential: training schedule
length, resolution, whether to use MixUp regularization". BiT replaces that tuning by a rule:

=====================  ===================================================================
schedule length        500 steps below 20 k examples, 10 k below 500 k, 20 k otherwise
resolution             images smaller than 96 x 96 px: resize to 160, random crop 128;
                       otherwise resize to 448, random crop 384 (and flip)
MixUp                  alpha = 0.1 from 20 k examples on; none below
optimiser              SGD, momentum 0.9, lr 0.003, no weight decay, batch 512
learning-rate schedule linear warm-up, then divided by 10 at 30 %, 60 % and 90 % of the steps
=====================  ===================================================================

The warm-up lasts 100 steps of 500 and 500 steps of the longer schedules (BiT's released
code). :func:`bit_hyperrule` is the rule as a pure function; ``scale`` shrinks it for a CPU:
steps x ``scale``, batch x ``scale`` and pixels x ``scale`` (image side x sqrt(scale),
rounded to a multiple of 8), so compute is about ``scale**3`` of the paper's; the regime
(schedule, MixUp, resolution class) is chosen from the unscaled data, and the learning rate
stays 0.003. :func:`apply_hyperrule` configures a fitted-to-be
:class:`~sktransfer.FineTuneClassifier` (its ``hyperrule`` parameter).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from numbers import Real

import numpy as np
import torch
from PIL import Image
from skorch.callbacks import Callback, LRScheduler
from torchvision.transforms import v2

from ._compat import ImageClassification
from .backbones import image_preset
from .images import ImageInputs
from .mixup import MixUp

__all__ = ["bit_hyperrule", "apply_hyperrule", "BitSchedule", "median_image_size"]

#: BiT's fine-tuning optimiser and batch (section 3.3).
LR, MOMENTUM, BATCH_SIZE = 0.003, 0.9, 512
#: MixUp's alpha, used from MIXUP_FROM training examples on.
MIXUP_ALPHA, MIXUP_FROM = 0.1, 20_000
#: Images with fewer pixels than this are "small" (BiT: below 96 x 96).
SMALL_AREA = 96 * 96
#: (fewer examples than, steps, warm-up steps), first match wins.
REGIMES = ((20_000, 500, 100), (500_000, 10_000, 500), (math.inf, 20_000, 500))
#: (resize, crop) for small and for larger images.
RESOLUTIONS = {True: (160, 128), False: (448, 384)}
#: The learning rate is divided by 10 at these fractions of the steps.
DECAYS = (0.3, 0.6, 0.9)
#: Floors of the scaled rule: enough steps for warm-up and three decays, a batch, and the
#: smallest input a 5-times-downsampling network (MobileNetV2, ResNet) takes.
MIN_STEPS, MIN_BATCH, MIN_CROP = 10, 8, 32


def bit_hyperrule(n_samples: int, image_size, *, scale: float = 1.0) -> dict:
    """BiT-HyperRule's settings for a training set, optionally scaled down for a CPU.

    Parameters
    ----------
    n_samples : int
        Training examples (the regime is chosen from this, never scaled).
    image_size : int or (int, int)
        The images' side, or (height, width), before any resizing.
    scale : float in (0, 1], default=1.0
        1.0: the paper's rule. Smaller: steps x scale (at least 10), batch x scale (at least
        8), resize and crop sides x sqrt(scale) rounded to a multiple of 8 (crop at least
        32); warm-up and decays keep their fractions of the steps.

    Returns
    -------
    dict
        ``steps``, ``warmup_steps``, ``milestones`` (the steps at which the rate is divided
        by 10), ``lr``, ``momentum``, ``weight_decay``, ``batch_size``, ``resize``, ``crop``,
        ``mixup_alpha`` (0.0: no MixUp), ``scale``, and the unscaled ``regime``:
        ``n_samples``, ``small_images``, ``paper_steps``, ``paper_warmup_steps``.

    Examples
    --------
    >>> from sktransfer.hyperrule import bit_hyperrule
    >>> rule = bit_hyperrule(50_000, 32)  # CIFAR-10
    >>> rule["steps"], rule["milestones"], (rule["resize"], rule["crop"]), rule["mixup_alpha"]
    (10000, (3000, 6000, 9000), (160, 128), 0.1)
    >>> small = bit_hyperrule(546, 28, scale=0.25)  # BreastMNIST on a CPU
    >>> small["steps"], small["batch_size"], (small["resize"], small["crop"])
    (125, 128, (80, 64))
    """
    height, width = _check_rule_args(n_samples, image_size, scale)
    limit, paper_steps, paper_warmup = next(r for r in REGIMES if n_samples < r[0])
    small = height * width < SMALL_AREA
    resize, crop = RESOLUTIONS[small]
    steps = max(MIN_STEPS, round(paper_steps * scale))
    crop = max(MIN_CROP, _multiple_of_8(crop * math.sqrt(scale)))
    return {
        **schedule_steps(steps, paper_warmup / paper_steps),
        "lr": LR,
        "momentum": MOMENTUM,
        "weight_decay": 0.0,
        "batch_size": max(MIN_BATCH, round(BATCH_SIZE * scale)),
        "resize": max(crop, _multiple_of_8(resize * math.sqrt(scale))),
        "crop": crop,
        "mixup_alpha": MIXUP_ALPHA if n_samples >= MIXUP_FROM else 0.0,
        "scale": float(scale),
        "regime": {
            "n_samples": int(n_samples),
            "small_images": bool(small),
            "paper_steps": paper_steps,
            "paper_warmup_steps": paper_warmup,
        },
    }


def schedule_steps(steps: int, warmup_fraction: float) -> dict:
    """``steps``, ``warmup_steps`` and ``milestones`` (at 30/60/90 % of ``steps``)."""
    return {
        "steps": int(steps),
        "warmup_steps": max(1, round(warmup_fraction * steps)),
        "milestones": tuple(round(f * steps) for f in DECAYS),
    }


class BitSchedule:
    """The learning-rate factor of step ``t`` (0-based), for ``torch.optim.lr_scheduler.LambdaLR``.

    ``ratio * (t + 1) / warmup_steps`` during warm-up (the first step already trains), then
    ``ratio * 0.1**k`` after ``k`` milestones. ``ratio`` rescales the optimizer's groups, built
    at the estimator's ``lr``, to the rule's (their ratios, e.g. ``backbone_lr_scale``, kept).
    """

    def __init__(self, warmup_steps: int, milestones, ratio: float = 1.0):
        self.warmup_steps = warmup_steps
        self.milestones = tuple(milestones)
        self.ratio = ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.ratio * (step + 1) / self.warmup_steps
        return self.ratio * 0.1 ** sum(step >= m for m in self.milestones)


def median_image_size(inputs: ImageInputs, *, sample: int = 256) -> tuple[int, int]:
    """(height, width) of the median-area image among up to ``sample`` evenly spaced ones
    (files: read from their headers only)."""
    if inputs.kind == "array":
        return tuple(int(s) for s in inputs[0].shape[-2:])
    n = len(inputs)
    picks = np.unique(np.linspace(0, n - 1, min(sample, n)).astype(int))
    sizes = sorted((_image_size(inputs, i) for i in picks), key=lambda hw: hw[0] * hw[1])
    return sizes[len(sizes) // 2]


def apply_hyperrule(estimator, inputs: ImageInputs) -> dict:
    """Configure a FineTuneClassifier after ``_prepare_fit`` for BiT-HyperRule.

    Sets the preprocessing (evaluation at the rule's crop; training images resized, randomly
    cropped and flipped), the skorch net's batch size, optimizer (SGD, momentum 0.9, no
    weight decay) and callbacks (per-batch learning-rate schedule, the random crop, MixUp when
    the rule uses it). Returns what was chosen (the estimator's ``hyperrule_``), including
    ``epochs``: the rule's steps rounded up to whole epochs (warm-up and decays placed at
    their fractions of the steps actually run).
    """
    _check_estimator(estimator, inputs)
    scale = 1.0 if estimator.hyperrule is True else float(estimator.hyperrule)
    image_size = median_image_size(inputs)
    rule = bit_hyperrule(len(inputs), image_size, scale=scale)
    per_epoch = math.ceil(_n_training(estimator, len(inputs)) / rule["batch_size"])
    epochs = math.ceil(rule["steps"] / per_epoch)
    regime = rule["regime"]
    warmup_fraction = regime["paper_warmup_steps"] / regime["paper_steps"]
    rule.update(schedule_steps(epochs * per_epoch, warmup_fraction), epochs=epochs)
    rule["image_size"] = tuple(int(s) for s in image_size)
    estimator.preprocessing_ = _rule_preprocessing(estimator.preprocessing_, rule)
    _configure_net(estimator.net_, rule, ratio=rule["lr"] / estimator.lr)
    return rule


# --------------------------------------------------------------------------- internals


class RandomCropFlip(Callback):
    """Gives the training set BiT's augmentation when training begins: a random ``crop``
    square of the image resized to the preprocessing's ``resize_size``, flipped half the time.

    The training base builds the dataset from the estimator's ``augmentation`` parameter,
    which the rule must not overwrite (parameters stay as the user set them); the dataset
    skorch trains on is the one ``on_train_begin`` receives, and only it is changed (the
    validation split is not augmented).
    """

    def __init__(self, crop: int):
        self.crop = crop

    def on_train_begin(self, net, X=None, **kwargs):
        X.augmentation = v2.Compose([v2.RandomCrop(self.crop), v2.RandomHorizontalFlip()])


def _configure_net(net, rule: dict, ratio: float) -> None:
    # plain attributes: skorch's set_params cannot swap the optimizer class of an
    # initialized net; the training base re-creates the optimizer before training
    net.batch_size = rule["batch_size"]
    net.optimizer = torch.optim.SGD
    net.optimizer__momentum = rule["momentum"]
    net.optimizer__weight_decay = rule["weight_decay"]
    schedule = BitSchedule(rule["warmup_steps"], rule["milestones"], ratio)
    callbacks = [
        ("hyperrule_augmentation", RandomCropFlip(rule["crop"])),
        (
            "hyperrule_lr",
            LRScheduler(torch.optim.lr_scheduler.LambdaLR, lr_lambda=schedule, step_every="batch"),
        ),
    ]
    if rule["mixup_alpha"] > 0:
        callbacks.append(("hyperrule_mixup", MixUp(alpha=rule["mixup_alpha"])))
    net.callbacks = [*(net.callbacks or []), *callbacks]
    net.initialize_callbacks()


def _rule_preprocessing(preprocessing, rule: dict):
    preset = image_preset(preprocessing.transform)
    preset.crop_size, preset.resize_size = [rule["crop"]], [rule["crop"]]
    return replace(
        preprocessing, transform=preset, resize_size=rule["resize"], crop_size=rule["crop"]
    )


def _n_training(estimator, n_samples: int) -> int:
    """Samples in the training split (early stopping holds out a validation fraction)."""
    if not estimator.early_stopping:
        return n_samples
    return n_samples - math.ceil(estimator.validation_fraction * n_samples)


def _check_estimator(estimator, inputs: ImageInputs) -> None:
    if inputs.kind == "vectors" or not isinstance(
        estimator.preprocessing_.transform, ImageClassification
    ):
        raise ValueError(
            "hyperrule sets the input resolution and random crops, which needs images and a "
            "backbone with a torchvision preprocessing preset (a named torchvision model); "
            f"got {inputs.kind} input and preprocessing "
            f"{type(estimator.preprocessing_.transform).__name__}. Pass hyperrule=False."
        )
    for name in ("image_size", "augmentation"):
        if getattr(estimator, name) is not None:
            raise ValueError(
                f"hyperrule chooses the resolution and the augmentation itself, but "
                f"{name}={getattr(estimator, name)!r} was also given. Pass {name}=None, or "
                "hyperrule=False to keep your own."
            )


def _check_rule_args(n_samples, image_size, scale) -> tuple[int, int]:
    """Checks the rule's arguments; returns (height, width)."""
    if not (isinstance(scale, Real) and 0 < scale <= 1):
        raise ValueError(f"scale must be a number in (0, 1] (1: the paper's rule); got {scale!r}.")
    if not (_is_int(n_samples) and n_samples >= 1):
        raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
    sides = [image_size] * 2 if np.isscalar(image_size) else list(image_size)
    if len(sides) != 2 or not all(_is_int(s) and s > 0 for s in sides):
        raise ValueError(
            f"image_size must be a positive side or a (height, width) pair; got {image_size!r}."
        )
    return int(sides[0]), int(sides[1])


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _multiple_of_8(value: float) -> int:
    return 8 * max(1, round(value / 8))


def _image_size(inputs: ImageInputs, index: int) -> tuple[int, int]:
    item = inputs.items[index]
    if isinstance(item, str | os.PathLike):
        with Image.open(item) as image:  # reads the header only
            return image.height, image.width
    return tuple(int(s) for s in inputs[index].shape[-2:])  # PIL images, per-image arrays
