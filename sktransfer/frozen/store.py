"""The activation store: a frozen network's per-image statistics, computed once and shared.

A grid search over layers and poolings re-runs the same frozen network on the same images in
every fold and for every candidate. The cache stores, for each image, what pooling needs
(per-layer average and maximum over the spatial positions, a layer's vector, or its flattened
map), so pooling and everything after it vary freely on top of one forward pass.

Keys
    A *context* names what determines the numbers apart from the image: the backbone's
    identity (architecture, weights, preprocessing; :attr:`Backbone.identity`), the engine,
    device type and precision. Each *image key* is exact and cheap: the SHA-256 of an array
    image's bytes with its dtype and shape (hardware-accelerated, about 0.5 ms per megabyte;
    arrays are never pickled), or a file's absolute path, size, modification and change times
    and inode (a file rewritten in place gets a new change time even when its modification
    time is restored with ``os.utime``). An entry is the dictionary
    ``{(layer, statistic): row}`` of one image (a statistic of
    :mod:`~sktransfer.frozen.pooling`); a lookup hits only when every ``(layer, statistic)``
    asked for is present.

Where
    :class:`MemoryCache`: within the process (the default, shared by every clone of an
    extractor, hence across folds and candidates of a search). :class:`DiskCache`: a folder
    shared by processes, parallel workers and later runs, with a memory front.

Trust
    Nothing in a disk store is trusted: every file carries an HMAC-SHA256 made with the
    user's key (:mod:`~sktransfer.frozen.secret`) over its contents and what it stands for
    (context and image key), and rows must have the shapes the context's layout file
    records; a file that fails either check is recomputed. Files are written to a temporary
    file and renamed into place (atomic). Only the store's own files, in folders it created,
    are ever deleted (:mod:`~sktransfer.frozen.files`). An unreadable or read-only folder
    means computing without storing, with one :class:`StoreWarning`.

Bounds
    Least recently used entries are evicted once a cache exceeds ``max_bytes`` (memory:
    ``SKTRANSFER_CACHE_MEMORY_BYTES``, default 1 GiB; disk: ``SKTRANSFER_CACHE_DISK_BYTES``,
    default 10 GiB). :func:`clear_cache` empties one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import struct
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import ImageInputs
from .engines import ONNX_FILES
from .files import (
    StoreWarning,
    default_cache_dir,
    delete_own_files,
    env_bytes,
    is_store_dir,
    make_store_dir,
    write_atomic,
)
from .registry import Registry
from .secret import seal, unseal

__all__ = [
    "MemoryCache",
    "DiskCache",
    "get_cache",
    "clear_cache",
    "image_keys",
    "default_cache_dir",
    "StoreWarning",
]

_FORMAT = 2  # bump when the meaning of entries changes: old entries are then never read
_MAGIC = b"SKTACT02"
_LAYOUT_MAGIC = b"SKTLAY02"


# --------------------------------------------------------------------------- image keys


def _array_key(array: np.ndarray, channels_first: bool = False) -> str:
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}{channels_first}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:40]


def _item_key(item) -> str:
    if isinstance(item, str | os.PathLike):
        path = os.path.abspath(item)  # not realpath: one lstat per path component is slow
        try:
            stat = os.stat(path)
        except OSError:
            return f"missing:{path}"  # decoding will raise the clear error
        # ctime and inode: what os.utime cannot restore after the content changed. Not the
        # device number: machines mounting one network share number it differently.
        return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}"
    if isinstance(item, Image.Image):
        digest = hashlib.sha256(f"pil{item.mode}{item.size}".encode())
        digest.update(item.tobytes())
        return digest.hexdigest()[:40]
    return _array_key(np.asarray(item))


def image_keys(inputs: ImageInputs) -> list[str]:
    """One exact, cheap key per sample of ``inputs`` (see the module docstring)."""
    if inputs.kind == "items":
        return [_item_key(item) for item in inputs.items]
    data = inputs.items
    channels_first = inputs._channels_first
    return [f"{inputs.kind}:{_array_key(data[i], channels_first)}" for i in range(len(data))]


def _entry_nbytes(entry: dict) -> int:
    return sum(row.nbytes for row in entry.values()) + 64 * len(entry)


# --------------------------------------------------------------------------- memory


class MemoryCache:
    """Per-image entries in this process's memory, least recently used evicted first.

    Parameters
    ----------
    max_bytes : int, optional
        Bound on the entries' size; default ``$SKTRANSFER_CACHE_MEMORY_BYTES`` or 1 GiB.
    """

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = env_bytes("SKTRANSFER_CACHE_MEMORY_BYTES", 2**30)
        if max_bytes is not None:
            self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple[str, str], dict] = OrderedDict()
        self.nbytes = 0
        self._lock = threading.Lock()

    def __repr__(self):
        return f"MemoryCache(entries={len(self._entries)}, nbytes={self.nbytes})"

    def get(self, context: str, keys: list[str], needed: set) -> list[dict | None]:
        """The entry of each key that holds every ``(layer, statistic)`` in ``needed``, else
        None."""
        found = []
        with self._lock:
            for key in keys:
                entry = self._entries.get((context, key))
                if entry is not None and needed <= entry.keys():
                    self._entries.move_to_end((context, key))
                    found.append(entry)
                else:
                    found.append(None)
        return found

    def put(self, context: str, entries: dict[str, dict]) -> None:
        """Store (merge into existing) entries, then evict down to ``max_bytes``."""
        with self._lock:
            for key, entry in entries.items():
                old = self._entries.pop((context, key), None)
                if old is not None:
                    self.nbytes -= _entry_nbytes(old)
                    entry = {**old, **entry}
                size = _entry_nbytes(entry)
                if size > self.max_bytes:
                    continue
                self._entries[(context, key)] = entry
                self.nbytes += size
            while self.nbytes > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self.nbytes -= _entry_nbytes(evicted)

    def peek(self, context: str, key: str) -> dict | None:
        with self._lock:
            return self._entries.get((context, key))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    @contextlib.contextmanager
    def locked(self, context: str):
        """Serialise computing one context's misses (threads of one process)."""
        yield


