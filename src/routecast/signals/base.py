"""The signal interface (scikit-learn style), shared by every deferral signal."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Self

import numpy as np
import numpy.typing as npt

from routecast.errors import ConfigError, DataError
from routecast.estimator import Estimator

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset

FloatArray = npt.NDArray[np.float64]

#: Logit inputs are clipped this far inside (0, 1): recorded confidences of exactly 0 or 1
#: (``-inf`` log-probs, saturated softmax) would otherwise give infinite features.
EPS = 1e-6


def logit(p: FloatArray) -> FloatArray:
    """``log(p / (1 - p))`` with ``p`` clipped to ``[EPS, 1 - EPS]``."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.asarray(np.log(p) - np.log1p(-p), dtype=np.float64)


class Signal(Estimator, ABC):
    """A fitted scorer of how acceptable each model's recorded answer is on each prompt.

    Contract (the same as a router's, so one test runs over every registered signal):

    * ``__init__`` only stores its arguments; learned attributes end in ``_``;
    * ``fit(dataset)`` learns from that dataset (the caller passes the train split) and returns
      ``self``; it sets ``models_``, the column order of every score;
    * ``score(dataset)`` gives one score in [0, 1] per prompt and model of ``dataset``, shape
      ``(n_prompts, len(models_))``; higher means "more likely acceptable". Signals meant for
      cascade routing return calibrated probabilities that the answer is correct.
    """

    #: Registry name; also the name shown in bench tables.
    name: ClassVar[str] = ""
    #: Optional :class:`Dataset` arrays the signal reads (e.g. ``"confidence"``).
    requires: ClassVar[tuple[str, ...]] = ()
    #: False for ex-ante signals, which score a model on a prompt without its answer.
    reads_answers: ClassVar[bool] = True
    #: False for signals recorded outcomes cannot hold (sampled answers, verification
    #: votes): they are computed live only, and :meth:`fit` says so.
    offline: ClassVar[bool] = True
    #: The live judge, as ``"module:attribute"`` of a callable taking a
    #: :class:`~routecast.backends.judges.JudgeOptions` and returning a
    #: :class:`~routecast.backends.judges.Judge`; empty for signals a live cascade cannot
    #: compute. A string, so that importing a signal imports nothing of the server.
    judge: ClassVar[str] = ""

    @classmethod
    def available(cls, dataset: Dataset) -> bool:
        """Whether ``dataset`` records everything this signal reads."""
        return cls.offline and all(getattr(dataset, field) is not None for field in cls.requires)

    def fit(self, dataset: Dataset) -> Self:
        if dataset.n_prompts == 0:
            raise DataError("cannot fit a signal on an empty dataset", where=dataset.name)
        if not self.offline:
            raise ConfigError(f"the {self.name!r} signal is computed live only (recorded "
                              "outcomes do not hold what it reads); use it in a live cascade, "
                              "or tune offline with a signal the data records")
        self._check_available(dataset)
        self.models_: tuple[str, ...] = tuple(dataset.models)
        self._fit(dataset)
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset) -> None:
        """Learn from ``dataset``; ``models_`` is already set."""

    def score(self, dataset: Dataset) -> FloatArray:
        """Score of every model's recorded answer on every prompt, shape ``(n, m)``."""
        self._check_fitted()
        self._check_available(dataset)
        if tuple(dataset.models) != self.models_:
            raise ConfigError(
                f"the {self.name!r} signal was fitted on models {list(self.models_)} but the "
                f"data has {list(dataset.models)}; score data with the same models")
        if dataset.n_prompts == 0:
            return np.empty((0, len(self.models_)))
        return np.clip(np.asarray(self._score(dataset), dtype=np.float64), 0.0, 1.0)

    def cross_fit(self, dataset: Dataset, folds: int = 3, seed: int = 0) -> FloatArray:
        """Out-of-fold scores of ``dataset``: each of ``folds`` seeded parts scored by a fresh
        copy of this signal fitted on the other parts (``self`` is left as it is).

        These are honest scores of the data a signal is trained on, so a cascade can be tuned
        on train too (see :mod:`routecast.bench.cascades`). With fewer than two prompts per
        fold the scores are in-sample.
        """
        out = np.empty((dataset.n_prompts, dataset.n_models))
        splits = fold_indices(dataset.n_prompts, folds, seed)
        if not splits:
            return type(self)(**self.get_params()).fit(dataset).score(dataset)
        for part, rest in splits:
            twin = type(self)(**self.get_params()).fit(dataset.take(rest))
            out[part] = twin.score(dataset.take(part))
        return out

    @abstractmethod
    def _score(self, dataset: Dataset) -> FloatArray:
        """Scores for a non-empty ``dataset`` with the fitted models, shape ``(n, m)``."""

    def _check_available(self, dataset: Dataset) -> None:
        missing = [f for f in self.requires if getattr(dataset, f) is None]
        if missing:
            raise DataError(
                f"does not record {', '.join(missing)}, which the {self.name!r} signal reads",
                where=f"dataset {dataset.name!r}",
                fix=f"use a signal the data supports, or data with {', '.join(missing)}")


def fold_indices(n: int, folds: int, seed: int) -> list[tuple[npt.NDArray[np.int64],
                                                         npt.NDArray[np.int64]]]:
    """Seeded ``(held-out, rest)`` index pairs; empty when there are too few prompts."""
    if folds < 2:
        raise ConfigError(f"cross-fitting needs at least 2 folds, got {folds}")
    if n < 2 * folds:
        return []
    order = np.random.default_rng(seed).permutation(n)
    return [(np.sort(part), np.setdiff1d(order, part))
            for part in np.array_split(order, folds)]
