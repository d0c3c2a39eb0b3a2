"""Cascade deferral signals under leave-one-task-out: which signals travel to a task unseen?

On the cascade set (``llm-cascades-zellinger``: 1,485 prompts of MMLU, MedMCQA, TriviaQA,
TruthfulQA and GSM8K, 9 models; only its source *train* split is shared) each task is held out
once. For every signal, with the library API only:

1. fit the signal on the **other four tasks'** train split;
2. tune the cascades on the other tasks' train (scored out-of-fold, 3 folds) + validation
   prompts (:class:`routecast.cascades.tuning.CascadeSearch`, its default pruned space);
3. replay on **every prompt of the held-out task** (none of them was seen in 1-2):

   * ``save@100`` / ``save@95``: :func:`routecast.metrics.savings_at` of the held-out curve of
     the tuned cascades (the tuning Pareto front, each cascade replayed on the held-out task)
     at 100 % / 95 % of the held-out task's best single model's quality (``-`` where the curve
     never gets there). This is the figure ``routecast bench`` reports as ``savings_at_100``;
   * ``cal@100`` / ``cal@95``: the one cascade tuned to reach that fraction of the best single
     model's quality *on the tuning tasks*, realised on the held-out task: its quality as a
     share of the held-out best model's (``q``) and its savings (``s``, negative = dearer);
   * ``cons@100``: the same with a conservative target: the tuning target plus a Hoeffding
     margin ``sqrt(log(1/delta) / 2n)`` (delta = 0.1, n tuning prompts).

**In-sample ceiling** (``--ceiling``): the signal scored out-of-fold (5 folds) on every prompt
of every task, the cascades tuned *and* evaluated on those same prompts: an upper bound of
what a signal allows in this cascade space when nothing shifts, not an out-of-sample figure.

**Known tasks** (``--known-tasks``): instead of leaving a task out, the data's own test split
(every task, 297 prompts) is held out and signals are fitted and cascades tuned on its train
and validation splits; this is where per-task calibration (``confidence/task`` against
``confidence``, ``cross-agreement/task`` against ``cross-agreement``) can act. Under
leave-one-task-out the per-task variants calibrate the tuning tasks only, and the held-out
task keeps the global fit.

**Pooled**: the tuning target (a fraction of the tuning data's best single-model quality, on
a fixed grid) indexes one cascade per fold; each fold's cascade answers its held-out task's
prompts, and the pooled curve is the mean over all 1,485 prompts per grid point, against the
best single model over all prompts. ``mean`` is the mean of the per-task figures.

Signals (``old`` = as on main before issue 12):

* ``confidence`` (old): the recorded confidence, Platt-scaled per model;
* ``learned`` (old): FrugalGPT-style TF-IDF scorer, ``text_features=False``;
* ``learned+text``: the same with the task-agnostic answer features;
* ``cross-agreement``: a small per-model scorer on task-agnostic features only (confidence,
  length, hedging, refusal, format);
* ``cross-agreement+pairs``: the same plus pair steps (two cheap models in parallel, both paid for,
  :func:`routecast.signals.cross_agreement.add_pairs`) scored by whether the two answers agree.

Run from the project root (10-25 min on 2 busy cores, most of it the pair steps: the 5
cheapest models make 10 pairs, 19 columns to search; ``--n-cheap 3`` is ~4x faster)::

    .venv/bin/python benchmarks/cascade_signals.py
    .venv/bin/python benchmarks/cascade_signals.py --signals confidence,cross-agreement+pairs \
        --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from routecast.data.dataset import Dataset, FloatArray

#: label -> (registered signal name, its parameters, whether pair columns are added, old?)
SIGNALS: dict[str, tuple[str, dict[str, Any], bool, bool]] = {
    "confidence": ("confidence", {}, False, True),
    "learned": ("learned", {"text_features": False}, False, True),
    "learned+text": ("learned", {"text_features": True}, False, False),
    "cross-agreement": ("cross-agreement", {}, False, False),
    "cross-agreement+pairs": ("cross-agreement", {}, True, False),
    # Per-task calibration only differs where the task was seen (--known-tasks):
    "confidence/task": ("confidence", {"per_task": True}, False, False),
    "cross-agreement/task": ("cross-agreement", {"per_task": True}, False, False),
}
#: The signals run by default: the per-task variants equal their global fits on unseen tasks.
LOTO_SIGNALS = ("confidence", "learned", "learned+text", "cross-agreement",
                "cross-agreement+pairs")
FRACTIONS = (1.0, 0.95)
#: Tuning targets of the pooled curve, as fractions of the tuning data's best single model.
GRID = np.round(np.arange(0.70, 1.0751, 0.0025), 4)
CROSS_FIT_FOLDS = 3
DELTA = 0.1


def shared_data() -> Path:
    shared = os.environ.get("ROUTECAST_SHARED_DATA")
    return Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Fold:
    """One held-out task's results for one signal."""

    task: str
    best: tuple[str, float, float]  # held-out best single model, its quality and cost
    save: dict[float, float | None]
    calibrated: dict[str, tuple[float, float]]  # name -> (quality share, savings)
    grid_quality: list[FloatArray] = field(default_factory=list)  # per grid point, per prompt
    grid_cost: list[FloatArray] = field(default_factory=list)
    seconds: float = 0.0


