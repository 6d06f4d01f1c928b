"""Image files and PIL images to (3, H, W) uint8 tensors, as users' photos need.

Every decode of the library goes through :func:`decode_file` (file paths) or
:func:`pil_to_rgb` (PIL images), called by :class:`sktransfer.images.ImageInputs`:

- the pixel count is read from the file's header and checked against Pillow's limit
  (``PIL.Image.MAX_IMAGE_PIXELS``) before any pixel is decoded, so a 196-megapixel JPEG or a
  PNG bomb is refused with the file's name instead of filling memory;
- the EXIF orientation is applied (as ``PIL.ImageOps.exif_transpose`` does), so a portrait
  phone photo is upright;
- 16-bit grayscale is scaled to 8 bits (``convert("RGB")`` would clip it to white);
- a JPEG at least twice the preprocessing's resize target on its short side is decoded at a
  reduced size by libjpeg's DCT-domain scaling (Pillow's ``draft``: 1/2, 1/4 or 1/8, the
  smallest that keeps the short side >= the target); the resize to the target then runs as
  before. Smaller JPEGs, other formats and arrays decode exactly as before.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.functional import pil_to_tensor

__all__ = [
    "DecodeError",
    "check_header",
    "check_pixels",
    "decode_file",
    "decoding_signature",
    "draft_scale",
    "pil_to_rgb",
    "reduced_jpeg_decoding",
    "resize_target",
]

#: The DCT scales libjpeg decodes at (1/8, 1/4, 1/2), largest reduction first.
_DRAFT_SCALES = (8, 4, 2)
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


#: Environment variable that turns reduced (DCT-domain) JPEG decoding off ("0") or on ("1").
DRAFT_VARIABLE = "SKTRANSFER_JPEG_DRAFT"


def reduced_jpeg_decoding() -> bool:
    """Whether large JPEGs are decoded reduced: ``$SKTRANSFER_JPEG_DRAFT``, on unless "0".

    Read at each decode, so it can be changed between calls in one process.
    """
    value = os.environ.get(DRAFT_VARIABLE, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(
            f"Environment variable {DRAFT_VARIABLE} must be '0' (decode JPEGs at full size) or "
            f"'1' (decode large JPEGs reduced, the default); got {value!r}."
        )
    return value != "0"


def decoding_signature() -> str:
    """What decides the pixels of a decoded file apart from the file itself, for cache keys:
    the decoding version and whether large JPEGs are decoded reduced."""
    return f"decode2-draft{int(reduced_jpeg_decoding())}"


class DecodeError(ValueError):
    """A file that cannot be decoded (unreadable, or larger than the pixel limit)."""


def resize_target(transform) -> int | None:
    """The short side ``transform`` resizes images to first, or None when it does not.

    Recognises torchvision's ``ImageClassification`` presets (``resize_size``, as every named
    backbone's :class:`~sktransfer.backbones.ImagePreset`) and a ``Resize`` to one int, alone
    or first in a ``Compose`` (the fine-tuning decode). Anything else (None, a plain module's
    conversion, a custom callable) returns None: images are then decoded at full size.
    """
    if transform is None:
        return None
    steps = getattr(transform, "transforms", None)
    if isinstance(steps, list | tuple) and steps:  # a Compose: only its first step counts
        transform = steps[0]
    size = getattr(transform, "resize_size", None)
    if size is None and type(transform).__name__ == "Resize":
        if getattr(transform, "max_size", None) is None:
            size = getattr(transform, "size", None)
    if isinstance(size, list | tuple) and len(size) == 1:
        size = size[0]
    return int(size) if isinstance(size, int) and size > 0 else None


def draft_scale(width: int, height: int, target: int | None) -> int:
    """The DCT reduction (1, 2, 4 or 8) to decode a ``width`` x ``height`` JPEG at, for a
    resize of its short side to ``target``: the largest that keeps the short side >= target.

    1 (full size) unless the short side is at least twice the target.

    >>> draft_scale(4000, 3000, 256), draft_scale(600, 800, 256), draft_scale(500, 375, 256)
    (8, 2, 1)
    """
    if not target:
        return 1
    short = min(width, height)
    return next((s for s in _DRAFT_SCALES if short // s >= target), 1)


def check_pixels(width: int, height: int, name: str) -> None:
    """Refuse an image above Pillow's pixel limit, from its header size, before decoding.

    ``name`` says which file, as the error message shows it.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise DecodeError(
            f"Image file {name} is {width}x{height} = {width * height:,} pixels, more than the "
            f"limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS): decoding it could exhaust memory "
            "(a decompression bomb). Remove it, downscale it, or, if you trust the file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS."
        )


