"""The tapped network: a backbone tapped at chosen layers, on a device, for inference.

A :class:`FrozenNetwork` wraps torchvision's ``create_feature_extractor`` graph of a
:class:`~sktransfer.backbones.Backbone` and runs it with an engine
(:mod:`sktransfer.frozen.engines`: eager torch or ONNX Runtime), returning per-layer
statistics (:mod:`sktransfer.frozen.pooling`). :func:`tapped_network` shares one such network
between the clones of an estimator (the folds and candidates of a grid search).
"""

from __future__ import annotations

import difflib
import threading
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from ..backbones import Backbone, _tappable
from .engines import TorchEngine, default_threads, export_key, onnx_engine
from .files import default_cache_dir
from .pooling import pooling_statistics
from .registry import Registry

__all__ = ["FORWARD_COUNTS", "FrozenNetwork", "check_layers", "has_lazy", "tapped_network"]

#: Images and batches run through frozen networks in this process (probes included), for
#: tests and benchmarks that show what a cache saved.
FORWARD_COUNTS: Counter = Counter()
_COUNT_LOCK = threading.Lock()
#: (network identity, input shape) -> {layer: activation shape}: any tapped graph of the same
#: network shares one probe.
_SHAPES = Registry(64)
#: Tapped networks shared by the clones of an estimator (see :func:`tapped_network`).
_NETWORKS = Registry(8)


def has_lazy(module: nn.Module) -> bool:
    """Whether ``module`` has lazy parameters not yet initialised (their shapes, and so the
    network's identity, are known only after a first batch)."""
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters())


