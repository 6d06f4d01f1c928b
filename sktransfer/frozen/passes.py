"""The frozen pass: images through a tapped network to per-layer statistics, once.

:func:`run_statistics` streams batches from :class:`~sktransfer.images.ImageInputs` through a
:class:`~sktransfer.frozen.network.FrozenNetwork` (side by side when the engine runs several
batches at once) into arrays allocated once. :func:`stored_statistics` puts the activation
store in front of it: images already seen by the same network (any estimator, any clone, any
process sharing a disk store) are read back, the others computed once and stored.
:func:`pooled_features` is the pooling on top. Every frozen forward pass of the library
(DeepFeatureExtractor, FineTuneClassifier's frozen body, network teachers, the analysis
tools and the report) goes through these functions.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..decoding import decoding_signature
from ..images import ImageInputs
from ..progress import progress_bar
from .network import FrozenNetwork
from .pooling import features_from_statistics, pooling_statistics
from .store import image_keys

__all__ = [
    "batching",
    "pooled_features",
    "run_statistics",
    "store_context",
    "stored_statistics",
]


def batching(
    network: FrozenNetwork, n_samples: int, *, batch_size="auto", n_jobs=None, verbose=0
) -> dict:
    """How a pass over ``n_samples`` images runs: ``batch_size``, decoding ``n_workers`` and
    ``verbose``, the same for every estimator so that each gets the engine's best speed.

    ``batch_size="auto"``: 64 on a GPU; on a CPU 2 with ONNX Runtime, which runs several such
    batches side by side, one thread each (MobileNetV2 on 2 idle cores: 209-232 images/s at
    batch 2, 196-207 at 4, 195 at 8; see :func:`~sktransfer.frozen.engines.split_threads`),
    and 16 with torch. ``n_workers``: ``n_jobs``, else the cores (at most 8).
    """
    if batch_size == "auto":
        batch_size = 64 if network.device.type == "cuda" else 16
        batch_size = 2 if network.engine == "onnxruntime" else batch_size
    n_workers = n_jobs or min(8, os.cpu_count() or 1)
    return {
        "batch_size": batch_size,
        "n_workers": n_workers,
        "verbose": bool(verbose) and n_samples > batch_size,
    }


def run_statistics(
    network: FrozenNetwork,
    inputs: ImageInputs,
    requested,
    *,
    batch_size: int,
    n_workers: int = 1,
    verbose: int = 0,
) -> dict[tuple[str, str], np.ndarray]:
    """Run ``network`` over ``inputs``: ``{(layer, statistic): (n_samples, F) float32}``.

    ``requested`` is a pooling, a tuple of statistics, or a dict of either per layer (see
    :meth:`FrozenNetwork.outputs`). Outputs are written into arrays allocated once, so peak
    memory is the statistics plus a few batches, whatever the number of images. An engine
    that runs several batches at once (ONNX Runtime on several cores) gets them side by side.
    """
    n = len(inputs)
    results: dict[tuple[str, str], np.ndarray] = {}
    transform = network.backbone.transform
    progress = progress_bar(
        total=n, desc=f"{network.backbone.name} features", unit="img", disable=not verbose
    )

    def store(start, stop, stats):
        for item, values in stats.items():
            if item not in results:
                results[item] = np.empty((n, values.shape[1]), dtype=np.float32)
            results[item][start:stop] = values
        progress.update(stop - start)

    with progress:
        if n == 0:
            return results
        first = inputs.batch(0, min(batch_size, n), transform)
        outputs = network.outputs(first, requested)
        store(0, len(first), network.statistics(first, outputs))
        runs = network.concurrent_runs(first, outputs)
        if runs == 1:
            start = len(first)
            for batch in inputs.batches(transform, batch_size, n_workers, start=start):
                store(start, start + len(batch), network.statistics(batch, outputs))
                start += len(batch)
        else:
            _run_side_by_side(network, inputs, transform, batch_size, outputs, runs, store)
    return results


def _run_side_by_side(network, inputs, transform, batch_size, outputs, runs, store) -> None:
    """Run the batches after the first ``runs`` at a time, each prepared (decoded, resized) in
    the thread that runs it, storing results in order; at most ``2 * runs`` batches are in
    flight, so memory stays bounded."""

    def prepare_and_run(start, stop):
        return network.statistics(inputs.batch(start, stop, transform), outputs)

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


def store_context(network: FrozenNetwork) -> str:
    """What determines a stored entry's numbers apart from the image: the network's identity
    (architecture, weights, preprocessing), the engine, the device type, the precision and how
    files are decoded (reduced JPEG decoding on or off)."""
    parts = [network.identity, network.engine, network.device.type, network.precision]
    return "|".join([*parts, decoding_signature()])


def stored_statistics(
    network: FrozenNetwork,
    inputs: ImageInputs,
    needed: dict[str, tuple[str, ...]],
    *,
    store=None,
    record: dict[str, tuple[str, ...]] | None = None,
    batch_size: int,
    n_workers: int = 1,
    verbose: int = 0,
) -> dict[tuple[str, str], np.ndarray]:
    """``{(layer, statistic): (n_samples, F)}`` for the statistics ``needed`` per layer.

    With a ``store`` (:class:`~sktransfer.frozen.store.MemoryCache` or
    :class:`~sktransfer.frozen.store.DiskCache`), images whose entries hold every needed
    statistic are read back; the others go through the network once, computing ``record``
    (default: ``needed``; a superset lets later calls asking for other poolings or layers
    of the same network be served too) and storing it.
    """
    batching = {"batch_size": batch_size, "n_workers": n_workers, "verbose": verbose}
    if store is None:
        return run_statistics(network, inputs, needed, **batching)
    context = store_context(network)
    keys = image_keys(inputs)
    outputs = {(layer, stat) for layer, stats in needed.items() for stat in stats}
    found = store.get(context, keys, outputs)
    if any(entry is None for entry in found):
        with store.locked(context):  # another process may be computing the same misses
            _fill_misses(
                network, inputs, store, context, keys, outputs, found, record or needed, batching
            )
    return {item: np.stack([entry[item] for entry in found]) for item in outputs}


def _fill_misses(network, inputs, store, context, keys, outputs, found, record, batching):
    missing = [i for i, entry in enumerate(found) if entry is None]
    for i, entry in zip(missing, store.get(context, [keys[i] for i in missing], outputs)):
        found[i] = entry  # computed by another process while this one waited for the lock
    missing = [i for i, entry in enumerate(found) if entry is None]
    if not missing:
        return
    batching = {**batching, "verbose": batching["verbose"] and len(missing) > 1}
    stats = run_statistics(network, inputs.take(missing), record, **batching)
    entries = {}
    for row, i in enumerate(missing):
        entry = {item: values[row].copy() for item, values in stats.items()}
        entries[keys[i]] = entry
        found[i] = entry
    store.put(context, entries)


def pooled_features(
    network: FrozenNetwork,
    inputs: ImageInputs,
    *,
    pooling: str | None,
    layers: list[str] | None = None,
    store=None,
    record: dict[str, tuple[str, ...]] | None = None,
    batch_size: int,
    n_workers: int = 1,
    verbose: int = 0,
) -> dict[str, np.ndarray]:
    """Each of ``layers``' (default: every tapped layer) pooled features of ``inputs``,
    float32, through the ``store`` when there is one (see :func:`stored_statistics`)."""
    layers = list(network.layers if layers is None else layers)
    if len(inputs) == 0:
        return {layer: np.empty((0, 0), np.float32) for layer in layers}
    shapes = network.layer_shapes(inputs.batch(0, 1, network.backbone.transform))
    ndims = {layer: len(shapes[layer]) + 1 for layer in layers}
    needed = {layer: pooling_statistics(pooling, ndims[layer]) for layer in layers}
    stats = stored_statistics(
        network,
        inputs,
        needed,
        store=store,
        record=record,
        batch_size=batch_size,
        n_workers=n_workers,
        verbose=verbose,
    )
    return {
        layer: features_from_statistics(
            {stat: stats[(layer, stat)] for stat in needed[layer]}, pooling, ndims[layer]
        )
        for layer in layers
    }
