"""Files of the frozen pass: where they live, how they are written, and which are its own.

Every file the activation store, the engines and the report's memo keep on disk is written
here: to a private temporary file renamed into place (a reader sees a whole old or a whole new
file), with the permissions the user's umask gives, like the folders (so a store shared by a
group works as the umask says). A folder the store creates gets a marker file
(:data:`MARKER`); clearing and size bounds delete only files of the store's exact name
patterns, and only in folders that carry the marker, so a user's files under a cache folder
are never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

__all__ = [
    "MARKER",
    "StoreWarning",
    "default_cache_dir",
    "delete_own_files",
    "env_bytes",
    "is_store_dir",
    "make_store_dir",
    "write_atomic",
]

#: The file that marks a folder as created by the store (and so clearable by it).
MARKER = ".sktransfer-store"
_MARKER_TEXT = (
    b"Created by sktransfer's activation store: clear_cache deletes its own files here.\n"
)


class StoreWarning(UserWarning):
    """A store folder cannot be read or written: features are computed without storing them."""


def env_bytes(name: str, default: int) -> int:
    """A size in bytes from environment variable ``name`` (e.g. ``2e9``), else ``default``."""
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(
            f"Environment variable {name}={value!r} must be a number of bytes, e.g. 2e9."
        ) from None


def default_cache_dir() -> Path:
    """``$SKTRANSFER_CACHE_DIR``, else ``$XDG_CACHE_HOME/sktransfer`` (``~/.cache/sktransfer``)."""
    if os.environ.get("SKTRANSFER_CACHE_DIR"):
        return Path(os.environ["SKTRANSFER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sktransfer"


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, rarely reached)
    os.umask(mask)
    return mask


def write_atomic(file: Path, data: bytes) -> None:
    """Write a private temporary file, then rename it over ``file`` (atomic on POSIX).

    ``mkstemp`` creates the file 0600; it is given the umask's permissions before the rename,
    as ``open`` would have given them.
    """
    handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=".tmp-", suffix=file.suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        with contextlib.suppress(OSError):
            os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def make_store_dir(folder: Path) -> Path:
    """Create ``folder`` (and missing parents) with the umask's permissions; a folder this
    call created itself gets the :data:`MARKER` that lets the store clear it later."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:  # another process created it: it writes the marker
        return folder
    write_atomic(folder / MARKER, _MARKER_TEXT)
    return folder


def is_store_dir(folder: Path) -> bool:
    """Whether ``folder`` is a real folder (not a link) that the store created."""
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and (folder / MARKER).is_file()


def delete_own_files(folder: Path, pattern: str, remove_folder: bool = False) -> int:
    """Delete the files of ``folder`` whose whole name matches ``pattern`` (a regular
    expression), only when the store created ``folder``; then the folder itself when asked and
    nothing else is left in it. Returns the number of files deleted."""
    folder = Path(folder)
    if not is_store_dir(folder):
        return 0
    own = re.compile(pattern)
    deleted = 0
    for entry in os.scandir(folder):
        if own.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                deleted += 1
    if remove_folder and {entry.name for entry in os.scandir(folder)} == {MARKER}:
        with contextlib.suppress(OSError):
            os.unlink(folder / MARKER)
            os.rmdir(folder)
    return deleted
