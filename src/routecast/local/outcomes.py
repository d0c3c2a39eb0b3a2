"""The two local models' shipped outcomes, costed as they are served, and what is tuned on them.

``routecast/local/data/`` holds two outcome files the project collected itself: the 242 built-in
tasks (seed 0) asked of SmolLM2-135M and Gemma 3 270M on the reference machine, once with
token log-probs and once without (25 and 4 minutes on the shared 2-core reference machine).
They are regenerated with::

    routecast collect out/outcomes-logprobs.jsonl.gz --name local-logprobs
    routecast collect out/outcomes-plain.jsonl.gz --name local-plain --no-logprobs
    cp out/outcomes-logprobs.jsonl.gz out/outcomes-plain.jsonl.gz src/routecast/local/data/

(written under ``out/`` first, so the resumable journals stay out of the package).

Two runs, because llama-cpp-python makes log-probs dear (it sorts the whole vocabulary in
Python for every generated token): 3x the CPU for SmolLM2, 14x for Gemma
(``benchmarks/local_costs.py``). A deployment asks for log-probs only where a signal needs
them -- the first step of a ``confidence`` cascade -- so :func:`served` builds the table a
deployment would see: every model as asked *without* log-probs, except that step, taken from
the run *with* them (its confidence and its dearer cost). The cascade ``routecast serve`` runs
is judged by a learned scorer of the question and answer text instead, and needs none.

Cost of an answer: its energy, ``WATTS_PER_THREAD`` x the CPU seconds the model's
:class:`~routecast.local.models.LocalProfile` predicts for its recorded output tokens (one
thread per server). CPU time, not the recorded wall time, because the machine the outcomes
were collected on was shared and wall time there measures the neighbours too; the recorded
wall latencies are still reported, as measured. ``cost_usd`` is that energy at
``USD_PER_KWH``.

Both files share the seeded 60/20/20 split: the router is fitted on ``train``, its policy and
the cascade threshold are tuned on ``validation`` (the threshold on train and validation: a
confidence is not fitted, so the more prompts the steadier the quantiles), and ``test`` is
held out for the reports and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from routecast.cascades.cascade import Cascade, Replay
from routecast.data.dataset import Dataset, FloatArray
from routecast.errors import CalibrationError, DataError
from routecast.local.collect import USD_PER_KWH
from routecast.local.models import BUILTIN, WATTS_PER_THREAD

if TYPE_CHECKING:
    from routecast.policy import Policy
    from routecast.routers.base import Router
    from routecast.signals.learned import LearnedScorer

SMALL = "smollm2-135m"
LARGE = "gemma3-270m"  # the larger model (270M parameters), the baseline to beat
LOGPROBS_FILE = "outcomes-logprobs.jsonl.gz"
PLAIN_FILE = "outcomes-plain.jsonl.gz"
#: Tuning thresholds: this many quantiles of the first step's confidence (as cascade_tuning).
N_LEVELS = 8


def data_dir() -> Path:
    """The folder the outcomes ship in (inside the installed package)."""
    return Path(str(resources.files("routecast.local").joinpath("data")))


@dataclass(frozen=True, eq=False)
class LocalOutcomes:
    """Both runs, row-aligned: ``logprobs`` (confidence recorded) and ``plain``."""

    logprobs: Dataset
    plain: Dataset

    def __post_init__(self) -> None:
        a, b = self.logprobs, self.plain
        if a.ids != b.ids or a.models != b.models or list(a.split) != list(b.split):
            raise DataError("the two runs hold different prompts, models or splits",
                            where=f"{a.name} / {b.name}", fix="regenerate both with the same "
                            "task set and seed (see routecast.local.outcomes)")
        if a.confidence is None:
            raise DataError("the run with log-probs records no confidence", where=a.name,
                            fix="collect it with --logprobs")
        for model in a.models:
            if model not in BUILTIN:
                raise DataError(f"model {model!r} is not a built-in local model", where=a.name)


def load(folder: str | Path | None = None) -> LocalOutcomes:
    """The shipped outcomes (or the two files of that name in ``folder``)."""
    from routecast.data.canonical import load as load_canonical

    root = Path(folder) if folder is not None else data_dir()
    return LocalOutcomes(load_canonical(root / LOGPROBS_FILE), load_canonical(root / PLAIN_FILE))


def energy_j(model: str, tokens_out: FloatArray, *, logprobs: bool) -> FloatArray:
    """Energy of answers of ``tokens_out`` tokens, from the model's CPU profile (one thread)."""
    profile = BUILTIN[model].profile
    base, per_token = ((profile.base_s_logprobs, profile.per_token_s_logprobs) if logprobs
                       else (profile.base_s, profile.per_token_s))
    return np.asarray(WATTS_PER_THREAD * (base + per_token * np.asarray(tokens_out)),
                      dtype=np.float64)


