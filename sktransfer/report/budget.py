"""The report's time budget: a clock from the command's start, what later stages hold back,
and the stage lines that say both.

Every decision to shrink or skip a stage compares a measured estimate with :meth:`Budget.left`,
what remains less what is held for later stages; the stage lines and the skip notes name every
such reserve, so "37 s left" never hides 30 s that a later stage keeps.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

__all__ = ["RESERVE", "Budget", "Progress"]

#: The share of the budget held back for the last stages (plots, files).
RESERVE = 0.1


@dataclass
class Budget:
    """Seconds left of the report's time budget, what is held back for later stages, and what
    was shrunk or skipped to keep it.

    ``start`` is when the clock started: the command line passes its own start, so start-up
    and imports count. ``reserves`` are seconds held back for later stages, by what they are
    for; every stage line and every skip note says them (:meth:`status`, :meth:`held`).

    Examples
    --------
    >>> from sktransfer.report.budget import Budget
    >>> budget = Budget(120.0)
    >>> budget.hold("t-SNE", 20)
    >>> budget.held()
    '12 s for writing the report and 20 s for t-SNE'
    >>> 85 < budget.left() <= 88
    True
    """

    seconds: float
    start: float = field(default_factory=time.perf_counter)
    notes: list = field(default_factory=list)
    reserves: dict = field(default_factory=dict)

    def __post_init__(self):
        self.reserves.setdefault("writing the report", RESERVE * self.seconds)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        """Seconds of the whole budget not yet spent."""
        return max(0.0, self.seconds - self.elapsed())

    def left(self) -> float:
        """Seconds a stage may spend now: what remains less what is held for later stages."""
        return self.remaining() - sum(self.reserves.values())

    def hold(self, purpose: str, seconds: float) -> None:
        self.reserves[purpose] = seconds

    def release(self, purpose: str) -> None:
        self.reserves.pop(purpose, None)

    def held(self) -> str:
        """``"12 s for writing the report and 23 s for t-SNE"``."""
        parts = [f"{seconds:.0f} s for {purpose}" for purpose, seconds in self.reserves.items()]
        return " and ".join(parts) if len(parts) < 3 else ", ".join(parts)

    def status(self) -> str:
        """``"83 s of budget left, holding 12 s for writing the report"``."""
        text = f"{self.remaining():.0f} s of budget left"
        return text + (f", holding {self.held()}" if self.reserves else "")


class Progress:
    """Stage lines on stderr and each stage's wall time."""

    def __init__(self, budget: Budget, verbose: int, n_stages: int = 7):
        self.budget, self.verbose, self.n_stages = budget, verbose, n_stages
        self.times: dict[str, float] = {}
        self._index = 0

    def stage(self, name: str, detail: str = ""):
        self._index += 1
        if self.verbose:
            print(
                f"[{self._index}/{self.n_stages}] {name}{': ' + detail if detail else ''} "
                f"({self.budget.status()})",
                file=sys.stderr,
                flush=True,
            )
        return _Timer(self, name)

    def say(self, message: str) -> None:
        if self.verbose:
            print(f"      {message}", file=sys.stderr, flush=True)


class _Timer:
    def __init__(self, progress: Progress, name: str):
        self.progress, self.name = progress, name

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.progress.times[self.name] = time.perf_counter() - self.start
        return False
