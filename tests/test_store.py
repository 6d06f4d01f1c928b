"""The activation cache: hits and misses counted in forward passes, exactness, invalidation,
damaged files, bounds."""

import os
import pathlib
import stat
import threading

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from tiny_networks import float_images, tiny_cnn

from sktransfer import DeepFeatureExtractor, extraction
from sktransfer.frozen import FORWARD_COUNTS, Registry
from sktransfer.frozen import network as frozen_network
from sktransfer.frozen.files import StoreWarning, write_atomic
from sktransfer.frozen.store import (
    DiskCache,
    MemoryCache,
    _decode,
    _encode,
    clear_cache,
    get_cache,
    image_keys,
)
from sktransfer.images import check_images


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("SKTRANSFER_CACHE_DIR", str(tmp_path / "user-cache"))
    # Every test starts with nothing probed and no shared network.
    monkeypatch.setattr(frozen_network, "_SHAPES", Registry(64))
    monkeypatch.setattr(frozen_network, "_NETWORKS", Registry(8))
    clear_cache("memory")
    yield
    clear_cache("memory")


def forward_images():
    return FORWARD_COUNTS["images"]


def extractor(module=None, **params):
    params = {"layers": ["1", "3"], "pooling": "avg", "engine": "torch", **params}
    return DeepFeatureExtractor(module if module is not None else tiny_cnn(), **params)


def test_clones_folds_poolings_and_recorded_layers_hit():
    X = float_images()
    first = extractor(record_layers=["5"])
    before = forward_images()
    features = first.fit_transform(X)
    assert forward_images() - before == len(X) + 1  # one probe, one pass over the images

    before = forward_images()
    np.testing.assert_array_equal(clone(first).fit_transform(X), features)
    clone(first).fit(X[:8]).transform(X[8:])  # a fold: subsets of the same images
    clone(first).set_params(pooling="avgmax").fit_transform(X)
    clone(first).set_params(pooling="max", layers="5").fit(X).transform(X)
    assert forward_images() - before == 0

    fresh = float_images(3, seed=1)
    before = forward_images()
    clone(first).fit(X).transform(np.concatenate([X[:4], fresh]))
    assert forward_images() - before == len(fresh)  # only the misses are computed


def test_cached_features_identical_to_uncached():
    X = float_images()
    for pooling in ("avg", "max", "avgmax", None):
        uncached = extractor(pooling=pooling, cache=None).fit_transform(X)
        cached = extractor(pooling=pooling).fit(X)
        np.testing.assert_array_equal(cached.transform(X), uncached)  # miss
        np.testing.assert_array_equal(cached.transform(X), uncached)  # hit


def test_changed_weights_miss():
    X = float_images()
    extractor(tiny_cnn(0)).fit_transform(X)
    before = forward_images()
    extractor(tiny_cnn(1)).fit_transform(X)
    assert forward_images() - before == len(X) + 1


def test_changed_preprocessing_misses(monkeypatch):
    from sktransfer.backbones import load_backbone

    class Scale:
        def __init__(self, factor):
            self.factor = factor

        def __call__(self, batch):
            return batch.float() * self.factor

        def __repr__(self):
            return f"Scale({self.factor})"

    def loader(factor):
        def load(backbone, weights, seed):
            loaded = load_backbone(backbone, weights, random_state=seed)
            loaded.transform = Scale(factor)
            return loaded

        return load

    X = float_images()
    monkeypatch.setattr(extraction, "_load_backbone", loader(1.0))
    one = extractor().fit_transform(X)
    monkeypatch.setattr(extraction, "_load_backbone", loader(0.5))
    before = forward_images()
    half = extractor().fit_transform(X)
    assert forward_images() - before == len(X) + 1
    assert not np.array_equal(one, half)


def test_input_dtype_and_size_never_share_an_entry():
    X = float_images(4)
    as_uint8 = (X * 255).astype(np.uint8)
    keys = set(image_keys(check_images(X)))
    assert keys.isdisjoint(image_keys(check_images(as_uint8)))
    assert keys.isdisjoint(image_keys(check_images(X[:, :15, :15])))
    assert len(keys) == 4
    assert image_keys(check_images(X.copy())) == image_keys(check_images(X))


def test_file_key_follows_size_and_mtime(tmp_path):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    first = image_keys(check_images([str(path)]))
    os.utime(path, ns=(1, 1))
    assert image_keys(check_images([str(path)])) != first


