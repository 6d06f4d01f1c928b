"""Extraction job scaling (#20): one process against a local Dask cluster of 1 and 2 workers.

All 9,144 Caltech-101 images (MobileNetV2 ImageNet weights, penultimate features, 1280 float32
columns) through :func:`sktransfer.extract_features` with its defaults (chunks of 512, ONNX
Runtime on the CPU, a fresh activation store per run, so every run computes every image):

* one process (``workers=None``; all cores for decoding and ONNX Runtime);
* ``workers=1``: a ``LocalCluster`` of one worker process (all cores);
* ``workers=2``: two worker processes, each with half of the cores.

Each run is a fresh Python process (peak RSS is per process). Per run: wall time of the whole
call (network load, graph export, cluster start), the steady rate (images of the chunks
finished after the first one, over the time from the first to the last), each process's peak
RSS, and the load average before and after. ``--repeats 2`` runs the configurations in the
order ABC CBA so drift in the machine's load shows. The features of the first one-process and
two-worker runs are compared (they must be equal).

    flock /tmp/sktransfer-bench.lock python benchmarks/extract_scaling.py [--repeats 2]

``--smoke``: one process against a cluster of one worker on the tiny synthetic Caltech-101
stand-in (a folder of 60 small JPEGs, chunks of 16), results in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    RESULTS,
    add_smoke_flag,
    header,
    markdown_table,
    require_data,
    smoke_folder,
    tiny_data,
)

CONFIGS = {"one process": None, "LocalCluster, 1 worker": 1, "LocalCluster, 2 workers": 2}
COMMAND = "flock /tmp/sktransfer-bench.lock python benchmarks/extract_scaling.py"


def child(workers: str, out: str, cache: str, folder: str, chunk_size: str) -> None:
    """In a fresh process: run the job, print one JSON line of measurements."""
    from sktransfer import extract_features
    from sktransfer.extract_job import _peak_rss_mb

    start = time.perf_counter()
    summary = extract_features(
        folder,
        out,
        cache=cache,
        chunk_size=int(chunk_size),
        workers=None if workers == "none" else int(workers),
        verbose=0,
    )
    wall = time.perf_counter() - start
    times = summary.chunk_times
    steady = sum(n for _, n in times[1:]) / (times[-1][0] - times[0][0])
    print(
        json.dumps(
            {
                "images": summary.n_images,
                "unreadable": summary.n_unreadable,
                "wall_s": wall,
                "steady_images_per_s": steady,
                "overall_images_per_s": summary.n_images / wall,
                "worker_rss_mb": summary.peak_rss_mb,
                "driver_rss_mb": _peak_rss_mb(),
            }
        )
    )


def run(name: str, workers, scratch: Path, keep: bool, folder: Path, chunk_size: int) -> dict:
    out, cache = scratch / f"out-{workers}", scratch / f"cache-{workers}"
    load_before = os.getloadavg()
    flag = "none" if workers is None else str(workers)
    script = Path(__file__).resolve()
    result = subprocess.run(
        [sys.executable, str(script), "--child", flag, str(out), str(cache), str(folder)]
        + [str(chunk_size)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured.update(config=name, load_before=load_before, load_after=os.getloadavg())
    shutil.rmtree(cache)
    if not keep:
        shutil.rmtree(out)
    print(name, {k: v for k, v in measured.items() if k != "worker_rss_mb"}, flush=True)
    return measured


def compare(first: Path, second: Path) -> str:
    import numpy as np
    import pandas as pd

    a, b = pd.read_parquet(first), pd.read_parquet(second)
    same_rows = a["path"].tolist() == b["path"].tolist() and a["label"].equals(b["label"])
    diff = np.abs(a.iloc[:, 2:].to_numpy() - b.iloc[:, 2:].to_numpy()).max()
    return f"same rows and labels: {same_rows}; largest feature difference: {diff:.3g}"


def row(measured: dict, baseline: float) -> dict:
    workers = measured["worker_rss_mb"]
    n_workers = max(1, len(workers))
    rate = measured["steady_images_per_s"]
    rss = ", ".join(f"{mb:.0f}" for mb in sorted(workers.values()))
    return {
        "configuration": measured["config"],
        "wall (s)": f"{measured['wall_s']:.0f}",
        "steady images/s": f"{rate:.1f}",
        "vs one process": f"{rate / baseline:.2f}x",
        "images/s per worker": f"{rate / n_workers:.1f}",
        "peak RSS per worker (MB)": rss if measured["config"] != "one process" else "-",
        "peak RSS driver (MB)": f"{measured['driver_rss_mb']:.0f}",
        "load avg before / after (1 min)": (
            f"{measured['load_before'][0]:.1f} / {measured['load_after'][0]:.1f}"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--child", nargs=5, metavar=("WORKERS", "OUT", "CACHE", "FOLDER", "CHUNK"))
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    order, results = list(CONFIGS.items()), RESULTS
    args.compared = 2  # the cluster whose features are compared with one process's
    if args.smoke:  # one process and one worker (a cluster of two starts too slowly)
        results = smoke_folder("extract_scaling")
        folder = tiny_data("caltech101", results / "tiny-data")
        order = [(name, workers) for name, workers in order if workers != 2]
        args.chunk_size, args.compared = 16, 1
    else:
        folder = require_data("caltech101")
    scratch = Path(tempfile.mkdtemp(prefix="sktransfer-extract-scaling-"))
    try:
        run_all(order, args, scratch, folder, results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print((results / "extract_scaling.md").read_text())


def run_all(order, args, scratch: Path, folder: Path, results: Path) -> list[dict]:
    """Every configuration ``--repeats`` times (ABC CBA ...), the results rewritten after each."""
    measured, kept, agreement = [], {}, "not compared yet (run unfinished)"
    for repeat in range(args.repeats):
        for name, workers in order if repeat % 2 == 0 else order[::-1]:
            keep = name not in kept and workers in (None, args.compared)
            measured.append(run(name, workers, scratch, keep, folder, args.chunk_size))
            if keep:
                kept[name] = scratch / f"out-{workers}"
                if len(kept) == 2:
                    agreement = compare(*kept.values())
                    for out in kept.values():
                        shutil.rmtree(out)
            write(measured, f"{args.compared} worker(s): {agreement}", args.repeats, results)
    return measured


def write(measured: list[dict], agreement: str, repeats: int, results: Path = RESULTS) -> None:
    base = statistics.median(
        m["steady_images_per_s"] for m in measured if m["config"] == "one process"
    )  # the first run is always one process
    text = header("Extraction job scaling (#20)", f"{COMMAND} --repeats {repeats}")
    text += (
        f"- Data: all {measured[0]['images']} Caltech-101 images (JPEG paths), "
        f"{measured[0]['unreadable']} unreadable; MobileNetV2 ImageNet weights, penultimate "
        "features (1280), ONNX Runtime, chunks of 512, a fresh activation store per run.\n"
        "- The machine has 2 CPU cores shared with other agents' work (see the load "
        "averages): absolute rates are low and noisy; compare rows of this run only.\n"
        f"- One process against {agreement}.\n\n"
    )
    text += markdown_table([row(m, base) for m in measured])
    (results / "extract_scaling.md").write_text(text)


if __name__ == "__main__":
    main()
