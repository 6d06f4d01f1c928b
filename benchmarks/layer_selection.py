"""Layer selection without training: transferability scores against linear-probe accuracy.

For nine layers each of MobileNetV2 and EfficientNet-Lite0 (ImageNet weights), on a
Caltech-101 draw and hymenoptera (ants vs bees): every layer score of
``sktransfer.transferability.LAYER_SCORES`` (LogME, H-score plain and shrunk, N-LEEP,
TransRate, GBC, SFDA) and the source scores LEEP and NCE, computed on the training features
only, against the held-out accuracy of a linear probe trained on each layer (the ground
truth). Reports Kendall's tau between each score and the probe accuracy over the layers, and
the time each score takes against the time the probes take, measured in the same run.

All layers of a backbone (plus its ImageNet logits, for LEEP and NCE) come from ONE forward
pass (``sktransfer.analysis.extract_layer_features``). Features are cached in
benchmarks/.cache (pass --no-cache to extract again); the scoring and probing timings are
always fresh.

Usage::

    PYTHONPATH=. python benchmarks/layer_selection.py [--classes 60] [--train-per-class 30]
        [--test-per-class 20] [--no-cache]
    PYTHONPATH=. python benchmarks/layer_selection.py --smoke   # seconds, a temporary folder

Data: $SKTRANSFER_DATA (default ../shared/data from the repository root).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from benchmarks._common import add_smoke_flag, require_data, smoke_folder
from sktransfer import load_image_folder
from sktransfer.analysis import (
    cka_matrix,
    extract_layer_features,
    plot_cka_heatmap,
    plot_layer_scores,
    plot_tsne_pair,
)
from sktransfer.transferability import LAYER_SCORES, SOURCE_SCORES, linear_probe_score

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
SEED = 0
# Nine taps per backbone, from early blocks to the last feature map (block_layers names).
LAYERS = {
    "mobilenet_v2": [
        "features.2",
        "features.4",
        "features.7",
        "features.10",
        "features.13",
        "features.14",
        "features.16",
        "features.17",
        "features.18",
    ],
    "efficientnet_lite0": [
        "_blocks.1",
        "_blocks.3",
        "_blocks.5",
        "_blocks.7",
        "_blocks.9",
        "_blocks.11",
        "_blocks.13",
        "_blocks.15",
        "_swish_1",
    ],
}
# Every layer score but the cross-validated probe, which is timed as the ground truth below.
LAYER_SCORE_NAMES = [name for name in LAYER_SCORES if name != "linear_probe"]
SOURCE_SCORE_NAMES = list(SOURCE_SCORES)
SCORES = [*LAYER_SCORE_NAMES, *SOURCE_SCORE_NAMES]
PROBE_C = 0.1  # one fixed L2 strength for every layer, on standardised features
# Timing: best of up to `repeats` runs, stopping once a call has used this many seconds.
TIME_BUDGET_S = 2.0


def caltech_split(root: Path, n_classes: int, train_per_class: int, test_per_class: int):
    """``n_classes`` random classes; per class ``train_per_class`` random training images and
    up to ``test_per_class`` test images from the rest (seed ``SEED``)."""
    paths, labels = load_image_folder(root / "caltech101", extensions={".jpg"})
    keep = labels != "BACKGROUND_Google"
    paths, labels = paths[keep], labels[keep]
    rng = np.random.default_rng(SEED)
    classes = np.sort(rng.choice(np.unique(labels), n_classes, replace=False))
    train, test = [], []
    for cls in classes:
        index = rng.permutation(np.flatnonzero(labels == cls))
        train.extend(index[:train_per_class])
        test.extend(index[train_per_class : train_per_class + test_per_class])
    train, test = np.sort(train), np.sort(test)
    return paths[train], labels[train], paths[test], labels[test]


def hymenoptera_split(root: Path):
    train_paths, train_labels = load_image_folder(root / "hymenoptera" / "train")
    test_paths, test_labels = load_image_folder(root / "hymenoptera" / "val")
    return train_paths, train_labels, test_paths, test_labels


def cached_features(paths, backbone: str, use_cache: bool, cache_dir: Path = CACHE):
    """Per-layer features and ImageNet probabilities of ``paths``, one forward pass."""
    key = hashlib.sha256(json.dumps([backbone, LAYERS[backbone], list(paths)]).encode())
    file = cache_dir / f"{backbone}-{key.hexdigest()[:16]}.npz"
    if use_cache and file.exists():
        stored = np.load(file)
        features = {layer: stored[layer] for layer in LAYERS[backbone]}
        return features, stored["__probabilities__"], float(stored["__seconds__"]), True
    start = time.perf_counter()
    features, probabilities = extract_layer_features(
        paths, backbone, LAYERS[backbone], source_probabilities=True, verbose=1
    )
    seconds = time.perf_counter() - start
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(file, __probabilities__=probabilities, __seconds__=seconds, **features)
    return features, probabilities, seconds, False


def timed(function, *args, repeats=1, **kwargs):
    """The value of ``function(*args)`` and its best time over up to ``repeats`` runs
    (fewer once the runs have taken ``TIME_BUDGET_S``: the slow scores run once or twice)."""
    best, spent = np.inf, 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        value = function(*args, **kwargs)
        seconds = time.perf_counter() - start
        best, spent = min(best, seconds), spent + seconds
        if spent >= TIME_BUDGET_S:
            break
    return value, best


def probe(train, y_train, test, y_test):
    """Held-out accuracy of a standardised logistic regression trained on one layer."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=2000))
    return model.fit(train, y_train).score(test, y_test)


