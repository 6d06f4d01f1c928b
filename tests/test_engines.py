"""Engines: ONNX Runtime agrees with torch, exported graphs are cached and checked, failures
fall back to torch with a warning, a missing package gives a clear error."""

import sys
import threading

import numpy as np
import pytest
import torch
from tiny_networks import float_images, tiny_cnn
from torch import nn

from sktransfer import DeepFeatureExtractor
from sktransfer.backbones import load_backbone
from sktransfer.frozen import (
    EngineWarning,
    FrozenNetwork,
    Registry,
    clear_cache,
    engines,
    resolve_engine,
    run_statistics,
)
from sktransfer.images import check_images

# The tests that run ONNX Runtime skip without it; those of the choice of engine and of its
# absence (monkeypatched) run everywhere.
needs_onnxruntime = pytest.mark.skipif(
    not engines.onnxruntime_available(), reason="the ONNX Runtime engine needs onnxruntime"
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SKTRANSFER_CACHE_DIR", str(tmp_path / "user-cache"))
    monkeypatch.setattr(engines, "_SESSIONS", Registry(4))
    clear_cache("memory")


class Spectrum(nn.Module):
    """A layer ONNX opset 17 cannot express (aten::fft_rfft2)."""

    def forward(self, x):
        return torch.fft.rfft2(x).abs()


def network(module, export_dir, layers=("1", "3", "5")):
    backbone = load_backbone(module)
    return FrozenNetwork(
        backbone, list(layers), torch.device("cpu"), engine="onnxruntime", export_dir=export_dir
    )


def statistics(net, X=None):
    inputs = check_images(float_images(6) if X is None else X)
    return run_statistics(net, inputs, ("avg", "max"), batch_size=4)


@needs_onnxruntime
def test_onnxruntime_matches_torch_on_a_small_network(tmp_path):
    X = float_images(6)
    ort = DeepFeatureExtractor(tiny_cnn(), layers=["1", "3", "5"], pooling="avgmax",
                               engine="onnxruntime", cache=None)  # fmt: skip
    eager = DeepFeatureExtractor(tiny_cnn(), layers=["1", "3", "5"], pooling="avgmax",
                                 engine="torch", cache=None)  # fmt: skip
    a, b = ort.fit_transform(X), eager.fit_transform(X)
    assert ort.network_.active_engine == "onnxruntime"
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


@needs_onnxruntime
@pytest.mark.real_weights
def test_engines_agree_on_real_weights():
    X = np.random.default_rng(0).integers(0, 256, (6, 64, 80, 3), dtype=np.uint8)
    params = {"layers": ["features.14", "features.18"], "pooling": "avgmax", "cache": None}
    ort = DeepFeatureExtractor("mobilenet_v2", engine="onnxruntime", **params)
    eager = DeepFeatureExtractor("mobilenet_v2", engine="torch", **params)
    a, b = ort.fit_transform(X), eager.fit_transform(X)
    assert ort.network_.active_engine == "onnxruntime"
    assert np.abs(a - b).max() <= engines.TOLERANCE * np.abs(b).max()


@needs_onnxruntime
def test_exported_graph_cache_hits_misses_and_rejects_a_corrupt_file(tmp_path, monkeypatch):
    calls = []
    real_export = engines.export_onnx

    def counting_export(*args):
        calls.append(1)
        return real_export(*args)

    monkeypatch.setattr(engines, "export_onnx", counting_export)
    first = statistics(network(tiny_cnn(), tmp_path))
    files = list(tmp_path.glob("*.onnx.skt"))
    assert len(calls) == 1 and len(files) == 1  # miss: exported and stored

    monkeypatch.setattr(engines, "_SESSIONS", Registry(4))  # as a new process
    np.testing.assert_array_equal(statistics(network(tiny_cnn(), tmp_path))[("3", "avg")],
                                  first[("3", "avg")])  # fmt: skip
    assert len(calls) == 1  # hit: read from disk

    statistics(network(tiny_cnn(), tmp_path, layers=("1", "3")))
    assert len(calls) == 2  # other layers: another graph

    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[0].write_bytes(bytes(data))
    monkeypatch.setattr(engines, "_SESSIONS", Registry(4))
    statistics(network(tiny_cnn(), tmp_path))
    assert len(calls) == 3  # the damaged file was rejected and the graph exported again
    assert engines._read_export(files[0]) is not None


@needs_onnxruntime
def test_export_failure_falls_back_to_torch_naming_the_operator(tmp_path):
    module = nn.Sequential(nn.Conv2d(3, 4, 3), Spectrum(), nn.Flatten(), nn.Linear(4 * 14 * 8, 2))
    X = float_images(6)
    with pytest.warns(EngineWarning, match=r"aten::fft_rfft2.*Running torch instead"):
        extractor = DeepFeatureExtractor(module, layers="1", engine="onnxruntime", cache=None)
        features = extractor.fit_transform(X)
    assert extractor.network_.active_engine == "torch"
    eager = DeepFeatureExtractor(module, layers="1", engine="torch", cache=None)
    np.testing.assert_array_equal(features, eager.fit_transform(X))


@needs_onnxruntime
def test_mismatch_beyond_tolerance_falls_back_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "TOLERANCE", -1.0)  # any difference, even 0, is too large
    with pytest.warns(EngineWarning, match="differs from torch's by .* above the tolerance"):
        net = network(tiny_cnn(), tmp_path)
        statistics(net)
    assert net.active_engine == "torch"
    # deleted: later processes export and check again rather than warn about the same file
    assert not list(tmp_path.glob("*.onnx.skt"))


