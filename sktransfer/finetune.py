"""FineTuneClassifier: fine-tuning a pretrained network as a scikit-learn classifier.

The seeds' recipe: replace the classifier head, freeze the generic bottom, fine-tune the top
with a milder learning rate than the new head gets (0.001 against 0.01), or train only the
normalisation layers, or learn low-rank updates W + (alpha/r)·BA of frozen weights (LoRA, with
peft). Training runs through the project's skorch base (:mod:`sktransfer.training`).
"""

from __future__ import annotations

import os
from numbers import Integral, Real

import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torchvision.models import WeightsEnum

from ._compat import ImageClassification, Interval, StrOptions, _fit_context
from .backbones import ImagePreset, last_linear, load_backbone
from .finetune_frozen import FrozenBody, HeadOnlyTraining, frozen_body
from .finetune_layers import LayerSelection, original_name
from .frozen import ENGINES, DiskCache, MemoryCache, has_lazy
from .hyperrule import apply_hyperrule
from .training import (
    NeuralClassifierBase,
    Preprocessing,
    count_trainable,
    store_parameters,
    with_training_parameters,
)
from .training.context import FitContext

__all__ = ["BackboneRecipe", "FineTuneClassifier", "FineTuneNetwork", "FrozenBody"]

_TRAIN_KEYWORDS = ("head", "all", "norm")


