"""What trains in FineTuneClassifier: blocks and their depths, parameter patterns, LoRA.

:class:`LayerSelection` (a mixin of :class:`~sktransfer.finetune.FineTuneClassifier`, reading
its ``train_layers``, ``lora_*`` and ``layer_decay`` parameters) ranks the pretrained
parameters by block from the top, decides which of them train, and injects LoRA adapters
(peft) into the frozen layers chosen.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from numbers import Integral

from torch import nn

from .backbones import Backbone, _graph_nodes, block_layers

__all__ = ["LayerSelection", "original_name"]

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


class LayerSelection:
    """Which pretrained parameters train, and where LoRA adapters go (a mixin)."""

    def _blocks_and_depths(self, body, loaded):
        """Blocks bottom to top, and each pretrained parameter's block rank from the top."""
        if not self._needs_blocks():
            return [], {}
        if self.input_kind_ == "vectors":  # an MLP: each layer with parameters is a block
            order = [n for n, m in body.named_modules() if _own_params(m)]
            blocks = order
        else:
            blocks = block_layers(Backbone(body, loaded.transform, loaded.name, "module"))
            order = _graph_nodes(body)
        if not blocks:
            raise ValueError(
                f"Found no blocks in {loaded.name!r}, so train_layers/lora_layers cannot count "
                "blocks. Pass parameter-name patterns instead (a list of str)."
            )
        starts = [_first_position(order, b) for b in blocks]
        depth = {}
        for module_name, module in body.named_modules():
            if not _own_params(module):
                continue
            position = _first_position(order, module_name)
            above = sum(start <= position for start in starts)  # blocks starting at or before
            rank = len(blocks) - max(above, 1)  # the stem counts as the deepest block
            for param_name, _ in module.named_parameters(recurse=False):
                depth[_join(module_name, param_name)] = rank
        return blocks, depth

    def _needs_blocks(self) -> bool:
        return (
            isinstance(self.train_layers, Integral)
            or isinstance(self.lora_layers, Integral)
            or self.layer_decay is not None
        )

    def _check_block_count(self, n, what):
        if n > len(self.blocks_):
            raise ValueError(
                f"{what}={n}, but {self.backbone if isinstance(self.backbone, str) else 'the'}"
                f" network has {len(self.blocks_)} blocks ({self.blocks_[0]} ... "
                f"{self.blocks_[-1]}). Use at most {len(self.blocks_)} or 'all'."
            )

    def _trains(self, name: str, body: nn.Module, depth: dict) -> bool:
        layers = self.train_layers
        if layers == "head":
            return False
        if layers == "all":
            return True
        if layers == "norm":
            owner = body.get_submodule(name.rpartition(".")[0]) if "." in name else body
            return isinstance(owner, NORM_LAYERS)
        if isinstance(layers, Integral):
            self._check_block_count(layers, "train_layers")
            return depth[name] < layers
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in layers)

    def _add_lora(self, body: nn.Module, depth: dict) -> list[str]:
        if self.lora_rank == 0:
            return []
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:
            raise ValueError(
                "lora_rank > 0 needs peft: pip install 'sktransfer[lora]' (or pip install peft)."
            ) from None
        targets = [
            name
            for name, module in body.named_modules()
            if _lora_eligible(module) and self._in_lora_layers(name, module, depth)
        ]
        if not targets:
            # Not an error: grids such as {"lora_rank": [0, 4], "train_layers": ["head", "all"]}
            # must run; with everything trained, adapters would add nothing.
            warnings.warn(
                f"lora_rank={self.lora_rank} but no frozen nn.Linear or nn.Conv2d (groups=1) "
                f"layer is selected by lora_layers={self.lora_layers!r} and not already trained "
                f"by train_layers={self.train_layers!r}, so no adapter was added. Widen "
                "lora_layers or set lora_rank=0.",
                UserWarning,
                stacklevel=4,
            )
            return []
        trainable = {id(p) for p in body.parameters() if p.requires_grad}
        config = LoraConfig(
            r=self.lora_rank,
            lora_alpha=self.lora_alpha if self.lora_alpha is not None else self.lora_rank,
            lora_dropout=self.lora_dropout,
            target_modules="^(" + "|".join(re.escape(t) for t in targets) + ")$",
            init_lora_weights="gaussian",
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
            inject_adapter_in_model(config, body)
        for name, param in body.named_parameters():  # peft froze everything else
            param.requires_grad = "lora_" in name or id(param) in trainable
        return targets

    def _in_lora_layers(self, name, module, depth) -> bool:
        if any(p.requires_grad for p in module.parameters()):
            return False  # already fully trained: an adapter would add nothing
        layers = self.lora_layers
        if layers == "all":
            return True
        if isinstance(layers, Integral):
            self._check_block_count(layers, "lora_layers")
            return depth[_join(name, "weight")] < layers
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in layers)


def _own_params(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _lora_eligible(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.groups == 1  # peft's grouped/depthwise support is not what we want
    return isinstance(module, nn.Linear)


def _first_position(order: list[str], name: str) -> int:
    for index, node in enumerate(order):
        # a node inside the module, or a node that is a module enclosing it (traced as a leaf)
        if node == name or node.startswith(name + ".") or name.startswith(node + "."):
            return index
    return len(order)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def original_name(name: str) -> str:
    return name.replace(".base_layer", "")
