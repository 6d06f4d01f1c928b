"""Helpers shared by the benchmarks: where the data is, what machine ran, Markdown output, and
the ``--smoke`` mode (a handful of images, the smallest settings, results in a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SKTRANSFER_DATA", ROOT / ".." / "shared" / "data")).resolve()
RESULTS = ROOT / "benchmarks" / "results"
SMOKE_HELP = (
    "smoke run (what CI runs): the same code on a handful of images and the smallest "
    "settings, in seconds; results go to a temporary folder, never to benchmarks/results; "
    "without the shared data, tiny synthetic data stands in"
)
#: The smoke run's folder once ``smoke_folder`` was called (``require_data`` then falls back
#: to tiny synthetic data instead of exiting).
_SMOKE: dict[str, Path] = {}


def add_smoke_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)


def smoke_folder(name: str) -> Path:
    """A fresh folder for this smoke run's results: under ``$SKTRANSFER_SMOKE_DIR`` when the
    runner (benchmarks/smoke.py) sets it, else a new temporary folder."""
    base = os.environ.get("SKTRANSFER_SMOKE_DIR")
    if base:
        folder = Path(base) / name
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix=f"sktransfer-smoke-{name}-"))
    _SMOKE["folder"] = folder
    print(f"smoke run: results go to {folder}", flush=True)
    return folder


def require_data(name: str) -> Path:
    """``DATA / name``; in a smoke run without it, tiny synthetic data of the same layout."""
    path = DATA / name
    if path.exists():
        return path
    if "folder" in _SMOKE:
        return tiny_data(name, _SMOKE["folder"] / "tiny-data")
    sys.exit(f"Benchmark data {path} not found: set SKTRANSFER_DATA to the shared data folder.")


def caltech101_objects():
    """Caltech-101's image paths and labels, without BACKGROUND_Google (not an object class)."""
    from sktransfer import load_image_folder

    paths, labels = load_image_folder(require_data("caltech101"))
    keep = labels != "BACKGROUND_Google"
    return paths[keep], labels[keep]


def tiny_data(name: str, root: Path) -> Path:
    """Stand-ins for the shared data sets, made from scikit-learn's embedded digits (no
    download): ``caltech101`` and ``hymenoptera`` as folders of small JPEGs, the ``.npz``
    files with the shared files' keys. Made once per ``root``."""
    makers = {
        "caltech101": _tiny_caltech,
        "hymenoptera": _tiny_hymenoptera,
        "mnist.npz": _tiny_mnist,
        "breastmnist.npz": _tiny_medmnist,
        "pneumoniamnist.npz": _tiny_medmnist,
    }
    if name not in makers:
        sys.exit(f"No tiny stand-in for {name!r}; known: {sorted(makers)}.")
    path = root / name
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        makers[name](path)
    return path


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images * 255 / 16).astype(np.uint8), digits.target


def _write_jpegs(folder: Path, images: np.ndarray, size=(96, 72)) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        gray = Image.fromarray(image).resize(size, Image.NEAREST)
        Image.merge("RGB", (gray, gray.rotate(90 * (i % 2)), gray)).save(folder / f"{i:03d}.jpg")


def _tiny_caltech(path: Path, per_class: int = 12) -> None:
    images, labels = _digits()
    names = ["accordion", "airplanes", "anchor", "ant", "BACKGROUND_Google"]
    for digit, name in enumerate(names):
        _write_jpegs(path / name, images[labels == digit][:per_class])


def _tiny_hymenoptera(path: Path) -> None:
    images, labels = _digits()
    for digit, name in enumerate(("ants", "bees")):
        own = images[labels == digit]
        _write_jpegs(path / "train" / name, own[:8])
        _write_jpegs(path / "val" / name, own[8:12])


def _mnist_sized(images: np.ndarray) -> np.ndarray:
    """8x8 digits as 28x28: each pixel 3x3, a 2-pixel border."""
    return np.pad(images.repeat(3, 1).repeat(3, 2), ((0, 0), (2, 2), (2, 2)))


def _tiny_mnist(path: Path) -> None:
    images, labels = _digits()
    images = _mnist_sized(images)
    np.savez(
        path,
        x_train=images[:1500],
        y_train=labels[:1500],
        x_test=images[1500:],
        y_test=labels[1500:],
    )


def _tiny_medmnist(path: Path) -> None:
    images, labels = _digits()
    two = labels < 2
    images, labels = _mnist_sized(images[two]), labels[two].astype(np.uint8)
    parts = {"train": slice(0, 200), "val": slice(200, 260), "test": slice(260, None)}
    arrays = {f"{part}_images": images[s] for part, s in parts.items()}
    arrays.update({f"{part}_labels": labels[s, None] for part, s in parts.items()})
    np.savez(path, **arrays)


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, {device}, Python "
        f"{platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )


def header(title: str, command: str) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"# {title}\n\n- Command: `{command}`\n- Machine: {machine()}\n- Date: {now}\n"


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