def evaluate(name, split, use_cache, repeats, cache_dir=CACHE):
    train_paths, y_train, test_paths, y_test = split
    print(
        f"\n== {name}: {len(train_paths)} train, {len(test_paths)} test, "
        f"{len(np.unique(y_train))} classes",
        flush=True,
    )
    rows, extraction, test_features = [], {}, {}
    n = len(train_paths)
    for backbone in LAYERS:
        paths = np.concatenate([train_paths, test_paths])
        features, probabilities, seconds, cached = cached_features(
            paths, backbone, use_cache, cache_dir
        )
        extraction[backbone] = (seconds, len(paths), cached)
        test_features[backbone] = {layer: f[n:] for layer, f in features.items()}
        # Scores and probes alike run with BLAS on one thread: on the 2 shared cores,
        # multithreaded BLAS made the same call vary up to 10x between repeats.
        with threadpool_limits(1):
            by_source = {  # one value per backbone
                name: timed(SOURCE_SCORES[name], probabilities[:n], y_train, repeats=repeats)
                for name in SOURCE_SCORE_NAMES
            }
            for depth, layer in enumerate(LAYERS[backbone]):
                train, test = features[layer][:n], features[layer][n:]
                row = {"backbone": backbone, "layer": layer, "depth": depth}
                row["n_features"] = train.shape[1]
                for score in LAYER_SCORE_NAMES:
                    row[score], row[f"{score}_seconds"] = timed(
                        LAYER_SCORES[score], train, y_train, repeats=repeats
                    )
                for name, (value, seconds) in by_source.items():
                    row[name], row[f"{name}_seconds"] = value, seconds
                row["probe_accuracy"], row["probe_seconds"] = timed(
                    probe, train, y_train, test, y_test, repeats=repeats
                )
                # What a user without a test set runs to choose a layer: the same probe,
                # 3-fold cross-validated on the training images (its time only).
                row["cv_probe_accuracy"], row["cv_probe_seconds"] = timed(
                    linear_probe_score, train, y_train, cv=3, C=PROBE_C, repeats=repeats
                )
                rows.append(row)
                print(
                    f"{backbone:>20} {layer:>12}: probe {row['probe_accuracy']:.4f} "
                    f"({row['probe_seconds']:.2f}s); "
                    + ", ".join(
                        f"{s} {row[s]:.4g} ({row[s + '_seconds']:.3f}s)" for s in LAYER_SCORE_NAMES
                    ),
                    flush=True,
                )
    return pd.DataFrame(rows), extraction, test_features


