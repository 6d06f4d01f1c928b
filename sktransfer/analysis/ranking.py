"""Rank layers (and backbones) for a target task by transferability scores."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..transferability import LAYER_SCORES, SOURCE_SCORES, linear_probe_score
from .features import extract_layer_features

__all__ = ["rank_layers"]


def rank_layers(
    features,
    y,
    *,
    scores=("logme",),
    source_probabilities=None,
    probe=False,
    cv=3,
    random_state=0,
    backbones=("mobilenet_v2",),
    layers=None,
    **extractor_params,
) -> pd.DataFrame:
    """Score every layer of one or more backbones for the task ``y``, best first.

    Parameters
    ----------
    features : mapping or images
        Either each layer's features, ``{layer: array}``, or several backbones' layers,
        ``{backbone: {layer: array}}``, all on the same samples; or images, which are run
        through each of ``backbones`` (one forward pass per backbone, tapping ``layers``).
    y : array-like of shape (n_samples,)
        Target class labels.
    scores : sequence of str, default=("logme",)
        Layer scores (keys of :data:`sktransfer.transferability.LAYER_SCORES`: "logme",
        "h_score", "h_score_shrunk", "nleep", "transrate", "gbc", "sfda", "linear_probe")
        and source scores ("leep", "nce"). The first one orders the table. A source score
        rates a backbone's source-task output, so it is the same for all layers of a
        backbone; it needs ``source_probabilities`` with feature input (with images they are
        tapped in the same pass).
    source_probabilities : array or mapping of str to array, optional
        The source model's class probabilities on the samples (per backbone for nested
        input), for "leep" and "nce".
    probe : bool, default=False
        Also report a ``cv``-fold :func:`~sktransfer.analysis.linear_probe_score` (the ground
        truth the scores estimate, at a higher cost) as column ``probe_accuracy``.
    cv : int, default=3
        Folds of the probe.
    random_state : int, default=0
        Seed of the probe's folds.
    backbones : sequence of str, default=("mobilenet_v2",)
        Only with images: the backbones to compare.
    layers : list of str, mapping of str to list, or None
        Only with images: the layers to tap (per backbone with a mapping). None: each
        network's blocks (:func:`sktransfer.block_layers`).
    **extractor_params
        Only with images: :class:`~sktransfer.DeepFeatureExtractor` parameters.

    Returns
    -------
    table : pandas.DataFrame
        One row per (backbone, layer), sorted by the first score (best first), with columns
        ``rank``, ``backbone``, ``layer``, ``depth`` (the layer's position in its backbone),
        ``n_features``, one column per score, ``probe_accuracy`` if asked, and
        ``<score>_seconds``, the time each took.

    Examples
    --------
    >>> import numpy as np
    >>> from sktransfer.analysis import rank_layers
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> feats = {"early": rng.normal(size=(40, 4)), "late": y[:, None] + rng.normal(size=(40, 4))}
    >>> rank_layers(feats, y, scores=["logme", "h_score"])["layer"].tolist()
    ['late', 'early']
    """
    scores = _checked_scores(scores)
    y = np.asarray(y)
    if isinstance(features, Mapping):
        nested = _as_nested(features)
        probabilities = _as_nested_probabilities(source_probabilities, nested)
    else:
        nested, probabilities = _extract(features, backbones, layers, scores, extractor_params)
    probe_options = {"cv": cv, "random_state": random_state} if probe else None
    rows = []
    for name, by_layer in nested.items():
        rows += _backbone_rows(name, by_layer, probabilities[name], y, scores, probe_options)
    return _ranked_table(rows, scores, probe)


def _checked_scores(scores) -> list[str]:
    scores = [scores] if isinstance(scores, str) else list(scores)
    known = [*LAYER_SCORES, *SOURCE_SCORES]
    unknown = [s for s in scores if s not in known]
    if not scores or unknown:
        raise ValueError(f"Unknown score(s) {unknown or scores}: choose among {known}.")
    return scores


def _backbone_rows(backbone, layer_features, probabilities, y, scores, probe_options):
    """One row per layer of ``backbone``: each score and the seconds it took; a source score
    is computed once, shared by the backbone's layers."""
    source_scores = [s for s in scores if s in SOURCE_SCORES]
    if source_scores and probabilities is None:
        raise ValueError(
            f"The score(s) {source_scores} need the source model's class probabilities: pass "
            "source_probabilities= (an array, or one per backbone), or pass images."
        )
    by_source = {s: _timed(SOURCE_SCORES[s], probabilities, y) for s in source_scores}
    rows = []
    for depth, (layer, X) in enumerate(layer_features.items()):
        row = {"backbone": backbone, "layer": layer, "depth": depth, "n_features": X.shape[1]}
        for name in scores:
            timed = by_source[name] if name in by_source else _timed(LAYER_SCORES[name], X, y)
            row[name], row[f"{name}_seconds"] = timed
        if probe_options is not None:
            timed = _timed(linear_probe_score, X, y, **probe_options)
            row["probe_accuracy"], row["probe_seconds"] = timed
        rows.append(row)
    return rows


def _ranked_table(rows: list[dict], scores: list[str], probe: bool) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    value_columns = [*scores, *(["probe_accuracy"] if probe else [])]
    time_columns = [f"{s}_seconds" for s in scores] + (["probe_seconds"] if probe else [])
    table = table[["backbone", "layer", "depth", "n_features", *value_columns, *time_columns]]
    table = table.sort_values(scores[0], ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def _as_nested(features: Mapping) -> dict[str, dict[str, np.ndarray]]:
    if not features:
        raise ValueError("features is empty: pass {layer: array} or {backbone: {layer: array}}.")
    values = list(features.values())
    if all(isinstance(v, Mapping) for v in values):
        return {
            str(b): {str(k): np.asarray(v) for k, v in layers.items()}
            for b, layers in features.items()
        }
    if any(isinstance(v, Mapping) for v in values):
        raise ValueError(
            "features mixes arrays and mappings: pass either {layer: array} or "
            "{backbone: {layer: array}}."
        )
    return {"": {str(k): np.asarray(v) for k, v in features.items()}}


def _as_nested_probabilities(source_probabilities, nested) -> dict:
    if source_probabilities is None:
        return dict.fromkeys(nested)
    if isinstance(source_probabilities, Mapping):
        missing = [b for b in nested if b not in source_probabilities]
        if missing:
            raise ValueError(f"source_probabilities has no entry for backbone(s) {missing}.")
        return {b: source_probabilities[b] for b in nested}
    if len(nested) > 1:
        raise ValueError("With several backbones, pass source_probabilities as {backbone: array}.")
    return {b: source_probabilities for b in nested}


def _extract(images, backbones, layers, scores, extractor_params):
    """Each backbone's layers' features of ``images`` (one pass per backbone), and its source
    class probabilities when a source score needs them."""
    with_probabilities = any(s in SOURCE_SCORES for s in scores)
    backbones = [backbones] if isinstance(backbones, str) else list(backbones)
    nested, probabilities = {}, {}
    for backbone in backbones:
        chosen = layers.get(backbone) if isinstance(layers, Mapping) else layers
        result = extract_layer_features(
            images,
            backbone,
            chosen,
            source_probabilities=with_probabilities,
            **extractor_params,
        )
        if with_probabilities:
            nested[backbone], probabilities[backbone] = result
        else:
            nested[backbone], probabilities[backbone] = result, None
    return nested, probabilities
