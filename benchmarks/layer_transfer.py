"""How transferable is each layer? Yosinski et al. (NeurIPS 2014), figure 2, on MNIST.

Task A is digits 0-4, task B digits 5-9 (``--train-size`` training images of each, all test
images of B). A small CNN (three convolutions, two hidden fully connected layers, a 5-way
output: five transferable blocks) is trained from scratch on A (baseA) and on B (baseB). Then,
for every n in 1..5 and every seed, the first n blocks of baseB or baseA are copied into a new
network for B whose other layers start again from random (:class:`sktransfer.TransferredBlocks`)
and the network is trained on B with the copied blocks frozen (BnB, AnB) or fine-tuned (BnB+,
AnB+), all layers at the same learning rate, for as many epochs as the base networks.

The paper's observations, checked in the results file: (1) BnB drops in the middle layers
("fragile co-adaptation"), (2) AnB drops at high n (features specific to A), (3) AnB+ beats
baseB (transfer plus fine-tuning generalises better).

    PYTHONPATH=. python benchmarks/layer_transfer.py                  # full (CPU, ~20 min)
    PYTHONPATH=. python benchmarks/layer_transfer.py --smoke          # seconds, for CI
    PYTHONPATH=. python benchmarks/layer_transfer.py --device cuda --seeds 5 --train-size 12000

Writes layer_transfer.md, .csv and .png to benchmarks/results (``--out``; a smoke run writes
to a temporary folder, on tiny synthetic digits when the shared data is absent).
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks._common import (
    RESULTS,
    add_smoke_flag,
    header,
    markdown_table,
    require_data,
    smoke_folder,
)
from sktransfer import FineTuneClassifier, TransferredBlocks, transferable_blocks

CONDITIONS = ("baseB", "BnB", "BnB+", "AnB", "AnB+")
STYLE = {  # the paper's figure 2: white baseB, dark / light blue BnB(+), dark / light red AnB(+)
    "baseB": ("o", "white", "black"),
    "BnB": ("o", "#1f3fbf", "#1f3fbf"),
    "BnB+": ("P", "#7fa7ff", "#3f6fdf"),
    "AnB": ("D", "#bf1f1f", "#bf1f1f"),
    "AnB+": ("X", "#ff8f8f", "#df3f3f"),
}


class SmallCNN(nn.Module):
    """conv1-conv3 (3x3, ReLU, max-pool 2), fc4, fc5 (ReLU), out: five blocks below the output."""

    def __init__(self, width=32, n_classes=5):
        super().__init__()
        self.conv1 = conv_block(3, width)  # MNIST's grey arrives as 3 equal channels
        self.conv2 = conv_block(width, 2 * width)
        self.conv3 = conv_block(2 * width, 2 * width)  # 28 -> 14 -> 7 -> 3
        self.fc4 = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 9, 128), nn.ReLU())
        self.fc5 = nn.Sequential(nn.Linear(128, 64), nn.ReLU())
        self.out = nn.Linear(64, n_classes)

    def forward(self, x):
        x = self.conv3(self.conv2(self.conv1(x)))
        return self.out(self.fc5(self.fc4(x)))


def conv_block(channels_in, channels_out):
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
    )


def load_tasks(train_size: int, test_size: int | None):
    """Digits 0-4 (A) and 5-9 (B): the first ``train_size`` training images of each task."""
    data = np.load(require_data("mnist.npz"))
    tasks = {}
    for name, digits in (("A", range(0, 5)), ("B", range(5, 10))):
        train = np.isin(data["y_train"], digits)
        test = np.isin(data["y_test"], digits)
        x_test, y_test = data["x_test"][test], data["y_test"][test]
        if test_size is not None:
            x_test, y_test = x_test[:test_size], y_test[:test_size]
        tasks[name] = (
            data["x_train"][train][:train_size],
            data["y_train"][train][:train_size],
            x_test,
            y_test,
        )
    return tasks


def classifier(source, n_blocks, freeze, seed, args):
    """A FineTuneClassifier on the first n blocks of ``source``, every layer at one rate."""
    return FineTuneClassifier(
        TransferredBlocks(source, n_blocks=n_blocks, freeze=freeze),
        train_layers="all",
        backbone_lr_scale=1.0,
        optimizer="adam",
        lr=args.lr,
        batch_size=64,
        max_epochs=args.epochs,
        device=args.device,
        n_jobs=1,
        random_state=seed,
    )


def run(args, tasks):
    """One row per (condition, n, seed): test accuracy on B and fit seconds."""
    x_b, y_b, x_test, y_test = tasks["B"]
    blocks = transferable_blocks(SmallCNN(args.width))
    n_values = range(1, len(blocks) + 1)
    rows = []
    for seed in range(args.seeds):
        base = {}
        for task in ("A", "B"):  # n_blocks=0: the architecture from scratch, seeded
            start = time.perf_counter()
            x, y = tasks[task][:2]
            base[task] = classifier(SmallCNN(args.width), 0, True, seed, args).fit(x, y)
            seconds = time.perf_counter() - start
            if task == "B":
                rows.append(row("baseB", 0, seed, base[task], x_test, y_test, seconds))
        for n in n_values:
            for name in CONDITIONS[1:]:
                start = time.perf_counter()
                source, freeze = base[name[0]], not name.endswith("+")
                fitted = classifier(source, n, freeze, 1000 + seed, args).fit(x_b, y_b)
                seconds = time.perf_counter() - start
                rows.append(row(name, n, seed, fitted, x_test, y_test, seconds))
        done = [r for r in rows if r["seed"] == seed]
        print(f"seed {seed}: {len(done)} fits, {sum(r['seconds'] for r in done):.0f} s", flush=True)
    return rows, blocks


def row(condition, n, seed, fitted, x_test, y_test, seconds):
    accuracy = float(np.mean(fitted.predict(x_test) == y_test))
    print(f"  {condition:5s} n={n} seed={seed}: {accuracy:.4f} ({seconds:.1f} s)", flush=True)
    return {"condition": condition, "n": n, "seed": seed, "accuracy": accuracy, "seconds": seconds}


# ------------------------------------------------------------------ summary and verdicts


def means(rows, condition):
    """{n: (mean, std, count)} of one condition's accuracies."""
    out = {}
    for n in sorted({r["n"] for r in rows if r["condition"] == condition}):
        values = [r["accuracy"] for r in rows if r["condition"] == condition and r["n"] == n]
        out[n] = (
            float(np.mean(values)),
            float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            len(values),
        )
    return out


