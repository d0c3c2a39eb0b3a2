"""The calibrated point with a guarantee, for every entry of the benchmark; both AIQ conventions.

Beside ``calibrated_95`` (the cheapest point reaching 95 % of the best single model's quality
on validation, a point estimate), each entry gets ``calibrated_95_guaranteed``: the cheapest
point *certified* on validation to reach it on new prompts with probability ``confidence``
(:mod:`routecast.guarantee`), searched over the entry's own operating points and the zero
router's mixes of single models (:mod:`routecast.mixing`). Each shows the target and the lower
confidence bound (validation) beside the quality realised on the evaluated split, whether it
met the target there, and the fallback when a mix of single models won.

Which points each family holds, in the order they are tested (most expensive first, fixed
before looking at validation outcomes):

* a router: its cost weights, from 0 up; the mixes ordered by the router's mean estimates;
* a cascade: the cost-quality Pareto front of the cascades tuned on the *train* prompts alone
  (scored out of fold), priciest first; the mixes ordered by the models' train means. (The
  point estimate tunes on train and validation together; a guarantee needs validation held
  back for the test);
* cascade routing: its cost weights from 0 up; the mixes ordered by the router's estimates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from routecast import metrics
from routecast.bench.curves import calibrated
from routecast.bench.schema import QUALITY_FRACTION, BenchResult, Guaranteed, SplitSummary
from routecast.cascades.tuning import CascadeSearch
from routecast.errors import CalibrationError
from routecast.mixing import Family, Selected, cheapest_meeting, zero_family
from routecast.policy import Policy, draws

if TYPE_CHECKING:
    from routecast.arrays import FloatArray
    from routecast.bench.cascades import CascadeInputs
    from routecast.cascades.routing import CascadeRouting
    from routecast.data.dataset import Dataset
    from routecast.routers.base import Router

METHOD = "wsr"


def _unreachable(error: str, confidence: float) -> Guaranteed:
    return {"error": error, "quality": None, "cost_usd": None, "confidence": confidence,
            "method": METHOD}


def _point(quality: float, cost: float, chosen: Selected, summary: SplitSummary,
           description: str, fallback: str | None) -> Guaranteed:
    cal = chosen.calibration
    base = calibrated(quality, cost, summary["best_single"])
    return {**base, "confidence": float(cal.confidence or 0.0), "method": METHOD,
            "target": cal.target, "quality_validation": cal.quality,
            "quality_bound": cal.quality_bound, "fallback": fallback, "policy": description,
            "met_target": quality >= QUALITY_FRACTION * summary["best_single"]["quality"]
            - 1e-12}


def _zero_on(test: Dataset, step: tuple[int, int, float], seed: int) -> tuple[float, float]:
    """Realised quality and cost on ``test`` of one step of the zero router's path."""
    a, b, share = step
    pick = np.where(draws(test.n_prompts, seed, list(test.prompts)) < share, b, a)
    rows = np.arange(test.n_prompts)
    return float(test.quality[rows, pick].mean()), float(test.cost_usd[rows, pick].mean())


def _zero_description(models: tuple[str, ...], step: tuple[int, int, float]) -> str:
    a, b, share = step
    if share <= 0 or a == b:
        return f"model {models[a]} (fallback: best mix of single models)"
    return (f"{1 - share:.0%} {models[a]}, {share:.0%} {models[b]} "
            "(fallback: best mix of single models)")


def router_point(router: Router, val: Dataset, test: Dataset, pred_q: FloatArray,
                 pred_c: FloatArray, summary: SplitSummary, confidence: float,
                 seed: int, train_quality: FloatArray | None = None) -> Guaranteed:
    """A router's certified point (:meth:`Policy.for_quality` with ``confidence``; the
    single-model mixes ordered by ``train_quality``, the models' train means)."""
    try:
        policy = Policy.for_quality(router, val, QUALITY_FRACTION, confidence, method=METHOD,
                                    seed=seed, mean_quality=None if train_quality is None
                                    else train_quality.tolist())
    except CalibrationError as e:
        return _unreachable(str(e), confidence)
    pick = policy.choose(pred_q, pred_c, models=router.models_, prompts=list(test.prompts))
    rows = np.arange(test.n_prompts)
    cal = policy.calibration
    assert cal is not None
    chosen = Selected(0 if policy.fallback is None else 1, 0, cal)
    return _point(float(test.quality[rows, pick].mean()),
                  float(test.cost_usd[rows, pick].mean()), chosen, summary,
                  policy.describe(), policy.fallback)