def taus(table: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau of each layer score against the probe accuracy, per backbone and pooled."""
    rows = []
    groups = [(b, table[table["backbone"] == b]) for b in LAYERS] + [("both (pooled)", table)]
    for group, part in groups:
        for score in LAYER_SCORE_NAMES:  # a source score is one value per backbone
            tau = kendalltau(part[score], part["probe_accuracy"]).statistic
            cv_tau = kendalltau(part[score], part["cv_probe_accuracy"]).statistic
            time_ratio = part[f"{score}_seconds"].sum() / part["probe_seconds"].sum()
            cv_ratio = part[f"{score}_seconds"].sum() / part["cv_probe_seconds"].sum()
            rows.append(
                {
                    "layers of": group,
                    "score": score,
                    "kendall_tau": tau,
                    "kendall_tau (cv probe)": cv_tau,
                    "score_time / probe_time": time_ratio,
                    "score_time / cv_probe_time": cv_ratio,
                }
            )
    return pd.DataFrame(rows)


def plots(name, table, test_features, y_test, out=RESULTS):
    stem = f"layer_selection_{name}"
    plot_layer_scores(table, scores=LAYER_SCORE_NAMES, path=out / f"{stem}_scores.png")
    # CKA between every tapped layer of the two backbones on (at most) 500 test images.
    rng = np.random.default_rng(SEED)
    n = len(y_test)
    keep = np.sort(rng.choice(n, min(n, 500), replace=False))
    mobilenet = {k: v[keep] for k, v in test_features["mobilenet_v2"].items()}
    lite0 = {k: v[keep] for k, v in test_features["efficientnet_lite0"].items()}
    plot_cka_heatmap(
        cka_matrix(mobilenet, lite0),
        title=f"Linear CKA on {name} test images\nMobileNetV2 (rows) vs EfficientNet-Lite0",
        path=out / f"{stem}_cka.png",
    )
    # The DeCAF figure: an early and the last layer of MobileNetV2 on the test images (for
    # Caltech-101 the first 10 classes, so that colours stay readable).
    classes = np.unique(y_test)[:10]
    chosen = np.isin(y_test, classes)
    early, last = LAYERS["mobilenet_v2"][1], LAYERS["mobilenet_v2"][-1]
    plot_tsne_pair(
        test_features["mobilenet_v2"][early][chosen],
        test_features["mobilenet_v2"][last][chosen],
        y_test[chosen],
        titles=(f"MobileNetV2 {early}", f"MobileNetV2 {last}"),
        max_samples=1000,
        random_state=SEED,
        path=out / f"{stem}_tsne.png",
    )
    return [f"{stem}_scores.png", f"{stem}_cka.png", f"{stem}_tsne.png"]


def every_score(sections) -> pd.DataFrame:
    """One row per score: its Kendall tau per backbone and pooled, the probe accuracy lost by
    taking its top layer, and its time, for each dataset."""
    rows = []
    for score in SCORES:
        row = {"score": score}
        for name, (table, _, tau_table, _, _) in sections.items():
            seconds = table[f"{score}_seconds"]
            if score in SOURCE_SCORE_NAMES:
                row[f"{name}: tau (mnv2 / lite0 / pooled)"] = "(one value per backbone)"
                row[f"{name}: points lost by its pick"] = ""
                seconds = seconds.groupby(table["backbone"]).first()  # computed once each
            else:
                taus = tau_table[tau_table["score"] == score].set_index("layers of")
                row[f"{name}: tau (mnv2 / lite0 / pooled)"] = " / ".join(
                    f"{taus.loc[group, 'kendall_tau']:.2f}" for group in [*LAYERS, "both (pooled)"]
                )
                pick = table.loc[table[score].idxmax(), "probe_accuracy"]
                row[f"{name}: points lost by its pick"] = (
                    f"{100 * (table['probe_accuracy'].max() - pick):.1f}"
                )
            row[f"{name}: ms per call"] = f"{1000 * seconds.mean():.1f}"
            row[f"{name}: time / probe time"] = (
                f"{seconds.sum() / table['probe_seconds'].sum():.3f}"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def summary(sections) -> pd.DataFrame:
    """Per dataset and layer group: the best layer score, its tau and its time ratio."""
    rows = []
    for name, (_, _, tau_table, _, _) in sections.items():
        for group, part in tau_table.groupby("layers of", sort=False):
            # The highest tau; among equal taus, the cheapest score.
            ranked = part.assign(tau=part["kendall_tau"].round(6))
            best = ranked.sort_values(
                ["tau", "score_time / probe_time"], ascending=[False, True]
            ).iloc[0]
            rows.append(
                {
                    "dataset": name,
                    "layers of": group,
                    "best score": best["score"],
                    "kendall_tau": best["kendall_tau"],
                    "score_time / probe_time": best["score_time / probe_time"],
                    "kendall_tau (cv probe)": best["kendall_tau (cv probe)"],
                    "score_time / cv_probe_time": best["score_time / cv_probe_time"],
                }
            )
    return pd.DataFrame(rows)


def source_table(table: pd.DataFrame) -> pd.DataFrame:
    """The source scores per backbone against its best and its last layer's probe accuracy."""
    rows = []
    for backbone, part in table.groupby("backbone", sort=False):
        row = {"backbone": backbone}
        for name in SOURCE_SCORE_NAMES:
            row[name] = part[name].iloc[0]
            row[f"{name}_seconds"] = part[f"{name}_seconds"].iloc[0]
        row["best layer probe accuracy"] = part["probe_accuracy"].max()
        row["last layer probe accuracy"] = part.sort_values("depth")["probe_accuracy"].iloc[-1]
        rows.append(row)
    return pd.DataFrame(rows)


def command(args) -> str:
    return (
        "SKTRANSFER_OFFLINE=1 PYTHONPATH=. python benchmarks/layer_selection.py "
        f"--classes {args.classes} --train-per-class {args.train_per_class} "
        f"--test-per-class {args.test_per_class}" + (" --no-cache" if args.no_cache else "")
    )


def markdown(sections, args, started, wall_seconds) -> str:
    lines = [
        "# Layer selection: transferability scores vs linear-probe accuracy",
        "",
        f"Command: `{command(args)}`  ",
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs "
        f"(load average {os.getloadavg()[0]:.1f} at the end), no GPU; Python "
        f"{platform.python_version()}.  ",
        f"Date: {started:%Y-%m-%d %H:%M} UTC. Seed {SEED}. The whole run took "
        f"{wall_seconds / 60:.1f} min.",
        "",
        "Scores are computed on the training features only (no training). The probe is",
        f"StandardScaler + LogisticRegression(C={PROBE_C}, lbfgs) on each layer's globally",
        "average-pooled training features, fitted once and scored on the held-out test",
        "features (`probe_*`, the ground truth); `cv_probe_*` is",
        "`sktransfer.transferability.linear_probe_score`, the same probe 3-fold",
        "cross-validated on the training features (what choosing a layer costs without a",
        "test set). Kendall's tau (tau-b) is over the 9 layers of a backbone, and over all 18",
        "layers of both backbones pooled (does the score also compare layers across",
        "backbones?). Times: best of up to 7 (hymenoptera) or 3 (Caltech) runs, fewer once a",
        f"call has used {TIME_BUDGET_S:g} s, BLAS on one thread for scores and probes alike;",
        "'time / probe time' is a score's total over the layers against the probes' total in",
        "the same run. LEEP and NCE use the ImageNet probabilities (softmax of",
        "`classifier.1` / `_fc`, tapped in the same forward pass): one value per backbone,",
        "they rank backbones, not layers. Default settings for every score (N-LEEP: PCA to",
        "80 % of the variance, 5 mixture components per class, seed 0; GBC: 64 PCA",
        "components, spherical; TransRate: eps = 1e-4).",
        "",
        "## Every score",
        "",
        every_score(sections).to_markdown(index=False),
        "",
        "## Best score per group",
        "",
        summary(sections).to_markdown(index=False, floatfmt=".3f"),
        "",
    ]
    for name, (table, extraction, tau_table, pngs, note) in sections.items():
        lines += [f"## {name}", "", note, ""]
        for backbone, (seconds, n, cached) in extraction.items():
            when = " (measured when the feature cache was filled)" if cached else ""
            lines.append(
                f"- {backbone}: {n} images, all {len(LAYERS[backbone])} layers and the logits "
                f"in one forward pass: {seconds:.0f} s, {n / seconds:.1f} images/s{when}."
            )
        lines += ["", "Kendall's tau against probe accuracy, and time against probing:", ""]
        lines += [tau_table.to_markdown(index=False, floatfmt=".3f"), ""]
        lines += ["Source scores (one value per backbone):", ""]
        lines += [source_table(table).to_markdown(index=False, floatfmt=".4g"), ""]
        lines += ["Per layer (times in `<score>_seconds` columns of the CSV):", ""]
        shown = table[
            ["backbone", "layer", "n_features", "probe_accuracy", "cv_probe_accuracy"]
            + LAYER_SCORE_NAMES
        ]
        lines += [shown.to_markdown(index=False, floatfmt=".4g"), ""]
        lines += [f"![{png}]({png})" for png in pngs] + [""]
    return "\n".join(lines)


def parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=60, help="Caltech-101 classes drawn")
    parser.add_argument(
        "--train-per-class", type=int, default=30, help="Caltech-101 training images per class"
    )
    parser.add_argument(
        "--test-per-class",
        type=int,
        default=20,
        help="Caltech-101 test images per class (from the rest)",
    )
    parser.add_argument("--no-cache", action="store_true", help="extract the features again")
    add_smoke_flag(parser)
    args = parser.parse_args()
    args.results, args.cache, args.limit = RESULTS, CACHE, None
    if args.smoke:  # 3 Caltech classes of 4 + 3 images, 10 + 6 hymenoptera images, one timing
        args.results = args.cache = smoke_folder("layer_selection")
        args.classes, args.train_per_class, args.test_per_class, args.limit = 3, 4, 3, (10, 6)
    return args


