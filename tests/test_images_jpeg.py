"""JPEG files decode through torchvision's decoder exactly as through Pillow."""

import numpy as np
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from sktransfer.images import _decode_jpeg, _item_to_tensor


def test_jpeg_fast_decoder_matches_pillow(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for mode, shape in (("RGB", (21, 34, 3)), ("L", (19, 25)), ("CMYK", (12, 10, 4))):
        path = tmp_path / f"{mode}.jpg"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(path)
        files.append(path)
    for path in files:
        with Image.open(path) as image:
            expected = pil_to_tensor(image.convert("RGB"))
        got = _item_to_tensor(str(path), 0)
        assert got.shape == expected.shape and bool((got == expected).all()), path.name
    assert _decode_jpeg(str(files[0])) is not None
    assert _decode_jpeg(str(files[2])) is None  # CMYK: Pillow's conversion stays the reference


def test_unreadable_jpeg_still_gets_the_clear_error(tmp_path):
    import pytest

    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="could not be read"):
        _item_to_tensor(str(path), 3)
