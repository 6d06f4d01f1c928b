"""Tests for ``sktransfer report``: bad data, the outputs, the rerun from cache, Dask search."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from PIL import Image
from tiny_networks import tiny_network

from sktransfer.__main__ import main
from sktransfer.report import build_report
from sktransfer.report.budget import Budget
from sktransfer.report.data import DataError, load_report_data, subsample_sizes
from sktransfer.report.plan import affordable_images, cold_cost
from sktransfer.report.recommend import recommend


def make_tree(root, classes=("ants", "bees"), n=4, size=12):
    rng = np.random.default_rng(0)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


def tiny_report(tmp_path, data=None, **params):
    """A report of the tiny network into ``tmp_path / "o"``, its cache in ``tmp_path / "c"``."""
    params = dict(backbone=tiny_network(), weights=None, cache=tmp_path / "c", **params)
    return build_report(data, out=tmp_path / "o", **params)


def run_cli(argv, capsys):
    code = main(["report", *argv, "--quiet"])
    captured = capsys.readouterr()
    return code, captured.err


# ------------------------------------------------------------------------- bad DATA


def check_clear_error(code, err, *phrases):
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("sktransfer report: error: ")
    for phrase in phrases:
        assert phrase in err, err


def test_missing_folder(tmp_path, capsys):
    code, err = run_cli([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], capsys)
    check_clear_error(code, err, "does not exist", "nowhere")


def test_one_class(tmp_path, capsys):
    make_tree(tmp_path / "data", classes=("ants",))
    code, err = run_cli([str(tmp_path / "data"), "--out", str(tmp_path / "o")], capsys)
    check_clear_error(code, err, "1 class", "at least 2")


def test_empty_class_folders(tmp_path, capsys):
    root = make_tree(tmp_path / "data")
    (root / "wasps").mkdir()
    code, err = run_cli([str(root), "--out", str(tmp_path / "o")], capsys)
    check_clear_error(code, err, "['wasps']", "contain no images")


def test_all_class_folders_empty(tmp_path, capsys):
    for cls in ("ants", "bees"):
        (tmp_path / "data" / cls).mkdir(parents=True)
    code, err = run_cli([str(tmp_path / "data"), "--out", str(tmp_path / "o")], capsys)
    check_clear_error(code, err, "No image files found")


def test_unreadable_images(tmp_path, capsys):
    root = make_tree(tmp_path / "data")
    (root / "bees" / "broken.jpg").write_bytes(b"not a jpeg at all")
    code, err = run_cli([str(root), "--out", str(tmp_path / "o")], capsys)
    check_clear_error(code, err, "cannot be read as images", "broken.jpg")


def test_decompression_bomb_is_refused_by_name(tmp_path, capsys):
    import struct
    import zlib

    root = make_tree(tmp_path / "data")
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)  # header only
    chunks = [struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))]
    chunks.append(struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))
    (root / "bees" / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(chunks))
    code, err = run_cli([str(root), "--out", str(tmp_path / "o")], capsys)
    check_clear_error(code, err, "cannot be read as images", "bomb.png", "decompression bomb")


def test_npz_without_labels(tmp_path, capsys):
    path = tmp_path / "data.npz"
    np.savez(path, images=np.zeros((10, 8, 8), np.uint8))
    code, err = run_cli([str(path), "--out", str(tmp_path / "o")], capsys)
    check_clear_error(code, err, "no images with labels", "['images']")


def test_not_an_npz(tmp_path, capsys):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n")
    code, err = run_cli([str(path), "--out", str(tmp_path / "o")], capsys)
    check_clear_error(code, err, "not an .npz")


def test_too_few_images_per_class(tmp_path, capsys):
    make_tree(tmp_path / "data", n=2)
    code, err = run_cli([str(tmp_path / "data"), "--out", str(tmp_path / "o")], capsys)
    check_clear_error(code, err, "fewer than 4 images")


# ------------------------------------------------------------------------- reading DATA


def test_train_val_folders_are_the_split(tmp_path):
    make_tree(tmp_path / "d" / "train", n=3)
    make_tree(tmp_path / "d" / "val", n=2)
    data = load_report_data(tmp_path / "d")
    assert data.split == "given"
    assert (len(data.y_train), len(data.y_test)) == (6, 4)
    assert sorted(set(data.y_train)) == ["ants", "bees"]


def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 8, 8), dtype=np.uint8)
    labels = np.repeat([3, 7], 10)
    np.savez(tmp_path / "pairs.npz", images=images, labels=labels)
    np.savez(
        tmp_path / "medmnist.npz",
        train_images=images,
        train_labels=labels[:, None],  # MedMNIST's (N, 1) labels
        test_images=images[:6],
        test_labels=labels[:6, None],
    )
    pairs = load_report_data(tmp_path / "pairs.npz")
    assert pairs.split == "holdout" and len(pairs.y_train) + len(pairs.y_test) == 20
    med = load_report_data(tmp_path / "medmnist.npz")
    assert med.split == "given" and med.y_train.shape == (20,) and len(med.y_test) == 6


def test_npz_label_count_mismatch(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((10, 8, 8)), y=np.arange(9) % 2)
    with pytest.raises(DataError, match="10 images .* 9 labels"):
        load_report_data(tmp_path / "d.npz")


def test_max_images_subsamples_stratified(tmp_path):
    data = load_report_data(None, default_images=300, max_images=100)
    assert len(data.y_train) + len(data.y_test) == 100  # exactly, never raised silently
    assert len(np.unique(data.y_train)) == 10
    assert any("Subsampled" in note and "--max-images 100" in note for note in data.notes)
    assert data.max_images == 100


def test_subsample_starts_from_the_whole_data():
    """A second subsample (the budget's) is drawn from all images, as a fresh
    ``load_report_data(..., max_images=n)`` draws it: the generated script relies on it."""
    data = load_report_data(None, default_images=300, max_images=200)
    data.subsample(80, random_state=0)
    fresh = load_report_data(None, default_images=300, max_images=80)
    np.testing.assert_array_equal(data.X_train, fresh.X_train)
    np.testing.assert_array_equal(data.y_test, fresh.y_test)
    assert sum("Subsampled" in note for note in data.notes) == 1


def test_subsample_sizes_hand_computed():
    assert subsample_sizes([10, 10, 5], [2, 2, 1], 10).tolist() == [4, 4, 2]
    assert subsample_sizes([7, 3], [2, 2], 5).tolist() == [3, 2]  # 3.5, 1.5 -> minimum 2
    assert subsample_sizes([100, 3, 2, 1], [2, 2, 1, 1], 6).tolist() == [2, 2, 1, 1]


def test_train_per_class_holds_counts(tmp_path):
    make_tree(tmp_path / "d" / "train", n=3)
    make_tree(tmp_path / "d" / "val", n=2)
    make_tree(tmp_path / "d" / "train", classes=("wasps",), n=5)
    make_tree(tmp_path / "d" / "val", classes=("wasps",), n=1)
    counts = load_report_data(tmp_path / "d").describe()["train_per_class"]
    assert counts == {"ants": 3, "bees": 3, "wasps": 5}


def test_budget_says_its_reserves():
    budget = Budget(100.0, start=time.perf_counter() - 40)
    assert 59 <= budget.remaining() <= 60
    budget.hold("t-SNE", 20)
    assert 29 <= budget.left() <= 30  # 60 - 10 for writing the report - 20 for t-SNE
    assert budget.status().endswith("holding 10 s for writing the report and 20 s for t-SNE")
    budget.release("t-SNE")
    assert budget.held() == "10 s for writing the report"


def test_subsample_only_when_it_saves_a_real_share():
    budget = Budget(240.0)  # 216 s left after the 24 s for writing the report
    assert affordable_images(0.01, 1200, budget) == 1200  # 12 s: all of them
    assert 1070 <= affordable_images(0.1, 2000, budget) <= 1080  # half of 216 s: 1080
    # 1,200 images at 0.1 s: 120 s, over half of what is left, but 120 fewer images would
    # save only 12 s (5 % of the budget): keep them all
    assert affordable_images(0.1, 1200, budget) == 1200
    # never below the smallest stratified subsample (2 training + 1 test image per class)
    assert affordable_images(10.0, 1200, budget, least=303) == 303


def test_a_slow_pilot_subsamples_the_pass_and_says_so(tmp_path, monkeypatch):
    from sktransfer.report import stages

    monkeypatch.setattr(stages, "pilot_cost", lambda extractor, X: (0.0, 1.0))  # 1 s an image
    results = tiny_report(tmp_path, max_images=300, finetune=False, verbose=0)
    # 300 s for all of them, over half of the ~270 s left: about 135 images are kept
    n_images = results["activations"]["n_images"]
    assert 100 < n_images < 150
    assert n_images == results["data"]["n_train"] + results["data"]["n_test"]
    assert results["budget_notes"][0].startswith("Activations: about 1000 ms per image")
    assert f"subsampled to {n_images}" in results["budget_notes"][0]


EXTRACTION = {"layer": "features.18", "accuracy": 0.954, "fit_seconds": 10.0}


def finetuned(accuracy, epochs=2):
    params = {"train_layers": 3, "image_size": 160}
    return {
        "accuracy": accuracy,
        "fit_seconds": 52.0,
        "epochs": epochs,
        "params": params,
        "torch_threads": 1,
    }


@pytest.mark.parametrize(
    "finetune, approach, phrases",
    [
        (None, "feature extraction", ["Only feature extraction", "skipped"]),
        (finetuned(0.910), "feature extraction", ["0.910", "0.954", "4.4 points less", "5.2x"]),
        (finetuned(0.959), "feature extraction", ["0.5 points more, within the 1-point"]),
        (finetuned(0.967), "fine-tuning", ["1.3 points more, above the 1-point margin"]),
    ],
)
def test_recommendation_is_one_sentence_saying_what_won_and_why(finetune, approach, phrases):
    recommendation = recommend(EXTRACTION, finetune)
    assert recommendation["approach"] == approach
    reason = recommendation["reason"]
    assert reason[0].isupper() and reason.endswith(".") and reason.count(". ") == 0, reason
    assert "logistic regression on layer features.18" in reason
    if finetune:
        assert "Fine-tuning the top 3 blocks (2 epochs at 160 px)" in reason
    for phrase in phrases:
        assert phrase in reason, reason


def test_ten_image_folder(tmp_path):
    """2 classes x 5 images: every stage runs (fine-tuning included) and the report says
    what it had."""
    root = make_tree(tmp_path / "data", n=5, size=16)
    results = tiny_report(tmp_path, root, budget_minutes=2, verbose=0)
    assert results["data"]["n_train"] + results["data"]["n_test"] == 10
    assert sum(results["data"]["train_per_class"].values()) == results["data"]["n_train"]
    assert results["fine_tuning"] is not None and results["tsne_layers"]
    assert (tmp_path / "o" / "report.html").stat().st_size > 0


# ------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same report twice over one cache: the second run reads the activations back."""
    root = make_tree(tmp_path_factory.mktemp("data") / "shapes", n=12, size=16)
    cache = tmp_path_factory.mktemp("cache")
    runs, network = [], tiny_network()
    for i in range(2):
        out = tmp_path_factory.mktemp(f"out{i}")
        params = dict(backbone=network, weights=None, cache=cache, verbose=0)
        runs.append((out, build_report(root, out=out, budget_minutes=2, **params)))
    return runs


def test_report_files(two_runs):
    out, results = two_runs[0]
    for name in ("report.md", "report.html", "report.json", "recommended_pipeline.py"):
        assert (out / name).stat().st_size > 0
    page = (out / "report.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 3  # self-contained
    assert "<table>" in page and "recommended_pipeline" in page
    stored = json.loads((out / "report.json").read_text())
    assert stored["recommendation"]["approach"] in ("feature extraction", "fine-tuning")
    assert set(stored["stage_seconds"]) >= {"activations", "scores", "feature extraction"}
    assert [row["layer"] for row in stored["layers"]]
    assert np.array(stored["confusion_matrix"]["matrix"]).sum() == stored["data"]["n_test"]
    compile((out / "recommended_pipeline.py").read_text(), "recommended_pipeline.py", "exec")
    markdown = (out / "report.md").read_text()
    assert "## Stage times" in markdown and "![" in markdown


def test_second_run_reads_activations_back(two_runs):
    (_, first), (_, second) = two_runs
    assert second["layers"] == first["layers"]
    assert second["feature_extraction"]["accuracy"] == first["feature_extraction"]["accuracy"]
    # the pilot of the second run hit the cache: a near-zero per-image cost
    assert second["activations"]["seconds"] < first["activations"]["seconds"] + 0.5
    assert second["stage_seconds"]["scores"] < first["stage_seconds"]["scores"]


def test_spent_budget_skips_and_says_so(tmp_path, capsys):
    # the clock started a minute ago (as the command line's does, before the imports)
    started = time.perf_counter() - 60
    results = tiny_report(tmp_path, max_images=60, budget_minutes=1, started=started, verbose=1)
    notes = " ".join(results["budget_notes"])
    assert "Fine-tuning skipped" in notes and "t-SNE skipped" in notes
    # every reserve is said, in the skip notes and the stage lines
    assert "after holding 6 s for writing the report and " in notes
    assert "s for t-SNE" in notes
    err = capsys.readouterr().err
    assert "[1/7] data: embedded default: digits (0 s of budget left, holding 6 s for" in err
    assert results["fine_tuning"] is None
    assert "Fine-tuning skipped" in (tmp_path / "o" / "report.md").read_text()


def test_report_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--budget" in out and "--backbone" in out and "--out" in out


# ------------------------------------------------------------------------- Dask search


def search_and_data(cache, network):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    from sktransfer import DeepFeatureExtractor

    rng = np.random.default_rng(0)
    y = np.repeat(["cat", "dog"], 12)
    images = rng.integers(0, 200, (24, 16, 16, 3), dtype=np.uint8)
    images[y == "dog"] += 40  # something to learn
    layers = ["2", "3"]
    pipeline = Pipeline(
        [
            (
                "features",
                DeepFeatureExtractor(
                    network,
                    weights=None,
                    engine="torch",
                    cache=str(cache),  # a folder every worker reads
                    record_layers=layers,
                    random_state=0,
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )
    grid = {"features__layers": layers, "clf__C": [0.01, 1.0]}
    return GridSearchCV(pipeline, grid, cv=2), images, y


def test_grid_search_on_dask_matches_local(tmp_path):
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    from distributed import Client, LocalCluster
    from joblib import parallel_backend

    network = tiny_network()
    local, images, y = search_and_data(tmp_path / "cache", network)
    local.fit(images, y)
    distributed_search, _, _ = search_and_data(tmp_path / "cache", network)
    # processes=False: workers are threads of this process, light enough for a unit test;
    # the cache folder is what lets separate machines share one forward pass.
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        with Client(cluster), parallel_backend("dask"):
            distributed_search.set_params(n_jobs=-1).fit(images, y)
    assert distributed_search.best_params_ == local.best_params_
    np.testing.assert_allclose(
        distributed_search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert distributed_search.best_score_ == pytest.approx(local.best_score_)
    assert any((tmp_path / "cache").iterdir())


def test_cold_cost_kept_for_cached_reruns(tmp_path):
    from sktransfer.report.memo import Memo

    memory = Memo(tmp_path)
    assert cold_cost(memory, "net", 0.1) == (0.1, False)
    assert cold_cost(memory, "net", 0.001) == (0.1, True)  # a cache hit: report the cold cost
    assert cold_cost(memory, "net", 0.09) == (0.09, False)  # a new cold measurement


def test_named_backbone_rerun_reads_assembled_features_back(tmp_path):
    params = dict(backbone="resnet18", weights=None, cache=tmp_path / "c", max_images=40, verbose=0)
    params.update(finetune=False, budget_minutes=1)
    first = build_report(None, out=tmp_path / "a", **params)
    second = build_report(None, out=tmp_path / "b", **params)
    assert not first["activations"]["from_cache"] and second["activations"]["from_cache"]
    assert second["layers"] == first["layers"]
    assert second["stage_seconds"]["activations"] < first["stage_seconds"]["activations"] / 3
    # the fit-time column still shows the cost of computing the activations
    assert second["feature_extraction"]["fit_seconds"] > 0


class _Payload:
    """What an attacker plants in a shared cache folder: unpickling it creates a file."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_planted_pickles_in_the_cache_are_never_executed(tmp_path):
    import pickle

    params = dict(backbone=tiny_network(), weights=None, cache=tmp_path / "c", verbose=0)
    params.update(max_images=30, finetune=False)
    first = build_report(None, out=tmp_path / "a", **params)
    memo_files = list((tmp_path / "c" / "report").rglob("*.memo"))
    assert len(memo_files) >= 4  # scores, held-out results, t-SNE, costs
    sentinel = tmp_path / "attacker-ran"
    bomb = pickle.dumps(_Payload(str(sentinel)))
    for file in memo_files:  # every memoised result replaced, and joblib's names planted
        file.write_bytes(bomb)
        (file.parent / "output.pkl").write_bytes(bomb)
    second = build_report(None, out=tmp_path / "b", **params)
    assert not sentinel.exists()

    def scores(results):  # recomputed: the same scores, other timings
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in results["layers"]]

    assert scores(second) == scores(first)