def datasets(args):
    """Name -> (train paths, labels, test paths, labels), the setup's note, timing repeats."""
    hymenoptera = hymenoptera_split(require_data("hymenoptera").parent)
    if args.limit is not None:  # evenly spread, so that both classes are in
        picks = [
            np.linspace(0, len(hymenoptera[i]) - 1, n).round().astype(int)
            for i, n in ((0, args.limit[0]), (2, args.limit[1]))
        ]
        hymenoptera = (
            hymenoptera[0][picks[0]],
            hymenoptera[1][picks[0]],
            hymenoptera[2][picks[1]],
            hymenoptera[3][picks[1]],
        )
    caltech = caltech_split(
        require_data("caltech101").parent, args.classes, args.train_per_class, args.test_per_class
    )
    repeats = (1, 1) if args.smoke else (7, 3)
    return {
        "hymenoptera": (
            hymenoptera,
            "Train 244 images (ants, bees), test on the 153 validation images.",
            repeats[0],
        ),
        "caltech101": (
            caltech,
            f"{args.classes} of the 101 object classes drawn at random (BACKGROUND_Google "
            f"left out), {args.train_per_class} random training images per class, up to "
            f"{args.test_per_class} random test images per class from the rest (seed {SEED}); "
            "sized so that the whole benchmark runs in about 10 minutes on this machine.",
            repeats[1],
        ),
    }


def main():
    args = parse()
    started = datetime.now(timezone.utc)
    start = time.perf_counter()
    args.results.mkdir(parents=True, exist_ok=True)
    sections = {}
    for name, (split, note, repeats) in datasets(args).items():
        table, extraction, test_features = evaluate(
            name, split, not args.no_cache, repeats, args.cache
        )
        tau_table = taus(table)
        print(tau_table.to_string(index=False), flush=True)
        pngs = plots(name, table, test_features, split[3], args.results)
        table.to_csv(args.results / f"layer_selection_{name}.csv", index=False)
        sections[name] = (table, extraction, tau_table, pngs, note)
    text = markdown(sections, args, started, time.perf_counter() - start)
    (args.results / "layer_selection.md").write_text(text)
    print(every_score(sections).to_string(index=False))
    print(f"Wrote {args.results / 'layer_selection.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