def served(outcomes: LocalOutcomes, first: str | None = None) -> Dataset:
    """The outcomes as a deployment sees them (see module docstring): every column from the
    run without log-probs, except ``first``'s, from the run with them; ``cost_usd`` from the
    energy of each answer; ``confidence`` only for ``first``."""
    plain, lp = outcomes.plain, outcomes.logprobs
    assert plain.tokens_out is not None and lp.tokens_out is not None
    arrays: dict[str, Any] = {k: np.array(getattr(plain, k), dtype=np.float64) for k in
                              ("quality", "latency_s", "tokens_in", "tokens_out")
                              if getattr(plain, k) is not None}
    confidence = np.full(plain.quality.shape, np.nan)
    responses = None if plain.responses is None else plain.responses.copy()
    cost = np.empty(plain.quality.shape)
    for j, model in enumerate(plain.models):
        source = lp if model == first else plain
        for key in arrays:
            arrays[key][:, j] = getattr(source, key)[:, j]
        if responses is not None and source.responses is not None:
            responses[:, j] = source.responses[:, j]
        assert source.tokens_out is not None
        cost[:, j] = energy_j(model, source.tokens_out[:, j], logprobs=source is lp)
        if model == first:
            assert lp.confidence is not None
            confidence[:, j] = lp.confidence[:, j]
    cost_usd = cost / 3.6e6 * USD_PER_KWH
    return replace(plain, name=f"{plain.name} (served, {first or 'no'} log-probs)",
                   cost_usd=cost_usd, confidence=confidence, responses=responses,
                   meta={**plain.meta, "cost": "energy from the local profile, at "
                         f"{USD_PER_KWH} USD/kWh", "first_with_logprobs": first}, **arrays)


def usd_to_j(cost_usd: float) -> float:
    return cost_usd / USD_PER_KWH * 3.6e6


# -- the cascade -------------------------------------------------------------------------------


#: The served cascade asks Gemma first: asked completion-style it answers in ~3.5 tokens, so it
#: is the cheaper model per answer (1.7 J against SmolLM2's 3.6 J on the shipped outcomes;
#: ``benchmarks/local_costs.py`` measures it live), and a cascade starts with the cheapest.
CASCADE_ORDER = (LARGE, SMALL)
#: Out-of-fold folds for the learned scorer's tuning scores.
SCORER_FOLDS = 5


@dataclass(frozen=True)
class TunedCascade:
    """A tuned two-step cascade and, for the ``learned`` signal, the scorer that judges it."""

    cascade: Cascade
    scorer: LearnedScorer | None = None

    def scores(self, data: Dataset) -> FloatArray:
        """The signal's score of every answer in ``data`` (the confidence recorded with
        log-probs, or the scorer's)."""
        if self.scorer is not None:
            return self.scorer.score(data)
        if data.confidence is None:
            raise DataError("has no confidence to judge the cascade by", where=data.name,
                            fix="serve it with outcomes.served(..., first=<first step>)")
        return data.confidence

    def data(self, outcomes: LocalOutcomes) -> Dataset:
        """The outcomes as this cascade is served: log-probs only where its signal reads
        them (the first step of a ``confidence`` cascade)."""
        return served(outcomes, first=None if self.scorer is not None
                      else self.cascade.models[0])


def candidate_thresholds(confidence: FloatArray, n_levels: int = N_LEVELS) -> FloatArray:
    """0 (never escalate), ``n_levels`` quantiles of ``confidence``, and above 1 (always)."""
    probs = np.arange(1, n_levels + 1) / (n_levels + 1)
    finite = confidence[~np.isnan(confidence)]
    levels = np.quantile(finite, probs) if len(finite) else np.array([])
    return np.unique(np.r_[0.0, levels, 1.0 + 1e-9])


