"""DistilledClassifier: knowledge distillation from any fitted teacher into a small student."""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from .activations import FrozenNetwork, extract_activations
from .backbones import Backbone, _graph_nodes
from .devices import available_or_cpu, resolve_device, seeded
from .distillation import DistillationLoss, HintAdapter
from .images import check_images
from .students import Student, StudentTransform, build_student, reset_parameters
from .teachers import is_torch_teacher, prepare_teacher, teacher_module, teacher_outputs

__all__ = ["DistilledClassifier", "born_again"]


class DistillationNetwork(nn.Module):
    """The student during training: its logits, plus what the extra losses compare.

    With a hint layer or relation losses, ``forward`` returns ``(logits, extras)``: the hint
    layer's output passed through the adapter, and the input of the student's last linear
    layer (its embedding). The layers are read with forward hooks that live only for the
    duration of one forward pass, so the student module stays a plain, picklable module.
    """

    def __init__(self, student: nn.Module, adapter=None, hint_layer=None, embedding=False):
        super().__init__()
        self.student = student
        self.adapter = adapter
        self.hint_layer = hint_layer
        self.embedding = embedding

    def forward(self, x):
        if self.hint_layer is None and not self.embedding:
            return self.student(x)
        captured, handles = {}, []
        if self.hint_layer is not None:
            layer = _named_module(self.student, self.hint_layer)
            handles.append(layer.register_forward_hook(lambda m, i, o: captured.update(hint=o)))
        if self.embedding:
            head = _last_linear(self.student)
            handles.append(
                head.register_forward_pre_hook(lambda m, args: captured.update(embedding=args[0]))
            )
        try:
            logits = self.student(x)
        finally:
            for handle in handles:
                handle.remove()
        extras = {}
        if self.hint_layer is not None:
            extras["hint"] = self.adapter(captured["hint"])
        if self.embedding:
            extras["embedding"] = captured["embedding"]
        return logits, extras


def _named_module(module: nn.Module, name: str) -> nn.Module:
    modules = dict(module.named_modules())
    if name not in modules:
        blocks = [n for n in modules if n and n.count(".") <= 1]
        raise ValueError(
            f"The student has no layer {name!r}. Student layers are module names, e.g. "
            f"{blocks[:12]}."
        )
    return modules[name]


def _last_linear(module: nn.Module) -> nn.Module:
    linear = [m for m in module.modules() if isinstance(m, nn.Linear | nn.LazyLinear)]
    if not linear:
        raise ValueError(
            f"Relation losses compare embeddings, the input of the student's last nn.Linear; "
            f"{type(module).__name__} has none. Pass relation_weight=0."
        )
    return linear[-1]


