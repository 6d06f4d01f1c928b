"""The report's input: a class-per-folder tree, an .npz of images and labels, or digits.

Every problem with the data is a :class:`DataError` whose message says what was found and how
to fix it; the command line prints it without a traceback.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from ..decoding import DecodeError, check_header
from ..images import load_image_folder
from .paths import ReportError

__all__ = ["DataError", "ReportData", "load_report_data"]

#: Folder names taken as a train / test split of a class-per-folder tree.
TRAIN_NAMES = ("train", "training")
TEST_NAMES = ("val", "valid", "validation", "test")
#: .npz key pairs accepted as (images, labels), and as train/test splits.
NPZ_PAIRS = (("images", "labels"), ("images", "target"), ("X", "y"), ("x", "y"), ("data", "target"))
NPZ_SPLITS = (
    ("train_images", "train_labels", ("test_images", "val_images"), ("test_labels", "val_labels")),
    ("x_train", "y_train", ("x_test",), ("y_test",)),
    ("X_train", "y_train", ("X_test",), ("y_test",)),
)


class DataError(ReportError):
    """The report's DATA cannot be used; the message says why and how to fix it."""


@dataclass
class ReportData:
    """Training and test images with their labels, and how they were obtained."""

    X_train: object
    y_train: np.ndarray
    X_test: object
    y_test: np.ndarray
    name: str
    source: str  # "folder", "npz" or "default"
    split: str  # "given" (the data's own test split) or "holdout"
    location: str | None = None  # the folder or file, for the generated code
    npz_keys: tuple | None = None
    notes: list = field(default_factory=list)
    #: The size of the stratified subsample in use (None: every image), so that
    #: ``load_report_data(location, max_images=max_images, random_state=...)`` gives back
    #: exactly these images and this split (the report's generated pipeline relies on it).
    max_images: int | None = None
    _full: tuple | None = field(default=None, repr=False)

    @property
    def classes(self) -> np.ndarray:
        return np.unique(np.concatenate([self.y_train, self.y_test]))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "split": self.split,
            "n_train": int(len(self.y_train)),
            "n_test": int(len(self.y_test)),
            "classes": [str(c) for c in self.classes],
            "train_per_class": {
                str(c): int(n) for c, n in zip(*np.unique(self.y_train, return_counts=True))
            },
        }

    @property
    def min_subsample(self) -> int:
        """The smallest subsample: 2 training and 1 test image per class."""
        full = self._full or (self.X_train, self.y_train, self.X_test, self.y_test)
        return 2 * len(np.unique(full[1])) + len(np.unique(full[3]))

    def subsample(self, max_images: int, random_state: int, why: str = "") -> None:
        """Keep a stratified subsample of ``max_images`` images of the whole data (not of an
        earlier subsample), at least 2 training and 1 test image per class.

        Raises :class:`DataError` when ``max_images`` is below that minimum: never raised
        silently."""
        if self._full is None:
            self._full = (self.X_train, self.y_train, self.X_test, self.y_test)
        X_train, y_train, X_test, y_test = self._full
        total = len(y_train) + len(y_test)
        groups = [(y_train, 2), (y_test, 1)]  # (labels, minimum per class)
        indices = [np.flatnonzero(y == c) for y, _ in groups for c in np.unique(y)]
        minimums = np.array([m for y, m in groups for _ in np.unique(y)])
        _check_max_images(max_images, int(minimums.sum()), len(np.unique(y_train)))
        self.notes = [n for n in self.notes if not n.startswith("Subsampled")]
        if max_images >= total:
            self.X_train, self.y_train, self.X_test, self.y_test = self._full
            self.max_images = None
            return
        counts = np.array([len(idx) for idx in indices])
        sizes = subsample_sizes(counts, np.minimum(minimums, counts), max_images)
        rng = np.random.default_rng(random_state)
        chosen = [np.sort(rng.choice(idx, n, replace=False)) for idx, n in zip(indices, sizes)]
        n_train_groups = len(np.unique(y_train))
        keep_train = np.sort(np.concatenate(chosen[:n_train_groups]))
        keep_test = np.sort(np.concatenate(chosen[n_train_groups:]))
        self.X_train, self.y_train = X_train[keep_train], y_train[keep_train]
        self.X_test, self.y_test = X_test[keep_test], y_test[keep_test]
        self.max_images = int(max_images)
        self.notes.append(
            f"Subsampled (stratified) to {len(self.y_train)} training and {len(self.y_test)} "
            f"test images of {total}{why}."
        )


