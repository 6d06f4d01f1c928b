import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sktransfer import check_images, load_image_folder
from sktransfer.images import ImageInputs


def _first_batch(inputs: ImageInputs, batch_size=64):
    return next(inputs.batches(None, batch_size))


def test_nhwc_and_nchw_give_the_same_tensors(rgb_images):
    nhwc = _first_batch(check_images(rgb_images))
    nchw = _first_batch(check_images(rgb_images.transpose(0, 3, 1, 2).copy()))
    assert nhwc.shape == (6, 3, 40, 48)
    assert torch.equal(nhwc, nchw)
    assert torch.equal(nhwc[2], torch.from_numpy(rgb_images[2]).permute(2, 0, 1))


def test_only_one_axis_of_three_channels_settles_the_layout(rgb_images):
    # (2, 4, 4, 3): four-by-four RGB, not four-channel images three pixels wide
    small = rgb_images[:2, :4, :4]
    batch = _first_batch(check_images(small))
    assert batch.shape == (2, 3, 4, 4)
    assert torch.equal(batch[1], torch.from_numpy(small[1]).permute(2, 0, 1))
    first = _first_batch(check_images(small.transpose(0, 3, 1, 2).copy()))  # (2, 3, 4, 4)
    assert torch.equal(first, batch)


def test_grayscale_and_rgba_become_rgb(rgb_images):
    gray = _first_batch(check_images(rgb_images[..., 0]))
    assert gray.shape == (6, 3, 40, 48)
    assert torch.equal(gray[:, 0], gray[:, 2])
    rgba = np.concatenate([rgb_images, np.full(rgb_images.shape[:3] + (1,), 7, np.uint8)], -1)
    assert torch.equal(_first_batch(check_images(rgba)), _first_batch(check_images(rgb_images)))


def test_float_images_in_unit_range_are_kept_as_float(rgb_images):
    batch = _first_batch(check_images(rgb_images / 255.0))
    assert batch.dtype == torch.float32
    assert float(batch.max()) <= 1.0


def test_batches_stream_in_order_with_a_transform(rgb_images):
    inputs = check_images(rgb_images)
    batches = list(inputs.batches(lambda t: t.float() + 1, batch_size=4))
    assert [len(b) for b in batches] == [4, 2]
    assert torch.equal(torch.cat(batches), _first_batch(inputs).float() + 1)


def test_array_batches_prepared_ahead_in_a_thread_keep_their_order(rgb_images):
    inputs = check_images(np.concatenate([rgb_images] * 3))  # 18 images
    serial = list(inputs.batches(lambda t: t.float() * 2, batch_size=4, n_workers=1))
    ahead = list(inputs.batches(lambda t: t.float() * 2, batch_size=4, n_workers=2))
    assert [len(b) for b in ahead] == [4, 4, 4, 4, 2]
    assert all(torch.equal(a, b) for a, b in zip(serial, ahead, strict=True))


@pytest.mark.parametrize("n_workers", [1, 2])
def test_batches_from_a_start_and_one_batch_on_demand(rgb_images, image_folder, n_workers):
    paths, _ = load_image_folder(image_folder)

    def crop(image):  # the files have mixed sizes
        return image[..., :30, :30].float()

    for inputs in (check_images(rgb_images), check_images(paths[:6])):
        whole = torch.cat(list(inputs.batches(crop, batch_size=4, n_workers=n_workers)))
        rest = list(inputs.batches(crop, batch_size=4, n_workers=n_workers, start=3))
        assert [len(b) for b in rest] == [3]
        assert torch.equal(rest[0], whole[3:])
        assert list(inputs.batches(crop, batch_size=4, n_workers=n_workers, start=6)) == []
        assert torch.equal(inputs.batch(1, 3, crop), whole[1:3])


@pytest.mark.parametrize(
    ("X", "error", "match"),
    [
        (np.zeros((2, 3, 3, 3, 3), np.uint8), ValueError, "5-D"),
        (np.zeros((5,), np.uint8), ValueError, "1-D array"),
        (np.zeros((4, 3, 8, 3), np.uint8), ValueError, "Ambiguous channel layout"),
        (np.zeros((4, 1, 8, 4), np.uint8), ValueError, "Ambiguous channel layout"),
        (np.zeros((4, 8, 8, 5), np.uint8), ValueError, "no channel axis"),
        (np.full((2, 8, 8, 3), 2.0), ValueError, r"values in \[2, 2\].*lie in \[0, 1\]"),
        (np.full((2, 8, 8, 3), np.nan), ValueError, "NaN or infinity"),
        (np.full((2, 8, 8, 3), np.inf), ValueError, "NaN or infinity"),
        (np.full((2, 8, 8, 3), 300, np.int64), ValueError, r"\[300, 300\].*\[0, 255\]"),
        (np.zeros((0, 8, 8, 3), np.uint8), ValueError, "0 samples"),
        ([], ValueError, "0 samples"),
        (np.zeros((8, 8), np.uint8), ValueError, "2-D array .* takes images"),
        (np.zeros((32, 32, 3), np.uint8), ValueError, r"looks like\s+one \(H, W, C\)"),
        (np.zeros((2, 8, 8, 3), bool), TypeError, "dtype bool"),
        ("cat.jpg", TypeError, "single str"),
    ],
)
def test_bad_inputs_raise_clear_errors(X, error, match):
    with pytest.raises(error, match=match):
        check_images(X)


