"""Agreement of two cheap models, and a small scorer of answers that carries across tasks.

Two cheap models that give the same answer are right far more often than either alone: on the
cascade set, gpt-4o-mini is right on 97 % of the GSM8K prompts where llama3.1-8b gives the
same final number and on 56 % where it does not (MedMCQA: 86 % vs 47 %). Unlike a model's own
confidence, "two independent models agree" means the same thing on every task, so it is a
deferral signal that travels. (The server's live ``agreement`` signal is another thing: the
agreement of ``k`` resampled answers of *one* model; hence this one's name.)

A cascade step may only read answers it has paid for, so agreement enters the cascade as a
**pair step**: :func:`add_pairs` adds a column ``"a+b"`` per pair of models, which stands for
"call ``a`` and ``b`` in parallel and keep ``b``'s answer". Its cost and tokens are the sums
of the two calls, its latency the larger of the two, its quality and response ``b``'s. Every
cascade tuner, replay and metric then works unchanged and pays for both calls;
:func:`cheap_pairs` picks the pairs among the cheapest models of the training data.

:class:`AgreementScorer` (``"cross-agreement"``) scores every column of a dataset with one small
logistic regression per column over task-agnostic features only (no bag of words, see
:mod:`routecast.signals.answers`):

* ``logit(confidence)`` of the kept answer, when the data records a confidence;
* the answer-text features of :func:`~routecast.signals.answers.answer_features`;
* for a pair column: whether the two normalised answers are equal, their token F1, and the
  companion's ``logit(confidence)``.

On a dataset without pair columns it is a transferable scorer of single answers. With
``per_task`` (and task labels in the data) each (task, column) is then Platt-scaled on the
training split, shrunk towards the global fit (:mod:`routecast.signals.calibration`); a task
it never saw keeps the global fit.
Scores are calibrated probabilities that the kept answer is correct, so they are monotone in
``P(correct)`` and can be bounded like any probability (the conservative threshold choice of
the bench reads them so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations
from typing import Any

import numpy as np

from routecast.data.dataset import Dataset
from routecast.errors import ConfigError
from routecast.signals.answers import answer_features, answer_similarity
from routecast.signals.base import FloatArray, Signal, logit
from routecast.signals.calibration import TaskTable, apply_tasks, fit_tasks

#: Separates the two models of a pair column's name: ``"companion+answerer"``.
PAIR_SEP = "+"


def pair_name(companion: str, answerer: str) -> str:
    return f"{companion}{PAIR_SEP}{answerer}"


def split_pair(column: str, models: Sequence[str]) -> tuple[str, str] | None:
    """``(companion, answerer)`` if ``column`` names a pair of two of ``models``, else None."""
    for k in range(1, len(column)):
        if column[k - 1] == PAIR_SEP or column[k] != PAIR_SEP:
            continue
        a, b = column[:k], column[k + 1:]
        if a in models and b in models:
            return a, b
    return None


def cheap_pairs(train: Dataset, n_cheap: int = 3) -> list[tuple[str, str]]:
    """Every pair among the ``n_cheap`` cheapest models of ``train`` (by mean cost, the
    better one first on ties), as ``(companion, answerer)``: the answer kept is the one of
    the model with the higher mean training quality."""
    if n_cheap < 2:
        raise ConfigError(f"a pair needs two models: n_cheap must be >= 2, got {n_cheap}")
    singles = [m for m in train.models if split_pair(m, train.models) is None]
    q = dict(zip(train.models, train.mean_quality(), strict=True))
    c = dict(zip(train.models, train.mean_cost_usd(), strict=True))
    cheap = sorted(singles, key=lambda m: (c[m], -q[m]))[:n_cheap]
    return [(a, b) if q[b] >= q[a] else (b, a) for a, b in combinations(cheap, 2)]


def add_pairs(dataset: Dataset, pairs: Sequence[tuple[str, str]]) -> Dataset:
    """``dataset`` with one more column per ``(companion, answerer)`` pair (see the module
    docstring); the original columns keep their order and come first."""
    if dataset.responses is None:
        raise ConfigError(f"pair columns need recorded answers, and {dataset.name!r} has none")
    if not pairs:
        return dataset
    idx = [(dataset.model_index(a), dataset.model_index(b)) for a, b in pairs]
    names = [pair_name(a, b) for a, b in pairs]
    b_cols = np.array([j for _, j in idx])

    def summed(arr: FloatArray | None) -> FloatArray | None:
        if arr is None:
            return None
        extra = np.column_stack([arr[:, i] + arr[:, j] for i, j in idx])
        return np.hstack([arr, extra])

    def kept(arr: Any) -> Any:
        return None if arr is None else np.hstack([arr, arr[:, b_cols]])

    latency = dataset.latency_s
    if latency is not None:
        latency = np.hstack([latency, np.column_stack(
            [np.maximum(latency[:, i], latency[:, j]) for i, j in idx])])
    cost = summed(dataset.cost_usd)
    assert cost is not None
    return replace(dataset, models=(*dataset.models, *names), quality=kept(dataset.quality),
                   cost_usd=cost, latency_s=latency, tokens_in=summed(dataset.tokens_in),
                   tokens_out=summed(dataset.tokens_out), confidence=kept(dataset.confidence),
                   responses=kept(dataset.responses))


class AgreementScorer(Signal):
    """Per-column logistic regression on task-agnostic answer features and, for pair
    columns, the agreement of the two answers (see module docstring).

    ``C`` is the inverse L2 strength; ``per_task`` adds a per-task Platt scaling (with
    ``task_strength`` prompts' worth of pull towards the global fit). It is off by default:
    on the cascade set's test split (every task seen in training) it lowered the savings at
    the best model's quality from 66 % to 33 % (at 95 %: 89 % both), and when a cascade is
    tuned on tasks it knows and then meets one it does not, the tuning scores are per-task
    calibrated but the new task's are not, so the thresholds no longer mean the same.
    """

    name = "cross-agreement"
    requires = ("responses",)

    def __init__(self, C: float = 1.0, per_task: bool = False,  # noqa: N803
                 task_strength: float = 50.0) -> None:
        self.C = C
        self.per_task = per_task
        self.task_strength = task_strength

    def _fit(self, dataset: Dataset) -> None:
        from sklearn.linear_model import LogisticRegression

        self.uses_confidence_: bool = dataset.confidence is not None
        self.estimators_: list[Any] = []
        self.task_calibration_: dict[int, TaskTable] = {}
        for j in range(dataset.n_models):
            q = dataset.quality[:, j]
            if np.all(q == q[0]):
                self.estimators_.append(float(q[0]))
                continue
            x = self._column(dataset, j)
            clf = LogisticRegression(C=self.C, max_iter=1000)
            n = len(q)  # soft labels: once as a success with weight q, once as a failure
            clf.fit(np.vstack([x, x]), np.r_[np.ones(n), np.zeros(n)],
                    sample_weight=np.r_[q, 1.0 - q])
            self.estimators_.append(clf)
            if self.per_task and dataset.task is not None:
                self.task_calibration_[j] = fit_tasks(clf.decision_function(x), q,
                                                      dataset.task, self.task_strength)

    def _column(self, dataset: Dataset, j: int) -> FloatArray:
        """Features of column ``j``'s answers (and its companion's, for a pair column)."""
        assert dataset.responses is not None
        pair = split_pair(dataset.models[j], dataset.models)
        feats = [answer_features(dataset.prompts, list(dataset.responses[:, j]))]
        if self.uses_confidence_:
            if dataset.confidence is None:
                raise ConfigError(f"the {self.name!r} signal was fitted on data with a "
                                  "confidence; score data that records one too")
            feats.append(logit(dataset.confidence[:, j])[:, None] / 4.0)
        if pair is not None:
            a = dataset.model_index(pair[0])
            sims = np.array([answer_similarity(x, y) for x, y in
                             zip(dataset.responses[:, a], dataset.responses[:, j],
                                 strict=True)]).reshape(-1, 2)
            feats.append(sims)
            if self.uses_confidence_:
                assert dataset.confidence is not None
                feats.append(logit(dataset.confidence[:, a])[:, None] / 4.0)
        return np.hstack(feats)

    def _score(self, dataset: Dataset) -> FloatArray:
        out = np.empty((dataset.n_prompts, dataset.n_models))
        for j, est in enumerate(self.estimators_):
            if isinstance(est, float):
                out[:, j] = est
                continue
            z = apply_tasks(est.decision_function(self._column(dataset, j)), dataset.task,
                            self.task_calibration_.get(j, {}))
            out[:, j] = 1.0 / (1.0 + np.exp(-z))
        return out

