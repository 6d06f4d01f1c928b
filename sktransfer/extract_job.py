"""Features for many images, on disk, as a resumable job: in one process or on Dask workers.

:func:`extract_features` (and ``sktransfer extract``) cuts the image list into chunks of
``chunk_size`` images, computes each chunk's features with a
:class:`~sktransfer.DeepFeatureExtractor` and writes it as one Parquet file (memory stays flat
in the number of images), then records it in the folder's manifest
(:mod:`sktransfer.extract_folder`). Run again, the same call skips the chunks already done,
so a job killed half-way (Ctrl-C, SIGKILL, out of memory) continues where it stopped, and the
files equal those of an uninterrupted run. Unreadable images are listed in
``_unreadable.csv`` with the reason and left out.

With ``workers=N`` (a local ``dask.distributed`` cluster of N processes) or ``scheduler=``
(a ``Client`` or a scheduler address) chunks run on Dask workers, each with its own network,
engine and threads, all writing to the one output folder (it must be reachable from every
worker, as must the images). The activation store (``cache``) serves images already extracted
by any earlier run with the same network.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .extract_folder import ExtractJobError, JobFolder, chunk_name
from .extraction import DeepFeatureExtractor
from .frozen import DiskCache, MemoryCache, Registry, default_cache_dir
from .frozen.files import write_atomic
from .images import check_images, load_image_folder

__all__ = ["EXTRACTOR_PARAMS", "ExtractJobError", "ExtractSummary", "extract_features"]

_FRONT_BYTES = 64 * 2**20  # the job store's memory front: flat in the number of images


@dataclass
class ExtractSummary:
    """What one call of :func:`extract_features` did.

    ``peak_rss_mb`` maps each worker (``"this process"`` without Dask) to its peak resident
    memory; ``chunk_times`` lists ``(seconds since the start, images)`` as chunks finished.
    """

    out: str
    n_images: int
    n_chunks: int
    chunks_resumed: int
    chunks_run: int
    images_run: int
    n_unreadable: int
    seconds: float
    peak_rss_mb: dict = field(default_factory=dict)
    chunk_times: list = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Images of the chunks run by this call per second of running them (starting a
        local cluster's workers included; ``chunk_times`` gives the steady rate)."""
        return self.images_run / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class _ChunkTask:
    index: int
    paths: list
    labels: list
    out: str
    job_key: str
    params: dict
    cache: str | None
    probe: str
    columns: list
    engine: str
    threads: int | None
    driver_pid: int


class _JobStore(DiskCache):
    """The activation store as a job uses it: a small memory front (memory stays flat in the
    number of images) and no cross-process wait, because the job's chunks never overlap
    (the shared store's per-network lock would otherwise run the workers one at a time)."""

    def __init__(self, path):
        super().__init__(path)
        self.front = MemoryCache(_FRONT_BYTES)

    def locked(self, context):
        return contextlib.nullcontext()

    def __reduce__(self):
        return (_JobStore, (str(self.path),))


#: The DeepFeatureExtractor parameters a job takes, and the defaults it gives them where they
#: differ from the extractor's: ``random_state`` seeds random weights, so that a resumed job
#: with ``weights=None`` computes the same network.
EXTRACTOR_PARAMS = (
    "backbone",
    "weights",
    "layers",
    "pooling",
    "engine",
    "batch_size",
    "random_state",
)
_JOB_DEFAULTS = {"random_state": 0}


