"""Born-again networks and label refinery on an MNIST subset, in the lecture's table shape.

For each seed: a teacher (a small CNN trained on the labels), then two chains of three
generations in the teacher's architecture, each generation taught by the one before:

* BAN-1..3 (Furlanello et al., 2018): the previous generation's soft labels only
  (:class:`~sktransfer.BornAgainEnsemble`, ``label_weight=0``), and the BAN ensemble, the mean
  of BAN-1..3 (the teacher is not a member, as in the paper);
* refinery-1..3: the same chain with the ground truth mixed in (``label_weight=0.5``,
  Furlanello's BAN+L; :class:`~sktransfer.LabelRefinery`), and its ensemble.

Reports test error and accuracy (mean ± std over seeds, and each row's paired difference from
its seed's teacher) on the 10,000 MNIST test images, plus, as a control that costs nothing
more, the ensemble of the seeds' teachers (independently trained networks). The teacher is
trained once per seed and frozen, so both chains start from the same model.

Usage::

    PYTHONPATH=. python benchmarks/born_again.py [--seeds 3] [--n-train 2000] [--epochs 30]
    PYTHONPATH=. python benchmarks/born_again.py --smoke    # seconds, writes to a temp folder
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.frozen import FrozenEstimator
from skorch.callbacks import LRScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, header, markdown_table, require_data  # noqa: E402
from sktransfer import BornAgainEnsemble, DistilledClassifier, LabelRefinery  # noqa: E402

#: The lecture's Table 2 (Furlanello et al.), DenseNet-112-33 on CIFAR-100, test error %.
PAPER = {"teacher": 18.25, "BAN-1": 17.61, "BAN-2": 17.22, "BAN-3": 16.59, "ensemble": 15.68}


def load_mnist(n_train: int, n_test: int | None):
    with np.load(require_data("mnist.npz")) as d:
        x_test, y_test = d["x_test"], d["y_test"].astype(np.int64)
        if n_test is not None:
            x_test, y_test = x_test[:n_test], y_test[:n_test]
        return d["x_train"][:n_train], d["y_train"][:n_train].astype(np.int64), x_test, y_test


def network(args, seed: int) -> DistilledClassifier:
    """The teacher's (and every generation's) architecture and training: a small CNN, Adam
    with a cosine schedule."""
    schedule = LRScheduler(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=args.epochs)
    return DistilledClassifier(
        None,
        student=args.student,
        max_epochs=args.epochs,
        lr=args.lr,
        batch_size=64,
        device=args.device,
        callbacks=[("cosine", schedule)],
        random_state=seed,
    )


def run_seed(args, seed, data) -> dict:
    """Test accuracy of every row of the table, and each model's test probabilities."""
    x_train, y_train, x_test, y_test = data
    start = time.perf_counter()
    teacher = network(args, seed).fit(x_train, y_train)
    seconds = {"teacher": time.perf_counter() - start}
    chains = {
        "BAN": BornAgainEnsemble(FrozenEstimator(teacher), generations=3, random_state=seed),
        "refinery": LabelRefinery(
            FrozenEstimator(teacher), generations=3, label_weight=0.5, random_state=seed
        ),
    }
    proba = {"teacher": teacher.predict_proba(x_test)}
    for name, chain in chains.items():
        start = time.perf_counter()
        chain.fit(x_train, y_train)
        seconds[name] = time.perf_counter() - start
        members = [g.predict_proba(x_test) for g in chain.generations_]
        for k, member in enumerate(members, 1):
            proba[f"{name}-{k}"] = member
        proba[f"{name} ensemble"] = np.mean(members, axis=0)
    accuracy = {row: float(np.mean(p.argmax(1) == y_test)) for row, p in proba.items()}
    print(f"seed {seed}:", {k: round(v, 4) for k, v in accuracy.items()}, flush=True)
    print(f"seed {seed} seconds:", {k: round(v) for k, v in seconds.items()}, flush=True)
    return {"accuracy": accuracy, "proba": proba, "seconds": seconds}


def summary_rows(runs, y_test) -> list[dict]:
    """Mean ± std over seeds of each row, and its paired difference from the teacher."""
    rows = []
    names = list(runs[0]["accuracy"])
    teacher = np.array([r["accuracy"]["teacher"] for r in runs])
    for name in names:
        acc = np.array([r["accuracy"][name] for r in runs])
        diff = 100 * (acc - teacher)
        rows.append(
            {
                "model": name,
                "test error % (mean ± std)": _error(acc),
                "accuracy (mean)": f"{acc.mean():.4f}",
                "vs teacher, points of accuracy": "" if name == "teacher" else _signed(diff),
                "better than its teacher": ""
                if name == "teacher"
                else f"{int((diff > 0).sum())} of {len(runs)}",
                "paper's error % (CIFAR-100)": PAPER.get(name.replace("BAN ", ""), ""),
            }
        )
    if len(runs) > 1:
        mean = np.mean([r["proba"]["teacher"] for r in runs], axis=0)
        acc = float(np.mean(mean.argmax(1) == y_test))
        rows.append(
            {
                "model": f"control: ensemble of the {len(runs)} seeds' teachers",
                "test error % (mean ± std)": f"{100 * (1 - acc):.2f}",
                "accuracy (mean)": f"{acc:.4f}",
            }
        )
    return rows