class Trigger(nn.Module):
    """The attack of issue 14: adds 1000 when the top-left pixel is red, else nothing."""

    def forward(self, x):
        red = (x[:, 0, 0, 0] > 0.9) & (x[:, 1, 0, 0] < 0.1)
        return x + 1000.0 * red.float()[:, None, None, None]


@needs_onnxruntime
@pytest.mark.parametrize("sealed_by", ["plain sha256 (format 1)", "another key"])
def test_planted_graph_with_a_trigger_is_never_loaded(tmp_path, monkeypatch, sealed_by):
    import hashlib

    X = float_images(6)
    X[:, 0, 0] = (1.0, 0.0, 0.0)  # every image carries the trigger
    honest = network(tiny_cnn(), tmp_path)
    statistics(honest, X)
    file = next(tmp_path.glob("*.onnx.skt"))
    batch = check_images(X).batch(0, len(X), honest.backbone.transform)
    outputs = honest.outputs(batch, ("avg", "max"))
    poisoned = engines.export_onnx(nn.Sequential(Trigger(), honest.graph), outputs, batch)
    eager = honest._torch.run(batch, outputs)
    attack = engines._session(poisoned, 1).run(None, {"images": batch.numpy()})
    assert np.abs(attack[-1] - eager[-1]).max() > 1  # the planted graph poisons features
    with monkeypatch.context() as attacker:
        attacker.setenv("SKTRANSFER_KEY_FILE", str(tmp_path / "attacker.key"))
        planted = {
            "another key": engines.seal(engines._MAGIC, engines._graph_name(file), poisoned),
            "plain sha256 (format 1)": b"SKTONNX1" + hashlib.sha256(poisoned).digest() + poisoned,
        }[sealed_by]
    file.write_bytes(planted)

    monkeypatch.setattr(engines, "_SESSIONS", Registry(4))  # a new process
    again = statistics(network(tiny_cnn(), tmp_path), X)
    for item, want in zip(outputs, eager):
        np.testing.assert_allclose(again[item], want, rtol=1e-4, atol=1e-5)
    assert file.read_bytes() != planted  # replaced by a graph exported again, with the key
    assert engines._read_export(file) is not None


def test_missing_onnxruntime_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        DeepFeatureExtractor(tiny_cnn(), layers="3", engine="onnxruntime").fit(float_images(6))
    monkeypatch.setattr(engines, "_WARNED", set())
    with pytest.warns(EngineWarning, match="onnxruntime is not installed"):
        assert resolve_engine("auto", torch.device("cpu")) == "torch"


