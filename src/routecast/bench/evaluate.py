"""Replay recorded outcomes: fit routers on train, calibrate on validation, evaluate on a split.

Everything here is offline and deterministic for a given dataset, split and seed. The result is
a plain dict following the JSON contract in the README ("Benchmark JSON"), so the table, the
plot and the Markdown report are all drawn from the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from routecast import metrics
from routecast.data.dataset import Dataset, FloatArray, IntArray
from routecast.errors import CalibrationError, ConfigError
from routecast.policy import Policy, choose, weight_grid
from routecast.routers import make_router, router_names
from routecast.routers.base import Router

DEFAULT_ROUTERS = ("random", "best-single", "cheapest", "knn", "linear")
QUALITY_FRACTION = 0.95

#: Called as each step starts with the number of routers already done and a description;
#: lets the CLI draw a progress bar.
Progress = Callable[[int, str], None]


@dataclass
class _Sweep:
    """The test-split choices of one router at every cost weight of the grid."""

    weights: FloatArray
    chosen_q: FloatArray  # (n_weights, n_prompts)
    chosen_c: FloatArray
    picks: IntArray  # (n_weights, n_prompts) column index per prompt


def _sweep(pred_q: FloatArray, pred_c: FloatArray, data: Dataset) -> _Sweep:
    weights = weight_grid(pred_c)
    picks = np.stack([choose(pred_q, pred_c, float(w)) for w in weights])
    rows = np.arange(data.n_prompts)[None, :]
    return _Sweep(weights, data.quality[rows, picks], data.cost_usd[rows, picks], picks)


def _best_single(q: FloatArray, c: FloatArray) -> int:
    """Index of the best single model: highest mean quality, ties to the cheaper."""
    return int(np.lexsort((c, -q))[0])


def _summary(data: Dataset) -> dict[str, Any]:
    q, c = data.mean_quality(), data.mean_cost_usd()
    b = _best_single(q, c)
    pick = metrics.oracle_choice(data.quality, data.cost_usd)
    rows = np.arange(data.n_prompts)
    return {
        "models": [{"name": m, "quality": float(q[j]), "cost_usd": float(c[j])}
                   for j, m in enumerate(data.models)],
        "best_single": {"name": data.models[b], "quality": float(q[b]), "cost_usd": float(c[b])},
        "oracle": {"quality": float(data.quality[rows, pick].mean()),
                   "cost_usd": float(data.cost_usd[rows, pick].mean())},
        "cost_range": [float(c.min()), float(c.max())],
        "zero_router_aiq": metrics.aiq(c, q, float(c.min()), float(c.max())),
    }


def _resample_stats(sw: _Sweep, data: Dataset, rows: IntArray) -> dict[str, float | None]:
    """AIQ and savings of one router on one bootstrap resample of the evaluation prompts."""
    q_models = data.quality[rows].mean(axis=0)
    c_models = data.cost_usd[rows].mean(axis=0)
    b = _best_single(q_models, c_models)
    cq = sw.chosen_q[:, rows].mean(axis=1)
    cc = sw.chosen_c[:, rows].mean(axis=1)
    lo, hi = float(c_models.min()), float(c_models.max())
    out: dict[str, float | None] = {
        "aiq": metrics.aiq(cc, cq, lo, hi) if hi > lo else None,
        "zero_aiq": metrics.aiq(c_models, q_models, lo, hi) if hi > lo else None,
    }
    for frac, key in ((0.95, "savings_at_95"), (1.0, "savings_at_100")):
        out[key] = metrics.savings_at(cc, cq, frac, float(q_models[b]), float(c_models[b]))
    return out


def _bootstrap(sw: _Sweep, data: Dataset, n_boot: int, seed: int) -> dict[str, list[float] | None]:
    rng = np.random.default_rng(seed)
    draws = [_resample_stats(sw, data, rng.integers(0, data.n_prompts, data.n_prompts))
             for _ in range(n_boot)]
    for d in draws:
        a, z = d["aiq"], d["zero_aiq"]
        d["aiq_minus_zero"] = None if a is None or z is None else a - z
    return {key: metrics.percentile_interval([v for d in draws if (v := d[key]) is not None],
                                             n_draws=n_boot)
            for key in ("aiq", "aiq_minus_zero", "savings_at_95", "savings_at_100")}


def _pair_metrics(test: Dataset, pred_q: FloatArray, pred_c: FloatArray,
                  pair: tuple[str, str]) -> dict[str, Any]:
    """RouteLLM's APGR and CPT for a router restricted to a weak/strong pair of models."""
    weak, strong = (test.model_index(m) for m in pair)
    cols = np.array([weak, strong])
    q_weak, q_strong = (float(test.quality[:, j].mean()) for j in (weak, strong))
    sw = _sweep(pred_q[:, cols], pred_c[:, cols], test.select_models(pair))
    share = (sw.picks == 1).mean(axis=1)
    quality = sw.chosen_q.mean(axis=1)
    return {
        "weak": pair[0], "strong": pair[1],
        "apgr": metrics.apgr(share, quality, q_weak, q_strong),
        "cpt_50": metrics.cpt(share, quality, q_weak, q_strong, 0.5),
        "cpt_80": metrics.cpt(share, quality, q_weak, q_strong, 0.8),
    }


