"""Evaluation that exposes shift: leave one task out, and repeated random splits.

In-split figures flatter: a cascade tuned and tested on one split of one mix of tasks looks
better than it will on tomorrow's traffic. Two protocols, both built on
:func:`routecast.bench.evaluate.evaluate` so every figure means what it means there:

* **leave one task out** (``routecast bench DATA --folds task``): for each task (the data's
  ``task`` labels, grouped by their part before a ``/``, so ``mmlu/anatomy`` is ``mmlu``),
  that task's prompts are the test split; of the other tasks' prompts a seeded 20 % validates
  (calibration) and the rest trains. The routers, signals and cascades never see the held-out
  task, and the quality target is the best single model's quality *on that task*;
* **repeated random splits** (``--repeats R``): R seeded 60/20/20 train/validation/test
  splits of all prompts.

Per fold and entry it keeps AIQ (both conventions), the gain over the zero router, savings,
and the calibrated 95 % points with and without the guarantee, with whether each met its
target on the held-out prompts. Across folds every figure is summarised by its median, its 5th
and 95th percentiles and its min and max (the spread, not a standard error: folds share
training prompts), and each calibrated point by the share of folds where it met the target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from routecast.bench.evaluate import DEFAULT_ROUTERS, evaluate
from routecast.bench.schema import (
    QUALITY_FRACTION,
    BenchResult,
    Entry,
    EntrySpread,
    FoldFigures,
    OutOfSample,
    OutOfSampleFold,
    Progress,
    Spread,
    no_progress,
)
from routecast.data.dataset import Dataset
from routecast.data.splits import carve_validation, random_split
from routecast.errors import ConfigError

VALIDATION_FRACTION = 0.2
#: Figures summarised across folds (dots reach into nested dicts).
METRICS = ("aiq", "aiq_minus_zero", "aiq_own_minus_zero", "aiq_routerbench",
           "aiq_routerbench_minus_zero", "savings_at_95", "savings_at_100",
           "calibrated_95.quality_vs_best", "calibrated_95.cost_vs_best",
           "calibrated_95_guaranteed.quality_vs_best", "calibrated_95_guaranteed.cost_vs_best")


def task_groups(dataset: Dataset) -> npt.NDArray[np.str_]:
    """Each prompt's task, grouped by the part before a ``/``."""
    if dataset.task is None:
        raise ConfigError(f"{dataset.name!r} has no task labels, so no task can be held out; "
                          "use --repeats R (random splits) or --folds K instead")
    return np.array([str(t).split("/")[0] for t in dataset.task])


def task_splits(dataset: Dataset, seed: int = 0) -> list[tuple[str, npt.NDArray[np.str_]]]:
    """``(task, split array)`` per task: that task is the test split (module doc)."""
    groups = task_groups(dataset)
    tasks = sorted(set(groups.tolist()))
    if len(tasks) < 2:
        raise ConfigError(f"{dataset.name!r} has one task ({tasks[0]}); leaving it out leaves "
                          "nothing to train on")
    out = []
    for i, task in enumerate(tasks):
        split = np.where(groups == task, "test", "train").astype("<U10")
        out.append((task, carve_validation(split, seed=seed + 1 + i,
                                           fraction=VALIDATION_FRACTION)))
    return out


def repeated_splits(dataset: Dataset, repeats: int, seed: int = 0
                    ) -> list[tuple[str, npt.NDArray[np.str_]]]:
    """``repeats`` seeded 60/20/20 splits of all prompts."""
    if repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats}")
    return [(f"split {r + 1}", random_split(dataset.n_prompts, seed=seed + 1000 + r))
            for r in range(repeats)]


def _get(entry: Mapping[str, Any], key: str) -> float | None:
    value: Any = entry
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def fold_figures(entry: Entry, result: BenchResult) -> FoldFigures:
    """The figures of :data:`METRICS` for one entry of one fold's result."""
    derived = dict(entry)
    derived["aiq_own_minus_zero"] = entry.get("aiq_own", entry["aiq"]) - result[
        "zero_router_aiq"]
    if "aiq_routerbench" in entry and "zero_router_aiq_routerbench" in result:
        derived["aiq_routerbench_minus_zero"] = (entry["aiq_routerbench"]
                                                 - result["zero_router_aiq_routerbench"])
    figures = {key: _get(derived, key) for key in METRICS}
    q = figures["calibrated_95.quality_vs_best"]
    g = entry.get("calibrated_95_guaranteed")
    cal = entry["calibrated_95"]
    return {"name": entry["name"], "kind": entry["kind"], "figures": figures,
            "met_95": None if q is None else q >= QUALITY_FRACTION - 1e-12,
            "met_95_guaranteed": None if not g or g["quality"] is None
            else bool(g.get("met_target")),
            "fallback": (g.get("fallback") if g else None)
            or (cal.get("fallback") if cal else None)}


def spread(values: Sequence[float]) -> Spread:
    """Median, 5-95 % percentiles, min and max of ``values``."""
    if not values:
        return {"median": None, "p5": None, "p95": None, "min": None, "max": None, "n": 0}
    v = np.asarray(values, dtype=np.float64)
    p5, med, p95 = (float(x) for x in np.quantile(v, [0.05, 0.5, 0.95]))
    return {"median": med, "p5": p5, "p95": p95, "min": float(v.min()), "max": float(v.max()),
            "n": len(v)}


def _share(flags: Sequence[bool | None]) -> tuple[float | None, int]:
    known = [f for f in flags if f is not None]
    return (float(np.mean(known)) if known else None), len(known)