def subsample_sizes(counts, minimums, total: int) -> np.ndarray:
    """Group sizes proportional to ``counts`` (largest remainders) that sum to ``total``,
    each at least its minimum and at most its count.

    Examples
    --------
    >>> from sktransfer.report.data import subsample_sizes
    >>> subsample_sizes([10, 10, 5], [2, 2, 1], 10).tolist()
    [4, 4, 2]
    >>> subsample_sizes([100, 3], [2, 2], 10).tolist()  # the small class keeps its minimum
    [8, 2]
    """
    counts, minimums = np.asarray(counts), np.asarray(minimums)
    quotas = counts * total / counts.sum()
    sizes = np.clip(np.floor(quotas).astype(int), minimums, counts)
    while sizes.sum() < total:  # the largest remainders get one more
        sizes[np.argmax(np.where(sizes < counts, quotas - sizes, -np.inf))] += 1
    while sizes.sum() > total:  # minimums pushed it over: the largest surpluses give one back
        sizes[np.argmin(np.where(sizes > minimums, quotas - sizes, np.inf))] -= 1
    return sizes


def _check_max_images(max_images, minimum: int, n_classes: int) -> None:
    if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)):
        raise DataError(f"max_images (--max-images) must be an integer; got {max_images!r}.")
    if max_images < minimum:
        raise DataError(
            f"--max-images {max_images} is too few: the report needs at least 2 training and 1 "
            f"test image per class, {minimum} for these {n_classes} classes. Pass --max-images "
            f"{minimum} or more."
        )


def load_report_data(
    data=None, *, test_size=0.3, max_images=None, random_state=0, default_images=600
) -> ReportData:
    """Read DATA (None: scikit-learn's digits), check it, split off a test set if needed.

    Parameters
    ----------
    data : str, path-like or None
        A class-per-folder tree (optionally with ``train``/``val`` sub-trees), an ``.npz``
        file, or None for scikit-learn's bundled digits (no download).
    test_size : float, default=0.3
        Fraction held out (stratified) when the data has no test split of its own.
    max_images : int or None
        Keep at most this many images in all (a stratified subsample; noted).
    random_state : int, default=0
    default_images : int, default=600
        Digits images used for the embedded default.

    Examples
    --------
    >>> from sktransfer.report.data import load_report_data
    >>> data = load_report_data(None, default_images=100)
    >>> data.name, len(data.y_train) + len(data.y_test)
    ('digits', 100)
    """
    if data is None:
        result = _digits(default_images, test_size, random_state)
    else:
        path = Path(data)
        if not path.exists():
            raise DataError(
                f"DATA {str(path)!r} does not exist. Pass a folder with one sub-folder of "
                "images per class, or an .npz file with images and labels."
            )
        if path.is_dir():
            result = _folder(path, test_size, random_state)
        elif path.suffix.lower() == ".npz":
            result = _npz(path, test_size, random_state)
        else:
            raise DataError(
                f"DATA {str(path)!r} is a file but not an .npz archive. Pass a folder with one "
                "sub-folder of images per class, or an .npz file with images and labels."
            )
    _check_classes(result)
    if max_images is not None:
        result.subsample(max_images, random_state, why=f" (--max-images {max_images})")
    return result


def _digits(n_images, test_size, random_state) -> ReportData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # (N, 8, 8) grayscale in [0, 1]
    keep = np.random.default_rng(random_state).permutation(len(images))[:n_images]
    X_train, X_test, y_train, y_test = train_test_split(
        images[keep],
        digits.target[keep],
        test_size=test_size,
        stratify=digits.target[keep],
        random_state=random_state,
    )
    return ReportData(X_train, y_train, X_test, y_test, "digits", "default", "holdout")


def _folder(root: Path, test_size, random_state) -> ReportData:
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    train = next((subdirs[n] for n in TRAIN_NAMES if n in subdirs), None)
    test = next((subdirs[n] for n in TEST_NAMES if n in subdirs), None)
    if train is not None and test is not None:
        X_train, y_train = _read_tree(train)
        X_test, y_test = _read_tree(test)
        report = ReportData(
            X_train, y_train, X_test, y_test, root.name, "folder", "given", str(root)
        )
        report.notes.append(f"Test split: the {test.name}/ folder; training: {train.name}/.")
        return report
    paths, labels = _read_tree(root)
    _check_classes_counts(labels, str(root), need=2)
    X_train, X_test, y_train, y_test = train_test_split(
        paths, labels, test_size=test_size, stratify=labels, random_state=random_state
    )
    return ReportData(X_train, y_train, X_test, y_test, root.name, "folder", "holdout", str(root))


