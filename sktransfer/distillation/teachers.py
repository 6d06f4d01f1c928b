"""Teachers: what a distillation teacher says about the transfer set, computed once per fit.

A teacher is any fitted scikit-learn classifier with ``predict_proba`` (a Pipeline, an SVC
with probabilities, a VotingClassifier, a FineTuneClassifier...), a ``torch.nn.Module`` or a
:class:`~sktransfer.backbones.Backbone` (a module with its preprocessing). Its answers,
logits and optionally a hint layer's activations and an embedding, are computed in one pass
over the transfer set before the student's first epoch: the teacher is never run per epoch.
Torch teachers run through the frozen-forward seam, :mod:`sktransfer.frozen`.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import clone, is_classifier
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._compat import _safe_indexing
from ..backbones import Backbone, ToUnitFloat, _graph_nodes, load_backbone, penultimate_layer
from ..frozen import EngineWarning, FrozenNetwork, pooled_features, resolve_engine
from ..images import ImageInputs
from ..progress import progress_bar
from .losses import probabilities_to_logits

__all__ = [
    "TeacherOutputs",
    "TeacherQuery",
    "estimator_outputs",
    "is_torch_teacher",
    "network_of_estimator",
    "network_outputs",
    "prepare_teacher",
    "teacher_backbone",
    "teacher_module",
    "teacher_outputs",
]


@dataclass
class TeacherOutputs:
    """The teacher's answers for every sample of the transfer set, in order.

    Attributes
    ----------
    logits : ndarray of shape (n_samples, n_classes), float32
        For a probability-only teacher, ``log p`` (so ``softmax(logits / T)`` are its soft
        targets).
    classes : ndarray of shape (n_classes,)
        The label of each logit column.
    hint : ndarray of shape (n_samples, ...) or None
        The hint layer's activations (maps pooled to ``hint_size`` when given).
    embedding : ndarray of shape (n_samples, n_features) or None
        The teacher's embedding for relation losses: a torch teacher's penultimate features,
        or the input of a Pipeline's final step.
    """

    logits: np.ndarray
    classes: np.ndarray
    hint: np.ndarray | None = None
    embedding: np.ndarray | None = None


def is_torch_teacher(teacher) -> bool:
    """Whether the teacher is a network (module or Backbone) rather than an estimator."""
    return isinstance(teacher, nn.Module | Backbone)


def prepare_teacher(teacher, X, y):
    """Return the teacher ready to be queried: a fitted estimator or a :class:`Backbone`.

    An unfitted scikit-learn classifier is cloned and fitted on ``(X, y)``: this is what
    happens to a fitted teacher that ``clone`` (GridSearchCV, cross_validate) copied without
    its fit. Wrap a fitted teacher in ``sklearn.frozen.FrozenEstimator`` to keep it fitted
    through clones.
    """
    if isinstance(teacher, Backbone):
        return teacher
    if isinstance(teacher, nn.Module):
        return load_backbone(teacher)  # a bare module's preprocessing: ToUnitFloat
    if not hasattr(teacher, "predict_proba") or not (
        is_classifier(teacher) or hasattr(teacher, "classes_")
    ):
        raise TypeError(
            f"The teacher must be a scikit-learn classifier with predict_proba, a "
            f"torch.nn.Module or a sktransfer Backbone; got {type(teacher).__name__}. For an "
            "SVC, pass SVC(probability=True)."
        )
    if _is_fitted(teacher):
        return teacher
    if y is None:
        raise ValueError(
            f"The teacher {type(teacher).__name__} is not fitted and no labels y were given "
            "to fit it on: fitting it requires y to be passed, but the target y is None. "
            "Pass a fitted teacher (wrapped in sklearn.frozen.FrozenEstimator "
            "to survive clone/GridSearchCV), or pass y."
        )
    return clone(teacher).fit(X, y)


def _is_fitted(estimator) -> bool:
    try:
        check_is_fitted(estimator)
    except Exception:  # NotFittedError, or estimators check_is_fitted cannot read
        return False
    return True


def unfrozen(teacher):
    """The estimator inside a ``FrozenEstimator`` (which delegates attributes, so
    ``hasattr`` cannot tell), or the teacher itself."""
    return teacher.estimator if isinstance(teacher, FrozenEstimator) else teacher


@dataclass(frozen=True)
class TeacherQuery:
    """How the teacher is queried: what to return besides logits, and how to run it.

    Attributes
    ----------
    hint_layer : str or None
        A network teacher's graph node to give hints from (:func:`sktransfer.list_layers`).
    hint_size : tuple of int or None
        Spatial size (H, W) to average-pool the hint maps to (the student's map size), so
        that only what the student can regress is stored.
    embedding : bool
        Whether to return an embedding for relation losses.
    batch_size, device, verbose
        As the distilled classifier's.
    engine : {"auto", "torch", "onnxruntime"}
        Who runs a network teacher's forward pass (:class:`~sktransfer.frozen.FrozenNetwork`).
    n_threads : int or None
        ONNX Runtime threads (None: the machine's cores).
    """

    hint_layer: str | None = None
    hint_size: tuple | None = None
    embedding: bool = False
    batch_size: int = 64
    device: object = None
    verbose: int = 0
    engine: str = "auto"
    n_threads: int | None = None


def teacher_outputs(teacher, X, inputs: ImageInputs, **query) -> TeacherOutputs:
    """Query ``teacher`` (from :func:`prepare_teacher`) once over the transfer set.

    Three kinds of teacher, each answered by its own function:

    - a :class:`~sktransfer.backbones.Backbone` (a torch module made ready by
      :func:`prepare_teacher`): its layers are tapped through the frozen-forward seam
      (:func:`network_outputs`);
    - a trained estimator that holds a network (a FineTuneClassifier, a
      DistilledClassifier): read as that network, unless torch.fx cannot trace it and
      neither hints nor an embedding are asked for (:func:`network_of_estimator`);
    - any other fitted scikit-learn classifier: its ``predict_proba``, and for an embedding
      the input of a Pipeline's last step (:func:`estimator_outputs`).

    Parameters
    ----------
    teacher : fitted estimator or Backbone
    X : the raw transfer set, as the estimator teacher takes it
    inputs : ImageInputs
        The same samples, validated (what a network teacher reads).
    **query
        The fields of :class:`TeacherQuery` (``hint_layer``, ``hint_size``, ``embedding``,
        ``batch_size``, ``device``, ``verbose``, ``engine``, ``n_threads``).
    """
    query = TeacherQuery(**query)
    if not isinstance(teacher, Backbone) and teacher_module(teacher) is not None:
        teacher = network_of_estimator(teacher, query)
    if isinstance(teacher, Backbone):
        return network_outputs(teacher, inputs, query)
    return estimator_outputs(teacher, X, len(inputs), query)


def network_of_estimator(teacher, query: TeacherQuery):
    """A trained estimator's network as a :class:`Backbone`, or the estimator itself (with an
    :class:`~sktransfer.frozen.EngineWarning`) when torch.fx cannot trace the network and
    only its answers are asked for.

    A FineTuneClassifier's or DistilledClassifier's logits are log p up to a per-sample
    constant, so the soft targets are the same either way, and its layers can be read.
    """
    network = teacher_backbone(teacher)
    untraceable = _trace_failure(network.module)
    if untraceable is None or query.hint_layer is not None or query.embedding:
        return network  # hints and embeddings need the graph: its error is the answer
    warnings.warn(
        f"The teacher's network ({network.name}) cannot be traced by torch.fx "
        f"({untraceable}), so the frozen-network engines cannot run it; its answers "
        "come from its own predict_proba instead (the same soft targets, torch's "
        "speed).",
        EngineWarning,
        stacklevel=4,
    )
    return teacher


def estimator_outputs(teacher, X, n_samples: int, query: TeacherQuery) -> TeacherOutputs:
    """A fitted scikit-learn classifier's answers: ``log predict_proba``, and with
    ``query.embedding`` the input of a Pipeline's last step."""
    if query.hint_layer is not None:
        raise ValueError(
            f"Hints need a teacher whose layers can be read (a torch.nn.Module, a Backbone or "
            f"a FineTuneClassifier); got {type(teacher).__name__}. Pass hint_layers=None, or "
            "pass the teacher's network."
        )
    features = None
    if query.embedding:
        pipeline = _pipeline_with_embedding(unfrozen(teacher))
        features = _answer(pipeline[:-1].transform, X, n_samples, query).astype(np.float32)
        proba = pipeline[-1].predict_proba(features)
    else:
        proba = _answer(teacher.predict_proba, X, n_samples, query)
    proba = np.asarray(proba)
    classes = np.asarray(teacher.classes_)
    if proba.ndim != 2 or proba.shape != (n_samples, len(classes)):
        raise ValueError(
            f"The teacher's predict_proba returned shape {proba.shape}; expected "
            f"({n_samples}, {len(classes)}) for {n_samples} samples and classes {classes}."
        )
    return TeacherOutputs(probabilities_to_logits(proba), classes, None, features)


def _pipeline_with_embedding(estimator) -> Pipeline:
    if not isinstance(estimator, Pipeline) or len(estimator.steps) < 2:
        raise ValueError(
            f"Relation losses need the teacher's embedding of each sample: a torch "
            f"teacher's penultimate features, or the input of a Pipeline's last step. "
            f"{type(estimator).__name__} has neither; pass relation_weight=0 or use a "
            "Pipeline or a torch teacher."
        )
    return estimator


def _answer(method, X, n_samples: int, query: TeacherQuery) -> np.ndarray:
    """``method(X)`` for a scikit-learn teacher; with ``verbose``, in at most 20 chunks under a
    progress bar, since a Pipeline teacher may take minutes over thousands of images."""
    chunk = max(4 * query.batch_size, math.ceil(n_samples / 20))
    if not query.verbose or n_samples <= chunk:
        return np.asarray(method(X))
    answers = []
    with progress_bar(total=n_samples, desc="teacher answers", unit="sample") as bar:
        for start in range(0, n_samples, chunk):
            stop = min(start + chunk, n_samples)
            answers.append(np.asarray(method(_safe_indexing(X, np.arange(start, stop)))))
            bar.update(stop - start)
    return np.concatenate(answers)


def network_outputs(backbone: Backbone, inputs: ImageInputs, query: TeacherQuery):
    """A network teacher's logits (its last graph node), hint maps and penultimate features,
    in one frozen pass over the transfer set."""
    if inputs.kind == "vectors" and not backbone.takes_vectors:
        raise ValueError(
            f"The teacher {backbone.name!r} takes images, but X is a 2-D array of feature "
            "vectors. Pass images."
        )
    nodes = _graph_nodes(backbone.module)
    embedding_node = penultimate_layer(backbone.module) if query.embedding else None
    wanted = [nodes[-1], query.hint_layer, embedding_node]
    activations, shapes = _read_layers(backbone, inputs, [n for n in wanted if n], query)
    hint = None
    if query.hint_layer is not None:
        shape = shapes[query.hint_layer]
        hint = activations[query.hint_layer].reshape(len(inputs), *shape)
        size = query.hint_size
        if size is not None and len(shape) == 3 and tuple(shape[1:]) != tuple(size):
            hint = _pool_maps(hint, tuple(size), query.batch_size)
    features = activations[embedding_node] if embedding_node is not None else None
    logits = activations[nodes[-1]]
    return TeacherOutputs(logits, np.arange(logits.shape[1]), hint, features)


def _read_layers(backbone: Backbone, inputs: ImageInputs, names: list[str], query):
    """Each named layer's flattened activations over ``inputs`` and its per-sample shape.

    A module's name and its last node's name are one output ("hidden.1" and "hidden.1.2"):
    the feature extractor keeps one of them, so one name per output is tapped and the others
    are aliases of it.
    """
    nodes = _graph_nodes(backbone.module)
    tapped: dict[str, str] = {}
    for name in names:
        tapped.setdefault(_last_node(nodes, name), name)
    alias = {name: tapped[_last_node(nodes, name)] for name in names}
    device = torch.device(query.device or "cpu")
    engine = resolve_engine(query.engine, device)
    network = FrozenNetwork(
        backbone, list(tapped.values()), device, engine=engine, n_threads=query.n_threads
    )
    with torch.inference_mode():
        probe = network(inputs.batch(0, 1, backbone.transform))
    activations = pooled_features(
        network, inputs, pooling=None, batch_size=query.batch_size, verbose=query.verbose
    )
    return (
        {name: activations[alias[name]] for name in names},
        {name: tuple(probe[alias[name]].shape[1:]) for name in names},
    )


def _trace_failure(module: nn.Module) -> str | None:
    """Why torchvision's feature extraction cannot trace ``module`` (None if it can).

    It traces the training-mode forward too, so Python control flow on tensor values there
    (a random input jitter, say) stops it even though only eval mode is ever run.
    """
    try:
        _graph_nodes(module)
    except Exception as exc:  # torch.fx raises several types for untraceable code
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def _last_node(nodes: list[str], name: str) -> str:
    """The graph node whose output a layer name taps (a module: its last node)."""
    inside = [node for node in nodes if node == name or node.startswith(name + ".")]
    return inside[-1] if inside else name


def _pool_maps(maps: np.ndarray, size, batch_size: int) -> np.ndarray:
    pooled = [
        F.adaptive_avg_pool2d(torch.from_numpy(maps[i : i + batch_size]), size).numpy()
        for i in range(0, len(maps), batch_size)
    ]
    return np.concatenate(pooled)


def teacher_module(teacher) -> nn.Module | None:
    """The network inside a teacher, when it has one (for hints and born-again students)."""
    if isinstance(teacher, Backbone):
        return teacher.module
    if isinstance(teacher, nn.Module):
        return teacher
    estimator = unfrozen(teacher)
    module = getattr(estimator, "student_module_", None)  # a DistilledClassifier
    if module is None:
        net = getattr(estimator, "net_", None)  # the training base (FineTuneClassifier...)
        module = getattr(net, "module_", None)
    return module if isinstance(module, nn.Module) else None


def teacher_backbone(teacher) -> Backbone:
    """A trained estimator's network and preprocessing as a :class:`Backbone` (a copy), so
    that its layers can be tapped through the frozen-forward seam."""
    module = teacher_module(teacher)
    if module is None:
        raise ValueError(
            f"{type(teacher).__name__} holds no network whose layers can be read; hints need "
            "a torch teacher, a FineTuneClassifier or a DistilledClassifier."
        )
    estimator = unfrozen(teacher)
    preprocessing = getattr(estimator, "preprocessing_", None)
    transform = getattr(preprocessing, "transform", None) or ToUnitFloat()
    takes_vectors = bool(getattr(preprocessing, "takes_vectors", True))
    module = copy.deepcopy(module).cpu().eval()
    return Backbone(module, transform, type(module).__name__, "module", None, takes_vectors)
