"""The skorch net every training estimator owns: streamed batches, mixed precision, hooks.

:class:`TrainingNet` is skorch's ``NeuralNetClassifier`` with the estimator's choices given to
it explicitly (the optimizer's parameter groups, the submodules kept in eval mode), batches
streamed by :class:`~sktransfer.training.data.BatchLoader`, and autocast on CUDA.
:func:`frozen_submodules` and :func:`count_trainable` are the module helpers the estimators
share.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochTimer, PassthroughScoring
from skorch.exceptions import DeviceWarning as SkorchDeviceWarning
from skorch.utils import to_tensor
from torch import nn

from ..devices import available_or_cpu
from ..progress import PlainPrintLog
from .callbacks import ValidAccuracy
from .data import BatchLoader, ImageDataset

__all__ = ["OPTIMIZERS", "TrainingNet", "count_trainable", "frozen_submodules", "softmax"]

#: The optimizers named by ``optimizer=``, with the defaults each gets.
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"momentum": 0.9}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
}


def frozen_submodules(module: nn.Module) -> list[nn.Module]:
    """The outermost submodules that hold parameters, none of them trainable."""
    frozen, covered = [], []
    for name, sub in module.named_modules():
        if any(name.startswith(prefix) for prefix in covered):
            continue
        params = list(sub.parameters())
        if params and not any(p.requires_grad for p in params):
            frozen.append(sub)
            covered.append(name + "." if name else "")
    return frozen


def count_trainable(module: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts, each shared tensor counted once."""
    seen, trainable, total = set(), 0, 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=1)

    """Class probabilities of logits (in float32 whatever the autocast precision)."""


class TrainingNet(NeuralNetClassifier):
    """skorch's classifier with streamed batches, mixed precision and the estimator's choices.

    Parameters (besides skorch's)
    -----------------------------
    param_groups : callable or None
        ``param_groups(module) -> list of dict``: the optimizer's parameter groups (torch's
        format; a group without ``"lr"`` gets ``lr``), read through skorch's
        ``get_params_for_optimizer`` each time the optimizer is (re)created. None: skorch's
        default (every parameter).
    frozen_modules : callable or None
        ``frozen_modules(module) -> list of nn.Module``: submodules kept in eval mode while
        training. None: none.
    amp_dtype : torch.dtype or None
        Autocast precision on CUDA (float16 adds gradient scaling); None: no autocast.
    channels_last : bool
        Whether 4-D batches are converted to channels_last memory format.
    n_workers : int
        Threads decoding image files (:class:`~sktransfer.training.data.BatchLoader`).
    """

    def __init__(
        self,
        *args,
        param_groups: Callable | None = None,
        frozen_modules: Callable | None = None,
        amp_dtype=None,
        channels_last=False,
        n_workers=1,
        **kwargs,
    ):
        self.param_groups = param_groups
        self.frozen_modules = frozen_modules
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.n_workers = n_workers
        super().__init__(*args, **kwargs)

    @property
    def _default_callbacks(self):
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_acc", ValidAccuracy()),
            ("print_log", PlainPrintLog()),
        ]

    def initialize(self):
        super().initialize()
        self.grad_scaler_ = (
            torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        )
        return self

    def get_params_for_optimizer(self, prefix, named_parameters):
        args, kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        if self.param_groups is None:
            return args, kwargs
        groups = self.param_groups(self.module_)
        groups = [{**group, "lr": group.get("lr", kwargs["lr"])} for group in groups]
        return (groups,), kwargs

    def get_dataset(self, X, y=None):
        if isinstance(X, ImageDataset):
            return X
        return super().get_dataset(X, y)

    def get_iterator(self, dataset, training=False):
        if not isinstance(dataset, ImageDataset):
            return super().get_iterator(dataset, training)
        return BatchLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=training,
            augment=training,
            n_workers=self.n_workers,
        )

    def _set_training(self, training=True):
        super()._set_training(training)
        if training and self.frozen_modules is not None:
            for sub in self.frozen_modules(self.module_):
                sub.eval()

    def infer(self, x, **fit_params):
        x = to_tensor(x, device=self.device)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is None:
            return self.module_(x, **fit_params)
        with torch.autocast(device_type=torch.device(self.device).type, dtype=self.amp_dtype):
            return self.module_(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = to_tensor(y_true, device=self.device)
        return self.criterion_(y_pred.float(), y_true)

    def train_step_single(self, batch, **fit_params):
        if self.grad_scaler_ is None:
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = batch
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        self.grad_scaler_.scale(loss).backward()
        return {"loss": loss, "y_pred": y_pred}

    def train_step(self, batch, **fit_params):
        if self.grad_scaler_ is None:
            return super().train_step(batch, **fit_params)
        self._zero_grad_optimizer()
        step = self.train_step_single(batch, **fit_params)
        for name in self._optimizers:
            self.grad_scaler_.step(getattr(self, name + "_"))
        self.grad_scaler_.update()
        return step

    def __getstate__(self):
        state = super().__getstate__()
        # module_/criterion_ travel in skorch's device-mapped blob; the constructor arguments
        # are the same objects and would otherwise be pickled a second time, unmapped.
        state["module"] = None
        state["criterion"] = None
        state["grad_scaler_"] = None  # re-created on load: its scale is a CUDA tensor
        return state

    def __setstate__(self, state):
        saved = state["device"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkorchDeviceWarning)
            super().__setstate__(state)
        device = available_or_cpu(saved)  # warns with sktransfer's DeviceWarning
        self.device = str(device)
        if device.type != "cuda":
            self.amp_dtype = None
        if self.amp_dtype == torch.float16:
            self.grad_scaler_ = torch.amp.GradScaler("cuda")
