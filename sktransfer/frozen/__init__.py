"""The frozen pass: every forward pass of a pretrained network that does not train it.

One package owns it, so each image goes through each network once and every consumer (the
feature extractor, head-only fine-tuning fit and predict, network teachers, the analysis tools
and the report) gets the same numbers at the same speed:

- :mod:`~sktransfer.frozen.pooling`: the statistics a layer is summarised by, and the
  poolings made of them (one definition);
- :mod:`~sktransfer.frozen.engines`: what runs a tapped network (eager torch, ONNX Runtime),
  resolved once per estimator;
- :mod:`~sktransfer.frozen.network`: the tapped network (torchvision's
  ``create_feature_extractor``) and the registry that shares it between clones;
- :mod:`~sktransfer.frozen.store`: the activation store (memory, or a folder shared by
  processes), keyed by image and network;
- :mod:`~sktransfer.frozen.files`: how the store's files are written, and which are its own;
- :mod:`~sktransfer.frozen.secret`: the user's key, and the keyed hash every stored file
  carries;
- :mod:`~sktransfer.frozen.registry`: the one bounded table every process-wide memo uses;
- :mod:`~sktransfer.frozen.passes`: the pass itself, through the store.
"""

from .engines import ENGINES, PRECISIONS, EngineWarning, resolve_engine
from .files import StoreWarning, default_cache_dir
from .network import FORWARD_COUNTS, FrozenNetwork, check_layers, has_lazy, tapped_network
from .passes import batching, pooled_features, run_statistics, store_context, stored_statistics
from .pooling import (
    POOLINGS,
    STATISTICS,
    features_from_statistics,
    pool,
    pooled_width,
    pooling_statistics,
)
from .registry import Registry
from .secret import StoreKeyError
from .store import DiskCache, MemoryCache, clear_cache, get_cache, image_keys

__all__ = [
    "ENGINES",
    "FORWARD_COUNTS",
    "POOLINGS",
    "PRECISIONS",
    "STATISTICS",
    "DiskCache",
    "EngineWarning",
    "FrozenNetwork",
    "MemoryCache",
    "Registry",
    "StoreKeyError",
    "StoreWarning",
    "check_layers",
    "clear_cache",
    "default_cache_dir",
    "batching",
    "get_cache",
    "has_lazy",
    "image_keys",
    "pool",
    "features_from_statistics",
    "pooled_features",
    "pooled_width",
    "resolve_engine",
    "run_statistics",
    "pooling_statistics",
    "store_context",
    "stored_statistics",
    "tapped_network",
]
