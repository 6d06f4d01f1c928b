"""How transferable is each layer: copy the first n blocks of a trained network, re-initialise
the rest (Yosinski, Clune, Bengio & Lipson, NeurIPS 2014).

The seeds' experiment: a network trained on task A gives its first n blocks to a network for
task B, whose other layers start again from random; the copied blocks stay frozen (AnB) or are
fine-tuned with the rest (AnB+). Copying from a network trained on B itself (BnB, BnB+)
separates the two reasons accuracy can drop: features specific to A, and co-adapted layers
that cannot be re-learned on top of frozen neighbours ("fragile co-adaptation").

:func:`transfer_blocks` does it to a module (or a fitted estimator's network);
:class:`TransferredBlocks` is the same recipe as a ``FineTuneClassifier`` backbone, built in
``fit`` and clonable, so that ``GridSearchCV`` can search over ``n_blocks``, ``freeze`` and
the ``source``. Blocks are counted by :func:`transferable_blocks`.
"""

from __future__ import annotations

import copy
from numbers import Integral

from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .backbones import Backbone, ToUnitFloat, last_linear
from .devices import seed_from, seeded
from .finetune import BackboneRecipe, FineTuneNetwork

__all__ = ["TransferredBlocks", "transfer_blocks", "transferable_blocks"]

#: Layers that go with the weight layer before them: ``Sequential(conv, bn, relu)`` is a block.
_NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def transferable_blocks(source, *, blocks=None) -> list[str]:
    """The blocks that :func:`transfer_blocks` counts, bottom to top.

    Parameters
    ----------
    source : torch.nn.Module or fitted estimator
        A network, or a fitted sktransfer training estimator (its ``net_.module_``; for a
        ``FineTuneClassifier``, a :class:`~sktransfer.finetune.FineTuneNetwork` whose blocks
        are its body's, then its head's).
    blocks : list of str or None, default=None
        Module names to use as blocks instead, bottom to top in the order the network defines
        them. Returned as given once checked.

    Returns
    -------
    list of str
        Default: the network unrolled through its containers (``nn.Sequential``,
        ``nn.ModuleList``, a ``FineTuneNetwork``'s body and head) down to modules that hold
        parameters and are not containers of several layers. A container holding one weight
        layer with its normalisation, activation or pooling (``Sequential(conv, bn, relu)``)
        is one block. Blocks follow the order in which modules are defined (``named_modules``),
        which is the order they compute in for the usual networks. The block holding the
        network's last ``nn.Linear`` (its classifier, which a new task replaces) and any
        after it are left out.

    Examples
    --------
    >>> from torch import nn
    >>> from sktransfer import transferable_blocks
    >>> net = nn.Sequential(
    ...     nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), nn.Sequential(nn.Conv2d(8, 8, 3),
    ...     nn.BatchNorm2d(8), nn.ReLU()), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...     nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> transferable_blocks(net)
    ['0', '1', '4']
    """
    module = _source_network(source)
    if blocks is not None:
        return _checked_blocks(module, blocks)
    unrolled = _unrolled(module, "")
    output = _last_linear_name(module)
    if output is not None:
        cut = [i for i, b in enumerate(unrolled) if output == b or output.startswith(b + ".")]
        unrolled = unrolled[: cut[0]] if cut else unrolled
    if not unrolled:
        raise ValueError(
            f"Found no block below the classifier of {type(module).__name__}: the network has "
            "no layer with parameters before its last nn.Linear. Pass blocks= (module names, "
            "bottom to top)."
        )
    return unrolled


