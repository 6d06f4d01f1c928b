"""Files as users have them: fast and reduced JPEG decoding, EXIF orientation, 16-bit PNGs,
pixel limits read from the header."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import v2
from torchvision.transforms.functional import pil_to_tensor

from sktransfer.backbones import ImagePreset, ToUnitFloat
from sktransfer.decoding import (
    DecodeError,
    decode_file,
    decoding_signature,
    draft_scale,
    pil_to_rgb,
    resize_target,
)
from sktransfer.images import check_images

PRESET = ImagePreset(crop_size=224, resize_size=256)
SMALL_PRESET = ImagePreset(crop_size=56, resize_size=64)  # small files keep the tests fast


def _smooth(height, width, seed=0):
    """A smooth RGB image (as photos are), so JPEG scaling errors stay small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(6 * x + a) * np.cos(4 * y + b) for a, b in rng.uniform(0, 3, (3, 2))]
    return (127.5 + 127 * np.stack(channels, -1)).astype(np.uint8)


def _jpeg(path, array, orientation=None, mode="RGB"):
    image = Image.fromarray(array).convert(mode)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, "JPEG", quality=90, exif=exif)
    return str(path)


def _pil_reference(path, draft_size=None):
    """What Pillow gives: (reduced) decode, exif_transpose, convert("RGB")."""
    with Image.open(path) as image:
        if draft_size is not None:
            image.draft("RGB", draft_size)
        return pil_to_tensor(ImageOps.exif_transpose(image).convert("RGB"))


