"""Activations: the one seam for frozen forward passes.

A :class:`FrozenNetwork` is a backbone tapped at chosen layers (torchvision's
``create_feature_extractor``), placed on a device and run for inference by an engine
(:mod:`sktransfer.engines`: eager torch or ONNX Runtime). Every frozen forward pass of the
project goes through it: :func:`extract_statistics` streams batches from
:class:`~sktransfer.images.ImageInputs` and returns per-layer statistics (average, maximum,
flattened map), which :func:`extract_activations` turns into pooled features.
"""

from __future__ import annotations

import difflib
import threading
import warnings
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from tqdm.auto import tqdm

from .backbones import Backbone, _tappable
from .engines import (
    TorchEngine,
    default_threads,
    export_key,
    onnx_engine,
    resolve_engine,
)
from .images import ImageInputs

__all__ = [
    "FrozenNetwork",
    "extract_activations",
    "extract_statistics",
    "check_layers",
    "forms_for",
    "assemble",
    "FORWARD_COUNTS",
]

#: Images and batches run through frozen networks in this process (probes included), for
#: tests and benchmarks that show what a cache saved.
FORWARD_COUNTS: Counter = Counter()
_COUNT_LOCK = threading.Lock()
_SHAPES: dict[tuple, dict] = {}  # (network identity, input shape) -> {layer: shape}


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


def forms_for(pooling: str | None, ndim: int) -> tuple[str, ...]:
    """The statistics (see :func:`sktransfer.engines.statistic`) a pooling is made of."""
    if ndim == 2:
        return ("vec",)
    return {"avg": ("avg",), "max": ("max",), "avgmax": ("avg", "max"), None: ("flat",)}[pooling]


