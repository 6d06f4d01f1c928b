"""Where a grid search's time goes: one forward pass, then the classifier fits (#16).

The README's grid example searches layers, poolings and ``C`` over deep features. With the
activation cache the forward pass is paid once; what is left is the classifier fits, on up to
2 x 1,280 = 2,560 avg+max columns. An unscaled ``LinearSVC`` on those columns converges
slowly (its fits took 474 s against a 36 s forward pass on Flowers-17 in #16); scaled
features and ``LogisticRegression`` converge. This measures, in one run on the same features:

* the forward pass (MobileNetV2, ImageNet weights, ``features.18`` with avg+max pooling:
  2,560 columns; ``engine="auto"``, no cache) over the images;
* 5-fold cross-validation over ``C`` in {0.01, 0.1, 1} of each classifier on the
  precomputed features: fit seconds, convergence warnings, mean accuracy.

Data: Caltech-101, the first ``--per-class`` JPEG files of each of the first ``--classes``
classes that have that many (all 101 by default; ``--classes 17 --per-class 80`` is the size
of Flowers-17).

    PYTHONPATH=. python benchmarks/grid_classifiers.py [--per-class 10] [--classes 101] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from benchmarks._common import (
    RESULTS,
    add_smoke_flag,
    caltech101_objects,
    header,
    markdown_table,
    smoke_folder,
)
from sktransfer import DeepFeatureExtractor

CANDIDATES = {
    "LinearSVC() on unscaled features (the README's example before #16)": lambda c: LinearSVC(C=c),
    "StandardScaler + LogisticRegression(max_iter=2000)": lambda c: make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=2000)
    ),
}
GRID = (0.01, 0.1, 1.0)


def caltech(per_class: int, n_classes: int):
    paths, labels = caltech101_objects()
    classes, counts = np.unique(labels, return_counts=True)
    classes = classes[counts >= per_class][:n_classes]
    picks = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in classes])
    return paths[picks], labels[picks]


def search(make, X, y) -> dict:
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        scores = {c: cross_val_score(make(c), X, y, cv=folds).mean() for c in GRID}
    seconds = time.perf_counter() - start
    unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    best = max(scores, key=scores.get)
    return {
        "fit seconds (15 fits)": f"{seconds:.1f}",
        "convergence warnings": f"{unconverged} of 15",
        "best C": best,
        "5-fold accuracy at best C": f"{scores[best]:.3f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--out", default=str(RESULTS / "grid_classifiers.md"))
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:  # 5 images of 3 classes: one per fold
        args.per_class, args.classes = 5, 3
        args.out = str(smoke_folder("grid_classifiers") / "grid_classifiers.md")
    load_before = os.getloadavg()[0]
    paths, labels = caltech(args.per_class, args.classes)
    extractor = DeepFeatureExtractor(
        "mobilenet_v2", layers="features.18", pooling="avgmax", cache=None
    )
    extractor.fit(paths[:2])  # loads and exports the network: not part of the pass
    start = time.perf_counter()
    features = extractor.transform(paths)
    forward = time.perf_counter() - start
    rows = [
        {
            "step": f"forward pass, {len(paths)} images -> {features.shape[1]} columns",
            "fit seconds (15 fits)": f"{forward:.1f} (once)",
        }
    ]
    for name, make in CANDIDATES.items():
        rows.append({"step": name, **search(make, features, labels)})
    command = "PYTHONPATH=. python benchmarks/grid_classifiers.py " + " ".join(sys.argv[1:])
    load = os.getloadavg()
    text = (
        header("Grid search over deep features: where the time goes", command.strip())
        + f"- Load average (1 min): {load_before:.2f} before, {load[0]:.2f} after; the machine "
        "is shared with other jobs, so absolute times are noisy: compare the rows, measured "
        "in the same run on the same features.\n"
        f"- Data: Caltech-101, the first {args.per_class} images of each of "
        f"{len(np.unique(labels))} classes ({len(paths)} images); MobileNetV2 `features.18`, "
        "avg+max pooling.\n\n" + markdown_table(rows, list(rows[1]))
    )
    with open(args.out, "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