def extract_features(
    data,
    out,
    *,
    labels=None,
    chunk_size=512,
    cache=None,
    n_jobs=None,
    workers=None,
    scheduler=None,
    verbose=1,
    **extractor_params,
) -> ExtractSummary:
    """Write the features of every image of ``data`` to Parquet files in ``out``, resumably.

    Parameters
    ----------
    data : path or sequence of paths
        A folder with one sub-folder of images per class (the label is the sub-folder's
        name), or image file paths.
    out : path
        The output folder: missing, empty, or the folder of an earlier run of the same job
        (which is then resumed). See :mod:`sktransfer.extract_folder` for its files;
        ``pandas.read_parquet(out)`` and ``dask.dataframe.read_parquet(out)`` read it.
    labels : sequence or None
        With paths as ``data``: one label per path (written as text), or None.
    chunk_size : int, default=512
        Images per Parquet file: the unit of work, of progress and of resuming.
    cache : path, False or None, default=None
        The activation store folder, serving images that any run of the same network already
        extracted. None: ``<user cache dir>/activations``. False: no store.
    n_jobs : int or None
        Threads. In one process or with ``workers``: the total, split evenly between the
        workers. With ``scheduler``: per worker (None: each worker's cores divided by its
        Dask threads).
    workers : int or None
        Run on a local ``dask.distributed`` cluster of this many worker processes.
    scheduler : distributed.Client, str or None
        Run on an existing Dask cluster: a ``Client`` or a scheduler address such as
        ``"tcp://10.0.0.5:8786"``. The workers must be able to read the images and write
        ``out`` at the same paths, and to import sktransfer.
    verbose : int, default=1
        A progress bar (images done, images/s, time left) across all workers.
    **extractor_params
        ``backbone``, ``weights``, ``layers``, ``pooling``, ``engine``, ``batch_size``,
        ``random_state`` (:data:`EXTRACTOR_PARAMS`): as for
        :class:`~sktransfer.DeepFeatureExtractor`, except ``random_state=0``.

    Returns
    -------
    ExtractSummary

    Raises
    ------
    ExtractJobError
        ``out`` holds files that are not this job's, or another job's features.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, pandas as pd
    >>> from PIL import Image
    >>> from torch import nn
    >>> from sktransfer import extract_features
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for label in ("ants", "bees"):
    ...     (folder := root / "images" / label).mkdir(parents=True)
    ...     for i in range(3):
    ...         Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> summary = extract_features(root / "images", root / "features", backbone=net,
    ...                            weights=None, layers=["1"], chunk_size=4, cache=False,
    ...                            verbose=0)
    >>> pd.read_parquet(root / "features")["label"].tolist()
    ['ants', 'ants', 'ants', 'bees', 'bees', 'bees']
    """
    runs = _Runs(_workers(workers, scheduler), scheduler, n_jobs, verbose)
    params = {**_extractor_params(extractor_params), "n_jobs": n_jobs}
    job = _Job.prepare(data, labels, out, chunk_size, _cache_dir(cache), params)
    with JobFolder(out) as folder:
        return job.run(folder, runs)


def _extractor_params(given: dict) -> dict:
    unknown = sorted(set(given) - set(EXTRACTOR_PARAMS))
    if unknown:
        raise TypeError(
            f"extract_features got unexpected keyword arguments {unknown}: besides its own, it "
            f"takes the DeepFeatureExtractor parameters {list(EXTRACTOR_PARAMS)}."
        )
    return {**_JOB_DEFAULTS, **given}


def _workers(workers, scheduler) -> int | None:
    n_workers = None if workers is None else _positive_int(workers, "workers")
    if n_workers is not None and scheduler is not None:
        raise ValueError("Pass workers (a local cluster) or scheduler (an existing one), not both.")
    return n_workers


@dataclass(frozen=True)
class _Runs:
    """Where and how the chunks run: here, on a local Dask cluster of ``n_workers``
    processes, or on the cluster of ``scheduler``; ``n_jobs`` threads; a progress bar."""

    n_workers: int | None
    scheduler: object
    n_jobs: int | None
    verbose: int


@dataclass
class _Job:
    """One job: its images, the extractor fitted here on the first readable one, and the
    description (``_job_description``) that decides whether a folder's files are its own."""

    paths: list
    labels: list
    chunk_size: int
    params: dict  # the extractor's parameters, n_jobs included
    cache_dir: Path | None
    probe: str
    extractor: DeepFeatureExtractor
    description: dict

    @classmethod
    def prepare(cls, data, labels, out, chunk_size, cache_dir, params) -> _Job:
        """Check the inputs and the folder (before loading anything: a wrong ``out`` fails
        fast), then fit the extractor."""
        paths, labels = _image_list(data, labels)
        chunk_size = _positive_int(chunk_size, "chunk_size")
        JobFolder(out).check_foreign()
        probe = _first_readable(paths)
        extractor = _fitted_extractor(params, cache_dir, probe)
        description = _job_description(extractor, paths, labels, chunk_size)
        return cls(paths, labels, chunk_size, params, cache_dir, probe, extractor, description)

    def tasks(self, folder: JobFolder, done) -> list[_ChunkTask]:
        """The chunks not ``done`` yet, each a self-contained task for any worker."""
        shared = dict(
            out=str(folder.path),
            job_key=self.description["key"],
            params=self.params,
            cache=None if self.cache_dir is None else str(self.cache_dir),
            probe=self.probe,
            columns=self.description["columns"],
            engine=self.description["engine"],
            threads=self.params["n_jobs"],
            driver_pid=os.getpid(),
        )
        size = self.chunk_size
        starts = enumerate(range(0, len(self.paths), size))
        return [
            _ChunkTask(i, self.paths[at : at + size], self.labels[at : at + size], **shared)
            for i, at in starts
            if i not in done
        ]

    def run(self, folder: JobFolder, runs: _Runs) -> ExtractSummary:
        """Run the chunks not done yet, recording each in the folder's manifest as it ends."""
        done = folder.open(self.description)
        tasks = self.tasks(folder, done)
        resumed = sum(self.description["chunk_rows"][i] for i in done)
        n_images, n_chunks = len(self.paths), self.description["n_chunks"]
        summary = ExtractSummary(str(folder.path), n_images, n_chunks, len(done), 0, 0, 0, 0.0)
        progress = tqdm(
            total=n_images, initial=resumed, unit="img", desc="extract", disable=not runs.verbose
        )
        start = time.perf_counter()
        try:
            with progress, contextlib.closing(_run(tasks, self.extractor, runs)) as results:
                for task, result in results:
                    folder.record(task.index, result["rows"], result["sha256"], result["skipped"])
                    _count(summary, task, result, time.perf_counter() - start)
                    progress.update(len(task.paths))
        finally:
            summary.seconds = time.perf_counter() - start
            folder.write_unreadable()
            summary.n_unreadable = len(folder.unreadable())
        return summary