def test_truncated_disk_entry_is_recomputed(tmp_path):
    X = float_images()
    disk = DiskCache(tmp_path / "cache")
    features = extractor(cache=disk).fit_transform(X)
    files = sorted((tmp_path / "cache" / "activations").rglob("*.act"))
    assert len(files) == len(X)
    files[0].write_bytes(files[0].read_bytes()[:-7])  # a killed writer, a full disk

    disk.front.clear()  # as a new process would: read everything from disk
    before = forward_images()
    again = extractor(cache=disk).fit_transform(X)
    assert forward_images() - before == 1  # only the damaged entry
    assert disk.corrupt_files == 1
    # Recomputed alone rather than in a batch of 12: equal up to float32 rounding.
    np.testing.assert_allclose(again, features, rtol=1e-5, atol=1e-7)
    assert files[0].exists()  # rewritten whole


def test_disk_cache_is_shared_by_a_new_handle(tmp_path):
    X = float_images()
    features = extractor(cache=str(tmp_path / "c")).fit_transform(X)
    clear_cache("memory")
    other = DiskCache(tmp_path / "c")  # another process's handle: an empty memory front
    before = forward_images()
    np.testing.assert_array_equal(extractor(cache=other).fit_transform(X), features)
    assert forward_images() - before == 0


def test_damaged_or_foreign_bytes_are_rejected():
    data = _encode({("layer", "avg"): np.arange(4, dtype=np.float32)}, "ctx", "img")
    assert _decode(data, "ctx", "img")[("layer", "avg")].tolist() == [0, 1, 2, 3]
    flipped = bytearray(data)
    flipped[-1] ^= 1
    for bad in (data[:-1], bytes(flipped), b"", b"not a cache file" * 4):
        assert _decode(bad, "ctx", "img") is None
    # another image's or another context's valid entry, moved to this name
    assert _decode(data, "ctx", "other image") is None
    assert _decode(data, "other context", "img") is None


def test_concurrent_writers_leave_a_whole_file(tmp_path):
    target = tmp_path / "entry.act"
    payloads = [
        _encode({("l", "avg"): np.full(50_000, i, np.float32)}, "ctx", "img") for i in range(4)
    ]

    def write(data):
        for _ in range(10):
            write_atomic(target, data)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entry = _decode(target.read_bytes(), "ctx", "img")
    assert entry is not None and len(set(entry[("l", "avg")].tolist())) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_memory_bound_evicts_least_recently_used():
    cache = MemoryCache(max_bytes=3 * (400 + 64))
    row = {("l", "avg"): np.zeros(100, np.float32)}
    cache.put("ctx", {"a": row, "b": row, "c": row})
    cache.get("ctx", ["a"], {("l", "avg")})  # a is now the most recently used
    cache.put("ctx", {"d": row})
    found = cache.get("ctx", ["a", "b", "c", "d"], {("l", "avg")})
    assert [entry is not None for entry in found] == [True, False, True, True]
    assert cache.nbytes <= cache.max_bytes


def test_disk_bound_and_clear(tmp_path):
    X = float_images()
    disk = DiskCache(tmp_path / "small", max_bytes=2000)
    extractor(cache=disk).fit_transform(X)
    size = sum(f.stat().st_size for f in (tmp_path / "small").rglob("*.act"))
    assert 0 < size <= 2000
    clear_cache(disk)
    assert not list((tmp_path / "small").rglob("*.act"))
    assert disk.front.nbytes == 0


def test_cache_parameter_values():
    assert get_cache("memory") is get_cache("memory")
    assert get_cache(None) is None
    with pytest.raises(ValueError, match="record_layers entries"):
        extractor(record_layers=[3]).fit(float_images(2))


def test_grid_search_over_layers_costs_one_pass():
    X = float_images(20)
    y = np.array([0, 1] * 10)
    layers = [["1"], ["3"], None]
    search = GridSearchCV(
        Pipeline([("features", extractor(record_layers=layers)), ("clf", RidgeClassifier())]),
        {"features__layers": layers, "features__pooling": ["avg", "avgmax"],
         "clf__alpha": [0.1, 1.0]},
        cv=2,
    )  # fmt: skip
    before = forward_images()
    search.fit(X, y)
    assert forward_images() - before == len(X) + 1