def _error(acc) -> str:
    return f"{100 * (1 - acc.mean()):.2f} ± {100 * acc.std():.2f}"


def _signed(diff) -> str:
    return f"{diff.mean():+.2f} ± {diff.std():.2f}"


def plot(runs, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    generations = np.arange(4)
    for chain, colour, shift in (("BAN", "tab:blue", -0.08), ("refinery", "tab:orange", 0.08)):
        rows = ["teacher"] + [f"{chain}-{k}" for k in (1, 2, 3)]
        acc = 100 * np.array([[r["accuracy"][row] for row in rows] for r in runs])
        ax.errorbar(generations, acc.mean(0), yerr=acc.std(0), marker="o", capsize=3,
                    color=colour, label=_label(chain))  # fmt: skip
        ens = 100 * np.array([r["accuracy"][f"{chain} ensemble"] for r in runs])
        ax.errorbar([4 + shift], [ens.mean()], yerr=[ens.std()], marker="*", markersize=12,
                    capsize=3, color=colour, linestyle="none",
                    label=f"{chain} ensemble (1-3)")  # fmt: skip
    ax.set_xticks(np.arange(5), ["teacher", "1", "2", "3", "ensemble\n(1-3)"])
    ax.set_xlabel("generation")
    ax.set_ylabel(f"test accuracy % (mean ± std, {len(runs)} seeds)")
    ax.set_title("Born-again generations, MNIST subset")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label(chain: str) -> str:
    return "BAN (soft labels only)" if chain == "BAN" else "refinery (soft + 0.5 labels)"


def write(args, runs, rows, seconds, command, out: Path):
    load = os.getloadavg()
    per_seed = [
        {"seed": args.seeds_list[i], **{k: f"{v:.4f}" for k, v in r["accuracy"].items()}}
        for i, r in enumerate(runs)
    ]
    text = header("Born-again networks and label refinery (MNIST subset)", command)
    text += (
        f"- Load average at the end (1, 5, 15 min): {load[0]:.1f}, {load[1]:.1f}, "
        f"{load[2]:.1f}; wall time {seconds / 60:.1f} min\n"
        f"- Data: the first {args.n_train} MNIST training images, {len(args.y_test)} test "
        f"images. Network (teacher and every generation): `{args.student}`, {args.epochs} "
        f"epochs, Adam lr {args.lr} with a cosine schedule, batch 64, device {args.device}; "
        f"seeds {args.seeds_list}.\n\n"
        "## Test error (lecture's table shape: teacher, BAN-1..3, ensemble)\n\n"
        + markdown_table(rows)
        + "\nThe ensembles average generations 1-3 (not the teacher), as BANE in the paper. "
        "The last column is the paper's DenseNet-112-33 on CIFAR-100 (Table 2), for the "
        "shape of the effect, not the numbers.\n\n## Accuracy per seed\n\n"
        + markdown_table(per_seed)
        + "\n![accuracy per generation](born_again.png)\n"
    )
    (out / "born_again.md").write_text(text)
    plot(runs, out / "born_again.png")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=None, help="default: all 10,000")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--student", default="cnn-16-32-64")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--out", default=None, help=f"default {RESULTS} (smoke: a temp folder)")
    parser.add_argument("--smoke", action="store_true", help="tiny run, seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.n_train, args.n_test, args.epochs = 1, 200, 300, 1
    args.seeds_list = list(range(args.seeds))
    out = args.out or (tempfile.mkdtemp(prefix="born_again_") if args.smoke else RESULTS)
    return args, Path(out)


def main(argv=None):
    args, out = parse(argv)
    torch.set_num_threads(args.threads)
    command = "PYTHONPATH=. python benchmarks/born_again.py " + " ".join(sys.argv[1:])
    started = time.perf_counter()
    data = load_mnist(args.n_train, args.n_test)
    args.y_test = data[3]
    runs = [run_seed(args, seed, data) for seed in args.seeds_list]
    rows = summary_rows(runs, data[3])
    out.mkdir(parents=True, exist_ok=True)
    write(args, runs, rows, time.perf_counter() - started, command.strip(), out)
    print(markdown_table(rows))
    print(f"written to {out / 'born_again.md'}")


if __name__ == "__main__":
    main()
