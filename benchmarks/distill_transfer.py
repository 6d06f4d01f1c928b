"""A transfer-learning teacher distilled into a student over 10x cheaper (hymenoptera).

Teacher: ImageNet MobileNetV2 penultimate features + logistic regression (the DeCAF recipe,
``make_pipeline(DeepFeatureExtractor("mobilenet_v2"), LogisticRegression())``), fitted on the
244 training images of ants and bees. Student: ``"cnn-small"`` (4 conv blocks, 16-128
channels) on 80x80 images, trained from scratch. The transfer set is the training images
plus ``--copies`` random crops/flips of each, precomputed once (the teacher answers once per
fit, so augmentation lives in the transfer set, not in the training loop).

Rows, FitNets-style (Romero et al. 2015, table 5): parameters, multiply-adds, CPU images/s
and validation accuracy (153 images) for

* the teacher,
* the student alone (cross-entropy on the same images, the copies labelled like their source),
* the student distilled: response (Hinton KD, T=4, alpha=0.9; the copies labelled by the
  teacher only), hints (FitNets: a first stage where the student's ``features.1`` regresses
  the teacher's ``features.6`` through a 1x1 convolution, then KD), relation (RKD distance +
  angle on the embeddings, added to KD).

With ``--unlabelled N`` (default 2000), one more response-distilled student also gets N
random Caltech-101 images (one random crop each, any class, labels unused) in its transfer
set: Hinton's transfer set may be unlabelled, and unlabelled images are what a user with
little labelled data usually has. The student alone cannot use them.

For hints and relations the teacher must expose its layers, so the same teacher is also
given as a torch network: MobileNetV2 whose classifier is a linear layer holding the fitted
logistic regression's coefficients (its predictions equal the pipeline's; checked below).

Usage::

    PYTHONPATH=. python benchmarks/distill_transfer.py [--epochs 15] [--copies 3]
    PYTHONPATH=. python benchmarks/distill_transfer.py --unlabelled 0 --threads 1
    PYTHONPATH=. python benchmarks/distill_transfer.py --smoke   # seconds, a temporary folder
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from skorch.callbacks import LRScheduler
from torch import nn
from torchvision.transforms import v2

from benchmarks._common import add_smoke_flag, require_data, smoke_folder
from sktransfer import DeepFeatureExtractor, DistilledClassifier, load_image_folder
from sktransfer.backbones import _graph_nodes, load_backbone
from sktransfer.distillation.students import count_parameters, multiply_adds
from sktransfer.frozen import FrozenNetwork, pooled_features
from sktransfer.images import check_images

IMAGE_SIZE = 80


def load_hymenoptera():
    root = require_data("hymenoptera")
    x_train, y_train = load_image_folder(root / "train")
    x_val, y_val = load_image_folder(root / "val")
    return x_train, y_train, x_val, y_val


def augmented_copies(paths, labels, copies, seed=0):
    """``copies`` random resized crops (scale 0.35-1) and flips of each image, 224x224 uint8."""
    torch.manual_seed(seed)
    augment = v2.Compose(
        [v2.RandomResizedCrop(224, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    )
    images, targets = [], []
    for path, label in zip(paths, labels):
        with Image.open(path) as image:
            tensor = v2.functional.pil_to_tensor(image.convert("RGB"))
        for _ in range(copies):
            images.append(augment(tensor).permute(1, 2, 0).numpy())
            targets.append(label)
    return np.stack(images), np.array(targets)


def unlabelled_images(n, seed=0):
    """``n`` random Caltech-101 images (labels dropped), one random crop/flip each."""
    if n == 0:
        return np.zeros((0, 224, 224, 3), np.uint8)
    paths, _ = load_image_folder(require_data("caltech101"))  # or pass --unlabelled 0
    chosen = np.random.default_rng(seed).choice(len(paths), size=n, replace=False)
    images, _ = augmented_copies(paths[np.sort(chosen)], np.zeros(n), 1, seed=seed + 1)
    return images


def torch_teacher(pipeline):
    """MobileNetV2 with the fitted logistic regression as its classifier (2 logits)."""
    backbone = copy.copy(load_backbone("mobilenet_v2"))
    module = copy.deepcopy(backbone.module)
    regression = pipeline[-1]
    head = nn.Linear(regression.coef_.shape[1], 2)
    with torch.no_grad():  # binary logistic regression: logits [0, w.x + b]
        head.weight.zero_()
        head.bias.zero_()
        head.weight[1] = torch.from_numpy(regression.coef_[0]).float()
        head.bias[1] = float(regression.intercept_[0])
    module.classifier[1] = head
    backbone.module = module.eval()
    return backbone


def images_per_second(module, size, batch=32, repeats=3):
    """Forward passes of a batch of preprocessed images, one thread, best of ``repeats``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _images_per_second(module, size, batch, repeats)
    finally:
        torch.set_num_threads(threads)


