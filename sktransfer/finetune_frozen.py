"""FineTuneClassifier's head-only path: the frozen body's features through the frozen pass.

With ``train_layers="head"``, no LoRA and no augmentation, the pretrained body never changes,
so its output (the penultimate features) is computed once per image by
:mod:`sktransfer.frozen` (engine, activation store, progress bar) and the head trains on it;
prediction runs the same pass, then the head. :class:`HeadOnlyTraining` holds that path for
:class:`~sktransfer.finetune.FineTuneClassifier`; :class:`FrozenBody` says where the body is
tapped.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .backbones import Backbone, ToUnitFloat, _graph_nodes
from .frozen import (
    DiskCache,
    FrozenNetwork,
    batching,
    get_cache,
    pooled_features,
    resolve_engine,
    tapped_network,
)
from .images import ImageInputs
from .training.context import FitContext
from .training.net import softmax

__all__ = ["FrozenBody", "HeadOnlyTraining", "frozen_body"]


class FrozenBody(NamedTuple):
    """Where a head-only FineTuneClassifier's frozen body is tapped, and as what."""

    name: str  #: the backbone's name
    layer: str  #: the node feeding the replaced classifier: the penultimate features
    identity: str | None  #: the pretrained network's identity (None: the body's own)


def frozen_body(body: nn.Module, classifier_name: str, loaded, identity) -> FrozenBody | None:
    """The node feeding the (replaced) classifier, named as ``DeepFeatureExtractor(layers=
    None)`` names it, with the pretrained network's identity: both estimators then share
    stored features. None when the graph cannot be traced."""
    try:
        nodes = _graph_nodes(body)
    except Exception:  # untraceable: the head then trains on the whole network's output
        return None
    if classifier_name not in nodes or nodes.index(classifier_name) < 1:
        return None
    return FrozenBody(loaded.name, nodes[nodes.index(classifier_name) - 1], identity)


class HeadOnlyTraining:
    """The head-only path of :class:`~sktransfer.finetune.FineTuneClassifier` (a mixin: it
    reads the estimator's ``train_layers``, ``lora_rank``, ``augmentation``, ``hyperrule``,
    ``cache_features``, ``engine``, ``cache`` and fitted ``frozen_body_``)."""

    def _body_stays_frozen(self) -> bool:
        """Only the head trains and nothing changes the body's output between epochs."""
        return (
            self.train_layers == "head"
            and self.lora_rank == 0
            and self.augmentation is None
            and not self.hyperrule  # the rule crops and flips training images
        )

    def _frozen_body_possible(self) -> bool:
        return self._body_stays_frozen() and self.cache_features in ("auto", True)

    def _use_feature_cache(self, inputs: ImageInputs) -> bool:
        possible = (
            self._body_stays_frozen() and inputs.kind != "vectors" and self.frozen_body_ is not None
        )
        if self.cache_features is True and not possible:
            raise ValueError(
                "cache_features=True needs train_layers='head', lora_rank=0, "
                "augmentation=None and image input, since only then is the frozen network's "
                f"output fixed; got train_layers={self.train_layers!r}, "
                f"lora_rank={self.lora_rank}, augmentation={self.augmentation!r}. Use "
                "cache_features='auto'."
            )
        return possible and self.cache_features in ("auto", True)

    def _train_head_on_cached_features(self, context: FitContext) -> None:
        network = self.net_.module_
        features = ImageInputs("vectors", self._frozen_body_features(context.inputs))
        self._set_module(network.head)
        channels_last, self.net_.channels_last = self.net_.channels_last, False
        self._continue_training(dataclasses.replace(context, inputs=features))
        self.net_.channels_last = channels_last
        self.net_.module_ = self._place(network)

    def _frozen_body_network(self) -> FrozenNetwork:
        """The trained network's frozen body, tapped where its penultimate features leave it.

        Its identity is the pretrained network's (for named weights), so it shares the
        activation store and the tapped graph with a DeepFeatureExtractor of that network.
        """
        frozen = self.frozen_body_
        transform = self.preprocessing_.transform or ToUnitFloat()  # a plain module's
        body = Backbone(self.net_.module_.body, transform, frozen.name, self.weights_)
        body.known_identity = frozen.identity
        store = get_cache(self.cache)
        return tapped_network(
            body,
            [frozen.layer],
            self.device_,
            engine=resolve_engine(self.engine, self.device_),
            n_threads=self.n_jobs,
            export_dir=store.onnx_dir if isinstance(store, DiskCache) else None,
        )

    def _frozen_body_features(self, inputs: ImageInputs) -> np.ndarray:
        """The penultimate features of ``inputs``, through the frozen pass and the store."""
        network = self._frozen_body_network()
        features = pooled_features(
            network,
            inputs,
            pooling="avg",  # the layer is a vector: nothing is pooled
            store=get_cache(self.cache),
            **batching(network, len(inputs), n_jobs=self.n_jobs, verbose=self.verbose),
        )
        return features[network.layers[0]]

    def _probabilities(self, inputs: ImageInputs) -> np.ndarray:
        """With the head trained on the frozen body's features (``features_cached_``), the
        images go through the frozen pass (engine, activation store, progress bar), then the
        head; otherwise through the whole network."""
        if not self.features_cached_:
            return super()._probabilities(inputs)
        features = torch.from_numpy(self._frozen_body_features(inputs))
        head = self.net_.module_.head
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(features), 1024):
                batch = features[start : start + 1024].to(self.device_)
                chunks.append(softmax(head(batch)).cpu().numpy())
        if not chunks:
            return np.empty((0, len(self.classes_)), dtype=np.float64)
        return np.concatenate(chunks).astype(np.float64)
