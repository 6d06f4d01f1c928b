"""What a grid search over layers, poolings and classifiers costs, against its floor (#8).

Caltech-101 (20 images per class, 101 classes: 2,020 JPEG files), MobileNetV2 (ImageNet
weights), ``GridSearchCV`` over 4 layers x 2 poolings x 3 ``RidgeClassifier`` alphas x 5 folds
(120 fits plus the refit). In one run:

* floor: one ``transform`` recording all four layers (average and max pooled, no cache), then
  the same grid over the classifier alone on those precomputed columns;
* the search with the default in-memory activation cache (``n_jobs=1``);
* the search without a cache, estimated from a measured fraction of its fits (each fit reruns
  the network over all images, so its cost is nearly proportional to the number of fits);
* the search with ``n_jobs=2`` and a disk cache in a fresh folder.

Exporting the ONNX graphs is paid once per machine (the graphs are cached on disk): every
configuration is warmed up on 8 images outside the subset before timing, so no row pays it.

    PYTHONPATH=. python benchmarks/grid_search_cost.py [--per-class 20] [--uncached-fits 2]

``--smoke``: 3 classes of 5 images, one uncached fit, the disk-cache search with n_jobs=1 (two
processes start too slowly), results in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

from benchmarks._common import ROOT, add_smoke_flag, caltech101_objects, smoke_folder
from sktransfer import DeepFeatureExtractor
from sktransfer.frozen import FORWARD_COUNTS, clear_cache

LAYERS = ["features.14", "features.16", "features.18", None]
POOLINGS = ["avg", "avgmax"]
ALPHAS = [1.0, 10.0, 100.0]
FOLDS = 5


def caltech_subset(per_class, n_classes=None):
    """The first ``per_class`` images of each class (of the first ``n_classes``; all by
    default), their labels, and 8 other images for the warm-up."""
    paths, labels = caltech101_objects()
    chosen, spare = [], []
    for label in np.unique(labels)[:n_classes]:
        index = np.flatnonzero(labels == label)
        chosen += list(index[:per_class])
        spare += list(index[per_class:])
    return paths[chosen], labels[chosen], paths[spare[:: max(1, len(spare) // 8)][:8]]


def extractor(**params):
    return DeepFeatureExtractor("mobilenet_v2", record_layers=LAYERS, **params)


def pipeline(**params):
    return Pipeline([("features", extractor(**params)), ("clf", RidgeClassifier())])


GRID = {"features__layers": LAYERS, "features__pooling": POOLINGS, "clf__alpha": ALPHAS}
CV = StratifiedKFold(FOLDS)


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def floor(paths, y):
    """One pass recording every layer, then the classifier grid on precomputed features."""
    names = ["features.14", "features.16", "features.18", "classifier.0"]
    one_pass = DeepFeatureExtractor("mobilenet_v2", layers=names, pooling="avgmax", cache=None)
    t_pass, features = timed(lambda: one_pass.fit_transform(paths))
    t_clf = 0.0
    for layer in names:
        block = one_pass.layer_slices_[layer]
        is_map = len(one_pass.layer_shapes_[layer]) > 1
        for pooling in POOLINGS:
            width = block.stop - block.start
            stop = block.start + width // 2 if (pooling == "avg" and is_map) else block.stop
            columns = features[:, block.start : stop]
            search = GridSearchCV(RidgeClassifier(), {"alpha": ALPHAS}, cv=CV)
            t_clf += timed(lambda s=search, c=columns: s.fit(c, y))[0]
    return t_pass, t_clf


def uncached_estimate(paths, y, n_fits):
    """Time ``n_fits`` (candidate, fold) fits without a cache; scale to the whole search."""
    candidates = [
        {"features__layers": layers, "features__pooling": pooling, "clf__alpha": alpha}
        for layers in LAYERS
        for pooling in POOLINGS
        for alpha in ALPHAS
    ]
    folds = list(CV.split(paths, y))
    rng = np.random.default_rng(0)
    times = []
    for k in range(n_fits):
        params = candidates[rng.integers(len(candidates))]
        train, test = folds[k % FOLDS]
        model = clone(pipeline(cache=None)).set_params(**params)
        start = time.perf_counter()
        model.fit(paths[train], y[train]).score(paths[test], y[test])
        times.append(time.perf_counter() - start)
    total_fits = len(candidates) * FOLDS + 1  # the refit on all data counted as one more fit
    return float(np.mean(times)) * total_fits, times


def parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--uncached-fits", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/grid_search_cost.md"))
    add_smoke_flag(parser)
    args = parser.parse_args()
    args.classes, args.n_jobs = None, 2
    if args.smoke:  # 3 classes of 5 images (one per fold), one uncached fit
        args.per_class, args.classes, args.uncached_fits, args.n_jobs = 5, 3, 1, 1
        args.out = str(smoke_folder("grid_search_cost") / "grid_search_cost.md")
    return args


def warm_up(warm, disk):
    """ONNX exports (cached per machine) and first-use checks, on images outside the subset."""
    DeepFeatureExtractor(
        "mobilenet_v2",
        layers=["features.14", "features.16", "features.18", "classifier.0"],
        pooling="avgmax",
        cache=None,
    ).fit_transform(warm)
    extractor(cache=disk).fit_transform(warm)
    extractor().fit_transform(warm)
    extractor(cache=None).fit_transform(warm)
    clear_cache("memory")


def measure(paths, y, uncached_fits, disk, n_jobs) -> dict:
    """Every row's wall time, in one run, and what the searches found."""
    t_pass, t_clf = floor(paths, y)
    print(f"floor: pass {t_pass:.1f} s + classifiers {t_clf:.1f} s = {t_pass + t_clf:.1f} s")
    before = FORWARD_COUNTS["images"]
    search = GridSearchCV(pipeline(), GRID, cv=CV)
    t_cached, _ = timed(lambda: search.fit(paths, y))
    passes = (FORWARD_COUNTS["images"] - before) / len(paths)
    print(f"cached search: {t_cached:.1f} s, {passes:.2f} passes over the images")
    t_uncached, fit_times = uncached_estimate(paths, y, uncached_fits)
    print(f"uncached search (estimated): {t_uncached:.0f} s from fits {fit_times}")
    clear_cache("memory")
    parallel = GridSearchCV(pipeline(cache=disk), GRID, cv=CV, n_jobs=n_jobs)
    t_parallel, _ = timed(lambda: parallel.fit(paths, y))
    print(f"n_jobs={n_jobs} + disk cache: {t_parallel:.1f} s")
    same = np.allclose(
        parallel.cv_results_["mean_test_score"], search.cv_results_["mean_test_score"]
    )
    return dict(
        t_pass=t_pass,
        t_clf=t_clf,
        t_cached=t_cached,
        t_uncached=t_uncached,
        t_parallel=t_parallel,
        fit_times=fit_times,
        passes=passes,
        same=same,
        best=search.best_params_,
        best_score=search.best_score_,
    )


