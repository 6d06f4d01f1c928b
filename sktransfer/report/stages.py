"""The report's stages, one function each, in the order :func:`build_report` runs them.

Each stage takes the :class:`~sktransfer.report.context.ReportContext`, opens its stage line
(:meth:`Progress.stage <sktransfer.report.budget.Progress.stage>`), reads what earlier stages
stored there, and returns its own result (plain data: numbers, arrays, strings), which
``build_report`` stores back. Only the activations and fine-tuning stages run the network;
the scores, held-out classifiers and t-SNE read the activations, and are memoised
(:class:`~sktransfer.report.memo.Memo`) keyed by them, so a rerun costs a hash and a read.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from .codegen import backbone_name, pipeline_code
from .context import Activations, ReportContext, Scores
from .data import ReportData, load_report_data
from .plan import (
    MAX_FINETUNE_EPOCHS,
    MIN_SUBSAMPLE,
    affordable_images,
    cold_cost,
    finetune_plan,
    finetune_sizes,
    forward_seconds,
    layer_plan,
    pilot_cost,
    probe_folds,
    smallest_side,
    tsne_seconds,
)
from .plots import plot_comparison, plot_confusion, plot_scores, png, tsne_png
from .recommend import recommend
from .render import results_of, write
from .tradeoff import extraction_trade_off

__all__ = [
    "activations",
    "feature_extraction",
    "fine_tuning",
    "read_data",
    "scores",
    "tsne",
    "write_report",
]


def read_data(run: ReportContext, data, max_images) -> ReportData:
    """DATA read and checked (:func:`~sktransfer.report.data.load_report_data`); the output
    and cache folders made."""
    progress = run.progress
    with progress.stage("data", str(data) if data is not None else "embedded default: digits"):
        dataset = load_report_data(
            data, max_images=max_images, random_state=run.settings.random_state
        )
        run.out.mkdir(parents=True, exist_ok=True)
        run.cache_dir.mkdir(parents=True, exist_ok=True)
    progress.say(
        f"{len(dataset.y_train)} training and {len(dataset.y_test)} test images, "
        f"{len(dataset.classes)} classes"
    )
    return dataset


# ------------------------------------------------------------------------------ activations


def activations(run: ReportContext) -> Activations:
    """Every scored layer's features and the source probabilities of all images, in one
    forward pass through the activation cache (measured with
    :func:`~sktransfer.footprint.footprint`).

    A rerun over the same images (keyed by :func:`sktransfer.frozen.image_keys`: file path,
    size and modification time, or array bytes) reads the assembled features back at once.
    Otherwise, for more than ``MIN_SUBSAMPLE`` images, a pilot batch after a warm-up batch
    measures the per-image cost, and if the whole pass would take more than half of what is
    left and subsampling saves a real share of the budget, the images are subsampled (the
    report says so). The pass goes through the activation cache, so the pilot's images are
    not computed twice and pipelines fitted later on these images reuse it.
    """
    from ..footprint import footprint

    with (
        run.progress.stage("activations", "one forward pass tapping every block (cached on disk)"),
        footprint(**run.settings.grid) as measured,
    ):
        result = _activation_pass(run)
    result.footprint = measured
    return result


def _activation_pass(run: ReportContext) -> Activations:
    s = run.settings
    layers, logits = _layers_to_score(run)
    tapped = layers + ([logits] if logits and logits not in layers else [])
    compute = _stacked_features
    if s.named:  # a rerun reads the assembled features back, loading no network
        compute = run.memo.cache(_stacked_features, ignore=["X", "params", "verbose"])
    cost_key = f"{backbone_name(s.backbone)}|{s.weights}|{len(tapped)} layers|{run.dataset.name}"
    call = _pass_call(run, tapped)
    read_back = compute is not _stacked_features and compute.check_call_in_cache(*call)
    warm, per_image = 0.0, None
    if not read_back and len(call[0]) > MIN_SUBSAMPLE:  # smaller data: no pilot needed
        warm, per_image, subsampled = _pilot(run, tapped, call[0])
        if subsampled:
            call = _pass_call(run, tapped)  # the images kept
    start = time.perf_counter()
    stacked, slices, weights = compute(*call)
    seconds = time.perf_counter() - start
    n_images = len(call[0])
    per_image = seconds / n_images if per_image is None else per_image
    if read_back:  # the cost stored by the cold run that computed them
        cold, cached = cold_cost(run.memo, cost_key, 0.0)[0], True
        run.progress.say(f"read back {n_images} images' activations in {seconds:.1f} s")
    else:
        cold, cached = cold_cost(run.memo, cost_key, per_image)
    cost = {
        "layers": layers,
        "n_images": n_images,
        "seconds": seconds,
        "seconds_per_image": per_image,
        "cold_seconds_per_image": cold,
        "from_cache": cached,
        "warm_up_seconds": warm,
        "weights": weights,
    }
    features, probabilities = _split(stacked, slices, layers, logits)
    return Activations(features, probabilities, cost, len(run.dataset.y_train))


def _layers_to_score(run: ReportContext) -> tuple[list, str | None]:
    """:func:`~sktransfer.report.plan.layer_plan` of the network; for a named one, memoised
    by name and weights (the plan depends on the architecture only): a rerun loads none."""
    if run.settings.named:
        plan = run.memo.cache(_named_layer_plan, ignore=["run"])
        return plan(run.settings.backbone, run.settings.weights, run)
    return layer_plan(run.network())


def _named_layer_plan(backbone: str, weights, run: ReportContext) -> tuple[list, str | None]:
    return layer_plan(run.network())


def _pass_call(run: ReportContext, tapped: list) -> tuple:
    """The arguments of :func:`_stacked_features` for the dataset's images as they are now."""
    from ..frozen import image_keys
    from ..images import check_images, concatenate_images

    X = concatenate_images(run.dataset.X_train, run.dataset.X_test)
    s = run.settings
    identity = f"{s.weights}|{s.random_state if s.weights is None else None}"
    verbose = 1 if run.progress.verbose else 0
    keys = image_keys(check_images(X))
    return (X, run.extractor_params(), s.backbone, identity, tapped, keys, verbose)


