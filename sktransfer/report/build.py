"""``sktransfer report``: from labelled images to a transfer-learning recommendation.

The answers the lectures say to look for before spending compute, in one command: which layer
of the source model, feature extraction or light fine-tuning, what accuracy to expect, what it
costs, and the code of the winning pipeline. Stages, in order of cost:

1. data: read and check DATA (:mod:`sktransfer.report.data`);
2. activations: one forward pass tapping every block and the source logits
   (:func:`sktransfer.analysis.extract_layer_features`), through the on-disk activation
   cache, so a second run over the same images reads them back;
3. scores: LogME, H-score, LEEP and a 3-fold linear probe per layer
   (:func:`sktransfer.analysis.rank_layers`);
4. feature extraction: StandardScaler + LogisticRegression on the best layer, held-out test;
5. t-SNE of a shallow and a deep layer;
6. fine-tuning: :class:`sktransfer.FineTuneClassifier` training the top 3 blocks for a few
   epochs, sized (epochs, resolution) to what is left of the budget, or skipped;
   the forward pass, the classifier fits and the fine-tuning fit are measured with
   :func:`sktransfer.footprint.footprint` (energy, average power, CO2) for the lecture's
   trade-off table;
7. the report: Markdown, self-contained HTML (PNG plots inlined), JSON of every number, and
   the recommended pipeline as a runnable Python file.

Stages 3-5 only need activations; their results are memoised next to the activation cache
(:class:`sktransfer.report.memo.Memo`: ``.npz`` and JSON, authenticated, never unpickled), keyed by
the features themselves, so on a second run they cost a hash and a read. The budget is
planned from measured per-image costs: a pilot batch for extraction, a timed eager forward
pass for fine-tuning.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

from .budget import Budget, Progress
from .codegen import _backbone_name, pipeline_code
from .data import DataError, ReportData, load_report_data
from .memo import Memo
from .paths import check_report_paths
from .tradeoff import extraction_trade_off, trade_off, trade_off_blocks

__all__ = ["DataError", "build_report"]

#: Fine-tuning is planned at this many eager forward passes per training image (forward,
#: backward through the top blocks, optimizer step), plus one per test image.
TRAIN_COST_FACTOR = 1.5
MAX_FINETUNE_EPOCHS = 3
#: Fine-tuning is recommended only when it beats feature extraction by more than this
#: (held-out accuracy): feature extraction needs no training, and its cached forward pass
#: serves every later fit.
FINETUNE_MARGIN = 0.01
#: Layers scored (evenly spread over the network's blocks): each costs a probe and a fit.
MAX_LAYERS = 8
#: The activation pass is timed on a batch of this many images after a warm-up batch.
PILOT_IMAGES = 16
#: Data of at most this many images is never subsampled (nor piloted) for the budget.
MIN_SUBSAMPLE = 64
#: Subsample only to save at least this share of the budget: shaving 100 of 1,200 images
#: saved 11 s of 240 and cost the report 8 % of its data.
MIN_SAVING = 0.1
#: t-SNE runs on at most this many images (a subsample), at about 50 ms per image here.
TSNE_SAMPLES = 600


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
        Wall-time budget; expensive stages are shrunk or skipped to keep it (the report
        says which).
    out : path, default="sktransfer-report"
    cache : path or None
        The activation cache folder. None: ``<user cache dir>/activations``
        (:func:`sktransfer.frozen.default_cache_dir`).
    max_images : int or None, default=2000
        At most this many images in all (stratified subsample).
    finetune : bool, default=True
        Run the light fine-tuning stage when the budget allows.
    n_jobs : int or None
        Threads for decoding and ONNX Runtime (None: all cores).
    verbose : int, default=1
        Stage lines and progress bars on stderr.
    random_state : int, default=0
    country : str or None
        ISO 3166 alpha-3 code of the grid powering the machine, for the CO2 column.
    carbon_intensity : float or None
        The grid's g CO2e/kWh instead (neither: the world average). See
        :func:`sktransfer.footprint.footprint`.
    force : bool, default=False
        Overwrite an earlier report in ``out``; without it, an ``out`` that holds one raises
        :class:`~sktransfer.report.paths.OutputError` (as does an ``out`` inside DATA, or an
        ``out`` or ``cache`` that names an existing file), before any work.
    started : float or None
        The :func:`time.perf_counter` value the budget counts from (the command line passes
        its own start, so start-up and imports count); None: when this function is called.

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
    from ..footprint import footprint, resolve_grid
    from ..frozen import default_cache_dir

    budget = Budget(
        float(budget_minutes) * 60, start=time.perf_counter() if started is None else started
    )
    check_report_paths(data, out, cache, force=force)
    grid = dict(country=country, carbon_intensity=carbon_intensity)
    resolve_grid(**grid)  # a bad setting fails now, not after the forward pass
    progress = Progress(budget, verbose)
    out = Path(out)
    cache_dir = Path(cache) if cache is not None else default_cache_dir() / "activations"

    with progress.stage("data", str(data) if data is not None else "embedded default: digits"):
        dataset = load_report_data(data, max_images=max_images, random_state=random_state)
        out.mkdir(parents=True, exist_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
    progress.say(
        f"{len(dataset.y_train)} training and {len(dataset.y_test)} test images, "
        f"{len(dataset.classes)} classes"
    )
    memory = _memory(cache_dir)
    extractor_params = dict(weights=weights, cache=str(cache_dir), n_jobs=n_jobs)
    if weights is None:
        extractor_params["random_state"] = random_state

    with (
        progress.stage("activations", "one forward pass tapping every block (cached on disk)"),
        footprint(**grid) as pass_footprint,
    ):
        (features, probabilities), extraction = _activations(
            dataset, backbone, extractor_params, budget, progress, memory, random_state
        )
    n_train = len(dataset.y_train)
    train = {layer: X[:n_train] for layer, X in features.items()}
    test = {layer: X[n_train:] for layer, X in features.items()}

    with (
        progress.stage("scores", "LogME, H-score, LEEP and a 3-fold linear probe per layer"),
        footprint(**grid) as scores_footprint,
    ):
        table = memory.cache(_score_table)(
            train, dataset.y_train, probabilities[:n_train] if probabilities is not None else None
        )
    key = "probe_accuracy" if "probe_accuracy" in table else "logme"
    best_layer = str(table.sort_values(key, ascending=False, kind="stable")["layer"].iloc[0])
    progress.say(f"best layer by {key}: {best_layer}")

    with (
        progress.stage("feature extraction", f"logistic regression on {best_layer}"),
        footprint(**grid) as fits_footprint,
    ):
        layer_tests = memory.cache(_held_out_by_layer)(train, dataset.y_train, test, dataset.y_test)
        chosen = layer_tests[best_layer]
        extraction_result = {
            "layer": best_layer,
            "accuracy": chosen["accuracy"],
            "fit_seconds": extraction["cold_seconds_per_image"] * n_train + chosen["fit_seconds"],
            "activation_seconds": extraction["seconds"],
            "classifier_fit_seconds": chosen["fit_seconds"],
            "predictions": chosen["predictions"],
        }
    extraction_result.update(
        extraction_trade_off(
            table,
            best_layer,
            _probe_folds(dataset.y_train),
            pass_footprint,
            scores_footprint + fits_footprint,
        )
    )
    progress.say(f"held-out accuracy {chosen['accuracy']:.3f}")

    tsne_estimate = 3 + 0.05 * min(len(dataset.y_train) + len(dataset.y_test), TSNE_SAMPLES)
    budget.hold("t-SNE", tsne_estimate)  # it runs after fine-tuning
    with progress.stage("fine-tuning", "FineTuneClassifier, top 3 blocks"):
        finetune_result = None
        if finetune:
            finetune_result = _finetune(
                dataset, backbone, weights, n_jobs, budget, progress, grid=grid
            )
        else:
            budget.notes.append("Fine-tuning skipped: turned off (--no-finetune).")

    layers = list(features)
    shallow, deep = layers[len(layers) // 4], layers[-1]
    plots: dict[str, bytes] = {}
    budget.release("t-SNE")  # its turn: what it held is what it may spend
    with progress.stage("t-SNE", f"{shallow} and {deep}"):
        if budget.left() > tsne_estimate:
            plots["tsne"] = memory.cache(_tsne_png)(
                features[shallow],
                features[deep],
                np.concatenate([dataset.y_train, dataset.y_test]).astype(str),
                (shallow, deep),
                random_state,
            )
        else:
            budget.notes.append(
                f"t-SNE skipped: about {tsne_estimate:.0f} s, more than the "
                f"{max(0.0, budget.left()):.0f} s left after holding {budget.held()}."
            )

    budget.release("writing the report")
    with progress.stage("report", str(out)):
        recommendation = _recommend(extraction_result, finetune_result)
        predictions = (
            finetune_result["predictions"]
            if recommendation["approach"] == "fine-tuning"
            else extraction_result["predictions"]
        )
        plots["scores"] = _png(_plot_scores(table))
        plots["comparison"] = _png(_plot_comparison(extraction_result, finetune_result))
        plots["confusion"] = _png(
            _plot_confusion(dataset.y_test, predictions, dataset.classes, recommendation)
        )
        code = pipeline_code(dataset, backbone, weights, recommendation, cache, random_state)
        results = {
            "sktransfer_report": 1,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": _machine(),
            "data": {**dataset.describe(), "notes": dataset.notes},
            "backbone": _backbone_name(backbone),
            "weights": extraction.get("weights"),
            "budget_seconds": budget.seconds,
            "budget_notes": budget.notes,
            "cache_dir": str(cache_dir),
            "activations": {k: v for k, v in extraction.items() if k != "weights"},
            "layers": _records(table, layer_tests),
            "feature_extraction": _strip(extraction_result),
            "fine_tuning": _strip(finetune_result) if finetune_result else None,
            "trade_off": trade_off(extraction, extraction_result, finetune_result),
            "recommendation": recommendation,
            "confusion_matrix": _confusion(dataset.y_test, predictions, dataset.classes),
            "tsne_layers": [shallow, deep] if "tsne" in plots else None,
            "stage_seconds": {},
        }
        _write(out, results, plots, code)
    results["stage_seconds"] = dict(progress.times)
    results["total_seconds"] = budget.elapsed()
    _write(out, results, plots, code)  # again, with the report stage's own time
    if verbose:
        print(
            f"Report written to {out / 'report.html'} (and report.md, report.json, "
            f"recommended_pipeline.py) in {results['total_seconds']:.0f} s.",
            file=sys.stderr,
        )
    return results


# ------------------------------------------------------------------------------ stages


def _memory(cache_dir: Path) -> Memo:
    from .._version import __version__

    # The memo keys calls by their arguments, not the library's code: a folder per
    # sktransfer version keeps an upgrade from reading stale scores.
    return Memo(cache_dir / "report" / __version__)


def _activations(
    dataset: ReportData, backbone, params, budget: Budget, progress, memory, random_state=0
):
    """Every scored layer's features and the source probabilities of all images.

    A rerun over the same images (keyed by :func:`sktransfer.frozen.image_keys`: file path,
    size and modification time, or array bytes) reads the assembled features back at once.
    Otherwise, for more than ``MIN_SUBSAMPLE`` images, a pilot batch after a warm-up batch
    measures the per-image cost, and if the whole pass would take more than half of what is
    left and subsampling saves a real share of the budget, the images are subsampled (the
    report says so). The pass goes through the activation cache, so the pilot's images are
    not computed twice and pipelines fitted later on these images reuse it.
    """
    from ..extraction import DeepFeatureExtractor
    from ..frozen import image_keys
    from ..images import check_images

    if isinstance(backbone, str):  # the layer plan depends on the architecture only
        layers, logits = memory.cache(_layer_plan)(backbone, params["weights"])
        stacked_features = memory.cache(_stacked_features, ignore=["X", "params", "verbose"])
    else:
        layers, logits = _layer_plan(backbone, params["weights"], params.get("random_state"))
        stacked_features = _stacked_features
    tapped = layers + ([logits] if logits and logits not in layers else [])
    verbose = 1 if progress.verbose else 0
    identity = f"{params['weights']}|{params.get('random_state')}"
    X = _concat(dataset.X_train, dataset.X_test)
    cost_key = f"{_backbone_name(backbone)}|{params['weights']}|{len(tapped)} layers|{dataset.name}"
    call = (X, params, backbone, identity, tapped, image_keys(check_images(X)), verbose)
    if stacked_features is not _stacked_features and stacked_features.check_call_in_cache(*call):
        start = time.perf_counter()
        stacked, slices, weights = stacked_features(*call)
        seconds = time.perf_counter() - start
        cold, _ = _cold_cost(memory, cost_key, 0.0)
        progress.say(f"read back {len(X)} images' activations in {seconds:.1f} s")
        return _split(stacked, slices, layers, logits), {
            "layers": layers,
            "n_images": len(X),
            "seconds": seconds,
            "seconds_per_image": seconds / len(X),
            "cold_seconds_per_image": cold,
            "from_cache": True,
            "warm_up_seconds": 0.0,
            "weights": weights,
        }
    n_total = len(X)
    warm, per_image = 0.0, None
    if n_total > MIN_SUBSAMPLE:  # smaller data is never subsampled: no pilot needed
        extractor = DeepFeatureExtractor(backbone, layers=tapped, **params)
        warm, per_image = _pilot_cost(extractor, X)
        progress.say(
            f"{per_image * 1000:.0f} ms per image; about {per_image * n_total:.0f} s for all"
        )
        keep = _affordable_images(per_image, n_total, budget, dataset.min_subsample)
        if keep < n_total:
            budget.notes.append(
                f"Activations: about {per_image * 1000:.0f} ms per image would take "
                f"{per_image * n_total:.0f} s for {n_total} images, more than half of the "
                f"{budget.left():.0f} s left; subsampled to {keep}, saving about "
                f"{per_image * (n_total - keep):.0f} s."
            )
            dataset.subsample(keep, random_state, why=" to keep the budget")
            X = _concat(dataset.X_train, dataset.X_test)
            call = (X, params, backbone, identity, tapped, image_keys(check_images(X)), verbose)
    start = time.perf_counter()
    stacked, slices, weights = stacked_features(*call)
    seconds = time.perf_counter() - start
    per_image = seconds / len(X) if per_image is None else per_image
    cold, cached = _cold_cost(memory, cost_key, per_image)
    return _split(stacked, slices, layers, logits), {
        "layers": layers,
        "n_images": len(X),
        "seconds": seconds,
        "seconds_per_image": per_image,
        "cold_seconds_per_image": cold,
        "from_cache": cached,
        "warm_up_seconds": warm,
        "weights": weights,
    }


def _pilot_cost(extractor, X) -> tuple[float, float]:
    """Seconds of the warm-up (fit, graph export, a first batch of ``PILOT_IMAGES``) and
    seconds per image of the next batch; ``X`` holds at least ``2 * PILOT_IMAGES`` images."""
    start = time.perf_counter()
    extractor.fit(X[:1])
    extractor.transform(X[:PILOT_IMAGES])
    warm = time.perf_counter() - start
    start = time.perf_counter()
    extractor.transform(X[PILOT_IMAGES : 2 * PILOT_IMAGES])
    return warm, (time.perf_counter() - start) / PILOT_IMAGES


def _affordable_images(per_image: float, n_total: int, budget: Budget, least: int = 0) -> int:
    """All images, unless their pass would take more than half of what is left and a
    subsample (at least ``MIN_SUBSAMPLE`` and ``least`` images) saves ``MIN_SAVING`` of the
    budget."""
    affordable = int(0.5 * budget.left() / max(per_image, 1e-9))
    keep = max(MIN_SUBSAMPLE, least, affordable)
    if keep >= n_total or (n_total - keep) * per_image < MIN_SAVING * budget.seconds:
        return n_total
    return keep


def _stacked_features(X, params, backbone, weights, tapped, keys, verbose):
    """All tapped layers' pooled features of X, through the activation cache. ``keys`` (the
    images' cache keys) and ``weights`` identify the call for memoisation; X is not hashed."""
    from ..extraction import DeepFeatureExtractor

    extractor = DeepFeatureExtractor(backbone, layers=tapped, verbose=verbose, **params)
    stacked = extractor.fit(X[:1]).transform(X)
    return stacked, dict(extractor.layer_slices_), extractor.weights_