def transfer_blocks(source, n_blocks, *, freeze=True, blocks=None, random_state=None) -> nn.Module:
    """A copy of ``source`` that keeps its first ``n_blocks`` blocks and re-initialises the rest.

    Parameters
    ----------
    source : torch.nn.Module or fitted estimator
        The trained network (task A), or a fitted estimator (its ``net_.module_``). Never
        changed: the copy is deep.
    n_blocks : int
        How many blocks (:func:`transferable_blocks`) to copy, from 0 (every layer
        re-initialised: the architecture trained from scratch) to the number of blocks. The
        first ``n_blocks`` blocks and every parameter defined before them (a stem outside
        ``blocks``) keep the trained weights; every later layer, the classifier included, is
        re-initialised with its own ``reset_parameters()`` (BatchNorm statistics too).
    freeze : bool, default=True
        Whether the copied parameters get ``requires_grad=False`` (the seeds' AnB / BnB);
        False makes them trainable (AnB+ / BnB+). Every other parameter is trainable.
    blocks : list of str or None, default=None
        Block names instead of the default ones, bottom to top.
    random_state : int, RandomState or None, default=None
        Seeds the re-initialisation; the same seed gives the same weights.

    Returns
    -------
    torch.nn.Module
        The copy, in eval mode, on the CPU.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from sktransfer import transfer_blocks
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
    ...                     nn.Linear(8, 2))
    >>> new = transfer_blocks(net, 1, random_state=0)
    >>> torch.equal(new[0].weight, net[0].weight), torch.equal(new[2].weight, net[2].weight)
    (True, False)
    >>> new[0].weight.requires_grad, new[2].weight.requires_grad
    (False, True)
    """
    module, kept = _transferred(source, n_blocks, blocks, random_state)
    for name, param in module.named_parameters():
        param.requires_grad = not (freeze and name in kept)
    return module


class TransferredBlocks(BackboneRecipe, BaseEstimator):
    """A ``FineTuneClassifier`` backbone: the first ``n_blocks`` blocks of a trained network,
    the rest re-initialised when the classifier is fitted.

    ``FineTuneClassifier(TransferredBlocks(net_A, n_blocks=3), train_layers="all")`` trains
    the re-initialised layers and a new head on task B with the three copied blocks frozen
    (the seeds' AnB); ``freeze=False`` fine-tunes them too (AnB+). The recipe is a parameter
    like any other: ``GridSearchCV`` searches ``backbone__n_blocks``, ``backbone__freeze`` or
    ``backbone__source``; cloning keeps the source (a fitted estimator stays fitted).

    Parameters
    ----------
    source : torch.nn.Module or fitted estimator
        The trained network, or a fitted estimator whose ``net_.module_`` is used; its
        preprocessing (``preprocessing_``) comes along. Never changed.
    n_blocks : int
        Blocks to copy, 0 to ``len(transferable_blocks(source))`` (see
        :func:`transfer_blocks`). 0: the architecture from scratch (the seeds' baseB).
    freeze : bool, default=True
        Keep the copied parameters frozen whatever ``train_layers`` says (their modules stay
        in eval mode, so BatchNorm statistics and dropout are frozen too). False: they train
        as ``train_layers`` says.
    blocks : list of str or None, default=None
        Block names instead of :func:`transferable_blocks`' default, bottom to top.
    random_state : int, RandomState or None, default=None
        Seeds the re-initialisation. None: the classifier's ``random_state``.

    Notes
    -----
    Re-initialised layers must train, so the classifier needs ``train_layers="all"`` while any
    are left below the output (fitting says so otherwise). They belong to the backbone, which
    trains at ``lr * backbone_lr_scale``: ``backbone_lr_scale=1.0`` gives every layer the same
    rate, as in the paper. The classifier's ``weights`` must stay ``"DEFAULT"`` (the source's).

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sktransfer import FineTuneClassifier, TransferredBlocks
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(40, 6)).astype(np.float32), np.arange(40) % 2
    >>> net_a = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
    ...                       nn.Linear(16, 3))
    >>> clf = FineTuneClassifier(TransferredBlocks(net_a, n_blocks=1), train_layers="all",
    ...                          backbone_lr_scale=1.0, max_epochs=2, random_state=0)
    >>> search = GridSearchCV(clf, {"backbone__n_blocks": [0, 1, 2]}, cv=2).fit(X, y)
    >>> [int(n) for n in search.cv_results_["param_backbone__n_blocks"]]
    [0, 1, 2]
    """

    def __init__(self, source, *, n_blocks, freeze=True, blocks=None, random_state=None):
        self.source = source
        self.n_blocks = n_blocks
        self.freeze = freeze
        self.blocks = blocks
        self.random_state = random_state

    def __sklearn_clone__(self):
        """A clone with the same source object: cloning a fitted source would unfit it."""
        params = self.get_params(deep=False)
        source = params.pop("source")
        return type(self)(source, **{k: clone(v, safe=False) for k, v in params.items()})

    def build_backbone(self, estimator, random_state) -> tuple[Backbone, frozenset]:
        """The transferred network for ``estimator`` (a ``FineTuneClassifier`` in ``fit``),
        and the parameters it must keep frozen.

        Parameters
        ----------
        estimator : FineTuneClassifier
            The classifier being fitted (its ``weights`` and ``train_layers`` are checked).
        random_state : int or None
            The classifier's seed, used when this recipe has no ``random_state``.

        Returns
        -------
        backbone : Backbone
        frozen : frozenset of str
            Names of the copied parameters when ``freeze``, else empty.
        """
        if not isinstance(self.freeze, bool):
            raise ValueError(f"freeze must be True or False; got {self.freeze!r}.")
        if estimator.weights != "DEFAULT":
            raise ValueError(
                f"A TransferredBlocks backbone takes its weights from its source; got "
                f"weights={estimator.weights!r}. Leave FineTuneClassifier's weights='DEFAULT'."
            )
        seed = random_state if self.random_state is None else seed_from(self.random_state)
        module, kept = _transferred(self.source, self.n_blocks, self.blocks, seed)
        _check_reinitialised_layers_train(module, kept, estimator.train_layers)
        preprocessing = getattr(self.source, "preprocessing_", None)
        transform = getattr(preprocessing, "transform", None) or ToUnitFloat()
        takes_vectors = preprocessing.takes_vectors if preprocessing is not None else True
        name = f"TransferredBlocks({type(module).__name__}, n_blocks={self.n_blocks})"
        backbone = Backbone(module, transform, name, "module", None, takes_vectors)
        return backbone, frozenset(kept) if self.freeze else frozenset()