def evaluate(dataset: Dataset, *, split: str = "test",
             routers: Sequence[str] = DEFAULT_ROUTERS, pair: tuple[str, str] | None = None,
             n_boot: int = 200, seed: int = 0,
             progress: Progress | None = None, cascades: bool = True) -> dict[str, Any]:
    """Run the replay benchmark; returns the JSON-contract dict (see module docstring).

    With ``cascades`` (the default), cascades and cascade routing join the routers wherever
    the data records what a deferral signal reads (see :mod:`routecast.bench.cascades`).
    """
    if split not in ("test", "validation"):
        raise ConfigError(f"evaluate on 'test' or 'validation', not {split!r}: routers are "
                          "fitted on train, so train figures would be flattering")
    unknown = [r for r in routers if r not in router_names()]
    if unknown:
        raise ConfigError(f"unknown routers {unknown}; known: {', '.join(router_names())}")
    say = progress or (lambda _done, _msg: None)
    train, val, test = (dataset.subset(s) for s in ("train", "validation", split))
    if pair is None and dataset.n_models == 2:
        q = test.mean_quality()
        pair = (test.models[int(np.argmin(q))], test.models[int(np.argmax(q))])
    summary = _summary(test)
    best = summary["best_single"]
    lo, hi = summary["cost_range"]
    result: dict[str, Any] = {
        "dataset": dataset.name, "split": split, "n_prompts": test.n_prompts,
        "n_train": train.n_prompts, "n_validation": val.n_prompts, **summary,
        "seed": seed, "n_boot": n_boot, "routers": [],
    }
    fitted: dict[str, Router] = {}  # cascade routing reuses these (bench/cascades.py)
    for done, name in enumerate(routers):
        say(done, f"{name}: fit")
        router = make_router(name)
        t0 = time.perf_counter()
        router.fit(test if router.evaluation_only else train)
        fit_s = time.perf_counter() - t0
        fitted[name] = router
        say(done, f"{name}: predict")
        t0 = time.perf_counter()
        pred_q = router.predict(list(test.prompts))
        pred_c = router.predict_cost(list(test.prompts))
        route_s = time.perf_counter() - t0
        sw = _sweep(pred_q, pred_c, test)
        t0 = time.perf_counter()
        choose(pred_q, pred_c, float(sw.weights[len(sw.weights) // 2]))
        route_s += time.perf_counter() - t0
        cq, cc = sw.chosen_q.mean(axis=1), sw.chosen_c.mean(axis=1)
        entry: dict[str, Any] = {
            "name": name, "kind": "router", "evaluation_only": router.evaluation_only,
            "aiq": metrics.aiq(cc, cq, lo, hi),
            "max_quality": float(cq.max()),
            "savings_at_95": metrics.savings_at(cc, cq, 0.95, best["quality"], best["cost_usd"]),
            "savings_at_100": metrics.savings_at(cc, cq, 1.0, best["quality"], best["cost_usd"]),
            "oracle_gap": metrics.oracle_gap(cc, cq, summary["oracle"]["quality"],
                                             summary["oracle"]["cost_usd"]),
            "fit_s": fit_s, "route_ms_per_prompt": 1e3 * route_s / max(1, test.n_prompts),
            "curve": [[float(c), float(q)] for c, q in zip(cc, cq, strict=True)],
            "calibrated_95": None,
        }
        entry["aiq_minus_zero"] = entry["aiq"] - summary["zero_router_aiq"]
        if not router.evaluation_only:
            say(done, f"{name}: calibrate on validation")
            entry["calibrated_95"] = _calibrated(router, val, test, pred_q, pred_c, best)
        if n_boot > 0:
            say(done, f"{name}: bootstrap ({n_boot} resamples)")
            entry["ci"] = _bootstrap(sw, test, n_boot, seed)
        if pair is not None:
            entry["pair"] = _pair_metrics(test, pred_q, pred_c, pair)
        result["routers"].append(entry)
    from routecast.bench.cascades import add_cascades  # it imports this module

    add_cascades(result, dataset, split, cascades=cascades, n_boot=n_boot, seed=seed,
                 progress=say, fitted=fitted)
    return result


def _calibrated(router: Router, val: Dataset, test: Dataset, pred_q: FloatArray,
                pred_c: FloatArray, best: dict[str, Any]) -> dict[str, Any] | None:
    """The operating point for 95 % of the best single quality, solved on validation only."""
    try:
        policy = Policy.for_quality(router, val, QUALITY_FRACTION)
    except CalibrationError as e:
        return {"error": str(e), "quality": None, "cost_usd": None}
    pick = policy.choose(pred_q, pred_c)
    rows = np.arange(test.n_prompts)
    q = float(test.quality[rows, pick].mean())
    c = float(test.cost_usd[rows, pick].mean())
    return {"quality": q, "cost_usd": c, "cost_weight": policy.cost_weight,
            "quality_vs_best": q / best["quality"], "cost_vs_best": c / best["cost_usd"]}
