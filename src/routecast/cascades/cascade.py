"""The cascade: ordered models, a deferral signal, one threshold per step but the last.

A prompt goes to the first model; if the signal's score of its answer reaches that step's
threshold the answer is kept, otherwise the next model is asked, and so on; the last step
always answers. Every visited step is paid for, in sequence:

* ``cost_usd`` = the sum of the visited steps' costs;
* ``latency_s`` = the sum of the visited steps' latencies (a step starts when the previous
  answer has been scored), likewise ``tokens_in`` / ``tokens_out``;
* ``quality`` = the quality of the answer that was kept.

The same object serves two callers. The replay benchmark runs it over recorded outcomes
(:meth:`Cascade.replay`); the live server walks the steps itself and asks
:meth:`Cascade.accepts` after each response, with a score from a signal (see
:mod:`routecast.signals.live`). Thresholds are tuned offline by :mod:`routecast.cascades.tuning`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from routecast.errors import ConfigError

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Cascade:
    """``models`` in the order they are asked, ``thresholds[k]`` for step ``k < last``.

    A step accepts when ``score >= threshold``; a NaN score (the signal failed) never accepts,
    so the cascade escalates on doubt. ``signal`` names the signal the thresholds belong to.
    """

    models: tuple[str, ...]
    thresholds: tuple[float, ...] = ()
    signal: str = "confidence"

    def __post_init__(self) -> None:
        if isinstance(self.models, str):
            raise ConfigError("Cascade models must be a sequence of model names, not one str")
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if not self.models:
            raise ConfigError("a cascade needs at least one model")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"a cascade asks each model once; got {list(self.models)}")
        if len(self.thresholds) != len(self.models) - 1:
            raise ConfigError(
                f"a cascade of {len(self.models)} models needs {len(self.models) - 1} "
                f"thresholds (one per step but the last, which always answers); got "
                f"{len(self.thresholds)}")
        if any(math.isnan(t) for t in self.thresholds):
            raise ConfigError("cascade thresholds must be numbers, not NaN")

    @property
    def n_steps(self) -> int:
        return len(self.models)

    # -- the decision, shared by the replay and the live server ----------------------------

    def accepts(self, step: int, score: float) -> bool:
        """Whether the answer of step ``step`` (0-based) with signal ``score`` is kept."""
        if not 0 <= step < self.n_steps:
            raise ConfigError(f"step {step} is outside this {self.n_steps}-step cascade")
        if step == self.n_steps - 1:
            return True
        return bool(score >= self.thresholds[step])  # NaN >= t is False: escalate

    def stop_steps(self, scores: FloatArray) -> IntArray:
        """The step that answers each prompt, given ``scores`` of shape ``(n, n_steps)``
        (column ``k`` = the signal's score of step ``k``'s answer)."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[1] != self.n_steps:
            raise ConfigError(f"scores must have shape (n, {self.n_steps}), got {scores.shape}")
        accept = np.ones(scores.shape, dtype=bool)
        if self.n_steps > 1:
            accept[:, :-1] = scores[:, :-1] >= np.asarray(self.thresholds)[None, :]
        return np.asarray(accept.argmax(axis=1), dtype=np.int64)

    # -- offline replay --------------------------------------------------------------------

    def replay(self, data: Dataset, scores: FloatArray) -> Replay:
        """Run the cascade over recorded outcomes.

        ``scores`` holds the signal's score of every model's answer on every prompt of
        ``data``, shape ``(n_prompts, n_models)`` in ``data.models`` order (what
        :meth:`routecast.signals.Signal.score` returns).
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (data.n_prompts, data.n_models):
            raise ConfigError(f"scores must have shape {(data.n_prompts, data.n_models)} (one "
                              f"per prompt and model of the data), got {scores.shape}")
        cols = np.array([data.model_index(m) for m in self.models], dtype=np.int64)
        stop = self.stop_steps(scores[:, cols])
        visited = np.zeros((data.n_prompts, data.n_models), dtype=bool)
        for k, col in enumerate(cols):
            visited[:, col] = stop >= k
        return Replay.from_visits(data, visited, cols[stop])

    def describe(self) -> str:
        """``a (>= 0.8) -> b (>= 0.6) -> c``: the steps with their thresholds."""
        steps = [f"{m} (>= {t:.3g})" for m, t in zip(self.models, self.thresholds, strict=False)]
        return " -> ".join([*steps, self.models[-1]])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form; :meth:`from_dict` reads it back."""
        return {"models": list(self.models), "thresholds": list(self.thresholds),
                "signal": self.signal}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cascade:
        try:
            return cls(tuple(data["models"]), tuple(data.get("thresholds", ())),
                       str(data.get("signal", "confidence")))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"not a cascade description ({e!r}); expected "
                              '{"models": [...], "thresholds": [...], "signal": "..."}') from None