def assemble(stats: dict[str, np.ndarray], pooling: str | None, ndim: int) -> np.ndarray:
    """A layer's pooled features from its statistics: exactly ``pool(activation, pooling)``."""
    parts = [stats[form] for form in forms_for(pooling, ndim)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


class FrozenNetwork:
    """A backbone tapped at ``layers``, on ``device``, for inference only.

    Parameters
    ----------
    backbone : Backbone
    layers : list of str
    device : torch.device
    engine : {"auto", "torch", "onnxruntime"}, default="torch"
        Who runs :meth:`statistics` (see :mod:`sktransfer.engines`). :meth:`__call__` (raw
        activations) always runs torch.
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
        self.engine = resolve_engine(engine, self.device, precision)
        self.precision = precision
        self.n_threads = default_threads(n_threads)
        if export_dir is None:
            from .cache import default_cache_dir

            export_dir = default_cache_dir() / "onnx"
        self.export_dir = Path(export_dir)
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
            if not self._lazy():
                self._identity = identity
            return identity
        return self._identity

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw activations of every tapped layer (torch), for probes and analysis."""
        _count(len(batch))
        activations = self._torch.activations(batch)
        shapes = {k: tuple(v.shape[1:]) for k, v in activations.items()}
        self._shapes.setdefault(tuple(batch.shape[1:]), shapes)
        if not self._lazy():
            _SHAPES.setdefault((self.identity, tuple(batch.shape[1:])), {}).update(shapes)
        return activations

    def layer_shapes(self, batch: torch.Tensor) -> dict[str, tuple]:
        """Each layer's activation shape for one sample of ``batch``, probed once per input
        size and network (any tapped graph of the same network shares the probe)."""
        size = tuple(batch.shape[1:])
        shapes = self._shapes.get(size)
        if shapes is None and not self._lazy():
            known = _SHAPES.get((self.identity, size), {})
            if all(layer in known for layer in self.layers):
                shapes = self._shapes[size] = {layer: known[layer] for layer in self.layers}
        if shapes is None:
            self(batch[:1])
            shapes = self._shapes[size]
        return shapes

    def _lazy(self) -> bool:
        return any(
            isinstance(p, nn.parameter.UninitializedParameter)
            for p in self.backbone.module.parameters()
        )

    def spec(self, batch: torch.Tensor, forms) -> list[tuple[str, str]]:
        """``[(layer, form), ...]`` for ``forms`` (a pooling or a tuple of statistics per layer,
        or a dict of either per layer), vectors reduced to ``"vec"``."""
        shapes = self.layer_shapes(batch)
        spec = []
        for layer in self.layers:
            wanted = forms.get(layer, ()) if isinstance(forms, dict) else forms
            if wanted is None or isinstance(wanted, str):
                wanted = forms_for(wanted, len(shapes[layer]) + 1)
            elif len(shapes[layer]) == 1:
                wanted = ("vec",) if wanted else ()
            spec += [(layer, form) for form in wanted if (layer, form) not in spec]
        return spec

    def statistics(self, batch: torch.Tensor, spec) -> dict[tuple[str, str], np.ndarray]:
        """Run the engine on ``batch``: ``{(layer, form): (N, F) float32 array}``."""
        engine = self._engine(batch, spec)
        _count(len(batch))
        outputs = engine.run(batch, spec)
        return {item: np.asarray(out, dtype=np.float32) for item, out in zip(spec, outputs)}

    def _engine(self, batch, spec):
        if self.engine == "torch":
            return self._torch
        where = (tuple(spec), tuple(batch.shape[1:]))
        if where not in self._engines:
            key = export_key(self.identity, self.layers, spec, batch.shape[1:])
            engine = onnx_engine(
                self._torch,
                key=key,
                spec=spec,
                sample=batch[:4],
                n_threads=self.n_threads,
                export_dir=self.export_dir,
                what=f"{self.backbone.name} tapped at {self.layers}",
            )
            if engine is not None:
                _count(min(len(batch), 4))  # the first-use check ran torch on these
            self._engines[where] = engine if engine is not None else self._torch
        return self._engines[where]

    def concurrent_runs(self, batch: torch.Tensor, spec) -> int:
        """How many batches like ``batch`` the engine runs at once (1 for torch)."""
        return self._engine(batch, spec).concurrent_runs

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


def extract_statistics(
    network: FrozenNetwork,
    inputs: ImageInputs,
    forms,
    *,
    batch_size: int,
    n_workers: int = 1,
    verbose: int = 0,
) -> dict[tuple[str, str], np.ndarray]:
    """Run ``network`` over ``inputs``: ``{(layer, form): (n_samples, F) float32}``.

    ``forms`` is a pooling, a tuple of statistics, or a dict of either per layer (see
    :meth:`FrozenNetwork.spec`). Outputs are written into arrays allocated once, so peak
    memory is the statistics plus a few batches, whatever the number of images. An engine
    that runs several batches at once (ONNX Runtime on several cores) gets them side by side.
    """
    n = len(inputs)
    outputs: dict[tuple[str, str], np.ndarray] = {}
    transform = network.backbone.transform
    progress = tqdm(
        total=n, desc=f"{network.backbone.name} features", unit="img", disable=not verbose
    )

    def store(start, stop, stats):
        for item, values in stats.items():
            if item not in outputs:
                outputs[item] = np.empty((n, values.shape[1]), dtype=np.float32)
            outputs[item][start:stop] = values
        progress.update(stop - start)

    with progress:
        if n == 0:
            return outputs
        first = inputs.batch(0, min(batch_size, n), transform)
        spec = network.spec(first, forms)
        store(0, len(first), network.statistics(first, spec))
        runs = network.concurrent_runs(first, spec)
        if runs == 1:
            start = len(first)
            for batch in inputs.batches(transform, batch_size, n_workers, start=start):
                store(start, start + len(batch), network.statistics(batch, spec))
                start += len(batch)
        else:
            _run_side_by_side(network, inputs, transform, batch_size, spec, runs, store)
    return outputs


def _run_side_by_side(network, inputs, transform, batch_size, spec, runs, store) -> None:
    """Run the batches after the first ``runs`` at a time, each prepared (decoded, resized) in
    the thread that runs it, storing results in order; at most ``2 * runs`` batches are in
    flight, so memory stays bounded."""

    def prepare_and_run(start, stop):
        return network.statistics(inputs.batch(start, stop, transform), spec)

    n = len(inputs)
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=runs) as pool:
        for start in range(min(batch_size, n), n, batch_size):
            stop = min(start + batch_size, n)
            pending.append((start, stop, pool.submit(prepare_and_run, start, stop)))
            if len(pending) >= 2 * runs:
                _store_result(pending.popleft(), store)
        while pending:
            _store_result(pending.popleft(), store)


def _store_result(item, store) -> None:
    start, stop, future = item
    store(start, stop, future.result())


def extract_activations(
    network: FrozenNetwork,
    inputs: ImageInputs,
    *,
    pooling: str | None,
    batch_size: int,
    n_workers: int = 1,
    verbose: int = 0,
) -> dict[str, np.ndarray]:
    """Run ``network`` over ``inputs`` and return each layer's pooled activations (float32)."""
    stats = extract_statistics(
        network, inputs, pooling, batch_size=batch_size, n_workers=n_workers, verbose=verbose
    )
    pooled = {}
    for layer in network.layers:
        per_form = {form: values for (name, form), values in stats.items() if name == layer}
        ndim = 2 if "vec" in per_form else 4
        pooled[layer] = assemble(per_form, pooling, ndim)
    return pooled
