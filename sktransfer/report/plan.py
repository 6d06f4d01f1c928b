"""The report's plan: which layers to score, and what the budget affords, from measured costs.

Every number here is a decision the report says it made: the layers scored (spread over the
depth), whether the images are subsampled for the activation pass (a pilot batch's cost per
image), and the fine-tuning epochs and resolution (a timed eager forward pass). The stages
(:mod:`sktransfer.report.stages`) measure, call these, and note what was shrunk or skipped.
"""

from __future__ import annotations

import time

import numpy as np

from .budget import Budget
from .memo import Memo

__all__ = [
    "FINETUNE_MARGIN",
    "MAX_LAYERS",
    "TSNE_SAMPLES",
    "affordable_images",
    "cold_cost",
    "finetune_plan",
    "finetune_sizes",
    "forward_seconds",
    "layer_plan",
    "pilot_cost",
    "probe_folds",
    "smallest_side",
    "spread",
    "tsne_seconds",
]

#: Fine-tuning is planned at this many eager forward passes per training image (forward,
#: backward through the top blocks, optimizer step), plus one per test image.
TRAIN_COST_FACTOR = 1.5
MAX_FINETUNE_EPOCHS = 3
#: Fine-tuning is recommended only when it beats feature extraction by more than this
#: (held-out accuracy): feature extraction needs no training, and its cached forward pass
#: serves every later fit.
FINETUNE_MARGIN = 0.01
#: Layers scored (evenly spread over the network's blocks): each costs a probe and a fit.
MAX_LAYERS = 8
#: The activation pass is timed on a batch of this many images after a warm-up batch.
PILOT_IMAGES = 16
#: Data of at most this many images is never subsampled (nor piloted) for the budget.
MIN_SUBSAMPLE = 64
#: Subsample only to save at least this share of the budget: shaving 100 of 1,200 images
#: saved 11 s of 240 and cost the report 8 % of its data.
MIN_SAVING = 0.1
#: t-SNE runs on at most this many images (a subsample), at about 50 ms per image here.
TSNE_SAMPLES = 600


def layer_plan(loaded) -> tuple[list, str | None]:
    """The blocks of a loaded :class:`~sktransfer.backbones.Backbone` to score (at most
    ``MAX_LAYERS``, spread over the depth) and its logits layer (None without a source
    classifier: no LEEP)."""
    from ..analysis.features import logits_layer
    from ..backbones import block_layers

    try:
        logits = logits_layer(loaded)
    except ValueError:
        logits = None
    return spread(block_layers(loaded), MAX_LAYERS), logits


def spread(layers: list, n: int) -> list:
    """At most ``n`` layers evenly spread over the depth, the last one always included."""
    if len(layers) <= n:
        return list(layers)
    picks = np.unique(np.round(np.linspace(len(layers) - 1, 0, n)).astype(int))
    return [layers[i] for i in picks]


def pilot_cost(extractor, X) -> tuple[float, float]:
    """Seconds of the warm-up (fit, graph export, a first batch of ``PILOT_IMAGES``) and
    seconds per image of the next batch; ``X`` holds at least ``2 * PILOT_IMAGES`` images."""
    start = time.perf_counter()
    extractor.fit(X[:1])
    extractor.transform(X[:PILOT_IMAGES])
    warm = time.perf_counter() - start
    start = time.perf_counter()
    extractor.transform(X[PILOT_IMAGES : 2 * PILOT_IMAGES])
    return warm, (time.perf_counter() - start) / PILOT_IMAGES


def affordable_images(per_image: float, n_total: int, budget: Budget, least: int = 0) -> int:
    """All images, unless their pass would take more than half of what is left and a
    subsample (at least ``MIN_SUBSAMPLE`` and ``least`` images) saves ``MIN_SAVING`` of the
    budget."""
    affordable = int(0.5 * budget.left() / max(per_image, 1e-9))
    keep = max(MIN_SUBSAMPLE, least, affordable)
    if keep >= n_total or (n_total - keep) * per_image < MIN_SAVING * budget.seconds:
        return n_total
    return keep


def cold_cost(memory: Memo, key: str, measured: float) -> tuple[float, bool]:
    """The per-image cost of computing activations, and whether this run read them from the
    cache: the first cold measurement is kept next to the cache (authenticated, like the
    memo), so a cached rerun still reports what extraction costs without a cache."""
    costs = memory.read_json("extraction_costs") or {}
    stored = costs.get(key)
    if not isinstance(stored, float | int | None):
        stored = None
    if stored is not None and measured < stored / 5:  # served from the cache
        return stored, True
    if measured <= 0:
        return stored or 0.0, True
    costs[key] = float(measured)
    memory.write_json("extraction_costs", costs)
    return measured, False


def probe_folds(y) -> int:
    """Folds of the linear probe: 3, fewer when a class has fewer images."""
    return int(min(3, np.unique(y, return_counts=True)[1].min()))


def tsne_seconds(n_images: int) -> float:
    """What t-SNE of two layers is planned to take (it runs on at most ``TSNE_SAMPLES``)."""
    return 3 + 0.05 * min(n_images, TSNE_SAMPLES)


def forward_seconds(loaded, image_size: int) -> tuple[float, int]:
    """Seconds of one eager forward pass per image (a batch of 8, after a warm-up batch),
    with torch's default threads and with one; returns the faster and its thread count.

    On shared or oversubscribed cores one thread was 3-5x faster here (spin-waits)."""
    import torch

    module = loaded.module.eval()
    batch = torch.rand(8, 3, image_size, image_size)
    default = torch.get_num_threads()
    timings = {}
    try:
        for threads in dict.fromkeys((default, 1)):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                module(batch[:2])
                start = time.perf_counter()
                module(batch)
            timings[threads] = (time.perf_counter() - start) / 8
    finally:
        torch.set_num_threads(default)
    threads = min(timings, key=timings.get)
    return timings[threads], threads


def finetune_sizes(X_train, named: bool) -> list:
    """The resolutions fine-tuning may train at, preferred first: 224, 160 or 112 px (112 or
    64 px for images smaller than 112 px); a custom module keeps its native size (None)."""
    if not named:
        return [None]
    smallest = smallest_side(X_train)
    return [224, 160, 112] if smallest is None or smallest >= 112 else [112, 64]


def finetune_plan(
    measured: float, sizes: list, n_train: int, n_test: int, budget: Budget
) -> tuple[tuple | None, float]:
    """``(size, epochs, estimated seconds)`` of the first resolution at which one epoch or
    more fits what is left of the budget (up to ``MAX_FINETUNE_EPOCHS``), or None; and the
    estimate of one epoch at the last size tried (for the skip note).

    ``measured`` is the eager forward seconds per image at ``sizes[0]``; the cost of a
    convolutional network grows with the pixels."""
    for size in sizes:
        per_image = measured * ((size / sizes[0]) ** 2 if size else 1.0)
        per_epoch = TRAIN_COST_FACTOR * per_image * n_train
        fixed = per_image * n_test + 5.0  # prediction, loading the network
        epochs = int(min(MAX_FINETUNE_EPOCHS, (budget.left() - fixed) // max(per_epoch, 1e-9)))
        if epochs >= 1:
            return (size, epochs, per_epoch * epochs + fixed), per_epoch + fixed
    return None, per_epoch + fixed


def smallest_side(X) -> int | None:
    """The smaller side of an image array's images (None for paths and other items)."""
    if isinstance(X, np.ndarray) and X.dtype.kind not in "USO":
        return int(min(X.shape[1:3]))
    return None
