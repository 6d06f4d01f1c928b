"""Where ``sktransfer report`` writes: its output and cache folders, checked before any work.

Every folder a user names holds files they care about. The report never overwrites an earlier
report without ``force`` (``--force``), never writes into the images it reads (an output
folder inside DATA would put the report's PNGs into a class folder, and the next run would
train on them), and a path that names an existing file is refused with one line. This module
imports nothing heavy: the command line runs it before loading torch.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPORT_FILES", "OutputError", "ReportError", "check_report_paths"]

#: The files a report writes into its output folder.
REPORT_FILES = (
    "report.md",
    "report.html",
    "report.json",
    "recommended_pipeline.py",
    "scores.png",
    "comparison.png",
    "confusion.png",
    "tsne.png",
)


class ReportError(ValueError):
    """Bad input to the report (DATA, a folder, an option): the command line prints the
    message, which says what was wrong and how to fix it, and exits with status 2."""


class OutputError(ReportError):
    """The report's output or cache folder cannot be used; the message says why and how."""


def check_report_paths(data, out, cache=None, *, force: bool = False) -> None:
    """Raise :class:`OutputError` unless the report may write into ``out`` and ``cache``.

    Parameters
    ----------
    data : str, path-like or None
        The report's DATA (a folder, an ``.npz`` file, or None).
    out : str or path-like
        The output folder (created if missing).
    cache : str, path-like or None
        The activation cache folder (None: the default one).
    force : bool, default=False
        Overwrite the files of an earlier report in ``out``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sktransfer.report.paths import OutputError, check_report_paths
    >>> out = Path(tempfile.mkdtemp())
    >>> check_report_paths(None, out)  # an empty folder: fine
    >>> _ = (out / "report.json").write_text("{}")
    >>> try:
    ...     check_report_paths(None, out)
    ... except OutputError as error:
    ...     print(str(error).split(";")[0])  # doctest: +ELLIPSIS
    The output folder ... already holds a report (report.json)
    """
    out = Path(out)
    _check_folder(out, "The output folder", "--out")
    if cache is not None:
        _check_folder(Path(cache), "The cache folder", "--cache")
    if data is not None and Path(data).is_dir() and _inside(out, Path(data)):
        raise OutputError(
            f"The output folder {str(out)!r} (--out) is inside DATA {str(data)!r}: the "
            "report's files would become images of a class, and the next run would train on "
            "them. Choose an --out outside DATA."
        )
    existing = [name for name in REPORT_FILES if (out / name).exists()]
    if existing and not force:
        raise OutputError(
            f"The output folder {str(out)!r} (--out) already holds a report "
            f"({', '.join(existing)}); pass --force (force=True) to overwrite it, or choose "
            "another --out."
        )


def _check_folder(path: Path, what: str, flag: str) -> None:
    """``path`` is a folder, or can be created as one: no part of it is an existing file."""
    for part in (path, *path.parents):
        if part.is_dir():
            return
        if part.exists():
            detail = "is an existing file" if part == path else f"is inside the file {str(part)!r}"
            raise OutputError(
                f"{what} {str(path)!r} ({flag}) {detail}, not a folder. Name a folder (it is "
                "created if missing)."
            )


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents
