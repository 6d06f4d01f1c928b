"""Generations: a network retrained, several times, on its own soft labels.

Two papers train a chain of models of one architecture, each on the previous one's predicted
class probabilities (its *soft labels*) instead of, or mixed with, the ground truth:

- **Label refinery** (Bagherinezhad et al., 2018): the last generation is the model; each
  refinement fixes labels that are incomplete (other objects in the image), inconsistent
  (a crop without the object) or blind to visual similarity.
- **Born-again networks** (Furlanello et al., 2018): the generations BAN-1, BAN-2, ... each
  match or beat the teacher, and their average, the *born-again ensemble* (BANE), does better
  still. The ensemble averages the students; the teacher is not a member.

Both losses are the cross-entropy to the previous generation's softmax at temperature 1 (the
KL divergence up to a constant), so the two estimators here train the same chain;
:class:`LabelRefinery` predicts with the last generation and :class:`BornAgainEnsemble` with
the mean of the generations. Each generation is a :class:`DistilledClassifier` (the training
loop, the one query of the teacher, seeding, pickling) whose teacher is the generation before.

:func:`~sktransfer.distillation.born_again` is the function form: any network teacher (a torch
module, a FineTuneClassifier...) distilled into its own architecture, with the generations
returned as a list and no ensemble. The estimators here start from a DistilledClassifier, which
says both the architecture and how every generation trains.
"""

from __future__ import annotations

import time
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._compat import Interval, _fit_context
from ..training import store_parameters
from .classifier import DistilledClassifier
from .teachers import unfrozen

__all__ = ["BornAgainEnsemble", "LabelRefinery"]


