"""Feature-extraction speed: DeepFeatureExtractor against a hand-written torch loop.

Same model (MobileNetV2, ImageNet V1 weights), same images, same threads, same features
(the penultimate 1280-d vector), measured in one run and reported as ratios. The baseline is
the plain loop a user would write: eval mode, torch.no_grad, NCHW, batch 32; from JPEG paths
it decodes with PIL one image after another. Peak RSS while extracting from paths is measured
in fresh subprocesses for two sizes of input, to show it does not grow with N.

Run: PYTHONPATH=. python benchmarks/extraction_speed.py [--n 320] [--repeats 3] [--rss-sizes 1000 0]
(0 means all of Caltech-101.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

from benchmarks._common import RESULTS, ROOT, header, markdown_table, require_data
from sktransfer import DeepFeatureExtractor, load_backbone, load_image_folder


def plain_loop_arrays(model, transform, images, batch_size=32):
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2)
            out.append(model(transform(batch)))
    return torch.cat(out).numpy()


def plain_loop_paths(model, transform, paths, batch_size=32):
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            batch = [
                transform(Image.open(p).convert("RGB")) for p in paths[start : start + batch_size]
            ]
            out.append(model(torch.stack(batch)))
    return torch.cat(out).numpy()


def penultimate_model(module):
    return torch.nn.Sequential(
        module.features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()


def best_time(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def rss_child(n: int) -> None:
    """Run in a subprocess: extract n Caltech-101 images from paths, print peak RSS (MB)."""
    import resource

    paths, _ = load_image_folder(require_data("caltech101"))
    paths = paths if n == 0 else np.random.default_rng(0).permutation(paths)[:n]
    features = DeepFeatureExtractor("mobilenet_v2").fit_transform(paths)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": len(paths), "peak_rss_mb": peak_mb, "features": features.shape}))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[1000, 0])
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child is not None:
        return rss_child(args.rss_child)

    paths, _ = load_image_folder(require_data("caltech101"))
    paths = list(np.random.default_rng(0).permutation(paths)[: args.n])
    # Arrays: the same photos decoded once and resized to one size, as a user's array would be.
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB").resize((256, 256))) for p in paths])
    backbone = load_backbone("mobilenet_v2", "IMAGENET1K_V1")
    model = penultimate_model(backbone.module)
    transform = backbone.transform
    extractor = DeepFeatureExtractor("mobilenet_v2", weights="IMAGENET1K_V1").fit(arrays[:1])

    rows = []
    for source, data, baseline in (
        ("arrays (N,256,256,3) uint8", arrays, plain_loop_arrays),
        ("JPEG paths (Caltech-101)", paths, plain_loop_paths),
    ):
        base_s, base_out = best_time(lambda: baseline(model, transform, data), args.repeats)
        ours_s, ours_out = best_time(lambda: extractor.transform(data), args.repeats)
        max_diff = float(np.abs(base_out - ours_out).max())
        rows.append(
            {
                "input": source,
                "plain loop (img/s)": f"{len(data) / base_s:.1f}",
                "DeepFeatureExtractor (img/s)": f"{len(data) / ours_s:.1f}",
                "speed-up": f"**{base_s / ours_s:.2f}x**",
                "max abs feature diff": f"{max_diff:.1e}",
            }
        )
        print(rows[-1], flush=True)

    rss_rows = []
    for n in args.rss_sizes:
        child = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(n)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        rss_rows.append(
            {"images from paths": result["n"], "peak RSS (MB)": f"{result['peak_rss_mb']:.0f}"}
        )
        print(rss_rows[-1], flush=True)

    command = "PYTHONPATH=. python benchmarks/extraction_speed.py " + " ".join(argv or sys.argv[1:])
    text = header("Feature-extraction speed (MobileNetV2, 224 px, penultimate features)", command)
    text += (
        f"- {args.n} Caltech-101 images; best of {args.repeats} runs each; baseline and "
        f"sktransfer share torch's {torch.get_num_threads()} threads.\n"
        "- Baseline: eval, torch.no_grad, NCHW, batch 32, PIL decoding in the loop.\n"
        "- DeepFeatureExtractor defaults: inference_mode, channels_last, batch 16, decoding "
        "and resizing in worker threads one batch ahead.\n\n"
    )
    text += (
        markdown_table(rows)
        + "\nPeak resident memory of a fresh process extracting from paths:\n\n"
    )
    text += markdown_table(rss_rows)
    (RESULTS / "extraction_speed.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