def test_parallel_grid_search_shares_the_disk_cache(tmp_path):
    X = float_images(16)
    y = np.array([0, 1] * 8)
    pipe = Pipeline(
        [("features", extractor(cache=str(tmp_path / "c"))), ("clf", RidgeClassifier())]
    )
    grid = {"features__pooling": ["avg", "max"], "clf__alpha": [0.1, 1.0]}
    parallel = GridSearchCV(pipe, grid, cv=2, n_jobs=2).fit(X, y)
    assert len(list((tmp_path / "c" / "activations").rglob("*.act"))) == len(X)
    serial = GridSearchCV(clone(pipe).set_params(features__cache=None), grid, cv=2).fit(X, y)
    np.testing.assert_allclose(
        parallel.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"]
    )


# ------------------------------------------------------------------ a store others can write


def disk_files(folder, pattern="*.act"):
    return sorted((folder / "activations").rglob(pattern))


def test_entry_rewritten_without_the_key_is_recomputed(tmp_path, monkeypatch):
    X = float_images()
    disk = DiskCache(tmp_path / "shared")
    features = extractor(cache=disk).fit_transform(X)
    context = next(iter(disk.front._entries))[0]
    keys = image_keys(check_images(X))
    target = disk._file(disk._context_dir(context), keys[0])
    poisoned = {item: row + 1000 for item, row in disk.front.peek(context, keys[0]).items()}
    # the attacker re-encodes the entry with a checksum of their own: another key
    with monkeypatch.context() as attacker:
        attacker.setenv("SKTRANSFER_KEY_FILE", str(tmp_path / "attacker.key"))
        target.write_bytes(_encode(poisoned, context, keys[0]))
    clear_cache("memory")

    other_process = DiskCache(tmp_path / "shared")
    before = forward_images()
    again = extractor(cache=other_process).fit_transform(X)
    assert forward_images() - before == 1  # the planted entry only, recomputed
    assert other_process.corrupt_files == 1
    np.testing.assert_allclose(again, features, rtol=1e-5, atol=1e-7)


def test_entry_with_rows_of_another_shape_is_recomputed(tmp_path):
    X = float_images()
    disk = DiskCache(tmp_path / "c")
    features = extractor(cache=disk).fit_transform(X)
    context = next(iter(disk.front._entries))[0]
    keys = image_keys(check_images(X))
    wrong = {item: np.zeros(row.size + 3, np.float32) for item, row in
             disk.front.peek(context, keys[5]).items()}  # fmt: skip
    # validly sealed (a writer holding the key), yet not the context's shapes
    disk._file(disk._context_dir(context), keys[5]).write_bytes(_encode(wrong, context, keys[5]))

    other_process = DiskCache(tmp_path / "c")
    before = forward_images()
    again = extractor(cache=other_process).fit_transform(X)  # no crash in np.stack
    assert forward_images() - before == 1
    np.testing.assert_allclose(again, features, rtol=1e-5, atol=1e-7)