class _Generations(ClassifierMixin, BaseEstimator):
    """The chain both estimators train: generation 0 (the teacher) from ``estimator``, then
    ``generations`` copies of it, each taught by the one before. Subclasses predict."""

    _parameter_constraints: dict = {
        "estimator": "no_validation",  # a DistilledClassifier (or a frozen one): see _template
        "generations": [Interval(Integral, 1, None, closed="left")],
        "label_weight": [Interval(Real, 0, 1, closed="both")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
    }

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, *, X_unlabeled=None):
        """Train (or take) the teacher, then each generation on the previous one's soft labels.

        Parameters
        ----------
        X : images or array of shape (n_samples, n_features)
            What ``estimator`` takes.
        y : array-like of shape (n_samples,) or None
            Labels of ``X``: generation 0 learns from them (unless it is frozen or has its own
            teacher), later ones with weight ``label_weight``. None: only soft labels teach.
        X_unlabeled : images or array, optional
            More samples that generations 1, 2, ... learn from the previous generation's
            answers (generation 0 too when ``estimator`` has a teacher of its own).

        Returns
        -------
        self
        """
        template = self._template()
        seeds = self._generation_seeds()
        self.history_ = []
        teacher = self._fit_teacher(template, seeds[0], X, y, X_unlabeled)
        self.teacher_ = teacher
        self.generations_ = []
        for k in range(1, self.generations + 1):
            previous = self.generations_[-1] if self.generations_ else teacher
            generation = clone(template).set_params(
                teacher=FrozenEstimator(previous),
                alpha=1.0 - self.label_weight,
                temperature=self.temperature,
                hint_layers=None,
                relation_weight=0.0,
                random_state=seeds[k],
            )
            started = time.perf_counter()
            generation.fit(X, y, X_unlabeled=X_unlabeled)
            self._record(k, generation, time.perf_counter() - started)
            self.generations_.append(generation)
        self.classes_ = teacher.classes_
        if hasattr(teacher, "n_features_in_"):
            self.n_features_in_ = teacher.n_features_in_
        return self

    def _template(self) -> DistilledClassifier:
        """The DistilledClassifier every generation is a copy of."""
        template = unfrozen(self.estimator)
        if not isinstance(template, DistilledClassifier):
            raise TypeError(
                f"{type(self).__name__} needs a DistilledClassifier as estimator (it says the "
                f"architecture and how each generation trains), or a fitted one wrapped in "
                f"sklearn.frozen.FrozenEstimator to use as the teacher; got "
                f"{type(template).__name__}. For another network teacher, pass "
                "DistilledClassifier(FrozenEstimator(teacher), student='teacher'), or use "
                "sktransfer.born_again."
            )
        return template

    def _generation_seeds(self) -> list:
        """One seed per generation, teacher first (None throughout when random_state is None,
        so that each generation draws its own initialisation)."""
        if self.random_state is None:
            return [None] * (self.generations + 1)
        rng = check_random_state(self.random_state)
        return [int(s) for s in rng.randint(np.iinfo(np.int32).max, size=self.generations + 1)]

    def _fit_teacher(self, template, seed, X, y, X_unlabeled):
        """Generation 0: a frozen estimator as it is, else a copy fitted on the labels."""
        if isinstance(self.estimator, FrozenEstimator):
            check_is_fitted(template)
            self._record(0, template, None)
            return template
        teacher = clone(template).set_params(random_state=seed)
        started = time.perf_counter()
        own_unlabeled = X_unlabeled if teacher.teacher is not None else None
        teacher.fit(X, y, X_unlabeled=own_unlabeled)
        self._record(0, teacher, time.perf_counter() - started)
        return teacher

    def _record(self, generation: int, model: DistilledClassifier, seconds):
        """One row of ``history_``: the generation's last epoch and how long it took."""
        last = model.history_[-1]
        self.history_.append(
            {
                "generation": generation,
                "name": "teacher" if generation == 0 else f"generation {generation}",
                "n_epochs": model.n_epochs_,
                "train_loss": last.get("train_loss"),
                "valid_loss": last.get("valid_loss"),
                "valid_acc": last.get("valid_acc"),
                "fit_seconds": seconds,
            }
        )

    def _members(self) -> list:
        raise NotImplementedError

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : images or array of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        return np.mean([model.predict_proba(X) for model in self._members()], axis=0)

    def predict(self, X):
        """The most probable class of each sample (the argmax of :meth:`predict_proba`).

        Parameters
        ----------
        X : images or 2-D array
            Samples in the form the generations were fitted on.

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


_PARAMETERS = """
    Parameters
    ----------
    estimator : DistilledClassifier
        The network and how it trains (``student``, ``max_epochs``, ``lr``, ``device``...).
        Unfitted: a copy is fitted on ``(X, y)`` as generation 0, the teacher (with the
        estimator's own ``teacher``, if any, so generation 0 may itself be distilled). A fitted
        one wrapped in ``sklearn.frozen.FrozenEstimator``: it is the teacher as it is, kept
        through ``clone`` (GridSearchCV). Every later generation is a copy of it with fresh
        weights whose teacher is the generation before (no hints or relation losses: only
        soft labels, as in both papers).
    generations : int, default=3
        Generations trained after the teacher.
    label_weight : float in [0, 1], default=0
        Weight of the ground-truth cross-entropy in each generation's loss; the previous
        generation's soft labels weigh ``1 - label_weight`` (the DistilledClassifier's
        ``alpha``). 0 is both papers' recipe (BAN, label refinery); Furlanello et al.'s
        BAN+L mixes the two.
    temperature : float, default=1
        Softmax temperature of the soft labels (1 in both papers; the loss keeps
        DistilledClassifier's ``T**2`` factor).
    random_state : int, RandomState instance or None, default=None
        Seeds the teacher's and every generation's training: generation k gets the k-th
        seed drawn from it. None: each generation keeps its own randomness.
"""

_ATTRIBUTES = """
    Attributes
    ----------
    teacher_ : DistilledClassifier
        Generation 0 (the estimator fitted on the labels, or the frozen one itself).
    generations_ : list of DistilledClassifier
        The generations after the teacher, oldest first; ``generations_[k - 1]`` learnt from
        ``generations_[k - 2]`` (``teacher_`` for the first). Each holds its own skorch
        ``history_``.
    history_ : list of dict
        One row per model, teacher first (``pandas.DataFrame(model.history_)`` makes a table):
        ``generation`` (0 for the teacher), ``name``, ``n_epochs``, the last epoch's
        ``train_loss``, ``valid_loss`` and ``valid_acc`` (None without a validation split) and
        ``fit_seconds`` (None for a frozen teacher, trained elsewhere).
    classes_ : ndarray of shape (n_classes,)
        The teacher's classes.
    n_features_in_ : int
        Features seen in fit, for 2-D vector input only.
"""


class LabelRefinery(_Generations):
    __doc__ = f"""Label refinery: retrain a network on its own refined soft labels.

    Generation 0 learns from the labels; generation k learns from generation k - 1's predicted
    class probabilities on the training set (mixed with the labels by ``label_weight``), in
    the same architecture with fresh weights (Bagherinezhad et al., 2018, "Label Refinery:
    Improving ImageNet Classification through Label Progression"). The fitted estimator
    predicts with the last generation. The loss is the KL divergence from the previous
    generation's softmax, as in the paper; its labels are computed once per generation, for
    fixed inputs (the paper relabels every random crop: put augmented copies in
    ``X_unlabeled`` for that). :class:`BornAgainEnsemble` trains the same chain and averages
    the generations.
{_PARAMETERS}
{_ATTRIBUTES}
    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sktransfer import DistilledClassifier, LabelRefinery
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> network = DistilledClassifier(None, student="mlp-32", max_epochs=20,
    ...                               lr=1e-2, random_state=0)
    >>> refinery = LabelRefinery(network, generations=2, random_state=0)
    >>> refinery.fit(X[:1000], y[:1000]).score(X[1000:], y[1000:]) > 0.9
    True
    >>> [row["name"] for row in refinery.history_]
    ['teacher', 'generation 1', 'generation 2']
    """

    _parameter_constraints: dict = {**_Generations._parameter_constraints}

    def __init__(
        self, estimator, *, generations=3, label_weight=0.0, temperature=1.0, random_state=None
    ):
        store_parameters(self, locals())

    def _members(self) -> list:
        return self.generations_[-1:]


class BornAgainEnsemble(_Generations):
    __doc__ = f"""Born-again networks and their ensemble: the mean of the generations.

    Generation 0, the teacher, learns from the labels; BAN-1 learns from the teacher's soft
    labels in the same architecture with fresh weights, BAN-2 from BAN-1's, and so on
    (Furlanello et al., 2018, "Born-Again Neural Networks"). ``predict_proba`` is the mean of
    the generations' probabilities (the born-again ensemble, BANE): the students only, as in
    the paper, unless ``include_teacher=True``. Each generation stays available in
    ``generations_`` (the paper's table: teacher, BAN-1, BAN-2, BAN-3, ensemble). With
    ``label_weight > 0`` the generations also learn from the labels (BAN+L).
{_PARAMETERS}    include_teacher : bool, default=False
        Whether the teacher is a member of the ensemble (the paper includes it only where a
        generation is missing).

{_ATTRIBUTES}
    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sktransfer import BornAgainEnsemble, DistilledClassifier
    >>> digits, labels = load_digits(return_X_y=True)
    >>> teacher = DistilledClassifier(student="mlp-32", max_epochs=20, lr=1e-2, random_state=0)
    >>> ban = BornAgainEnsemble(teacher, generations=2, random_state=0)
    >>> ban = ban.fit(digits[:1000] / 16, labels[:1000])
    >>> models = [ban.teacher_, *ban.generations_, ban]  # teacher, BAN-1, BAN-2, ensemble
    >>> [round(m.score(digits[1000:] / 16, labels[1000:]), 2) > 0.9 for m in models]
    [True, True, True, True]
    """

    _parameter_constraints: dict = {
        **_Generations._parameter_constraints,
        "include_teacher": ["boolean"],
    }

    def __init__(
        self,
        estimator,
        *,
        generations=3,
        label_weight=0.0,
        temperature=1.0,
        include_teacher=False,
        random_state=None,
    ):
        store_parameters(self, locals())

    def _members(self) -> list:
        return ([self.teacher_] if self.include_teacher else []) + self.generations_
