"""Hinton, Vinyals & Dean (2015), section 3, on MNIST, following the paper's recipe further.

``distill_mnist.py`` trained for 30-50 epochs with Adam and no max-norm constraint (teacher 74
/ alone 146 / distilled 92 test errors, against the paper's 67 / 146 / 74). This script follows
the recipe of the dropout papers that the teacher comes from (Hinton et al. 2012, Srivastava et
al. 2014) further:

* teacher 784-1200-1200-10 ReLU, dropout 0.2 on the inputs and 0.5 on the hidden units (the
  paper's values), inputs jittered by up to 2 pixels, a max-norm constraint on every unit's
  incoming weights (:class:`sktransfer.constraints.MaxNorm`), SGD with momentum 0.9 and a
  cosine schedule, for many more epochs;
* student 784-800-800-10 alone, no regularisation, the same optimiser;
* the same student distilled at T=20 (transfer set = the training set, teacher queried once),
  soft targets weighted ``--alpha`` (the paper: "a considerably lower weight on the second
  [hard-target] objective").

Every epoch the test errors of the model being trained are recorded (a callback reading the
test set through the network in eval mode; nothing is tuned on them), so the results file
shows the curve of errors against epochs, not only the last point.

The teacher and the distilled student train one after the other; the student alone does not
need the teacher, so ``--part alone`` and ``--part teacher-distilled`` can run side by side (two
processes); ``--render`` then writes the Markdown and the plot from their JSON files.

Usage::

    PYTHONPATH=. python benchmarks/distill_mnist_recipe.py --device cuda --part alone &
    PYTHONPATH=. python benchmarks/distill_mnist_recipe.py --device cuda --part teacher-distilled
    wait; PYTHONPATH=. python benchmarks/distill_mnist_recipe.py --render
    PYTHONPATH=. python benchmarks/distill_mnist_recipe.py --smoke   # seconds, on 1,000 images
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.frozen import FrozenEstimator
from skorch.callbacks import Callback, LRScheduler
from torch import nn

from benchmarks._common import RESULTS, add_smoke_flag, machine, smoke_folder
from benchmarks.distill_mnist import Jitter, load_mnist
from sktransfer import DistilledClassifier
from sktransfer.constraints import MaxNorm
from sktransfer.distillation.students import MLP

PAPER = {"teacher": 67, "student alone": 146, "student distilled (T=20)": 74}
PARTS = {"alone": ["student alone"], "teacher-distilled": ["teacher", "student distilled (T=20)"]}


class TestErrors(Callback):
    """Record the test errors after every epoch (network in eval mode, never used to tune)."""

    def __init__(self, X, y, batch_size=2000):
        self.X, self.y, self.batch_size = X, y, batch_size

    def on_epoch_end(self, net, **kwargs):
        module = net.module_
        was_training = module.training
        module.eval()
        with torch.no_grad():
            X = torch.as_tensor(self.X)
            logits = [
                module(X[i : i + self.batch_size].to(net.device)).float().cpu()
                for i in range(0, len(X), self.batch_size)
            ]
        module.train(was_training)
        predicted = torch.cat(logits).argmax(1).numpy()
        net.history.record("test_errors", int(np.sum(predicted != self.y)))


def estimator(teacher, student, epochs, args, x_test, y_test, extra_callbacks=(), **params):
    params.setdefault("lr", args.lr)
    callbacks = [
        ("cosine", LRScheduler(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs)),
        ("test_errors", TestErrors(x_test, y_test)),
        *extra_callbacks,
    ]
    return DistilledClassifier(
        teacher,
        student=student,
        max_epochs=epochs,
        batch_size=args.batch_size,
        optimizer="sgd",
        device=args.device,
        mixed_precision=False,  # fp32 as in the paper (and the curve's eval pass is fp32)
        callbacks=callbacks,
        random_state=args.seed,
        verbose=0,
        **params,
    )


def fit_and_record(name, model, X, y, x_test, y_test):
    start = time.perf_counter()
    model.fit(X, y)
    seconds = time.perf_counter() - start
    curve = [int(e["test_errors"]) for e in model.history_]
    errors = int(np.sum(model.predict(x_test) != y_test))
    assert errors == curve[-1], (name, errors, curve[-1])  # the curve reads what predict says
    print(f"{name}: {errors} test errors, {seconds:.0f} s; curve {curve}", flush=True)
    return {"errors": errors, "seconds": seconds, "curve": curve, "epochs": len(curve)}


def teacher_network(args):
    mlp = MLP((1200, 1200), 10, dropout=0.5, input_dropout=0.2, in_features=784)
    return nn.Sequential(Jitter(2), mlp)


def run_teacher_and_distilled(args, data):
    x_train, y_train, x_test, y_test = data
    max_norm = [("max_norm", MaxNorm(args.max_norm))]
    teacher = estimator(
        None, teacher_network(args), args.teacher_epochs, args, x_test, y_test, max_norm
    )
    rows = {"teacher": fit_and_record("teacher", teacher, x_train, y_train, x_test, y_test)}
    save(args, "teacher-distilled", rows)  # a run cut short still keeps the teacher's curve
    distilled = estimator(
        FrozenEstimator(teacher),
        "mlp-800-800",
        args.distill_epochs,
        args,
        x_test,
        y_test,
        temperature=20.0,
        alpha=args.alpha,
        lr=args.distill_lr or args.lr,
    )
    name = "student distilled (T=20)"
    rows[name] = fit_and_record(name, distilled, x_train, y_train, x_test, y_test)
    return rows


def run_alone(args, data):
    x_train, y_train, x_test, y_test = data
    alone = estimator(None, "mlp-800-800", args.alone_epochs, args, x_test, y_test)
    return {
        "student alone": fit_and_record("student alone", alone, x_train, y_train, x_test, y_test)
    }


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", *PARTS], default="all")
    parser.add_argument("--teacher-epochs", type=int, default=150)
    parser.add_argument("--alone-epochs", type=int, default=60)
    parser.add_argument("--distill-epochs", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--distill-lr", type=float, help="the distilled student's lr (--lr)")
    parser.add_argument("--max-norm", type=float, default=3.5)
    parser.add_argument("--alpha", type=float, default=0.9, help="weight of the soft targets")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        help="choose the epochs from a timed first epoch so that this part ends in about this "
        "long (the teacher and the distilled student share it; the student alone has it all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--render", action="store_true", help="write the Markdown and plot")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.teacher_epochs = args.alone_epochs = args.distill_epochs = 2
        args.out = str(smoke_folder("distill_mnist_recipe"))
    return args


def main(argv=None):
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.render:
        data = load_mnist()
        if args.smoke:
            data = (data[0][:1000], data[1][:1000], data[2][:500], data[3][:500])
        parts = list(PARTS) if args.part == "all" else [args.part]
        if args.budget_minutes:
            fit_epochs_to_budget(args, data, parts)
        for part in parts:
            rows = (
                run_alone(args, data) if part == "alone" else run_teacher_and_distilled(args, data)
            )
            save(args, part, rows)
    if args.render or args.part == "all":
        render(out)


def save(args, part: str, rows: dict) -> None:
    record = {
        "rows": rows,
        "machine": machine(),
        "args": vars(args),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (Path(args.out) / f"distill_mnist_recipe_{part}.json").write_text(json.dumps(record, indent=1))


def seconds_per_epoch(student, args, data) -> float:
    """One timed epoch of ``student`` (after one untimed epoch that pays the warm-up)."""
    x_train, y_train, x_test, y_test = data
    probe = estimator(None, student, 2, args, x_test, y_test)
    probe.fit(x_train, y_train)
    return float(probe.history_[-1]["dur"])


def fit_epochs_to_budget(args, data, parts) -> None:
    budget = args.budget_minutes * 60
    if "teacher-distilled" in parts:
        per_epoch = seconds_per_epoch(teacher_network(args), args, data)
        args.teacher_epochs = args.distill_epochs = max(10, int(0.45 * budget / per_epoch))
        print(f"teacher: {per_epoch:.2f} s/epoch -> {args.teacher_epochs} epochs", flush=True)
    if "alone" in parts:
        per_epoch = seconds_per_epoch("mlp-800-800", args, data)
        share = 0.9 if parts == ["alone"] else 0.1
        args.alone_epochs = max(10, int(share * budget / per_epoch))
        print(f"alone: {per_epoch:.2f} s/epoch -> {args.alone_epochs} epochs", flush=True)


def load_parts(out: Path) -> tuple[dict, dict]:
    found, meta = {}, {}
    for part in PARTS:
        record = json.loads((out / f"distill_mnist_recipe_{part}.json").read_text())
        found.update(record["rows"])
        meta[part] = record
    return {name: found[name] for name in PAPER}, meta


def render(out: Path) -> None:
    rows, meta = load_parts(out)
    plot(rows, out / "distill_mnist_recipe.png")
    (out / "distill_mnist_recipe.md").write_text(markdown(rows, meta))
    print((out / "distill_mnist_recipe.md").read_text())


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 4.2))
    for (name, row), colour in zip(rows.items(), ("C0", "C1", "C2")):
        ax.plot(range(1, row["epochs"] + 1), row["curve"], color=colour, label=name)
        ax.axhline(PAPER[name], color=colour, linestyle=":", linewidth=1)
    ax.set(
        xlabel="epoch",
        ylabel="test errors (of 10,000)",
        yscale="log",
        title="MNIST, Hinton et al. 2015 (dotted: the paper's numbers)",
    )
    ax.set_ylim(50, 400)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def markdown(rows: dict, meta: dict) -> str:
    args = meta["teacher-distilled"]["args"]
    alone_args = meta["alone"]["args"]
    lines = [
        "# Distillation on MNIST, the paper's recipe followed further (Hinton et al. 2015)",
        "",
        "- Commands: `PYTHONPATH=. python benchmarks/distill_mnist_recipe.py --device "
        f"{args['device']} --part teacher-distilled --teacher-epochs {args['teacher_epochs']} "
        f"--distill-epochs {args['distill_epochs']}` and, side by side, `... --part alone "
        f"--alone-epochs {alone_args['alone_epochs']}`, then `... --render`",
        f"- Machine: {meta['teacher-distilled']['machine']}",
        f"- Date: {meta['teacher-distilled']['date']}",
        "",
        f"Teacher: 784-1200-1200-10 ReLU, dropout 0.2 (input) / 0.5 (hidden), inputs jittered "
        f"by up to 2 pixels, max-norm {args['max_norm']} on every unit's incoming weights. "
        f"Students: 784-800-800-10 ReLU, no regularisation; the distilled one at T=20 with the "
        f"soft targets weighted {args['alpha']} (loss {1 - args['alpha']:.1f}·CE + "
        f"{args['alpha']}·T²·KL), transfer set = the 60,000 training images. All: SGD momentum "
        f"0.9, lr {args['lr']}, cosine decay to 0, batch {args['batch_size']}, seed "
        f"{args['seed']}, one run each. The test set is read after every epoch for the curve "
        "only; nothing is chosen on it (the last epoch is the result).",
        "",
        "| model | epochs | test errors (of 10,000) | best epoch's errors | paper | train time |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['epochs']} | **{row['errors']}** | {min(row['curve'])} | "
            f"{PAPER[name]} | {row['seconds']:.0f} s |"
        )
    teacher, alone = rows["teacher"]["errors"], rows["student alone"]["errors"]
    distilled = rows["student distilled (T=20)"]["errors"]
    recovered = (alone - distilled) / (alone - teacher) if alone > teacher else float("nan")
    lines += [
        "",
        f"Distillation recovers **{recovered:.0%}** of the gap between the student alone and "
        f"the teacher (the paper: {(146 - 74) / (146 - 67):.0%}).",
        "",
        "![test errors against epochs](distill_mnist_recipe.png)",
        "",
        "Test errors after each epoch:",
        "",
    ]
    for name, row in rows.items():
        lines.append(f"- {name}: " + ", ".join(map(str, row["curve"])))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
