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

**Delta-IBC** (AutoMix, Aggarwal et al., "AutoMix: Automatically Mixing Language Models",
arXiv:2310.12963; the same formula as ``ibc_lift`` in the authors' code,
github.com/automix-llm/automix, ``automix/main.py``): the *incremental benefit per cost* of
an operating point ``M``
over the small model is ``IBC_M = (P_M - P_SLM) / (C_M - C_SLM)``, that of the plain small-to-
large line is ``IBC_BASE = (P_LLM - P_SLM) / (C_LLM - C_SLM)``, and
``Delta-IBC_M = (IBC_M - IBC_BASE) / IBC_BASE`` (AutoMix prints it x 100, in percent).
Positive means the point lies above the straight line from the small to the large model, i.e.
it buys quality more cheaply than mixing the two at random. Here SLM is the cheapest model and
LLM the best single model of the evaluated split, and every entry (routers too) gets the
Delta-IBC of its calibrated 95 % point.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from routecast import metrics
from routecast.bench.evaluate import _bootstrap, _Sweep
from routecast.cascades.cascade import Replay
from routecast.cascades.routing import CascadeRouting, fit_gamma
from routecast.cascades.tuning import CascadeSearch
from routecast.errors import CalibrationError
from routecast.routers import make_router
from routecast.signals import available_signals, make_signal

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset, FloatArray
    from routecast.routers.base import Router

QUALITY_FRACTION = 0.95
CROSS_FIT_FOLDS = 3
#: The router whose ex-ante estimates cascade routing reads (the strongest built-in one).
ROUTING_ROUTER = "linear"

Progress = Callable[[int, str], None]


def delta_ibc(quality: float, cost: float, slm: tuple[float, float],
              llm: tuple[float, float]) -> float | None:
    """AutoMix's Delta-IBC of the point ``(cost, quality)``; ``slm``/``llm`` are
    ``(quality, cost)`` pairs. ``None`` where a slope is undefined (equal costs, or a "large"
    model no better than the small one)."""
    (q_slm, c_slm), (q_llm, c_llm) = slm, llm
    if c_llm == c_slm or cost == c_slm:
        return None
    base = (q_llm - q_slm) / (c_llm - c_slm)
    if base <= 0:
        return None
    return float(((quality - q_slm) / (cost - c_slm) - base) / base)


def add_delta_ibc(result: dict[str, Any]) -> None:
    """Set ``delta_ibc`` on every entry of ``result["routers"]`` from its calibrated point."""
    models = result["models"]
    cheapest = min(models, key=lambda m: (m["cost_usd"], -m["quality"]))
    best = result["best_single"]
    slm = (cheapest["quality"], cheapest["cost_usd"])
    llm = (best["quality"], best["cost_usd"])
    for entry in result["routers"]:
        cal = entry.get("calibrated_95") or {}
        value = None
        if cal.get("quality") is not None:
            value = delta_ibc(cal["quality"], cal["cost_usd"], slm, llm)
            cal["delta_ibc"] = value
        entry["delta_ibc"] = value


def add_cascades(result: dict[str, Any], dataset: Dataset, split: str, *, cascades: bool,
                 n_boot: int, seed: int, progress: Progress | None = None,
                 fitted: dict[str, Router] | None = None) -> None:
    """Everything this module adds to a benchmark result, in place: per-model latency
    quantiles (where recorded), the cascade entries (if ``cascades`` and the data supports a
    signal) and every entry's Delta-IBC. ``fitted`` holds routers already fitted on train,
    by name, so cascade routing need not fit its router again."""
    test = dataset.subset(split)
    if test.latency_s is not None:
        for j, model in enumerate(result["models"]):
            lat = test.latency_s[:, j]
            model.update(latency_p50_s=float(np.quantile(lat, 0.5)),
                         latency_p95_s=float(np.quantile(lat, 0.95)),
                         latency_p99_s=float(np.quantile(lat, 0.99)))
            if model["name"] == result["best_single"]["name"]:
                result["best_single"].update({k: v for k, v in model.items()
                                              if k.startswith("latency_")})
    if cascades:
        summary = {k: result[k] for k in ("best_single", "oracle", "cost_range",
                                          "zero_router_aiq")}
        result["routers"] += cascade_entries(dataset, split, summary, n_boot=n_boot,
                                             seed=seed, progress=progress,
                                             done=len(result["routers"]),
                                             router=(fitted or {}).get(ROUTING_ROUTER))
    add_delta_ibc(result)


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
    say = progress or (lambda _done, _msg: None)
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


def cascade_entries(dataset: Dataset, split: str, summary: dict[str, Any], *, n_boot: int,
                    seed: int, progress: Progress | None = None, done: int = 0,
                    router: Router | None = None,
                    prepared: Sequence[CascadeInputs] | None = None) -> list[dict[str, Any]]:
    """The cascade and cascade-routing entries for ``dataset`` evaluated on ``split``
    (``summary`` is the evaluated split's summary from :mod:`routecast.bench.evaluate`).
    ``router``, if given, is the :data:`ROUTING_ROUTER` already fitted on train; ``prepared``
    the output of :func:`prepare`, if the caller has it already."""
    say = progress or (lambda _done, _msg: None)
    entries = []
    if prepared is None:
        prepared = prepare(dataset, split, seed=seed, router=router, progress=progress,
                           done=done)
    for inputs in prepared:
        say(done, f"cascade:{inputs.signal}: search the cascades")
        entries.append(_cascade_entry(inputs, summary, n_boot=n_boot, seed=seed))
        say(done, f"cascade-routing:{inputs.signal}: calibrate on validation")
        entries.append(_routing_entry(inputs, summary, n_boot=n_boot, seed=seed))
    return entries