def _pilot(run: ReportContext, tapped: list, X) -> tuple[float, float, bool]:
    """The warm-up seconds and seconds per image of a pilot batch, and whether the dataset
    was subsampled (and noted) because the whole pass would not fit the budget."""
    from ..extraction import DeepFeatureExtractor

    budget, dataset = run.budget, run.dataset
    extractor = DeepFeatureExtractor(run.settings.backbone, layers=tapped, **run.extractor_params())
    warm, per_image = pilot_cost(extractor, X)
    n_total = len(X)
    run.progress.say(
        f"{per_image * 1000:.0f} ms per image; about {per_image * n_total:.0f} s for all"
    )
    keep = affordable_images(per_image, n_total, budget, dataset.min_subsample)
    if keep < n_total:
        budget.notes.append(
            f"Activations: about {per_image * 1000:.0f} ms per image would take "
            f"{per_image * n_total:.0f} s for {n_total} images, more than half of the "
            f"{budget.left():.0f} s left; subsampled to {keep}, saving about "
            f"{per_image * (n_total - keep):.0f} s."
        )
        dataset.subsample(keep, run.settings.random_state, why=" to keep the budget")
    return warm, per_image, keep < n_total


def _stacked_features(X, params, backbone, weights, tapped, keys, verbose):
    """All tapped layers' pooled features of X, through the activation cache. ``keys`` (the
    images' cache keys) and ``weights`` identify the call for memoisation; X is not hashed."""
    from ..extraction import DeepFeatureExtractor

    extractor = DeepFeatureExtractor(backbone, layers=tapped, verbose=verbose, **params)
    stacked = extractor.fit(X[:1]).transform(X)
    return stacked, dict(extractor.layer_slices_), extractor.weights_


def _split(stacked, slices, layers, logits):
    from scipy.special import softmax

    features = {layer: stacked[:, slices[layer]] for layer in layers}
    probabilities = None
    if logits:
        probabilities = softmax(stacked[:, slices[logits]].astype(float), axis=1)
    return features, probabilities


# ------------------------------------------------------------------------------ scores


def scores(run: ReportContext) -> Scores:
    """LogME, H-score, LEEP and a 3-fold linear probe per layer, on the training images; the
    best layer by probe accuracy (LogME without a probe)."""
    from ..footprint import footprint

    progress, acts = run.progress, run.activations
    with (
        progress.stage("scores", "LogME, H-score, LEEP and a 3-fold linear probe per layer"),
        footprint(**run.settings.grid) as measured,
    ):
        probabilities = acts.probabilities
        if probabilities is not None:
            probabilities = probabilities[: acts.n_train]
        table = run.memo.cache(_score_table)(acts.train(), run.dataset.y_train, probabilities)
    key = "probe_accuracy" if "probe_accuracy" in table else "logme"
    best_layer = str(table.sort_values(key, ascending=False, kind="stable")["layer"].iloc[0])
    progress.say(f"best layer by {key}: {best_layer}")
    return Scores(table, best_layer, measured)


