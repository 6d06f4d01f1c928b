"""DeCAF on Caltech-101 with MobileNetV2: pretrained features + a linear classifier.

Protocol (Donahue et al. 2014): 30 random training images per class (BACKGROUND_Google
excluded), up to 50 test images per class from the rest, several random draws, mean +- std
of the mean per-class accuracy. Every image goes through the network once, recording every
block and every convolutional layer (one pass); each row then takes its layers' columns.
The Full-Network Embedding has two rows: the paper's (every convolutional layer, 52) and one
tap per block (19), both standardised with the authors' rule for features constant in
training (``FullNetworkScaler``) and discretised.

With several ``--engines`` the images are extracted once per engine (timed), the features
compared, and every row is fitted on each engine's features (same splits), so that a faster
engine is shown to give the same accuracies.

The extracted features are saved under ``benchmarks/.cache/decaf`` (with their extraction
times); ``--reuse`` fits the classifiers on them again without extracting.

Run: PYTHONPATH=. python benchmarks/decaf_caltech101.py [--draws 3] [--engines torch onnxruntime]
A run on K random classes (results and saved features under their own names, so the full
run's are never overwritten): ... --classes 3 --draws 1 --engines torch. ``--smoke``: 2
classes of 8 images, one draw, results and features in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import LinearSVC
from torchvision.models.feature_extraction import get_graph_node_names

from benchmarks._common import (
    RESULTS,
    Timer,
    add_smoke_flag,
    header,
    markdown_table,
    require_data,
    smoke_folder,
)
from sktransfer import DeepFeatureExtractor, TernaryDiscretizer, block_layers, load_image_folder
from sktransfer.backbones import load_backbone
from sktransfer.postprocessing import FullNetworkScaler, full_network_layers

SAVED = RESULTS.parent / ".cache" / "decaf"
MAX_ITER = 5000
# lbfgs' default tol=1e-4 stops 40-90 iterations in, far enough from the optimum that
# float32 differences of 1e-6 in the features moved 15 of 8,835 Full-Network Embedding
# predictions; at 1e-6 one moves, and tightening further (1e-8) changes nothing.
TOL = 1e-6
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
            StandardScaler(), LogisticRegression(C=0.01, max_iter=MAX_ITER, tol=TOL)
        ),
        "LinearSVC": lambda: make_pipeline(Normalizer(), LinearSVC(C=1.0)),
    }


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--engines", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--reuse", action="store_true", help="fit on the saved features")
    parser.add_argument(
        "--classes", type=int, default=None, help="only K random classes (a smoke run)"
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    args.saved, args.results, args.per_class = SAVED, RESULTS, None
    args.n_train, args.n_test = 30, 50
    if args.smoke:  # 2 classes of 8 images, 4 to train and 4 to test, one draw
        args.saved = args.results = smoke_folder("decaf_caltech101")
        args.classes, args.draws, args.per_class, args.n_train, args.n_test = 2, 1, 8, 4, 4
    return args


def caltech(args):
    """The images (BACKGROUND_Google excluded), their labels, and the subset's name suffix."""
    paths, labels = load_image_folder(require_data("caltech101"))
    keep = labels != "BACKGROUND_Google"
    if args.classes is not None:  # a smoke run: K classes drawn with their own seed
        chosen = np.random.default_rng(1).choice(np.unique(labels[keep]), args.classes, False)
        keep &= np.isin(labels, chosen)
    if args.per_class is not None:  # the first images of each class
        index = [np.flatnonzero(keep & (labels == c))[: args.per_class] for c in set(labels[keep])]
        keep = np.isin(np.arange(len(labels)), np.concatenate(index))
    subset = "" if args.classes is None else f"-{args.classes}classes"
    return paths[keep], labels[keep], subset


def extractor_for(engine, layers):
    return DeepFeatureExtractor(
        "mobilenet_v2", layers=layers, pooling="avgmax", engine=engine, cache=None, verbose=1
    )