def test_file_key_follows_content_even_with_mtime_restored(tmp_path):
    from PIL import Image

    path = str(tmp_path / "a.bmp")  # uncompressed: new pixels, same size
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    info = os.stat(path)
    disk = DiskCache(tmp_path / "c")
    stale = extractor(cache=disk).fit([path]).transform([path])
    old_key = image_keys(check_images([path]))

    Image.fromarray(255 - pixels).save(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # what an attacker restores
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (info.st_size, info.st_mtime_ns)
    assert image_keys(check_images([path])) != old_key

    expected = extractor(cache=None).fit([path]).transform([path])
    assert not np.allclose(expected, stale)
    before = forward_images()
    from_disk = extractor(cache=DiskCache(tmp_path / "c")).fit([path]).transform([path])
    assert forward_images() - before == 1  # the disk entry of the old content is not served
    from_memory = extractor(cache=disk).fit([path]).transform([path])  # its front: old entry
    np.testing.assert_allclose(from_disk, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(from_memory, from_disk)


def user_files(folder):
    """Files a user keeps under a cache folder, some named like the store's own."""
    files = [
        folder / "activations" / "experiment1" / "results.csv",
        folder / "activations" / "notes.txt",
        folder / "activations" / ("a" * 32) / ("b" * 40 + ".act"),  # a folder it did not create
        folder / "onnx" / "my-model.onnx",
    ]
    for file in files:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("the user's")
    return files


@pytest.mark.parametrize("store_first", [True, False])
def test_clear_and_bound_delete_only_the_store_files_in_its_folders(tmp_path, store_first):
    folder = tmp_path / "c"
    if store_first:  # the store created activations/ and onnx/; the user added files later
        extractor(cache=str(folder), engine="auto").fit_transform(float_images())
    files = user_files(folder)
    disk = DiskCache(folder, max_bytes=2000)
    extractor(cache=disk, engine="auto").fit_transform(float_images(20, seed=1))  # over the bound
    own = [file for file in disk_files(folder) if file not in files]
    assert 0 < sum(file.stat().st_size for file in own) <= 2000
    context_dir = own[0].parent
    files.append(context_dir / "mine.csv")  # in a folder the store created, not its name
    files[-1].write_text("the user's")

    clear_cache(disk)
    assert set(disk_files(folder)) <= set(files) and not list(folder.rglob("*.onnx.skt"))
    assert [file.read_text() for file in files] == ["the user's"] * len(files)
    assert not (folder / "activations" / "experiment1" / ".sktransfer-store").exists()
    assert context_dir.is_dir()  # kept for the user's file: the store deletes no folder in use


def test_read_only_store_computes_without_storing_with_one_warning(tmp_path, monkeypatch):
    from sktransfer.frozen import store as store_module

    X = float_images()
    folder = tmp_path / "someone-elses"
    expected = extractor(cache=str(folder)).fit(X[:6]).transform(X[:6])  # half the images
    expected = np.concatenate([expected, extractor(cache=None).fit(X).transform(X[6:])])
    clear_cache("memory")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(folder))

    # Simulated, so that the test also fails when run as root (who can write anywhere).
    monkeypatch.setattr(store_module, "write_atomic", refuse)
    monkeypatch.setattr(store_module, "make_store_dir", refuse)
    read_only = DiskCache(folder)
    with pytest.warns(StoreWarning, match="cannot be written.*without storing") as caught:
        features = extractor(cache=read_only).fit(X).transform(X)
        again = extractor(cache=read_only).fit(X).transform(X)
    assert len(caught) == 1
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(again, features)
    assert len(disk_files(folder)) == 6


def test_unreadable_store_computes_without_storing_with_one_warning(tmp_path, monkeypatch):
    X = float_images()
    folder = tmp_path / "someone-elses"
    extractor(cache=str(folder)).fit_transform(X)
    expected = extractor(cache=None).fit_transform(X)
    original = pathlib.Path.read_bytes

    def read_bytes(path):
        if str(path).startswith(str(folder / "activations")):
            raise PermissionError(13, "Permission denied", str(path))
        return original(path)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    with pytest.warns(StoreWarning, match="cannot be read") as caught:
        features = extractor(cache=DiskCache(folder)).fit_transform(X)
    assert len(caught) == 1
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="file permissions: root reads and writes any file (the simulated tests above run)",
)
def test_store_of_another_user_with_real_permissions(tmp_path):
    X = float_images()
    folder = tmp_path / "someone-elses"
    extractor(cache=str(folder)).fit(X[:6]).transform(X[:6])
    expected = extractor(cache=None).fit_transform(X)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        with pytest.warns(StoreWarning) as caught:
            features = extractor(cache=DiskCache(folder)).fit_transform(X)
    finally:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert len(caught) == 1
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not hasattr(os, "umask"), reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o002, 0o077])
def test_created_files_and_folders_follow_the_umask(tmp_path, umask):
    from sktransfer.report.memo import Memo

    previous = os.umask(umask)
    try:
        folder = tmp_path / "c"
        pytest.importorskip("onnxruntime")
        extractor(cache=str(folder), engine="onnxruntime").fit_transform(float_images(4))
        Memo(folder / "report").cache(np.cumsum)(np.arange(3))
    finally:
        os.umask(previous)
    paths = [path for path in folder.rglob("*")]
    kinds = {path.suffix or path.name for path in paths if path.is_file()}
    assert {".act", ".skt", ".memo", "lock", ".sktransfer-store"} <= kinds
    for path in paths:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_nothing_under_a_cache_folder_is_unpickled():
    """The rule of the package: no pickle, joblib or unsafe torch loading anywhere in it."""
    import re

    import sktransfer

    pattern = re.compile(r"pickle\.loads?\(|joblib\.load\(|allow_pickle=True|torch\.load\(")
    offenders = []
    for source in pathlib.Path(sktransfer.__file__).parent.rglob("*.py"):
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if pattern.search(line) and "weights_only=True" not in line:
                offenders.append(f"{source.name}:{number}: {line.strip()}")
    assert not offenders