def _score_table(train, y, probabilities):
    from ..analysis import rank_layers

    cv = probe_folds(y)
    scores = ["logme", "h_score"] + (["leep"] if probabilities is not None else [])
    return rank_layers(
        train, y, scores=scores, source_probabilities=probabilities, probe=True, cv=cv
    )


# ------------------------------------------------------------------------------ feature extraction


def feature_extraction(run: ReportContext) -> tuple[dict, dict]:
    """StandardScaler + LogisticRegression per layer, tested on the held-out images: the best
    layer's result (with its trade-off row) and every layer's."""
    from ..footprint import footprint

    best, acts, dataset = run.scores.best_layer, run.activations, run.dataset
    with (
        run.progress.stage("feature extraction", f"logistic regression on {best}"),
        footprint(**run.settings.grid) as fits,
    ):
        held_out = run.memo.cache(_held_out_by_layer)(
            acts.train(), dataset.y_train, acts.test(), dataset.y_test
        )
        chosen = held_out[best]
        result = {
            "layer": best,
            "accuracy": chosen["accuracy"],
            "fit_seconds": acts.cost["cold_seconds_per_image"] * acts.n_train
            + chosen["fit_seconds"],
            "activation_seconds": acts.cost["seconds"],
            "classifier_fit_seconds": chosen["fit_seconds"],
            "predictions": chosen["predictions"],
        }
    folds = probe_folds(dataset.y_train)
    scored = run.scores.footprint + fits
    result.update(extraction_trade_off(run.scores.table, best, folds, acts.footprint, scored))
    run.progress.say(f"held-out accuracy {chosen['accuracy']:.3f}")
    return result, held_out


def _logistic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))


def _held_out_by_layer(train, y_train, test, y_test) -> dict:
    """Each layer's held-out accuracy with StandardScaler + LogisticRegression(C=0.1)."""
    from threadpoolctl import threadpool_limits

    results = {}
    for layer in train:
        start = time.perf_counter()
        with threadpool_limits(1):
            model = _logistic().fit(train[layer], y_train)
        seconds = time.perf_counter() - start
        predictions = model.predict(test[layer])
        results[layer] = {
            "accuracy": float(np.mean(predictions == y_test)),
            "fit_seconds": seconds,
            "predictions": predictions,
        }
    return results


# ------------------------------------------------------------------------------ fine-tuning


def fine_tuning(run: ReportContext, enabled: bool = True) -> dict | None:
    """:class:`~sktransfer.FineTuneClassifier` on the top 3 blocks, sized (epochs,
    resolution) to what is left of the budget after holding t-SNE's share, or skipped (the
    report says why)."""
    dataset = run.dataset
    # t-SNE runs after fine-tuning: its estimate is held back from it
    run.budget.hold("t-SNE", tsne_seconds(len(dataset.y_train) + len(dataset.y_test)))
    with run.progress.stage("fine-tuning", "FineTuneClassifier, top 3 blocks"):
        if not enabled:
            run.budget.notes.append("Fine-tuning skipped: turned off (--no-finetune).")
            return None
        return _finetune(run)


def _finetune(run: ReportContext) -> dict | None:
    budget, dataset = run.budget, run.dataset
    sizes = finetune_sizes(dataset.X_train, run.settings.named)
    timed_size = sizes[0] or smallest_side(dataset.X_train) or 32
    measured, threads = forward_seconds(run.network(), timed_size)
    n_train, n_test = len(dataset.y_train), len(dataset.y_test)
    chosen, one_epoch = finetune_plan(measured, sizes, n_train, n_test, budget)
    if chosen is None:
        budget.notes.append(
            f"Fine-tuning skipped: one epoch at {sizes[-1]} px would take about "
            f"{one_epoch:.0f} s, more than the {max(0, budget.left()):.0f} s left "
            f"after holding {budget.held()}. Raise --budget to include it."
        )
        run.progress.say(budget.notes[-1])
        return None
    size, epochs, estimate = chosen
    if size != sizes[0] or epochs < MAX_FINETUNE_EPOCHS:
        budget.notes.append(
            f"Fine-tuning shrunk to {epochs} epoch(s)"
            + (f" at {size} px" if size else "")
            + f" (about {estimate:.0f} s) to fit the budget."
        )
    run.progress.say(f"{epochs} epoch(s) at {size or 'native'} px, about {estimate:.0f} s")
    params = dict(
        train_layers=3 if run.settings.named else "all",
        max_epochs=epochs,
        optimizer="adamw",
        lr=1e-3,
        backbone_lr_scale=0.1,
        batch_size=16,
        image_size=size,
    )
    return _fit_finetune(run, params, threads, estimate)