# --------------------------------------------------------------------------- helpers


def _source_network(source) -> nn.Module:
    """The network of a module or of a fitted estimator (not copied)."""
    if isinstance(source, nn.Module):
        return source
    if hasattr(source, "fit") and hasattr(source, "get_params"):
        check_is_fitted(source)
        module = getattr(getattr(source, "net_", None), "module_", None)
        if isinstance(module, nn.Module):
            return module
    raise TypeError(
        f"source must be a torch.nn.Module or a fitted sktransfer training estimator (with "
        f"net_.module_); got {type(source).__name__}."
    )


def _transferred(source, n_blocks, blocks, random_state) -> tuple[nn.Module, set[str]]:
    """A deep copy with the first blocks kept and the rest reset; the kept parameter names."""
    network = _source_network(source)
    names = transferable_blocks(network, blocks=blocks)
    if not isinstance(n_blocks, Integral) or isinstance(n_blocks, bool):
        raise TypeError(f"n_blocks must be an int; got {n_blocks!r}.")
    if not 0 <= n_blocks <= len(names):
        raise ValueError(
            f"n_blocks={n_blocks}, but {type(network).__name__} has {len(names)} transferable "
            f"blocks ({names[0]!r} ... {names[-1]!r}). Use 0 to {len(names)}."
        )
    module = copy.deepcopy(network).cpu().eval()
    kept_modules = _kept_modules(module, names[:n_blocks])
    with seeded(seed_from(random_state)):
        for name, layer in module.named_modules():
            if _own_params(layer) and name not in kept_modules:
                _reset(layer, name)
    kept = {
        _join(name, p)
        for name, layer in module.named_modules()
        if name in kept_modules
        for p, _ in layer.named_parameters(recurse=False)
    }
    return module, kept