def cascade_point(inputs: CascadeInputs, summary: SplitSummary, confidence: float,
                  seed: int) -> Guaranteed:
    """A cascade's certified point: the front tuned on train (out of fold), tested on
    validation (module doc)."""
    tuning, val = inputs.tuning, inputs.val
    in_train = tuning.split == "train"
    train = tuning.take(in_train)
    search = CascadeSearch(train, inputs.s_tuning[in_train], signal=inputs.signal)
    front = search.frontier()[::-1]  # priciest first
    cascades = [search.cascade(int(i)) for i in front]
    replays = [c.replay(val, inputs.s_val) for c in cascades]
    family = Family(np.stack([r.quality for r in replays]), np.stack([r.cost_usd for r in replays]))
    path, mixed = zero_family(train.mean_quality(), train.mean_cost_usd(), val, seed)
    try:
        chosen = cheapest_meeting([family, mixed], val.quality, QUALITY_FRACTION, confidence,
                                  method=METHOD, seed=seed)
    except CalibrationError as e:
        return _unreachable(str(e), confidence)
    if chosen.family == 0:
        cascade = cascades[chosen.index]
        replay = cascade.replay(inputs.test, inputs.s_test)
        point = _point(replay.mean_quality, replay.mean_cost_usd, chosen, summary,
                       " > ".join(cascade.models), None)
        point["cascade"] = cascade.to_dict()
        return point
    q, c = _zero_on(inputs.test, path[chosen.index], seed)
    return _point(q, c, chosen, summary, _zero_description(val.models, path[chosen.index]),
                  "best mix of single models")


def routing_point(inputs: CascadeInputs, rule: CascadeRouting, summary: SplitSummary,
                  confidence: float, seed: int) -> Guaranteed:
    """Cascade routing's certified point over its cost weights (module doc)."""
    from dataclasses import replace

    val = inputs.val
    on_val = (inputs.ex_ante_val, inputs.cost_val, inputs.s_val)
    weights, replays = rule.sweep(val, *on_val)
    family = Family(np.stack([r.quality for r in replays]), np.stack([r.cost_usd for r in replays]))
    path, mixed = zero_family(inputs.ex_ante_val.mean(axis=0), inputs.cost_val.mean(axis=0),
                              val, seed)
    try:
        chosen = cheapest_meeting([family, mixed], val.quality, QUALITY_FRACTION, confidence,
                                  method=METHOD, seed=seed)
    except CalibrationError as e:
        return _unreachable(str(e), confidence)
    if chosen.family == 0:
        w = float(weights[chosen.index])
        replay = replace(rule, cost_weight=w).replay(inputs.test, inputs.ex_ante_test,
                                                     inputs.cost_test, inputs.s_test)
        point = _point(replay.mean_quality, replay.mean_cost_usd, chosen, summary,
                       f"cascade routing at w={w:.4g}", None)
        point["cost_weight"] = w
        return point
    q, c = _zero_on(inputs.test, path[chosen.index], seed)
    return _point(q, c, chosen, summary, _zero_description(val.models, path[chosen.index]),
                  "best mix of single models")


def add_routerbench_aiq(result: BenchResult) -> None:
    """Every entry's AIQ by RouterBench's code convention (:func:`metrics.aiq_routerbench`):
    the largest cost is the largest over every curve of the result and the single models."""
    models = result["models"]
    c_max = max([m["cost_usd"] for m in models]
                + [c for e in result["routers"] for c, _ in e["curve"]])
    mc = np.array([m["cost_usd"] for m in models])
    mq = np.array([m["quality"] for m in models])
    result["zero_router_aiq_routerbench"] = metrics.aiq_routerbench(mc, mq, c_max)
    for entry in result["routers"]:
        curve = np.asarray(entry["curve"], dtype=np.float64)
        entry["aiq_routerbench"] = metrics.aiq_routerbench(np.r_[curve[:, 0], mc],
                                                           np.r_[curve[:, 1], mq], c_max)
    result["aiq_conventions"] = {
        "aiq": "routecast: hull over [cheapest, priciest single model's mean cost], divided "
               "by that range (RouterBench paper's definition)",
        "aiq_routerbench": "RouterBench's evaluation/AIQ.py: hull from its first point to the "
                           "largest cost of all curves of this result, divided by that cost",
    }