def check_layers(backbone: Backbone, layers: list[str]) -> None:
    """Raise a ValueError naming the valid layers when one of ``layers`` is unknown."""
    nodes = _tappable(backbone.module)
    unknown = [layer for layer in layers if layer not in nodes]
    if not unknown:
        return
    blocks = [n for n in nodes if n.count(".") <= 1 and not n.rpartition(".")[2].startswith("_")]
    close = difflib.get_close_matches(unknown[0], nodes, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(
        f"Layer(s) {unknown} not present in backbone {backbone.name!r}.{hint} "
        f"Valid layers include: {blocks}. All {len(nodes)} valid names: "
        f"sktransfer.list_layers({backbone.name!r})."
    )


class FrozenNetwork:
    """A backbone tapped at ``layers``, on ``device``, for inference only.

    Parameters
    ----------
    backbone : Backbone
    layers : list of str
    device : torch.device
    engine : {"torch", "onnxruntime"}, default="torch"
        Who runs :meth:`statistics`, already resolved by
        :func:`~sktransfer.frozen.engines.resolve_engine` (the estimator resolves its
        ``engine`` parameter once, in ``fit``). :meth:`__call__` (raw activations) always runs
        torch.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        Half precision is a torch autocast, for CUDA.
    n_threads : int, optional
        ONNX Runtime's intra-op threads; default: the machine's cores.
    export_dir : path, optional
        Where exported ONNX graphs are cached; default ``<default_cache_dir()>/onnx``.

    On the CPU, 4-D activations use the channels_last memory format, which torch's CPU
    convolutions run faster (measured: about 1.5x for MobileNetV2).
    """

    def __init__(
        self,
        backbone: Backbone,
        layers: list[str],
        device: torch.device,
        *,
        engine: str = "torch",
        precision: str = "float32",
        n_threads: int | None = None,
        export_dir=None,
    ):
        check_layers(backbone, layers)
        self.backbone = backbone
        self.layers = list(layers)
        self.device = torch.device(device)
        if engine not in ("torch", "onnxruntime"):
            raise ValueError(
                f"FrozenNetwork takes a resolved engine, 'torch' or 'onnxruntime'; got "
                f"{engine!r}. Resolve it first with sktransfer.frozen.resolve_engine."
            )
        self.engine = engine
        self.precision = precision
        self.n_threads = default_threads(n_threads)
        self.export_dir = (
            Path(export_dir) if export_dir is not None else default_cache_dir() / "onnx"
        )
        self._identity = None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NOTE: The nodes obtained by tracing")
            graph = create_feature_extractor(backbone.module, return_nodes=self.layers)
        graph = graph.eval().to(self.device)
        self._torch = TorchEngine(graph, self.device, precision)
        self.channels_last = self._torch.channels_last and self.device.type in ("cpu", "cuda")
        self._torch.channels_last = self.channels_last
        if self.channels_last:
            graph = graph.to(memory_format=torch.channels_last)
        self.graph = graph
        self._shapes: dict[tuple, dict[str, tuple]] = {}
        self._engines: dict[tuple, object] = {}

    @property
    def identity(self) -> str:
        """The backbone's identity (:attr:`Backbone.identity`), computed once its lazy
        parameters, if any, are initialised."""
        if self._identity is None:
            identity = self.backbone.identity
            if not has_lazy(self.backbone.module):
                self._identity = identity
            return identity
        return self._identity

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw activations of every tapped layer (torch), for probes and analysis."""
        _count(len(batch))
        activations = self._torch.activations(batch)
        shapes = {k: tuple(v.shape[1:]) for k, v in activations.items()}
        self._shapes.setdefault(tuple(batch.shape[1:]), shapes)
        if not has_lazy(self.backbone.module):
            key = (self.identity, tuple(batch.shape[1:]))
            _SHAPES.put(key, {**_SHAPES.get(key, {}), **shapes})
        return activations

    def layer_shapes(self, batch: torch.Tensor) -> dict[str, tuple]:
        """Each layer's activation shape for one sample of ``batch``, probed once per input
        size and network (any tapped graph of the same network shares the probe)."""
        size = tuple(batch.shape[1:])
        shapes = self._shapes.get(size)
        if shapes is None and not has_lazy(self.backbone.module):
            known = _SHAPES.get((self.identity, size), {})
            if all(layer in known for layer in self.layers):
                shapes = self._shapes[size] = {layer: known[layer] for layer in self.layers}
        if shapes is None:
            self(batch[:1])
            shapes = self._shapes[size]
        return shapes

    def outputs(self, batch: torch.Tensor, requested) -> list[tuple[str, str]]:
        """``[(layer, statistic), ...]`` that the engine computes for ``requested``: a pooling or
        a tuple of statistics for every layer, or a dict of either per layer. Layers that are
        vectors give ``"vec"`` whatever was asked."""
        shapes = self.layer_shapes(batch)
        outputs = []
        for layer in self.layers:
            asked = requested.get(layer, ()) if isinstance(requested, dict) else requested
            if asked is None or isinstance(asked, str):
                asked = pooling_statistics(asked, len(shapes[layer]) + 1)
            elif len(shapes[layer]) == 1:
                asked = ("vec",) if asked else ()
            outputs += [(layer, stat) for stat in asked if (layer, stat) not in outputs]
        return outputs

    def statistics(self, batch: torch.Tensor, outputs) -> dict[tuple[str, str], np.ndarray]:
        """Run the engine on ``batch``: ``{(layer, statistic): (N, F) float32 array}``."""
        engine = self._engine(batch, outputs)
        _count(len(batch))
        values = engine.run(batch, outputs)
        return {item: np.asarray(out, dtype=np.float32) for item, out in zip(outputs, values)}

    def _engine(self, batch, outputs):
        if self.engine == "torch":
            return self._torch
        where = (tuple(outputs), tuple(batch.shape[1:]))
        if where not in self._engines:
            key = export_key(self.identity, self.layers, outputs, batch.shape[1:])
            engine = onnx_engine(
                self._torch,
                key=key,
                outputs=outputs,
                sample=batch[:4],
                n_threads=self.n_threads,
                export_dir=self.export_dir,
                what=f"{self.backbone.name} tapped at {self.layers}",
            )
            if engine is not None:
                _count(min(len(batch), 4))  # the first-use check ran torch on these
            self._engines[where] = engine if engine is not None else self._torch
        return self._engines[where]

    def concurrent_runs(self, batch: torch.Tensor, outputs) -> int:
        """How many batches like ``batch`` the engine runs at once (1 for torch)."""
        return self._engine(batch, outputs).concurrent_runs

    @property
    def active_engine(self) -> str:
        """The engine that ran the last batches: ``"onnxruntime"`` or ``"torch"``."""
        if self.engine == "torch" or not self._engines:
            return self.engine
        return list(self._engines.values())[-1].name


def _count(n_images: int) -> None:
    with _COUNT_LOCK:
        FORWARD_COUNTS["images"] += n_images
        FORWARD_COUNTS["batches"] += 1


def tapped_network(
    backbone: Backbone,
    layers: list[str],
    device: torch.device,
    *,
    engine: str,
    precision: str = "float32",
    n_threads: int | None = None,
    export_dir=None,
) -> FrozenNetwork:
    """The process's :class:`FrozenNetwork` for these arguments, built once.

    Keyed by the backbone's identity (weights fingerprinted for modules and random weights),
    so the clones of an estimator holding equal networks share one tapped graph, its shape
    probes and its ONNX Runtime session. A network with lazy parameters is never shared: its
    identity is known only after its first batch.
    """
    lazy = has_lazy(backbone.module)
    key = None
    if not lazy:
        key = (
            backbone.identity,
            tuple(layers),
            str(device),
            engine,
            precision,
            n_threads,
            str(export_dir),
        )
        network = _NETWORKS.get(key)
        if network is not None:
            return network
    network = FrozenNetwork(
        backbone,
        layers,
        device,
        engine=engine,
        precision=precision,
        n_threads=n_threads,
        export_dir=export_dir,
    )
    if key is not None:
        _NETWORKS.put(key, network)
    return network
