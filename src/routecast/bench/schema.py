"""The benchmark result's type: the JSON contract of the README ("Benchmark JSON").

``routecast bench --json`` writes a :class:`BenchResult`; the terminal table, the Markdown
report, the plot, cross-validation and the out-of-sample summaries all read one. Keys are
only ever added (other tools read the file), so every key added after the first release is
``NotRequired``. The constants and the progress callback the bench modules share live here
too, so that each is defined once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NotRequired, TypedDict

#: The quality target of every calibrated point the bench reports: this fraction of the best
#: single model's mean quality.
QUALITY_FRACTION = 0.95

#: Called as each step starts with the number of steps already done and a description; lets
#: the CLI draw a progress bar.
Progress = Callable[[int, str], None]


def no_progress(_done: int, _message: str) -> None:
    """The progress callback of a caller that wants none."""


class ModelSummary(TypedDict):
    """One model's means per prompt on the evaluated split (latency where recorded)."""

    name: str
    quality: float
    cost_usd: float
    latency_p50_s: NotRequired[float]
    latency_p95_s: NotRequired[float]
    latency_p99_s: NotRequired[float]


class Oracle(TypedDict):
    """The cheapest-correct oracle's means on the evaluated split."""

    quality: float
    cost_usd: float


class SplitSummary(TypedDict):
    """What the evaluated split itself says, before any router: its models, the best single
    one, the oracle, the single models' cost range (AIQ's range) and the zero router's AIQ."""

    models: list[ModelSummary]
    best_single: ModelSummary
    oracle: Oracle
    cost_range: list[float]
    zero_router_aiq: float


class Interval(TypedDict):
    """Bootstrap percentile intervals (``[low, high]``, ``None`` where undefined)."""

    aiq: list[float] | None
    aiq_minus_zero: list[float] | None
    savings_at_95: list[float] | None
    savings_at_100: list[float] | None


class PairMetrics(TypedDict):
    """RouteLLM's figures for a router restricted to a weak/strong pair."""

    weak: str
    strong: str
    apgr: float
    cpt_50: float
    cpt_80: float


class Calibrated(TypedDict):
    """The operating point calibrated on validation for :data:`QUALITY_FRACTION` of the best
    single model's quality, realised on the evaluated split. ``quality`` and ``cost_usd`` are
    ``None`` (and ``error`` says why) when no point reached the target on validation.

    Cascades add the replay figures of the point (escalation rate, calls, latency) and the
    cascade itself; policies and cascade routing their cost weight."""

    quality: float | None
    cost_usd: float | None
    error: NotRequired[str]
    cost_weight: NotRequired[float]
    quality_vs_best: NotRequired[float]
    cost_vs_best: NotRequired[float]
    fallback: NotRequired[str | None]
    delta_ibc: NotRequired[float | None]
    escalation_rate: NotRequired[float]
    mean_calls: NotRequired[float]
    latency_p50_s: NotRequired[float | None]
    latency_p95_s: NotRequired[float | None]
    latency_p99_s: NotRequired[float | None]
    cascade: NotRequired[dict[str, Any]]


class Guaranteed(Calibrated):
    """The operating point certified on validation to reach :data:`QUALITY_FRACTION` of the
    best single model's quality with probability ``confidence`` (routecast.guarantee), beside
    what it realised on the evaluated split: ``target`` and ``quality_validation`` are the
    validation figures, ``quality_bound`` a one-sided ``confidence`` lower bound on the point's
    mean quality alone (Clopper-Pearson for 0/1 qualities). The certification itself tests the
    point *paired* with every model (routecast.guarantee), which cancels shared noise, so a
    certified point's ``quality_bound`` may lie slightly below ``target``. ``fallback`` is set
    when the point is a mix of single models."""

    confidence: float
    method: str
    target: NotRequired[float]
    quality_validation: NotRequired[float]
    quality_bound: NotRequired[float | None]
    fallback: NotRequired[str | None]
    policy: NotRequired[str]
    met_target: NotRequired[bool]


class ReplayPoint(TypedDict):
    """One curve point of a cascade or cascade routing, replayed on the evaluated split."""

    cost_usd: float
    quality: float
    escalation_rate: float
    mean_calls: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    cascade: NotRequired[dict[str, Any]]
    cost_weight: NotRequired[float]


class Entry(TypedDict):
    """One router, cascade or cascade routing of the result (``kind`` says which).

    ``curve`` is ``[[cost_usd, quality], ...]``, one pair per operating point; AIQ, savings
    and the oracle gap are read off its non-decreasing convex hull (:mod:`routecast.metrics`).
    """

    name: str
    kind: str  # router | cascade | cascade_routing
    evaluation_only: bool
    aiq: float
    aiq_minus_zero: float
    max_quality: float
    savings_at_95: float | None
    savings_at_100: float | None
    oracle_gap: float
    curve: list[list[float]]
    calibrated_95: Calibrated | None
    calibrated_95_guaranteed: NotRequired[Guaranteed | None]
    aiq_own: NotRequired[float]
    aiq_routerbench: NotRequired[float]
    fit_s: NotRequired[float]
    route_ms_per_prompt: NotRequired[float]
    ci: NotRequired[Interval]
    pair: NotRequired[PairMetrics]
    delta_ibc: NotRequired[float | None]
    # cascades and cascade routing
    points: NotRequired[list[ReplayPoint]]
    signal: NotRequired[str]
    tuning: NotRequired[dict[str, Any]]
    router: NotRequired[str]
    gamma: NotRequired[float]


