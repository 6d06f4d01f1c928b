"""Files of the frozen pass: where they live, how they are written, and their size bounds.

Every file the activation store and the engines keep on disk is written here: to a private
temporary file renamed into place (a reader sees a whole old or a whole new file), with the
permissions the user's umask gives (so a store shared by a group works as the umask says).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["default_cache_dir", "env_bytes", "write_atomic"]


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
