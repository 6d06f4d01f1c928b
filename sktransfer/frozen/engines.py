"""Engines: what runs a frozen, tapped network on a batch.

``engine="torch"`` runs the torchvision-tapped graph eagerly in inference mode (channels_last
for convolutions; on CUDA an opt-in bfloat16/float16 autocast). ``engine="onnxruntime"``
exports the same graph, with the per-layer statistics (average, maximum, flattened map)
computed inside it, through ``torch.onnx.export(..., dynamo=False)`` with a dynamic batch
size, and runs it in ONNX Runtime sessions, small batches side by side: about 4-4.5x eager
torch on 2 CPU cores (MobileNetV2).
``engine="auto"`` takes ONNX Runtime on the CPU and torch on CUDA.

Exported graphs are cached on disk (``<cache dir>/onnx/<key>.onnx.skt``), keyed by the
network's identity (architecture, weights, preprocessing), the layers and statistics, the input
shape and the torch/opset versions. Each file carries a keyed hash (HMAC-SHA256 with the
user's key, :mod:`sktransfer.frozen.secret`) of its bytes and its key: one that fails it
(damaged, or written by anyone without the key) is deleted and exported again, so a planted
graph is never loaded. A graph's first use in a process is checked against torch on up to 4
images: a relative difference above :data:`TOLERANCE` falls back to torch with an
:class:`EngineWarning` that says why (and deletes the graph), and so does a failed export
(naming the operator). The numbers never change silently.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .files import env_bytes, is_store_dir, make_store_dir, write_atomic
from .pooling import statistic
from .registry import Registry
from .secret import seal, unseal

__all__ = ["ENGINES", "PRECISIONS", "TOLERANCE", "EngineWarning", "resolve_engine"]

ENGINES = ("auto", "torch", "onnxruntime")
PRECISIONS = ("float32", "bfloat16", "float16")
#: Largest accepted difference between an exported graph and torch, relative to the largest
#: magnitude of torch's output (measured on MobileNetV2: about 2e-5).
TOLERANCE = 1e-4
_OPSET = 17
_MAGIC = b"SKTONNX2"
#: The names of exported graph files (and of their temporary files) in the export folder.
ONNX_FILES = r"[0-9a-f]{40}\.onnx\.skt|\.tmp-[a-z0-9_]+\.skt"
#: At most this many ONNX Runtime runs at once (each holds its own activations).
MAX_CONCURRENT_RUNS = 8


class EngineWarning(UserWarning):
    """An engine was asked for but another one runs, and why."""


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(engine: str, device: torch.device, precision: str = "float32") -> str:
    """Turn ``engine`` into ``"torch"`` or ``"onnxruntime"``, or raise a clear error."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}; got {engine!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}.")
    if engine == "torch":
        return "torch"
    if engine == "onnxruntime":
        if not onnxruntime_available():
            raise ImportError(
                "engine='onnxruntime' needs the onnxruntime package, which is not installed. "
                "It is a dependency of sktransfer: reinstall it with `pip install onnxruntime "
                "onnx`, or pass engine='torch' or engine='auto'."
            )
        if device.type != "cpu":
            raise ValueError(
                f"engine='onnxruntime' runs on the CPU only here, but device={device.type!r}. "
                "Pass device='cpu', or engine='auto' (torch on CUDA)."
            )
        if precision != "float32":
            raise ValueError(
                f"engine='onnxruntime' computes in float32; precision={precision!r} is a torch "
                "option. Pass engine='torch' (or 'auto' on CUDA) for half precision."
            )
        return "onnxruntime"
    if device.type != "cpu" or precision != "float32":
        return "torch"
    if not onnxruntime_available():
        _warn_once(
            "no-ort",
            "engine='auto' runs torch on the CPU because onnxruntime is not installed; "
            "it is a dependency of sktransfer: `pip install onnxruntime onnx` makes CPU "
            "extraction about 4x faster again.",
        )
        return "torch"
    return "onnxruntime"


_WARNED: set = set()


def _warn_once(key, message):
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, EngineWarning, stacklevel=4)


# --------------------------------------------------------------------------- statistics


class StatisticsGraph(nn.Module):
    """A tapped graph followed by the statistics in ``outputs`` (a list of (layer, statistic))."""

    def __init__(self, graph: nn.Module, outputs: list[tuple[str, str]]):
        super().__init__()
        self.graph = graph
        self.outputs = list(outputs)

    def forward(self, images):
        activations = self.graph(images)
        return tuple(statistic(activations[layer], stat) for layer, stat in self.outputs)


# --------------------------------------------------------------------------- torch


