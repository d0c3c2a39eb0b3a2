"""Cascades and cascade routing in the replay benchmark, beside the routers.

For every deferral signal the data supports (:func:`routecast.signals.available_signals`:
``confidence`` where the data records one, ``learned`` where it records responses) two
entries join the result's ``"routers"`` list:

* ``cascade:<signal>`` (``"kind": "cascade"``): the cost-quality Pareto front of the tuned
  cascades (:class:`~routecast.cascades.tuning.CascadeSearch`), each replayed on the evaluated
  split; its calibrated point is the cheapest cascade that reaches 95 % of the best single
  model's quality on the tuning data;
* ``cascade-routing:<signal>`` (``"kind": "cascade_routing"``): the linear router's ex-ante
  estimates plus the signal as post-hoc score (:mod:`routecast.cascades.routing`), swept over
  its cost weight; calibrated on validation like a policy.

Where the tuning data comes from. Signals and the router are fitted on train. A cascade is
tuned on train *and* validation, with the train prompts scored out-of-fold (the signal
refitted ``CROSS_FIT_FOLDS`` times, each time without the prompts it scores), so every score
it is tuned on is one the signal could not have memorised: four times the prompts of
validation alone, which measurably steadies the chosen thresholds on unseen data (5-fold CV
on the cascade set, learned scorer: the cascade tuned to gpt-4o's quality realised 96.1 % of
it on the test folds when tuned on validation alone, 99.3 % when tuned this way).
When the validation split is the one evaluated, cascades are tuned on train alone. Cascade
routing's ``gamma`` and cost weight are fitted on validation only, as a policy's weight is.

Each entry carries the router fields (AIQ, savings, oracle gap, bootstrap intervals, curve)
plus, per curve point, ``escalation_rate`` (share of prompts that called more than one model)
and end-to-end latency p50/p95/p99 (the sum of the visited calls' recorded latencies; ``None``
where the data records none).

Every entry (routers too) gets the Delta-IBC of its calibrated 95 % point
(:func:`routecast.metrics.delta_ibc`; AutoMix's formula) in :mod:`routecast.bench.evaluate`,
with the cheapest model as SLM and the best single model of the evaluated split as LLM.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from routecast.bench.curves import (
    Sweep,
    bootstrap,
    calibrated,
    curve_entry,
    unreachable,
    with_single_models,
)
from routecast.bench.guaranteed import cascade_point, routing_point
from routecast.bench.schema import (
    QUALITY_FRACTION,
    Calibrated,
    Entry,
    Progress,
    ReplayPoint,
    SplitSummary,
    no_progress,
)
from routecast.cascades.cascade import Replay
from routecast.cascades.routing import CascadeRouting, fit_gamma
from routecast.cascades.tuning import CascadeSearch
from routecast.errors import CalibrationError
from routecast.routers import make_router
from routecast.signals import available_signals, make_signal

if TYPE_CHECKING:
    from routecast.arrays import FloatArray
    from routecast.data.dataset import Dataset
    from routecast.routers.base import Router

CROSS_FIT_FOLDS = 3
#: The router whose ex-ante estimates cascade routing reads (the strongest built-in one).
ROUTING_ROUTER = "linear"


@dataclass
class CascadeInputs:
    """What the cascade entries of one signal are built from: the signal's scores of every
    model's answers on the tuning data (train out-of-fold, then validation), on validation
    and on the evaluated split, and the routing router's estimates on the latter two."""

    signal: str
    val: Dataset
    test: Dataset
    tuning: Dataset
    s_val: FloatArray
    s_test: FloatArray
    s_tuning: FloatArray
    ex_ante_val: FloatArray
    cost_val: FloatArray
    ex_ante_test: FloatArray
    cost_test: FloatArray
    fit_s: float
    score_s: float  # the signal scoring the evaluated split's answers, in seconds

    def search(self) -> CascadeSearch:
        """Every cascade of the pruned space, replayed on the tuning data."""
        return CascadeSearch(self.tuning, self.s_tuning, signal=self.signal)

    def routing(self) -> CascadeRouting:
        """The cascade-routing rule with ``gamma`` fitted on validation (weight 0)."""
        return CascadeRouting(gamma=fit_gamma(self.ex_ante_val, self.s_val, self.val.quality))