def _count(summary: ExtractSummary, task: _ChunkTask, result: dict, seconds: float) -> None:
    summary.chunks_run += 1
    summary.chunk_times.append((seconds, len(task.paths)))
    summary.images_run += len(task.paths)
    worker = result["worker"]
    summary.peak_rss_mb[worker] = max(summary.peak_rss_mb.get(worker, 0.0), result["rss_mb"])


# --------------------------------------------------------------------------- the job


def _image_list(data, labels) -> tuple[list[str], list]:
    if isinstance(data, str | os.PathLike):
        if labels is not None:
            raise ValueError(
                "labels is only for a list of paths; a folder's labels are its sub-folders' "
                f"names. Got a folder ({str(data)!r}) and labels."
            )
        found, names = load_image_folder(Path(data).resolve())
        return found.tolist(), names.tolist()
    paths = [os.fspath(p) for p in data]
    if not paths or not all(isinstance(p, str) for p in paths):
        raise ValueError(
            "data must be a class-per-folder image folder or a non-empty list of image file "
            f"paths; got {type(data).__name__} of {len(paths)} items."
        )
    paths = [os.path.abspath(p) for p in paths]
    if labels is None:
        return paths, [None] * len(paths)
    labels = [None if label is None else str(label) for label in labels]
    if len(labels) != len(paths):
        raise ValueError(f"labels must hold one label per path: {len(paths)}; got {len(labels)}.")
    return paths, labels


def _version() -> str:
    from ._version import __version__

    return __version__


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def _cache_dir(cache) -> Path | None:
    if cache is False:
        return None
    return Path(cache) if cache is not None else default_cache_dir() / "activations"


def _first_readable(paths: list[str]) -> str:
    """The first image that decodes: ``fit`` learns the output sizes from it."""
    for path in paths:
        try:
            check_images([path])[0]
        except ValueError:
            continue
        return path
    raise ValueError(f"None of the {len(paths)} images can be read; nothing to extract.")


def _fitted_extractor(params: dict, cache_dir: Path | None, probe: str, threads=None):
    params = dict(params)
    if threads is not None:
        params["n_jobs"] = threads
    store = None if cache_dir is None else _JobStore(cache_dir)
    return DeepFeatureExtractor(**params, cache=store).fit([probe])


def _job_description(extractor, paths: list[str], labels: list, chunk_size: int) -> dict:
    """Everything that determines the job's files: a rerun resumes only when it is equal."""
    listing = hashlib.sha256()
    for path, label in zip(paths, labels):
        listing.update(f"{path}\t{label}\n".encode())
    chunk_rows = [len(paths[i : i + chunk_size]) for i in range(0, len(paths), chunk_size)]
    job = {
        "sktransfer": _version(),
        "images": len(paths),
        "images_sha256": listing.hexdigest(),
        "chunk_size": chunk_size,
        "n_chunks": len(chunk_rows),
        "network": extractor.network_.identity,
        "weights": extractor.weights_,
        "layers": list(extractor.layers_),
        "pooling": extractor.pooling,
        "engine": extractor.engine_,
        "precision": extractor.precision,
        "device": extractor.device_.type,
        "columns": extractor.get_feature_names_out().tolist(),
    }
    key = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
    return {**job, "key": key, "chunk_rows": chunk_rows}


# --------------------------------------------------------------------------- running chunks


