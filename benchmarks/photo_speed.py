"""Extraction from 12-megapixel JPEGs: reduced (DCT-domain) decoding against full decoding (#21).

300 Caltech-101 images (evenly spread over the 101 object classes) upscaled to 4000x3000
(3000x4000 for portrait sources) and saved as JPEG (quality 90), as phones write photos; they
are written once under ``--workdir`` (never into the repository) and reused.

Measured in one run, the two decodings alternating, ``--repeats`` times each:

* end to end: ``DeepFeatureExtractor("mobilenet_v2", engine="auto", cache=None)`` fitted, then
  ``transform`` on the 300 paths timed; each run in a fresh child process, so its peak RSS
  (``ru_maxrss``) is its own. "today" is ``SKTRANSFER_JPEG_DRAFT=0`` (every file decoded at
  full size by torchvision's libjpeg-turbo, then resized by the preset), "reduced" the default;
* stages, one thread, per image, on ``--stage-images`` files: decode (``decode_file``), resize
  and crop (the preset on the decoded tensor), and the network (the extractor on 224x224
  uint8 arrays, the same for both decodings).

    flock /tmp/sktransfer-bench.lock python benchmarks/photo_speed.py [--n-images 300]

``--smoke``: 4 images upscaled to 1024x768 only (still over twice the resize target, so the
reduced decoding applies), one run each, 2 images for the stages, all in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    RESULTS,
    add_smoke_flag,
    caltech101_objects,
    header,
    markdown_table,
    smoke_folder,
)

PHOTO_SIZE = (4000, 3000)
SMOKE_PHOTO_SIZE = (1024, 768)
DEFAULT_WORKDIR = Path("/tmp/sktransfer-photos")


def upscale_to_photo(source: str, target: Path, quality: int = 90, photo_size=PHOTO_SIZE) -> Path:
    """Write ``source`` upscaled to 4000x3000 (or 3000x4000 for a portrait source) as a JPEG."""
    from PIL import Image

    if not target.exists():
        with Image.open(source) as image:
            image = image.convert("RGB")
            size = photo_size if image.width >= image.height else photo_size[::-1]
            partial = target.with_suffix(".part")
            image.resize(size, Image.BICUBIC).save(partial, "JPEG", quality=quality)
            partial.replace(target)
    return target


def make_photos(sources, names, folder: Path, threads: int = 2, size=PHOTO_SIZE) -> list[str]:
    """Upscaled copies of ``sources`` as ``folder/<name>.jpg`` (made once, then reused)."""
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / f"{name}.jpg" for name in names]

    def upscale(source, target):
        return upscale_to_photo(source, target, photo_size=size)

    with ThreadPoolExecutor(threads) as pool:  # Pillow releases the GIL while resizing/encoding
        return [str(p) for p in pool.map(upscale, sources, targets)]


def caltech_sample(n: int) -> tuple[np.ndarray, np.ndarray]:
    paths, labels = caltech101_objects()
    index = np.linspace(0, len(paths) - 1, n).round().astype(int)
    return paths[index], labels[index]


# --------------------------------------------------------------------------- child runs


def child_end_to_end(paths: list[str], threads: int) -> dict:
    """Fit, then time ``transform`` on ``paths``; the decoding is set by the environment."""
    import torch

    from sktransfer import DeepFeatureExtractor

    torch.set_num_threads(threads)
    model = DeepFeatureExtractor("mobilenet_v2", engine="auto", cache=None, n_jobs=threads)
    model.fit(paths[:2]).transform(paths[:2])  # the export (cached per machine) and its check
    start = time.perf_counter()
    features = model.transform(paths)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
        "engine": model.engine_,
        "features": features.tolist() if len(paths) <= 8 else None,
    }


def run_child(paths_file: Path, draft: bool, threads: int) -> dict:
    env = dict(os.environ, SKTRANSFER_JPEG_DRAFT="1" if draft else "0")
    command = [sys.executable, __file__, "--child", str(paths_file), "--threads", str(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- stages


def stage_times(paths: list[str]) -> dict[str, dict[str, float]]:
    """Per-image milliseconds, one thread: decode and resize for each decoding, and the network."""
    import torch

    from sktransfer import DeepFeatureExtractor
    from sktransfer.decoding import decode_file, resize_target

    torch.set_num_threads(1)
    model = DeepFeatureExtractor("mobilenet_v2", engine="auto", cache=None, n_jobs=1)
    model.fit(np.zeros((2, 224, 224, 3), np.uint8))
    preset = model.backbone_.transform
    target = resize_target(preset)
    rows = {}
    for name, decode_target in (("today", None), ("reduced", target)):
        decode_s = resize_s = 0.0
        for path in paths:
            start = time.perf_counter()
            image = decode_file(path, decode_target)
            middle = time.perf_counter()
            preset(image)
            decode_s += middle - start
            resize_s += time.perf_counter() - middle
        n = len(paths)
        rows[name] = {"decode": 1000 * decode_s / n, "resize": 1000 * resize_s / n}
    arrays = np.zeros((len(paths), 224, 224, 3), np.uint8)
    model.transform(arrays[:8])
    start = time.perf_counter()
    model.transform(arrays)
    network = 1000 * (time.perf_counter() - start) / len(paths)
    for row in rows.values():
        row["network"] = network
    return rows


# --------------------------------------------------------------------------- report


def write_results(args, photos, runs, stages) -> str:
    sizes = [os.path.getsize(p) for p in photos]
    table = []
    for name in ("today", "reduced"):
        seconds = [r["seconds"] for r in runs[name]]
        rss = [r["peak_rss_mb"] for r in runs[name]]
        table.append(
            {
                "decoding": name,
                "images/s (median)": f"{len(photos) / statistics.median(seconds):.2f}",
                "runs (s)": ", ".join(f"{s:.1f}" for s in seconds),
                "peak RSS (MB, max)": f"{max(rss):.0f}",
                "decode ms/img (1 thread)": f"{stages[name]['decode']:.1f}",
                "resize ms/img": f"{stages[name]['resize']:.1f}",
                "network ms/img": f"{stages[name]['network']:.1f}",
            }
        )
    today = statistics.median(r["seconds"] for r in runs["today"])
    reduced = statistics.median(r["seconds"] for r in runs["reduced"])
    text = header(
        "Extraction from 12-megapixel JPEGs: reduced decoding vs today (#21)",
        "flock /tmp/sktransfer-bench.lock python benchmarks/photo_speed.py"
        + (f" --n-images {args.n_images}" if args.n_images != 300 else ""),
    )
    text += (
        f"- Load average (1, 5, 15 min) at the end: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}; the machine was shared with other "
        "sessions, so absolute times vary; the ratio is measured in one run, runs alternating.\n"
        f"- Inputs: {len(photos)} Caltech-101 images upscaled to 4000x3000 (bicubic), JPEG "
        f"quality 90, {np.mean(sizes) / 1e6:.2f} MB on average. No real large photos were "
        "available here.\n"
        f"- End to end: `DeepFeatureExtractor('mobilenet_v2', engine='auto', cache=None, "
        f"n_jobs={args.threads})` (engine {runs['today'][0]['engine']!r}), `transform` on the "
        f"paths, {args.repeats} runs per decoding, each in a fresh process (peak RSS is the "
        'process\'s `ru_maxrss`, model included). "today" is this code with '
        "`SKTRANSFER_JPEG_DRAFT=0`: the decoder used before (torchvision's libjpeg-turbo at full "
        "size) after the new header read (pixel limit, EXIF orientation).\n"
        f"- Stages: one thread, mean over {min(args.stage_images, len(photos))} files; network "
        "= the extractor on 224x224 uint8 arrays (the same for both decodings).\n\n"
        + markdown_table(table)
        + f"\n**Speed-up end to end: {today / reduced:.2f}x** (median runs).\n"
    )
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--stage-images", type=int, default=40)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--out", type=Path, default=RESULTS / "photo_speed.md")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.child:
        paths = json.loads(args.child.read_text())
        print(json.dumps(child_end_to_end(paths, args.threads)))
        return
    size = PHOTO_SIZE
    if args.smoke:
        args.workdir = smoke_folder("photo_speed")
        args.out, size = args.workdir / "photo_speed.md", SMOKE_PHOTO_SIZE
        args.n_images, args.repeats, args.stage_images = 4, 1, 2
    import torch

    sources, labels = caltech_sample(args.n_images)
    names = [f"{label}-{Path(s).stem}" for s, label in zip(sources, labels, strict=True)]
    photos = make_photos(sources, names, args.workdir / "caltech-photos", args.threads, size)
    paths_file = args.workdir / "photo_speed_paths.json"
    paths_file.write_text(json.dumps(photos))
    runs = {"today": [], "reduced": []}
    for _ in range(args.repeats):
        for name in runs:
            runs[name].append(run_child(paths_file, name == "reduced", args.threads))
            print(name, f"{runs[name][-1]['seconds']:.1f} s", flush=True)
    stages = stage_times(photos[: args.stage_images])
    torch.set_num_threads(args.threads)  # as the end-to-end runs had it, for the header
    text = write_results(args, photos, runs, stages)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
