"""Lottery tickets on MNIST: LeNet-300-100 (Frankle & Carbin, ICLR 2019, Figure 3/4).

Recipe of the paper: Adam at 1.2e-3, batch 60, prune 20 % per round per layer and 10 % of the
output layer, rewind the survivors to their initial weights; the control re-initialises the
same sparse networks at random. Test accuracy is read at the epoch of the lowest validation
loss (the paper's early-stopping criterion) on a validation set of 5,000 training images.

The paper trains 50,000 iterations per round (about 55 epochs at batch 60); on a 2-core CPU
this benchmark trains ``--epochs`` (default 2, i.e. 1,800 iterations) per round.

    PYTHONPATH=. python benchmarks/lottery_mnist.py            # full: 15 rounds x 2 epochs
    PYTHONPATH=. python benchmarks/lottery_mnist.py --quick    # 3 rounds, 6k images
    PYTHONPATH=. python benchmarks/lottery_mnist.py --smoke    # seconds, a temporary folder

Writes benchmarks/results/lottery_mnist.md and lottery_mnist.png.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.dataset import ValidSplit
from torch import nn

from benchmarks._common import RESULTS, add_smoke_flag, require_data, smoke_folder
from sktransfer.pruning.lottery import PrunedClassifier, plot_lottery


class LeNet300100(nn.Module):
    """LeNet-300-100: 784-300-100-10 fully connected, ReLU (266,200 weights, 410 biases)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x):
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


HEADER = (
    "| k | formula % | measured % | weights left | left - formula | ticket acc "
    "| ticket / dense | re-init acc | best epoch |"
)


def expected_fraction(k: int) -> float:
    """The paper's weights remaining after k rounds: (265200*0.8^k + 1000*0.9^k) / 266200."""
    return (265200 * 0.8**k + 1000 * 0.9**k) / 266200


def load_mnist(n_train=None):
    data = np.load(require_data("mnist.npz"))
    X = (data["x_train"].reshape(-1, 784) / 255).astype(np.float32)
    X_test = (data["x_test"].reshape(-1, 784) / 255).astype(np.float32)
    y, y_test = data["y_train"], data["y_test"]
    if n_train:
        X, y = X[:n_train], y[:n_train]
    return X, y, X_test, y_test


def validation_folds(n_train: int) -> int:
    """5,000 of the 60,000 training images for validation, as in the paper (1/12)."""
    return 12 if n_train >= 60000 else 5


def lenet_net(epochs: int, n_train: int) -> NeuralNetClassifier:
    return NeuralNetClassifier(
        LeNet300100,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1.2e-3,
        batch_size=60,
        max_epochs=epochs,
        train_split=ValidSplit(validation_folds(n_train), stratified=True),
        verbose=0,
    )


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=None, help="subsample the training set")
    parser.add_argument("--quick", action="store_true", help="3 rounds, 1 epoch, 6k images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="lottery_mnist")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    args.results, args.n_test = RESULTS, None
    if args.quick:
        args.rounds, args.epochs, args.n_train = 3, 1, 6000
    if args.smoke:  # one round of one epoch on 600 images, tested on 500
        args.rounds, args.epochs, args.n_train, args.n_test = 1, 1, 600, 500
        args.results = smoke_folder("lottery_mnist")
    return args


def table_rows(history) -> list[str]:
    rows = []
    dense = history["test_accuracy_at_best"].iloc[0]
    for _, row in history.iterrows():
        k = int(row["round"])
        rows.append(
            "| {k} | {exp:.4f} | {got:.4f} | {n} | {d:+.2f} | {acc:.4f} | {ratio:.3f} | {re} | "
            "{ep} |".format(
                k=k,
                exp=100 * expected_fraction(k),
                got=100 * row["weights_remaining"],
                n=int(row["n_remaining"]),
                d=row["n_remaining"] - 266200 * expected_fraction(k),
                acc=row["test_accuracy_at_best"],
                ratio=row["test_accuracy_at_best"] / dense,
                re="-" if k == 0 else f"{row['reinit_test_accuracy_at_best']:.4f}",
                ep=int(row["best_epoch"]),
            )
        )
    return rows


def report(args, argv, n_train, seconds, rows, png) -> str:
    command = "PYTHONPATH=. python benchmarks/lottery_mnist.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    n_valid = n_train // validation_folds(n_train)
    iterations = args.epochs * -(-(n_train - n_valid) // 60)
    return (
        f"""# Lottery tickets: LeNet-300-100 on MNIST

Command: `{command.strip()}`
Machine: {platform.machine()} CPU, 2 shared cores (torch.set_num_threads(1)), no GPU;
torch {torch.__version__}. Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.
Wall time: {seconds / 60:.1f} min for {args.rounds} rounds of ticket + re-init control.

Recipe (paper): LeNet-300-100, Adam 1.2e-3, batch 60, prune 20 % per round per layer and 10 %
of the output layer, rewind to the initial weights; control: the same masks, randomly
re-initialised. Budget here: {n_train - n_valid} training and {n_valid} validation images,
**{args.epochs} epoch(s) per round** ({iterations} iterations)
instead of the paper's 50,000 iterations, {args.rounds} rounds (the paper prunes further).
Accuracy: test accuracy (10,000 images) at the epoch of the lowest validation loss; the ratio
is against the dense network (round 0) of the same run.

"""
        + "\n".join([HEADER, "|" + " --- |" * 9, *rows])
        + f"""

"left - formula" is the measured count minus 266200 x formula: under 1.5 weights in all,
because each round removes round(0.2 x remaining) whole weights per layer.

![accuracy vs weights remaining]({png.name})
"""
    )


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(1)  # 2 shared cores: one thread per process is the fastest here
    X, y, X_test, y_test = load_mnist(args.n_train)
    X_test, y_test = X_test[: args.n_test], y_test[: args.n_test]
    ticket = PrunedClassifier(
        lenet_net(args.epochs, len(X)),
        prune_rate=0.2,
        output_rate=0.1,
        n_rounds=args.rounds,
        rewind="init",
        reinit_control=True,
        random_state=args.seed,
        verbose=1,
    )
    start = time.perf_counter()
    ticket.fit(X, y, eval_set=(X_test, y_test))
    seconds = time.perf_counter() - start
    history = ticket.history_
    fig = plot_lottery(history, label="winning ticket (rewind to init)")
    fig.axes[0].set_title(
        f"LeNet-300-100, MNIST: {args.epochs} epoch(s) per round, seed {args.seed}"
    )
    png = args.results / f"{args.out}.png"
    args.results.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120, bbox_inches="tight")
    history.to_csv(args.results / f"{args.out}.csv", index=False)
    text = report(args, argv, len(X), seconds, table_rows(history), png)
    (args.results / f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
