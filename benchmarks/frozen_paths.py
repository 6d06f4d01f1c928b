"""Every frozen pass at the extractor's speed, and one pass per image across estimators (#14).

MobileNetV2 (ImageNet weights), Caltech-101 JPEG paths, on the CPU, engine="auto" for all.

1. Speed, cold store: ``DeepFeatureExtractor.transform`` against head-only
   ``FineTuneClassifier.predict`` on the same images, each with a fresh, empty
   :class:`~sktransfer.frozen.MemoryCache` (so both compute every image), interleaved over
   ``--repeats`` (medians count). The classifier is fitted beforehand on other images. For
   context, the same classifier's prediction through the whole network in skorch (what head-only
   prediction ran before #14) is timed once.
2. Sharing: a shared store (memory, then a fresh disk folder); the extractor's pass over the
   training images, then the classifier's fit on them: images pushed through the network by
   the fit, counted with ``sktransfer.frozen.FORWARD_COUNTS`` (the target is 0).

    PYTHONPATH=. python benchmarks/frozen_paths.py [--n-images 1000] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    RESULTS,
    add_smoke_flag,
    caltech101_objects,
    header,
    markdown_table,
    smoke_folder,
)
from sktransfer import DeepFeatureExtractor, FineTuneClassifier  # noqa: E402
from sktransfer.frozen import FORWARD_COUNTS, MemoryCache, get_cache  # noqa: E402
from sktransfer.training import NeuralClassifierBase  # noqa: E402


def caltech(n_test: int, n_train: int):
    paths, labels = caltech101_objects()
    order = np.random.default_rng(0).permutation(len(paths))
    test, train = order[:n_test], order[n_test : n_test + n_train]
    return paths[test], paths[train], labels[train]


def images_per_second(run, n: int) -> float:
    start = time.perf_counter()
    run()
    return n / (time.perf_counter() - start)


def speed(test, train, y_train, repeats: int) -> tuple[list[dict], dict]:
    clf = FineTuneClassifier(max_epochs=3, cache=MemoryCache(), random_state=0).fit(train, y_train)
    extractor = DeepFeatureExtractor(cache=MemoryCache()).fit(train[:1])
    assert clf.features_cached_
    rates = {"extractor": [], "finetune": []}
    for _ in range(repeats):  # interleaved, each with a cold store
        extractor.set_params(cache=MemoryCache())
        rates["extractor"].append(images_per_second(lambda: extractor.transform(test), len(test)))
        clf.set_params(cache=MemoryCache())
        rates["finetune"].append(images_per_second(lambda: clf.predict(test), len(test)))

    def whole_network():
        return NeuralClassifierBase._probabilities(clf, clf._check_inputs(test, reset=False))

    eager = images_per_second(whole_network, len(test))
    base = statistics.median(rates["extractor"])
    rows = [
        {
            "path": "DeepFeatureExtractor.transform",
            "images/s (median)": f"{base:.1f}",
            "all repeats": ", ".join(f"{r:.1f}" for r in rates["extractor"]),
            "ratio to the extractor": "1.00x",
        },
        {
            "path": 'FineTuneClassifier(train_layers="head").predict',
            "images/s (median)": f"{statistics.median(rates['finetune']):.1f}",
            "all repeats": ", ".join(f"{r:.1f}" for r in rates["finetune"]),
            "ratio to the extractor": f"{statistics.median(rates['finetune']) / base:.2f}x",
        },
        {
            "path": "same classifier, whole network through skorch (before #14)",
            "images/s (median)": f"{eager:.1f}",
            "all repeats": f"{eager:.1f} (once)",
            "ratio to the extractor": f"{eager / base:.2f}x",
        },
    ]
    return rows, {"ratio": statistics.median(rates["finetune"]) / base}


def sharing(train, y_train) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, store in (("memory", MemoryCache()), ("disk folder", get_cache(folder))):
            DeepFeatureExtractor(cache=store).fit_transform(train)
            before = FORWARD_COUNTS["images"]
            clf = FineTuneClassifier(max_epochs=3, cache=store, random_state=0)
            clf.fit(train, y_train)
            fit_images = FORWARD_COUNTS["images"] - before
            before = FORWARD_COUNTS["images"]
            clf.predict(train)
            rows.append(
                {
                    "shared store": name,
                    "extractor's pass": f"{len(train)} images",
                    "images through the network in FineTuneClassifier.fit": fit_images,
                    "in its predict on the same images": FORWARD_COUNTS["images"] - before,
                }
            )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "frozen_paths.md"))
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.n_images, args.n_train, args.repeats = 6, 8, 1
        args.out = str(smoke_folder("frozen_paths") / "frozen_paths.md")
    test, train, y_train = caltech(args.n_images, args.n_train)
    load = os.getloadavg()
    speed_rows, summary = speed(test, train, y_train, args.repeats)
    share_rows = sharing(train, y_train)
    command = "PYTHONPATH=. python benchmarks/frozen_paths.py " + " ".join(sys.argv[1:])
    text = header("Frozen passes: head-only fine-tuning at the extractor's speed", command)
    text += (
        f"- Load average at the start: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}\n"
        f"- Data: {len(test)} Caltech-101 JPEG paths predicted, {len(train)} others to fit on;"
        ' MobileNetV2 ImageNet weights, engine="auto" everywhere.\n\n'
        "## Speed, cold store (target: fine-tuning >= 0.9x the extractor)\n\n"
        + markdown_table(speed_rows)
        + f"\nFineTuneClassifier head-only predict runs at {summary['ratio']:.2f}x the "
        "extractor's images/s.\n\n## One pass per image across estimators (target: 0)\n\n"
        + markdown_table(share_rows)
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
