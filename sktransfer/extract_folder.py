"""The output folder of an extraction job: its files, its manifest, and what it refuses.

A job writes only these names (pandas, pyarrow and Dask skip names that start with ``_`` or
``.``, so ``pandas.read_parquet(out)`` reads the chunks alone):

``_manifest.json``
    The job (backbone, weights, layers, pooling, engine, the image list's SHA-256, chunk
    size, feature columns, sktransfer version) and, for each finished chunk, its row count,
    the SHA-256 of its file and the images it skipped as unreadable.
``chunk-000000.parquet``, ...
    Columns ``path``, ``label``, then one float32 column per feature, in input order.
``_unreadable.csv``
    ``path,label,reason`` of every image skipped so far.
``_lock``
    Held (``flock``) while a job writes, so two runs never write one folder.
``.tmp-*``
    A file being written; renamed into place only when complete.

A chunk counts as done only when the manifest lists it and its file's SHA-256 matches, so a
file damaged or replaced after the fact is recomputed, never trusted. The folder itself is the
user's: a job starts only in a missing or empty folder, or resumes the same job's folder, and
deletes nothing but its own temporary files.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
from pathlib import Path

from .frozen.files import write_atomic

__all__ = ["ExtractJobError", "JobFolder", "chunk_name"]

MANIFEST = "_manifest.json"
UNREADABLE = "_unreadable.csv"
LOCK = "_lock"
_FORMAT = "sktransfer-extract"
_VERSION = 1
_CHUNK = re.compile(r"chunk-\d{6}\.parquet")
_TEMPORARY = re.compile(r"\.tmp-[^/]*\.(parquet|json|csv)")


class ExtractJobError(ValueError):
    """An extraction job cannot start or resume in the folder it was given."""


def chunk_name(index: int) -> str:
    return f"chunk-{index:06d}.parquet"


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


class JobFolder:
    """One job's output folder, locked while open (use as a context manager).

    ``JobFolder(out).open(job)`` checks the folder, takes its lock and returns the chunks
    already done; :meth:`record` adds a finished chunk to the manifest (atomically).
    """

    def __init__(self, out):
        self.path = Path(out)
        self._lock_handle = None
        self.manifest: dict | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def open(self, job: dict) -> set[int]:
        """Start ``job`` here or resume it; return the indices of the chunks already done.

        Raises :class:`ExtractJobError` when the folder holds files that are not this job's.
        """
        self._check_is_ours(job)
        self.path.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        manifest = self._read_manifest()  # again, under the lock
        if manifest is None:
            self.manifest = {"format": _FORMAT, "version": _VERSION, "job": job, "chunks": {}}
            self._write_manifest()
            return set()
        _check_same_job(self.path, manifest["job"], job)
        self.manifest = manifest
        self._remove_own_temporaries()
        return self._verified_chunks()

    def record(self, index: int, rows: int, sha256: str, unreadable: list) -> None:
        """Mark chunk ``index`` done (its file is already in place)."""
        self.manifest["chunks"][str(index)] = {
            "rows": int(rows),
            "sha256": sha256,
            "unreadable": [[str(value) for value in item] for item in unreadable],
        }
        self._write_manifest()

    def unreadable(self) -> list[list[str]]:
        """``[path, label, reason]`` of every image the finished chunks skipped, in order."""
        chunks = self.manifest["chunks"]
        return [item for key in sorted(chunks, key=int) for item in chunks[key]["unreadable"]]

    def write_unreadable(self) -> None:
        """Write ``_unreadable.csv`` from the manifest (nothing when no image was skipped)."""
        rows = self.unreadable()
        if not rows and not (self.path / UNREADABLE).exists():
            return
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["path", "label", "reason"])
        writer.writerows(rows)
        write_atomic(self.path / UNREADABLE, text.getvalue().encode())

    def close(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()  # releases the flock
            self._lock_handle = None

    # ------------------------------------------------------------------ internals

    def check_foreign(self) -> dict | None:
        """Raise :class:`ExtractJobError` unless the folder is missing, empty or holds only
        this kind of job's files; return its manifest (None when there is none yet)."""
        if self.path.exists() and not self.path.is_dir():
            raise ExtractJobError(
                f"--out {str(self.path)!r} is a file, not a folder. Pass a new folder name."
            )
        if not self.path.is_dir():
            return None
        manifest = self._read_manifest()
        foreign = [name for name in sorted(os.listdir(self.path)) if not _is_own(name, manifest)]
        if foreign:
            shown = ", ".join(repr(name) for name in foreign[:3])
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise ExtractJobError(
                f"--out {str(self.path)!r} holds files that are not this job's ({shown}{more}); "
                "nothing was written. Pass a new or empty folder, or the folder of an earlier "
                "run of the same command to resume it."
            )
        return manifest

    def _check_is_ours(self, job: dict) -> None:
        manifest = self.check_foreign()
        if manifest is not None:
            _check_same_job(self.path, manifest["job"], job)

    def _read_manifest(self) -> dict | None:
        file = self.path / MANIFEST
        if not file.exists():
            return None
        try:
            manifest = json.loads(file.read_text())
        except (OSError, ValueError) as error:
            raise ExtractJobError(
                f"{str(file)!r} cannot be read as an extraction manifest ({error}). Pass a new "
                "--out folder; this one was left as it is."
            ) from None
        if not _well_formed(manifest):
            raise ExtractJobError(
                f"{str(file)!r} is not a manifest of sktransfer extract (format "
                f"{_FORMAT!r} version {_VERSION}). Pass a new --out folder; this one was left "
                "as it is."
            )
        return manifest

    def _write_manifest(self) -> None:
        write_atomic(self.path / MANIFEST, json.dumps(self.manifest).encode())

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no lock; the user must not run two jobs on one folder
            return
        handle = open(self.path / LOCK, "a+b")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ExtractJobError(
                f"Another sktransfer extract is writing to {str(self.path)!r}. Wait for it to "
                "finish, or pass another --out folder."
            ) from None
        self._lock_handle = handle

    def _remove_own_temporaries(self) -> None:
        """Leftovers of a killed run: only names this job writes, in a folder with its
        manifest."""
        for name in os.listdir(self.path):
            if _TEMPORARY.fullmatch(name):
                with contextlib.suppress(OSError):
                    (self.path / name).unlink()

    def _verified_chunks(self) -> set[int]:
        done = set()
        for key, entry in self.manifest["chunks"].items():
            if file_sha256(self.path / chunk_name(int(key))) == entry["sha256"]:
                done.add(int(key))
        for key in {str(i) for i in done} ^ set(self.manifest["chunks"]):
            del self.manifest["chunks"][key]  # damaged or missing: computed again
        return done