def _png_header_only(path, width, height):
    """A PNG whose header claims ``width`` x ``height`` but that holds no pixel data."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return str(path)


@pytest.mark.parametrize(
    ("width", "height", "target", "scale"),
    [
        (4000, 3000, 256, 8),  # 375 >= 256
        (3000, 4000, 256, 8),  # portrait: the short side counts, whatever the orientation
        (2048, 1536, 256, 4),  # 1536 / 8 = 192 < 256, 1536 / 4 = 384
        (1200, 800, 256, 2),
        (800, 512, 256, 2),  # exactly twice the target
        (800, 511, 256, 1),  # just under twice: decoded at full size, as before
        (300, 200, 256, 1),
        (4000, 3000, None, 1),  # no resize in the preprocessing: full size
        (4000, 3000, 600, 4),
    ],
)
def test_draft_scale_keeps_the_short_side_at_least_the_target(width, height, target, scale):
    assert draft_scale(width, height, target) == scale
    if scale > 1:
        assert min(width, height) // scale >= target


def test_resize_target_from_presets_and_resize_steps():
    assert resize_target(PRESET) == 256
    assert resize_target(v2.Compose([v2.Resize(300, antialias=True), v2.CenterCrop(300)])) == 300
    assert resize_target(v2.Resize([232])) == 232
    for none in (None, ToUnitFloat(), v2.Resize((256, 256)), v2.Resize(256, max_size=300)):
        assert resize_target(none) is None, none
    assert resize_target(v2.Compose([v2.CenterCrop(10), v2.Resize(256)])) is None


def test_small_jpegs_decode_as_before(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for mode, shape in (("RGB", (21, 34, 3)), ("L", (19, 25)), ("CMYK", (12, 10, 4))):
        path = tmp_path / f"{mode}.jpg"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(path)
        files.append(path)
    for path in files:
        with Image.open(path) as image:
            expected = pil_to_tensor(image.convert("RGB"))
        got = decode_file(path, 256)
        assert got.shape == expected.shape and torch.equal(got, expected), path.name
    # today's decoder for RGB files: torchvision's, bit for bit
    today = decode_jpeg(read_file(str(files[0])), mode=ImageReadMode.UNCHANGED)
    assert torch.equal(decode_file(files[0], 256), today)


def test_large_jpeg_is_decoded_reduced_and_close_after_the_resize(tmp_path):
    path = _jpeg(tmp_path / "big.jpg", _smooth(272, 400))
    reduced = decode_file(path, 64)
    assert tuple(reduced.shape) == (3, 68, 100)  # 1/4: 272 / 8 = 34 < 64 <= 272 / 4
    assert torch.equal(reduced, _pil_reference(path, (100, 68)))
    full = decode_file(path, None)
    assert tuple(full.shape) == (3, 272, 400)
    after_reduced, after_full = SMALL_PRESET(reduced), SMALL_PRESET(full)
    assert after_reduced.shape == after_full.shape == (3, 56, 56)
    difference = (after_reduced - after_full).abs()  # normalised units: 1/58 per grey level
    assert float(difference.mean()) < 0.05, float(difference.mean())


def test_reduced_decoding_can_be_turned_off(tmp_path, monkeypatch):
    path = _jpeg(tmp_path / "big.jpg", _smooth(128, 192))
    inputs = check_images([path])
    monkeypatch.setenv("SKTRANSFER_JPEG_DRAFT", "0")
    off = decoding_signature()
    exact = next(inputs.batches(SMALL_PRESET, 1))[0]
    assert torch.equal(exact, SMALL_PRESET(decode_file(path, None)))
    monkeypatch.setenv("SKTRANSFER_JPEG_DRAFT", "1")
    assert decoding_signature() != off  # the activation store keys on it
    reduced = next(inputs.batches(SMALL_PRESET, 1))[0]
    assert torch.equal(reduced, SMALL_PRESET(decode_file(path, 64)))
    assert not torch.equal(reduced, exact)
    monkeypatch.setenv("SKTRANSFER_JPEG_DRAFT", "yes")
    with pytest.raises(ValueError, match=r"SKTRANSFER_JPEG_DRAFT must be '0' .* got 'yes'"):
        next(inputs.batches(SMALL_PRESET, 1))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("size", [(30, 44), (128, 176)], ids=["small", "reduced"])
def test_exif_orientation_is_applied(tmp_path, orientation, size):
    path = _jpeg(tmp_path / "photo.jpg", _smooth(*size), orientation)
    draft = (size[1] // 2, size[0] // 2) if size[0] >= 128 else None
    got = decode_file(path, 64)
    expected = _pil_reference(path, draft)
    assert torch.equal(got, expected)
    upright = (size[1], size[0]) if orientation >= 5 else size  # 5-8 swap the sides
    scale = 2 if draft else 1
    assert tuple(got.shape[1:]) == (upright[0] // scale, upright[1] // scale)


def test_exif_orientation_of_pngs_and_pil_images(tmp_path):
    array = _smooth(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = tmp_path / "rotated.png"
    Image.fromarray(array).save(path, exif=exif)
    expected = torch.from_numpy(np.rot90(array, k=-1).copy()).permute(2, 0, 1)
    assert torch.equal(decode_file(path), expected)
    with Image.open(path) as image:
        assert torch.equal(pil_to_rgb(image), expected)
        upright = ImageOps.exif_transpose(image)
    assert torch.equal(pil_to_rgb(upright), expected)  # not turned twice


def test_sixteen_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535], [128, 129, 385, 65407]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
    got = decode_file(path)
    expected = np.array([[0, 1, 128, 255], [0, 1, 1, 255]], np.uint8)  # round(v * 255 / 65535)
    assert got.shape == (3, 2, 4)
    assert np.array_equal(got[0].numpy(), expected) and torch.equal(got[0], got[2])


def test_pixel_count_is_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    # The files hold no pixels: decoding them would fail as unreadable, not as too large.
    above = _png_header_only(tmp_path / "above.png", 10_000, 10_000)  # 1x-2x Pillow's limit
    with pytest.warns(Image.DecompressionBombWarning):
        with pytest.raises(DecodeError, match=r"above\.png.*10000x10000 = 100,000,000 pixels"):
            decode_file(above)
    bomb = _png_header_only(tmp_path / "bomb.png", 40_000, 40_000)  # Image.open refuses
    with pytest.raises(DecodeError, match=r"bomb\.png' is refused as a decompression bomb"):
        decode_file(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    small = tmp_path / "small.jpg"
    Image.fromarray(_smooth(30, 40)).save(small)
    with pytest.warns(Image.DecompressionBombWarning):
        with pytest.raises(DecodeError, match=r"small\.jpg' \(sample 3\) is 40x30.*IMAGE_PIXELS"):
            decode_file(small, index=3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's way to lift the limit
    assert decode_file(small).shape == (3, 30, 40)


def test_unreadable_file_gets_the_clear_error(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg' \(sample 3\) could not be read"):
        decode_file(path, index=3)


def test_malformed_exif_is_read_as_upright(tmp_path):
    path = tmp_path / "odd.jpg"
    Image.fromarray(_smooth(20, 30)).save(path, exif=b"Exif\x00\x00not a tiff header")
    assert decode_file(path, 256).shape == (3, 20, 30)