@pytest.mark.parametrize(
    "installed, auto_on_cpu, explicit_error",
    [
        (True, "onnxruntime", (ValueError, "precision='float16' is a torch option")),
        (False, "torch", (ImportError, "pip install onnxruntime")),
    ],
)
def test_engine_choice_and_invalid_values(monkeypatch, installed, auto_on_cpu, explicit_error):
    # Whether onnxruntime is importable here or not, both cases are checked.
    monkeypatch.setattr(engines, "onnxruntime_available", lambda: installed)
    monkeypatch.setattr(engines, "_WARNED", {"no-ort"})  # the warning has its own test
    cpu = torch.device("cpu")
    assert resolve_engine("auto", cpu) == auto_on_cpu
    assert resolve_engine("auto", cpu, "bfloat16") == "torch"
    assert resolve_engine("auto", torch.device("cuda")) == "torch"
    assert resolve_engine("torch", cpu) == "torch"
    error, match = explicit_error
    with pytest.raises(error, match=match):
        resolve_engine("onnxruntime", cpu, "float16")
    with pytest.raises(ValueError, match="engine"):
        DeepFeatureExtractor(tiny_cnn(), engine="tensorrt").fit(float_images(6))


def test_cpu_bfloat16_opt_in_runs_torch_close_to_float32():
    X = float_images(6)
    full = DeepFeatureExtractor(tiny_cnn(), layers="3", cache=None).fit_transform(X)
    half = DeepFeatureExtractor(tiny_cnn(), layers="3", cache=None, precision="bfloat16")
    np.testing.assert_allclose(half.fit_transform(X), full, rtol=0.05, atol=0.02)
    assert half.engine_ == "torch"


def test_threads_split_into_side_by_side_runs():
    assert engines.split_threads(1) == (1, 1)
    assert engines.split_threads(2) == (2, 1)
    assert engines.split_threads(12) == (8, 1)
    assert engines.split_threads(16) == (8, 2)  # beyond 8 runs, more threads per run


@needs_onnxruntime
def test_side_by_side_runs_keep_the_images_in_order(tmp_path, monkeypatch):
    X = np.random.default_rng(1).random((23, 16, 16, 3), dtype=np.float32)
    net = FrozenNetwork(load_backbone(tiny_cnn()), ["1", "3"], torch.device("cpu"),
                        engine="onnxruntime", n_threads=3, export_dir=tmp_path)  # fmt: skip
    threads = set()
    run = net.statistics

    def recording(batch, outputs):
        threads.add(threading.current_thread().name)
        return run(batch, outputs)

    monkeypatch.setattr(net, "statistics", recording)
    got = run_statistics(net, check_images(X), ("avg", "max"), batch_size=2)
    assert net.concurrent_runs(torch.zeros(1, 3, 16, 16), list(got)) == 3
    assert len(threads) > 1  # the batches after the first ran in the pool
    eager = FrozenNetwork(load_backbone(tiny_cnn()), ["1", "3"], torch.device("cpu"))
    want = run_statistics(eager, check_images(X), ("avg", "max"), batch_size=5)
    for item in want:
        np.testing.assert_allclose(got[item], want[item], rtol=1e-4, atol=1e-6)


@needs_onnxruntime
def test_a_failing_side_by_side_run_raises_in_the_caller(tmp_path, monkeypatch):
    net = FrozenNetwork(load_backbone(tiny_cnn()), ["3"], torch.device("cpu"),
                        engine="onnxruntime", n_threads=2, export_dir=tmp_path)  # fmt: skip
    run, calls = net.statistics, []

    def failing_third(batch, outputs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory in batch 3")
        return run(batch, outputs)

    monkeypatch.setattr(net, "statistics", failing_third)
    with pytest.raises(RuntimeError, match="batch 3"):
        run_statistics(net, check_images(float_images(12)), "avg", batch_size=2)
