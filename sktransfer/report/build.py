"""``sktransfer report``: from labelled images to a transfer-learning recommendation.

The answers the lectures say to look for before spending compute, in one command: which layer
of the source model, feature extraction or light fine-tuning, what accuracy to expect, what it
costs, and the code of the winning pipeline. :func:`build_report` is the list of its stages,
each a function of :mod:`sktransfer.report.stages` that takes the run's
:class:`~sktransfer.report.context.ReportContext` and returns its result, in this order:

1. data: read and check DATA (:mod:`sktransfer.report.data`);
2. activations: one forward pass tapping the scored blocks and the source logits, through
   the on-disk activation cache, so a second run over the same images reads them back;
3. scores: LogME, H-score, LEEP and a 3-fold linear probe per layer
   (:func:`sktransfer.analysis.rank_layers`);
4. feature extraction: StandardScaler + LogisticRegression per layer, held-out test;
5. fine-tuning: :class:`sktransfer.FineTuneClassifier` training the top 3 blocks for a few
   epochs, sized (epochs, resolution) to what is left of the budget, or skipped;
6. t-SNE of a shallow and a deep layer, when time is left;
7. the report: the recommendation (:mod:`~sktransfer.report.recommend`), the plots
   (:mod:`~sktransfer.report.plots`), Markdown, self-contained HTML and JSON of every number
   (:mod:`~sktransfer.report.render`), and the recommended pipeline as a runnable Python file
   (:mod:`~sktransfer.report.codegen`).

The forward pass, the classifier fits and the fine-tuning fit are measured with
:func:`sktransfer.footprint.footprint` (energy, average power, CO2) for the lecture's trade-off
table. Stages 3, 4 and 6 only need activations; their results are memoised next to the
activation cache (:class:`sktransfer.report.memo.Memo`: ``.npz`` and JSON, authenticated, never
unpickled), keyed by the features themselves, so on a second run they cost a hash and a read.
The budget is planned (:mod:`sktransfer.report.plan`) from measured per-image costs: a pilot
batch for extraction, a timed eager forward pass for fine-tuning.
"""

from __future__ import annotations

from .context import Settings, start_report
from .data import DataError
from .stages import (
    activations,
    feature_extraction,
    fine_tuning,
    read_data,
    scores,
    tsne,
    write_report,
)

__all__ = ["DataError", "build_report"]


def build_report(
    data=None,
    *,
    backbone="mobilenet_v2",
    weights="DEFAULT",
    budget_minutes=5.0,
    out="sktransfer-report",
    cache=None,
    max_images=2000,
    finetune=True,
    n_jobs=None,
    verbose=1,
    random_state=0,
    country=None,
    carbon_intensity=None,
    force=False,
    started=None,
) -> dict:
    """Run every stage and write ``report.md``, ``report.html``, ``report.json`` and
    ``recommended_pipeline.py`` into ``out``.

    Parameters
    ----------
    data : str, path-like or None
        A class-per-folder tree (a ``train``/``val`` pair of them is used as the split), an
        ``.npz`` of images and labels, or None for scikit-learn's bundled digits.
    backbone : str or torch.nn.Module, default="mobilenet_v2"
    weights : str or None, default="DEFAULT"
    budget_minutes : float, default=5
        Wall-time budget; stages are shrunk or skipped to keep it (the report says which).
    out : path, default="sktransfer-report"
    cache : path or None
        The activation cache folder (None: ``default_cache_dir() / "activations"``).
    max_images : int or None, default=2000
        At most this many images in all (stratified subsample).
    finetune : bool, default=True
        Run the light fine-tuning stage when the budget allows.
    n_jobs : int or None
        Threads for decoding and ONNX Runtime (None: all cores).
    verbose : int, default=1
        Stage lines and progress bars on stderr.
    random_state : int, default=0
    country, carbon_intensity : str or None, float or None
        The grid powering the machine, for the CO2 column: an ISO 3166 alpha-3 code, or its
        g CO2e/kWh (neither: the world average); see :func:`sktransfer.footprint.footprint`.
    force : bool, default=False
        Overwrite an earlier report in ``out``. Without it, an ``out`` that holds one raises
        :class:`~sktransfer.report.paths.OutputError` before any work (as does an ``out``
        inside DATA, or an ``out`` or ``cache`` that names an existing file).
    started : float or None
        The :func:`time.perf_counter` value the budget counts from (None: now).

    Returns
    -------
    results : dict
        Every number of the report (what ``report.json`` holds).

    Examples
    --------
    >>> import tempfile
    >>> from torch import nn
    >>> from sktransfer.report import build_report
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    >>> folder = tempfile.mkdtemp()
    >>> results = build_report(None, backbone=net, weights=None, out=folder, cache=folder,
    ...                        max_images=60, finetune=False, verbose=0)
    >>> results["recommendation"]["approach"]
    'feature extraction'
    """
    settings = Settings(backbone, weights, cache, n_jobs, random_state, country, carbon_intensity)
    run = start_report(settings, data, out, budget_minutes, started, verbose, force=force)
    run.dataset = read_data(run, data, max_images)
    run.activations = activations(run)
    run.scores = scores(run)
    run.extraction, run.held_out = feature_extraction(run)
    run.fine_tuning = fine_tuning(run, enabled=finetune)
    run.tsne = tsne(run)
    return write_report(run)