def _run(tasks, extractor, runs: _Runs):
    """Yield ``(task, result)`` as chunks finish: here, or on Dask workers."""
    n_workers, scheduler = runs.n_workers, runs.scheduler
    if n_workers is None and scheduler is None:
        for task in tasks:
            yield task, _extract_chunk(task, extractor)
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            yield from _run_on_dask(client, tasks)
        finally:
            if client is not scheduler:
                client.close()
        return
    threads = max(1, (runs.n_jobs or os.cpu_count() or 1) // n_workers)
    tasks = [replace(task, threads=threads) for task in tasks]
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield from _run_on_dask(client, tasks)


def _run_on_dask(client, tasks):
    """Submit chunks a few at a time (the scheduler holds a bounded number of path lists)
    and yield them as they finish; a failed chunk stops the job with its error."""
    from distributed import as_completed

    slots = max(2, 2 * sum(client.nthreads().values()))
    pending = iter(tasks)
    by_key = {}

    def submit(task):
        key = f"sktransfer-chunk-{task.job_key}-{task.index}-{time.time_ns()}"
        future = client.submit(_extract_chunk, task, key=key, pure=False)
        by_key[future.key] = task
        return future

    running = as_completed([submit(task) for _, task in zip(range(slots), pending)])
    try:
        for future in running:
            task = by_key.pop(future.key)
            result = future.result()
            future.release()
            following = next(pending, None)
            if following is not None:
                running.add(submit(following))
            yield task, result
    finally:
        for future in running.futures:
            future.cancel()


_WORKER_EXTRACTORS = Registry(2)


def _extract_chunk(task: _ChunkTask, extractor=None) -> dict:
    """Compute one chunk and write its Parquet file atomically; runs on any worker."""
    worker = _worker_name()
    if extractor is None:
        extractor = _worker_extractor(task, worker)
    features, kept, skipped = _chunk_features(extractor, task.paths)
    data = _parquet_bytes(task, features, kept)
    write_atomic(Path(task.out) / chunk_name(task.index), data)
    return {
        "rows": len(kept),
        "sha256": hashlib.sha256(data).hexdigest(),
        "skipped": [[task.paths[i], task.labels[i] or "", reason] for i, reason in skipped],
        "worker": worker,
        "rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB (NaN where the system does not say).

    Linux's ``VmHWM`` first: ``getrusage``'s maximum survives ``fork`` and ``exec``, so a
    worker process would report its parent's peak when that is higher.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "this process"


def _worker_extractor(task: _ChunkTask, worker: str):
    """One fitted extractor per worker and job, with the worker's share of the threads."""
    key = (task.job_key, worker)
    extractor = _WORKER_EXTRACTORS.get(key)
    if extractor is not None:
        return extractor
    threads = task.threads
    if threads is None:
        from distributed import get_worker

        state = get_worker().state
        threads = max(1, (os.cpu_count() or 1) // max(1, state.nthreads))
    if os.getpid() != task.driver_pid:  # a worker process of its own (Dask's nanny sets
        import torch  # OMP_NUM_THREADS=1): torch's share of the threads, for engine="torch"

        torch.set_num_threads(threads)
    cache = None if task.cache is None else Path(task.cache)
    extractor = _fitted_extractor(task.params, cache, task.probe, threads)
    columns = extractor.get_feature_names_out().tolist()
    if columns != task.columns or extractor.engine_ != task.engine:
        raise ExtractJobError(
            f"Worker {worker} would compute other features than the job: {len(columns)} "
            f"columns on {extractor.engine_}, the job has {len(task.columns)} on "
            f"{task.engine}. Give every worker the same sktransfer, torch and onnxruntime."
        )
    _WORKER_EXTRACTORS.put(key, extractor)
    return extractor


def _chunk_features(extractor, paths: list[str]):
    """``(features, kept indices, [(index, reason)])``: unreadable images are left out."""
    try:
        return extractor.transform(paths), list(range(len(paths))), []
    except ValueError as error:
        skipped = []
        for i, path in enumerate(paths):
            try:
                check_images([path])[0]
            except ValueError as bad:
                skipped.append((i, str(bad.__cause__ or bad)))
        if not skipped:
            raise error from None  # not an unreadable file: the job stops with the error
    unread = {i for i, _ in skipped}
    kept = [i for i in range(len(paths)) if i not in unread]
    if not kept:
        return np.empty((0, extractor.n_features_out_), np.float32), kept, skipped
    return extractor.transform([paths[i] for i in kept]), kept, skipped


def _parquet_bytes(task: _ChunkTask, features: np.ndarray, kept: list[int]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = np.ascontiguousarray(features.T, dtype=np.float32)
    arrays = [
        pa.array([task.paths[i] for i in kept], pa.string()),
        pa.array([task.labels[i] for i in kept], pa.string()),
        *(pa.array(column) for column in columns),
    ]
    table = pa.Table.from_arrays(arrays, names=["path", "label", *task.columns])
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()
