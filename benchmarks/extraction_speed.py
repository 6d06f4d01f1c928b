"""Feature extraction speed per engine, against a plain eager torch loop (#7).

MobileNetV2 (ImageNet weights), penultimate features (1280), Caltech-101 images, on the CPU.
Rows, all measured in one run, each repeated ``--repeats`` times in turn (the median counts):

* from arrays (images decoded beforehand, (N, 224, 224, 3) uint8): the baseline, a
  hand-written plain eager torch loop (batch 32, ``torch.set_num_threads(--threads)``);
  ``DeepFeatureExtractor`` with ``engine="torch"``, ``"onnxruntime"`` and ``"auto"``; a bare
  ONNX Runtime session on the same exported graph, used the plain way (one batch of 8 at a
  time on all ``--threads`` intra-op threads, same preprocessing);
* from JPEG paths (decoding and resizing included): the eager loop decoding with Pillow one
  image after another, and the extractor with each engine (decoding threads = ``--threads``);
* decoders: Pillow against ``torchvision.io.decode_jpeg`` on the same files.

Only ``transform`` is timed (the network is loaded and exported before, as a fitted extractor
is); the activation cache is off (``cache=None``) so every repeat computes.

    PYTHONPATH=. python benchmarks/extraction_speed.py [--n-images 192] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from benchmarks._common import ROOT, add_smoke_flag, caltech101_objects, smoke_folder
from sktransfer import DeepFeatureExtractor, load_backbone

BATCH = 32
BARE_BATCH = 8
BARE_ROW = f"bare ONNX Runtime session, same graph, batch {BARE_BATCH}"


def caltech_paths(n):
    paths, _ = caltech101_objects()
    return paths[:: len(paths) // n][:n]


def decode_pil(path):
    with Image.open(path) as image:
        return pil_to_tensor(image.convert("RGB"))


def as_arrays(paths):
    return np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)) for p in paths]
    )


class EagerLoop:
    """The baseline: what one writes by hand with torchvision, in plain eager torch."""

    def __init__(self):
        backbone = load_backbone("mobilenet_v2", "DEFAULT")
        self.model, self.transform = backbone.module.eval(), backbone.transform

    def features(self, batch):
        with torch.no_grad():
            return self.model.features(self.transform(batch)).mean((2, 3)).numpy()

    def from_arrays(self, arrays):
        return np.concatenate(
            [
                self.features(torch.from_numpy(arrays[i : i + BATCH]).permute(0, 3, 1, 2))
                for i in range(0, len(arrays), BATCH)
            ]
        )

    def from_paths(self, paths):
        out = []
        for i in range(0, len(paths), BATCH):
            images = [self.transform(decode_pil(p)) for p in paths[i : i + BATCH]]
            with torch.no_grad():
                out.append(self.model.features(torch.stack(images)).mean((2, 3)).numpy())
        return np.concatenate(out)


class BareSession:
    """A bare ONNX Runtime session on the extractor's exported graph: the library's floor."""

    def __init__(self, extractor, threads):
        import onnxruntime as ort

        from sktransfer.frozen.engines import _read_export

        (engine,) = extractor.network_._engines.values()
        assert engine.name == "onnxruntime", "the exported graph fell back to torch"

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            _read_export(engine.file), options, providers=["CPUExecutionProvider"]
        )
        self.transform = extractor.backbone_.transform

    def from_arrays(self, arrays):
        out = []
        for i in range(0, len(arrays), BARE_BATCH):
            chunk = arrays[i : i + BARE_BATCH]
            batch = self.transform(torch.from_numpy(chunk).permute(0, 3, 1, 2))
            out.append(self.session.run(None, {"images": batch.numpy()})[0])
        return np.concatenate(out)


def decoder_rows(paths, threads):
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    def tv(path):
        return decode_jpeg(read_file(str(path)), mode=ImageReadMode.UNCHANGED)

    rows = []
    for name, decode in (("Pillow", decode_pil), ("torchvision.io.decode_jpeg", tv)):
        start = time.perf_counter()
        for path in paths:
            decode(path)
        one = len(paths) / (time.perf_counter() - start)
        with ThreadPoolExecutor(threads) as pool:
            start = time.perf_counter()
            list(pool.map(decode, paths))
            many = len(paths) / (time.perf_counter() - start)
        rows.append((name, one, many))
    return rows


def parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/extraction_speed.md"))
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.n_images, args.repeats = 8, 1
        args.out = str(smoke_folder("extraction_speed") / "extraction_speed.md")
    return args


def extractors(arrays, paths, threads):
    """The fitted extractors of the rows, by name (``ort8``: the bare session's graph)."""

    def extractor(engine, batch_size="auto"):
        model = DeepFeatureExtractor(
            "mobilenet_v2", engine=engine, cache=None, n_jobs=threads, batch_size=batch_size
        )
        model.fit(arrays[:8]).transform(arrays[:8])  # export (cached per machine) and check
        model.fit(paths[:8]).transform(paths[:8])
        return model

    return {
        "ort8": extractor("onnxruntime", BARE_BATCH),
        "torch": extractor("torch"),
        "onnxruntime": extractor("onnxruntime"),
        "auto": extractor("auto"),
        "auto32": extractor("auto", 32),
    }


def runs(eager, bare, models, arrays, paths):
    """(input, row name) -> what the row times."""
    extractor = 'DeepFeatureExtractor engine="{}"'
    return {
        ("arrays", "plain eager torch loop (baseline)"): lambda: eager.from_arrays(arrays),
        ("arrays", extractor.format("torch")): lambda: models["torch"].transform(arrays),
        ("arrays", extractor.format("onnxruntime")): lambda: models["onnxruntime"].transform(
            arrays
        ),
        ("arrays", extractor.format("auto")): lambda: models["auto"].transform(arrays),
        ("arrays", extractor.format("auto") + ", batch_size=32"): lambda: models[
            "auto32"
        ].transform(arrays),
        ("arrays", BARE_ROW): lambda: bare.from_arrays(arrays),
        ("JPEG paths", "plain eager torch loop, Pillow (baseline)"): lambda: eager.from_paths(
            paths
        ),
        ("JPEG paths", extractor.format("torch")): lambda: models["torch"].transform(paths),
        ("JPEG paths", extractor.format("auto")): lambda: models["auto"].transform(paths),
    }


def time_rows(rows, reference, repeats):
    """Seconds of every row per repeat (rows interleaved), and each array row's largest
    difference from the eager loop's features, relative to their scale."""
    agreement = {}
    times = {row: [] for row in rows}
    for repeat in range(repeats):
        for row, run in rows.items():
            start = time.perf_counter()
            features = run()
            times[row].append(time.perf_counter() - start)
            if row[0] == "arrays" and repeat == 0:
                scale = np.abs(reference).max()
                agreement[row] = float(np.abs(features - reference).max() / scale)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{t[-1]:.1f}" for t in times.values()))
    return times, agreement


def table_lines(times, agreement, n):
    speed = {row: n / statistics.median(t) for row, t in times.items()}
    base = {
        "arrays": speed[("arrays", "plain eager torch loop (baseline)")],
        "JPEG paths": speed[("JPEG paths", "plain eager torch loop, Pillow (baseline)")],
    }
    bare_speed = speed[("arrays", BARE_ROW)]
    lines = []
    for (kind, name), value in speed.items():
        vs_bare = f"{value / bare_speed:.2f}" if kind == "arrays" else ""
        diff = f"{agreement[(kind, name)]:.1e}" if (kind, name) in agreement else ""
        spread = ", ".join(f"{n / t:.0f}" for t in times[(kind, name)])
        lines.append(
            f"| {kind} | {name} | {value:.1f} ({spread}) | {value / base[kind]:.2f} | {vs_bare} "
            f"| {diff} |"
        )
    return lines


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    paths = caltech_paths(args.n_images)
    arrays = as_arrays(paths)
    eager = EagerLoop()
    models = extractors(arrays, paths, args.threads)
    bare = BareSession(models["ort8"], args.threads)
    rows = runs(eager, bare, models, arrays, paths)
    times, agreement = time_rows(rows, eager.from_arrays(arrays), args.repeats)
    lines = table_lines(times, agreement, len(paths))
    decode_lines = [
        f"| {n} | {one:.0f} | {many:.0f} |" for n, one, many in decoder_rows(paths, args.threads)
    ]
    text = markdown(args, len(paths), lines, decode_lines)
    Path(args.out).write_text(text)
    print(text)


def markdown(args, n, lines, decode_lines) -> str:
    return f"""# Extraction speed per engine (#7)

Command: `PYTHONPATH=. python benchmarks/extraction_speed.py --n-images {args.n_images} \
--repeats {args.repeats} --threads {args.threads}`

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU; load
average (1 min) {os.getloadavg()[0]:.1f} at the end. Absolute speeds depend on what else runs:
compare the ratios, measured in the same run, rows interleaved, median of {args.repeats}
repeats. Date: \
{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. torch {torch.__version__}, {args.threads}
threads everywhere (torch, ONNX Runtime, decoding).

MobileNetV2 (ImageNet weights), penultimate features (1280), {n} Caltech-101 images
(every k-th file). Arrays: decoded and resized to 224 x 224 beforehand; every row applies the
same preprocessing (resize 256, crop 224, normalise). JPEG paths: decoding included.
`engine="auto"` is ONNX Runtime here; batch size "auto" is 2 with ONNX Runtime ({args.threads}
batches side by side, one intra-op thread each), 16 with torch on a CPU.

| input | run | images/s (each repeat) | x eager loop | x bare ORT | max diff vs eager / scale |
|---|---|---:|---:|---:|---:|
{chr(10).join(lines)}

Decoders on the same {n} JPEG files (decode to a uint8 tensor only):

| decoder | images/s, 1 thread | images/s, {args.threads} threads |
|---|---:|---:|
{chr(10).join(decode_lines)}
"""


if __name__ == "__main__":
    main()