def _fit_finetune(run: ReportContext, params: dict, threads: int, estimate: float) -> dict:
    """Fit and test the planned fine-tuning with ``threads`` torch threads (measured faster)."""
    import torch

    from ..finetune import FineTuneClassifier
    from ..footprint import footprint

    s, dataset = run.settings, run.dataset
    model = FineTuneClassifier(
        s.backbone, weights=s.weights, random_state=0, n_jobs=s.n_jobs, verbose=1, **params
    )
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # the faster setting measured above; restored below
    try:
        with footprint(**s.grid) as fit_footprint:
            model.fit(dataset.X_train, dataset.y_train)
        predictions = model.predict(dataset.X_test)
    finally:
        torch.set_num_threads(default_threads)
    return {
        "params": params,
        "accuracy": float(np.mean(predictions == dataset.y_test)),
        "fit_seconds": fit_footprint.seconds,
        "estimated_seconds": estimate,
        "epochs": int(model.n_epochs_),
        "torch_threads": threads,
        "trainable_params": int(model.n_trainable_params_),
        "total_params": int(model.n_params_),
        "predictions": predictions,
        "footprint": fit_footprint.to_dict(),
        "n_exp": 1,  # one fit, no search
    }


# ------------------------------------------------------------------------------ t-SNE


def tsne(run: ReportContext) -> dict | None:
    """t-SNE of a shallow and a deep layer (``{"layers": [...], "png": bytes}``), if what is
    left of the budget covers its estimate (else None, noted)."""
    budget, dataset, features = run.budget, run.dataset, run.activations.features
    layers = list(features)
    shallow, deep = layers[len(layers) // 4], layers[-1]
    estimate = tsne_seconds(len(dataset.y_train) + len(dataset.y_test))
    budget.release("t-SNE")  # its turn: what it held is what it may spend
    with run.progress.stage("t-SNE", f"{shallow} and {deep}"):
        if budget.left() <= estimate:
            budget.notes.append(
                f"t-SNE skipped: about {estimate:.0f} s, more than the "
                f"{max(0.0, budget.left()):.0f} s left after holding {budget.held()}."
            )
            return None
        labels = np.concatenate([dataset.y_train, dataset.y_test]).astype(str)
        picture = run.memo.cache(tsne_png)(
            features[shallow], features[deep], labels, (shallow, deep), run.settings.random_state
        )
    return {"layers": [shallow, deep], "png": picture}


# ------------------------------------------------------------------------------ the report


def write_report(run: ReportContext) -> dict:
    """The recommendation, the plots, the recommended pipeline's code and every number,
    written as report.md, report.html, report.json and recommended_pipeline.py."""
    budget, s = run.budget, run.settings
    budget.release("writing the report")
    with run.progress.stage("report", str(run.out)):
        recommendation = recommend(run.extraction, run.fine_tuning)
        chosen = run.fine_tuning if recommendation["approach"] == "fine-tuning" else None
        predictions = (chosen or run.extraction)["predictions"]
        plots = {"tsne": run.tsne["png"]} if run.tsne else {}
        plots["scores"] = png(plot_scores(run.scores.table))
        plots["comparison"] = png(plot_comparison(run.extraction, run.fine_tuning))
        plots["confusion"] = png(
            plot_confusion(run.dataset.y_test, predictions, run.dataset.classes, recommendation)
        )
        code = pipeline_code(
            run.dataset, s.backbone, s.weights, recommendation, s.cache, s.random_state
        )
        results = results_of(run, recommendation, predictions)
        write(run.out, results, plots, code)
    results["stage_seconds"] = dict(run.progress.times)
    results["total_seconds"] = budget.elapsed()
    write(run.out, results, plots, code)  # again, with the report stage's own time
    if run.progress.verbose:
        print(
            f"Report written to {run.out / 'report.html'} (and report.md, report.json, "
            f"recommended_pipeline.py) in {results['total_seconds']:.0f} s.",
            file=sys.stderr,
        )
    return results
