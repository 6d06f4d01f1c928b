"""Lottery tickets after transfer: a fine-tuned MobileNetV2, pruned with late rewinding.

An ImageNet MobileNetV2 gets a new 2-class head and fine-tunes its top ``--blocks`` blocks on
hymenoptera (ants vs bees, 244 training images); the fine-tuned layers (top blocks + head)
are then pruned by magnitude, round after round, and the survivors rewound to their values
after ``--rewind-iteration`` steps of fine-tuning (late rewinding, Frankle et al. 2020),
against a random re-initialisation of the same sparse layers. Kept small for a 2-core CPU:
few rounds, few epochs (stated in the results).

    PYTHONPATH=. python benchmarks/lottery_transfer.py
    PYTHONPATH=. python benchmarks/lottery_transfer.py --quick   # 1 round, 40 images
    PYTHONPATH=. python benchmarks/lottery_transfer.py --smoke   # seconds, a temporary folder

Writes benchmarks/results/lottery_transfer.md and lottery_transfer.png.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch

from benchmarks._common import RESULTS, add_smoke_flag, require_data, smoke_folder
from sktransfer import FineTuneClassifier, load_image_folder
from sktransfer.pruning.lottery import PrunedClassifier, plot_lottery


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=2, help="top blocks fine-tuned")
    parser.add_argument("--rate", type=float, default=0.5, help="pruned per round")
    parser.add_argument("--rewind-iteration", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 round, 1 epoch, 40 images")
    parser.add_argument("--seed", type=int, default=0)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    args.results, args.n_train, args.n_test = RESULTS, None, None
    if args.quick or args.smoke:
        args.rounds, args.epochs, args.rewind_iteration = 1, 1, 1
        args.n_train, args.n_test = (12, 6) if args.smoke else (40, 20)
    if args.smoke:
        args.results = smoke_folder("lottery_transfer")
    return args


def hymenoptera(args):
    root = require_data("hymenoptera")
    X, y = load_image_folder(root / "train")
    X_test, y_test = load_image_folder(root / "val")
    if args.n_train is not None:
        pick = np.random.default_rng(0).permutation(len(X))[: args.n_train]
        test = np.random.default_rng(0).permutation(len(X_test))[: args.n_test]
        X, y, X_test, y_test = X[pick], y[pick], X_test[test], y_test[test]
    return X, y, X_test, y_test


def ticket_for(args):
    finetune = FineTuneClassifier(
        "mobilenet_v2",
        weights="DEFAULT",
        train_layers=args.blocks,
        max_epochs=args.epochs,
        lr=0.01,
        backbone_lr_scale=0.1,
        batch_size=16,
        early_stopping=True,  # holds out 20 % for validation; restores the best epoch
        validation_fraction=0.2,
        n_iter_no_change=args.epochs,
        random_state=args.seed,
    )
    return PrunedClassifier(
        finetune,
        prune_rate=args.rate,
        output_rate=args.rate / 2,
        n_rounds=args.rounds,
        rewind=("iteration", args.rewind_iteration),
        reinit_control=True,
        random_state=args.seed,
        verbose=1,
    )


def table_rows(history) -> list[str]:
    dense = history["test_accuracy_at_best"].iloc[0]
    rows = []
    for _, row in history.iterrows():
        k = int(row["round"])
        rows.append(
            f"| {k} | {100 * row['weights_remaining']:.1f} | {int(row['n_remaining'])} | "
            f"{row['test_accuracy_at_best']:.3f} | {row['test_accuracy_at_best'] / dense:.3f} | "
            + ("-" if k == 0 else f"{row['reinit_test_accuracy_at_best']:.3f}")
            + f" | {int(row['best_epoch'])} |"
        )
    return rows


def report(args, argv, ticket, seconds, n_train, n_test, name) -> str:
    totals = {
        layer: ticket.estimator_.net_.module_.get_submodule(layer).weight_mask.numel()
        for layer in ticket.layers_
    }
    command = "PYTHONPATH=. python benchmarks/lottery_transfer.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    header = (
        "| round | weights remaining % | weights left | ticket acc | ticket / dense "
        "| re-init acc | best epoch |"
    )
    return "\n".join(
        [
            "# Lottery tickets after transfer: MobileNetV2 on hymenoptera",
            "",
            f"Command: `{command.strip()}`",
            f"Machine: {platform.machine()} CPU, 2 shared cores (torch.set_num_threads(1)), "
            f"no GPU; torch {torch.__version__}. "
            f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.",
            f"Wall time: {seconds / 60:.1f} min.",
            "",
            f"FineTuneClassifier(mobilenet_v2, ImageNet weights, train_layers={args.blocks}): "
            f"the top {args.blocks} blocks train at lr 0.001 and a new head at 0.01 (SGD, "
            f"momentum 0.9, batch 16), **{args.epochs} epochs per round**, early stopping on "
            f"20 % of the {n_train} training images (best epoch restored). Pruned: the "
            f"{len(ticket.layers_)} fine-tuned conv/linear layers ({sum(totals.values())} "
            f"weights), {100 * args.rate:.0f} % per round per layer and "
            f"{50 * args.rate:.0f} % of the head, **{args.rounds} rounds**; survivors rewound "
            f"to their values after iteration {args.rewind_iteration} of fine-tuning. The "
            "frozen body below is neither pruned nor changed. Control: the same masks with the "
            "pruned layers re-initialised at random (the rest rewound). Accuracy: the "
            f"{n_test} validation images of hymenoptera, at the best validation epoch; "
            "the ratio is against the dense fine-tuned network (round 0) of the same run.",
            "",
            header,
            "|" + " --- |" * 7,
            *table_rows(ticket.history_),
            "",
            f"![accuracy vs weights remaining]({name}.png)",
            "",
        ]
    )


def main(argv=None):
    args = parse(argv)
    X, y, X_test, y_test = hymenoptera(args)
    torch.set_num_threads(1)  # 2 shared cores: one thread per process is the fastest here
    ticket = ticket_for(args)
    start = time.perf_counter()
    ticket.fit(X, y, eval_set=(X_test, y_test))
    seconds = time.perf_counter() - start
    args.results.mkdir(parents=True, exist_ok=True)
    name = "lottery_transfer_quick" if args.quick else "lottery_transfer"
    fig = plot_lottery(
        ticket.history_, label=f"ticket (rewind to iteration {args.rewind_iteration})"
    )
    fig.axes[0].set_title(f"MobileNetV2 top {args.blocks} blocks + head, hymenoptera")
    fig.savefig(args.results / f"{name}.png", dpi=120, bbox_inches="tight")
    ticket.history_.to_csv(args.results / f"{name}.csv", index=False)
    text = report(args, argv, ticket, seconds, len(X), len(X_test), name)
    (args.results / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
