"""DeCAF on Caltech-101 with MobileNetV2: pretrained features + a linear classifier.

Protocol (Donahue et al. 2014): 30 random training images per class (BACKGROUND_Google
excluded), up to 50 test images per class from the rest, several random draws, mean +- std
of the mean per-class accuracy. Every image goes through the network once, recording every
block (one pass); each row then takes its layers' columns.

Run: PYTHONPATH=. python benchmarks/decaf_caltech101.py [--draws 3] [--engine ENGINE]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import LinearSVC

from benchmarks._common import RESULTS, Timer, header, markdown_table, require_data
from sktransfer import DeepFeatureExtractor, TernaryDiscretizer, block_layers, load_image_folder

PAPER = "DeCAF (AlexNet) DeCAF6 + SVM 86.91 +- 0.7; DeCAF6 + LogReg 84.30; DeCAF5 + SVM 77.12"


def draw_split(labels: np.ndarray, rng: np.random.Generator, n_train=30, n_test=50):
    train, test = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        train.extend(idx[:n_train])
        test.extend(idx[n_train : n_train + n_test])
    return np.array(train), np.array(test)


def classifiers():
    # Fixed, untuned hyper-parameters (stated in the results); features are standardised.
    return {
        "LogisticRegression": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=0.01, max_iter=300)
        ),
        "LinearSVC": lambda: make_pipeline(
            Normalizer(), StandardScaler(), LinearSVC(C=0.001, max_iter=3000)
        ),
    }


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--engine", default=None, help="DeepFeatureExtractor engine, if any")
    args = parser.parse_args(argv)

    root = require_data("caltech101")
    paths, labels = load_image_folder(root)
    keep = labels != "BACKGROUND_Google"
    paths, labels = paths[keep], labels[keep]
    blocks = block_layers("mobilenet_v2")
    params = {"layers": blocks + ["classifier.0"], "pooling": "avgmax", "verbose": 1}
    if args.engine:
        params["engine"] = args.engine
    extractor = DeepFeatureExtractor("mobilenet_v2", **params)
    with Timer() as extraction:
        features = extractor.fit_transform(paths)
    slices = extractor.layer_slices_

    def avg(layer):
        block = slices[layer]
        return features[:, block.start : block.start + (block.stop - block.start) // 2]

    def whole(layer):
        return features[:, slices[layer]]

    rows_spec = {
        "features.13 (middle block, 96 ch), avg": lambda: avg("features.13"),
        "features.16 (160 ch), avg": lambda: avg("features.16"),
        "features.17 (last inverted-residual block, 320 ch), avg": lambda: avg("features.17"),
        "features.18 (last conv, 1280 ch), avg+max": lambda: whole("features.18"),
        "penultimate (classifier.0 = avg of features.18), 1280": lambda: whole("classifier.0"),
        "Full-Network Embedding (19 blocks, avg, standardised, ternary)": None,
    }
    rng = np.random.default_rng(0)
    splits = [draw_split(labels, rng) for _ in range(args.draws)]
    results = []
    for row, get in rows_spec.items():
        if get is None:
            X = np.concatenate([avg(b) for b in blocks], axis=1)
        else:
            X = get()
        for clf_name, make in classifiers().items():
            scores, seconds = [], 0.0
            for train, test in splits:
                if get is None:  # FNE: standardise with training statistics, then discretise
                    scaler = StandardScaler().fit(X[train])
                    ternary = TernaryDiscretizer()
                    X_train = ternary.fit_transform(scaler.transform(X[train]))
                    X_test = ternary.transform(scaler.transform(X[test]))
                else:
                    X_train, X_test = X[train], X[test]
                with Timer() as fit:
                    model = make().fit(X_train, labels[train])
                seconds += fit.seconds
                scores.append(balanced_accuracy_score(labels[test], model.predict(X_test)))
            mean, std = 100 * np.mean(scores), 100 * np.std(scores)
            print(f"{row} | {clf_name}: {mean:.2f} +- {std:.2f}", flush=True)
            results.append(
                {
                    "features": row,
                    "classifier": clf_name,
                    "dims": X.shape[1],
                    "accuracy (%)": f"{mean:.2f} +- {std:.2f}",
                    "_mean": mean,
                    "fit time per draw (s)": f"{seconds / len(splits):.1f}",
                }
            )
    best = max(results, key=lambda r: r["_mean"])
    engine = args.engine or "default"
    command = "PYTHONPATH=. python benchmarks/decaf_caltech101.py" + (
        f" --draws {args.draws}" + (f" --engine {args.engine}" if args.engine else "")
    )
    text = header("DeCAF on Caltech-101 with MobileNetV2 (ImageNet V1 weights)", command)
    text += (
        f"- Data: {len(paths)} images in {len(np.unique(labels))} classes (BACKGROUND_Google "
        f"excluded); {args.draws} random draws of 30 training / up to 50 test images per class "
        "(seed 0).\n"
        f"- Extraction: one pass over all {len(paths)} JPEGs recording {len(blocks)} blocks + "
        f"the penultimate layer (engine: {engine}): **{extraction.seconds:.0f} s** "
        f"({len(paths) / extraction.seconds:.0f} images/s).\n"
        "- Metric: mean per-class accuracy (balanced accuracy), mean +- std over draws.\n"
        "- Classifiers with fixed, untuned settings: StandardScaler + LogisticRegression(C=0.01); "
        "Normalizer + StandardScaler + LinearSVC(C=0.001).\n"
        f"- Published: {PAPER}.\n\n"
    )
    text += markdown_table(
        results, ["features", "dims", "classifier", "accuracy (%)", "fit time per draw (s)"]
    )
    verdict = "beats" if best["_mean"] > 86.91 else "does NOT beat"
    text += (
        f"\nBest row: {best['features']} + {best['classifier']}, {best['accuracy (%)']} %, which "
        f"{verdict} DeCAF's best (86.91 +- 0.7).\n"
    )
    name = "decaf_caltech101" + (f"_{args.engine}" if args.engine else "")
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