def _split(stacked, slices, layers, logits):
    from scipy.special import softmax

    features = {layer: stacked[:, slices[layer]] for layer in layers}
    probabilities = None
    if logits:
        probabilities = softmax(stacked[:, slices[logits]].astype(float), axis=1)
    return features, probabilities


def _layer_plan(backbone, weights, random_state=None) -> tuple[list, str | None]:
    """The blocks to score (at most MAX_LAYERS, spread over the depth) and the logits layer
    (None without a source classifier: no LEEP)."""
    from ..analysis.features import logits_layer
    from ..backbones import block_layers, load_backbone

    loaded = load_backbone(backbone, weights, random_state=random_state)
    try:
        logits = logits_layer(loaded)
    except ValueError:
        logits = None
    return _spread(block_layers(loaded), MAX_LAYERS), logits


def _cold_cost(memory: Memo, key: str, measured: float) -> tuple[float, bool]:
    """The per-image cost of computing activations, and whether this run read them from the
    cache: the first cold measurement is kept next to the cache (authenticated, like the
    memo), so a cached rerun still reports what extraction costs without a cache."""
    costs = memory.read_json("extraction_costs") or {}
    stored = costs.get(key)
    if not isinstance(stored, float | int | None):
        stored = None
    if stored is not None and measured < stored / 5:  # served from the cache
        return stored, True
    if measured <= 0:
        return stored or 0.0, True
    costs[key] = float(measured)
    memory.write_json("extraction_costs", costs)
    return measured, False