def check_header(path) -> None:
    """Read only the header of the image file at ``path``: raise :class:`DecodeError` naming
    it when Pillow cannot identify it or it is above the pixel limit (:func:`check_pixels`)."""
    path = str(os.fspath(path))  # str(): a numpy string would show as np.str_(...)
    try:
        with Image.open(path) as image:
            check_pixels(*image.size, repr(path))
    except Image.DecompressionBombError as exc:
        raise _bomb_error(repr(path), exc) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"Image file {path!r} could not be read: {exc}.") from exc


def _bomb_error(name: str, exc: Exception) -> DecodeError:
    return DecodeError(
        f"Image file {name} is refused as a decompression bomb: {exc} If you trust the file, "
        "raise PIL.Image.MAX_IMAGE_PIXELS; otherwise remove it."
    )


def decode_file(path, target: int | None = None, *, index: int | None = None) -> torch.Tensor:
    """Decode the image file at ``path`` to a (3, H, W) uint8 tensor, upright.

    ``target`` is the short side the preprocessing resizes to next (see
    :func:`resize_target`); a JPEG at least twice as large is decoded reduced
    (:func:`draft_scale`). Raises :class:`DecodeError` (a ValueError) naming the file when it
    cannot be read or is above the pixel limit (and its ``index`` in the input, if given).
    """
    path = str(os.fspath(path))  # str(): a numpy string would show as np.str_(...)
    name = repr(path) if index is None else f"{path!r} (sample {index})"
    try:
        with open(path, "rb") as file, Image.open(file) as image:
            check_pixels(*image.size, name)
            scale = draft_scale(*image.size, target) if image.format == "JPEG" else 1
            if scale == 1 and _libjpeg_turbo_reads(image):
                file.seek(0)
                fast = _decode_jpeg(file.read())
                if fast is not None:
                    return fast
            if scale > 1:
                image.draft("RGB", (image.width // scale, image.height // scale))
            return pil_to_rgb(image)
    except Image.DecompressionBombError as exc:  # above twice the limit: Image.open refuses
        raise _bomb_error(name, exc) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(
            f"Image file {name} could not be read: {exc}. Remove it from the input or replace "
            "it with a readable image."
        ) from exc


def _libjpeg_turbo_reads(image: Image.Image) -> bool:
    """Whether torchvision's decoder gives Pillow's pixels for this file: an RGB or grayscale
    JPEG with no rotation to apply (CMYK and rotated files go through Pillow)."""
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return False
    return _orientation(image) in (0, 1)


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except (OSError, SyntaxError, TypeError, ValueError, struct.error):
        return 1  # a malformed EXIF block: nothing to apply, as image viewers do


def _decode_jpeg(data: bytes) -> torch.Tensor | None:
    """A JPEG file's bytes through torchvision's libjpeg-turbo decoder, or None for Pillow.

    About 2x faster than Pillow here (1.4 vs 2.8 ms for a Caltech-101 image) and pixel-identical
    to ``Image.convert("RGB")`` for RGB and grayscale files (checked on 1,016 Caltech-101
    files).
    """
    from torchvision.io import ImageReadMode

    # torchvision 0.29 deprecates decode_jpeg in favour of torchcodec (not a dependency here)
    # with a warning per call; its op warns nothing (see sktransfer._compat).
    from ._compat import jpeg_decoder_op

    try:
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        image = jpeg_decoder_op(buffer, ImageReadMode.UNCHANGED.value, False)
    except (RuntimeError, OSError, ValueError):
        return None
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        return None
    return image if image.shape[0] == 3 else image.repeat_interleave(3, dim=0)


def pil_to_rgb(image: Image.Image) -> torch.Tensor:
    """A PIL image as a (3, H, W) uint8 tensor: EXIF orientation applied, 16-bit grayscale
    scaled to 8 bits (not clipped), everything else converted as ``convert("RGB")`` does.

    ``exif_transpose`` drops the orientation tag from what it returns, so an image already
    transposed by it is not turned twice.
    """
    if _orientation(image) not in (0, 1):
        image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and image.format == "PNG"):
        values = np.asarray(image).astype(np.uint32)  # PNG's "I" is 16-bit grayscale
        gray = torch.from_numpy(((values + 128) // 257).astype(np.uint8))  # round(v * 255/65535)
        return gray.unsqueeze(0).repeat_interleave(3, dim=0)
    return pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))
