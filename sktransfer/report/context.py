"""What the report's stages share: the settings, the clock, the memo, the network (loaded at
most once) and each stage's result.

:func:`~sktransfer.report.build.build_report` makes a :class:`ReportContext` with
:func:`start_report` and hands it to each stage of :mod:`sktransfer.report.stages` in turn; a
stage reads the results of the stages before it from the context and returns its own, which
``build_report`` stores back in the context's field of that name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .budget import Budget, Progress
from .data import ReportData
from .memo import Memo
from .paths import check_report_paths

__all__ = ["Activations", "ReportContext", "Scores", "Settings", "start_report"]


@dataclass(frozen=True)
class Settings:
    """The user's choices that the stages read (:func:`build_report`'s arguments)."""

    backbone: object  # a torchvision name or a torch.nn.Module
    weights: object
    cache: object  # as given: None is the default folder (the generated script asks for it)
    n_jobs: int | None
    random_state: int
    country: str | None = None
    carbon_intensity: float | None = None

    @property
    def named(self) -> bool:
        """Whether the backbone is a name (its layer plan and activations are memoised)."""
        return isinstance(self.backbone, str)

    @property
    def grid(self) -> dict:
        """The grid for :func:`sktransfer.footprint.footprint`'s CO2."""
        return dict(country=self.country, carbon_intensity=self.carbon_intensity)


@dataclass
class Activations:
    """Every scored layer's features of all images (training images first), the source
    model's class probabilities (None without a source classifier), and what the pass cost
    (``cost``: report.json's ``activations`` entry, plus the ``weights`` used)."""

    features: dict
    probabilities: object
    cost: dict
    n_train: int
    footprint: object = None  # the pass's Footprint, set when its stage ends

    def train(self) -> dict:
        return {layer: X[: self.n_train] for layer, X in self.features.items()}

    def test(self) -> dict:
        return {layer: X[self.n_train :] for layer, X in self.features.items()}


@dataclass
class Scores:
    """The score table (a row per layer), the layer it picks, and what scoring cost."""

    table: object
    best_layer: str
    footprint: object


@dataclass
class ReportContext:
    """The state the stages pass along: settings and clock first, then a field per stage.

    A new stage adds its field here (None until it ran) and reads earlier ones."""

    settings: Settings
    out: Path
    cache_dir: Path
    budget: Budget
    progress: Progress
    memo: Memo
    dataset: ReportData | None = None
    activations: Activations | None = None
    scores: Scores | None = None
    extraction: dict | None = None
    held_out: dict | None = None  # each layer's held-out result
    fine_tuning: dict | None = None
    tsne: dict | None = None
    _network: object = field(default=None, repr=False)

    def network(self):
        """The backbone, loaded (:func:`~sktransfer.backbones.load_backbone`) by the first
        stage that needs the network itself and kept for the next: a rerun that reads every
        result back loads none."""
        if self._network is None:
            from ..backbones import load_backbone

            s = self.settings
            seed = s.random_state if s.weights is None else None
            self._network = load_backbone(s.backbone, s.weights, random_state=seed)
        return self._network

    def extractor_params(self) -> dict:
        """The :class:`~sktransfer.DeepFeatureExtractor` parameters of every pass."""
        s = self.settings
        params = dict(weights=s.weights, cache=str(self.cache_dir), n_jobs=s.n_jobs)
        if s.weights is None:
            params["random_state"] = s.random_state
        return params


def start_report(
    settings: Settings, data, out, budget_minutes, started, verbose, *, force=False
) -> ReportContext:
    """The clock (from ``started``, else now), the folders checked, the memo: no stage yet.

    A bad ``out`` or ``cache`` and a bad grid setting fail here, before any work."""
    from .._version import __version__
    from ..footprint import resolve_grid
    from ..frozen import default_cache_dir

    budget = Budget(
        float(budget_minutes) * 60, start=time.perf_counter() if started is None else started
    )
    check_report_paths(data, out, settings.cache, force=force)
    resolve_grid(**settings.grid)  # a bad setting fails now, not after the forward pass
    cache = settings.cache
    cache_dir = Path(cache) if cache is not None else default_cache_dir() / "activations"
    # The memo keys calls by their arguments, not the library's code: a folder per
    # sktransfer version keeps an upgrade from reading stale scores.
    memo = Memo(cache_dir / "report" / __version__)
    return ReportContext(settings, Path(out), cache_dir, budget, Progress(budget, verbose), memo)