def _spread(layers: list, n: int) -> list:
    """At most ``n`` layers evenly spread over the depth, the last one always included."""
    if len(layers) <= n:
        return list(layers)
    picks = np.unique(np.round(np.linspace(len(layers) - 1, 0, n)).astype(int))
    return [layers[i] for i in picks]


def _concat(a, b):
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape[1:] == b.shape[1:]:
        return np.concatenate([a, b])
    return np.array([*a, *b], dtype=object if not isinstance(a[0], str) else str)


def _probe_folds(y) -> int:
    """Folds of the linear probe: 3, fewer when a class has fewer images."""
    return int(min(3, np.unique(y, return_counts=True)[1].min()))


def _score_table(train, y, probabilities):
    from ..analysis import rank_layers

    cv = _probe_folds(y)
    scores = ["logme", "h_score"] + (["leep"] if probabilities is not None else [])
    return rank_layers(
        train, y, scores=scores, source_probabilities=probabilities, probe=True, cv=cv
    )


def _logistic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))


def _held_out_by_layer(train, y_train, test, y_test) -> dict:
    """Each layer's held-out accuracy with StandardScaler + LogisticRegression(C=0.1)."""
    from threadpoolctl import threadpool_limits

    results = {}
    for layer in train:
        start = time.perf_counter()
        with threadpool_limits(1):
            model = _logistic().fit(train[layer], y_train)
        seconds = time.perf_counter() - start
        predictions = model.predict(test[layer])
        results[layer] = {
            "accuracy": float(np.mean(predictions == y_test)),
            "fit_seconds": seconds,
            "predictions": predictions,
        }
    return results