def test_vectors_only_when_allowed():
    X = np.random.default_rng(0).normal(size=(5, 7))
    inputs = check_images(X, allow_vectors=True)
    assert inputs.kind == "vectors"
    assert _first_batch(inputs).dtype == torch.float32


def test_paths_pil_and_series_are_decoded(image_folder):
    paths, labels = load_image_folder(image_folder)
    from_paths = check_images(paths)
    assert from_paths.kind == "items" and len(from_paths) == 6
    image = from_paths[3]  # grayscale file -> 3 channels
    assert image.shape[0] == 3 and image.dtype == torch.uint8
    from_series = check_images(pd.Series(paths))
    assert torch.equal(from_series[0], from_paths[0])
    pil = [Image.open(p) for p in paths[:2]]
    assert torch.equal(check_images(pil)[1], from_paths[1])


def test_unreadable_file_is_named_with_its_index(image_folder, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    paths, _ = load_image_folder(image_folder)
    inputs = check_images([*paths[:2], str(bad)])
    with pytest.raises(ValueError, match=r"broken\.jpg' \(sample 2\) could not be read"):
        list(inputs.batches(lambda t: t.float()[:, :8, :8], batch_size=2))


def test_mixed_sizes_need_a_resizing_transform(image_folder):
    paths, _ = load_image_folder(image_folder)
    inputs = check_images(paths)
    with pytest.raises(ValueError, match="different sizes"):
        list(inputs.batches(None, batch_size=6))
    resized = list(inputs.batches(lambda t: t[:, :10, :10], batch_size=4, n_workers=2))
    assert [tuple(b.shape) for b in resized] == [(4, 3, 10, 10), (2, 3, 10, 10)]


def test_load_image_folder_counts_skipped_files(image_folder):
    (image_folder / "bees" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"Skipped 1 non-image file"):
        paths, labels = load_image_folder(image_folder)
    assert list(labels) == ["ants"] * 3 + ["bees"] * 3
    assert all(p.endswith((".jpg", ".png")) for p in paths)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="No image files"):
            load_image_folder(tmp_path)


def test_take_selects_a_subset(rgb_images, image_folder):
    subset = check_images(rgb_images).take([4, 1])
    assert torch.equal(_first_batch(subset)[0], _first_batch(check_images(rgb_images))[4])
    paths, _ = load_image_folder(image_folder)
    assert check_images(paths).take([2]).items == [paths[2]]


@pytest.mark.parametrize("draft", ["0", "1"])
def test_small_files_and_arrays_are_preprocessed_as_before(image_folder, monkeypatch, draft):
    """Reduced JPEG decoding leaves small JPEGs, PNGs and arrays bit-identical to the decoders
    used before it (torchvision's for RGB/grayscale JPEGs, Pillow's convert otherwise)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.functional import pil_to_tensor

    from sktransfer.backbones import ImagePreset

    monkeypatch.setenv("SKTRANSFER_JPEG_DRAFT", draft)
    preset = ImagePreset(crop_size=28, resize_size=32)  # the files are 30-40 px: under 2x
    paths, _ = load_image_folder(image_folder)
    before = []
    for path in paths:
        if path.endswith(".jpg"):
            image = decode_jpeg(read_file(path), mode=ImageReadMode.UNCHANGED)
            before.append(preset(image.expand(3, -1, -1)))
        else:
            with Image.open(path) as image:
                before.append(preset(pil_to_tensor(image.convert("RGB"))))
    now = torch.cat(list(check_images(paths).batches(preset, batch_size=4, n_workers=2)))
    assert torch.equal(now, torch.stack(before))
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB").resize((36, 30))) for p in paths])
    expected = preset(torch.from_numpy(arrays).permute(0, 3, 1, 2))
    assert torch.equal(_first_batch_with(check_images(arrays), preset), expected)


def _first_batch_with(inputs, transform):
    return next(inputs.batches(transform, 64))


def test_files_above_the_pixel_limit_are_named_with_their_index(image_folder, monkeypatch):
    paths, _ = load_image_folder(image_folder)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # the files hold 1,200 to 1,600
    inputs = check_images(paths)
    with pytest.warns(Image.DecompressionBombWarning):
        with pytest.raises(ValueError, match=r"2\.png' \(sample 2\) is 40x40 = 1,600 pixels"):
            list(inputs.batches(lambda t: t[:, :8, :8], batch_size=6))


def test_jpeg_files_decode_without_a_warning_or_a_filter(image_folder):
    """torchvision's decode_jpeg warns (deprecated since 0.29) on each call; the decoding of
    files (in worker threads) uses its op, which does not, so no filter is needed."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    from sktransfer.backbones import ImagePreset

    paths, _ = load_image_folder(image_folder)
    jpeg = next(p for p in paths if p.endswith(".jpg"))
    with pytest.warns(DeprecationWarning, match="decoding and encoding capabilities"):
        decode_jpeg(read_file(jpeg), mode=ImageReadMode.UNCHANGED)  # the warning avoided
    filters = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning in a worker thread raises in result()
        inputs = check_images(paths)
        batches = list(inputs.batches(ImagePreset(crop_size=28, resize_size=32), 4, n_workers=2))
    assert sum(len(b) for b in batches) == len(paths)
    assert warnings.filters == filters
