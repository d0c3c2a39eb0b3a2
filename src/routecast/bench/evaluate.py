"""Replay recorded outcomes: fit routers on train, calibrate on validation, evaluate on a split.

Everything here is offline and deterministic for a given dataset, split and seed. The result
is a :class:`~routecast.bench.schema.BenchResult` (the README's "Benchmark JSON"), so the
table, the plot and the Markdown report are all drawn from the same numbers.

:func:`evaluate` composes the steps: the split's own summary, one entry per router
(:func:`router_entry`), the cascades and cascade routing (:mod:`routecast.bench.cascades`),
the models' latency quantiles (:func:`add_latency`) and every entry's Delta-IBC
(:func:`add_delta_ibc`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from routecast import metrics
from routecast.arrays import FloatArray
from routecast.bench.cascades import ROUTING_ROUTER, cascade_entries, prepare
from routecast.bench.curves import (
    bootstrap,
    calibrated,
    curve_entry,
    split_summary,
    sweep,
    with_single_models,
)
from routecast.bench.curves import unreachable as unreachable_point
from routecast.bench.guaranteed import add_routerbench_aiq, router_point
from routecast.bench.schema import (
    QUALITY_FRACTION,
    BenchResult,
    Calibrated,
    Entry,
    ModelSummary,
    PairMetrics,
    Progress,
    SplitSummary,
    no_progress,
)
from routecast.data.dataset import Dataset
from routecast.errors import CalibrationError, ConfigError
from routecast.policy import Policy, choose
from routecast.routers import make_router, router_names
from routecast.routers.base import Router

DEFAULT_ROUTERS = ("random", "best-single", "cheapest", "knn", "linear")


def _pair_metrics(test: Dataset, pred_q: FloatArray, pred_c: FloatArray,
                  pair: tuple[str, str]) -> PairMetrics:
    """RouteLLM's APGR and CPT for a router restricted to a weak/strong pair of models."""
    weak, strong = (test.model_index(m) for m in pair)
    cols = np.array([weak, strong])
    q_weak, q_strong = (float(test.quality[:, j].mean()) for j in (weak, strong))
    sw = sweep(pred_q[:, cols], pred_c[:, cols], test.select_models(pair))
    share = (sw.picks == 1).mean(axis=1)
    quality = sw.quality
    return {
        "weak": pair[0], "strong": pair[1],
        "apgr": metrics.apgr(share, quality, q_weak, q_strong),
        "cpt_50": metrics.cpt(share, quality, q_weak, q_strong, 0.5),
        "cpt_80": metrics.cpt(share, quality, q_weak, q_strong, 0.8),
    }


