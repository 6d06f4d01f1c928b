"""sktransfer: transfer learning as scikit-learn estimators.

Feature extraction from pretrained networks (DeCAF), post-processing of deep features, and
(see the other modules) fine-tuning, distillation and pruning, all as estimators that compose
in Pipelines and GridSearchCV.
"""

from . import analysis
from ._version import __version__  # noqa: E402, F401
from .analysis import (
    h_score,
    leep_score,
    linear_cka,
    logme_score,
    rank_layers,
    rbf_cka,
)
from .backbones import Backbone, block_layers, list_backbones, list_layers, load_backbone
from .extraction import DeepFeatureExtractor
from .finetune import FineTuneClassifier
from .frozen import DiskCache, EngineWarning, MemoryCache, StoreWarning, clear_cache
from .images import check_images, load_image_folder
from .lottery import PrunedClassifier, plot_lottery
from .postprocessing import (
    FullNetworkScaler,
    LayerwiseNormalizer,
    TernaryDiscretizer,
    full_network_layers,
    make_full_network_embedding,
)
from .report import build_report

__all__ = [
    "Backbone",
    "DeepFeatureExtractor",
    "FineTuneClassifier",
    "LayerwiseNormalizer",
    "TernaryDiscretizer",
    "FullNetworkScaler",
    "full_network_layers",
    "block_layers",
    "check_images",
    "list_backbones",
    "list_layers",
    "load_backbone",
    "load_image_folder",
    "make_full_network_embedding",
    "analysis",
    "h_score",
    "leep_score",
    "linear_cka",
    "logme_score",
    "rank_layers",
    "rbf_cka",
    "DiskCache",
    "MemoryCache",
    "clear_cache",
    "EngineWarning",
    "StoreWarning",
    "PrunedClassifier",
    "plot_lottery",
    "build_report",
]

from .distilled import DistilledClassifier, born_again  # noqa: E402
from .students import build_student  # noqa: E402

__all__ += ["DistilledClassifier", "born_again", "build_student"]

from .extract_job import ExtractJobError, extract_features  # noqa: E402
from .parallel_predict import parallel_predict  # noqa: E402

__all__ += ["ExtractJobError", "extract_features", "parallel_predict"]

from .footprint import FootprintCallback, footprint  # noqa: E402

__all__ += ["FootprintCallback", "footprint"]
