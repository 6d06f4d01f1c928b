"""The user's secret, and the keyed hash that authenticates every file the store reads back.

A store folder may be shared (a team's scratch disk, another user's cache), so anyone with
write access there could plant files in it. Every file the activation store, the exported
graphs and the report's memo read back carries an HMAC-SHA256 of its contents made with a
key that lives *outside* the folder: a per-user key file, readable by its owner only, created
on first use. A file written by someone without the key, or moved from another entry's name
(the MAC covers the name too), fails the check and is treated as absent: recomputed, never
served, never executed.

The key file is ``$SKTRANSFER_KEY_FILE``, else ``$XDG_CONFIG_HOME/sktransfer/store.key``
(``~/.config/sktransfer/store.key``): 64 hexadecimal characters (32 random bytes). The default
file must be owned by the user and readable by no one else (mode 0600). A team that shares a
store on purpose points ``SKTRANSFER_KEY_FILE`` at one key file readable by the team's group
only (e.g. mode 0640, group ``team``): naming it trusts its owner and group. A key file that
others can read or anyone but its owner can write is refused with :class:`StoreKeyError`
(anyone who can read the key can forge entries). When the key file cannot be created (a
read-only home), a key for this process only is used, with a :class:`StoreWarning`: stores
then work within the process but entries written by other processes are recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import struct
import threading
import warnings
from pathlib import Path

from .files import StoreWarning

__all__ = ["StoreKeyError", "key_file", "seal", "secret_key", "unseal"]

_KEY_BYTES = 32
_MAC_BYTES = 32
#: (SKTRANSFER_KEY_FILE, XDG_CONFIG_HOME, HOME) -> (the file's signature, key, path): the key file
#: is read again when it changes.
_KEYS: dict[tuple, tuple[tuple, bytes, str]] = {}

_PROCESS_KEY: list[bytes] = []
_LOCK = threading.Lock()


class StoreKeyError(RuntimeError):
    """The key file that authenticates stored files is unsafe or unreadable."""


def key_file() -> tuple[Path, bool]:
    """The key file's path, and whether the user named it (``$SKTRANSFER_KEY_FILE``)."""
    named = os.environ.get("SKTRANSFER_KEY_FILE")
    if named:
        return Path(named).expanduser(), True
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "sktransfer" / "store.key", False


def secret_key() -> bytes:
    """The user's key (see the module docstring), created on first use."""
    where = _where()
    known = _KEYS.get(where)
    if known is not None:  # one stat per use: a key file changed since is checked again
        with contextlib.suppress(OSError):
            if _signature(os.stat(known[2])) == known[0]:
                return known[1]
    elif _PROCESS_KEY:  # the key file could not be created earlier in this process
        return _PROCESS_KEY[0]
    path, named = key_file()
    with _LOCK:
        try:
            return _read_key(path, named)
        except (FileNotFoundError, NotADirectoryError):  # absent: created below
            pass
        try:
            _create_key(path)
        except OSError as exc:
            return _process_key(path, exc)
        return _read_key(path, named)


def _read_key(path: Path, named: bool) -> bytes:
    try:
        return _read_checked_key(path, named)
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as exc:
        raise StoreKeyError(
            f"The store key file {str(path)!r} cannot be read ({exc}). Make it readable by "
            "you, or point SKTRANSFER_KEY_FILE at another file."
        ) from exc


def _read_checked_key(path: Path, named: bool) -> bytes:
    with open(path, "rb") as handle:  # the checks below are on the file actually read
        info = os.fstat(handle.fileno())
        _check_key_file(path, info, named)
        text = handle.read(4 * _KEY_BYTES + 2)
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < _KEY_BYTES:
        raise StoreKeyError(
            f"The store key file {str(path)!r} must hold {2 * _KEY_BYTES} hexadecimal "
            f"characters; got {len(text)} bytes that are not. Delete it to have a new key "
            "created (stored entries are then recomputed), or write one with `python -c "
            '"import secrets; print(secrets.token_hex(32))"`.'
        )
    where = _where()
    _KEYS[where] = (_signature(info), key, str(path))
    return key


