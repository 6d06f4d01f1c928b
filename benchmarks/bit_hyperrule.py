"""BiT-HyperRule against FineTuneClassifier's defaults (issue #19), MobileNetV2 (ImageNet).

Per dataset, three fits on the same training images, scored on the same held-out images:

- ``defaults (head only)``: ``FineTuneClassifier()`` as shipped (head only, 10 epochs, SGD lr
  0.01, batch 32), at the resolution of ``finetune_vs_extract.py``'s runs.
- ``defaults, full fine-tuning``: the same with ``train_layers="all"`` and that benchmark's
  epochs (hymenoptera 2, BreastMNIST 6, PneumoniaMNIST 4).
- ``HyperRule, full fine-tuning``: ``train_layers="all", backbone_lr_scale=1.0,
  hyperrule=scale``: BiT's rule chooses steps, resolution, crop and flip, MixUp, SGD lr 0.003
  with warm-up and decays, batch, scaled down by ``--scale`` for this CPU (steps and batch x
  scale, image side x sqrt(scale); see sktransfer/hyperrule.py).

Data and subsets as in ``finetune_vs_extract.py`` (its ``load``): PneumoniaMNIST's training
set is a stratified 1,000 of 4,708 there and here. Results accumulate as JSON per dataset and
scale in benchmarks/results/; ``report`` renders benchmarks/results/bit_hyperrule.md and the
plot bit_hyperrule.png from them::

    flock /tmp/sktransfer-bench.lock env PYTHONPATH=. python benchmarks/bit_hyperrule.py \\
        hymenoptera breastmnist pneumoniamnist --scale 0.1
    PYTHONPATH=. python benchmarks/bit_hyperrule.py report
    PYTHONPATH=. python benchmarks/bit_hyperrule.py --smoke   # seconds: 16 images, tiny rule
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from benchmarks._common import DATA, RESULTS, add_smoke_flag, header, machine, smoke_folder
from benchmarks.finetune_vs_extract import load, scores
from sktransfer import FineTuneClassifier

DATASETS = ("hymenoptera", "breastmnist", "pneumoniamnist")
#: finetune_vs_extract.py's settings for each dataset: (resolution, epochs, training subset).
SETTINGS = {
    "hymenoptera": (None, 2, None),
    "breastmnist": (64, 6, None),
    "pneumoniamnist": (64, 4, 1000),
}
SMOKE_SCALE = 0.01


def configurations(dataset: str, scale: float, smoke: bool):
    image_size, epochs, _ = SETTINGS[dataset]
    epochs = 1 if smoke else epochs
    yield "defaults (head only)", dict(image_size=image_size, max_epochs=1 if smoke else 10)
    yield (
        "defaults, full fine-tuning",
        dict(image_size=image_size, train_layers="all", max_epochs=epochs),
    )
    yield (
        "HyperRule, full fine-tuning",
        dict(train_layers="all", backbone_lr_scale=1.0, hyperrule=scale),
    )


def run_one(name, params, data, device):
    X_train, y_train, X_test, y_test = data
    clf = FineTuneClassifier("mobilenet_v2", device=device, n_jobs=2, random_state=0, **params)
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    row = {
        "method": name,
        "fit_s": seconds,
        "epochs": int(clf.n_epochs_),
        "params": {k: v for k, v in params.items()},
        **scores(y_test, clf.predict_proba(X_test), clf.classes_),
    }
    if clf.hyperrule_ is not None:
        row["rule"] = {k: v for k, v in clf.hyperrule_.items()}
    return row


def run_dataset(dataset, args):
    image_size, _, train_size = SETTINGS[dataset]
    X_train, y_train, X_test, y_test, split, (n_full, n_test_full) = load(dataset, train_size, None)
    if args.smoke:  # a few images of each class
        keep = np.concatenate([np.flatnonzero(y_train == c)[:8] for c in np.unique(y_train)])
        test = np.concatenate([np.flatnonzero(y_test == c)[:4] for c in np.unique(y_test)])
        X_train, y_train = np.asarray(X_train)[keep], np.asarray(y_train)[keep]
        X_test, y_test = np.asarray(X_test)[test], np.asarray(y_test)[test]
    print(f"{dataset}: train {len(X_train)} of {n_full}, {split} {len(X_test)}", flush=True)
    data = (X_train, y_train, X_test, y_test)
    scale = SMOKE_SCALE if args.smoke else args.scale
    rows = []
    for name, params in configurations(dataset, scale, args.smoke):
        rows.append(run_one(name, params, data, args.device))
        print({k: v for k, v in rows[-1].items() if k != "rule"}, flush=True)
    return {
        "dataset": dataset,
        "scale": scale,
        "command": "PYTHONPATH=. python benchmarks/bit_hyperrule.py "
        + " ".join(args.argv if args.argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "load_average_end": os.getloadavg(),
        "train": len(X_train),
        "train_full": n_full,
        "eval_split": split,
        "eval": len(X_test),
        "eval_full": n_test_full,
        "default_image_size": image_size or 224,
        "rows": rows,
    }


def result_path(dataset, scale):
    return RESULTS / f"bit_hyperrule_{dataset}_scale{scale:g}.json"


# --------------------------------------------------------------------------- report


def rule_settings(rule) -> str:
    return (
        f"{rule['steps']} steps ({rule['epochs']} epochs) of batch {rule['batch_size']}, "
        f"warm-up {rule['warmup_steps']}, decays at {list(rule['milestones'])}, resize "
        f"{rule['resize']} / crop {rule['crop']} (images {rule['image_size'][0]}x"
        f"{rule['image_size'][1]}), MixUp {rule['mixup_alpha'] or 'off'}, lr {rule['lr']}"
    )


def comparison_rows(record) -> list[str]:
    rows = {r["method"]: r for r in record["rows"]}
    rule = rows["HyperRule, full fine-tuning"]
    chose = rule["rule"]
    chose = (
        f"{chose['steps']} steps x {chose['batch_size']}, {chose['resize']}/{chose['crop']} px, "
        f"MixUp {chose['mixup_alpha'] or 'off'}"
    )
    lines = []
    for baseline in ("defaults (head only)", "defaults, full fine-tuning"):
        base = rows[baseline]
        lines.append(
            f"| {record['dataset']} | {record['scale']:g} | {baseline} | {base['acc']:.3f} | "
            f"{base['auc']:.3f} | {base['fit_s']:.0f} | {rule['acc']:.3f} | {rule['auc']:.3f}"
            f" | {rule['fit_s']:.0f} | {rule['acc'] - base['acc']:+.3f} | "
            f"{rule['fit_s'] / base['fit_s']:.1f}x | {chose} |"
        )
    return lines


def records() -> list[dict]:
    found = sorted(RESULTS.glob("bit_hyperrule_*_scale*.json"))
    loaded = [json.loads(p.read_text()) for p in found]
    return sorted(loaded, key=lambda r: (DATASETS.index(r["dataset"]), r["scale"]))


def render_report(loaded) -> str:
    head = (
        "| dataset | scale | baseline | baseline ACC | baseline AUC | baseline fit (s) | "
        "HyperRule ACC | HyperRule AUC | HyperRule fit (s) | ACC gain | time ratio | "
        "rule chose |"
    )
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for record in loaded:
        lines += comparison_rows(record)
    lines += ["", "What the rule chose (`hyperrule_`), and each run's setup:", ""]
    for record in loaded:
        rule = next(r["rule"] for r in record["rows"] if "rule" in r)
        lines += [
            f"- **{record['dataset']}**, scale {record['scale']:g}: {rule_settings(rule)}. "
            f"Training {record['train']} of {record['train_full']} images, evaluated on "
            f"{record['eval']} of {record['eval_full']} {record['eval_split']} images; "
            f"defaults at {record['default_image_size']} px. `{record['command']}`, "
            f"{record['date']}, load average (1/5/15 min) at the end "
            f"{'/'.join(f'{v:.1f}' for v in record['load_average_end'])}.",
        ]
    return "\n".join(lines)


def plot(loaded, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ("defaults (head only)", "defaults, full fine-tuning", "HyperRule, full fine-tuning")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for marker, method in zip("osD", methods, strict=True):
        for record in loaded:
            row = next(r for r in record["rows"] if r["method"] == method)
            label = method if record is loaded[0] else None
            colour = f"C{methods.index(method)}"
            for axis, metric in zip(axes, ("acc", "auc"), strict=True):
                axis.scatter(row["fit_s"], row[metric], marker=marker, color=colour, label=label)
                text = record["dataset"]  # baselines repeat per scale: same numbers
                text += f" s={record['scale']:g}" if "rule" in row else ""
                axis.annotate(
                    text,
                    (row["fit_s"], row[metric]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    for axis, metric in zip(axes, ("test accuracy", "test AUC"), strict=True):
        axis.set_xscale("log")
        axis.set_xlabel("fit time (s, shared 2-core CPU)")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("BiT-HyperRule (scaled for a CPU) vs FineTuneClassifier defaults, MobileNetV2")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


SETUP = """\
MobileNetV2 (ImageNet), one torch thread, on the shared 2-core CPU (other benchmarks took
turns through a lock; tests of other helpers ran beside them: read each run's load average).
Rows compare the rule with two baselines measured in the same run: `FineTuneClassifier()`
as shipped (head only, 10 epochs, SGD lr 0.01, batch 32) and the same with
`train_layers="all"` for finetune_vs_extract.py's epochs (hymenoptera 2, BreastMNIST 6,
PneumoniaMNIST 4), both at that benchmark's resolution (224 px; 64 px for MedMNIST). The rule
row is `FineTuneClassifier(train_layers="all", backbone_lr_scale=1.0, hyperrule=scale)`.
What is scaled: the rule's steps and batch by `scale` and its image sides by sqrt(scale)
(scale 0.1: 1/1000 of the paper's compute); PneumoniaMNIST trains on a stratified 1,000 of
its 4,708 images, as in finetune_vs_extract.py. Every set is below 20 k examples, so the rule
never turns MixUp on here (tests/test_hyperrule.py checks that it does from 20 k on). ACC and
AUC are on the held-out split (hymenoptera val, MedMNIST test); one seed (random_state=0).
"""


def write_report(command: str) -> None:
    loaded = records()
    if not loaded:
        sys.exit(f"No bit_hyperrule_*.json results in {RESULTS}; run a dataset first.")
    text = header("BiT-HyperRule vs FineTuneClassifier defaults", command)
    text += "\n" + SETUP + "\n" + render_report(loaded) + "\n\n![accuracy and AUC against fit time]"
    text += "(bit_hyperrule.png)\n"
    (RESULTS / "bit_hyperrule.md").write_text(text)
    plot(loaded, RESULTS / "bit_hyperrule.png")
    print(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "datasets", nargs="*", help=f"any of {', '.join(DATASETS)} (default: all), or report"
    )
    parser.add_argument("--scale", type=float, default=0.1, help="hyperrule's scale, (0, 1]")
    parser.add_argument("--device", default="cpu", help="torch device (cpu default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machine)")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    args.argv = argv
    unknown = set(args.datasets) - {*DATASETS, "report"}
    if unknown or ("report" in args.datasets and len(args.datasets) > 1):
        parser.error(f"datasets must be among {DATASETS}, or 'report' alone; got {args.datasets}")
    torch.set_num_threads(args.threads)
    if args.datasets == ["report"]:
        write_report("PYTHONPATH=. python benchmarks/bit_hyperrule.py report")
        return
    if not args.smoke and not DATA.is_dir():
        sys.exit(f"Data folder {DATA} is absent; set SKTRANSFER_DATA. Nothing was run.")
    datasets = args.datasets or (["breastmnist"] if args.smoke else list(DATASETS))
    folder = smoke_folder("bit_hyperrule") if args.smoke else RESULTS
    for dataset in datasets:
        record = run_dataset(dataset, args)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / result_path(dataset, record["scale"]).name
        path.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
