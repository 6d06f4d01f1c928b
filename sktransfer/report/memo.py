"""The report's memo: results of its pure stages kept under the cache folder, never unpickled.

A rerun of ``sktransfer report`` over the same images reads the scores, held-out results and
plots back instead of recomputing them. The cache folder may be shared, so nothing in it is
trusted: each result is one file ``<folder>/<stage>/<call hash>.memo``, an ``.npz`` archive
(read with ``allow_pickle=False``) of the result's arrays plus a JSON description of the rest
(lists, tuples, dicts, strings, numbers, bytes, slices, pandas DataFrames), sealed with the
user's key (:mod:`sktransfer.frozen.secret`) together with the stage and the call it answers.
A file that fails the check (damaged, planted, or another call's) is recomputed; a folder that
cannot be written means computing without storing, with one
:class:`~sktransfer.frozen.files.StoreWarning`.

The interface is :class:`joblib.Memory`'s, the part the report uses: ``Memo(folder).cache(
function, ignore=[...])`` returns a callable with ``check_call_in_cache``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..frozen.files import StoreWarning, make_store_dir, write_atomic
from ..frozen.secret import seal, unseal

__all__ = ["Memo"]

_MAGIC = b"SKTMEMO1"  # bump when the encoding changes: older files are then recomputed


class Memo:
    """Memoised stages under ``folder`` (see the module docstring).

    Examples
    --------
    >>> import tempfile
    >>> from sktransfer.report.memo import Memo
    >>> calls = []
    >>> def square(x):
    ...     calls.append(x)
    ...     return {"square": x * x, "shape": (1, 2)}
    >>> memo = Memo(tempfile.mkdtemp())
    >>> memo.cache(square)(3), memo.cache(square)(3), len(calls)
    ({'square': 9, 'shape': (1, 2)}, {'square': 9, 'shape': (1, 2)}, 1)
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self._failed = False

    def __repr__(self):
        return f"Memo({str(self.folder)!r})"

    def cache(self, function, ignore=()) -> MemoizedStage:
        """``function`` memoised on its arguments, except those named in ``ignore``."""
        return MemoizedStage(self, function, tuple(ignore))

    def read(self, stage: str, call: str):
        """The stored result of ``call`` of ``stage``, or :data:`MISSING`."""
        try:
            data = (self.folder / stage / f"{call}.memo").read_bytes()
        except OSError:
            return MISSING
        payload = unseal(_MAGIC, f"{stage}\n{call}", data)
        if payload is None:
            return MISSING
        try:
            return _decode(payload)
        except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile):
            return MISSING  # sealed by the key holder, yet malformed: recomputed

    def write(self, stage: str, call: str, value) -> None:
        """Store ``value`` as the result of ``call`` of ``stage`` (when the folder allows)."""
        if self._failed:
            return
        payload = _encode(value)
        try:
            make_store_dir(self.folder)
            folder = make_store_dir(self.folder / stage)
            write_atomic(folder / f"{call}.memo", seal(_MAGIC, f"{stage}\n{call}", payload))
        except OSError as exc:
            self._failed = True
            warnings.warn(
                f"The report's memo folder {str(self.folder)!r} cannot be written ({exc}); "
                "results are computed without storing them. Pass --cache a folder you can "
                "write.",
                StoreWarning,
                stacklevel=3,
            )

    def read_json(self, name: str) -> dict | None:
        """A small authenticated JSON document of this folder (e.g. measured costs)."""
        value = self.read("json", name)
        return value if isinstance(value, dict) else None

    def write_json(self, name: str, value: dict) -> None:
        self.write("json", name, value)


class _Missing:
    def __repr__(self):
        return "MISSING"


MISSING = _Missing()


class MemoizedStage:
    """A function whose results a :class:`Memo` keeps, keyed by its arguments."""

    def __init__(self, memo: Memo, function, ignore: tuple):
        self.memo, self.function, self.ignore = memo, function, ignore
        self.stage = f"{function.__module__}.{function.__qualname__}"
        self._signature = inspect.signature(function)
        functools.update_wrapper(self, function)

    def _call_hash(self, args, kwargs) -> str:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        digest = hashlib.sha256(self.stage.encode())
        for name, value in bound.arguments.items():
            if name not in self.ignore:
                digest.update(name.encode())
                _fingerprint(value, digest)
        return digest.hexdigest()[:40]

    def check_call_in_cache(self, *args, **kwargs) -> bool:
        return self.memo.read(self.stage, self._call_hash(args, kwargs)) is not MISSING

    def __call__(self, *args, **kwargs):
        call = self._call_hash(args, kwargs)
        value = self.memo.read(self.stage, call)
        if value is MISSING:
            value = self.function(*args, **kwargs)
            self.memo.write(self.stage, call, value)
        return value