def extract(args, paths, layers, subset):
    """Per engine: the features of every image and the extraction's seconds (saved, or read
    back with ``--reuse``), and a fitted extractor (for ``layer_slices_``)."""
    extracted, seconds_by_engine = {}, {}
    args.saved.mkdir(parents=True, exist_ok=True)
    for engine in args.engines:
        saved = args.saved / f"{engine}{subset}"
        extractor = extractor_for(engine, layers)
        if args.reuse:
            extracted[engine] = np.load(saved.with_suffix(".npy"))
            seconds_by_engine[engine] = json.loads(saved.with_suffix(".json").read_text())["s"]
            extractor.fit(paths[:1])  # for layer_slices_
            if extracted[engine].shape != (len(paths), extractor.n_features_out_):
                sys.exit(
                    f"{saved.with_suffix('.npy')} holds {extracted[engine].shape} features; this "
                    f"run's layers give ({len(paths)}, {extractor.n_features_out_}). It was saved "
                    "with other layers: run once without --reuse."
                )
            continue
        with Timer() as extraction:
            extracted[engine] = extractor.fit_transform(paths)
        seconds_by_engine[engine] = extraction.seconds
        np.save(saved.with_suffix(".npy"), extracted[engine])
        saved.with_suffix(".json").write_text(json.dumps({"s": extraction.seconds}))
        print(f"{engine}: {extraction.seconds:.0f} s", flush=True)
    return extracted, seconds_by_engine, extractor


def loads_around_extraction(args, subset, load_before):
    """The load averages before and after the extraction (the saved ones with ``--reuse``)."""
    load_after = os.getloadavg()[0]
    loads = args.saved / f"load{subset}.json"
    if args.reuse and loads.exists():  # the extraction run's
        return tuple(json.loads(loads.read_text()))
    if not args.reuse:
        loads.write_text(json.dumps([load_before, load_after]))
    return load_before, load_after


