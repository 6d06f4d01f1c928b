"""Fine-tuning versus feature extraction: the seeds' trade-off table, on real data.

Rows: DeCAF-style feature extraction + logistic regression (and, on its own row, the one
forward pass over the training images that it caches and every later extraction fit
reuses), then FineTuneClassifier with the head only, the top 3 blocks, the normalisation
layers only, LoRA r in {1, 4, 8}, and full fine-tuning, all from ImageNet MobileNetV2.
Columns, as in the lecture's table: V_ACC (5-fold cross-validated for extraction, a 10 %
stratified validation split for the fine-tuning rows), T_ACC (held out; and AUC for
MedMNIST), P_AVG, energy (kWh), E_CO2, T (wall time of fit, and its ratio to feature
extraction's, measured in the same run), n_EXP (fits the row took: the cross-validation's
included), trainable parameters (count and % of the network) and epochs. Footprint figures
come from :func:`sktransfer.footprint.footprint` (codecarbon's offline tracker, process
mode); each says whether it was measured or estimated, and "not measured" without codecarbon.

Run one dataset at a time (results accumulate in benchmarks/results/), e.g.::

    PYTHONPATH=. python benchmarks/finetune_vs_extract.py hymenoptera
    PYTHONPATH=. python benchmarks/finetune_vs_extract.py breastmnist
    PYTHONPATH=. python benchmarks/finetune_vs_extract.py pneumoniamnist --train-size 1000

``--country FRA`` or ``--carbon-intensity 56`` (g CO2e/kWh) set the grid for CO2 (default:
the world average of codecarbon's table).

Data is read from ``$SKTRANSFER_DATA`` (default ``../shared/data``); the script exits with a
message when it is absent. ``--smoke``: BreastMNIST, 16 training and 8 test images at 64 px,
one epoch per row, the JSON in a temporary folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks._common import add_smoke_flag, require_data, smoke_folder
from sktransfer import FineTuneClassifier, load_image_folder
from sktransfer.backbones import load_backbone, penultimate_layer
from sktransfer.finetune import _resized
from sktransfer.footprint import FootprintRecord, footprint
from sktransfer.frozen import FrozenNetwork, pooled_features
from sktransfer.images import check_images

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SKTRANSFER_DATA", ROOT / ".." / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"

#: MedMNIST v2 (Yang et al., Scientific Data 2023), Table 3: ResNet-18 (28 px), from scratch.
MEDMNIST_REFERENCE = {"breastmnist": (0.901, 0.863), "pneumoniamnist": (0.944, 0.854)}


def _stratified(y, size, seed):
    rng = np.random.default_rng(seed)
    keep = np.concatenate(
        [
            rng.choice(np.flatnonzero(y == c), round(size * np.mean(y == c)), replace=False)
            for c in np.unique(y)
        ]
    )
    return np.sort(keep)


def load(dataset: str, train_size: int | None, test_size: int | None, seed: int = 0):
    if dataset == "hymenoptera":
        X_train, y_train = load_image_folder(DATA / "hymenoptera" / "train")
        X_test, y_test = load_image_folder(DATA / "hymenoptera" / "val")
        split = "val"
    else:
        data = np.load(require_data(f"{dataset}.npz"))
        X_train, y_train = data["train_images"], data["train_labels"].ravel()
        X_test, y_test = data["test_images"], data["test_labels"].ravel()
        split = "test"
    n_full, n_test_full = len(X_train), len(X_test)
    if train_size is not None and train_size < n_full:
        keep = _stratified(y_train, train_size, seed)
        X_train, y_train = X_train[keep], y_train[keep]
    if test_size is not None and test_size < n_test_full:
        keep = _stratified(y_test, test_size, seed)
        X_test, y_test = X_test[keep], y_test[keep]
    return X_train, y_train, X_test, y_test, split, (n_full, n_test_full)


#: Folds of the extraction row's cross-validated V_ACC.
CV_FOLDS = 5


def rows(epochs: int):
    # early_stopping only to hold out the validation split (V_ACC): patience never runs out,
    # and the best epoch's weights are kept
    common = dict(
        optimizer="adamw",
        lr=1e-3,
        backbone_lr_scale=0.1,
        batch_size=16,
        early_stopping=True,
        validation_fraction=0.1,
    )
    yield (
        "head only (frozen network)",
        dict(common, train_layers="head", max_epochs=30, n_iter_no_change=30),
    )
    common["n_iter_no_change"] = epochs
    yield "top 3 blocks", dict(common, train_layers=3, max_epochs=epochs)
    yield (
        "norm layers only",
        dict(common, train_layers="norm", backbone_lr_scale=1.0, max_epochs=epochs),
    )
    for r in (1, 4, 8):
        yield f"LoRA r={r}", dict(common, lora_rank=r, max_epochs=epochs)
    yield "full fine-tuning", dict(common, train_layers="all", max_epochs=epochs)


def scores(y_true, proba, classes):
    result = {"acc": float(accuracy_score(y_true, classes[np.argmax(proba, 1)]))}
    if len(classes) == 2:
        result["auc"] = float(roc_auc_score(y_true == classes[1], proba[:, 1]))
    return result


def extraction_rows(X_train, y_train, X_test, y_test, image_size, grid):
    """The forward pass over the training images (what the cache keeps) and the extraction
    row: that pass, the cross-validation (V_ACC) and the final fit."""
    with footprint(**grid) as load:
        backbone = load_backbone("mobilenet_v2")
        if image_size is not None:
            backbone.transform = _resized(backbone.transform, image_size)
        network = FrozenNetwork(backbone, [penultimate_layer(backbone.module)], torch.device("cpu"))
    layer = network.layers[0]

    def features(X):
        inputs = check_images(X)
        return pooled_features(network, inputs, pooling="avg", batch_size=16, n_workers=2)[layer]

    with footprint(**grid) as forward:
        train_features = features(X_train)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=0)
    with footprint(**grid) as classifier:
        v_acc = cross_val_score(model, train_features, y_train, cv=folds).mean()
        model.fit(train_features, y_train)
    proba = model.predict_proba(features(X_test))
    coef = model[-1].coef_
    # the network without its ImageNet classifier, plus the logistic regression
    head = [m for m in backbone.module.modules() if isinstance(m, torch.nn.Linear)][-1]
    n_params = sum(p.numel() for p in backbone.module.parameters())
    n_params += coef.size + model[-1].intercept_.size
    n_params -= sum(p.numel() for p in head.parameters())
    total = load + forward + classifier
    pass_row = {
        "method": f"forward pass, {len(X_train)} training images (cached, reused by every "
        "later extraction fit)",
        "fit_s": forward.seconds,
        "footprint": forward.to_dict(),
    }
    return pass_row, {
        "method": "feature extraction + logistic regression",
        "fit_s": total.seconds,
        "v_acc": float(v_acc),
        "v_acc_how": f"{CV_FOLDS}-fold cross-validation",
        "n_exp": CV_FOLDS + 1,
        "footprint": total.to_dict(),
        "classifier_footprint": classifier.to_dict(),
        "trainable": int(coef.size + model[-1].intercept_.size),
        "total": int(n_params),
        "epochs": "-",
        **scores(y_test, proba, model.classes_),
    }


def finetune_row(name, params, X_train, y_train, X_test, y_test, image_size, grid):
    clf = FineTuneClassifier(
        "mobilenet_v2", image_size=image_size, random_state=0, n_jobs=2, **params
    )
    with footprint(**grid) as fit:
        clf.fit(X_train, y_train)
    proba = clf.predict_proba(X_test)
    best = next(row for row in clf.history_ if row["epoch"] == clf.best_epoch_)
    return {
        "method": name,
        "fit_s": fit.seconds,
        "v_acc": float(best["valid_acc"]),
        "v_acc_how": f"validation split ({params['validation_fraction']:.0%}), best epoch "
        f"{clf.best_epoch_}",
        "n_exp": 1,
        "footprint": fit.to_dict(),
        "trainable": int(clf.n_trainable_params_),
        "total": int(clf.n_params_),
        "epochs": int(clf.n_epochs_),
        "cached": bool(clf.features_cached_),
        **scores(y_test, proba, clf.classes_),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dataset", nargs="?", choices=["hymenoptera", "breastmnist", "pneumoniamnist", "report"]
    )
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the fine-tuning rows")
    parser.add_argument("--train-size", type=int, default=None, help="stratified subsample")
    parser.add_argument("--test-size", type=int, default=None, help="stratified subsample")
    parser.add_argument("--image-size", type=int, default=None, help="input resolution")
    parser.add_argument("--only", default=None, help="run only rows whose name contains this")
    parser.add_argument("--country", default=None, help="ISO alpha-3 code of the grid (CO2)")
    parser.add_argument(
        "--carbon-intensity", type=float, default=None, help="grid g CO2e/kWh (CO2)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on the shared, oversubscribed 2-core machine, more threads "
        "spin-wait and run slower)",
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results_folder = RESULTS
    if args.smoke:
        results_folder, args.dataset, args.epochs = (
            smoke_folder("finetune_vs_extract"),
            "breastmnist",
            1,
        )
        args.train_size, args.test_size, args.image_size = 16, 8, 64
    if args.dataset is None:
        parser.error("the dataset is required (or --smoke)")
    if args.dataset == "report":
        print(render_report())
        return
    if not args.smoke and not DATA.is_dir():
        sys.exit(f"Data folder {DATA} is absent; set SKTRANSFER_DATA. Nothing was run.")
    X_train, y_train, X_test, y_test, split, (n_full, n_test_full) = load(
        args.dataset, args.train_size, args.test_size
    )
    print(f"{args.dataset}: train {len(X_train)} of {n_full}, {split} {len(X_test)}", flush=True)
    grid = dict(country=args.country, carbon_intensity=args.carbon_intensity)
    results = []
    if args.only is None or args.only in "feature extraction":
        results += extraction_rows(X_train, y_train, X_test, y_test, args.image_size, grid)
        print(results[-2:], flush=True)
    for name, params in rows(args.epochs):
        if args.only is not None and args.only not in name:
            continue
        results.append(
            finetune_row(name, params, X_train, y_train, X_test, y_test, args.image_size, grid)
        )
        print(results[-1], flush=True)
    record = {
        "dataset": args.dataset,
        "command": "PYTHONPATH=. python benchmarks/finetune_vs_extract.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; shared: load "
        f"average (1 min) {os.getloadavg()[0]:.1f} at the end",
        "train": len(X_train),
        "train_full": n_full,
        "eval_split": split,
        "eval": len(X_test),
        "eval_full": n_test_full,
        "epochs": args.epochs,
        "image_size": args.image_size or 224,
        "rows": results,
    }
    results_folder.mkdir(parents=True, exist_ok=True)
    json_path = results_folder / f"finetune_vs_extract_{args.dataset}.json"
    json_path.write_text(json.dumps(record, indent=1))
    print(render_table(record))


def render_report() -> str:
    """Every dataset's table with its setup, from the JSON files the runs left."""
    parts = []
    for dataset in ("hymenoptera", "breastmnist", "pneumoniamnist"):
        path = RESULTS / f"finetune_vs_extract_{dataset}.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        parts += [
            f"### {dataset}",
            "",
            f"Command: `{record['command']}`  ",
            f"Machine: {record['machine']}  ",
            f"Date: {record['date']}  ",
            f"Training images: {record['train']} of {record['train_full']}; evaluated on "
            f"{record['eval']} of {record['eval_full']} {record['eval_split']} images; "
            f"{record['image_size']} px input; fine-tuning rows {record['epochs']} epochs.",
            "",
            render_table(record),
            "",
        ]
    return "\n".join(parts)