def summarise(folds: Sequence[OutOfSampleFold]) -> list[EntrySpread]:
    """Per entry name: :class:`EntrySpread` over ``folds``."""
    names = list(dict.fromkeys(e["name"] for f in folds for e in f["entries"]))
    out: list[EntrySpread] = []
    for name in names:
        rows = [e for f in folds for e in f["entries"] if e["name"] == name]
        met, n_met = _share([r["met_95"] for r in rows])
        met_g, n_met_g = _share([r["met_95_guaranteed"] for r in rows])
        out.append({
            "name": name, "kind": rows[0]["kind"],
            "spread": {k: spread([v for r in rows if (v := r["figures"][k]) is not None])
                       for k in METRICS},
            "met_95_share": met, "met_95_guaranteed_share": met_g,
            "n_points": n_met, "n_points_guaranteed": n_met_g,
            "fallbacks": sum(r["fallback"] is not None for r in rows),
        })
    return out


def out_of_sample(dataset: Dataset, protocol: str, *, repeats: int = 0,
                  routers: Sequence[str] = DEFAULT_ROUTERS, seed: int = 0,
                  confidence: float | None = 0.9, cascades: bool = True,
                  signals: Sequence[str] | None = None, time_limit_s: float | None = None,
                  progress: Progress | None = None) -> OutOfSample:
    """Run ``protocol`` ("task" or "repeats") and summarise it (module doc).

    ``signals`` limits the cascades' signals; past ``time_limit_s`` seconds no further fold
    starts, and ``skipped`` says how many were left out."""
    import time

    t0 = time.monotonic()
    say = progress or no_progress
    if protocol == "task":
        splits, name = task_splits(dataset, seed), "leave-one-task-out"
    elif protocol == "repeats":
        splits, name = repeated_splits(dataset, repeats, seed), "repeated-splits"
    else:
        raise ConfigError(f"unknown protocol {protocol!r}: use 'task' or 'repeats'")
    folds: list[OutOfSampleFold] = []
    skipped: list[str] = []
    for i, (label, split) in enumerate(splits):
        if time_limit_s is not None and time.monotonic() - t0 > time_limit_s:
            skipped.append(f"{len(splits) - i} folds from {label} on: past the time limit "
                           f"of {time_limit_s:.0f} s")
            break

        def step(done: int, msg: str, i: int = i, label: str = label) -> None:
            say(i, f"{label} ({i + 1}/{len(splits)}): {msg}")

        data = dataset.with_splits(split)
        costs = data.subset("test").mean_cost_usd()
        if not costs.max() > costs.min():
            skipped.append(f"{label}: every model costs the same there (AIQ undefined)")
            continue
        res = evaluate(data, split="test", routers=routers, n_boot=0, seed=seed,
                       progress=step, cascades=cascades, confidence=confidence,
                       signals=signals)
        folds.append({"fold": label, "n_train": res["n_train"],
                      "n_validation": res["n_validation"], "n_test": res["n_prompts"],
                      "best_single": res["best_single"]["name"],
                      "entries": [fold_figures(e, res) for e in res["routers"]
                                  if not e["evaluation_only"]]})
    say(len(splits), "done")
    out: OutOfSample = {"protocol": name, "dataset": dataset.name, "seed": seed,
                        "confidence": confidence, "fraction": QUALITY_FRACTION,
                        "folds": folds, "summary": summarise(folds)}
    if skipped:
        out["skipped"] = skipped
    return out


def print_out_of_sample(oos: OutOfSample, console: Any = None) -> None:
    """Per entry: median [5 %, 95 %] of the AIQ gain and of the calibrated points, and the
    share of folds where each calibrated point met its target."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if Console().is_terminal else 170)

    def med(s: Spread, pct: bool = False, signed: bool = False) -> str:
        if s["median"] is None or s["p5"] is None or s["p95"] is None:
            return "-"
        f = "{:+.1%}" if pct and signed else "{:.1%}" if pct else "{:+.4f}" if signed \
            else "{:.4f}"
        return f"{f.format(s['median'])} [{f.format(s['p5'])}, {f.format(s['p95'])}]"

    def share(x: float | None, n: int) -> str:
        return "-" if x is None else f"{x:.0%} of {n}"

    conf = oos["confidence"]
    table = Table(title=f"{oos['protocol']} on {oos['dataset']}: {len(oos['folds'])} folds; "
                        "median [5 %, 95 %] across folds", title_justify="left")
    for col in ("entry", "AIQ - zero", "own AIQ - zero", "cal. 95%: q / cost vs best",
                "met", f"guaranteed ({conf}): q / cost vs best", "met", "fallbacks"):
        table.add_column(col)
    for s in oos["summary"]:
        sp = s["spread"]
        table.add_row(
            s["name"], med(sp["aiq_minus_zero"], signed=True),
            med(sp["aiq_own_minus_zero"], signed=True),
            f"{med(sp['calibrated_95.quality_vs_best'], pct=True)} / "
            f"{med(sp['calibrated_95.cost_vs_best'], pct=True)}",
            share(s["met_95_share"], s["n_points"]),
            f"{med(sp['calibrated_95_guaranteed.quality_vs_best'], pct=True)} / "
            f"{med(sp['calibrated_95_guaranteed.cost_vs_best'], pct=True)}",
            share(s["met_95_guaranteed_share"], s["n_points_guaranteed"]),
            str(s["fallbacks"]))
    console.print(table)
    for line in oos.get("skipped", []):
        console.print(f"[dim]skipped {line}[/dim]", highlight=False)