def prepare(dataset: Dataset, split: str, *, seed: int = 0, router: Router | None = None,
            signals: Sequence[str] | None = None, progress: Progress | None = None,
            done: int = 0) -> list[CascadeInputs]:
    """Fit every supported signal (or ``signals``) and the routing router on train, score the
    data, and cross-fit the train scores; one :class:`CascadeInputs` per signal."""
    say = progress or no_progress
    train, val, test = (dataset.subset(s) for s in ("train", "validation", split))
    names = list(signals) if signals is not None else available_signals(train)
    if not names:
        return []
    # Never tune on the evaluated split: evaluating on validation leaves train alone to tune on.
    parts = ("train",) if split == "validation" else ("train", "validation")
    tuning = dataset.take(np.isin(dataset.split, parts))
    in_train = tuning.split == "train"
    if router is None:
        say(done, f"cascade routing: fit the {ROUTING_ROUTER} router")
        router = make_router(ROUTING_ROUTER).fit(train)
    p_val, c_val = router.predict(list(val.prompts)), router.predict_cost(list(val.prompts))
    p_test, c_test = router.predict(list(test.prompts)), router.predict_cost(list(test.prompts))
    out = []
    for name in names:
        say(done, f"cascade:{name}: fit the signal, cross-fitted on train")
        t0 = time.perf_counter()
        signal = make_signal(name).fit(train)
        t1 = time.perf_counter()
        s_test = signal.score(test)
        score_s = time.perf_counter() - t1
        s_val = signal.score(val)
        s_tuning = np.empty((tuning.n_prompts, tuning.n_models))
        s_tuning[in_train] = signal.cross_fit(train, CROSS_FIT_FOLDS, seed)
        if (~in_train).any():
            s_tuning[~in_train] = s_val
        out.append(CascadeInputs(name, val, test, tuning, s_val, s_test, s_tuning, p_val,
                                 c_val, p_test, c_test,
                                 fit_s=time.perf_counter() - t0 - score_s, score_s=score_s))
    return out


def cascade_entries(dataset: Dataset, split: str, summary: SplitSummary, *, n_boot: int,
                    seed: int, progress: Progress | None = None, done: int = 0,
                    router: Router | None = None,
                    prepared: Sequence[CascadeInputs] | None = None,
                    confidence: float | None = None) -> list[Entry]:
    """The cascade and cascade-routing entries for ``dataset`` evaluated on ``split``
    (``summary`` is the evaluated split's summary from :mod:`routecast.bench.evaluate`).
    ``router``, if given, is the :data:`ROUTING_ROUTER` already fitted on train; ``prepared``
    the output of :func:`prepare`, if the caller has it already. With ``confidence``, each
    entry also gets its point calibrated with that guarantee (bench/guaranteed.py)."""
    say = progress or no_progress
    entries = []
    if prepared is None:
        prepared = prepare(dataset, split, seed=seed, router=router, progress=progress,
                           done=done)
    for inputs in prepared:
        say(done, f"cascade:{inputs.signal}: search the cascades")
        entries.append(_cascade_entry(inputs, summary, n_boot=n_boot, seed=seed))
        if confidence is not None:
            say(done, f"cascade:{inputs.signal}: certify on validation")
            entries[-1]["calibrated_95_guaranteed"] = cascade_point(inputs, summary,
                                                                    confidence, seed)
        say(done, f"cascade-routing:{inputs.signal}: calibrate on validation")
        entries.append(_routing_entry(inputs, summary, n_boot=n_boot, seed=seed))
        if confidence is not None:
            entries[-1]["calibrated_95_guaranteed"] = routing_point(
                inputs, inputs.routing(), summary, confidence, seed)
    return entries


def _point(replay: Replay) -> ReplayPoint:
    s = replay.summary()
    return {"cost_usd": s["cost_usd"], "quality": s["quality"],
            "escalation_rate": s["escalation_rate"], "mean_calls": s["mean_calls"],
            "latency_p50_s": s["latency_p50_s"], "latency_p95_s": s["latency_p95_s"],
            "latency_p99_s": s["latency_p99_s"]}