def _is_own(name: str, manifest: dict | None) -> bool:
    if name == LOCK or _TEMPORARY.fullmatch(name):
        return True
    return manifest is not None and (name in (MANIFEST, UNREADABLE) or bool(_CHUNK.fullmatch(name)))


def _well_formed(manifest) -> bool:
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        return False
    if manifest.get("version") != _VERSION or not isinstance(manifest.get("job"), dict):
        return False
    chunks = manifest.get("chunks")
    if not isinstance(chunks, dict):
        return False
    return all(
        key.isdigit()
        and isinstance(entry, dict)
        and isinstance(entry.get("rows"), int)
        and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("unreadable"), list)
        for key, entry in chunks.items()
    )


def _check_same_job(path: Path, stored: dict, job: dict) -> None:
    if stored == job:
        return
    changed = sorted(key for key in stored.keys() | job.keys() if stored.get(key) != job.get(key))
    # what the user set first; the columns, key and chunk sizes follow from it
    changed.sort(key=lambda key: key in ("columns", "key", "chunk_rows", "n_chunks"))
    details = "; ".join(
        f"{key}: {_short(stored.get(key))} there, {_short(job.get(key))} now" for key in changed[:3]
    )
    raise ExtractJobError(
        f"--out {str(path)!r} holds another job's features ({details}). Pass the same data and "
        "options to resume that job, or a new --out folder."
    )


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