def _tsne_png(shallow, deep, y, titles, random_state) -> bytes:
    from threadpoolctl import threadpool_limits

    from ..analysis import plot_tsne_pair

    # One thread: on shared or oversubscribed cores, OpenMP's spin-waits made t-SNE 10x slower.
    with threadpool_limits(1):
        figure = plot_tsne_pair(
            shallow, deep, y, titles=titles, max_samples=TSNE_SAMPLES, random_state=random_state
        )
    return _png(figure)


def _forward_seconds(backbone, weights, image_size: int) -> tuple[float, int]:
    """Seconds of one eager forward pass per image (a batch of 8, after a warm-up batch),
    with torch's default threads and with one; returns the faster and its thread count.

    On shared or oversubscribed cores one thread was 3-5x faster here (spin-waits)."""
    import torch

    from ..backbones import load_backbone

    module = load_backbone(backbone, weights, random_state=0).module.eval()
    batch = torch.rand(8, 3, image_size, image_size)
    default = torch.get_num_threads()
    timings = {}
    try:
        for threads in dict.fromkeys((default, 1)):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                module(batch[:2])
                start = time.perf_counter()
                module(batch)
            timings[threads] = (time.perf_counter() - start) / 8
    finally:
        torch.set_num_threads(default)
    threads = min(timings, key=timings.get)
    return timings[threads], threads