class DistilledClassifier(ClassifierMixin, BaseEstimator):
    """A small student network trained to imitate a teacher (knowledge distillation).

    The teacher's answers on the transfer set (``X`` plus ``X_unlabeled``) are computed once,
    before the first epoch; the student then minimises

    ``(1 - alpha) * CE(y, s) + alpha * T**2 * KL(softmax(t / T) || softmax(s / T))
    + hint_weight * hint + relation_weight * (rkd_distance + 2 * rkd_angle)``

    where t are the teacher's logits (``log p`` for a teacher that only gives probabilities),
    s the student's, and the cross-entropy covers the labelled samples only (Hinton, Vinyals
    & Dean, 2015; FitNets, Romero et al., 2015; RKD, Park et al., 2019).

    Parameters
    ----------
    teacher : estimator, torch.nn.Module, Backbone or None
        A fitted scikit-learn classifier with ``predict_proba`` (Pipeline, SVC(probability=
        True), VotingClassifier, FineTuneClassifier, another DistilledClassifier...), a
        network whose outputs are the class logits in the order of the sorted labels (a
        :class:`~sktransfer.backbones.Backbone` carries its preprocessing; a bare module takes
        images as float tensors in [0, 1] at their own size, or feature vectors). An unfitted
        estimator is fitted on ``(X, y)`` first: that is what ``clone`` (GridSearchCV) does to
        a fitted teacher, so wrap a fitted teacher in ``sklearn.frozen.FrozenEstimator`` to
        keep it. None trains the student on the labels alone (the 'student alone' baseline).
    student : str or torch.nn.Module, default="cnn-small"
        ``"mlp-<width>-..."``, ``"cnn-<width>-..."``, ``"cnn-small"`` and the other
        :data:`~sktransfer.students.NAMED_STUDENTS`, a torchvision model name (from scratch),
        a module with ``n_classes`` outputs, or ``"teacher"``: the teacher's architecture with
        fresh weights (born-again networks; needs a teacher with a network).
    temperature : float, default=4
        T, which softens the teacher's and the student's distributions.
    alpha : float in [0, 1], default=0.9
        Weight of the soft-target term; ``1 - alpha`` weighs the labels.
    hint_layers : tuple of (str, str) or None, default=None
        ``(teacher_layer, student_layer)``: a graph node of a torch teacher
        (:func:`sktransfer.list_layers`) and a student module name (``"features.1"`` of a
        small CNN, ``"hidden.0"`` of an MLP) that regresses it through a learned 1x1
        convolution (maps) or linear layer (vectors).
    hint_weight : float, default=1
        Weight of the hint term when training jointly (``hint_epochs=0``).
    hint_epochs : int, default=0
        0: hints are a term of the loss throughout. k > 0: FitNets' first stage, k epochs
        on the hint alone, then the usual training without the hint term.
    relation_weight : float, default=0
        Weight of the relational (RKD distance + angle) terms on each batch's embeddings.
    image_size : int or None, default=None
        Student images are resized and centre-cropped to this size (see
        :func:`~sktransfer.students.build_student`).
    max_epochs : int, default=20
    batch_size : int, default=64
    lr : float, default=1e-3
        Adam's learning rate.
    weight_decay : float, default=0
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the transfer set and stop when its loss has not
        improved for ``n_iter_no_change`` epochs, keeping the best epoch's weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=5
    device : str, default="auto"
    verbose : int, default=0
        1 prints an epoch table, 2 adds progress bars.
    random_state : int or None, default=None
        Seeds the student's initialisation, the batch order and the validation split.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The teacher's classes (a scikit-learn teacher's ``classes_``, else the sorted labels).
    student_ : sktransfer.students.Student
        The trained student (``student_.module``) and its preprocessing.
    history_ : skorch.history.History
        Per-epoch losses (``train_loss``, ``valid_loss`` with early stopping).
    n_epochs_ : int
        Epochs trained.
    teacher_queries_ : int
        Passes over the transfer set made by the teacher (1).
    device_ : torch.device
    n_features_in_ : int
        Only for 2-D feature-vector input.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sktransfer import DistilledClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> teacher = LogisticRegression(max_iter=1000).fit(X[:1000], y[:1000])
    >>> student = DistilledClassifier(teacher, student="mlp-32", temperature=4, alpha=0.9,
    ...                               max_epochs=30, random_state=0)
    >>> student.fit(X[:1000], y[:1000]).score(X[1000:], y[1000:]) > 0.85
    True
    """

    _parameter_constraints: dict = {
        "teacher": "no_validation",  # estimators, modules, Backbones: checked in fit
        "student": [str, nn.Module],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, 1, closed="both")],
        "hint_layers": [tuple, list, None],
        "hint_weight": [Interval(Real, 0, None, closed="left")],
        "hint_epochs": [Interval(Integral, 0, None, closed="left")],
        "relation_weight": [Interval(Real, 0, None, closed="left")],
        "image_size": [Interval(Integral, 1, None, closed="left"), None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        teacher=None,
        *,
        student="cnn-small",
        temperature=4.0,
        alpha=0.9,
        hint_layers=None,
        hint_weight=1.0,
        hint_epochs=0,
        relation_weight=0.0,
        image_size=None,
        max_epochs=20,
        batch_size=64,
        lr=1e-3,
        weight_decay=0.0,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        device="auto",
        verbose=0,
        random_state=None,
    ):
        self.teacher = teacher
        self.student = student
        self.temperature = temperature
        self.alpha = alpha
        self.hint_layers = hint_layers
        self.hint_weight = hint_weight
        self.hint_epochs = hint_epochs
        self.relation_weight = relation_weight
        self.image_size = image_size
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.verbose = verbose
        self.random_state = random_state

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, *, X_unlabeled=None):
        """Query the teacher once over the transfer set, then train the student.

        Parameters
        ----------
        X : images or array of shape (n_samples, n_features)
            Anything :func:`sktransfer.images.check_images` accepts (feature vectors for MLP
            and module students).
        y : array-like of shape (n_samples,) or None
            Labels of ``X``. None: ``X`` is unlabelled too, and only the teacher teaches.
        X_unlabeled : images or array, optional
            More transfer data, labelled by the teacher only (Hinton's transfer set).

        Returns
        -------
        self : DistilledClassifier
        """
        self._check_settings(y, X_unlabeled)
        seed = _seed(self.random_state)
        self.device_ = resolve_device(self.device)
        inputs = self._check_inputs(X, reset=True)
        if y is not None:
            y = _check_labels(y, len(inputs))
        transfer_X, transfer = inputs, X
        if X_unlabeled is not None:
            extra = check_images(X_unlabeled, allow_vectors=True)
            if (extra.kind == "vectors") != (inputs.kind == "vectors"):
                raise ValueError(
                    f"X is {inputs.kind} but X_unlabeled is {extra.kind}; pass the same kind of "
                    "input for both."
                )
            transfer = _concatenate(X, X_unlabeled)
            transfer_X = check_images(transfer, allow_vectors=True)
        n_labelled = len(inputs)

        teacher = None
        if self.teacher is not None:
            teacher = prepare_teacher(self.teacher, X, y)
        self.classes_ = self._resolve_classes(teacher, y)
        labels = np.full(len(transfer_X), -1, dtype=np.int64)
        if y is not None:
            labels[:n_labelled] = np.searchsorted(self.classes_, y)

        self.student_ = self._build_student(teacher, seed)
        if transfer_X.kind == "vectors" and not self.student_.takes_vectors:
            raise ValueError(
                f"The student {self.student_.name!r} takes images, but X is a 2-D array of "
                "feature vectors. Use an MLP student ('mlp-64-64') or pass images."
            )
        features = self._student_inputs(transfer_X)
        hint_layer = self.hint_layers[1] if self.hint_layers else None
        student_hint_shape = self._probe(features, hint_layer, seed)

        targets = {"label": labels}
        self.teacher_queries_ = 0
        if teacher is not None:
            outputs = teacher_outputs(
                teacher,
                transfer,
                transfer_X,
                hint_layer=self.hint_layers[0] if self.hint_layers else None,
                hint_size=student_hint_shape[1:] if student_hint_shape else None,
                embedding=self.relation_weight > 0,
                batch_size=self.batch_size,
                device=self.device_,
                verbose=self.verbose > 1,
            )
            self.teacher_queries_ = 1
            if outputs.logits.shape[1] != len(self.classes_):
                raise ValueError(
                    f"The teacher has {outputs.logits.shape[1]} outputs but there are "
                    f"{len(self.classes_)} classes {self.classes_}; a torch teacher must output "
                    "one logit per class, in the order of the sorted labels."
                )
            targets["teacher"] = outputs.logits
            if outputs.hint is not None:
                targets["hint"] = outputs.hint
            if outputs.embedding is not None:
                targets["embedding"] = outputs.embedding
        else:
            targets["teacher"] = np.zeros((len(labels), len(self.classes_)), np.float32)

        adapter = None
        if hint_layer is not None:
            with seeded(seed):
                adapter = HintAdapter(student_hint_shape, targets["hint"].shape[1:])
        network = DistillationNetwork(
            self.student_.module, adapter, hint_layer, self.relation_weight > 0
        )
        alpha = 0.0 if teacher is None else self.alpha
        self.history_ = []
        self.n_epochs_ = 0
        if hint_layer is not None and self.hint_epochs > 0:
            stage_one = DistillationLoss(self.temperature, 0.0, hint_weight=1.0)
            hint_targets = dict(targets, label=np.full_like(labels, -1))
            self._train(network, stage_one, features, hint_targets, self.hint_epochs, seed)
            network.adapter, network.hint_layer = None, None
            targets.pop("hint")
        hint_weight = self.hint_weight if network.hint_layer is not None else 0.0
        criterion = DistillationLoss(self.temperature, alpha, hint_weight, self.relation_weight)
        self._train(network, criterion, features, targets, self.max_epochs, seed)
        self.student_.module.eval()
        self._network = None
        return self

    def _check_settings(self, y, X_unlabeled):
        if self.teacher is None:
            if y is None or X_unlabeled is not None:
                raise ValueError(
                    "Without a teacher (teacher=None) the student learns from labels alone: "
                    "pass y for every sample and no X_unlabeled, or pass a teacher."
                )
        elif y is None and self.alpha < 1:
            warnings.warn(
                f"y is None, so the label term (weight 1 - alpha = {1 - self.alpha:g}) is "
                "empty and only the teacher teaches.",
                UserWarning,
                stacklevel=3,
            )
        if self.hint_layers is not None:
            if len(self.hint_layers) != 2 or not all(isinstance(n, str) for n in self.hint_layers):
                raise ValueError(
                    f"hint_layers must be a pair (teacher_layer, student_layer) of layer names; "
                    f"got {self.hint_layers!r}."
                )
            if not is_torch_teacher(self.teacher) and teacher_module(self.teacher) is None:
                raise ValueError(
                    f"Hints read a teacher layer, so the teacher must be a torch.nn.Module or a "
                    f"Backbone; got {type(self.teacher).__name__}. Pass hint_layers=None."
                )

    def _check_inputs(self, X, reset):
        inputs = check_images(X, allow_vectors=True)
        if inputs.kind == "vectors":
            validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=True)
        elif reset and hasattr(self, "n_features_in_"):
            del self.n_features_in_
        if reset:
            self.input_kind_ = "vectors" if inputs.kind == "vectors" else "images"
        elif (inputs.kind == "vectors") != (self.input_kind_ == "vectors"):
            raise ValueError(
                f"This classifier was fitted on {self.input_kind_} but got {inputs.kind}; pass "
                "the same kind of input to fit and predict."
            )
        return inputs

    def _resolve_classes(self, teacher, y):
        if teacher is None or isinstance(teacher, Backbone):
            if y is None:
                raise ValueError(
                    "A torch teacher's outputs carry no class names, so y is needed to name "
                    "them; pass y (it may label only part of the transfer set)."
                )
            return np.unique(y)
        classes = np.asarray(teacher.classes_)
        if y is not None:
            unknown = np.setdiff1d(np.unique(y), classes)
            if len(unknown):
                raise ValueError(
                    f"y has labels {unknown.tolist()} that the teacher does not know (its "
                    f"classes_ are {classes.tolist()}). Fit the teacher on these classes."
                )
        return classes

    def _build_student(self, teacher, seed) -> Student:
        if not (isinstance(self.student, str) and self.student == "teacher"):
            return build_student(
                self.student, len(self.classes_), image_size=self.image_size, random_state=seed
            )
        module = teacher_module(teacher) if teacher is not None else None
        if module is None:
            raise ValueError(
                "student='teacher' (born-again) copies the teacher's network, but the teacher "
                f"{type(self.teacher).__name__} has none. Pass a torch teacher, a "
                "DistilledClassifier or a FineTuneClassifier."
            )
        module = reset_parameters(copy.deepcopy(module).cpu(), seed)
        inner = getattr(teacher, "estimator", teacher)  # FrozenEstimator
        if isinstance(inner, DistilledClassifier):
            return Student(module, inner.student_.transform, inner.student_.name, True)
        transform = getattr(teacher, "transform", None) if isinstance(teacher, Backbone) else None
        return Student(module, transform or StudentTransform(self.image_size, mean=None), "", True)

    def _student_inputs(self, inputs) -> torch.Tensor:
        transform = self.student_.transform
        batches = list(inputs.batches(transform, 256))
        return torch.cat([b.float() for b in batches])

    def _probe(self, features, hint_layer, seed):
        """Run two samples through the student: initialises lazy layers and measures the
        hint layer's output."""
        module = self.student_.module
        captured = {}
        handle = None
        if hint_layer is not None:
            layer = _named_module(module, hint_layer)
            handle = layer.register_forward_hook(lambda m, i, o: captured.update(hint=o))
        module.eval()
        try:
            with seeded(seed), torch.no_grad():
                module(features[:2])
        finally:
            if handle is not None:
                handle.remove()
        return tuple(captured["hint"].shape[1:]) if hint_layer is not None else None

    def _train(self, network, criterion, features, targets, epochs, seed):
        from skorch import NeuralNet
        from skorch.callbacks import EarlyStopping, ProgressBar
        from skorch.dataset import ValidSplit

        callbacks = []
        if self.verbose > 1:
            callbacks.append(("progress_bar", ProgressBar()))
        split = None
        if self.early_stopping:
            split = ValidSplit(self.validation_fraction, random_state=seed)
            callbacks.append(
                (
                    "early_stopping",
                    EarlyStopping(patience=self.n_iter_no_change, load_best=True, sink=_silent),
                )
            )
        net = NeuralNet(
            network,
            criterion=criterion,
            optimizer=torch.optim.Adam,
            optimizer__weight_decay=self.weight_decay,
            lr=self.lr,
            max_epochs=epochs,
            batch_size=self.batch_size,
            iterator_train__shuffle=True,
            train_split=split,
            callbacks=callbacks,
            device=self.device_,
            verbose=int(self.verbose),
        )
        targets = {k: torch.as_tensor(v) for k, v in targets.items()}
        with seeded(seed):
            net.fit(features, targets)
        network.to("cpu") if self.device_.type != "cpu" else None
        self.history_ = list(self.history_) + list(net.history)
        self.n_epochs_ += len(net.history)

    # ------------------------------------------------------------------ predict

    def decision_function(self, X):
        """The student's logits.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float32
        """
        check_is_fitted(self)
        inputs = self._check_inputs(X, reset=False)
        network = self._frozen_network()
        return extract_activations(
            network, inputs, pooling=None, batch_size=max(self.batch_size, 256)
        )[network.layers[0]]

    def predict_proba(self, X):
        """Class probabilities, ``softmax(logits)`` (temperature 1).

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        logits = torch.from_numpy(self.decision_function(X))
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict(self, X):
        """The most probable class of each sample, as one of ``classes_``."""
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def _frozen_network(self) -> FrozenNetwork:
        network = getattr(self, "_network", None)
        if network is None:
            module = self.student_.module.eval()
            backbone = Backbone(module, self.student_.transform, self.student_.name, "module")
            backbone.takes_vectors = self.student_.takes_vectors
            network = FrozenNetwork(backbone, [_graph_nodes(module)[-1]], self.device_)
            self._network = network
        return network

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.non_deterministic = self.random_state is None
        return tags

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_network", None)
        if "student_" in state:
            student = copy.copy(state["student_"])
            student.module = copy.deepcopy(student.module).cpu()
            state["student_"] = student
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._network = None
        if "device_" in state:
            self.device_ = available_or_cpu(self.device_)


def born_again(teacher, X, y=None, *, generations=3, X_unlabeled=None, **params):
    """Born-again networks: distil a teacher into its own architecture, several times.

    Generation k is a :class:`DistilledClassifier` with ``student="teacher"`` whose teacher is
    generation k - 1 (Furlanello et al., 2018).

    Parameters
    ----------
    teacher : torch teacher, DistilledClassifier or FineTuneClassifier
        Generation 0; it must hold a network to copy.
    X, y, X_unlabeled : as in :meth:`DistilledClassifier.fit`
    generations : int, default=3
    **params
        Parameters of every generation's DistilledClassifier.

    Returns
    -------
    list of DistilledClassifier
        The fitted generations, oldest first.
    """
    if generations < 1:
        raise ValueError(f"generations must be >= 1; got {generations}.")
    fitted = []
    for _ in range(generations):
        model = DistilledClassifier(teacher, student="teacher", **params)
        fitted.append(model.fit(X, y, X_unlabeled=X_unlabeled))
        teacher = model
    return fitted


def _silent(*args, **kwargs):
    return None


def _check_labels(y, n_samples):
    y = np.asarray(y)
    if y.ndim != 1:
        y = y.ravel() if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per sample); got shape {y.shape}.")
    check_classification_targets(y)
    if len(y) != n_samples:
        raise ValueError(f"X has {n_samples} samples but y has {len(y)} labels.")
    return y


def _concatenate(X, X_unlabeled):
    """Join the labelled and unlabelled inputs in the form the teacher takes."""
    a, b = (x.to_numpy() if hasattr(x, "to_numpy") else x for x in (X, X_unlabeled))
    if (
        isinstance(a, np.ndarray)
        and isinstance(b, np.ndarray)
        and a.dtype != object
        and b.dtype != object
        and a.shape[1:] == b.shape[1:]
    ):
        return np.concatenate([a, b])
    return [*list(a), *list(b)]


def _seed(random_state):
    if random_state is None:
        return None
    if isinstance(random_state, Integral):
        return int(random_state)
    return int(np.random.RandomState(random_state).randint(2**31 - 1))