# --------------------------------------------------------------------------- disk

_ENTRY = r"[0-9a-f]{40}\.act"
_TEMPORARY = r"\.tmp-[a-z0-9_]+(\.act|\.skt)?"  # write_atomic's, left by a killed writer
_CONTEXT_FILES = rf"{_ENTRY}|{_TEMPORARY}|layout\.skt|lock"
_CONTEXT_DIR = re.compile(r"[0-9a-f]{32}")


class DiskCache:
    """Per-image entries in a folder shared by processes, with a memory front.

    Parameters
    ----------
    path : str or path-like
        The folder (created when missing). Entries are files
        ``<path>/activations/<context hash>/<image key hash>.act``; exported ONNX graphs go to
        ``<path>/onnx``.
    max_bytes : int, optional
        Bound on the entries' total size on disk; default ``$SKTRANSFER_CACHE_DISK_BYTES`` or
        10 GiB. When a write exceeds it, the entries least recently used (modification time,
        refreshed on each read) are deleted until 80 % of the bound remains.

    Notes
    -----
    Safe to share: every file carries a keyed hash (HMAC-SHA256, :mod:`.secret`) of its
    contents and of what it stands for (its context and image), so a file written without the
    user's key, damaged, or moved from another entry is recomputed, never served; an entry
    whose rows do not have the shapes recorded for its context is recomputed too. Only the
    store's own files (exact name patterns) in folders it created (:data:`.files.MARKER`) are
    ever deleted. A folder that cannot be read or written means computing without storing,
    with one :class:`~sktransfer.frozen.files.StoreWarning`.

    Safe for concurrent writers: each writes a private temporary file and renames it into
    place, so a reader sees a whole old or a whole new file. Processes that miss the same
    context wait for each other (a lock file) so the first computes and the others read its
    results.
    """

    def __init__(self, path, max_bytes: int | None = None):
        self.path = Path(path).expanduser().resolve()
        self.max_bytes = env_bytes("SKTRANSFER_CACHE_DISK_BYTES", 10 * 2**30)
        if max_bytes is not None:
            self.max_bytes = int(max_bytes)
        self.front = MemoryCache()
        self.corrupt_files = 0  # entries refused (damaged, forged, misshapen), recomputed
        self._layouts = Registry(64)  # context -> {(layer, statistic): row shape}
        self._failed: dict[str, OSError] = {}  # "read" / "written": why it cannot be

    def __repr__(self):
        return f"DiskCache({str(self.path)!r}, max_bytes={self.max_bytes})"

    # A DiskCache is a handle on a folder: clones and pickles share it, never copy entries.
    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return (get_cache, (str(self.path), self.max_bytes))

    @property
    def onnx_dir(self) -> Path:
        return self.path / "onnx"

    def _context_dir(self, context: str) -> Path:
        name = hashlib.sha256(f"{_FORMAT}|{context}".encode()).hexdigest()[:32]
        return self.path / "activations" / name

    def _file(self, context_dir: Path, key: str) -> Path:
        return context_dir / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".act")

    def get(self, context: str, keys: list[str], needed: set) -> list[dict | None]:
        found = self.front.get(context, keys, needed)
        if all(entry is not None for entry in found) or "read" in self._failed:
            return found
        context_dir = self._context_dir(context)
        layout, reloaded = self._layout(context), False
        loaded = {}
        for i, key in enumerate(keys):
            if found[i] is not None:
                continue
            entry = self._read(self._file(context_dir, key), context, key)
            if entry is not None and not _fits(entry, layout) and not reloaded:
                layout, reloaded = self._layout(context, reload=True), True  # grown elsewhere?
            if entry is None or not _fits(entry, layout):
                self.corrupt_files += entry is not None
                continue
            loaded[key] = entry
            if needed <= entry.keys():
                found[i] = entry
        if loaded:
            self.front.put(context, loaded)
        return found

    def put(self, context: str, entries: dict[str, dict]) -> None:
        self.front.put(context, entries)
        if "written" in self._failed:
            return
        try:
            context_dir = self._make_context_dir(context)
            self._record_layout(context, entries)  # before the entries it vouches for
            for key in entries:
                merged = self.front.peek(context, key) or entries[key]  # all that is known
                write_atomic(self._file(context_dir, key), _encode(merged, context, key))
            self._enforce_bound()
        except OSError as exc:
            self._give_up(exc, "written")

    def _make_context_dir(self, context: str) -> Path:
        make_store_dir(self.path / "activations")
        return make_store_dir(self._context_dir(context))

    def _read(self, file: Path, context: str, key: str) -> dict | None:
        try:
            data = file.read_bytes()
        except PermissionError as exc:  # another user's store, a folder without read access
            self._give_up(exc, "read")
            return None
        except OSError:  # absent, or not a file: a miss
            return None
        entry = _decode(data, context, key)
        if entry is None:
            self.corrupt_files += 1
            with contextlib.suppress(OSError):
                file.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(file)  # least-recently-used bookkeeping
        return entry

    def _layout(self, context: str, reload: bool = False) -> dict:
        """The row shape of every ``(layer, statistic)`` stored in ``context`` (read once)."""
        layout = None if reload else self._layouts.get(context)
        if layout is None:
            file = self._context_dir(context) / "layout.skt"
            try:
                payload = unseal(_LAYOUT_MAGIC, context, file.read_bytes())
            except OSError:
                payload = None
            layout = {}
            if payload is not None:
                layout = {
                    tuple(name.split("\t")): tuple(shape)
                    for name, shape in json.loads(payload).items()
                }
            self._layouts.put(context, layout)
        return layout

    def _record_layout(self, context: str, entries: dict[str, dict]) -> None:
        """Add the shapes of computed ``entries`` to the context's layout file (under the
        context's lock: read again first, so concurrent writers of other layers merge).

        Computed rows are the truth: a flattened map (``"flat"``) of images of another size,
        through a network without a resizing transform, replaces the recorded shape, and
        entries of the former size are recomputed when read."""
        layout = self._layout(context)
        shapes = {item: row.shape for entry in entries.values() for item, row in entry.items()}
        if all(layout.get(item) == shape for item, shape in shapes.items()):
            return
        layout = {**self._layout(context, reload=True), **shapes}
        text = json.dumps({"\t".join(item): list(shape) for item, shape in layout.items()})
        write_atomic(
            self._context_dir(context) / "layout.skt",
            seal(_LAYOUT_MAGIC, context, text.encode()),
        )
        self._layouts.put(context, layout)

    def _give_up(self, exc: OSError, what: str) -> None:
        """Stop reading or writing the folder through this handle, with one warning."""
        if not self._failed:
            warnings.warn(
                f"The activation store {str(self.path)!r} cannot be {what} ({exc}). Features "
                "are computed without storing them. Pass cache= a folder you can write, or "
                "cache='memory'.",
                StoreWarning,
                stacklevel=5,
            )
        self._failed.setdefault(what, exc)

    def _context_dirs(self):
        root = self.path / "activations"
        if not root.is_dir():
            return []
        return [
            Path(entry.path)
            for entry in os.scandir(root)
            if _CONTEXT_DIR.fullmatch(entry.name) and is_store_dir(Path(entry.path))
        ]

    def _enforce_bound(self) -> None:
        files = []
        total = 0
        entry_name = re.compile(_ENTRY)
        for directory in self._context_dirs():
            for file in os.scandir(directory):
                if not entry_name.fullmatch(file.name):
                    continue
                try:
                    stat = file.stat(follow_symlinks=False)
                except OSError:
                    continue
                files.append((stat.st_mtime_ns, stat.st_size, file.path))
                total += stat.st_size
        if total <= self.max_bytes:
            return
        for _, size, path in sorted(files):
            with contextlib.suppress(OSError):
                os.unlink(path)
                total -= size
            if total <= 0.8 * self.max_bytes:
                break

    @contextlib.contextmanager
    def locked(self, context: str):
        """Hold an exclusive lock on one context across processes (POSIX ``flock``)."""
        try:
            import fcntl
        except ImportError:  # Windows: no cross-process wait, writes stay atomic
            yield
            return
        handle = None
        if "written" not in self._failed:
            try:
                handle = open(self._make_context_dir(context) / "lock", "a+b")
            except OSError as exc:
                self._give_up(exc, "written")
        if handle is None:
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def clear(self) -> None:
        """Delete this folder's entries and exported graphs (only the store's own files, in
        folders it created), and the memory front."""
        self.front.clear()
        self._layouts.clear()
        for directory in self._context_dirs():
            delete_own_files(directory, _CONTEXT_FILES, remove_folder=True)
        delete_own_files(self.path / "activations", _TEMPORARY, remove_folder=True)
        delete_own_files(self.onnx_dir, ONNX_FILES, remove_folder=True)