def _images_per_second(module, size, batch, repeats):
    module = module.eval()
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    module = copy.deepcopy(module).to(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode():
        module(x)
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            best = min(best, time.perf_counter() - start)
    return batch / best


def student(teacher, epochs, threads=1, **params):
    total = epochs + params.get("hint_epochs", 0)  # FitNets' first stage comes on top
    schedule = LRScheduler(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=total)
    return DistilledClassifier(
        teacher,
        student="cnn-small",
        image_size=IMAGE_SIZE,
        max_epochs=epochs,
        batch_size=32,
        lr=3e-3,
        optimizer="adam",
        device="cpu",
        n_jobs=threads,
        callbacks=[("cosine", schedule)],
        random_state=0,
        **params,
    )


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--unlabelled", type=int, default=2000, help="Caltech-101 images")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:  # about 12 training and 8 validation images, one epoch, one copy
        args.out, args.epochs = str(smoke_folder("distill_transfer")), 1
        args.copies, args.unlabelled = 1, min(args.unlabelled, 4)
    return args


def fit_teacher(x_train, y_train, threads):
    """The DeCAF teacher (MobileNetV2 features + logistic regression) and its fit seconds."""
    start = time.perf_counter()
    pipeline = make_pipeline(
        DeepFeatureExtractor("mobilenet_v2", n_jobs=threads),
        LogisticRegression(max_iter=2000),
    ).fit(x_train, y_train)
    return pipeline, time.perf_counter() - start


def student_runs(args, pipeline, network, x_train, y_train, x_aug, y_aug, x_extra):
    """Row name -> (the student, its fit's positional and keyword arguments)."""
    t, distilled = args.threads, (list(x_train), y_train)
    kd = dict(temperature=4.0, alpha=0.9)
    runs = {
        "student alone": (
            student(None, args.epochs, t),
            ([*x_train, *x_aug], np.concatenate([y_train, y_aug])),
            {},
        ),
        "student distilled: response (KD)": (
            student(FrozenEstimator(pipeline), args.epochs, t, **kd),
            distilled,
            {"X_unlabeled": x_aug},
        ),
        "student distilled: hints (FitNets stage, then KD)": (
            student(
                network,
                args.epochs,
                t,
                **kd,
                hint_layers=("features.6", "features.1"),
                hint_epochs=max(1, args.epochs // 3),
            ),
            distilled,
            {"X_unlabeled": x_aug},
        ),
        "student distilled: relation (RKD + KD)": (
            student(network, args.epochs, t, **kd, relation_weight=1.0),
            distilled,
            {"X_unlabeled": x_aug},
        ),
    }
    if len(x_extra):
        runs[f"student distilled: response (KD), + {len(x_extra)} unlabelled images"] = (
            student(FrozenEstimator(pipeline), args.epochs, t, **kd),
            distilled,
            {"X_unlabeled": np.concatenate([x_aug, x_extra])},
        )
    return runs


def fit_students(runs, x_val, y_val, seconds, accuracy):
    """Fit every run, recording its seconds and validation accuracy; the fitted students."""
    models = {}
    for name, (estimator, fit_args, fit_kwargs) in runs.items():
        start = time.perf_counter()
        estimator.fit(*fit_args, **fit_kwargs)
        seconds[name] = time.perf_counter() - start
        accuracy[name] = estimator.score(x_val, y_val)
        models[name] = estimator
        print(name, accuracy[name], f"{seconds[name]:.0f}s", flush=True)
    return models


def cost(module, size) -> dict:
    """Parameters, multiply-adds of one image and CPU images/s of ``module``."""
    return {
        "params": count_parameters(module),
        "macs": multiply_adds(module, torch.zeros(1, 3, size, size)),
        "ips": images_per_second(module, size),
    }


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    x_train, y_train, x_val, y_val = load_hymenoptera()
    if args.smoke:
        train, val = slice(None, None, len(x_train) // 12), slice(None, None, len(x_val) // 8)
        x_train, y_train, x_val, y_val = x_train[train], y_train[train], x_val[val], y_val[val]
    x_aug, y_aug = augmented_copies(x_train, y_train, args.copies)
    x_extra = unlabelled_images(args.unlabelled)
    seconds, accuracy = {}, {}
    pipeline, seconds["teacher"] = fit_teacher(x_train, y_train, args.threads)
    accuracy["teacher"] = pipeline.score(x_val, y_val)
    network = torch_teacher(pipeline)
    print("teacher", accuracy["teacher"], flush=True)
    runs = student_runs(args, pipeline, network, x_train, y_train, x_aug, y_aug, x_extra)
    models = fit_students(runs, x_val, y_val, seconds, accuracy)
    queries = [m.teacher_queries_ for name, m in models.items() if name != "student alone"]
    teacher_cost = cost(network.module, 224)
    student_cost = cost(models["student alone"].student_module_, IMAGE_SIZE)
    check = check_torch_teacher(pipeline, network, x_val)
    n_transfer = len(x_train) + len(x_aug)
    write(args, accuracy, seconds, teacher_cost, student_cost, check, queries, n_transfer)


def check_torch_teacher(pipeline, backbone, x_val):
    """Fraction of validation images on which the torch teacher predicts as the pipeline."""
    node = _graph_nodes(backbone.module)[-1]
    logits = pooled_features(
        FrozenNetwork(backbone, [node], torch.device("cpu")),
        check_images(list(x_val)),
        pooling=None,
        batch_size=16,
    )[node]
    predicted = pipeline.classes_[logits.argmax(1)]
    return float(np.mean(predicted == pipeline.predict(x_val)))


def write(args, accuracy, seconds, teacher_cost, student_cost, check, queries, n_transfer):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Distilling a transfer teacher into a 10x cheaper student (hymenoptera)",
        "",
        f"Command: `PYTHONPATH=. python benchmarks/distill_transfer.py --epochs {args.epochs} "
        f"--copies {args.copies} --unlabelled {args.unlabelled} --threads {args.threads}`  ",
        f"Machine: {platform.machine()} CPU, 2 cores (torch on {args.threads} thread(s), load "
        f"average {os.getloadavg()[0]:.1f} at the end), no GPU; "
        f"torch {torch.__version__}.  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "Teacher: ImageNet MobileNetV2 (224x224) penultimate features + LogisticRegression, "
        "fitted on the 244 training images. Students: `cnn-small` (conv 3x3-BN-ReLU-maxpool "
        f"x4, 16/32/64/128 channels) on {IMAGE_SIZE}x{IMAGE_SIZE} images, from scratch, "
        f"{args.epochs} epochs, Adam 3e-3 with cosine decay, batch 32, seed 0, one run each. "
        f"Transfer set: the 244 training images + {args.copies} random crops/flips of each "
        f"({n_transfer} images); the student alone gets the copies with their source's "
        "label, the distilled students get them labelled by the teacher only (`X_unlabeled`); "
        f"the last row adds {args.unlabelled} random Caltech-101 images (one random crop "
        "each, labels unused) to its transfer set. "
        "Accuracy on the 153 validation images. Images/s: forward passes of a batch of 32 "
        "preprocessed images, one CPU thread, channels_last, best of 3.",
        "",
        "| model | parameters | multiply-adds | CPU images/s | val accuracy | fit time |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    speed_up = student_cost["ips"] / teacher_cost["ips"]
    for name, value in accuracy.items():
        cost = teacher_cost if name == "teacher" else student_cost
        lines.append(
            f"| {name} | {cost['params'] / 1e6:.3f} M | {cost['macs'] / 1e6:.1f} M | "
            f"{cost['ips']:.0f} | {value:.3f} | {seconds[name]:.0f} s |"
        )
    lines += [
        "",
        f"Student vs teacher: {teacher_cost['params'] / student_cost['params']:.0f}x fewer "
        f"parameters, {teacher_cost['macs'] / student_cost['macs']:.1f}x fewer multiply-adds, "
        f"{speed_up:.1f}x the images/s (measured in the same run).",
        "",
        f"The torch view of the teacher (used for hints and relations) predicts as the "
        f"pipeline on {check:.1%} of the validation images. Teacher passes over the transfer "
        f"set per distillation fit (`teacher_queries_`): {queries}.",
        "",
        "Fit times include the teacher's single pass over the transfer set (MobileNetV2 at "
        "224x224) for the distilled students; the teacher's own row is the "
        "feature extraction and logistic regression fit.",
        "",
    ]
    path = out / "distill_transfer.md"
    path.write_text("\n".join(lines))
    print(path.read_text())


if __name__ == "__main__":
    main()
