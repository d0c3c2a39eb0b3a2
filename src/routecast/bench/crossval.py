"""Generalisation checks: train on one data set and test on another; k-fold cross-validation.

A router that only shines on the split it was tuned next to has learned the data set, not the
task. Two checks, both built on :func:`routecast.bench.evaluate.evaluate`, so every figure
means exactly what it means in the ordinary benchmark:

* :func:`cross_dataset` (``routecast bench --train A --test B``): fit on A's train split,
  calibrate on A's validation split, evaluate on **all** of B. All of B, not B's test split:
  nothing of B is used to fit or calibrate, so every prompt of B is unseen, and using all of
  them narrows the intervals; B's own split only matters to someone fitting on B. The models
  must be the same (B's columns are put in A's order). Prompts that appear in both A's
  train/validation and B are counted (``shared_prompts``) because they flatter the router.
* :func:`k_fold` (``routecast bench DATA --folds K``): the data set's own split is ignored and
  all prompts are pooled, then cut at random (seeded) into K folds of near-equal size. Fold
  ``i`` tests on part ``i``; of the other parts, a seeded 20 % validates (calibration) and the
  rest trains. Per fold and router (and cascade, where ``evaluate`` adds them) it reports
  AIQ, the gain over the zero router, savings at 95 % / 100 % of the best single model's
  quality, the calibrated 95 % operating point and the oracle gap; across folds, the mean,
  the sample standard deviation and a Student-t 95 % interval
  ``mean ± t(0.975, K-1) · sd / sqrt(K)``.

  Caveat: the K folds share training prompts, so they are not independent, and the t-interval
  (which assumes they are) is known to be too narrow (Bengio & Grandvalet, 2004). Read it as a
  lower bound on the uncertainty; the per-fold spread is the honest picture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from routecast.bench.evaluate import DEFAULT_ROUTERS, evaluate
from routecast.bench.schema import (
    BenchResult,
    Entry,
    Fold,
    FoldEntry,
    FoldsSection,
    Progress,
    TStat,
    no_progress,
)
from routecast.data.dataset import OPTIONAL_ARRAYS, Dataset
from routecast.data.splits import carve_validation
from routecast.errors import ConfigError

#: Share of the non-test prompts of a fold held out for calibration.
VALIDATION_FRACTION = 0.2
LEVEL = 0.95
#: Per-router figures summarised across folds (``calibrated_95.*`` are nested keys).
FOLD_METRICS = ("aiq", "aiq_minus_zero", "max_quality", "savings_at_95", "savings_at_100",
                "oracle_gap", "calibrated_95.quality_vs_best", "calibrated_95.cost_vs_best")


# -- train on one data set, test on another -----------------------------------------------------


def cross_dataset(train_data: Dataset, test_data: Dataset, *,
                  routers: Sequence[str] = DEFAULT_ROUTERS, pair: tuple[str, str] | None = None,
                  n_boot: int = 200, seed: int = 0, progress: Progress | None = None,
                  cascades: bool = True, confidence: float | None = 0.9) -> BenchResult:
    """Fit and calibrate on ``train_data``, evaluate on all of ``test_data``.

    Returns the ordinary benchmark dict (README, "Benchmark JSON") with ``dataset`` named
    ``"A -> B"`` and a ``cross`` section: both data sets, the prompt counts used from each,
    and ``shared_prompts``.
    """
    if set(train_data.models) != set(test_data.models):
        raise ConfigError(
            f"--train and --test must have the same models; only in {train_data.name}: "
            f"{sorted(set(train_data.models) - set(test_data.models))}, only in "
            f"{test_data.name}: {sorted(set(test_data.models) - set(train_data.models))}")
    fit_part = train_data.take(np.isin(train_data.split, ["train", "validation"]))
    test = test_data.select_models(train_data.models).with_splits(
        np.full(test_data.n_prompts, "test"))
    combined = stack(fit_part, test, name=f"{train_data.name} -> {test_data.name}")
    result = evaluate(combined, split="test", routers=routers, pair=pair, n_boot=n_boot,
                      seed=seed, progress=progress, cascades=cascades, confidence=confidence)
    seen = set(fit_part.prompts)
    result["cross"] = {
        "train": {"dataset": train_data.name, "n_train": result["n_train"],
                  "n_validation": result["n_validation"]},
        "test": {"dataset": test_data.name, "split": "all", "n_prompts": test.n_prompts},
        "shared_prompts": sum(p in seen for p in test.prompts),
    }
    return result


def stack(first: Dataset, second: Dataset, *, name: str) -> Dataset:
    """The rows of ``first`` then ``second`` (same models, same order) as one data set.

    Ids get an ``a:`` / ``b:`` prefix, since two sources may reuse ids. Optional outcome
    arrays and task labels are kept only where both have them.
    """
    if first.models != second.models:
        raise ConfigError(f"cannot stack data sets with models {first.models} and "
                          f"{second.models}; select the same models in the same order first")

    def both(a: Any, b: Any) -> Any:
        return None if a is None or b is None else np.concatenate([a, b])

    optional = {key: both(getattr(first, key), getattr(second, key))
                for key in (*OPTIONAL_ARRAYS, "responses")}
    task = None if first.task is None or second.task is None else first.task + second.task
    return Dataset(
        name=name, models=first.models,
        ids=tuple(f"a:{i}" for i in first.ids) + tuple(f"b:{i}" for i in second.ids),
        prompts=first.prompts + second.prompts,
        quality=np.concatenate([first.quality, second.quality]),
        cost_usd=np.concatenate([first.cost_usd, second.cost_usd]),
        split=np.concatenate([first.split, second.split]), task=task,
        meta={"stacked": [first.name, second.name]}, **optional,
    )


# -- k-fold cross-validation -------------------------------------------------------------------


def fold_splits(n: int, k: int, seed: int = 0) -> list[npt.NDArray[np.str_]]:
    """For each of ``k`` folds, a split array over ``n`` pooled prompts: that fold's part is
    ``test``; of the rest, :data:`VALIDATION_FRACTION` (seeded) is ``validation``, the others
    ``train``. Every prompt is in exactly one test part."""
    if k < 2:
        raise ConfigError(f"--folds needs at least 2 folds, got {k}")
    if n < 5 * k:
        raise ConfigError(f"{n} prompts are too few for {k} folds (each fold needs prompts to "
                          "train, validate and test on); use fewer folds")
    parts = np.array_split(np.random.default_rng(seed).permutation(n), k)
    out = []
    for i, part in enumerate(parts):
        split = np.full(n, "train", dtype="<U10")
        split[part] = "test"
        out.append(carve_validation(split, seed=seed + 1 + i, fraction=VALIDATION_FRACTION))
    return out


def k_fold(dataset: Dataset, k: int, *, routers: Sequence[str] = DEFAULT_ROUTERS,
           pair: tuple[str, str] | None = None, seed: int = 0,
           progress: Progress | None = None, cascades: bool = True) -> FoldsSection:
    """K-fold cross-validation over all prompts; returns the ``folds`` JSON section.

    ``cascades`` is passed to :func:`evaluate`: where it adds cascades, they are summarised
    across folds like the routers.
    """
    per_fold: list[Fold] = []
    say = progress or no_progress
    for i, split in enumerate(fold_splits(dataset.n_prompts, k, seed)):
        def step(done: int, msg: str, i: int = i) -> None:
            say(i * len(routers) + done, f"fold {i + 1}/{k}: {msg}")

        res = evaluate(dataset.with_splits(split), split="test", routers=routers, pair=pair,
                       n_boot=0, seed=seed, progress=step, cascades=cascades)
        per_fold.append({
            "fold": i, "n_train": res["n_train"], "n_validation": res["n_validation"],
            "n_test": res["n_prompts"], "best_single": res["best_single"],
            "zero_router_aiq": res["zero_router_aiq"],
            # Every entry evaluate() reports: the routers, and cascades where it adds them.
            "routers": [fold_entry(r) for r in res["routers"]],
        })
    names = list(dict.fromkeys(r["name"] for fold in per_fold for r in fold["routers"]))
    return {
        "k": k, "seed": seed, "n_prompts": dataset.n_prompts,
        "validation_fraction": VALIDATION_FRACTION, "level": LEVEL,
        "interval": "student-t over folds (folds share training data: too narrow, see docs)",
        "per_fold": per_fold,
        "summary": [summarise(name, per_fold) for name in names],
    }


def fold_entry(r: Entry) -> FoldEntry:
    """The per-fold figures of one entry."""
    return {"name": r["name"], "kind": r["kind"], "aiq": r["aiq"],
            "aiq_minus_zero": r["aiq_minus_zero"], "max_quality": r["max_quality"],
            "savings_at_95": r["savings_at_95"], "savings_at_100": r["savings_at_100"],
            "oracle_gap": r["oracle_gap"], "calibrated_95": r["calibrated_95"]}


def _metric(entry: Mapping[str, Any], key: str) -> float | None:
    value: Any = entry
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def summarise(name: str, per_fold: list[Fold]) -> dict[str, Any]:
    """Mean, sample sd and t-interval of each of :data:`FOLD_METRICS` for router ``name``."""
    out: dict[str, Any] = {"name": name}
    for key in FOLD_METRICS:
        values = [v for fold in per_fold for r in fold["routers"] if r["name"] == name
                  if (v := _metric(r, key)) is not None]
        out[key] = t_interval(values, LEVEL)
    return out


def t_interval(values: Sequence[float], level: float = LEVEL) -> TStat:
    """``{"mean", "sd", "ci": [lo, hi] | None, "n"}``: Student-t interval over ``values``.

    ``n`` counts the folds where the figure exists (savings do not when a router never reaches
    the target); with fewer than two there is no interval.
    """
    n = len(values)
    if n == 0:
        return {"mean": None, "sd": None, "ci": None, "n": 0}
    mean = float(np.mean(values))
    if n < 2:
        return {"mean": mean, "sd": None, "ci": None, "n": n}
    from scipy import stats

    sd = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci": [mean - half, mean + half], "n": n}


# -- terminal views ----------------------------------------------------------------------------


def print_cross(result: BenchResult, console: Any = None) -> None:
    """One line on what was fitted on what, after the ordinary table."""
    from rich.console import Console

    console = console or Console(width=None if Console().is_terminal else 160)
    if "cross" not in result:
        return
    cross = result["cross"]
    line = (f"fitted on {cross['train']['dataset']} ({cross['train']['n_train']} train, "
            f"{cross['train']['n_validation']} validation prompts), evaluated on all "
            f"{cross['test']['n_prompts']} prompts of {cross['test']['dataset']}")
    if cross["shared_prompts"]:
        line += (f"; warning: {cross['shared_prompts']} test prompts also appear in the "
                 "training data, which flatters the routers")
    console.print(line, highlight=False)


def _fmt(stat: dict[str, Any], pct: bool = False, signed: bool = False) -> str:
    """``mean ± half-width`` (the t-interval is symmetric), ``-`` when undefined."""
    if stat["mean"] is None:
        return "-"

    def num(x: float) -> str:
        x = x if abs(x) >= 5e-5 else 0.0  # round-off around zero would print as "-0.000"
        return (f"{x:+.1%}" if signed else f"{x:.1%}") if pct else \
            (f"{x:+.3f}" if signed else f"{x:.3f}")

    text = num(stat["mean"])
    if stat["ci"] is not None:
        half = (stat["ci"][1] - stat["ci"][0]) / 2
        text += f" ± {num(half).lstrip('+')}"
    return text


def print_folds(folds: FoldsSection, console: Any = None) -> None:
    """Per-fold AIQ per router, then each figure's mean and t-interval across folds."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if Console().is_terminal else 160)
    k = folds["k"]
    names = [s["name"] for s in folds["summary"]]
    per = Table(title=f"{k}-fold cross-validation over {folds['n_prompts']} pooled prompts: "
                      "AIQ per fold", title_justify="left")
    for col in ("fold", "n test", *names):
        per.add_column(col, justify="right")
    for fold in folds["per_fold"]:
        aiq = {r["name"]: r["aiq"] for r in fold["routers"]}
        per.add_row(str(fold["fold"] + 1), str(fold["n_test"]),
                    *[f"{aiq[n]:.3f}" if aiq.get(n) is not None else "-" for n in names])
    console.print(per)
    summary = Table(title=f"mean ± half-width of the {folds['level']:.0%} t-interval over {k} "
                          "folds",
                    title_justify="left")
    for col in ("router", "AIQ", "vs zero", "savings@95", "savings@100 (n folds)",
                "cal. 95%: q / cost vs best", "oracle gap"):
        summary.add_column(col)
    for s in folds["summary"]:
        q, c = s["calibrated_95.quality_vs_best"], s["calibrated_95.cost_vs_best"]
        cal = "-" if q["mean"] is None else f"{q['mean']:.1%} / {c['mean']:.1%}"
        summary.add_row(s["name"], _fmt(s["aiq"]), _fmt(s["aiq_minus_zero"], signed=True),
                        _fmt(s["savings_at_95"], pct=True),
                        f"{_fmt(s['savings_at_100'], pct=True)} ({s['savings_at_100']['n']})",
                        cal, _fmt(s["oracle_gap"]))
    console.print(summary)
    console.print(f"[dim]- {folds['interval']}[/dim]", highlight=False)