def tune_cascade(outcomes: LocalOutcomes, order: tuple[str, str] = CASCADE_ORDER, *,
                 signal: str = "learned", splits: tuple[str, ...] = ("train", "validation"),
                 n_levels: int = N_LEVELS) -> TunedCascade:
    """The two-step cascade ``order`` judged by ``signal``, its threshold tuned on ``splits``.

    ``learned``: a FrugalGPT-style scorer of (question, answer) text, needing no log-probs;
    thresholds are tuned on its out-of-fold scores of the tuning prompts, and the scorer that
    is served is then fitted on all of them. ``confidence``: the first step's mean token
    probability, asked for with log-probs (and priced with them).

    The goal: the highest accuracy on the tuning prompts; among thresholds within one prompt's
    worth of it, the cheapest (a coarse grid and that slack keep it from chasing noise).
    """
    if signal not in ("learned", "confidence"):
        raise CalibrationError(f"unknown signal {signal!r} for the local cascade; use "
                               "'learned' or 'confidence'")
    data = served(outcomes, first=None if signal == "learned" else order[0])
    tuning = data.take(np.isin(data.split, splits))
    if tuning.n_prompts == 0:
        raise CalibrationError(f"no prompts in splits {splits} to tune the cascade on")
    scorer: LearnedScorer | None = None
    if signal == "learned":
        from routecast.signals.learned import LearnedScorer

        scorer = LearnedScorer(use_confidence=False)
        scores = scorer.cross_fit(tuning, folds=SCORER_FOLDS, seed=0)
        scorer.fit(tuning)
    else:
        assert tuning.confidence is not None
        scores = tuning.confidence
    col = tuning.model_index(order[0])
    candidates = [Cascade(order, (float(t),), signal) for t in
                  candidate_thresholds(scores[:, col], n_levels)]
    replays = [c.replay(tuning, scores) for c in candidates]
    best = max(r.mean_quality for r in replays)
    slack = 1.0 / tuning.n_prompts
    pick = min((i for i, r in enumerate(replays) if r.mean_quality >= best - slack - 1e-12),
               key=lambda i: replays[i].mean_cost_usd)
    return TunedCascade(candidates[pick], scorer)


# -- the router ----------------------------------------------------------------------------------


#: The routed endpoint's goal: the cheapest point on validation that keeps this share of the
#: best single model's accuracy. (100 % is out of reach on validation: the router keeps
#: 95 % of SmolLM2's accuracy at best there, and Gemma's energy budget buys nothing but Gemma.)
ROUTER_QUALITY = 0.9


def fit_router(outcomes: LocalOutcomes, kind: str = "linear") -> tuple[Router, Policy]:
    """A TF-IDF router fitted on the train split of the served outcomes, and its policy
    calibrated on validation for ``ROUTER_QUALITY``."""
    from routecast.policy import Policy
    from routecast.routers import make_router

    data = served(outcomes)
    router = make_router(kind).fit(data.subset("train"))
    return router, Policy.for_quality(router, data.subset("validation"), ROUTER_QUALITY)


# -- reports -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """One way of answering, on one split: means per prompt."""

    name: str
    accuracy: float
    energy_j: float
    latency_s: float
    escalated: float  # share of prompts that asked both models
    answered_by_small: float

    def as_dict(self) -> dict[str, Any]:
        return vars(self).copy()


def _figures(name: str, data: Dataset, replay: Replay) -> Figures:
    assert replay.latency_s is not None
    shares = replay.answer_shares(data.models)
    return Figures(name, replay.mean_quality, usd_to_j(replay.mean_cost_usd),
                   float(replay.latency_s.mean()), replay.escalation_rate,
                   shares.get(SMALL, 0.0))


def single(data: Dataset, model: str) -> Replay:
    """Always ``model``, replayed on ``data``."""
    return Cascade((model,)).replay(data, np.zeros((data.n_prompts, data.n_models)))


def held_out_report(outcomes: LocalOutcomes, tuned: TunedCascade, router: Router,
                    policy: Policy, split: str = "test") -> list[Figures]:
    """Always SmolLM2, always Gemma, the cascade and the routed endpoint on ``split``."""
    plain = served(outcomes).subset(split)
    rows = [_figures(f"always {m}", plain, single(plain, m)) for m in (SMALL, LARGE)]
    data = tuned.data(outcomes).subset(split)
    rows.append(_figures(f"cascade {tuned.cascade.describe()}", data,
                         tuned.cascade.replay(data, tuned.scores(data))))
    picks = router.route(list(plain.prompts), policy)
    visited = np.zeros((plain.n_prompts, plain.n_models), dtype=bool)
    cols = np.array([plain.model_index(m) for m in picks], dtype=np.int64)
    visited[np.arange(plain.n_prompts), cols] = True
    rows.append(_figures(f"routed ({router.name})", plain,
                         Replay.from_visits(plain, visited, cols)))
    return rows