def best_single(data: Dataset, models: tuple[str, ...]) -> tuple[str, float, float]:
    cols = [data.model_index(m) for m in models]
    q, c = data.mean_quality()[cols], data.mean_cost_usd()[cols]
    k = int(np.lexsort((c, -q))[0])
    return models[k], float(q[k]), float(c[k])


def run_fold(data: Dataset, task: str, label: str, *, seed: int, n_cheap: int,
             held_out: npt.NDArray[np.bool_] | None = None) -> Fold:
    """``task`` held out; or, with ``held_out``, those prompts (``task`` names them)."""
    from routecast import metrics
    from routecast.cascades.tuning import CascadeSearch
    from routecast.errors import CalibrationError
    from routecast.signals import make_signal
    from routecast.signals.cross_agreement import add_pairs, cheap_pairs

    t0 = time.perf_counter()
    name, params, pairs, _ = SIGNALS[label]
    singles = data.models
    held_mask = np.asarray(data.task) == task if held_out is None else held_out
    other = data.take(~held_mask)
    if pairs:
        chosen = cheap_pairs(other.subset("train"), n_cheap)
        data = add_pairs(data, chosen)
        other = data.take(~held_mask)
    held = data.take(held_mask)
    train, val = other.subset("train"), other.subset("validation")
    tuning = other.take(np.isin(other.split, ("train", "validation")))
    in_train = tuning.split == "train"

    signal = make_signal(name, **params).fit(train)
    s_tuning = np.empty((tuning.n_prompts, tuning.n_models))
    s_tuning[in_train] = signal.cross_fit(train, CROSS_FIT_FOLDS, seed)
    s_tuning[~in_train] = signal.score(val)
    s_held = signal.score(held)

    search = CascadeSearch(tuning, s_tuning, signal=label)
    front = search.frontier()
    replays = [search.cascade(int(i)).replay(held, s_held) for i in front]
    cc = np.array([r.mean_cost_usd for r in replays])
    cq = np.array([r.mean_quality for r in replays])
    best = best_single(held, singles)
    save = {f: metrics.savings_at(cc, cq, f, best[1], best[2]) for f in FRACTIONS}

    tune_best = best_single(tuning, singles)[1]
    margin = math.sqrt(math.log(1 / DELTA) / (2 * tuning.n_prompts))

    def realise(target: float) -> Any:
        try:
            index = search.cheapest_reaching(target)
        except CalibrationError:
            index = int(np.argmax(search.quality))  # unreachable: the best there is
        return search.cascade(index).replay(held, s_held)

    calibrated = {}
    for f in FRACTIONS:
        r = realise(f * tune_best)
        calibrated[f"cal@{round(100 * f)}"] = (r.mean_quality / best[1],
                                                1 - r.mean_cost_usd / best[2])
    r = realise(tune_best + margin)
    calibrated["cons@100"] = (r.mean_quality / best[1], 1 - r.mean_cost_usd / best[2])
    fold = Fold(task, best, save, calibrated)
    for g in GRID:
        r = realise(float(g) * tune_best)
        fold.grid_quality.append(r.quality)
        fold.grid_cost.append(r.cost_usd)
    fold.seconds = time.perf_counter() - t0
    return fold


def pooled(data: Dataset, folds: list[Fold]) -> dict[Any, Any]:
    """Savings of the pooled curve (see module docstring) and the pooled calibrated points."""
    from routecast import metrics

    best = best_single(data, data.models)
    n = sum(len(f.grid_quality[0]) for f in folds)
    cq = np.array([sum(f.grid_quality[k].sum() for f in folds) / n for k in range(len(GRID))])
    cc = np.array([sum(f.grid_cost[k].sum() for f in folds) / n for k in range(len(GRID))])
    out: dict[Any, Any] = {"best": best}
    for frac in FRACTIONS:
        out[frac] = metrics.savings_at(cc, cq, frac, best[1], best[2])
    for frac in FRACTIONS:
        k = int(np.argmin(np.abs(GRID - frac)))
        out[f"cal@{round(100 * frac)}"] = (float(cq[k]) / best[1], 1 - float(cc[k]) / best[2])
    return out


def ceiling(data: Dataset, label: str, *, seed: int, n_cheap: int) -> dict[Any, Any]:
    """Savings at each fraction of the in-sample frontier (see module docstring)."""
    from routecast import metrics
    from routecast.cascades.tuning import CascadeSearch
    from routecast.signals import make_signal
    from routecast.signals.cross_agreement import add_pairs, cheap_pairs

    name, params, pairs, _ = SIGNALS[label]
    best = best_single(data, data.models)
    if pairs:
        data = add_pairs(data, cheap_pairs(data, n_cheap))
    scores = make_signal(name, **params).cross_fit(data, 5, seed)
    search = CascadeSearch(data, scores, signal=label)
    front = search.frontier()
    out: dict[Any, Any] = {f: metrics.savings_at(search.cost_usd[front], search.quality[front],
                                                   f, best[1], best[2]) for f in FRACTIONS}
    out["max_quality"] = float(search.quality.max()) / best[1]
    return out