def feature_rows(slices, aliases, convolutions, blocks):
    """Row name -> the function that takes the row's columns from all the features."""

    def avg(features, layer):
        block = slices[layer]
        return features[:, block.start : block.start + (block.stop - block.start) // 2]

    def whole(features, layer):
        return features[:, slices[layer]]

    return {
        "features.13 (middle block, 96 ch), avg": lambda f: avg(f, "features.13"),
        "features.16 (160 ch), avg": lambda f: avg(f, "features.16"),
        "features.17 (last inverted-residual block, 320 ch), avg": lambda f: avg(f, "features.17"),
        "features.18 (last conv, 1280 ch), avg+max": lambda f: whole(f, "features.18"),
        "penultimate (classifier.0 = avg of features.18), 1280": lambda f: whole(f, "classifier.0"),
        "Full-Network Embedding, paper (52 conv layers, avg, standardised, ternary)": (
            lambda f: np.concatenate(
                [avg(f, aliases.get(layer, layer)) for layer in convolutions], axis=1
            )
        ),
        "Full-Network Embedding (19 blocks, avg, standardised, ternary)": lambda f: np.concatenate(
            [avg(f, b) for b in blocks], axis=1
        ),
    }


def fit_draws(X, labels, splits, make, fne):
    """Per draw: the score, the test predictions and (for the FNE) the ternary codes; the fit
    seconds and how many fits did not converge."""
    scores, seconds, codes, predicted, unconverged = [], 0.0, [], [], 0
    for train, test in splits:
        if fne:  # standardise with training statistics, then discretise
            scaler = FullNetworkScaler().fit(X[train])
            ternary = TernaryDiscretizer()
            X_train = ternary.fit_transform(scaler.transform(X[train]))
            X_test = ternary.transform(scaler.transform(X[test]))
            codes.append((X_train, X_test))
        else:
            X_train, X_test = X[train], X[test]
        with Timer() as fit, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model = make().fit(X_train, labels[train])
        unconverged += any(w.category is ConvergenceWarning for w in caught)
        seconds += fit.seconds
        predicted.append(model.predict(X_test))
        scores.append(balanced_accuracy_score(labels[test], predicted[-1]))
    return np.array(scores), np.concatenate(predicted), codes, seconds, unconverged


def evaluate(row, get, clf_name, make, extracted, labels, splits, fne_codes, first):
    """One table row: a feature set and a classifier, fitted on every engine's features."""
    fne = row.startswith("Full-Network")
    result = {"features": row, "classifier": clf_name}
    per_draw, unconverged, predictions = {}, 0, {}
    for engine, features in extracted.items():
        X = get(features)
        scores, predictions[engine], codes, seconds, missed = fit_draws(
            X, labels, splits, make, fne
        )
        per_draw[engine], unconverged = scores, unconverged + missed
        if fne:
            fne_codes.setdefault(row, {})[engine] = codes
        mean, std = 100 * np.mean(scores), 100 * np.std(scores)
        print(f"{row} | {clf_name} | {engine}: {mean:.2f} +- {std:.2f}", flush=True)
        result.setdefault("dims", X.shape[1])
        result[f"accuracy (%), {engine}"] = f"{mean:.2f} +- {std:.2f}"
        result.setdefault("_mean", mean)
        result.setdefault("fit time per draw (s)", f"{seconds / len(splits):.1f}")
    largest = max(100 * np.abs(s - per_draw[first]).max() for s in per_draw.values())
    result["largest per-draw difference (points)"] = f"{largest:.2f}"
    differ = max(int(np.sum(p != predictions[first])) for p in predictions.values())
    result["test predictions that differ"] = f"{differ} of {len(predictions[first]):,}"
    result["fits not converged"] = f"{unconverged} of {len(splits) * len(per_draw)}"
    return result


def command_line(args) -> str:
    command = "PYTHONPATH=. python benchmarks/decaf_caltech101.py --draws {} --engines {}".format(
        args.draws, " ".join(args.engines)
    )
    if args.smoke:
        return "PYTHONPATH=. python benchmarks/decaf_caltech101.py --smoke"
    if args.classes is not None:
        command += f" --classes {args.classes}"
    return command + (" --reuse" if args.reuse else "")


def setup_text(args, run) -> str:
    """The Markdown header and setup paragraph (``run`` holds the run's measurements)."""
    first = args.engines[0]
    text = header("DeCAF on Caltech-101 with MobileNetV2 (ImageNet V1 weights)", command_line(args))
    if args.reuse:
        text += (
            "- Classifiers refitted on the features and extraction times saved by the same "
            "command without `--reuse`.\n"
        )
    n, seconds = run["n_images"], run["seconds_by_engine"]
    timing = "; ".join(
        f"{engine}: **{seconds[engine]:.0f} s** ({n / seconds[engine]:.1f} images/s, features "
        f"within {run['feature_diffs'][engine]:.1e} of {first}'s, relative to their max)"
        for engine in args.engines
    )
    return text + (
        f"- Data: {n} images in {run['n_classes']} classes (BACKGROUND_Google "
        f"excluded); {args.draws} random draws of {args.n_train} training / up to "
        f"{args.n_test} test images per class (seed 0).\n"
        f"- Extraction: one pass over all {n} JPEGs per engine, recording {run['n_blocks']} "
        f"blocks, {run['n_convolutions']} convolutional layers ({run['n_aliases']} of them a "
        "block's output) and the penultimate layer (avg and max pooled): "
        f"{timing}. Load average (1 min) {run['loads'][0]:.1f} before and "
        f"{run['loads'][1]:.1f} after the extraction, on 2 cores; the ratio of the times is "
        "what compares.\n"
        "- Metric: mean per-class accuracy (balanced accuracy), mean +- std over draws.\n"
        "- Classifiers with fixed, untuned settings: StandardScaler + LogisticRegression(C=0.01, "
        f"lbfgs, tol={TOL:g}, max_iter={MAX_ITER}); Normalizer + LinearSVC(C=1). 'fits not "
        "converged' counts the fits that raised a ConvergenceWarning. One test image moves a "
        "draw's mean "
        f"per-class accuracy by 1 / (101 x its class's test images): up to "
        f"{100 / (101 * run['smallest_test']):.2f} point here (the smallest class has "
        f"{run['smallest_test']} test image(s) in some draw).\n"
        f"- Published: {PAPER}.\n\n"
    )


def results_text(args, results, fne_codes) -> str:
    """The table, the FNE's ternary codes that differ between engines, and the best row."""
    first = args.engines[0]
    columns = ["features", "dims", "classifier"]
    columns += [f"accuracy (%), {engine}" for engine in args.engines]
    columns += ["largest per-draw difference (points)", "test predictions that differ"]
    columns += ["fits not converged", "fit time per draw (s)"]
    text = markdown_table(results, columns)
    for row, by_engine in fne_codes.items():
        for engine in list(by_engine)[1:]:
            changed, total = _count_flips(by_engine[engine], by_engine[first])
            text += (
                f"\n{row}: {changed} of {total:,} ternary codes (all draws, train and test) "
                f"differ between {first} and {engine}.\n"
            )
    best = max(results, key=lambda r: r["_mean"])
    verdict = "beats" if best["_mean"] > 86.91 else "does NOT beat"
    return text + (
        f"\nBest row: {best['features']} + {best['classifier']}, {best['_mean']:.2f} %, which "
        f"{verdict} DeCAF's best (86.91 +- 0.7).\n"
    )


def main(argv=None):
    args = parse(argv)
    load_before = os.getloadavg()[0]
    paths, labels, subset = caltech(args)
    blocks = block_layers("mobilenet_v2")
    convolutions = full_network_layers("mobilenet_v2")
    # A conv tap whose output is a block's (a block without a residual sum) is read from the
    # block's columns: the extractor keeps one name per graph node.
    aliases = same_output_as(convolutions, blocks)
    layers = list(dict.fromkeys(blocks + [aliases.get(c, c) for c in convolutions]))
    extracted, seconds_by_engine, extractor = extract(
        args, paths, layers + ["classifier.0"], subset
    )
    loads = loads_around_extraction(args, subset, load_before)
    reference = extracted[args.engines[0]]
    rng = np.random.default_rng(0)
    splits = [draw_split(labels, rng, args.n_train, args.n_test) for _ in range(args.draws)]
    results, fne_codes = [], {}  # FNE row -> engine -> the ternary codes of every draw
    rows = feature_rows(extractor.layer_slices_, aliases, convolutions, blocks)
    for row, get in rows.items():
        for clf_name, make in classifiers().items():
            results.append(
                evaluate(
                    row, get, clf_name, make, extracted, labels, splits, fne_codes, args.engines[0]
                )
            )
    run = {
        "n_images": len(paths),
        "n_classes": len(np.unique(labels)),
        "seconds_by_engine": seconds_by_engine,
        "feature_diffs": {
            engine: float(np.abs(f - reference).max() / np.abs(reference).max())
            for engine, f in extracted.items()
        },
        "n_blocks": len(blocks),
        "n_convolutions": len(convolutions),
        "n_aliases": len(aliases),
        "loads": loads,
        "smallest_test": min(
            np.unique(labels[test], return_counts=True)[1].min() for _, test in splits
        ),
    }
    text = setup_text(args, run) + results_text(args, results, fne_codes)
    (args.results / f"decaf_caltech101{subset}.md").write_text(text)
    print(text)
    return 0


def same_output_as(names, others) -> dict[str, str]:
    """``{name: other}`` for the names whose output tensor is one of ``others``' (the same
    last graph node of MobileNetV2)."""
    nodes = get_graph_node_names(load_backbone("mobilenet_v2", None).module.eval())[1]

    def last_node(name):
        return max(i for i, node in enumerate(nodes) if node == name or node.startswith(name + "."))

    by_node = {last_node(other): other for other in others}
    return {n: by_node[last_node(n)] for n in names if last_node(n) in by_node}


def _count_flips(codes, reference) -> tuple[int, int]:
    changed = total = 0
    for (train, test), (ref_train, ref_test) in zip(codes, reference):
        changed += int((train != ref_train).sum() + (test != ref_test).sum())
        total += train.size + test.size
    return changed, total


if __name__ == "__main__":
    sys.exit(main())