class TorchEngine:
    """Eager torch: inference mode, channels_last for convolutions, optional autocast."""

    name = "torch"
    concurrent_runs = 1  # torch parallelises inside each operator

    def __init__(self, graph: nn.Module, device: torch.device, precision: str = "float32"):
        self.graph = graph
        self.device = device
        self.precision = precision
        self.channels_last = any(isinstance(m, nn.Conv2d) for m in graph.modules())

    def activations(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            batch = batch.to(self.device, non_blocking=True)
            if self.channels_last and batch.ndim == 4:
                batch = batch.contiguous(memory_format=torch.channels_last)
            if self.precision == "float32":
                return self.graph(batch)
            dtype = getattr(torch, self.precision)
            with torch.autocast(self.device.type, dtype=dtype):
                return self.graph(batch)

    def run(self, batch: torch.Tensor, outputs) -> list[np.ndarray]:
        activations = self.activations(batch)
        with torch.inference_mode():
            return [
                statistic(activations[layer], stat).float().cpu().numpy() for layer, stat in outputs
            ]


# --------------------------------------------------------------------------- onnxruntime


class OnnxRuntimeEngine:
    """An ONNX Runtime CPU session on the exported statistics graph.

    ``concurrent_runs`` batches may run at once (``session.run`` is thread-safe), each on
    its own intra-op threads: see :func:`split_threads`.
    """

    name = "onnxruntime"

    def __init__(self, session, file=None, concurrent_runs=1):
        self.session = session
        self.file = file  # the cached exported graph it was loaded from
        self.input_name = session.get_inputs()[0].name
        self.concurrent_runs = concurrent_runs

    def run(self, batch: torch.Tensor, outputs=None) -> list[np.ndarray]:
        array = batch.detach().cpu().contiguous().numpy().astype(np.float32, copy=False)
        return self.session.run(None, {self.input_name: array})


#: (export key, threads) -> OnnxRuntimeEngine, or the reason torch runs instead.
_SESSIONS = Registry(4)


def export_key(identity: str, layers, outputs, input_shape) -> str:
    """What an exported graph depends on, hashed: the same key means the same file."""
    text = "|".join(
        [
            identity,
            ",".join(layers),
            repr(list(outputs)),
            repr(tuple(input_shape)),
            torch.__version__,
        ]
        + [f"opset{_OPSET}"]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def onnx_engine(
    torch_engine: TorchEngine,
    *,
    key: str,
    outputs,
    sample: torch.Tensor,
    n_threads: int,
    export_dir: Path,
    what: str,
):
    """An :class:`OnnxRuntimeEngine` checked against torch on ``sample``, or None after an
    :class:`EngineWarning` saying why torch runs instead (export failure, mismatch)."""
    known = _SESSIONS.get((key, n_threads))
    if known is not None:
        return known if isinstance(known, OnnxRuntimeEngine) else None
    engine, reason = _build_checked(torch_engine, key, outputs, sample, n_threads, export_dir)
    if engine is None:
        warnings.warn(
            f"engine='onnxruntime' cannot run {what}: {reason} Running torch instead; the "
            "features are torch's. Pass engine='torch' to choose it explicitly.",
            EngineWarning,
            stacklevel=4,
        )
    _SESSIONS.put((key, n_threads), engine if engine is not None else reason)
    return engine


def _build_checked(torch_engine, key, outputs, sample, n_threads, export_dir):
    file = Path(export_dir) / f"{key}.onnx.skt"
    model = _read_export(file)
    if model is None:
        try:
            model = export_onnx(torch_engine.graph, outputs, sample)
        except Exception as exc:  # the exporter raises many types; all mean "cannot export"
            return None, f"the ONNX export failed{_operator_of(exc)} ({type(exc).__name__}: " + (
                f"{_first_line(exc)})."
            )
        with contextlib.suppress(OSError):  # a read-only cache only costs the next export
            _write_export(file, model)
    runs, intra_op_threads = split_threads(n_threads)
    try:
        session = _session(model, intra_op_threads)
    except Exception as exc:
        return None, f"ONNX Runtime could not load the exported graph ({_first_line(exc)})."
    engine = OnnxRuntimeEngine(session, file, concurrent_runs=runs)
    expected = torch_engine.run(sample, outputs)
    got = engine.run(sample, outputs)
    for (layer, stat), want, have in zip(outputs, expected, got):
        scale = max(float(np.abs(want).max()), 1e-12)
        error = float(np.abs(want - have).max()) / scale
        if not np.isfinite(error) or error > TOLERANCE:
            # Ours (just written, or sealed with the user's key): later processes export
            # again rather than reuse it.
            with contextlib.suppress(OSError):
                file.unlink()
            return None, (
                f"its output {layer!r} ({stat}) differs from torch's by {error:.2e} relative to "
                f"its scale on {len(sample)} images, above the tolerance {TOLERANCE:g}."
            )
    return engine, None


def export_onnx(graph: nn.Module, outputs, sample: torch.Tensor) -> bytes:
    """Export ``graph`` with the statistics of ``outputs`` to ONNX bytes, dynamic batch size."""
    # A copy: moving to the CPU and the default memory format must not touch the torch graph.
    module = StatisticsGraph(copy.deepcopy(graph), outputs).eval().cpu()
    module = module.to(memory_format=torch.contiguous_format)
    names = [f"out{i}" for i in range(len(outputs))]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values; checked below
        torch.onnx.export(
            module,
            (sample[:2].float().cpu().contiguous(),),
            buffer,
            dynamo=False,
            input_names=["images"],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in ["images", *names]},
            opset_version=_OPSET,
        )
    return buffer.getvalue()


def _session(model: bytes, n_threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(n_threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _read_export(file: Path) -> bytes | None:
    """The exported graph in ``file``, or None when absent, damaged, or not written with the
    user's key (:mod:`.secret`; the key also binds the graph to its export key, the file's
    name): such a file is deleted, and the graph exported again."""
    try:
        data = file.read_bytes()
    except OSError:
        return None
    model = unseal(_MAGIC, _graph_name(file), data)
    if model is not None:
        with contextlib.suppress(OSError):
            os.utime(file)  # least recently used bookkeeping
        return model
    _discard(file)
    return None


def _discard(file: Path) -> None:
    """Delete a graph file that may not be ours (it failed the key's check, or the size bound
    evicts it): only a name the store gives its graphs, in a folder the store created;
    elsewhere it is left alone (and, failing the check, never served)."""
    if re.fullmatch(ONNX_FILES, file.name) and is_store_dir(file.parent):
        with contextlib.suppress(OSError):
            file.unlink()


def _graph_name(file: Path) -> str:
    return f"onnx graph {file.name.removesuffix('.onnx.skt')}"


def _write_export(file: Path, model: bytes) -> None:
    """Store an exported graph; then keep the folder under ``$SKTRANSFER_CACHE_ONNX_BYTES``
    (default 2 GiB) by deleting the least recently used graphs (random-weight networks each
    export their own)."""
    make_store_dir(file.parent)
    write_atomic(file, seal(_MAGIC, _graph_name(file), model))
    if not is_store_dir(file.parent):  # a folder the store did not create: none deleted
        return
    bound = env_bytes("SKTRANSFER_CACHE_ONNX_BYTES", 2 * 2**30)
    graphs = []
    for other in file.parent.iterdir():
        if not re.fullmatch(ONNX_FILES, other.name) or other.name.startswith("."):
            continue
        with contextlib.suppress(OSError):
            stat = other.stat()
            graphs.append((stat.st_mtime_ns, stat.st_size, other))
    total = sum(size for _, size, _ in graphs)
    for _, size, other in sorted(graphs):
        if total <= bound or other == file:
            break
        _discard(other)
        total -= size


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _operator_of(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"operator '?([\w.]+::[\w.]+)'?", text) or re.search(
        r"([a-z_]+::[\w.]+)", text
    )
    if match:
        return f" at operator {match.group(1)!r}"
    match = re.search(r"Python operator (\w+)", text)
    return f" at the custom operator {match.group(1)!r}" if match else ""


def split_threads(n_threads: int) -> tuple[int, int]:
    """``(concurrent runs, intra-op threads per run)`` for ONNX Runtime on ``n_threads``.

    Batches run side by side, one thread each, rather than one batch at a time on all the
    threads: a network's small operators leave parallel threads waiting at every barrier.
    Measured on 2 idle cores (MobileNetV2, Caltech-101 arrays, preprocessing included):
    about 208 images/s against 186 (one session, 2 intra-op threads, batch 8), and steadier.
    Beyond :data:`MAX_CONCURRENT_RUNS` runs, each run gets more threads instead, which bounds
    the activations held at once.
    """
    n_threads = max(1, int(n_threads))
    runs = min(n_threads, MAX_CONCURRENT_RUNS)
    return runs, n_threads // runs


def default_threads(n_jobs) -> int:
    """Intra-op threads: ``n_jobs`` when given, else the machine's cores."""
    return int(n_jobs) if n_jobs else (os.cpu_count() or 1)