class FineTuneNetwork(nn.Module):
    """A pretrained body (its last Linear layer replaced by the identity) and a new head."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x):
        return self.head(self.body(x))


class BackboneRecipe:
    """A backbone built in ``fit`` (e.g. :class:`sktransfer.TransferredBlocks`): its
    ``build_backbone(estimator, random_state)`` returns a :class:`~sktransfer.Backbone` and
    the names of parameters that stay frozen whatever ``train_layers`` says."""


def make_head(in_features: int, n_classes: int, hidden=(), dropout=0.0) -> nn.Sequential:
    """Linear, or hidden fully connected layers (ReLU, then dropout) and a Linear output."""
    layers, width = [], in_features
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = units
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


class FineTuneClassifier(HeadOnlyTraining, LayerSelection, NeuralClassifierBase):
    """Fine-tune a pretrained network with a new classification head.

    Parameters
    ----------
    backbone : str, torch.nn.Module or BackboneRecipe, default="mobilenet_v2"
        A torchvision classification model name, ``"efficientnet_lite0"``, or a module whose
        last ``nn.Linear`` is its classifier (that layer is replaced by the new head). A plain
        module takes images as float in [0, 1] at their own size, or 2-D vectors. A
        :class:`sktransfer.TransferredBlocks` copies the first blocks of a trained network.
    weights : str, path or None, default="DEFAULT"
        Pretrained weights, resolved offline first (:func:`sktransfer.load_backbone`).
    train_layers : {"head", "all", "norm"}, int or list of str, default="head"
        What trains besides the new head: nothing (``"head"``, reuse and freeze), everything
        (``"all"``), the normalisation layers' affine parameters (``"norm"``), the top ``n``
        blocks (:func:`sktransfer.block_layers`, with everything computed after them), or the
        pretrained parameters whose names match any of the given ``fnmatch`` patterns, e.g.
        ``["features.1[5-8].*"]`` (names as in ``backbone.named_parameters()``).
    image_size : int or None, default=None
        Input resolution: images are resized (shorter side) and center-cropped to this size
        instead of the preset's (224 for ImageNet models), keeping its normalisation. Small
        images such as MedMNIST's 28 px train several times faster at 112 than at 224.
    head_hidden : tuple of int, default=()
        Widths of 0 to 3 hidden fully connected layers (ReLU) before the output layer.
    head_dropout : float, default=0.2
        Dropout after each hidden layer (the pretrained network's own dropout before its
        classifier, e.g. MobileNetV2's 0.2, is kept).
    backbone_lr_scale : float, default=0.1
        Pretrained parameters train at ``lr * backbone_lr_scale``; new ones (head, LoRA
        adapters) at ``lr``.
    layer_decay : float or None, default=None
        Layer-wise decay: the k-th block from the top trains at
        ``lr * backbone_lr_scale * layer_decay**k`` (the stem below the first block as the
        deepest block).
    lora_rank : int, default=0
        Rank r of LoRA adapters (peft) on the frozen ``nn.Linear`` and ``nn.Conv2d`` layers
        selected by ``lora_layers`` (depthwise/grouped convolutions are skipped). 0: no LoRA.
        B starts at zero and A Gaussian, so the network is unchanged at initialisation.
    lora_alpha : float or None, default=None
        LoRA scale numerator: updates are ``(lora_alpha / r) * B @ A``. None: ``r`` (scale 1).
    lora_dropout : float, default=0.0
    lora_layers : "all", int or list of str, default="all"
        Where adapters go: every eligible layer of the pretrained network, those of the top
        ``n`` blocks, or layers whose module names match the ``fnmatch`` patterns.
    merge_lora : bool, default=False
        Merge the adapters into the frozen weights after training (same outputs, no extra
        cost at prediction); see also :meth:`merge_lora_adapters`.
    cache_features : {"auto"} or bool, default="auto"
        With ``train_layers="head"``, no LoRA and no augmentation, the pretrained body is
        frozen: its output (the penultimate features) is computed once per image by the
        frozen pass (:mod:`sktransfer.frozen`: engine, activation store, progress bar) and the
        head trains on it; ``predict`` and ``predict_proba`` run the same pass, then the head.
        "auto": do so for images when those conditions hold.
    engine : {"auto", "torch", "onnxruntime"}, default="auto"
        Who runs the frozen body when ``cache_features`` applies (see
        :mod:`sktransfer.frozen.engines`): "auto" is ONNX Runtime on the CPU (checked against
        torch on first use, with a warning and torch if they disagree or export fails) and
        torch on CUDA. Training itself always runs torch.
    cache : "memory", path, DiskCache or None, default="memory"
        The activation store the frozen body's features go through when ``cache_features``
        applies, as for :class:`~sktransfer.DeepFeatureExtractor`: the same images through
        the same pretrained network and layer are computed once, whichever of the two
        estimators asks first (a folder path shares them with other processes and runs).
    hyperrule : bool or float in (0, 1], default=False
        BiT-HyperRule (:mod:`sktransfer.hyperrule`): steps, resolution (resize, random crop
        and flip), MixUp, SGD with momentum 0.9, learning rate 0.003 with warm-up and decays
        by 10 at 30/60/90 % of the steps, no weight decay and batch 512, chosen from the
        training set's size and image size; these replace ``max_epochs``, ``lr``,
        ``batch_size``, ``optimizer`` and ``weight_decay`` (``image_size`` and
        ``augmentation`` must stay None). True: the paper's rule; a float ``scale`` shrinks
        it for a CPU: steps and batch x ``scale``, image side x sqrt(``scale``) (about
        ``scale**3`` of the compute). BiT trains everything at one rate: combine with
        ``train_layers="all", backbone_lr_scale=1.0``.
    max_epochs, lr, batch_size, optimizer, weight_decay, early_stopping, \
validation_fraction, n_iter_no_change, augmentation, mixed_precision, device, n_jobs, \
callbacks, verbose, random_state
        As in :class:`sktransfer.training.NeuralClassifierBase`: ``lr`` is the head's
        learning rate; ``early_stopping`` holds out a stratified validation split and restores
        the best epoch's weights; ``augmentation`` ("flip", "crop", "crop_flip") is applied to
        training batches only; ``random_state`` makes CPU runs repeat exactly.

    Attributes
    ----------
    classes_ : ndarray
        Original labels; ``predict`` returns them and ``predict_proba`` columns follow them.
    net_ : skorch.NeuralNetClassifier
        The skorch net; ``net_.module_`` is the :class:`FineTuneNetwork`.
    history_ : skorch.History
    n_epochs_ : int
    best_epoch_ : int or None
    n_trainable_params_ : int
        Parameters that were trained (head, unfrozen layers, LoRA adapters).
    n_params_ : int
        All parameters of the network (adapters included until merged).
    trainable_fraction_ : float
        ``n_trainable_params_ / n_params_``.
    weights_ : str or None
        The weights actually loaded, e.g. ``"MobileNet_V2_Weights.IMAGENET1K_V1"``.
    blocks_ : list of str
        The network's blocks, bottom to top (for ``train_layers=n`` and ``layer_decay``).
    lora_layers_ : list of str
        Layers that received adapters.
    lora_merged_ : bool
    features_cached_ : bool
        Whether the head was trained on the frozen body's features computed once (then
        ``predict`` runs the frozen pass too).
    hyperrule_ : dict or None
        What BiT-HyperRule chose (:func:`sktransfer.hyperrule.bit_hyperrule`'s keys, plus
        ``epochs`` and ``image_size``); None without ``hyperrule``.
    frozen_body_ : FrozenBody or None
        With ``cache_features`` possible: the backbone's ``name``, the ``layer`` its
        penultimate features are tapped at (``"classifier.0"`` for MobileNetV2, the layer
        ``DeepFeatureExtractor(layers=None)`` taps too) and the pretrained network's
        ``identity``, under which the activation store keeps them.
    device_ : torch.device
    preprocessing_, input_kind_
        As in :class:`sktransfer.training.NeuralClassifierBase`.
    n_features_in_ : int
        Only for 2-D vector input (plain-module backbones).

    Notes
    -----
    Ctrl-C during training stops it, warns, and leaves a usable classifier with the weights
    it had then (see :class:`sktransfer.training.NeuralClassifierBase`).

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer import FineTuneClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    >>> y = np.array(["ant", "bee"] * 4)
    >>> clf = FineTuneClassifier("resnet18", weights=None, train_layers=1, max_epochs=2,
    ...                          random_state=0).fit(X, y)
    >>> clf.predict(X[:2]).dtype.kind, clf.blocks_[-1]
    ('U', 'layer4.1')
    >>> clf.n_trainable_params_ < clf.n_params_
    True
    """

    _parameter_constraints: dict = {
        **NeuralClassifierBase._parameter_constraints,
        "backbone": [str, nn.Module, BackboneRecipe],
        "weights": [str, os.PathLike, None, WeightsEnum],
        "train_layers": [
            StrOptions(set(_TRAIN_KEYWORDS)),
            Interval(Integral, 1, None, closed="left"),
            list,
            tuple,
        ],
        "image_size": [Interval(Integral, 1, None, closed="left"), None],
        "head_hidden": [tuple, list],
        "head_dropout": [Interval(Real, 0, 1, closed="left")],
        "backbone_lr_scale": [Interval(Real, 0, None, closed="left")],
        "layer_decay": [Interval(Real, 0, 1, closed="right"), None],
        "lora_rank": [Interval(Integral, 0, None, closed="left")],
        "lora_alpha": [Interval(Real, 0, None, closed="neither"), None],
        "lora_dropout": [Interval(Real, 0, 1, closed="left")],
        "lora_layers": [StrOptions({"all"}), Interval(Integral, 1, None, closed="left"), list],
        "merge_lora": ["boolean"],
        "cache_features": [StrOptions({"auto"}), "boolean"],
        "engine": [StrOptions(set(ENGINES))],
        "cache": [StrOptions({"memory"}), str, os.PathLike, DiskCache, MemoryCache, None],
        "hyperrule": ["boolean", Interval(Real, 0, 1, closed="right")],
    }

    @with_training_parameters()
    def __init__(
        self,
        backbone="mobilenet_v2",
        *,
        weights="DEFAULT",
        train_layers="head",
        image_size=None,
        head_hidden=(),
        head_dropout=0.2,
        backbone_lr_scale=0.1,
        layer_decay=None,
        lora_rank=0,
        lora_alpha=None,
        lora_dropout=0.0,
        lora_layers="all",
        merge_lora=False,
        cache_features="auto",
        engine="auto",
        cache="memory",
        hyperrule=False,
        **training,
    ):
        store_parameters(self, locals())

    # ------------------------------------------------------------------ public API

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Replace the head, choose what trains, and train.

        Parameters
        ----------
        X : images or vectors
            Anything :func:`sktransfer.images.check_images` accepts, read with the backbone's
            preprocessing (2-D vectors only for plain-module backbones).
        y : array-like of shape (n_samples,)
            Class labels of any type.

        Returns
        -------
        self : FineTuneClassifier
        """
        self._check_head_params()
        context = self._prepare_fit(X, y)
        self.hyperrule_ = apply_hyperrule(self, context.inputs) if self.hyperrule else None
        self.features_cached_ = self._use_feature_cache(context.inputs)
        if self.features_cached_:
            self._train_head_on_cached_features(context)
        else:
            epochs = self.hyperrule_["epochs"] if self.hyperrule_ else None
            self._continue_training(context, max_epochs=epochs)
        self.lora_merged_ = False
        self._count_parameters()
        if self.merge_lora and self.lora_layers_:
            self.merge_lora_adapters()
        return self

    def merge_lora_adapters(self):
        """Merge LoRA adapters into the frozen weights (W += (alpha/r)·BA) for inference.

        Outputs stay the same up to float rounding; the adapters are removed, so
        ``n_params_`` returns to the original network's size. Training afterwards (a new
        ``fit``) starts from a fresh network.

        Returns
        -------
        self : FineTuneClassifier
        """
        check_is_fitted(self)
        if not self.lora_layers_:
            raise ValueError(
                "This FineTuneClassifier has no LoRA adapters to merge (lora_rank=0). Set "
                "lora_rank > 0 to train adapters."
            )
        if self.lora_merged_:
            return self
        from peft.tuners.lora import LoraLayer

        body = self.net_.module_.body
        for name, module in list(body.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge(safe_merge=True)
                parent, _, child = name.rpartition(".")
                setattr(body.get_submodule(parent) if parent else body, child, module.base_layer)
        self.lora_merged_ = True
        self.n_params_ = count_trainable(self.net_.module_)[1]
        return self

    def _fit_to_continue(self, X, y):
        # Training the head on stored features swaps the network for its head while training;
        # continued training (pruning's rewind snapshots) needs the whole network each epoch.
        return self.set_params(cache_features=False).fit(X, y)

    # ------------------------------------------------------------------ hooks

    def _setup(self, context: FitContext) -> Preprocessing:
        # What _build_module needs travels in the context, never on the estimator.
        kept_frozen = frozenset()
        if isinstance(self.backbone, BackboneRecipe):
            loaded, kept_frozen = self.backbone.build_backbone(self, context.seed)
        else:
            loaded = load_backbone(self.backbone, self.weights, random_state=context.seed)
        self.weights_ = loaded.weights
        if self.image_size is not None:
            loaded.transform = _resized(loaded.transform, self.image_size)
        context.extras.update(backbone=loaded, kept_frozen=kept_frozen)
        return Preprocessing.from_backbone(loaded)

    def _build_module(self, context: FitContext) -> nn.Module:
        loaded, kept_frozen = context.extras["backbone"], context.extras["kept_frozen"]
        body = loaded.module  # load_backbone already copied it; ours to change
        classifier_name, in_features = _classifier(body, loaded.name)
        possible = self._frozen_body_possible() and self.input_kind_ != "vectors"
        pretrained_identity = loaded.identity if possible and not has_lazy(body) else None
        _replace(body, classifier_name, nn.Identity())
        if self.input_kind_ == "vectors" or has_lazy(body):
            with torch.no_grad():
                body.eval()(context.example_batch())  # initialise lazy modules
        self.frozen_body_ = None
        if possible:
            self.frozen_body_ = frozen_body(body, classifier_name, loaded, pretrained_identity)
        n_classes = len(self.classes_)
        head = make_head(in_features, n_classes, tuple(self.head_hidden), self.head_dropout)
        self.blocks_, depth = self._blocks_and_depths(body, loaded)
        self._depth = depth
        body.requires_grad_(False)
        for name, param in body.named_parameters():
            param.requires_grad = name not in kept_frozen and self._trains(name, body, depth)
        self.lora_layers_ = self._add_lora(body, depth)
        return FineTuneNetwork(body, head)

    def _param_groups(self, module: nn.Module) -> list[dict]:
        if not isinstance(module, FineTuneNetwork):  # the head alone, on cached features
            return super()._param_groups(module)
        new = [p for p in module.head.parameters() if p.requires_grad]
        by_rate: dict[float, list] = {}
        for name, param in module.body.named_parameters():
            if not param.requires_grad:
                continue
            if "lora_" in name:
                new.append(param)
                continue
            scale = self.backbone_lr_scale
            if self.layer_decay is not None:
                scale *= self.layer_decay ** self._depth.get(original_name(name), 0)
            by_rate.setdefault(scale, []).append(param)
        groups = [{"params": new, "lr": self.lr}]
        groups += [{"params": ps, "lr": self.lr * s} for s, ps in sorted(by_rate.items())]
        return [g for g in groups if g["params"]]

    # ------------------------------------------------------------------ internals

    def _check_head_params(self):
        hidden = tuple(self.head_hidden)
        if len(hidden) > 3 or not all(isinstance(h, Integral) and h > 0 for h in hidden):
            raise ValueError(
                f"head_hidden must hold 0 to 3 positive layer widths, e.g. () or (256,); got "
                f"{self.head_hidden!r}."
            )
        layers = self.train_layers
        if isinstance(layers, list | tuple) and (
            not layers or not all(isinstance(p, str) for p in layers)
        ):
            raise ValueError(
                f"train_layers as a list must hold parameter-name patterns (str), e.g. "
                f"['features.18.*']; got {layers!r}."
            )

    def _count_parameters(self):
        self.n_trainable_params_, self.n_params_ = count_trainable(self.net_.module_)
        self.trainable_fraction_ = self.n_trainable_params_ / self.n_params_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = isinstance(self.backbone, nn.Module)
        return tags


def _classifier(module: nn.Module, name: str) -> tuple[str, int]:
    """The name and input width of the classifier that the new head replaces."""
    last = last_linear(module)
    if last is None:
        raise ValueError(
            f"Backbone {name!r} has no nn.Linear classifier to replace with a new head. Pass a "
            "network whose last nn.Linear layer is its classifier."
        )
    layer_name, layer = last
    if has_lazy(layer):
        raise ValueError(
            f"The last Linear layer {layer_name!r} of {name!r} is lazy, so its input width is "
            "unknown. Give it an explicit in_features."
        )
    return layer_name, layer.in_features


def _resized(transform, size: int):
    """The preset with another resize/crop size (same normalisation and interpolation)."""
    if not isinstance(transform, ImageClassification):
        raise ValueError(
            f"image_size needs a backbone with a torchvision preprocessing preset; this one "
            f"has {transform!r}. Resize the images yourself and pass image_size=None."
        )
    return ImagePreset(
        crop_size=size,
        resize_size=size,
        mean=transform.mean,
        std=transform.std,
        interpolation=transform.interpolation,
        antialias=transform.antialias,
    )


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, child, new)