def router_entry(name: str, train: Dataset, val: Dataset, test: Dataset,
                 summary: SplitSummary, *, n_boot: int, seed: int,
                 pair: tuple[str, str] | None = None, say: Progress = no_progress,
                 done: int = 0, confidence: float | None = None) -> tuple[Entry, Router]:
    """Fit router ``name`` on ``train`` (on ``test`` if it is evaluation-only), sweep it on
    ``test``, calibrate it on ``val`` (also with a guarantee at ``confidence``); returns its
    entry and the fitted router."""
    say(done, f"{name}: fit")
    router = make_router(name)
    t0 = time.perf_counter()
    router.fit(test if router.evaluation_only else train)
    fit_s = time.perf_counter() - t0
    say(done, f"{name}: predict")
    t0 = time.perf_counter()
    pred_q = router.predict(list(test.prompts))
    pred_c = router.predict_cost(list(test.prompts))
    route_s = time.perf_counter() - t0
    sw = sweep(pred_q, pred_c, test)
    t0 = time.perf_counter()
    choose(pred_q, pred_c, float(sw.weights[len(sw.weights) // 2]))
    route_s += time.perf_counter() - t0
    entry = curve_entry(name, "router", sw.cost_usd, sw.quality, summary,
                        evaluation_only=router.evaluation_only)
    entry["fit_s"] = fit_s
    entry["route_ms_per_prompt"] = 1e3 * route_s / max(1, test.n_prompts)
    if not router.evaluation_only:
        say(done, f"{name}: calibrate on validation")
        entry["calibrated_95"] = _calibrated(router, val, test, pred_q, pred_c,
                                             summary["best_single"], train.mean_quality())
        if confidence is not None:
            entry["calibrated_95_guaranteed"] = router_point(
                router, val, test, pred_q, pred_c, summary, confidence, seed,
                train.mean_quality())
    if n_boot > 0:
        say(done, f"{name}: bootstrap ({n_boot} resamples)")
        entry["ci"] = bootstrap(with_single_models(sw, test), test, n_boot, seed)
    if pair is not None:
        entry["pair"] = _pair_metrics(test, pred_q, pred_c, pair)
    return entry, router


def evaluate(dataset: Dataset, *, split: str = "test",
             routers: Sequence[str] = DEFAULT_ROUTERS, pair: tuple[str, str] | None = None,
             n_boot: int = 200, seed: int = 0,
             progress: Progress | None = None, cascades: bool = True,
             confidence: float | None = 0.9,
             signals: Sequence[str] | None = None) -> BenchResult:
    """Run the replay benchmark; returns the result (see module docstring).

    With ``cascades`` (the default), cascades and cascade routing join the routers wherever
    the data records what a deferral signal reads (see :mod:`routecast.bench.cascades`).
    With ``confidence``, every entry also gets its point calibrated with that guarantee
    (:mod:`routecast.bench.guaranteed`). ``signals`` limits the cascades' deferral signals
    (default: every one the data supports).
    """
    if split not in ("test", "validation"):
        raise ConfigError(f"evaluate on 'test' or 'validation', not {split!r}: routers are "
                          "fitted on train, so train figures would be flattering")
    unknown = [r for r in routers if r not in router_names()]
    if unknown:
        raise ConfigError(f"unknown routers {unknown}; known: {', '.join(router_names())}")
    say = progress or no_progress
    train, val, test = (dataset.subset(s) for s in ("train", "validation", split))
    if pair is None and dataset.n_models == 2:
        q = test.mean_quality()
        pair = (test.models[int(np.argmin(q))], test.models[int(np.argmax(q))])
    summary = split_summary(test)
    result: BenchResult = {
        "dataset": dataset.name, "split": split, "n_prompts": test.n_prompts,
        "n_train": train.n_prompts, "n_validation": val.n_prompts,
        "models": summary["models"], "best_single": summary["best_single"],
        "oracle": summary["oracle"], "cost_range": summary["cost_range"],
        "zero_router_aiq": summary["zero_router_aiq"],
        "seed": seed, "n_boot": n_boot, "confidence": confidence, "routers": [],
    }
    fitted: dict[str, Router] = {}  # cascade routing reuses these (bench/cascades.py)
    for done, name in enumerate(routers):
        entry, fitted[name] = router_entry(name, train, val, test, summary, n_boot=n_boot,
                                           seed=seed, pair=pair, say=say, done=done,
                                           confidence=confidence)
        result["routers"].append(entry)
    add_latency(result, test)
    if cascades:
        prepared = prepare(dataset, split, seed=seed, router=fitted.get(ROUTING_ROUTER),
                           signals=signals, progress=say, done=len(result["routers"]))
        result["routers"] += cascade_entries(dataset, split, summary, n_boot=n_boot,
                                             seed=seed, progress=say,
                                             done=len(result["routers"]), prepared=prepared,
                                             confidence=confidence)
    add_delta_ibc(result)
    add_routerbench_aiq(result)
    return result


def add_latency(result: BenchResult, test: Dataset) -> None:
    """Per-model latency p50/p95/p99 (seconds) on the evaluated split, where recorded, also
    on ``best_single``."""
    if test.latency_s is None:
        return
    for j, model in enumerate(result["models"]):
        lat = test.latency_s[:, j]
        p50, p95, p99 = (float(np.quantile(lat, q)) for q in (0.5, 0.95, 0.99))
        _set_latency(model, p50, p95, p99)
        if model["name"] == result["best_single"]["name"]:
            _set_latency(result["best_single"], p50, p95, p99)


def _set_latency(model: ModelSummary, p50: float, p95: float, p99: float) -> None:
    model["latency_p50_s"] = p50
    model["latency_p95_s"] = p95
    model["latency_p99_s"] = p99


def add_delta_ibc(result: BenchResult) -> None:
    """Set ``delta_ibc`` on every entry, and on its calibrated point, from that point:
    :func:`routecast.metrics.delta_ibc` with the cheapest model as SLM and the best single
    model as LLM."""
    cheapest = min(result["models"], key=lambda m: (m["cost_usd"], -m["quality"]))
    best = result["best_single"]
    slm = (cheapest["quality"], cheapest["cost_usd"])
    llm = (best["quality"], best["cost_usd"])
    for entry in result["routers"]:
        cal = entry["calibrated_95"]
        value = None
        if cal is not None and cal["quality"] is not None and cal["cost_usd"] is not None:
            value = metrics.delta_ibc(cal["quality"], cal["cost_usd"], slm, llm)
            cal["delta_ibc"] = value
        entry["delta_ibc"] = value


def _calibrated(router: Router, val: Dataset, test: Dataset, pred_q: FloatArray,
                pred_c: FloatArray, best: ModelSummary, train_quality: FloatArray) -> Calibrated:
    """The operating point for 95 % of the best single quality, solved on validation only
    (the router's weights and the single-model mixes, ordered by their train means)."""
    try:
        policy = Policy.for_quality(router, val, QUALITY_FRACTION,
                                    mean_quality=train_quality.tolist())
    except CalibrationError as e:
        return unreachable_point(str(e))
    rows = np.arange(test.n_prompts)
    pick = policy.choose(pred_q, pred_c, models=router.models_, prompts=list(test.prompts))
    cal = calibrated(float(test.quality[rows, pick].mean()),
                     float(test.cost_usd[rows, pick].mean()), best)
    cal["cost_weight"] = policy.cost_weight
    cal["fallback"] = policy.fallback
    return cal