def gap(a, b):
    """Mean of ``a`` minus mean of ``b`` and twice the standard error of that difference."""
    (ma, sa, ka), (mb, sb, kb) = a, b
    return ma - mb, 2 * float(np.sqrt(sa**2 / ka + sb**2 / kb))


def verdicts(rows) -> list[str]:
    """The paper's three observations, each judged by a stated criterion (2 standard errors)."""
    base = means(rows, "baseB")[0]
    bnb, anb, anb_plus = means(rows, "BnB"), means(rows, "AnB"), means(rows, "AnB+")
    top = max(bnb)
    middle = {n: bnb[n] for n in bnb if 1 < n < top}
    low_n = min(middle, key=lambda n: middle[n][0])
    dip, recovery = gap(base, middle[low_n]), gap(bnb[top], middle[low_n])
    dip_seen = dip[0] > dip[1] and recovery[0] > recovery[1]
    drop, early = gap(bnb[top], anb[top]), gap(bnb[1], anb[1])
    plus = {n: gap(anb_plus[n], base) for n in anb_plus}
    above = sum(d > se for d, se in plus.values())
    beats = "yes" if above == len(plus) else f"at {above} of {len(plus)} n"
    return [
        f"1. **Fragile co-adaptation (BnB dips in the middle): {seen(dip_seen)}.** Lowest "
        f"middle BnB at n={low_n}: {pct(middle[low_n][0])}, baseB {pct(base[0])} (baseB - "
        f"BnB = {diff(dip)}), BnB at n={top} {pct(bnb[top][0])} (recovery {diff(recovery)}). "
        "Criterion: both differences above twice their standard error.",
        f"2. **AnB drops at high n: {seen(drop[0] > drop[1])}.** At n={top}, BnB - AnB = "
        f"{diff(drop)} (at n=1: {diff(early)}); AnB goes from {pct(anb[1][0])} at n=1 to "
        f"{pct(anb[top][0])} at n={top}. Criterion: BnB - AnB at n={top} above twice its "
        "standard error.",
        f"3. **AnB+ beats baseB: {beats}.** AnB+ - baseB: "
        + ", ".join(f"n={n}: {diff(d)}" for n, d in plus.items())
        + f"; mean over n {100 * np.mean([d for d, _ in plus.values()]):+.2f} pp. Criterion: "
        "above twice its standard error.",
    ]


def seen(flag: bool) -> str:
    return "seen" if flag else "not seen"


def diff(difference) -> str:
    """A difference of accuracies and twice its standard error, in percentage points."""
    value, error = difference
    return f"{100 * value:+.2f} ± {100 * error:.2f} pp"


def pct(x):
    return f"{100 * x:.2f} %"


