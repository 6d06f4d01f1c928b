"""sktransfer: transfer learning as scikit-learn estimators.

Feature extraction from pretrained networks (DeCAF), post-processing of deep features, and
(see the other modules) fine-tuning, distillation and pruning, all as estimators that compose
in Pipelines and GridSearchCV.

``import sktransfer`` imports none of its modules: each public name is imported on first use
(``from sktransfer import DeepFeatureExtractor`` or ``sktransfer.DeepFeatureExtractor``), so a
program pays only for what it uses (the analysis tools pull in pandas and scipy, the training
estimators skorch, the plots matplotlib). ``benchmarks/import_time.py`` measures it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__  # noqa: F401  (sktransfer.__version__)

#: Each public name and the submodule that defines it, imported when the name is first used.
_LAZY = {
    "Backbone": "backbones",
    "block_layers": "backbones",
    "list_backbones": "backbones",
    "list_layers": "backbones",
    "load_backbone": "backbones",
    "DeepFeatureExtractor": "extraction",
    "FineTuneClassifier": "finetune",
    "TransferredBlocks": "layer_transfer",
    "transfer_blocks": "layer_transfer",
    "transferable_blocks": "layer_transfer",
    "DiskCache": "frozen",
    "MemoryCache": "frozen",
    "clear_cache": "frozen",
    "EngineWarning": "frozen",
    "check_images": "images",
    "load_image_folder": "images",
    "PrunedClassifier": "pruning",
    "plot_lottery": "pruning",
    "LayerwiseNormalizer": "postprocessing",
    "TernaryDiscretizer": "postprocessing",
    "make_full_network_embedding": "postprocessing",
    "build_report": "report",
    "DistilledClassifier": "distillation",
    "born_again": "distillation",
    "BornAgainEnsemble": "distillation",
    "LabelRefinery": "distillation",
    "build_student": "distillation",
    "h_score": "analysis",
    "leep_score": "analysis",
    "linear_cka": "analysis",
    "logme_score": "analysis",
    "rank_layers": "analysis",
    "rbf_cka": "analysis",
    "StoreWarning": "frozen",
    "FullNetworkScaler": "postprocessing",
    "full_network_layers": "postprocessing",
    "ExtractJobError": "extract_job",
    "extract_features": "extract_job",
    "parallel_predict": "parallel_predict",
    "FootprintCallback": "footprint",
    "footprint": "footprint",
    "MaxNorm": "constraints",
    "MixUp": "mixup",
    "bit_hyperrule": "hyperrule",
}
#: Public submodules reachable as attributes (``sktransfer.analysis.plot_tsne_pair``).
_SUBMODULES = ("analysis",)

# Written out (not computed) so that linters see what the TYPE_CHECKING imports below serve.
__all__ = [
    "MaxNorm",
    "ExtractJobError",
    "FootprintCallback",
    "FullNetworkScaler",
    "StoreWarning",
    "extract_features",
    "footprint",
    "full_network_layers",
    "parallel_predict",
    "Backbone",
    "BornAgainEnsemble",
    "DeepFeatureExtractor",
    "DiskCache",
    "DistilledClassifier",
    "EngineWarning",
    "FineTuneClassifier",
    "LabelRefinery",
    "LayerwiseNormalizer",
    "MemoryCache",
    "MixUp",
    "PrunedClassifier",
    "TernaryDiscretizer",
    "TransferredBlocks",
    "analysis",
    "bit_hyperrule",
    "block_layers",
    "born_again",
    "build_report",
    "build_student",
    "check_images",
    "clear_cache",
    "h_score",
    "leep_score",
    "linear_cka",
    "list_backbones",
    "list_layers",
    "load_backbone",
    "load_image_folder",
    "logme_score",
    "make_full_network_embedding",
    "plot_lottery",
    "rank_layers",
    "rbf_cka",
    "transfer_blocks",
    "transferable_blocks",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what static analysers and IDEs see; nothing is imported at run time
    from . import analysis
    from .analysis import h_score, leep_score, linear_cka, logme_score, rank_layers, rbf_cka
    from .backbones import Backbone, block_layers, list_backbones, list_layers, load_backbone
    from .constraints import MaxNorm
    from .distillation import (
        BornAgainEnsemble,
        DistilledClassifier,
        LabelRefinery,
        born_again,
        build_student,
    )
    from .extract_job import ExtractJobError, extract_features
    from .extraction import DeepFeatureExtractor
    from .finetune import FineTuneClassifier
    from .footprint import FootprintCallback, footprint
    from .frozen import DiskCache, EngineWarning, MemoryCache, StoreWarning, clear_cache
    from .hyperrule import bit_hyperrule
    from .images import check_images, load_image_folder
    from .layer_transfer import TransferredBlocks, transfer_blocks, transferable_blocks
    from .mixup import MixUp
    from .parallel_predict import parallel_predict
    from .postprocessing import (
        FullNetworkScaler,
        LayerwiseNormalizer,
        TernaryDiscretizer,
        full_network_layers,
        make_full_network_embedding,
    )
    from .pruning import PrunedClassifier, plot_lottery
    from .report import build_report
