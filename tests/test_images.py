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
