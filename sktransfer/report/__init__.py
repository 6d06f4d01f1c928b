"""The report: ``sktransfer report DATA`` answers "which layer, which method, how well".

- :mod:`~sktransfer.report.paths`: the output folder and what may be written there;
- :mod:`~sktransfer.report.data`: the dataset (a folder, an ``.npz`` or the embedded digits);
- :mod:`~sktransfer.report.budget`: the time budget and progress lines;
- :mod:`~sktransfer.report.memo`: authenticated results of earlier runs, reused on a rerun;
- :mod:`~sktransfer.report.tradeoff`: the accuracy / time / energy table;
- :mod:`~sktransfer.report.codegen`: the recommended pipeline as a runnable script;
- :mod:`~sktransfer.report.plan`: the layers scored and what the budget affords, from
  measured costs;
- :mod:`~sktransfer.report.context`: :class:`~sktransfer.report.context.ReportContext`, the
  state the stages pass along (the backbone loaded at most once);
- :mod:`~sktransfer.report.recommend`: feature extraction or fine-tuning, and why;
- :mod:`~sktransfer.report.plots`: the figures as PNG bytes;
- :mod:`~sktransfer.report.render`: report.json, report.md and report.html;
- :mod:`~sktransfer.report.stages`: one function per stage;
- :mod:`~sktransfer.report.build`: :func:`build_report`, the list of the stages in order.

The command line reads :mod:`~sktransfer.report.paths` (and refuses a bad folder) before torch
is imported, so this package imports :mod:`~sktransfer.report.build` on first use only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .paths import OutputError, ReportError

__all__ = ["DataError", "OutputError", "ReportError", "build_report"]


def __getattr__(name: str):
    if name in ("DataError", "build_report"):
        return getattr(importlib.import_module(f"{__name__}.build"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .build import DataError, build_report