def _footprint_cells(row) -> dict:
    if "footprint" not in row:  # a result file from before the footprint columns
        record = FootprintRecord(seconds=row["fit_s"], note="run before footprints were kept")
    else:
        record = FootprintRecord.from_dict(row["footprint"])
    return record.cells()


def render_table(record) -> str:
    medmnist = record["dataset"] in MEDMNIST_REFERENCE
    rows_ = record["rows"]
    base = next((r["fit_s"] for r in rows_ if r["method"].startswith("feature")), None)
    head = "| method | V_ACC | T_ACC | " + ("AUC | " if medmnist else "")
    head += "P_AVG (W) | energy (kWh) | E_CO2 (kg) | T (s) | time vs extraction | n_EXP | "
    head += "trainable params | trainable % | epochs |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows_:
        footprint_cells = _footprint_cells(r)
        if "acc" not in r:  # the cached forward pass: a cost, not a model
            cells = [r["method"], "-", "-"] + (["-"] if medmnist else [])
            cells += [footprint_cells[k] for k in ("P_AVG", "energy", "E_CO2")]
            cells += [f"{r['fit_s']:.0f}", f"{r['fit_s'] / base:.1f}x" if base else "-"]
            cells += ["-", "-", "-", "-"]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        ratio = f"{r['fit_s'] / base:.1f}x" if base else "-"
        v_acc = f"{r['v_acc']:.3f}" if "v_acc" in r else "-"
        cells = [r["method"], v_acc, f"{r['acc']:.3f}"]
        if medmnist:
            cells.append(f"{r['auc']:.3f}")
        cells += [footprint_cells[k] for k in ("P_AVG", "energy", "E_CO2")]
        cells += [
            f"{r['fit_s']:.0f}",
            ratio,
            str(r.get("n_exp", "-")),
            f"{r['trainable']:,}",
            f"{100 * r['trainable'] / r['total']:.2f} %",
            str(r["epochs"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if medmnist:
        auc, acc = MEDMNIST_REFERENCE[record["dataset"]]
        cells = ["MedMNIST v2 ResNet-18 (28 px, from scratch, full train set)", "-", f"{acc:.3f}"]
        cells += [f"{auc:.3f}", "-", "-", "-", "-", "-", "-", "11 M", "100 %", "100"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", footprint_notes(rows_)])


def footprint_notes(rows_) -> str:
    """How the footprint figures were obtained (the same for every row of a run)."""
    measured = [r["footprint"] for r in rows_ if r.get("footprint", {}).get("energy_kwh")]
    if not measured:
        return "Footprint: not measured (codecarbon absent, or a run before the columns)."
    first = measured[0]
    sources = "; ".join(f"{part}: {how}" for part, how in sorted(first["sources"].items()))
    return (
        f"Footprint: {first['note']}. {sources}. CO2 for {first['grid']} "
        f"({first['carbon_intensity']:.0f} g CO2e/kWh). (est.) = estimate, (meas.) = "
        "measured counter; P_AVG = energy / T."
    )


if __name__ == "__main__":
    main()