def main():
    args = parse()
    paths, y, warm = caltech_subset(args.per_class, args.classes)
    print(f"{len(paths)} images, {len(np.unique(y))} classes")
    with tempfile.TemporaryDirectory(prefix="sktransfer-grid-") as disk:
        warm_up(warm, disk)
        m = measure(paths, y, args.uncached_fits, disk, args.n_jobs)
    text = markdown(args, len(paths), m)
    Path(args.out).write_text(text)
    print(text)


def markdown(args, n_images, m) -> str:
    t_floor = m["t_pass"] + m["t_clf"]
    fit_times = m["fit_times"]
    rows = [
        ("floor: one pass + classifier grid on precomputed features", t_floor),
        ("GridSearchCV, in-memory activation cache (default), n_jobs=1", m["t_cached"]),
        (f"GridSearchCV, n_jobs={args.n_jobs}, disk cache (fresh folder)", m["t_parallel"]),
        (f"GridSearchCV without cache (estimated from {len(fit_times)} fits)", m["t_uncached"]),
    ]
    table = "\n".join(f"| {name} | {t:.1f} | {t / t_floor:.2f} |" for name, t in rows)
    n_fits = len(LAYERS) * len(POOLINGS) * len(ALPHAS) * FOLDS
    command = f"--per-class {args.per_class} --uncached-fits {args.uncached_fits}"
    return f"""# Grid search cost: layers x poolings x classifiers at the cost of one pass (#8)

Command: `PYTHONPATH=. python benchmarks/grid_search_cost.py {"--smoke" if args.smoke else command}`

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with
other jobs: absolute times are noisy; ratios are measured in the same run), no GPU.
Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Engine: `engine="auto"` (ONNX Runtime).

Data: Caltech-101, the first {args.per_class} JPEG files of each of the \
{args.classes or 101} classes
({n_images} images, read from disk in every fit). Search: MobileNetV2 (ImageNet weights),
layers {LAYERS} x pooling {POOLINGS} x RidgeClassifier alpha {ALPHAS} x {FOLDS}-fold
StratifiedKFold = {n_fits} fits + refit, with
`record_layers` set to the layers of the grid. ONNX exports are warmed up on 8 other images
before timing (paid once per machine).

Floor = one `fit_transform` recording the four layers ({m["t_pass"]:.1f} s) + the same
classifier grid on those precomputed columns ({m["t_clf"]:.1f} s).

| run | wall time (s) | / floor |
|---|---:|---:|
{table}

- Forward passes during the cached search: {m["passes"]:.2f} x the images (probes included).
- The uncached search is an estimate: {len(fit_times)} of its fits measured
  ({", ".join(f"{t:.1f} s" for t in fit_times)}), times {n_fits + 1} fits; each fit reruns
  the network on all images.
- n_jobs={args.n_jobs} and n_jobs=1 give the same cv scores: {m["same"]}. Best: {m["best"]},
  accuracy {m["best_score"]:.3f}.
"""


if __name__ == "__main__":
    main()