class CrossSection(TypedDict):
    """``--train A --test B``: what was fitted on what (bench/crossval.py)."""

    train: dict[str, Any]
    test: dict[str, Any]
    shared_prompts: int


class FoldEntry(TypedDict):
    """The per-fold figures of one entry (a subset of :class:`Entry`)."""

    name: str
    kind: str
    aiq: float
    aiq_minus_zero: float
    max_quality: float
    savings_at_95: float | None
    savings_at_100: float | None
    oracle_gap: float
    calibrated_95: Calibrated | None
    calibrated_95_guaranteed: NotRequired[Guaranteed | None]
    aiq_routerbench: NotRequired[float]


class Fold(TypedDict):
    """One fold of k-fold cross-validation."""

    fold: int
    n_train: int
    n_validation: int
    n_test: int
    best_single: ModelSummary
    zero_router_aiq: float
    routers: list[FoldEntry]


class TStat(TypedDict):
    """Mean, sample sd and Student-t interval of one figure over folds."""

    mean: float | None
    sd: float | None
    ci: list[float] | None
    n: int


class FoldsSection(TypedDict):
    """``--folds K``: k-fold cross-validation over all prompts (bench/crossval.py)."""

    k: int
    seed: int
    n_prompts: int
    validation_fraction: float
    level: float
    interval: str
    per_fold: list[Fold]
    summary: list[dict[str, Any]]  # {"name": str, <metric>: TStat, ...}


class Spread(TypedDict):
    """One figure across folds (``None`` where it exists in no fold)."""

    median: float | None
    p5: float | None
    p95: float | None
    min: float | None
    max: float | None
    n: int


class FoldFigures(TypedDict):
    """One entry in one fold."""

    name: str
    kind: str
    figures: dict[str, float | None]
    met_95: bool | None
    met_95_guaranteed: bool | None
    fallback: str | None


class OutOfSampleFold(TypedDict):
    """One fold: what it held out and every entry's figures."""

    fold: str
    n_train: int
    n_validation: int
    n_test: int
    best_single: str
    entries: list[FoldFigures]


class EntrySpread(TypedDict):
    """One entry across folds: the spread of each figure, and how often each calibrated
    point met its target on the held-out prompts (of the folds where it had a point)."""

    name: str
    kind: str
    spread: dict[str, Spread]
    met_95_share: float | None
    met_95_guaranteed_share: float | None
    n_points: int
    n_points_guaranteed: int
    fallbacks: int


class OutOfSample(TypedDict):
    """``--folds task`` or ``--repeats R`` (the ``out_of_sample`` key of the bench JSON)."""

    protocol: str  # "leave-one-task-out" | "repeated-splits"
    dataset: str
    seed: int
    confidence: float | None
    fraction: float
    folds: list[OutOfSampleFold]
    summary: list[EntrySpread]
    skipped: NotRequired[list[str]]


class BenchResult(SplitSummary):
    """The whole result of one ``routecast bench`` run."""

    dataset: str
    split: str
    n_prompts: int
    n_train: int
    n_validation: int
    seed: int
    n_boot: int
    routers: list[Entry]
    zero_router_aiq_routerbench: NotRequired[float]
    aiq_conventions: NotRequired[dict[str, str]]
    confidence: NotRequired[float | None]
    cross: NotRequired[CrossSection]
    folds: NotRequired[FoldsSection]
    out_of_sample: NotRequired[OutOfSample]


class FewLabelsScore(TypedDict):
    """One variant of one router in the few-labels benchmark (bench/fewlabels.py)."""

    aiq: float | None
    calibrated_quality: float | None
    calibrated_cost_usd: float | None
    new_model_log_loss: float | None


class FewLabelsStep(TypedDict):
    """``n`` labelled prompts: each figure's mean, ``_sd`` and ``_missing`` over repeats."""

    n: int
    added: dict[str, Any]
    scratch: dict[str, Any]


class FewLabelsEntry(TypedDict):
    """One router of the few-labels benchmark."""

    name: str
    full: FewLabelsScore
    without: FewLabelsScore
    curve: list[FewLabelsStep]


class FewLabelsResult(TypedDict):
    """``routecast bench DATA --few-labels MODEL --json``."""

    dataset: str
    split: str
    model: str
    labels: list[int]
    repeats: int
    seed: int
    prior_strength: float
    n_train: int
    n_prompts: int
    zero_router_aiq: float
    routers: list[FewLabelsEntry]
