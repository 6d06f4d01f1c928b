"""Magnitude pruning with rewinding: the mechanics of lottery tickets (Frankle & Carbin, 2019).

Everything here acts on a plain ``torch.nn.Module`` and is built on ``torch.nn.utils.prune``:
a pruned layer keeps its trainable values in ``weight_orig``, a 0/1 ``weight_mask`` buffer,
and recomputes ``weight = weight_orig * weight_mask`` before every forward pass. The gradient
of a masked entry is therefore exactly zero, and :func:`rewind` also zeroes the masked entries
of ``weight_orig``, so no optimizer (Adam, SGD with momentum or weight decay) can move them:
pruned weights stay exactly zero and get no updates while training.

The estimator that runs the iterative loop is :class:`sktransfer.pruning.lottery.PrunedClassifier`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from ..devices import seeded

__all__ = [
    "PRUNABLE_TYPES",
    "prunable_layers",
    "attach_masks",
    "prune_by_magnitude",
    "weights_remaining",
    "snapshot",
    "rewind",
    "reinitialize",
    "make_permanent",
    "is_pruned",
    "refresh_masked_weights",
    "expected_remaining",
]

# Layers whose ``weight`` is pruned. Biases and normalisation layers are left dense, as in the
# paper (its LeNet-300-100 count of 266,200 weights excludes biases).
PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NAME = "weight"


def prunable_layers(module: nn.Module, layers=None) -> list[str]:
    """Names of the layers to prune, in registration order.

    Parameters
    ----------
    module : torch.nn.Module
    layers : list of str or None, default=None
        Submodule names (as in ``module.named_modules()``). None: every ``Linear`` and
        ``Conv*d`` layer whose weight is trainable (so a frozen pretrained backbone is left
        alone and only the fine-tuned part is pruned).

    Returns
    -------
    list of str
    """
    if layers is None:
        names = [
            name
            for name, sub in module.named_modules()
            if isinstance(sub, PRUNABLE_TYPES) and _weight_param(sub).requires_grad
        ]
        if not names:
            raise ValueError(
                f"{type(module).__name__} has no trainable Linear or Conv layer to prune. "
                "Unfreeze the layers to prune, or name them with layers=[...]."
            )
        return names
    names = [layers] if isinstance(layers, str) else list(layers)
    known = dict(module.named_modules())
    for name in names:
        if name not in known:
            candidates = [n for n, s in known.items() if isinstance(s, PRUNABLE_TYPES)]
            raise ValueError(
                f"Layer {name!r} to prune is not a submodule of {type(module).__name__}. "
                f"Prunable layers: {candidates[:20]}{' ...' if len(candidates) > 20 else ''}."
            )
        if not isinstance(known[name], PRUNABLE_TYPES):
            raise ValueError(
                f"Layer {name!r} is a {type(known[name]).__name__}; only "
                f"{[t.__name__ for t in PRUNABLE_TYPES]} layers can be pruned."
            )
    if len(set(names)) != len(names):
        raise ValueError(f"layers lists a layer twice: {names}.")
    return names


def _weight_param(sub: nn.Module) -> torch.Tensor:
    return getattr(sub, _NAME + "_orig", None) if prune.is_pruned(sub) else getattr(sub, _NAME)


def is_pruned(module: nn.Module) -> bool:
    """Whether any submodule carries a ``torch.nn.utils.prune`` mask."""
    return prune.is_pruned(module)


def attach_masks(module: nn.Module, layers: list[str]) -> None:
    """Give each layer an all-ones mask (``prune.identity``) so every round looks the same.

    Layers that already carry a mask (a network pruned earlier) keep it.
    """
    for name in layers:
        sub = module.get_submodule(name)
        if not hasattr(sub, _NAME + "_mask"):
            prune.identity(sub, _NAME)


def prune_by_magnitude(
    module: nn.Module,
    layers: list[str],
    rate: float,
    *,
    output_layer: str | None = None,
    output_rate: float | None = None,
    scope: str = "layer",
) -> None:
    """Prune the fraction ``rate`` of the smallest-magnitude *remaining* weights.

    Parameters
    ----------
    module : torch.nn.Module
    layers : list of str
        Layers to prune (see :func:`prunable_layers`); masks are attached when missing.
    rate : float in [0, 1)
        Fraction of each layer's remaining weights to remove (``scope="layer"``), or of all
        remaining weights of the layers taken together (``scope="global"``). The count removed
        is ``round(rate * remaining)``, as ``torch.nn.utils.prune`` computes it.
    output_layer : str or None
        The layer pruned at ``output_rate`` instead (the paper uses half the rate there).
    output_rate : float or None
        None: the output layer is pruned at ``rate`` with the others.
    scope : {"layer", "global"}
        Per-layer rates, or one magnitude threshold across layers (the output layer, when it
        has its own rate, is still pruned on its own).
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global'; got {scope!r}.")
    attach_masks(module, layers)
    separate = output_layer is not None and output_rate is not None
    hidden = [name for name in layers if not (separate and name == output_layer)]
    if scope == "layer":
        for name in hidden:
            prune.l1_unstructured(module.get_submodule(name), _NAME, amount=float(rate))
    elif hidden and rate > 0:
        targets = [(module.get_submodule(name), _NAME) for name in hidden]
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=rate)
    if separate and output_layer in layers:
        prune.l1_unstructured(module.get_submodule(output_layer), _NAME, amount=float(output_rate))
    _zero_pruned_orig(module)