def _finetune(
    dataset: ReportData, backbone, weights, n_jobs, budget: Budget, progress, grid=None
) -> dict | None:
    from ..finetune import FineTuneClassifier
    from ..footprint import footprint

    n_train, n_test = len(dataset.y_train), len(dataset.y_test)
    smallest = _smallest_side(dataset.X_train)
    sizes = [224, 160, 112] if smallest is None or smallest >= 112 else [112, 64]
    if not isinstance(backbone, str):
        sizes = [None]
    chosen = None
    measured, threads = _forward_seconds(backbone, weights, sizes[0] or smallest or 32)
    for size in sizes:
        # the cost of a convolutional network grows with the pixels
        per_image = measured * ((size / sizes[0]) ** 2 if size else 1.0)
        per_epoch = TRAIN_COST_FACTOR * per_image * n_train
        fixed = per_image * n_test + 5.0  # prediction, loading the network
        available = budget.left() - fixed
        epochs = int(min(MAX_FINETUNE_EPOCHS, available // max(per_epoch, 1e-9)))
        if epochs >= 1:
            chosen = size, epochs, per_epoch * epochs + fixed
            break
    if chosen is None:
        budget.notes.append(
            f"Fine-tuning skipped: one epoch at {sizes[-1]} px would take about "
            f"{per_epoch + fixed:.0f} s, more than the {max(0, budget.left()):.0f} s left "
            f"after holding {budget.held()}. Raise --budget to include it."
        )
        progress.say(budget.notes[-1])
        return None
    size, epochs, estimate = chosen
    if size != sizes[0] or epochs < MAX_FINETUNE_EPOCHS:
        budget.notes.append(
            f"Fine-tuning shrunk to {epochs} epoch(s)"
            + (f" at {size} px" if size else "")
            + f" (about {estimate:.0f} s) to fit the budget."
        )
    progress.say(f"{epochs} epoch(s) at {size or 'native'} px, about {estimate:.0f} s")
    params = dict(
        train_layers=3 if isinstance(backbone, str) else "all",
        max_epochs=epochs,
        optimizer="adamw",
        lr=1e-3,
        backbone_lr_scale=0.1,
        batch_size=16,
        image_size=size,
    )
    model = FineTuneClassifier(
        backbone, weights=weights, random_state=0, n_jobs=n_jobs, verbose=1, **params
    )
    import torch

    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # the faster setting measured above; restored below
    try:
        with footprint(**(grid or {})) as fit_footprint:
            model.fit(dataset.X_train, dataset.y_train)
        fit_seconds = fit_footprint.seconds
        predictions = model.predict(dataset.X_test)
    finally:
        torch.set_num_threads(default_threads)
    return {
        "params": params,
        "accuracy": float(np.mean(predictions == dataset.y_test)),
        "fit_seconds": fit_seconds,
        "estimated_seconds": estimate,
        "epochs": int(model.n_epochs_),
        "torch_threads": threads,
        "trainable_params": int(model.n_trainable_params_),
        "total_params": int(model.n_params_),
        "predictions": predictions,
        "footprint": fit_footprint.to_dict(),
        "n_exp": 1,  # one fit, no search
    }


def _smallest_side(X) -> int | None:
    if isinstance(X, np.ndarray) and X.dtype.kind not in "USO":
        return int(min(X.shape[1:3]))
    return None


def _recommend(extraction: dict, finetune: dict | None) -> dict:
    """The more accurate approach; feature extraction when fine-tuning is less than
    ``FINETUNE_MARGIN`` more accurate, since it costs one forward pass and no training.
    ``reason`` is one sentence: what was compared, and why the winner won."""
    choice = {
        "approach": "feature extraction",
        "layer": extraction["layer"],
        "accuracy": extraction["accuracy"],
        "fit_seconds": extraction["fit_seconds"],
    }
    fe = f"logistic regression on layer {extraction['layer']}"
    if finetune is None:
        choice["reason"] = (
            f"Only feature extraction ({fe}) ran, so it is the recommendation: fine-tuning "
            "was skipped (see the notes)."
        )
        return choice
    gain = finetune["accuracy"] - extraction["accuracy"]
    cost = finetune["fit_seconds"] / max(extraction["fit_seconds"], 1e-9)
    compared = (
        f"F{_finetune_description(finetune)[1:]} reached {finetune['accuracy']:.3f} "
        f"held-out accuracy against {extraction['accuracy']:.3f} for {fe}"
    )
    margin = f"{100 * FINETUNE_MARGIN:.0f}-point margin"
    if gain > FINETUNE_MARGIN:
        return {
            "approach": "fine-tuning",
            "params": finetune["params"],
            "torch_threads": finetune["torch_threads"],
            "accuracy": finetune["accuracy"],
            "fit_seconds": finetune["fit_seconds"],
            "reason": f"{compared}: {100 * gain:.1f} points more, above the {margin} that "
            f"pays for its {cost:.1f}x fit time.",
        }
    if gain > 0:
        why = (
            f"{100 * gain:.1f} points more, within the {margin} that would pay for its "
            f"{cost:.1f}x fit time, so feature extraction (no training) is preferred"
        )
    elif gain < 0:
        why = f"{100 * -gain:.1f} points less, at {cost:.1f}x the fit time"
    else:
        why = f"as accurate, at {cost:.1f}x the fit time"
    choice["reason"] = f"{compared}: {why}."
    return choice


def _finetune_description(finetune: dict) -> str:
    """``"fine-tuning the top 3 blocks (3 epochs at 224 px)"``."""
    params = finetune["params"]
    what = (
        "all layers"
        if params["train_layers"] == "all"
        else f"the top {params['train_layers']} blocks"
    )
    size = f"{params['image_size']} px" if params["image_size"] else "native size"
    epochs = finetune["epochs"]
    return f"fine-tuning {what} ({epochs} epoch{'s' if epochs != 1 else ''} at {size})"


# ------------------------------------------------------------------------------ outputs


def _machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def _strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "predictions"}


def _records(table, layer_tests) -> list[dict]:
    records = []
    for row in table.sort_values("depth").to_dict("records"):
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        row["test_accuracy"] = layer_tests[row["layer"]]["accuracy"]
        records.append(row)
    return records


def _confusion(y_true, y_pred, classes) -> dict:
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    return {"labels": [str(c) for c in classes], "matrix": matrix.tolist()}


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _plot_scores(table):
    """Probe accuracy (left axis) and the unsupervised scores (normalised, right) by depth."""
    rows = table.sort_values("depth")
    figure = _figure(figsize=(8, 4.5))
    ax = figure.subplots()
    x = np.arange(len(rows))
    if "probe_accuracy" in rows:
        ax.plot(x, rows["probe_accuracy"], "ks-", linewidth=2.5, label="probe accuracy (3-fold)")
    ax.set_ylabel("linear-probe accuracy")
    ax.set_xticks(x, rows["layer"], rotation=60, ha="right", fontsize=8)
    twin = ax.twinx()
    for name, style in (("logme", "o--"), ("h_score", "^--"), ("leep", "v:")):
        if name in rows and rows[name].nunique() > 1:
            values = rows[name].to_numpy(float)
            span = values.max() - values.min()
            twin.plot(x, (values - values.min()) / (span or 1), style, label=name)
    twin.set_ylabel("score, min-max normalised")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower right")
    ax.set_title("Transfer scores and linear-probe accuracy by layer")
    return figure


def _plot_comparison(extraction, finetune):
    names = ["feature extraction"] + (["fine-tuning"] if finetune else [])
    accuracy = [extraction["accuracy"]] + ([finetune["accuracy"]] if finetune else [])
    seconds = [extraction["fit_seconds"]] + ([finetune["fit_seconds"]] if finetune else [])
    figure = _figure(figsize=(8, 3.5))
    left, right = figure.subplots(1, 2)
    colours = ["tab:blue", "tab:orange"][: len(names)]
    left.bar(names, accuracy, color=colours)
    left.set_ylim(0, 1)
    left.set_ylabel("held-out accuracy")
    for i, value in enumerate(accuracy):
        left.text(i, value, f"{value:.3f}", ha="center", va="bottom")
    right.bar(names, seconds, color=colours)
    right.set_ylabel("fit time (s)")
    right.set_ylim(0, max(seconds) * 1.15)  # room for the labels
    for i, value in enumerate(seconds):
        right.text(i, value, f"{value:.0f} s", ha="center", va="bottom")
    figure.suptitle("Feature extraction against light fine-tuning")
    return figure


def _plot_confusion(y_true, y_pred, classes, recommendation):
    from sklearn.metrics import ConfusionMatrixDisplay

    figure = _figure(figsize=(5.5, 5))
    ax = figure.subplots()
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=classes, ax=ax, colorbar=False, xticks_rotation=45
    )
    ax.set_title(f"Recommended: {recommendation['approach']} (test)")
    return figure