def _read_tree(root: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            paths, labels = load_image_folder(root)
        except (ValueError, FileNotFoundError) as exc:
            raise DataError(str(exc)) from None
    skipped = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    empty = [c for c in classes if c not in set(labels)]
    if empty:
        raise DataError(
            f"Class folder(s) {empty} under {str(root)!r} contain no images"
            + (f" ({skipped[0]})" if skipped else "")
            + ". Add images to them or remove them."
        )
    problems = [problem for problem in map(_header_problem, paths) if problem is not None]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(
            f"{len(problems)} of {len(paths)} image file(s) under {str(root)!r} cannot be read "
            f"as images: {problems[0]}{more}"
        )
    return paths, labels


def _header_problem(path) -> str | None:
    """Why the file cannot be used (unreadable, or above the pixel limit), from its header
    only (cheap), or None."""
    try:
        check_header(path)
    except DecodeError as exc:
        return str(exc)
    return None


def _npz(path: Path, test_size, random_state) -> ReportData:
    try:
        archive = np.load(path, allow_pickle=False)
        keys = set(archive.files)
    except (OSError, ValueError) as exc:
        raise DataError(f"DATA {str(path)!r} cannot be read as an .npz archive: {exc}") from None
    for images, labels, test_images, test_labels in NPZ_SPLITS:
        test_pair = next(
            ((a, b) for a, b in zip(test_images, test_labels) if a in keys and b in keys), None
        )
        if images in keys and labels in keys and test_pair:
            report = ReportData(
                _images(archive, images, path),
                _labels(archive, labels, path),
                _images(archive, test_pair[0], path),
                _labels(archive, test_pair[1], path),
                path.stem,
                "npz",
                "given",
                str(path),
                (images, labels, *test_pair),
            )
            _check_lengths(report, path)
            return report
    for images, labels in NPZ_PAIRS:
        if images in keys and labels in keys:
            X, y = _images(archive, images, path), _labels(archive, labels, path)
            if len(X) != len(y):
                raise DataError(
                    f"{str(path)!r}: {len(X)} images in {images!r} but {len(y)} labels in "
                    f"{labels!r}; they must match one to one."
                )
            _check_classes_counts(y, str(path), need=2)
            X_train, X_test, y_train, y_test = train_test_split(
                X, y, test_size=test_size, stratify=y, random_state=random_state
            )
            return ReportData(
                X_train,
                y_train,
                X_test,
                y_test,
                path.stem,
                "npz",
                "holdout",
                str(path),
                (images, labels),
            )
    expected = ", ".join(f"{a!r} and {b!r}" for a, b in NPZ_PAIRS[:3])
    raise DataError(
        f"{str(path)!r} has no images with labels: found keys {sorted(keys)}. Expected "
        f"{expected} (or 'train_images'/'train_labels' with 'test_images'/'test_labels', or "
        "'x_train'/'y_train' with 'x_test'/'y_test')."
    )


def _images(archive, key, path) -> np.ndarray:
    array = archive[key]
    if array.ndim not in (3, 4):
        raise DataError(
            f"{str(path)!r}: {key!r} has shape {array.shape}; images must be (N, H, W) or "
            "(N, H, W, C)."
        )
    return array


def _labels(archive, key, path) -> np.ndarray:
    array = archive[key]
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.ravel()  # MedMNIST stores (N, 1)
    if array.ndim != 1:
        raise DataError(
            f"{str(path)!r}: labels {key!r} have shape {array.shape}; expected one label per "
            "image, shape (N,)."
        )
    return array


def _check_lengths(report: ReportData, path) -> None:
    for X, y, what in (
        (report.X_train, report.y_train, "training"),
        (report.X_test, report.y_test, "test"),
    ):
        if len(X) != len(y):
            raise DataError(
                f"{str(path)!r}: {len(X)} {what} images but {len(y)} labels; they must match."
            )


def _check_classes_counts(labels, where: str, need: int) -> None:
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise DataError(
            f"{where!r} has {len(classes)} class ({[str(c) for c in classes]}); a classification "
            "report needs at least 2. Add a folder (or labels) for another class."
        )
    few = [str(c) for c, n in zip(classes, counts) if n < need * 2]
    if few:
        raise DataError(
            f"Class(es) {few} of {where!r} have fewer than {need * 2} images: too few to hold "
            "some out for testing. Add images, or give a train/val split."
        )


def _check_classes(report: ReportData) -> None:
    where = report.location or report.name
    classes, counts = np.unique(report.y_train, return_counts=True)
    if len(classes) < 2:
        raise DataError(
            f"{where!r} has {len(classes)} training class ({[str(c) for c in classes]}); a "
            "classification report needs at least 2."
        )
    few = [str(c) for c, n in zip(classes, counts) if n < 2]
    if few:
        raise DataError(
            f"Training class(es) {few} of {where!r} have fewer than 2 images; add images."
        )
    unseen = sorted(set(map(str, report.y_test)) - set(map(str, classes)))
    if unseen:
        raise DataError(f"Test class(es) {unseen} of {where!r} have no training images.")
