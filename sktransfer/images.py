"""Image inputs: arrays, file paths and PIL images, streamed as batches of tensors.

Every estimator of the project reads its ``X`` through :func:`check_images`, which validates
the input once and returns an :class:`ImageInputs`: an indexable view that loads, converts and
preprocesses images on demand, batch by batch, so memory does not grow with the number of
samples.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
from PIL import Image

from .decoding import decode_file, pil_to_rgb, reduced_jpeg_decoding, resize_target

__all__ = [
    "ImageInputs",
    "check_images",
    "concatenate_images",
    "load_image_folder",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = frozenset(
    ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
)
_CHANNEL_SIZES = (1, 3, 4)


class ImageInputs(Sequence):
    """A validated, lazily loaded collection of images (or of plain feature vectors).

    Build it with :func:`check_images`. ``kind`` is ``"array"`` (a 4-D NCHW tensor view of a
    numeric array), ``"items"`` (paths, PIL images or per-image arrays, decoded one by one) or
    ``"vectors"`` (a 2-D float array for backbones that take feature vectors).
    """

    def __init__(self, kind: str, data, *, channels_first: bool = False):
        self.kind = kind
        self._data = data
        self._channels_first = channels_first

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ImageInputs(self.kind, self._data[index], channels_first=self._channels_first)
        if self.kind == "items":
            return _item_to_tensor(self._data[index], index)
        return self._array_batch(index, index + 1)[0]

    def take(self, indices) -> ImageInputs:
        """Return the subset at ``indices`` (a view for arrays)."""
        indices = np.asarray(indices)
        if self.kind == "items":
            return ImageInputs("items", [self._data[i] for i in indices])
        return ImageInputs(self.kind, self._data[indices], channels_first=self._channels_first)

    @property
    def items(self):
        """The underlying samples (paths, PIL images or an array), in order."""
        return self._data

    def _array_batch(self, start: int, stop: int) -> torch.Tensor:
        chunk = np.ascontiguousarray(self._data[start:stop])
        if self.kind == "vectors":
            return torch.from_numpy(chunk.astype(np.float32, copy=False))
        if chunk.dtype != np.uint8 and not np.issubdtype(chunk.dtype, np.floating):
            chunk = chunk.astype(np.uint8)  # integer images were checked to lie in [0, 255]
        elif np.issubdtype(chunk.dtype, np.floating) and chunk.dtype != np.float32:
            chunk = chunk.astype(np.float32)
        tensor = torch.from_numpy(chunk)
        if tensor.ndim == 3:  # (N, H, W) grayscale
            tensor = tensor.unsqueeze(1)
        elif not self._channels_first:
            tensor = tensor.permute(0, 3, 1, 2)
        return _to_rgb(tensor, channel_dim=1)

    def batch(
        self, start: int, stop: int, transform: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> torch.Tensor:
        """Samples ``start:stop`` loaded, converted and preprocessed into one batch, in the
        calling thread."""
        if self.kind != "items":
            batch = self._array_batch(start, stop)
            return transform(batch) if transform is not None and self.kind != "vectors" else batch
        return _stack([self._load(i, transform) for i in range(start, stop)])

    def _load(self, index: int, transform) -> torch.Tensor:
        image = _item_to_tensor(self._data[index], index, resize_target(transform))
        return transform(image) if transform is not None else image

    def batches(
        self,
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
        batch_size: int,
        n_workers: int = 1,
        *,
        start: int = 0,
    ) -> Iterator[torch.Tensor]:
        """Yield preprocessed batches of at most ``batch_size`` samples from ``start`` on, in
        order.

        Arrays are converted and transformed a whole batch at a time (with ``n_workers`` > 1,
        in a thread, one batch ahead of the consumer); decoded items (files, PIL images) are
        loaded and transformed by ``n_workers`` threads (Pillow's decoders and torch's resize
        release the GIL), one batch ahead of the consumer.
        """
        n = len(self)
        starts = range(start, n, batch_size)
        if self.kind != "items" and (n_workers <= 1 or len(starts) <= 1):
            yield from (self.batch(i, min(i + batch_size, n), transform) for i in starts)
            return
        if self.kind != "items":
            # The next batch is resized in a thread while the network runs on this one.
            with ThreadPoolExecutor(max_workers=1) as pool:
                yield from _one_ahead(
                    starts,
                    lambda i: pool.submit(self.batch, i, min(i + batch_size, n), transform),
                    lambda future: future.result(),
                )
            return
        with ThreadPoolExecutor(max_workers=max(1, n_workers)) as pool:
            yield from _one_ahead(
                starts,
                lambda i: [
                    pool.submit(self._load, j, transform) for j in range(i, min(i + batch_size, n))
                ],
                lambda futures: _stack([future.result() for future in futures]),
            )


def _one_ahead(starts, submit, collect) -> Iterator[torch.Tensor]:
    """``collect(submit(i))`` for each ``i`` in ``starts``, submitting the next batch's work
    before collecting this one, so it is prepared while the consumer runs."""
    pending = None
    for i in starts:
        submitted = submit(i)
        if pending is not None:
            yield collect(pending)
        pending = submitted
    if pending is not None:
        yield collect(pending)


def _stack(images: list[torch.Tensor]) -> torch.Tensor:
    """One batch from images of one size, or a clear error."""
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise ValueError(
            f"Images of different sizes cannot form a batch: got shapes {sorted(shapes)}. "
            "Use a backbone with a resizing preprocessing (a named torchvision model) or "
            "resize the images to one size first."
        )
    return torch.stack(images)


def _to_rgb(tensor: torch.Tensor, channel_dim: int) -> torch.Tensor:
    channels = tensor.shape[channel_dim]
    if channels == 1:
        return tensor.repeat_interleave(3, dim=channel_dim)
    if channels == 4:  # RGBA: drop alpha, as PIL's convert("RGB") does
        return tensor.narrow(channel_dim, 0, 3)
    return tensor


def _item_to_tensor(item, index: int, target: int | None = None) -> torch.Tensor:
    """Decode one sample to a (3, H, W) uint8 or float tensor; ``target`` is the short side
    the preprocessing resizes to next (large JPEGs are then decoded reduced), or None."""
    if isinstance(item, str | os.PathLike):
        return decode_file(item, target if reduced_jpeg_decoding() else None, index=index)
    if isinstance(item, Image.Image):
        return pil_to_rgb(item)
    array = np.asarray(item)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in _CHANNEL_SIZES:
        raise ValueError(
            f"Sample {index} is an array of shape {array.shape}; a single image must be "
            "(H, W) or (H, W, C) with C in (1, 3, 4)."
        )
    _check_values(array, f"Sample {index}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.uint8)
    else:
        array = array.astype(np.float32)
    return _to_rgb(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1), 0)


def _check_values(array: np.ndarray, what: str) -> None:
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise TypeError(
            f"{what} has dtype {array.dtype}; images must be uint8 in [0, 255] or float in "
            "[0, 1] (or file paths / PIL images)."
        )
    if array.size == 0:
        return
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            raise ValueError(
                f"{what} contains NaN or infinity ({bad} values). Images must be finite; "
                "clean or drop those samples first."
            )
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{what} is a float image array with values in [{low:.4g}, {high:.4g}]; float "
                "images must lie in [0, 1]. Divide 8-bit data by 255 or pass it as uint8."
            )
    elif array.dtype != np.uint8:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{what} is an integer image array with values in [{low}, {high}]; integer "
                "images must lie in [0, 255]. Rescale to uint8 or to float in [0, 1]."
            )


def _channel_layout(shape: tuple[int, ...]) -> bool:
    """Return True for (N, C, H, W), False for (N, H, W, C); raise when it cannot tell.

    When both axes could hold channels and only one of them holds 3, that one is the channel
    axis: (2, 4, 4, 3) is four-by-four RGB, not four-channel images three pixels wide.
    """
    first, last = shape[1] in _CHANNEL_SIZES, shape[3] in _CHANNEL_SIZES
    if first and last and (shape[1] == 3) != (shape[3] == 3):
        return shape[1] == 3
    if first and last:
        raise ValueError(
            f"Ambiguous channel layout for an image array of shape {shape}: both axis 1 and "
            "axis 3 could hold the channels (1, 3 or 4). sktransfer does not guess; pass a "
            "list of PIL images or of (H, W, C) arrays, or images larger than 4 pixels."
        )
    if not (first or last):
        raise ValueError(
            f"An image array of shape {shape} has no channel axis: expected (N, H, W, C) or "
            "(N, C, H, W) with C in (1, 3, 4), or (N, H, W) for grayscale."
        )
    return first


def check_images(X, *, allow_vectors: bool = False) -> ImageInputs:
    """Validate ``X`` and return it as :class:`ImageInputs`.

    Parameters
    ----------
    X : array-like, list or pandas Series
        One of: a 4-D array (N, H, W, C) or (N, C, H, W) with C in (1, 3, 4); a 3-D array
        (N, H, W) of grayscale images; uint8 (or integers in [0, 255]) or float in [0, 1];
        a sequence or Series of file paths, PIL images or per-image arrays (sizes may differ).
        With ``allow_vectors=True``, a 2-D array (N, F) of feature vectors. Files are decoded
        when batches are read (:mod:`sktransfer.decoding`): upright (EXIF orientation), 16-bit
        grayscale scaled to 8 bits, refused above ``PIL.Image.MAX_IMAGE_PIXELS`` from their
        header, and JPEGs at least twice the preprocessing's resize target decoded reduced
        (``SKTRANSFER_JPEG_DRAFT=0`` turns that off). See docs/images.md.
    allow_vectors : bool, default=False
        Whether 2-D numeric arrays are accepted as feature vectors, for backbones that take
        vectors (a plain ``torch.nn.Module``).

    Returns
    -------
    ImageInputs

    Raises
    ------
    ValueError, TypeError
        With what was wrong, what was received and how to fix it.
    """
    if scipy.sparse.issparse(X):
        raise TypeError(
            "Sparse input is not supported: images and feature vectors must be dense. "
            "Convert with X.toarray() first."
        )
    if hasattr(X, "to_numpy"):  # pandas Series of paths, or a numeric DataFrame (vectors)
        X = X.to_numpy()
    elif hasattr(X, "__array__") and not isinstance(X, np.ndarray | Image.Image | list):
        X = np.asarray(X)
    if isinstance(X, str | os.PathLike | Image.Image):
        raise TypeError(
            f"Expected a collection of images, got a single {type(X).__name__}. "
            "Wrap it in a list: [image]."
        )
    if isinstance(X, np.ndarray) and X.dtype != object and X.dtype.kind not in "US":
        return _check_array(X, allow_vectors)
    if isinstance(X, np.ndarray) and X.ndim == 2 and allow_vectors:
        try:  # an object array of numbers, as tables sometimes arrive
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            message = f"Feature vectors must be numeric; an object array holds: {exc}"
            raise TypeError(message) from exc
        return _check_array(X, allow_vectors)
    items = list(X) if not isinstance(X, np.ndarray) else list(X.ravel())
    if isinstance(X, np.ndarray) and X.ndim != 1:
        raise ValueError(f"An array of paths or images must be 1-D; got shape {X.shape}.")
    if len(items) == 0:
        raise ValueError("No images: the input holds 0 samples. Pass at least one image.")
    if all(isinstance(item, str | os.PathLike | Image.Image | np.ndarray) for item in items):
        items = [os.fspath(i) if isinstance(i, os.PathLike) else i for i in items]
        return ImageInputs("items", items)
    if all(np.isscalar(item) and not isinstance(item, str) for item in items):
        return _check_array(np.asarray(items), allow_vectors)
    try:
        return _check_array(np.asarray(items), allow_vectors)
    except (ValueError, TypeError) as exc:
        kinds = sorted({type(item).__name__ for item in items})
        raise TypeError(
            f"Cannot read images from a sequence of {kinds}: expected file paths, PIL images "
            "or arrays."
        ) from exc


def _check_array(X: np.ndarray, allow_vectors: bool) -> ImageInputs:
    if X.ndim == 0 or X.shape[0] == 0:
        raise ValueError(
            f"No images: got an array of shape {X.shape} (0 samples). Pass at least one image."
        )
    if X.ndim == 2:
        if allow_vectors:
            _check_vectors(X)
            return ImageInputs("vectors", X)
        raise ValueError(
            f"Got a 2-D array of shape {X.shape}, but this backbone takes images: expected "
            "(N, H, W, C), (N, C, H, W) or (N, H, W). Reshape flattened grayscale images to "
            "(N, H, W) first."
        )
    if X.ndim == 1:
        raise ValueError(
            f"Got a 1-D array of shape {X.shape}: expected images (N, H, W[, C]) or, for a "
            "module that takes vectors, 2-D features. Reshape your data with X.reshape(1, -1) "
            "for a single sample."
        )
    if X.ndim not in (3, 4):
        raise ValueError(
            f"Expected images as a 3-D (N, H, W) or 4-D (N, H, W, C) / (N, C, H, W) array; got "
            f"{X.ndim}-D with shape {X.shape}."
        )
    if X.ndim == 3 and X.shape[2] in (3, 4) and X.shape[1] > 4:
        raise ValueError(
            f"A 3-D array is read as (N, H, W) grayscale images, but shape {X.shape} looks like "
            "one (H, W, C) color image. Pass X[None] (or [image]) for a single image."
        )
    channels_first = _channel_layout(X.shape) if X.ndim == 4 else False
    _check_values(X, "The image array")
    return ImageInputs("array", X, channels_first=channels_first)


def _check_vectors(X: np.ndarray) -> None:
    if not (np.issubdtype(X.dtype, np.number)) or X.dtype == bool:
        raise TypeError(f"Feature vectors must be numeric; got dtype {X.dtype}.")
    if np.issubdtype(X.dtype, np.floating) and not np.isfinite(X).all():
        raise ValueError(
            "Input X contains NaN or infinity. Impute or drop those values before extracting "
            "features."
        )


def concatenate_images(a, b):
    """Two collections of images (or feature vectors) as one, in a form :func:`check_images`
    takes: one array when both are arrays (of numbers, or of paths as strings) with one item
    shape, else a list of their items (paths, PIL images, arrays of other sizes). pandas
    inputs count by their values.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.images import concatenate_images
    >>> concatenate_images(np.zeros((2, 8, 8)), np.ones((3, 8, 8))).shape
    (5, 8, 8)
    >>> len(concatenate_images(np.zeros((2, 8, 8)), np.ones((3, 4, 4))))
    5
    """
    a, b = (x.to_numpy() if hasattr(x, "to_numpy") else x for x in (a, b))
    if (
        isinstance(a, np.ndarray)
        and isinstance(b, np.ndarray)
        and a.dtype != object
        and b.dtype != object
        and a.shape[1:] == b.shape[1:]
    ):
        return np.concatenate([a, b])
    return [*list(a), *list(b)]


def load_image_folder(root, *, extensions=None) -> tuple[np.ndarray, np.ndarray]:
    """Read a class-per-folder image tree into file paths and labels.

    Parameters
    ----------
    root : str or path-like
        Folder whose sub-folders are the classes (``root/<class>/<image>``), as torchvision's
        ``ImageFolder`` expects. Images in nested sub-folders count for their top-level class.
    extensions : iterable of str, optional
        File extensions to accept (with the dot). Defaults to every format Pillow can open.

    Returns
    -------
    paths : ndarray of str, shape (n_samples,)
        Sorted by class, then by path.
    labels : ndarray of str, shape (n_samples,)
        The class folder's name of each path.

    Warns
    -----
    UserWarning
        Counting the files skipped because their extension is not an image format.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> from sktransfer import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for cls in ("ants", "bees"):
    ...     (root / cls).mkdir()
    ...     Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / cls / "a.png")
    >>> paths, labels = load_image_folder(root)
    >>> labels.tolist()
    ['ants', 'bees']
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Image folder {str(root)!r} does not exist or is not a directory. Expected a "
            "folder with one sub-folder of images per class."
        )
    accepted = IMAGE_EXTENSIONS if extensions is None else {e.lower() for e in extensions}
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(
            f"Image folder {str(root)!r} has no class sub-folders. Put each class's images in "
            "its own sub-folder: root/<class>/<image>."
        )
    paths, labels, skipped = [], [], []
    for cls in classes:
        for path in sorted((root / cls).rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() in accepted:
                paths.append(str(path))
                labels.append(cls)
            else:
                skipped.append(path)
    if skipped:
        examples = ", ".join(repr(str(p)) for p in skipped[:3])
        warnings.warn(
            f"Skipped {len(skipped)} non-image file(s) under {str(root)!r} (e.g. {examples}).",
            UserWarning,
            stacklevel=2,
        )
    if not paths:
        raise ValueError(f"No image files found under {str(root)!r} in classes {classes}.")
    return np.array(paths, dtype=str), np.array(labels, dtype=str)