def _kept_modules(module: nn.Module, kept_blocks: list[str]) -> set[str]:
    """Modules with parameters defined up to the last one inside the last kept block."""
    order = [name for name, layer in module.named_modules() if _own_params(layer)]
    if not kept_blocks:
        return set()
    last = kept_blocks[-1]
    inside = [i for i, name in enumerate(order) if _within(name, last)]
    return set(order[: inside[-1] + 1])


def _reset(layer: nn.Module, name: str) -> None:
    reset = getattr(layer, "reset_parameters", None) or getattr(layer, "_reset_parameters", None)
    if reset is None:
        raise ValueError(
            f"Layer {name or '(the network itself)'!r} ({type(layer).__name__}) holds "
            "parameters but has no reset_parameters(), so it cannot be re-initialised. Give "
            "it one, or keep it by copying more blocks (n_blocks) or listing blocks= so that "
            "it lies in a copied block or before one."
        )
    reset()


def _check_reinitialised_layers_train(module, kept, train_layers) -> None:
    """Re-initialised layers below the output train only with ``train_layers='all'``."""
    output = _last_linear_name(module)
    random_below = [
        name
        for name, param in module.named_parameters()
        if name not in kept and not (output and _within(name, output))
    ]
    if random_below and train_layers != "all":
        raise ValueError(
            f"TransferredBlocks re-initialised {random_below[0]!r} and other layers, which "
            f"must train, but train_layers={train_layers!r} would leave some at their random "
            "weights. Use train_layers='all' (freeze=True keeps the copied blocks frozen)."
        )


def _checked_blocks(module: nn.Module, blocks) -> list[str]:
    if isinstance(blocks, str) or not all(isinstance(b, str) for b in blocks) or not blocks:
        raise ValueError(
            f"blocks must be a non-empty list of module names, bottom to top; got {blocks!r}."
        )
    order = [name for name, layer in module.named_modules() if _own_params(layer)]
    positions = []
    for block in blocks:
        inside = [i for i, name in enumerate(order) if _within(name, block)]
        if not inside:
            raise ValueError(
                f"Block {block!r} is not a module with parameters of {type(module).__name__}. "
                f"Its layers with parameters are {order[:6]}{' ...' if len(order) > 6 else ''}."
            )
        positions.append((inside[0], inside[-1]))
    for (start, _), (_, previous_end), block in zip(positions[1:], positions, blocks[1:]):
        if start <= previous_end:
            raise ValueError(
                f"blocks must be listed bottom to top without overlap, in the order the "
                f"network defines them; {block!r} starts before the block listed before it "
                f"ends. Got {blocks!r}."
            )
    return list(blocks)


def _unrolled(module: nn.Module, prefix: str) -> list[str]:
    if isinstance(module, FineTuneNetwork):
        return _unrolled(module.body, _join(prefix, "body")) + _unrolled(
            module.head, _join(prefix, "head")
        )
    blocks = []
    for name, child in module.named_children():
        full = _join(prefix, name)
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, FineTuneNetwork) or _holds_several_layers(child):
            blocks += _unrolled(child, full)
        else:
            blocks.append(full)
    return blocks


def _holds_several_layers(module: nn.Module) -> bool:
    """A container with more than one child holding parameters, norm layers not counted."""
    if not isinstance(module, nn.Sequential | nn.ModuleList):
        return False
    weighted = [
        c
        for c in module.children()
        if not isinstance(c, _NORM_LAYERS) and any(True for _ in c.parameters())
    ]
    return len(weighted) > 1


def _last_linear_name(module: nn.Module) -> str | None:
    found = last_linear(module)
    return found[0] if found is not None else None


def _own_params(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _within(name: str, block: str) -> bool:
    return block == "" or name == block or name.startswith(block + ".")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