def pct(x: float | None) -> str:
    return "   -" if x is None else f"{100 * x:4.0f}"


def print_table(label: str, folds: list[Fold], pool: dict[Any, Any]) -> None:
    old = " (old)" if SIGNALS[label][3] else " (new)"
    print(f"\n== signal {label}{old}")
    print(f"{'held-out task':<12} {'best model':<22} {'save@100':>8} {'save@95':>8} "
          f"{'cal@100 q/s':>12} {'cal@95 q/s':>12} {'cons@100 q/s':>13} {'time':>6}")
    for f in folds:
        cal = "  ".join(f"{100 * f.calibrated[k][0]:5.1f}/{pct(f.calibrated[k][1])}"
                        for k in ("cal@100", "cal@95", "cons@100"))
        print(f"{f.task:<12} {f.best[0]:<22} {pct(f.save[1.0]):>8} {pct(f.save[0.95]):>8}   "
              f"{cal}  {f.seconds:5.0f}s")
    per = [f.save[1.0] for f in folds]
    mean100 = float(np.mean([0.0 if s is None else s for s in per]))
    per95 = [f.save[0.95] for f in folds]
    mean95 = float(np.mean([0.0 if s is None else s for s in per95]))
    print(f"{'mean':<12} {'(- counted as 0)':<22} {pct(mean100):>8} {pct(mean95):>8}")
    cal = "  ".join(f"{100 * pool[k][0]:5.1f}/{pct(pool[k][1])}" for k in ("cal@100", "cal@95"))
    print(f"{'pooled':<12} {pool['best'][0]:<22} {pct(pool[1.0]):>8} {pct(pool[0.95]):>8}   "
          f"{cal}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path,
                        default=shared_data() / "llm-cascades-zellinger")
    parser.add_argument("--signals", default="",
                        help=f"comma-separated, of: {', '.join(SIGNALS)}")
    parser.add_argument("--tasks", default="", help="held-out tasks (default: every task)")
    parser.add_argument("--n-cheap", type=int, default=5,
                        help="pairs are formed among this many cheapest models")
    parser.add_argument("--known-tasks", action="store_true",
                        help="hold out the test split instead of each task (see above)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also print each signal's in-sample ceiling (see above)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from routecast.data import load_dataset
    from routecast.errors import RoutecastError

    try:
        labels = [s for s in args.signals.split(",") if s] or (
            list(SIGNALS) if args.known_tasks else list(LOTO_SIGNALS))
        unknown = [s for s in labels if s not in SIGNALS]
        if unknown:
            print(f"error: unknown signals {unknown}; known: {', '.join(SIGNALS)}",
                  file=sys.stderr)
            return 2
        data = load_dataset(args.data, seed=args.seed)
        if data.task is None:
            print("error: leave-one-task-out needs task labels in the data", file=sys.stderr)
            return 2
        tasks = [t for t in args.tasks.split(",") if t] or sorted(set(data.task))
        if args.known_tasks:
            print(f"{data!r}; the test split held out, every task seen in training")
        else:
            print(f"{data!r}; leave-one-task-out over {', '.join(tasks)}; figures in % of the "
                  "held-out best single model (savings = 1 - cost / its cost)")
        report: dict[str, Any] = {}
        for label in labels:
            if args.known_tasks:
                test = data.split == "test"
                folds = [run_fold(data, "test split", label, seed=args.seed,
                                  n_cheap=args.n_cheap, held_out=test)]
                pool = pooled(data.take(test), folds)
            else:
                folds = [run_fold(data, t, label, seed=args.seed, n_cheap=args.n_cheap)
                         for t in tasks]
                pool = pooled(data.take(np.isin(np.asarray(data.task), tasks)), folds)
            print_table(label, folds, pool)
            if args.ceiling:
                top = ceiling(data, label, seed=args.seed, n_cheap=args.n_cheap)
                print(f"{'in-sample ceiling (not out of sample)':<35} {pct(top[1.0]):>8} "
                      f"{pct(top[0.95]):>8}   max quality {100 * top['max_quality']:.1f} %")
            report[label] = {
                "old": SIGNALS[label][3],
                "tasks": {f.task: {"best": f.best, "savings_at_100": f.save[1.0],
                                   "savings_at_95": f.save[0.95], **{
                                       k: {"quality_vs_best": v[0], "savings": v[1]}
                                       for k, v in f.calibrated.items()}} for f in folds},
                "pooled": {"best": pool["best"], "savings_at_100": pool[1.0],
                           "savings_at_95": pool[0.95]},
            }
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    except RoutecastError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
