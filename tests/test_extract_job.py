"""The extraction job: Parquet chunks, resuming (also after SIGKILL), refusals, Dask workers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_networks import pooled_conv

from sktransfer import DeepFeatureExtractor, ExtractJobError, extract_features
from sktransfer.__main__ import main
from sktransfer.extract_folder import MANIFEST, JobFolder

pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow (pip install pyarrow)")

N_IMAGES = 24
CHUNK = 3


def job_options(**changes):
    options = dict(
        backbone=pooled_conv(),
        weights=None,
        layers=["1"],
        chunk_size=CHUNK,
        cache=False,
        n_jobs=1,
        verbose=0,
    )
    return {**options, **changes}


@pytest.fixture
def images(tmp_path):
    """24 readable 12 x 12 images in two classes, and one broken .jpg in class 'b'."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for i in range(N_IMAGES):
        folder = root / ("a" if i < N_IMAGES // 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    (root / "b" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


def read_features(out) -> pd.DataFrame:
    return pd.read_parquet(out).reset_index(drop=True)


def test_chunks_hold_paths_labels_and_the_extractor_features(images, tmp_path):
    out = tmp_path / "features"
    summary = extract_features(images, out, **job_options())

    table = read_features(out)
    assert summary.n_chunks == 9 and summary.chunks_run == 9 and summary.n_unreadable == 1
    assert len(sorted(out.glob("chunk-*.parquet"))) == 9
    assert list(table.columns[:2]) == ["path", "label"]
    assert len(table) == N_IMAGES and table["label"].tolist() == ["a"] * 12 + ["b"] * 12
    assert "broken.jpg" not in " ".join(table["path"])
    reference = DeepFeatureExtractor(pooled_conv(), weights=None, layers=["1"], random_state=0)
    expected = reference.fit_transform(table["path"].tolist())
    assert list(table.columns[2:]) == reference.get_feature_names_out().tolist()
    np.testing.assert_array_equal(table.iloc[:, 2:].to_numpy(np.float32), expected)

    sidecar = pd.read_csv(out / "_unreadable.csv")
    assert sidecar["path"].str.endswith("broken.jpg").tolist() == [True]
    assert sidecar["label"].tolist() == ["b"] and "could not be read" not in sidecar["reason"][0]
    assert sidecar["reason"][0]  # the decoder's reason, not the generic wrapper


def test_rerun_skips_done_chunks_and_recomputes_a_damaged_one(images, tmp_path):
    out = tmp_path / "features"
    extract_features(images, out, **job_options())
    before = read_features(out)

    again = extract_features(images, out, **job_options())
    assert (again.chunks_resumed, again.chunks_run) == (9, 0)

    damaged = out / "chunk-000004.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-20])  # truncated: the checksum fails
    (out / "chunk-000006.parquet").unlink()
    repaired = extract_features(images, out, **job_options())
    assert (repaired.chunks_resumed, repaired.chunks_run) == (7, 2)
    pd.testing.assert_frame_equal(read_features(out), before, check_exact=True)


def test_refuses_a_folder_with_other_files_and_leaves_them(images, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(ExtractJobError, match=r"holds files that are not this job's.*thesis"):
        extract_features(images, out, **job_options())
    assert os.listdir(out) == ["thesis.tex"]
    assert (out / "thesis.tex").read_text() == "precious"


def test_refuses_another_jobs_folder(images, tmp_path):
    out = tmp_path / "features"
    extract_features(images, out, **job_options())
    with pytest.raises(ExtractJobError, match=r"another job's features \(pooling: 'avg' there"):
        extract_features(images, out, **job_options(pooling="max"))
    (out / MANIFEST).write_text("{not json")
    with pytest.raises(ExtractJobError, match="cannot be read as an extraction manifest"):
        extract_features(images, out, **job_options())


def test_a_locked_folder_is_refused(tmp_path):
    pytest.importorskip("fcntl", reason="the folder lock is POSIX flock")
    job = {"images": 1}
    with JobFolder(tmp_path / "out") as first:
        first.open(job)
        with pytest.raises(ExtractJobError, match="Another sktransfer extract is writing"):
            JobFolder(tmp_path / "out").open(job)


def test_command_line_refuses_with_one_line_and_exit_2(images, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    code = main(["extract", str(images), "--out", str(out), "--weights", "none", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("sktransfer extract: error: --out") and "notes.txt" in err
    assert (out / "notes.txt").read_text() == "keep"


def test_command_line_writes_the_features_and_says_so(tmp_path, capsys):
    images, out = tmp_path / "images", tmp_path / "features"
    for label in ("a", "b"):  # a named network resizes to 224 x 224: few images
        (images / label).mkdir(parents=True)
        Image.fromarray(np.full((9, 9, 3), 99, np.uint8)).save(images / label / "0.png")
    arguments = ["extract", str(images), "--out", str(out), "--backbone", "squeezenet1_1"]
    arguments += ["--layers", "features.12"]
    arguments += ["--weights", "none", "--engine", "torch", "--no-cache", "--n-jobs", "1"]
    assert main([*arguments, "--pooling", "max"]) == 0
    table = read_features(out)
    assert table.shape == (2, 2 + 512) and table.columns[2].endswith("__max0")
    assert "2 images' features" in capsys.readouterr().out.splitlines()[-1]


_KILLABLE = """
import sys, time
import sktransfer.extract_job as job
from tiny_networks import pooled_conv

original = job._extract_chunk
def slow(task, extractor=None):  # each chunk slowed so that the job is killed mid-run
    time.sleep(0.3)
    return original(task, extractor)
job._extract_chunk = slow
job.extract_features(sys.argv[1], sys.argv[2], backbone=pooled_conv(), weights=None,
                     layers=["1"], chunk_size=3, cache=sys.argv[3], n_jobs=1, verbose=0)
"""


def recorded_chunks(out: Path) -> int:
    try:
        return len(json.loads((out / MANIFEST).read_text())["chunks"])
    except (OSError, ValueError):
        return 0


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(images, tmp_path):
    # A process of its own (not a fork: torch's thread pools do not survive fork).
    out, cache = tmp_path / "killed", tmp_path / "store"
    script = tmp_path / "killable.py"
    script.write_text(_KILLABLE)
    tests = Path(__file__).parent  # the package and tiny_networks
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    command = [sys.executable, str(script), str(images), str(out), str(cache)]
    process = subprocess.Popen(command, env=env)
    try:
        deadline = time.monotonic() + 120
        while recorded_chunks(out) < 2 and process.poll() is None:
            assert time.monotonic() < deadline, "the job never wrote two chunks"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    done_when_killed = recorded_chunks(out)
    assert 2 <= done_when_killed < 9

    options = job_options(cache=str(cache))
    resumed = extract_features(images, out, **options)
    assert resumed.chunks_resumed == done_when_killed
    assert resumed.chunks_run == 9 - done_when_killed
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]
    whole = extract_features(images, tmp_path / "whole", **job_options())
    pd.testing.assert_frame_equal(read_features(out), read_features(tmp_path / "whole"))
    assert whole.n_unreadable == resumed.n_unreadable == 1


def test_two_dask_workers_give_the_features_of_one_process(images, tmp_path):
    distributed = pytest.importorskip("distributed", reason="needs the dask extra")
    alone = extract_features(images, tmp_path / "alone", **job_options())
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        shared = extract_features(images, tmp_path / "dask", **job_options(scheduler=client))
        workers = set(client.scheduler_info()["workers"])
    assert shared.chunks_run == alone.chunks_run == 9
    assert set(shared.peak_rss_mb) == workers and len(workers) == 2  # both took chunks
    pd.testing.assert_frame_equal(
        read_features(tmp_path / "dask"), read_features(tmp_path / "alone"), check_exact=True
    )
    sidecars = [(tmp_path / name / "_unreadable.csv").read_text() for name in ("alone", "dask")]
    assert sidecars[0] == sidecars[1]


def test_bad_arguments_say_what_to_pass(images, tmp_path):
    with pytest.raises(ValueError, match="chunk_size must be a positive integer; got 0"):
        extract_features(images, tmp_path / "x", **job_options(chunk_size=0))
    with pytest.raises(ValueError, match="not both"):
        extract_features(images, tmp_path / "x", **job_options(workers=2, scheduler="tcp://x:1"))
    with pytest.raises(ValueError, match="labels must hold one label per path: 2; got 1"):
        extract_features(["a.png", "b.png"], tmp_path / "x", labels=["a"], **job_options())
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['precison'\].*'pooling'"):
        extract_features(images, tmp_path / "x", **job_options(precison="float16"))
    assert not (tmp_path / "x").exists()  # refused before anything is written
    file = tmp_path / "a-file"
    file.write_text("")
    with pytest.raises(ExtractJobError, match="is a file, not a folder"):
        extract_features(images, file, **job_options())