def _where() -> tuple:
    """What :func:`key_file` depends on, cheap to read on every use."""
    return tuple(
        os.environ.get(name) for name in ("SKTRANSFER_KEY_FILE", "XDG_CONFIG_HOME", "HOME")
    )


def _signature(info: os.stat_result) -> tuple:
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_mode, info.st_uid)


def _check_key_file(path: Path, info: os.stat_result, named: bool) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise StoreKeyError(f"The store key file {str(path)!r} is not a regular file.")
    if not hasattr(os, "getuid"):  # Windows: no POSIX owner and mode bits to check
        return
    mode = stat.S_IMODE(info.st_mode)
    # Readable by others: anyone could forge entries. Writable by the group: anyone there
    # could swap the key. Group-readable is a team's key, allowed only when named on purpose.
    forbidden = 0o027 if named else 0o077
    if not mode & forbidden and (named or info.st_uid == os.getuid()):
        return
    if named:
        rule = "readable by no one outside its group and writable by its owner only"
        fix = f"chmod {'640' if mode & 0o040 else '600'} {path}"
    else:
        rule = f"owned by you (uid {os.getuid()}) and readable by you only"
        fix = f"chmod 600 {path}"
    raise StoreKeyError(
        f"The store key file {str(path)!r} (mode {mode:04o}, owner uid {info.st_uid}) must be "
        f"{rule}: whoever can read the key can forge stored features. Run `{fix}` (as its "
        "owner), or point SKTRANSFER_KEY_FILE at another file (a team sharing a store on "
        "purpose: one key file readable by the team's group only)."
    )


def _create_key(path: Path) -> None:
    """Write a new random key to ``path``, mode 0600, atomically: concurrent first uses
    agree on one key (the first link wins; the others read it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(_KEY_BYTES) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _process_key(path: Path, exc: OSError) -> bytes:
    if not _PROCESS_KEY:
        _PROCESS_KEY.append(secrets.token_bytes(_KEY_BYTES))
        warnings.warn(
            f"The store key file {str(path)!r} could not be created ({exc}); stored "
            "activations are authenticated with a key for this process only, so entries "
            "written by other processes are recomputed. Set SKTRANSFER_KEY_FILE to a "
            "writable path to share them.",
            StoreWarning,
            stacklevel=4,
        )
    return _PROCESS_KEY[0]


def _mac(magic: bytes, name: str, payload: bytes) -> bytes:
    encoded = name.encode()
    digest = hmac.new(secret_key(), magic, hashlib.sha256)
    digest.update(struct.pack("<Q", len(encoded)) + encoded)
    digest.update(payload)
    return digest.digest()


def seal(magic: bytes, name: str, payload: bytes) -> bytes:
    """``payload`` preceded by ``magic`` (8 bytes: the kind of file and its format) and the
    keyed hash of the three together with ``name`` (what the file stands for)."""
    return magic + _mac(magic, name, payload) + payload


def unseal(magic: bytes, name: str, data: bytes) -> bytes | None:
    """The payload :func:`seal` put in ``data`` for ``magic`` and ``name``; None when
    ``data`` is damaged, of another kind or format, or was not sealed with the user's key.

    Examples
    --------
    >>> from sktransfer.frozen.secret import seal, unseal
    >>> data = seal(b"EXAMPLE1", "entry 1", b"payload")
    >>> unseal(b"EXAMPLE1", "entry 1", data), unseal(b"EXAMPLE1", "entry 2", data)
    (b'payload', None)
    """
    header = len(magic) + _MAC_BYTES
    if len(data) < header or data[: len(magic)] != magic:
        return None
    payload = data[header:]
    if not hmac.compare_digest(data[len(magic) : header], _mac(magic, name, payload)):
        return None
    return payload