def _write(out: Path, results: dict, plots: dict, code: str) -> None:
    for name, data in plots.items():
        (out / f"{name}.png").write_bytes(data)
    (out / "recommended_pipeline.py").write_text(code)
    (out / "report.json").write_text(json.dumps(results, indent=1, default=_json_default))
    blocks = _blocks(results, code)
    (out / "report.md").write_text(_markdown(blocks))
    (out / "report.html").write_text(_html(blocks, plots))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _blocks(r: dict, code: str) -> list[tuple]:
    """The report as (kind, content) blocks, rendered to both Markdown and HTML."""
    data, rec = r["data"], r["recommendation"]
    blocks = [("h1", f"Transfer-learning report: {data['name']}")]
    what = (
        f"{rec['approach']} with {r['backbone']}"
        + (f", layer `{rec['layer']}`" if rec.get("layer") else "")
        + f" (held-out accuracy **{rec['accuracy']:.3f}**). {rec['reason']}"
    )
    blocks += [
        ("p", f"**Recommendation**: {what}"),
        (
            "p",
            f"Data: {data['n_train']} training and {data['n_test']} test images "
            f"({'its own test split' if data['split'] == 'given' else 'a stratified 30% hold-out'}"
            f"), {len(data['classes'])} classes ({', '.join(data['classes'][:12])}"
            f"{' ...' if len(data['classes']) > 12 else ''}). Backbone {r['backbone']} "
            f"({r['weights']}). {r['date']}, {r['machine']}.",
        ),
    ]
    for note in data["notes"] + [n for n in r["budget_notes"] if n not in data["notes"]]:
        blocks.append(("p", f"Note: {note}"))
    blocks.append(("h2", "Layers: transfer scores and linear-probe accuracy"))
    columns = ["layer", "n_features", "logme", "h_score", "leep", "probe_accuracy", "test_accuracy"]
    columns = [c for c in columns if c in r["layers"][0]]
    blocks.append(("table", columns, [[row[c] for c in columns] for row in r["layers"]]))
    blocks.append(
        (
            "p",
            "LogME and H-score rate each layer's features for these labels without training; "
            "LEEP rates the source model as a whole (one value). The probe is a 3-fold "
            "cross-validated logistic regression on the training images (the ground truth "
            "the scores estimate); test accuracy is held out and was not used for choosing.",
        )
    )
    blocks.append(("img", "scores", "Scores and probe accuracy by layer"))
    if r["tsne_layers"]:
        blocks.append(("h2", "t-SNE of a shallow and a deep layer"))
        blocks.append(("img", "tsne", f"t-SNE of {r['tsne_layers'][0]} and {r['tsne_layers'][1]}"))
    blocks.append(("h2", "Feature extraction against light fine-tuning"))
    blocks += trade_off_blocks(r["trade_off"])
    blocks.append(("img", "comparison", "Accuracy and fit time"))
    blocks.append(("h2", "Confusion matrix of the recommended model (test images)"))
    blocks.append(("img", "confusion", "Confusion matrix"))
    blocks.append(("h2", "The recommended pipeline"))
    blocks.append(
        ("p", "Saved as `recommended_pipeline.py`; run it with `python recommended_pipeline.py`.")
    )
    blocks.append(("code", code))
    blocks.append(("h2", "Stage times"))
    times = r["stage_seconds"]
    blocks.append(
        (
            "table",
            ["stage", "seconds"],
            [[k, f"{v:.1f}"] for k, v in times.items()] + [["total", f"{sum(times.values()):.1f}"]],
        )
    )
    blocks.append(
        (
            "p",
            f"Budget {r['budget_seconds']:.0f} s. Activations are cached in `{r['cache_dir']}`; "
            "the stages that only need them (activations, scores, feature extraction, t-SNE) "
            "read them back on a second run. Every number is in `report.json`.",
        )
    )
    return blocks


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _markdown(blocks) -> str:
    parts = []
    for kind, *content in blocks:
        if kind == "h1":
            parts.append(f"# {content[0]}")
        elif kind == "h2":
            parts.append(f"## {content[0]}")
        elif kind == "p":
            parts.append(content[0])
        elif kind == "table":
            columns, rows = content
            lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
            lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
            parts.append("\n".join(lines))
        elif kind == "img":
            parts.append(f"![{content[1]}]({content[0]}.png)")
        elif kind == "code":
            parts.append(f"```python\n{content[0]}```")
    return "\n\n".join(parts) + "\n"


def _inline_markdown(text: str) -> str:
    """**bold** and `code` of a paragraph, escaped for HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _html(blocks, plots: dict) -> str:
    body = []
    for kind, *content in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(content[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_markdown(content[0])}</p>")
        elif kind == "table":
            columns, rows = content
            head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
            cells = "".join(
                "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                for row in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif kind == "img" and content[0] in plots:
            data = base64.b64encode(plots[content[0]]).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(content[1])}" '
                f'src="data:image/png;base64,{data}"></figure>'
            )
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(content[0])}</code></pre>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;"
        "line-height:1.45}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid "
        "#ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}td:first-child{"
        "text-align:left}td:not(:first-child){white-space:nowrap}img{max-width:100%}pre{background:#f6f8fa;padding:1em;overflow:auto}"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>sktransfer report</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