def _point(replay: Replay) -> dict[str, Any]:
    return dict(replay.summary())


def _common(name: str, kind: str, replays: list[Replay], test: Dataset,
            summary: dict[str, Any], *, n_boot: int, seed: int) -> dict[str, Any]:
    """The fields every entry has, from the replays of its curve points on the test split."""
    best = summary["best_single"]
    lo, hi = summary["cost_range"]
    cq = np.array([r.mean_quality for r in replays])
    cc = np.array([r.mean_cost_usd for r in replays])
    entry: dict[str, Any] = {
        "name": name, "kind": kind, "evaluation_only": False,
        "aiq": metrics.aiq(cc, cq, lo, hi), "max_quality": float(cq.max()),
        "savings_at_95": metrics.savings_at(cc, cq, 0.95, best["quality"], best["cost_usd"]),
        "savings_at_100": metrics.savings_at(cc, cq, 1.0, best["quality"], best["cost_usd"]),
        "oracle_gap": metrics.oracle_gap(cc, cq, summary["oracle"]["quality"],
                                         summary["oracle"]["cost_usd"]),
        "curve": [[float(c), float(q)] for c, q in zip(cc, cq, strict=True)],
        "points": [_point(r) for r in replays],
    }
    entry["aiq_minus_zero"] = entry["aiq"] - summary["zero_router_aiq"]
    if n_boot > 0:
        sweep = _Sweep(np.arange(len(replays), dtype=np.float64),
                       np.stack([r.quality for r in replays]),
                       np.stack([r.cost_usd for r in replays]),
                       np.stack([r.answered for r in replays]))
        entry["ci"] = _bootstrap(sweep, test, n_boot, seed)
    return entry


def _calibrated(replay: Replay, best: dict[str, Any], **extra: Any) -> dict[str, Any]:
    point = _point(replay)
    return {**point, "quality_vs_best": point["quality"] / best["quality"],
            "cost_vs_best": point["cost_usd"] / best["cost_usd"], **extra}


def _cascade_entry(inputs: CascadeInputs, summary: dict[str, Any], *, n_boot: int,
                   seed: int) -> dict[str, Any]:
    name, test, s_test = inputs.signal, inputs.test, inputs.s_test
    search = inputs.search()
    front = search.frontier()
    t0 = time.perf_counter()
    replays = [search.cascade(int(i)).replay(test, s_test) for i in front]
    # Per prompt: scoring its answers plus one cascade's decisions.
    route_s = inputs.score_s + (time.perf_counter() - t0) / max(1, len(front))
    entry = _common(f"cascade:{name}", "cascade", replays, test, summary, n_boot=n_boot,
                    seed=seed)
    for point, i in zip(entry["points"], front, strict=True):
        point["cascade"] = search.cascade(int(i)).to_dict()
    entry.update(signal=name, fit_s=inputs.fit_s,
                 route_ms_per_prompt=1e3 * route_s / test.n_prompts,
                 tuning={**search.describe_pruning(), "n_prompts": inputs.tuning.n_prompts,
                         "splits": sorted(set(inputs.tuning.split.tolist()))})
    target = QUALITY_FRACTION * float(np.max(inputs.tuning.mean_quality()))
    try:
        chosen = search.cascade(search.cheapest_reaching(target))
    except CalibrationError as e:
        entry["calibrated_95"] = {"error": str(e), "quality": None, "cost_usd": None}
    else:
        entry["calibrated_95"] = _calibrated(chosen.replay(test, s_test), summary["best_single"],
                                             cascade=chosen.to_dict())
    return entry


def _routing_entry(inputs: CascadeInputs, summary: dict[str, Any], *, n_boot: int, seed: int
                   ) -> dict[str, Any]:
    name, test = inputs.signal, inputs.test
    on_val = (inputs.ex_ante_val, inputs.cost_val, inputs.s_val)
    on_test = (inputs.ex_ante_test, inputs.cost_test, inputs.s_test)
    rule = inputs.routing()
    t0 = time.perf_counter()
    weights, replays = rule.sweep(test, *on_test)
    route_s = inputs.score_s + (time.perf_counter() - t0) / len(weights)
    entry = _common(f"cascade-routing:{name}", "cascade_routing", replays, test, summary,
                    n_boot=n_boot, seed=seed)
    for point, w in zip(entry["points"], weights, strict=True):
        point["cost_weight"] = float(w)
    entry.update(signal=name, router=ROUTING_ROUTER, gamma=rule.gamma, fit_s=inputs.fit_s,
                 route_ms_per_prompt=1e3 * route_s / test.n_prompts)
    try:
        tuned = rule.for_quality(inputs.val, *on_val, fraction=QUALITY_FRACTION)
    except CalibrationError as e:
        entry["calibrated_95"] = {"error": str(e), "quality": None, "cost_usd": None}
    else:
        entry["calibrated_95"] = _calibrated(tuned.replay(test, *on_test),
                                             summary["best_single"],
                                             cost_weight=tuned.cost_weight)
    return entry