def _replays_entry(name: str, kind: str, replays: list[Replay], test: Dataset,
                   summary: SplitSummary, *, n_boot: int, seed: int) -> Entry:
    """The entry of a curve of replays on the evaluated split, with every point's replay
    figures and, with ``n_boot``, bootstrap intervals."""
    entry = curve_entry(name, kind, np.array([r.mean_cost_usd for r in replays]),
                        np.array([r.mean_quality for r in replays]), summary)
    entry["points"] = [_point(r) for r in replays]
    if n_boot > 0:
        sweep = Sweep(np.arange(len(replays), dtype=np.float64),
                      np.stack([r.quality for r in replays]),
                      np.stack([r.cost_usd for r in replays]),
                      np.stack([r.answered for r in replays]))
        entry["ci"] = bootstrap(with_single_models(sweep, test), test, n_boot, seed)
    return entry


def _calibrated_replay(replay: Replay, summary: SplitSummary) -> Calibrated:
    point = _point(replay)
    cal = calibrated(point["quality"], point["cost_usd"], summary["best_single"])
    cal["escalation_rate"] = point["escalation_rate"]
    cal["mean_calls"] = point["mean_calls"]
    cal["latency_p50_s"] = point["latency_p50_s"]
    cal["latency_p95_s"] = point["latency_p95_s"]
    cal["latency_p99_s"] = point["latency_p99_s"]
    return cal


def _cascade_entry(inputs: CascadeInputs, summary: SplitSummary, *, n_boot: int,
                   seed: int) -> Entry:
    name, test, s_test = inputs.signal, inputs.test, inputs.s_test
    search = inputs.search()
    front = search.frontier()
    t0 = time.perf_counter()
    replays = [search.cascade(int(i)).replay(test, s_test) for i in front]
    # Per prompt: scoring its answers plus one cascade's decisions.
    route_s = inputs.score_s + (time.perf_counter() - t0) / max(1, len(front))
    entry = _replays_entry(f"cascade:{name}", "cascade", replays, test, summary,
                           n_boot=n_boot, seed=seed)
    for point, i in zip(entry.get("points", []), front, strict=True):
        point["cascade"] = search.cascade(int(i)).to_dict()
    entry["signal"] = name
    entry["fit_s"] = inputs.fit_s
    entry["route_ms_per_prompt"] = 1e3 * route_s / test.n_prompts
    entry["tuning"] = {**search.describe_pruning(), "n_prompts": inputs.tuning.n_prompts,
                       "splits": sorted(set(inputs.tuning.split.tolist()))}
    target = QUALITY_FRACTION * float(np.max(inputs.tuning.mean_quality()))
    try:
        chosen = search.cascade(search.cheapest_reaching(target))
    except CalibrationError as e:
        entry["calibrated_95"] = unreachable(str(e))
    else:
        cal = _calibrated_replay(chosen.replay(test, s_test), summary)
        cal["cascade"] = chosen.to_dict()
        entry["calibrated_95"] = cal
    return entry


def _routing_entry(inputs: CascadeInputs, summary: SplitSummary, *, n_boot: int, seed: int
                   ) -> Entry:
    name, test = inputs.signal, inputs.test
    on_val = (inputs.ex_ante_val, inputs.cost_val, inputs.s_val)
    on_test = (inputs.ex_ante_test, inputs.cost_test, inputs.s_test)
    rule = inputs.routing()
    t0 = time.perf_counter()
    weights, replays = rule.sweep(test, *on_test)
    route_s = inputs.score_s + (time.perf_counter() - t0) / len(weights)
    entry = _replays_entry(f"cascade-routing:{name}", "cascade_routing", replays, test,
                           summary, n_boot=n_boot, seed=seed)
    for point, w in zip(entry.get("points", []), weights, strict=True):
        point["cost_weight"] = float(w)
    entry["signal"] = name
    entry["router"] = ROUTING_ROUTER
    entry["gamma"] = rule.gamma
    entry["fit_s"] = inputs.fit_s
    entry["route_ms_per_prompt"] = 1e3 * route_s / test.n_prompts
    try:
        tuned = rule.for_quality(inputs.val, *on_val, fraction=QUALITY_FRACTION)
    except CalibrationError as e:
        entry["calibrated_95"] = unreachable(str(e))
    else:
        cal = _calibrated_replay(tuned.replay(test, *on_test), summary)
        cal["cost_weight"] = tuned.cost_weight
        entry["calibrated_95"] = cal
    return entry
