"""Peak memory of feature extraction from JPEG paths, against the number of images.

Each size runs in a fresh process (peak RSS is per process), extracting MobileNetV2's
penultimate features from Caltech-101 paths with DeepFeatureExtractor's defaults. Images
stream in batches and only the (N, 1280) float32 features are kept, so the peak should stay
flat as N grows (the features themselves add 5 KB per image).

Run: PYTHONPATH=. python benchmarks/extraction_memory.py [--sizes 500 2000 0] [--smoke]   (0 = all)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from benchmarks._common import (
    RESULTS,
    ROOT,
    add_smoke_flag,
    header,
    markdown_table,
    require_data,
    smoke_folder,
)
from sktransfer import DeepFeatureExtractor, load_image_folder


def child(n: int, folder: str) -> None:
    """In a subprocess: extract n images of ``folder`` from paths, print peak RSS (MB)."""
    import resource

    paths, _ = load_image_folder(folder)
    paths = paths if n == 0 else np.random.default_rng(0).permutation(paths)[:n]
    start = time.perf_counter()
    features = DeepFeatureExtractor("mobilenet_v2", cache=None).fit_transform(paths)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "n": len(paths),
                "peak_rss_mb": peak_mb,
                "seconds": seconds,
                "features": list(features.shape),
            }
        )
    )


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[500, 2000, 0])
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child(int(args.child[0]), args.child[1])
    results = RESULTS
    if args.smoke:
        args.sizes, results = [8], smoke_folder("extraction_memory")
    folder = str(require_data("caltech101"))
    rows = []
    for n in args.sizes:
        run = subprocess.run(
            [sys.executable, __file__, "--child", str(n), folder],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        result = json.loads(run.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "images from paths": result["n"],
                "peak RSS (MB)": f"{result['peak_rss_mb']:.0f}",
                "of which features (MB)": f"{result['n'] * 1280 * 4 / 2**20:.0f}",
                "images/s": f"{result['n'] / result['seconds']:.0f}",
            }
        )
        print(rows[-1], flush=True)
    command = "PYTHONPATH=. python benchmarks/extraction_memory.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    text = header("Peak memory while extracting from JPEG paths (MobileNetV2)", command)
    text += "\nEach row is a fresh process; target: under 2 GB and flat in N.\n\n"
    text += markdown_table(rows)
    (results / "extraction_memory.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
