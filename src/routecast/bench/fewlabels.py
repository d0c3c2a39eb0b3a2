"""The few-labels benchmark: how well does a fitted router take a new model from n labels?

Protocol (``routecast bench DATA --few-labels MODEL --labels 25,50,100,200``), per router:

* **full**: the router fitted on the whole train split, ``MODEL`` included (the ceiling);
* **without**: fitted on the train split without ``MODEL``; it routes among the others only
  (the floor: what not adding the model costs);
* for each ``n`` in ``labels`` and each of ``repeats`` seeded draws of ``n`` train prompts:

  - **added**: a copy of *without*, given ``MODEL``'s outcomes on those ``n`` prompts through
    :meth:`Router.add_model` (nothing else refitted);
  - **scratch**: the router fitted from scratch on those ``n`` prompts only (every model's
    outcomes on them): what one can do without ``add_model``.

Every variant is scored on the evaluation split with all models (AIQ over the same cost range,
so the numbers compare) and at the operating point calibrated on the validation split for
95 % of the best single model's quality, as in the ordinary benchmark. Calibration, like the
ordinary benchmark's, uses the validation outcomes of every model, the new one included; AIQ
needs no calibration at all. ``new_model_log_loss`` is the cross-entropy of the predicted
quality of ``MODEL`` against its outcomes on the evaluation split (lower is better): it shows
how much the few labels taught about the new model itself. Across repeats, the mean and the
sample standard deviation are reported.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from routecast import metrics
from routecast.bench.schema import (
    QUALITY_FRACTION,
    FewLabelsEntry,
    FewLabelsResult,
    FewLabelsScore,
    Progress,
    no_progress,
)
from routecast.data.dataset import Dataset
from routecast.errors import CalibrationError, ConfigError
from routecast.policy import Policy, choose, weight_grid
from routecast.routers import make_router, router_names
from routecast.routers.base import Router

DEFAULT_LABELS = (25, 50, 100, 200)
DEFAULT_ROUTERS = ("knn", "linear", "mf")
METRICS = ("aiq", "calibrated_quality", "calibrated_cost_usd", "new_model_log_loss")


def _score(router: Router, val: Dataset, test: Dataset, model: str,
           cost_range: tuple[float, float]) -> FewLabelsScore:
    """AIQ on ``test``, the calibrated point, and the log loss on ``model`` (if routed)."""
    val = val.select_models(router.models_)
    test = test.select_models(router.models_)
    q, c = router.predict(list(test.prompts)), router.predict_cost(list(test.prompts))
    rows = np.arange(test.n_prompts)
    points = np.array([(test.cost_usd[rows, p].mean(), test.quality[rows, p].mean())
                       for p in (choose(q, c, float(w)) for w in weight_grid(c))])
    out: FewLabelsScore = {
        "aiq": metrics.aiq(points[:, 0], points[:, 1], *cost_range),
        "calibrated_quality": None, "calibrated_cost_usd": None, "new_model_log_loss": None}
    try:
        pick = Policy.for_quality(router, val, QUALITY_FRACTION).choose(
            q, c, models=router.models_, prompts=list(test.prompts))
        out["calibrated_quality"] = float(test.quality[rows, pick].mean())
        out["calibrated_cost_usd"] = float(test.cost_usd[rows, pick].mean())
    except CalibrationError:
        pass
    if model in router.models_:
        j = router.models_.index(model)
        p = np.clip(q[:, j], 1e-6, 1 - 1e-6)
        y = test.quality[:, j]
        out["new_model_log_loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return out


def _summary(draws: list[FewLabelsScore]) -> dict[str, Any]:
    out: dict[str, Any] = {"n_draws": len(draws)}
    for key in METRICS:
        values = [float(v) for d in draws if isinstance(v := d.get(key), float)]
        out[key] = float(np.mean(values)) if values else None
        out[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        if len(values) < len(draws):
            out[f"{key}_missing"] = len(draws) - len(values)
    return out


def few_labels(dataset: Dataset, model: str, *, routers: Sequence[str] = DEFAULT_ROUTERS,
               labels: Sequence[int] = DEFAULT_LABELS, repeats: int = 5, seed: int = 0,
               split: str = "test", prior_strength: float = 20.0,
               progress: Progress | None = None) -> FewLabelsResult:
    """Run the protocol of the module docstring; returns a JSON-able dict."""
    dataset.model_index(model)  # raises, listing the models, if unknown
    if dataset.n_models < 2:
        raise ConfigError("the few-labels benchmark needs at least one model besides the new one")
    if split not in ("test", "validation"):
        raise ConfigError(f"evaluate on 'test' or 'validation', not {split!r}")
    unknown = [r for r in routers if r not in router_names(include_evaluation_only=False)]
    if unknown:
        raise ConfigError(f"unknown or evaluation-only routers {unknown}; use some of "
                          f"{', '.join(router_names(include_evaluation_only=False))}")
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    train, val, test = (dataset.subset(s) for s in ("train", "validation", split))
    sizes = sorted({int(n) for n in labels})
    if not sizes or sizes[0] < 1 or sizes[-1] > train.n_prompts:
        raise ConfigError(f"label counts must lie in 1..{train.n_prompts} (the train split), "
                          f"got {list(labels)}")
    others = [m for m in dataset.models if m != model]
    costs = test.mean_cost_usd()
    cost_range = (float(costs.min()), float(costs.max()))
    if not cost_range[1] > cost_range[0]:
        raise ConfigError("all models cost the same on the evaluation split: AIQ is undefined")
    say = progress or no_progress
    result: FewLabelsResult = {
        "dataset": dataset.name, "split": split, "model": model, "labels": sizes,
        "repeats": repeats, "seed": seed, "prior_strength": prior_strength,
        "n_train": train.n_prompts, "n_prompts": test.n_prompts,
        "zero_router_aiq": metrics.aiq(costs, test.mean_quality(), *cost_range),
        "routers": [],
    }
    for done, name in enumerate(routers):
        say(done, f"{name}: full and without {model}")
        full = make_router(name).fit(train)
        without = make_router(name).fit(train.select_models(others))
        entry: FewLabelsEntry = {
            "name": name,
            "full": _score(full, val, test, model, cost_range),
            "without": _score(without, val, test, model, cost_range),
            "curve": [],
        }
        for n in sizes:
            say(done, f"{name}: {n} labels x {repeats}")
            added, scratch = [], []
            for r in range(repeats):
                rng = np.random.default_rng([seed, n, r])
                labelled = train.take(np.sort(rng.choice(train.n_prompts, n, replace=False)))
                grown = copy.deepcopy(without).add_model(model, labelled,
                                                         prior_strength=prior_strength)
                added.append(_score(grown, val, test, model, cost_range))
                scratch.append(_score(make_router(name).fit(labelled), val, test, model,
                                      cost_range))
            entry["curve"].append({"n": n, "added": _summary(added),
                                   "scratch": _summary(scratch)})
        result["routers"].append(entry)
    return result


def print_table(result: FewLabelsResult) -> None:
    """The curve as a terminal table: mean ± sd over repeats of AIQ, the calibrated point
    (quality / mean cost in thousandths of a dollar) and the new model's log loss."""
    from rich.console import Console
    from rich.table import Table

    def cell(s: Mapping[str, Any], key: str) -> str:
        v, sd = s.get(key), s.get(f"{key}_sd")
        if v is None:
            return "-"
        return f"{v:.3f}" + ("" if sd is None else f" ± {sd:.3f}")

    def point(s: Mapping[str, Any]) -> str:
        q, c = s.get("calibrated_quality"), s.get("calibrated_cost_usd")
        return "-" if q is None or c is None else f"{cell(s, 'calibrated_quality')} / {c * 1e3:.2f}"

    table = Table(title=f"{result['dataset']}: adding {result['model']} from n labelled train "
                        f"prompts ({result['repeats']} draws each; {result['split']} split of "
                        f"{result['n_prompts']}; zero-router AIQ "
                        f"{result['zero_router_aiq']:.4f})", title_justify="left")
    for col in ("router", "n", "AIQ added", "AIQ scratch", "cal. q / m$ added",
                "cal. q / m$ scratch", "log loss added", "log loss scratch"):
        table.add_column(col, justify="left" if col == "router" else "right")
    for r in result["routers"]:
        for label, score in (("without", r["without"]), ("full", r["full"])):
            table.add_row(r["name"], label, cell(score, "aiq"), "", point(score), "",
                          cell(score, "new_model_log_loss"), "", style="dim")
        for step in r["curve"]:
            a, s = step["added"], step["scratch"]
            table.add_row(r["name"], str(step["n"]), cell(a, "aiq"), cell(s, "aiq"),
                          point(a), point(s), cell(a, "new_model_log_loss"),
                          cell(s, "new_model_log_loss"))
    Console(width=160).print(table)