def expected_remaining(total: int, rate: float, rounds: int) -> int:
    """How many of ``total`` weights remain after ``rounds`` rounds at ``rate`` per round.

    Each round removes ``round(rate * remaining)`` (Python's round, as torch does), so this is
    ``total * (1 - rate) ** rounds`` up to integer rounding.
    """
    remaining = int(total)
    for _ in range(rounds):
        remaining -= round(rate * remaining)
    return remaining


def weights_remaining(module: nn.Module, layers: list[str]) -> dict[str, tuple[int, int]]:
    """Per layer, ``(remaining, total)`` weights: ones in the mask, or non-zeros once permanent."""
    counts = {}
    for name in layers:
        sub = module.get_submodule(name)
        mask = getattr(sub, _NAME + "_mask", None)
        if mask is not None:
            counts[name] = (int(mask.count_nonzero()), mask.numel())
        else:
            weight = getattr(sub, _NAME)
            counts[name] = (int(weight.count_nonzero()), weight.numel())
    return counts


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the network's state under its *unpruned* names (``fc1.weight``).

    Pruned layers contribute ``weight_orig`` (masks are not part of a snapshot), so a snapshot
    taken before or after pruning can be rewound into either.
    """
    state = module.state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith("_mask") and key.removesuffix("_mask") + "_orig" in state:
            continue
        if key.endswith("_orig") and key.removesuffix("_orig") + "_mask" in state:
            key = key.removesuffix("_orig")
        out[key] = value.detach().to("cpu", copy=True)
    return out


def rewind(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Reset every parameter and buffer to ``state`` (a :func:`snapshot`), keeping the masks.

    Pruned entries of ``weight_orig`` are set to zero, not to their old values: they can then
    not come back through weight decay or momentum, and a permanent network is the same.
    """
    current = module.state_dict()
    new = {}
    for key, value in current.items():
        if key.endswith("_mask") and key.removesuffix("_mask") + "_orig" in current:
            new[key] = value
            continue
        base = key
        mask = None
        if key.endswith("_orig") and key.removesuffix("_orig") + "_mask" in current:
            base = key.removesuffix("_orig")
            mask = current[base + "_mask"]
        if base not in state:
            raise ValueError(
                f"Cannot rewind: the snapshot has no entry for {base!r}. Snapshots must come "
                "from the same architecture (sktransfer.pruning.snapshot of this network)."
            )
        saved = state[base].to(value.device, value.dtype)
        if saved.shape != value.shape:
            raise ValueError(
                f"Cannot rewind {base!r}: the snapshot holds shape {tuple(saved.shape)}, the "
                f"network {tuple(value.shape)}."
            )
        new[key] = saved * mask if mask is not None else saved.clone()
    module.load_state_dict(new)
    _refresh_masked(module)


def reinitialize(module: nn.Module, layers: list[str], random_state=None) -> None:
    """Draw fresh random values for the layers' weights and biases, keeping their masks.

    The random re-initialisation control of the paper: same sparse structure, new initial
    values from the layer's own initialiser (``reset_parameters``).
    """
    with seeded(random_state), torch.no_grad():
        for name in layers:
            sub = module.get_submodule(name)
            fresh = copy.deepcopy(sub)
            if prune.is_pruned(fresh):
                prune.remove(fresh, _NAME)
            if not hasattr(fresh, "reset_parameters"):
                raise ValueError(f"Layer {name!r} has no reset_parameters(); cannot re-initialise.")
            fresh.reset_parameters()
            mask = getattr(sub, _NAME + "_mask", None)
            target = _weight_param(sub)
            target.copy_(fresh.weight * mask if mask is not None else fresh.weight)
            if getattr(sub, "bias", None) is not None:
                sub.bias.copy_(fresh.bias)
    _refresh_masked(module)


def make_permanent(module: nn.Module) -> nn.Module:
    """Fold every mask into its weight (``prune.remove``): plain parameters with zeros.

    The network then has its original parameter names (``fc1.weight``) and no hooks, for
    deployment or export. Returns ``module``.
    """
    for sub in module.modules():
        hooks = [
            hook
            for hook in sub._forward_pre_hooks.values()
            if isinstance(hook, prune.BasePruningMethod)
        ]
        for hook in hooks:
            prune.remove(sub, hook._tensor_name)
    return module


def refresh_masked_weights(module: nn.Module) -> None:
    """Make ``weight`` a plain tensor equal to ``weight_orig * weight_mask`` (after training).

    After a training step a pruned layer's ``weight`` is a non-leaf tensor of the last graph,
    which ``copy.deepcopy`` refuses; call this before copying or cloning a pruned network.
    """
    _refresh_masked(module)


def _zero_pruned_orig(module: nn.Module) -> None:
    with torch.no_grad():
        for sub in module.modules():
            mask = getattr(sub, _NAME + "_mask", None)
            if mask is not None and prune.is_pruned(sub):
                getattr(sub, _NAME + "_orig").mul_(mask)
    _refresh_masked(module)


def _refresh_masked(module: nn.Module) -> None:
    """Recompute ``weight = weight_orig * weight_mask`` now, not only at the next forward.

    Computed without autograd: the forward pre-hook recomputes it (with gradients) anyway, and
    a plain tensor lets the network be deep-copied (``sklearn.clone``, ``copy.deepcopy``).
    """
    with torch.no_grad():
        for sub in module.modules():
            for hook in sub._forward_pre_hooks.values():
                if isinstance(hook, prune.BasePruningMethod):
                    setattr(sub, hook._tensor_name, hook.apply_mask(sub))