def _fits(entry: dict, layout: dict) -> bool:
    """Whether every row of ``entry`` has the shape its context's layout records."""
    return all(layout.get(item) == row.shape for item, row in entry.items())


def _encode(entry: dict, context: str, key: str) -> bytes:
    names, chunks = {}, []
    for (layer, statistic), row in entry.items():
        row = np.ascontiguousarray(row, dtype=np.float32)
        names[f"{layer}\t{statistic}"] = list(row.shape)
        chunks.append(row.tobytes())
    header = json.dumps(names).encode()
    payload = struct.pack("<I", len(header)) + header + b"".join(chunks)
    return seal(_MAGIC, f"{context}\n{key}", payload)


def _decode(data: bytes, context: str, key: str) -> dict | None:
    """The entry of image ``key`` in ``context`` held by ``data``, or None when it is
    truncated, damaged, of another format, another entry's, or not written with the key."""
    payload = unseal(_MAGIC, f"{context}\n{key}", data)
    if payload is None:
        return None
    try:
        (header_length,) = struct.unpack_from("<I", payload)
        names = json.loads(payload[4 : 4 + header_length])
        offset = 4 + header_length
        entry = {}
        for name, shape in names.items():
            count = math.prod(shape)
            row = np.frombuffer(payload, np.float32, count, offset).reshape(shape)
            offset += 4 * count
            layer, statistic = name.split("\t")
            entry[(layer, statistic)] = row
    except (ValueError, TypeError, struct.error):  # sealed by the key holder, yet malformed
        return None
    return entry if offset == len(payload) else None


# --------------------------------------------------------------------------- registry

_MEMORY = MemoryCache()
_DISK: dict[str, DiskCache] = {}
_REGISTRY_LOCK = threading.Lock()


def get_cache(cache, max_bytes: int | None = None):
    """The process-wide cache for a ``cache`` parameter value.

    ``"memory"``: this process's :class:`MemoryCache`. A path: the :class:`DiskCache` of that
    folder (one handle per folder per process). A cache object is returned as is; None too.
    """
    if cache is None or isinstance(cache, MemoryCache | DiskCache):
        return cache
    if cache == "memory":
        return _MEMORY
    path = str(Path(cache).expanduser().resolve())
    with _REGISTRY_LOCK:
        disk = _DISK.get(path)
        if disk is None:
            disk = _DISK[path] = DiskCache(path, max_bytes)
        elif max_bytes is not None:
            disk.max_bytes = int(max_bytes)
        return disk


def clear_cache(cache="memory") -> None:
    """Empty a cache: ``"memory"`` (this process's), or a disk cache folder (path or object).

    Examples
    --------
    >>> from sktransfer.frozen import clear_cache
    >>> clear_cache("memory")
    """
    get_cache(cache).clear()