@dataclass(frozen=True, eq=False)
class Replay:
    """What a multi-step policy did on each prompt of a dataset, from recorded outcomes.

    ``visited[i, j]`` says model ``j`` was called on prompt ``i``; ``answered[i]`` is the
    column whose answer was returned. Per-prompt totals sum over the visited models (calls run
    in sequence); the optional ones are ``None`` when the data does not record them.
    """

    visited: BoolArray
    answered: IntArray
    quality: FloatArray
    cost_usd: FloatArray
    latency_s: FloatArray | None = None
    tokens_in: FloatArray | None = None
    tokens_out: FloatArray | None = None

    @classmethod
    def from_visits(cls, data: Dataset, visited: BoolArray, answered: IntArray) -> Replay:
        visited = np.asarray(visited, dtype=bool)
        answered = np.asarray(answered, dtype=np.int64)
        if visited.shape != (data.n_prompts, data.n_models) or answered.shape != (
                data.n_prompts,):
            raise ConfigError("visited must be (n_prompts, n_models) and answered (n_prompts,)")
        rows = np.arange(data.n_prompts)
        if not visited[rows, answered].all():
            raise ConfigError("every prompt must be answered by a model that was visited")

        def total(arr: FloatArray | None) -> FloatArray | None:
            return None if arr is None else np.asarray((arr * visited).sum(axis=1))

        cost = total(data.cost_usd)
        assert cost is not None
        return cls(visited=visited, answered=answered,
                   quality=np.asarray(data.quality[rows, answered], dtype=np.float64),
                   cost_usd=cost, latency_s=total(data.latency_s),
                   tokens_in=total(data.tokens_in), tokens_out=total(data.tokens_out))

    @property
    def n_prompts(self) -> int:
        return len(self.answered)

    @property
    def mean_quality(self) -> float:
        return float(self.quality.mean())

    @property
    def mean_cost_usd(self) -> float:
        return float(self.cost_usd.mean())

    @property
    def calls(self) -> IntArray:
        """Number of models called per prompt."""
        return np.asarray(self.visited.sum(axis=1), dtype=np.int64)

    @property
    def escalation_rate(self) -> float:
        """Share of prompts that called more than one model."""
        return float((self.calls > 1).mean())

    def latency_quantile(self, q: float) -> float | None:
        """End-to-end latency quantile (e.g. ``0.99``) in seconds, or ``None`` if unrecorded."""
        return None if self.latency_s is None else float(np.quantile(self.latency_s, q))

    def answer_shares(self, models: Sequence[str]) -> dict[str, float]:
        """Share of prompts answered by each model (``models`` = the data's column names)."""
        counts = np.bincount(self.answered, minlength=len(models)) / max(1, self.n_prompts)
        return {m: float(counts[j]) for j, m in enumerate(models) if counts[j] > 0}

    def summary(self) -> dict[str, Any]:
        """The figures the benchmark reports for one operating point (JSON-friendly)."""
        return {
            "cost_usd": self.mean_cost_usd, "quality": self.mean_quality,
            "escalation_rate": self.escalation_rate, "mean_calls": float(self.calls.mean()),
            "latency_p50_s": self.latency_quantile(0.50),
            "latency_p95_s": self.latency_quantile(0.95),
            "latency_p99_s": self.latency_quantile(0.99),
        }