# ----------------------------------------------------------------------------- call keys


def _fingerprint(value, digest) -> None:
    """Feed an exact, typed description of ``value`` to ``digest`` (never pickling it)."""
    if value is None or isinstance(value, bool | int | float | str | np.generic):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, bytes):
        digest.update(b"bytes:%d;" % len(value) + value)
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            digest.update(f"objects{value.shape};".encode())
            for item in value.ravel():
                _fingerprint(item, digest)
        else:
            digest.update(f"array{value.dtype.str}{value.shape};".encode())
            digest.update(memoryview(np.ascontiguousarray(value)).cast("B"))
    elif isinstance(value, list | tuple):
        digest.update(f"{type(value).__name__}{len(value)};".encode())
        for item in value:
            _fingerprint(item, digest)
    elif isinstance(value, dict):
        digest.update(f"dict{len(value)};".encode())
        for key in sorted(value, key=repr):
            _fingerprint(key, digest)
            _fingerprint(value[key], digest)
    else:
        raise TypeError(
            f"A memoised stage's argument of type {type(value).__name__} cannot be hashed "
            "exactly; pass arrays, numbers, strings, lists or dicts, or list it in ignore=."
        )


# ----------------------------------------------------------------------------- encoding


def _encode(value) -> bytes:
    arrays: list[np.ndarray] = []
    skeleton = json.dumps(_describe(value, arrays)).encode()
    buffer = io.BytesIO()
    np.savez(
        buffer,
        skeleton=np.frombuffer(skeleton, np.uint8),
        **{f"a{i}": array for i, array in enumerate(arrays)},
    )
    return buffer.getvalue()


def _decode(payload: bytes):
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return _rebuild(json.loads(arrays.pop("skeleton").tobytes()), arrays)


def _describe(value, arrays: list):
    """``value`` as JSON, its arrays appended to ``arrays`` and referred to by index."""
    import pandas as pd

    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return {"bytes": _array_ref(np.frombuffer(value, np.uint8), arrays)}
    if isinstance(value, np.ndarray):
        return {"array": _array_ref(value, arrays), "objects": value.dtype == object}
    if isinstance(value, tuple):
        return {"tuple": [_describe(item, arrays) for item in value]}
    if isinstance(value, list):
        return [_describe(item, arrays) for item in value]
    if isinstance(value, dict):
        return {"dict": [[_describe(k, arrays), _describe(v, arrays)] for k, v in value.items()]}
    if isinstance(value, slice):
        return {"slice": [value.start, value.stop, value.step]}
    if isinstance(value, pd.DataFrame):
        return {
            "frame": [_describe(list(value.columns), arrays)]
            + [_describe(value[column].to_numpy(), arrays) for column in value.columns],
            "index": _describe(value.index.to_numpy(), arrays),
        }
    raise TypeError(f"A memoised stage's result of type {type(value).__name__} cannot be stored.")


def _array_ref(array: np.ndarray, arrays: list) -> int:
    if array.dtype == object:
        if not all(isinstance(item, str) for item in array.ravel()):
            raise TypeError("A memoised array of Python objects must hold strings only.")
        array = array.astype(str)
    arrays.append(array)
    return len(arrays) - 1


def _rebuild(description, arrays: dict):
    import pandas as pd

    if isinstance(description, list):
        return [_rebuild(item, arrays) for item in description]
    if not isinstance(description, dict):
        return description
    if "array" in description:
        array = arrays[f"a{description['array']}"]
        return array.astype(object) if description["objects"] else array
    if "bytes" in description:
        return arrays[f"a{description['bytes']}"].tobytes()
    if "tuple" in description:
        return tuple(_rebuild(item, arrays) for item in description["tuple"])
    if "dict" in description:
        return {_rebuild(k, arrays): _rebuild(v, arrays) for k, v in description["dict"]}
    if "slice" in description:
        return slice(*description["slice"])
    columns, *data = (_rebuild(part, arrays) for part in description["frame"])
    index = _rebuild(description["index"], arrays)
    return pd.DataFrame(dict(zip(columns, data)), columns=columns, index=index)
