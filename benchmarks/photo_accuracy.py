"""Features and accuracy of reduced (DCT-domain) JPEG decoding against full decoding (#21).

Two sets upscaled to 4000x3000 (3000x4000 for portrait sources, bicubic, JPEG quality 90),
written once under ``--workdir`` (never into the repository):

* hymenoptera: its train (244) and val (153) splits;
* a Caltech-101 draw: ``--classes`` object classes drawn at random (seed 0), ``--per-class``
  training and as many test images drawn from each.

MobileNetV2 (ImageNet weights, ``engine="auto"``, ``cache=None``) penultimate features are
extracted from the same files with ``SKTRANSFER_JPEG_DRAFT=0`` (full decoding, today) and the
default (reduced), in one process. Reported: the cosine similarity of each image's two feature
vectors, and the test accuracy of a scaled logistic regression (fitted on each decoding's
training features; and fitted on full-decoding features but tested on reduced ones, as a
model fitted before this change would be used after it). Last, the original (small) Caltech
files give bit-identical features with both settings (no reduction applies below twice the
resize target), which keeps the committed DeCAF table valid.

    flock /tmp/sktransfer-bench.lock python benchmarks/photo_accuracy.py

``--smoke``: 4 hymenoptera images per split, 2 Caltech classes of 2 + 2 images, upscaled to
1024x768 only, all in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    RESULTS,
    add_smoke_flag,
    header,
    markdown_table,
    require_data,
    smoke_folder,
)
from benchmarks.photo_speed import (  # noqa: E402
    DEFAULT_WORKDIR,
    PHOTO_SIZE,
    SMOKE_PHOTO_SIZE,
    make_photos,
)


def hymenoptera(workdir: Path, threads: int, size=PHOTO_SIZE, limit=None):
    """Both splits as photos (``limit``: that many images per split, evenly spread)."""
    from sktransfer import load_image_folder

    root = require_data("hymenoptera")
    split = {}
    for part in ("train", "val"):
        paths, labels = load_image_folder(root / part)
        if limit is not None:
            index = np.linspace(0, len(paths) - 1, limit).round().astype(int)
            paths, labels = paths[index], labels[index]
        names = [f"{part}-{label}-{Path(p).stem}" for p, label in zip(paths, labels, strict=True)]
        photos = make_photos(paths, names, workdir / "hymenoptera-photos", threads, size)
        split[part] = (photos, labels)
    return split["train"], split["val"]


def caltech_draw(workdir: Path, n_classes: int, per_class: int, threads: int, size=PHOTO_SIZE):
    from sktransfer import load_image_folder

    paths, labels = load_image_folder(require_data("caltech101"))
    rng = np.random.default_rng(0)
    classes = sorted(set(labels) - {"BACKGROUND_Google"})
    drawn = rng.choice(classes, n_classes, replace=False)
    train, test = ([], []), ([], [])
    for cls in sorted(drawn):
        members = rng.permutation(paths[labels == cls])[: 2 * per_class]
        for i, path in enumerate(members):
            part = train if i < per_class else test
            part[0].append(path)
            part[1].append(cls)
    out = []
    for part in (train, test):
        names = [f"{c}-{Path(p).stem}" for p, c in zip(*part, strict=True)]
        photos = make_photos(part[0], names, workdir / "caltech-photos", threads, size)
        out.append((photos, np.array(part[1])))
    return out[0], out[1], [p for part in (train, test) for p in part[0]]


def features(model, paths, draft: bool) -> np.ndarray:
    os.environ["SKTRANSFER_JPEG_DRAFT"] = "1" if draft else "0"
    try:
        return model.transform(paths)
    finally:
        os.environ.pop("SKTRANSFER_JPEG_DRAFT", None)


def accuracy(train_X, train_y, test_X, test_y) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    return 100 * model.fit(train_X, train_y).score(test_X, test_y)


def compare(model, name, train, test) -> dict:
    full = {part: features(model, p[0], False) for part, p in (("train", train), ("test", test))}
    reduced = {part: features(model, p[0], True) for part, p in (("train", train), ("test", test))}
    a = np.concatenate([full["train"], full["test"]])
    b = np.concatenate([reduced["train"], reduced["test"]])
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    y_train, y_test = train[1], test[1]
    acc_full = accuracy(full["train"], y_train, full["test"], y_test)
    acc_reduced = accuracy(reduced["train"], y_train, reduced["test"], y_test)
    acc_mixed = accuracy(full["train"], y_train, reduced["test"], y_test)
    return {
        "set": name,
        "train / test": f"{len(y_train)} / {len(y_test)}",
        "cosine mean": f"{cosine.mean():.4f}",
        "cosine 1st pct": f"{np.percentile(cosine, 1):.4f}",
        "cosine min": f"{cosine.min():.4f}",
        "acc. full (%)": f"{acc_full:.2f}",
        "acc. reduced (%)": f"{acc_reduced:.2f}",
        "difference (points)": f"{acc_reduced - acc_full:+.2f}",
        "fit full, test reduced (%)": f"{acc_mixed:.2f}",
    }


def small_files_identical(model, sources) -> str:
    full, reduced = features(model, sources, False), features(model, sources, True)
    same = np.array_equal(full, reduced)
    return f"{len(sources)} original Caltech-101 files: features bit-identical: {same}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--out", type=Path, default=RESULTS / "photo_accuracy.md")
    add_smoke_flag(parser)
    args = parser.parse_args()
    size, limit = PHOTO_SIZE, None
    if args.smoke:
        args.workdir = smoke_folder("photo_accuracy")
        args.out, size, limit = args.workdir / "photo_accuracy.md", SMOKE_PHOTO_SIZE, 4
        args.classes, args.per_class = 2, 2
    import torch

    from sktransfer import DeepFeatureExtractor

    torch.set_num_threads(args.threads)
    sets = {"hymenoptera (4000x3000)": hymenoptera(args.workdir, args.threads, size, limit)}
    c_train, c_test, c_sources = caltech_draw(
        args.workdir, args.classes, args.per_class, args.threads, size
    )
    sets[f"Caltech-101 draw (4000x3000, {args.classes} classes)"] = (c_train, c_test)
    model = DeepFeatureExtractor("mobilenet_v2", engine="auto", cache=None, n_jobs=args.threads)
    model.fit(c_train[0][:2])
    rows = []
    for name, (train, test) in sets.items():
        rows.append(compare(model, name, train, test))
        print(rows[-1], flush=True)
    identical = small_files_identical(model, c_sources[:200])
    command = "flock /tmp/sktransfer-bench.lock python benchmarks/photo_accuracy.py"
    text = header("Reduced JPEG decoding: features and accuracy against full decoding", command)
    text += (
        f"- Load average (1, 5, 15 min) at the end: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} (shared machine; times not reported).\n"
        f"- MobileNetV2 ImageNet penultimate features (1280), engine {model.engine_!r}; "
        "logistic regression C=0.1 on standardised features.\n"
        f"- Caltech-101 draw: {args.classes} classes at random (seed 0), {args.per_class} "
        "training and test images each.\n\n"
        + markdown_table(rows)
        + f"\n- Small images: {identical}.\n"
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
