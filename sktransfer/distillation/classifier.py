"""DistilledClassifier: knowledge distillation from any fitted teacher into a small student.

Built on the shared training base (:class:`sktransfer.training.NeuralClassifierBase`): the
teacher is made ready in ``_setup`` and queried once in ``_build_module`` (the hooks pass it,
the student and the teacher's answers along in the fit's ``FitContext.extras``), its answers
become per-sample training targets in ``_training_targets``, and
:class:`~sktransfer.distillation.DistillationLoss` is the ``_criterion``.
"""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d
from torch import nn

from .._compat import Interval, StrOptions, _fit_context, _num_samples
from ..backbones import Backbone
from ..frozen import ENGINES
from ..images import concatenate_images
from ..training import (
    FitContext,
    NeuralClassifierBase,
    Preprocessing,
    store_parameters,
    with_training_parameters,
)
from .losses import DistillationLoss, HintAdapter
from .network import (
    DistillationNetwork,
    EndHintStage,
    FitNetsStages,
    PackedDistillationLoss,
    probe_student,
)
from .students import Student, StudentTransform, build_student, reset_parameters
from .teachers import (
    is_torch_teacher,
    prepare_teacher,
    teacher_module,
    teacher_outputs,
    unfrozen,
)

__all__ = ["DistilledClassifier", "born_again"]