def table(rows, blocks) -> str:
    n_values = sorted({r["n"] for r in rows if r["n"] > 0})
    columns = ["condition"] + [f"n={n} ({blocks[n - 1]})" for n in n_values]
    lines = []
    base = means(rows, "baseB")[0]
    lines.append(
        {
            "condition": "baseB (n=0)",
            **{c: f"{pct(base[0])} ± {100 * base[1]:.2f}" for c in columns[1:]},
        }
    )
    for condition in CONDITIONS[1:]:
        stats = means(rows, condition)
        lines.append(
            {
                "condition": condition,
                **{
                    f"n={n} ({blocks[n - 1]})": f"{pct(stats[n][0])} ± {100 * stats[n][1]:.2f}"
                    for n in n_values
                },
            }
        )
    return markdown_table(lines, columns)


def plot(rows, path: Path, title: str):
    """Seeds as points, means as lines; the right panel zooms on the conditions near baseB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax in axes:
        draw_conditions(ax, rows)
        ax.set_xlabel("layer n at which the network is chopped and retrained")
        ax.set_xticks(sorted({r["n"] for r in rows}))
        ax.grid(alpha=0.3)
    base = means(rows, "baseB")[0][0]
    near = [r["accuracy"] for r in rows if abs(r["accuracy"] - base) < 0.04]
    axes[1].set_ylim(100 * min(near) - 0.3, 100 * max(near) + 0.3)
    axes[0].set_ylabel("test accuracy on B (%)")
    axes[0].legend(ncol=5, fontsize=8, loc="lower left")
    axes[1].set_title("zoom: within 4 points of baseB", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_conditions(ax, rows):
    offsets = dict(zip(CONDITIONS, (0.0, -0.15, -0.05, 0.05, 0.15)))
    for condition in CONDITIONS:
        marker, face, edge = STYLE[condition]
        points = [r for r in rows if r["condition"] == condition]
        ax.scatter(
            [r["n"] + offsets[condition] for r in points],
            [100 * r["accuracy"] for r in points],
            marker=marker, facecolor=face, edgecolor=edge, s=36, alpha=0.8, zorder=3,
            label=condition,
        )  # fmt: skip
        stats = means(rows, condition)
        if condition == "baseB":
            ax.axhline(100 * stats[0][0], color="black", lw=1, ls="--", zorder=1)
        else:
            mean_line = [100 * m for m, _, _ in stats.values()]
            ax.plot(list(stats), mean_line, color=edge, lw=1.5, zorder=2)


def write(args, rows, blocks, wall):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "layer_transfer.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    title = (
        f"MNIST 0-4 (A) -> 5-9 (B), {args.train_size} training images per task, {args.epochs} "
        f"epochs, {args.seeds} seeds"
    )
    plot(rows, out / "layer_transfer.png", title)
    command = "PYTHONPATH=. python benchmarks/layer_transfer.py " + shlex.join(sys.argv[1:])
    text = header(
        "How transferable is each layer? (Yosinski et al. 2014) on MNIST", command.strip()
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    load_start = ", ".join(f"{x:.2f}" for x in args.load_start)
    text += (
        f"- Load average (1, 5, 15 min): {load_start} at the start, {load} at the end (2 "
        f"cores shared with other jobs; torch threads: {args.threads})\n"
        f"- Wall time: {wall / 60:.1f} min for {len(rows) + args.seeds} fits "
        f"({args.seeds} baseA not in the table), device {args.device}\n"
        f"- Setup: {title}; tested on {args.n_test} test images of B; a CNN of blocks "
        f"{', '.join(blocks)} below a 5-way output; Adam lr {args.lr}, batch 64, every layer "
        "at the same rate; copied blocks frozen (BnB, AnB) or fine-tuned (BnB+, AnB+), the "
        "rest re-initialised (`FineTuneClassifier(TransferredBlocks(base, n_blocks=n, "
        "freeze=...), train_layers='all', backbone_lr_scale=1.0)`).\n\n"
        f"![accuracy vs n](layer_transfer.png)\n\n"
        "## Test accuracy on B (mean ± standard deviation over seeds)\n\n"
        + table(rows, blocks)
        + "\n## The paper's three observations at this scale\n\n"
        + "\n".join(verdicts(rows))
        + "\n"
    )
    (out / "layer_transfer.md").write_text(text)
    print(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=2000, help="training images per task")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=16, help="channels of conv1")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a busy CPU)")
    parser.add_argument("--out", default=None, help="results folder")
    add_smoke_flag(parser)  # 2 seeds, 60 images per task, 1 epoch, 200 test images
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.train_size, args.epochs = 2, 60, 1
        args.out = args.out or smoke_folder("layer_transfer")
    args.out = args.out or RESULTS
    torch.set_num_threads(args.threads)
    tasks = load_tasks(args.train_size, 200 if args.smoke else None)
    args.n_test, args.load_start = len(tasks["B"][3]), os.getloadavg()
    start = time.perf_counter()
    rows, blocks = run(args, tasks)
    write(args, rows, blocks, time.perf_counter() - start)


if __name__ == "__main__":
    main()
