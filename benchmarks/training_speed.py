"""Training speed: one epoch of FineTuneClassifier against a hand-written torch loop.

Both train the same network (the estimator's own MobileNetV2 with a new head, top 3 blocks
trainable, copied before training so both start from identical weights), on the same images
(hymenoptera training JPEGs, decoded and preprocessed with the same torchvision preset), with
the same batch size, optimizer and parameter groups, frozen BatchNorm layers in eval mode in
both, and one background decoder each (a DataLoader worker process for the loop, one decoding
thread for the estimator). Runs alternate (loop, estimator, loop, estimator, ...) so that the
machine's load affects both alike; medians are reported.

    PYTHONPATH=. python benchmarks/training_speed.py [--n-images 96] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import time

import torch
from PIL import Image
from torch import nn

from benchmarks._common import RESULTS, add_smoke_flag, require_data, smoke_folder
from sktransfer import FineTuneClassifier, load_image_folder
from sktransfer.training import frozen_submodules

PARAMS = dict(train_layers=3, optimizer="adamw", lr=1e-3, backbone_lr_scale=0.1)


class FolderDataset(torch.utils.data.Dataset):
    """What a tutorial writes: open the JPEG, apply the preset, return (tensor, label)."""

    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as image:
            tensor = self.transform(image.convert("RGB"))
        return tensor, self.labels[i]


def hand_written_epoch(module, optimizer, loader, channels_last):
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    module.train()
    for frozen in frozen_submodules(module):
        frozen.eval()
    for images, labels in loader:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad()
        loss = criterion(module(images), labels)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on the shared, oversubscribed 2-core machine, more threads "
        "spin-wait and run slower)",
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    args.results = RESULTS
    if args.smoke:  # 8 images in batches of 4, once
        args.n_images, args.batch_size, args.repeats = 8, 4, 1
        args.results = smoke_folder("training_speed")
    return args


def loop_epochs(module0, groups0, dataset, args, repeat, loop, loop_plain):
    """One hand-written epoch with channels_last and one with the default memory format."""
    for channels_last, times in ((True, loop), (False, loop_plain)):
        module = copy.deepcopy(module0)
        if not channels_last:
            module = module.to(memory_format=torch.contiguous_format)
        optimizer = torch.optim.AdamW(groups0(module), lr=PARAMS["lr"])
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=1,
            generator=torch.Generator().manual_seed(repeat),
        )
        times.append(hand_written_epoch(module, optimizer, loader, channels_last))


def measure(args, paths, labels):
    """Alternating runs: the loop's epochs (two memory formats), the estimator's epoch and fit
    (seconds each); and the network both start from."""
    classes = sorted(set(labels))
    targets = torch.tensor([classes.index(label) for label in labels])

    def estimator():
        return FineTuneClassifier(
            max_epochs=1, batch_size=args.batch_size, n_jobs=1, random_state=0, **PARAMS
        )

    # The network the estimator builds, before any training: the loop trains a copy of it.
    reference = estimator()
    reference._prepare_fit(paths, labels)
    module0 = copy.deepcopy(reference.net_.module_).cpu()
    dataset = FolderDataset(paths, targets, reference.preprocessing_.transform)
    times = {"loop": [], "loop_plain": [], "estimator_epoch": [], "estimator_fit": []}
    for repeat in range(args.repeats):
        loop_epochs(
            module0,
            reference._param_groups,
            dataset,
            args,
            repeat,
            times["loop"],
            times["loop_plain"],
        )  # the same per-group learning rates as the estimator
        start = time.perf_counter()
        clf = estimator().fit(paths, labels)
        times["estimator_fit"].append(time.perf_counter() - start)
        times["estimator_epoch"].append(float(clf.history_[-1, "dur"]))
        print(
            f"repeat {repeat}: loop {times['loop'][-1]:.1f}s (contiguous "
            f"{times['loop_plain'][-1]:.1f}s), estimator epoch "
            f"{times['estimator_epoch'][-1]:.1f}s, fit {times['estimator_fit'][-1]:.1f}s",
            flush=True,
        )
    return times, module0


def markdown(args, argv, times, n_trainable, n_images) -> str:
    median = statistics.median
    loop, loop_plain = times["loop"], times["loop_plain"]
    estimator_epoch, estimator_fit = times["estimator_epoch"], times["estimator_fit"]
    command = "PYTHONPATH=. python benchmarks/training_speed.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    lines = [
        "# Training speed: FineTuneClassifier vs a hand-written torch loop",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs; "
        f"load average at the end {os.getloadavg()[0]:.1f}), no GPU, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Same network (MobileNetV2, new linear head, top 3 blocks trainable: {n_trainable:,} "
        f"trainable parameters), same {n_images} hymenoptera JPEGs, batch size "
        f"{args.batch_size}, AdamW with the same parameter groups, frozen BatchNorm in eval "
        f"mode in both, one background decoder each. Medians of {args.repeats} alternating "
        "runs.",
        "",
        "| run | median seconds | ratio to the hand-written loop |",
        "| --- | --- | --- |",
        f"| hand-written loop (channels_last, as the estimator on CPU) | {median(loop):.2f} | "
        "1.00 |",
        f"| hand-written loop (default memory format) | {median(loop_plain):.2f} | "
        f"{median(loop_plain) / median(loop):.2f} |",
        f"| FineTuneClassifier, one epoch (history `dur`) | {median(estimator_epoch):.2f} | "
        f"**{median(estimator_epoch) / median(loop):.2f}** |",
        f"| FineTuneClassifier, whole `fit` (load weights, build, 1 epoch) | "
        f"{median(estimator_fit):.2f} | {median(estimator_fit) / median(loop):.2f} |",
        "",
        "All runs: "
        + "; ".join(
            f"{name} " + ", ".join(f"{t:.1f}" for t in times[key])
            for name, key in (
                ("loop", "loop"),
                ("loop (default format)", "loop_plain"),
                ("estimator epoch", "estimator_epoch"),
                ("estimator fit", "estimator_fit"),
            )
        )
        + " seconds.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    paths, labels = load_image_folder(require_data("hymenoptera") / "train")
    step = max(1, len(paths) // args.n_images)
    paths, labels = paths[::step][: args.n_images], labels[::step][: args.n_images]
    times, module0 = measure(args, paths, labels)
    n_trainable = sum(p.numel() for p in module0.parameters() if p.requires_grad)
    text = markdown(args, argv, times, n_trainable, len(paths))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "training_speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