class DistilledClassifier(NeuralClassifierBase):
    """A small student network trained to imitate a teacher (knowledge distillation).

    The teacher's answers on the transfer set (``X`` plus ``X_unlabeled``) are computed once,
    before the first epoch; the student then minimises

    ``(1 - alpha) * CE(y, s) + alpha * T**2 * KL(softmax(t / T) || softmax(s / T))
    + hint_weight * hint + relation_weight * (rkd_distance + 2 * rkd_angle)``

    where t are the teacher's logits (``log p`` for a teacher that only gives probabilities,
    so its soft targets are ``softmax(log p / T)``), s the student's, and the cross-entropy
    covers the labelled samples only (Hinton, Vinyals & Dean, 2015; FitNets, Romero et al.,
    2015; RKD, Park et al., 2019). Training runs on the shared skorch base: history, early
    stopping, progress bar, seeding, device and pickling behave as in FineTuneClassifier.

    Parameters
    ----------
    teacher : estimator, torch.nn.Module, Backbone or None
        A fitted scikit-learn classifier with ``predict_proba`` (Pipeline, SVC(probability=
        True), VotingClassifier, FineTuneClassifier, another DistilledClassifier...), or a
        network whose outputs are the class logits in the order of the sorted labels (a
        :class:`~sktransfer.backbones.Backbone` carries its preprocessing; a bare module takes
        images as float in [0, 1] at their own size, or feature vectors). An unfitted
        estimator is fitted on ``(X, y)`` first: that is what ``clone`` (GridSearchCV) leaves
        of a fitted teacher, so wrap a fitted teacher in ``sklearn.frozen.FrozenEstimator`` to
        keep it. None trains the student on the labels alone (the 'student alone' baseline).
    student : str or torch.nn.Module, default="cnn-small"
        ``"mlp-<width>-..."``, ``"cnn-<width>-..."``, ``"cnn-small"`` and the other
        :data:`~sktransfer.distillation.students.NAMED_STUDENTS`, a torchvision model name (from
        scratch), a module with ``n_classes`` outputs, or ``"teacher"``: the teacher's
        architecture with fresh weights (born-again networks; needs a teacher that holds a network).
    temperature : float, default=4
        T, which softens the teacher's and the student's distributions.
    alpha : float in [0, 1], default=0.9
        Weight of the soft-target term; ``1 - alpha`` weighs the labels.
    hint_layers : tuple of (str, str) or None, default=None
        ``(teacher_layer, student_layer)``: a graph node of a torch teacher or of a
        FineTuneClassifier's network (:func:`sktransfer.list_layers`), and a student module
        name (``"features.1"`` of a small CNN, ``"hidden.0"`` of an MLP) that regresses it
        through a learned 1x1 convolution (maps) or linear layer (vectors). Teacher maps are
        average-pooled to the student map's size.
    hint_weight : float, default=1
        Weight of the hint term when training jointly (``hint_epochs=0``).
    hint_epochs : int, default=0
        0: the hint is a term of the loss throughout. k > 0: FitNets' first stage, k epochs
        on the hint alone, then ``max_epochs`` of the usual training without it (one skorch
        run of ``k + max_epochs`` epochs; callbacks and history span both stages).
    relation_weight : float, default=0
        Weight of the relational (RKD distance + angle) terms on each batch's embeddings:
        the input of the student's last linear layer against the teacher's penultimate
        features (the input of a Pipeline teacher's last step).
    image_size : int or None, default=None
        Student images are resized and centre-cropped to this size (see
        :func:`~sktransfer.distillation.students.build_student`).
    engine : {"auto", "torch", "onnxruntime"}, default="auto"
        Who runs the forward pass of a teacher that holds a network (a torch module, a
        Backbone, a FineTuneClassifier or a DistilledClassifier), see
        :mod:`sktransfer.frozen.engines`: "auto" is ONNX Runtime on the CPU (checked against
        torch on first use, with a warning and torch if they disagree or export fails) and torch on
        CUDA. Other scikit-learn teachers answer through their own ``predict_proba`` (a
        DeepFeatureExtractor in a Pipeline has its own ``engine``).
    max_epochs : int, default=20
    lr : float, default=1e-3
    batch_size : int, default=64
    optimizer : {"sgd", "adam", "adamw"} or optimizer class, default="adam"
    weight_decay, early_stopping, validation_fraction, n_iter_no_change, mixed_precision, \
device, n_jobs, callbacks, verbose, random_state
        As in :class:`~sktransfer.training.NeuralClassifierBase`. The validation split is
        stratified by the labels, and by the teacher's predictions for unlabelled samples;
        ``valid_acc`` compares with the same. There is no ``augmentation``: the teacher's
        answers are computed once, for fixed inputs; put augmented copies in ``X_unlabeled``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The teacher's classes (a scikit-learn teacher's ``classes_``, else the sorted labels).
    student_module_ : torch.nn.Module
        The trained student network (outputs logits).
    student_name_ : str
    teacher_queries_ : int
        Passes the teacher made over the transfer set (1 per fit; 0 without a teacher).
    n_labelled_, n_unlabelled_ : int
        Sizes of the two parts of the transfer set.
    history_, n_epochs_, best_epoch_, n_trainable_params_, n_params_, net_, device_, \
preprocessing_, input_kind_, n_features_in_
        As in :class:`~sktransfer.training.NeuralClassifierBase` (``n_params_`` includes
        the hint adapter, which is not needed for prediction). Ctrl-C during training stops
        it and keeps a usable student, as described there.

    Examples
    --------
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
        **{
            k: v
            for k, v in NeuralClassifierBase._parameter_constraints.items()
            if k != "augmentation"
        },
        "teacher": "no_validation",  # estimators, modules, Backbones: checked in fit
        "student": [str, nn.Module],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, 1, closed="both")],
        "hint_layers": [tuple, list, None],
        "hint_weight": [Interval(Real, 0, None, closed="left")],
        "hint_epochs": [Interval(Integral, 0, None, closed="left")],
        "relation_weight": [Interval(Real, 0, None, closed="left")],
        "image_size": [Interval(Integral, 1, None, closed="left"), None],
        "engine": [StrOptions(set(ENGINES))],
        "optimizer": [StrOptions({"sgd", "adam", "adamw"}), type],
    }

    #: Not a parameter: the teacher's answers are computed once for fixed inputs.
    augmentation = None

    @with_training_parameters(
        max_epochs=20,
        lr=1e-3,
        batch_size=64,
        optimizer="adam",
        n_iter_no_change=5,
        without=("augmentation",),
    )
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
        engine="auto",
        **training,
    ):
        store_parameters(self, locals())

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
        n_labelled = _num_samples(X)
        if y is not None:
            y = column_or_1d(y, warn=True)
            check_classification_targets(y)
            if len(y) != n_labelled:
                raise ValueError(f"X has {n_labelled} samples but y has {len(y)} labels.")
        transfer = X if X_unlabeled is None else concatenate_images(X, X_unlabeled)
        n_transfer = n_labelled + (0 if X_unlabeled is None else _num_samples(X_unlabeled))
        # The context's X is the whole transfer set; the labelled part and its labels travel
        # in its extras to the hooks (the teacher is fitted on them, classes come from them).
        context = self._prepare_fit(
            transfer, None, labelled_X=X, labelled_y=y, n_labelled=n_labelled, n_transfer=n_transfer
        )
        epochs = self.max_epochs
        if isinstance(self.net_.criterion_, FitNetsStages):
            # One run whose criterion switches stage: a second run would restart skorch's
            # callbacks (a learning-rate schedule cannot resume on a new optimizer).
            stage = EndHintStage(self.hint_epochs).initialize()
            self.net_.callbacks_.append(("fitnets_stage", stage))
            epochs += self.hint_epochs
        self._continue_training(context, max_epochs=epochs)
        self.n_labelled_ = n_labelled
        self.n_unlabelled_ = len(context.inputs) - n_labelled
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
            if self.teacher is None or (
                not is_torch_teacher(self.teacher) and teacher_module(self.teacher) is None
            ):
                raise ValueError(
                    f"Hints read a teacher layer, so the teacher must be a torch.nn.Module, a "
                    f"Backbone or a fitted FineTuneClassifier; got "
                    f"{type(self.teacher).__name__}. Pass hint_layers=None."
                )

    # ------------------------------------------------------------------ base hooks

    def _setup(self, context: FitContext) -> Preprocessing:
        state = context.extras
        teacher = None
        if self.teacher is not None:
            teacher = prepare_teacher(self.teacher, state["labelled_X"], state["labelled_y"])
        classes = self._resolve_classes(teacher, state["labelled_y"])
        student, preprocessing = self._make_student(teacher, len(classes), context.seed)
        state.update(teacher=teacher, classes=classes, student=student)
        self.student_name_ = student.name
        return preprocessing

    def _encode_labels(self, context: FitContext) -> np.ndarray:
        state = context.extras
        self.classes_ = state["classes"]
        if len(self.classes_) < 2:
            raise ValueError(
                f"DistilledClassifier needs at least 2 classes; got {self.classes_.tolist()}."
            )
        labels = np.full(state["n_transfer"], -1, dtype=np.int64)
        if state["labelled_y"] is not None:
            labels[: state["n_labelled"]] = np.searchsorted(self.classes_, state["labelled_y"])
        return labels

    def _build_module(self, context: FitContext) -> nn.Module:
        """Probe the student, query the teacher once, and wrap the student for training."""
        state, n_classes = context.extras, len(self.classes_)
        student, teacher = state["student"], state["teacher"]
        if self.input_kind_ == "vectors" and not student.takes_vectors:
            raise ValueError(
                f"The student {student.name!r} takes images, but X is a 2-D array of feature "
                "vectors. Use an MLP student ('mlp-64-64') or pass images."
            )
        hint_layer = self.hint_layers[1] if self.hint_layers else None
        student_hint = probe_student(student.module, context.example_batch(), hint_layer)
        targets = {}
        self.teacher_queries_ = 0
        if teacher is not None:
            targets = self._query_teacher(teacher, context, student_hint, n_classes)
        adapter = None
        if hint_layer is not None:
            adapter = HintAdapter(student_hint, targets["hint"].shape[1:])
        state.update(
            targets=targets,
            hint_width=int(np.prod(targets["hint"].shape[1:])) if adapter is not None else 0,
        )
        return DistillationNetwork(student.module, adapter, hint_layer, self.relation_weight > 0)

    def _query_teacher(self, teacher, context: FitContext, student_hint, n_classes) -> dict:
        outputs = teacher_outputs(
            teacher,
            context.X,
            context.inputs,
            hint_layer=self.hint_layers[0] if self.hint_layers else None,
            hint_size=student_hint[1:] if student_hint else None,
            embedding=self.relation_weight > 0,
            batch_size=self.batch_size,
            device=self.device_,
            verbose=self.verbose,  # 1 shows the teacher query's progress too
            engine=self.engine,
            n_threads=self.n_jobs,
        )
        self.teacher_queries_ = 1
        if outputs.logits.shape[1] != n_classes:
            raise ValueError(
                f"The teacher has {outputs.logits.shape[1]} outputs but there are {n_classes} "
                f"classes {self.classes_.tolist()}; a torch teacher must output one logit per "
                "class, in the order of the sorted labels."
            )
        targets = {"teacher": outputs.logits}
        if outputs.hint is not None:
            targets["hint"] = outputs.hint
        if outputs.embedding is not None:
            targets["embedding"] = outputs.embedding
        return targets

    def _criterion(self, context: FitContext) -> nn.Module:
        n_classes, hint_width = len(self.classes_), context.extras["hint_width"]
        if hint_width and self.hint_epochs > 0:
            hint_alone = DistillationLoss(self.temperature, alpha=0.0, hint_weight=1.0)
            return FitNetsStages(
                PackedDistillationLoss(hint_alone, n_classes, hint_width),
                PackedDistillationLoss(self._main_loss(with_hint=False), n_classes, 0),
            )
        return PackedDistillationLoss(self._main_loss(bool(hint_width)), n_classes, hint_width)

    def _main_loss(self, with_hint: bool) -> DistillationLoss:
        alpha = 0.0 if self.teacher is None else self.alpha
        return DistillationLoss(
            self.temperature,
            alpha,
            self.hint_weight if with_hint else 0.0,
            self.relation_weight,
        )

    def _training_targets(self, context: FitContext):
        labels = context.y_encoded
        targets = {"label": labels, **context.extras["targets"]}
        if "teacher" not in targets:
            targets["teacher"] = np.zeros((len(labels), len(self.classes_)), np.float32)
        # "y" drives the base's stratified split and valid_acc: the label where there is
        # one, the teacher's prediction elsewhere.
        guess = np.argmax(targets["teacher"], axis=1)
        targets["y"] = np.where(labels >= 0, labels, guess).astype(np.int64)
        return targets

    # ------------------------------------------------------------------ helpers

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

    def _make_student(self, teacher, n_classes, seed) -> tuple[Student, Preprocessing]:
        if not (isinstance(self.student, str) and self.student == "teacher"):
            student = build_student(
                self.student, n_classes, image_size=self.image_size, random_state=seed
            )
            return student, Preprocessing(student.transform, student.takes_vectors)
        module = teacher_module(teacher) if teacher is not None else None
        if module is None:
            raise ValueError(
                "student='teacher' (born-again) copies the teacher's network, but the teacher "
                f"{type(self.teacher).__name__} has none. Pass a torch teacher, a "
                "DistilledClassifier or a FineTuneClassifier."
            )
        module = reset_parameters(copy.deepcopy(module).cpu().train(), seed)
        preprocessing = getattr(unfrozen(teacher), "preprocessing_", None)
        if preprocessing is None:
            transform = teacher.transform if isinstance(teacher, Backbone) else None
            transform = transform or StudentTransform(self.image_size, mean=None)
            preprocessing = Preprocessing(transform, True)
        name = getattr(unfrozen(teacher), "student_name_", type(module).__name__)
        return Student(module, preprocessing.transform, name, True), preprocessing

    @property
    def student_module_(self) -> nn.Module:
        """The trained student network (raises AttributeError before fit)."""
        return self.net_.module_.student

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


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
