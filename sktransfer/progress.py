"""What the library prints while it works: progress bars and skorch's epoch tables.

One policy for every place that shows progress, chosen from where the output goes:

- a terminal (stderr is a TTY): tqdm's ordinary bar, redrawn in place;
- a Jupyter notebook with ipywidgets: tqdm's widget, whose saved text (what GitHub and
  ``nbconvert`` show of an executed notebook) is replaced by the bar's final state when it
  closes, so a committed notebook never reads "0/100";
- anything else (CI logs, files, a notebook without ipywidgets): plain ASCII lines, one per
  update and at most one every ``LINE_INTERVAL`` seconds, each under 100 characters, never
  carriage returns or colour codes.

skorch's epoch table keeps its colours only on a terminal (:class:`PlainPrintLog`), and a
trained estimator labels its table with its non-default parameters
(:func:`training_header`), so the tables of a grid search's candidates can be told apart.
"""

from __future__ import annotations

import inspect
import re
import sys

from skorch.callbacks import PrintLog, ProgressBar
from tqdm import std

__all__ = [
    "LINE_INTERVAL",
    "PlainPrintLog",
    "PlainProgressBar",
    "progress_bar",
    "training_header",
]

#: Seconds between two lines of a plain (non-terminal) progress bar.
LINE_INTERVAL = 15.0

_LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def progress_bar(*, total: int | None, desc: str, unit: str = "it", disable: bool = False):
    """A tqdm progress bar suited to where the output goes (see the module docstring).

    Parameters
    ----------
    total : int or None
        Expected number of updates (None: unknown).
    desc : str
        What is counted, shown first.
    unit : str, default="it"
    disable : bool, default=False
        Show nothing.

    Returns
    -------
    tqdm.tqdm
        Use it as tqdm: ``update(n)``, ``close()`` or as a context manager.

    Examples
    --------
    >>> from sktransfer.progress import progress_bar
    >>> with progress_bar(total=3, desc="images", unit="img", disable=True) as bar:
    ...     for batch in range(3):
    ...         _ = bar.update(1)
    """
    kwargs = {"total": total, "desc": desc, "unit": unit, "disable": disable}
    if disable:
        return std.tqdm(**kwargs)
    if _notebook_widgets():
        return _notebook_class()(**kwargs)
    if _is_terminal(sys.stderr):
        return std.tqdm(**kwargs)
    return _LineTqdm(**kwargs, file=sys.stderr)


class _LineTqdm(std.tqdm):
    """tqdm writing whole lines (no carriage returns), at most one per ``LINE_INTERVAL``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("mininterval", LINE_INTERVAL)
        kwargs.setdefault("bar_format", _LINE_FORMAT)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("dynamic_ncols", False)
        super().__init__(*args, **kwargs)

    @staticmethod
    def status_printer(file):
        # tqdm redraws with "\r"; a log keeps every redraw, so each state gets its own line.
        # The line ends before the next one starts: tqdm writes the last "\n" on close.
        state = {"open": False}

        def print_status(line):
            if not line:  # tqdm clears the bar (leave=False): end the open line
                if state["open"]:
                    file.write("\n")
                    state["open"] = False
                return
            file.write(("\n" if state["open"] else "") + line)
            file.flush()
            state["open"] = True

        return print_status

    def close(self):
        # A log cannot erase a line (leave=False): end with the final state instead.
        self.leave = True
        super().close()


def _notebook_class():
    """tqdm's notebook widget, re-displayed when it closes so that the saved text of the
    output (an executed notebook's record) is the final state, not the first one."""
    from IPython.display import display
    from tqdm.notebook import tqdm as notebook_tqdm

    class _NotebookTqdm(notebook_tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, display=False, **kwargs)
            self._handle = display(self.container, display_id=True) if not self.disable else None
            self.displayed = True

        def close(self):
            super().close()
            if self._handle is not None and not getattr(self, "_final_shown", False):
                self._final_shown = True
                if self.leave:  # the same widget; its text/plain is now the final meter
                    self._handle.update(self.container)
                else:  # tqdm hid the widget: leave no stale text behind either
                    self._handle.update({"text/plain": ""}, raw=True)

    return _NotebookTqdm


def _notebook_widgets() -> bool:
    """Whether output goes to a Jupyter kernel (not a console) that can show ipywidgets."""
    if "ipykernel.zmqshell" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    if type(shell).__name__ != "ZMQInteractiveShell":
        return False
    try:
        from tqdm.notebook import IProgress
    except ImportError:
        return False
    return IProgress is not None


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PlainPrintLog(PrintLog):
    """skorch's epoch table, with its colour codes only when stdout is a terminal."""

    def format_row(self, row, key, color):
        text = super().format_row(row, key, color)
        if isinstance(text, str) and not _is_terminal(sys.stdout):
            return _ANSI.sub("", text)
        return text


class PlainProgressBar(ProgressBar):
    """skorch's per-batch bar through :func:`progress_bar` (lines in logs, widgets in
    notebooks)."""

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        total = self.batches_per_epoch
        if total == "auto":
            total = self._get_batches_per_epoch(net, dataset_train, dataset_valid)
        elif total == "count":
            total = len(net.history[-2, "batches"]) if len(net.history) > 1 else None
        self.pbar_ = progress_bar(total=total, desc=f"epoch {len(net.history)}", unit="batch")
        self.pbar_.leave = False


def training_header(estimator, n_train: int, n_valid: int | None) -> str:
    """The line printed above an estimator's epoch table: which estimator trains on how many
    samples. The estimator is named with the parameters that differ from their defaults (so
    a grid search's candidates differ); objects among them (a teacher, callbacks) by their
    type only, to keep the line short.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> training_header(LogisticRegression(C=0.1), 90, 10)
    'LogisticRegression(C=0.1): training on 90 samples, validating on 10'
    """
    changed = ", ".join(f"{name}={_short(value)}" for name, value in _changed(estimator))
    line = f"{type(estimator).__name__}({changed}): training on {n_train} samples"
    return line + (f", validating on {n_valid}" if n_valid else "")


def _changed(estimator):
    """(name, value) of the parameters that differ from the signature's defaults."""
    defaults = inspect.signature(type(estimator).__init__).parameters
    for name, value in sorted(estimator.get_params(deep=False).items()):
        default = defaults[name].default if name in defaults else inspect.Parameter.empty
        if value is default or (_is_plain(value) and _is_plain(default) and value == default):
            continue
        yield name, value


def _is_plain(value) -> bool:
    if isinstance(value, tuple | list):
        return all(_is_plain(item) for item in value)
    return value is None or isinstance(value, bool | int | float | str)


def _short(value) -> str:
    text = repr(value)
    if _is_plain(value) and len(text) <= 40:
        return text
    if isinstance(value, tuple | list):
        return f"<{len(value)} {type(value).__name__} items>"
    return f"<{type(value).__name__}>"
