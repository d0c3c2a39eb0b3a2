"""Cascades, cascade routing and their latency price, on recorded outcomes.

Two parts, each printed as tables (and written as JSON with ``--json``):

1. **The cascade set** (``llm-cascades-zellinger``; only its source *train* split is shared,
   1,485 prompts). K-fold cross-validation over those prompts (default 5 folds, seeded): each
   fold is the test split once; of the other prompts 25 % (seeded) are validation and the rest
   train, i.e. 60/20/20 overall. Per fold and on average:

   * the **best tuned cascade** at gpt-4o's quality and at 95 % of it: the cascade is tuned
     on the tuning data (train out-of-fold + validation, see ``routecast.bench.cascades``) to
     the cheapest one reaching that fraction of *gpt-4o's quality on the tuning data*; the
     signal (recorded confidence or the learned scorer) is the one whose tuned cascade is
     cheaper *on the tuning data*. Reported on the test fold: quality and mean cost as a
     share of gpt-4o's, escalation rate, p50/p99 end-to-end latency (the visited calls'
     recorded latencies summed). Also the hull figure (``savings_at``-style): the lowest cost
     at which the test curve of tuned cascades reaches the target, as a share of gpt-4o's;
   * the same operating points for **cascade routing** (lambda calibrated on validation);
   * **AIQ** of the best router, the best cascade and the best cascade routing;
   * the **latency** of gpt-4o and of the best single model (p50/p99) for comparison.

2. **The RouterBench subset** (responses, no confidence: the learned scorer is the signal):
   the ``routecast bench`` figures of the learned-scorer cascade and cascade routing beside
   the routers, on the subset's test split.

Run from the project root::

    .venv/bin/python benchmarks/cascades.py
    .venv/bin/python benchmarks/cascades.py --folds 5 --seed 0 --json cascades.json

Routecast errors print their message and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routecast.bench.cascades import CascadeInputs
    from routecast.bench.schema import BenchResult
    from routecast.data.dataset import Dataset

REFERENCE = "gpt-4o"
ROUTERS = ("best-single", "cheapest", "knn", "linear")
FRACTIONS = (1.0, 0.95)


def shared_data() -> Path:
    shared = os.environ.get("ROUTECAST_SHARED_DATA")
    return Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"


def fold_splits(n: int, k: int, seed: int) -> list[Any]:
    """Per fold a split array: the fold is test, 25 % of the rest validation, rest train."""
    import numpy as np

    from routecast.data.splits import carve_validation

    parts = np.array_split(np.random.default_rng(seed).permutation(n), k)
    out = []
    for i, part in enumerate(parts):
        split = np.full(n, "train", dtype="<U10")
        split[part] = "test"
        out.append(carve_validation(split, seed=seed + 1 + i, fraction=0.25))
    return out


def _latency(values: Any) -> dict[str, float]:
    import numpy as np

    return {"p50_s": float(np.quantile(values, 0.5)), "p99_s": float(np.quantile(values, 0.99))}


def _point(replay: Any, ref_q: float, ref_c: float, **extra: Any) -> dict[str, Any]:
    return {"quality_vs_ref": replay.mean_quality / ref_q,
            "cost_vs_ref": replay.mean_cost_usd / ref_c,
            "escalation_rate": replay.escalation_rate,
            "latency_p50_s": replay.latency_quantile(0.5),
            "latency_p99_s": replay.latency_quantile(0.99), **extra}


def cascade_fold(data: Dataset, seed: int) -> dict[str, Any]:
    """Every figure of part 1 for one fold (``data`` carries that fold's split)."""
    from routecast.bench.cascades import cascade_entries, prepare
    from routecast.bench.curves import split_summary
    from routecast.bench.evaluate import evaluate
    from routecast.errors import CalibrationError

    res = evaluate(data, routers=ROUTERS, n_boot=0, seed=seed, cascades=False)
    inputs = prepare(data, "test", seed=seed)
    summary = split_summary(data.subset("test"))
    res["routers"] += cascade_entries(data, "test", summary, n_boot=0, seed=seed,
                                      prepared=inputs)
    test = data.subset("test")
    ref = data.model_index(REFERENCE)
    ref_q, ref_c = float(test.quality[:, ref].mean()), float(test.cost_usd[:, ref].mean())
    assert test.latency_s is not None
    best = data.model_index(res["best_single"]["name"])
    out: dict[str, Any] = {
        "n_train": res["n_train"], "n_validation": res["n_validation"],
        "n_test": res["n_prompts"],
        "reference": {"model": REFERENCE, "quality": ref_q, "cost_usd": ref_c,
                      **_latency(test.latency_s[:, ref])},
        "best_single": {"model": res["best_single"]["name"],
                        "quality_vs_ref": float(test.quality[:, best].mean()) / ref_q,
                        "cost_vs_ref": float(test.cost_usd[:, best].mean()) / ref_c,
                        **_latency(test.latency_s[:, best])},
        "aiq": {}, "cascade": {}, "cascade_routing": {},
    }
    for kind in ("router", "cascade", "cascade_routing"):
        entries = [r for r in res["routers"] if r["kind"] == kind]
        top = max(entries, key=lambda r: r["aiq"])
        out["aiq"][kind] = {"name": top["name"], "aiq": top["aiq"]}
    for fraction in FRACTIONS:
        key = f"{fraction:.0%}"
        out["cascade"][key] = _best_cascade(inputs, res, fraction, ref_q, ref_c)
        routed = []
        for inp in inputs:
            try:
                rule = inp.routing().for_quality(inp.val, inp.ex_ante_val, inp.cost_val,
                                                 inp.s_val, fraction, reference=REFERENCE)
            except CalibrationError:
                continue
            replay = rule.replay(inp.test, inp.ex_ante_test, inp.cost_test, inp.s_test)
            val_cost = rule.replay(inp.val, inp.ex_ante_val, inp.cost_val,
                                   inp.s_val).mean_cost_usd
            routed.append((val_cost, _point(replay, ref_q, ref_c, signal=inp.signal)))
        # The signal is chosen on validation, as the weight is: never on the test fold.
        out["cascade_routing"][key] = min(routed, key=lambda t: t[0])[1] if routed else None
    return out


def _best_cascade(inputs: list[CascadeInputs], res: BenchResult, fraction: float,
                  ref_q: float, ref_c: float) -> dict[str, Any] | None:
    """The cheapest cascade on the tuning data reaching ``fraction`` of the reference's
    tuning quality, over the signals, realised on the test fold; plus the hull figure."""
    import numpy as np

    from routecast import metrics
    from routecast.errors import CalibrationError

    best: tuple[float, dict[str, Any]] | None = None
    for inp in inputs:
        search = inp.search()
        target = fraction * float(inp.tuning.quality[:, inp.tuning.model_index(REFERENCE)]
                                  .mean())
        try:
            index = search.cheapest_reaching(target)
        except CalibrationError:
            continue
        cascade = search.cascade(index)
        replay = cascade.replay(inp.test, inp.s_test)
        entry = next(r for r in res["routers"] if r["name"] == f"cascade:{inp.signal}")
        curve = np.asarray(entry["curve"])
        hull = metrics.cost_to_reach(curve[:, 0], curve[:, 1], fraction * ref_q)
        point = _point(replay, ref_q, ref_c, signal=inp.signal, cascade=cascade.describe(),
                       hull_cost_vs_ref=None if hull is None else hull / ref_c)
        if best is None or search.cost_usd[index] < best[0]:
            best = (float(search.cost_usd[index]), point)
    return None if best is None else best[1]


def _mean(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def print_cascade_part(folds: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    def sec(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    for key in (f"{f:.0%}" for f in FRACTIONS):
        table = Table(title=f"llm-cascades-zellinger, {len(folds)}-fold CV: operating point "
                            f"tuned for {key} of {REFERENCE}'s quality (figures on the test "
                            "fold, relative to gpt-4o on that fold)")
        for col in ("fold", "what", "quality", "cost", "hull cost", "escalated",
                    "latency p50 / p99 (s)", "gpt-4o p50 / p99", "best single p50 / p99"):
            table.add_column(col)
        rows: dict[str, list[dict[str, Any]]] = {"cascade": [], "cascade_routing": []}
        for i, fold in enumerate(folds):
            ref, single = fold["reference"], fold["best_single"]
            for what in ("cascade", "cascade_routing"):
                p = fold[what][key]
                if p is None:
                    table.add_row(str(i), what, "unreachable", *["-"] * 6)
                    continue
                rows[what].append(p)
                label = f"{what} [{p['signal']}]"
                table.add_row(str(i), label, pct(p["quality_vs_ref"]), pct(p["cost_vs_ref"]),
                              pct(p.get("hull_cost_vs_ref")), pct(p["escalation_rate"]),
                              f"{sec(p['latency_p50_s'])} / {sec(p['latency_p99_s'])}",
                              f"{sec(ref['p50_s'])} / {sec(ref['p99_s'])}",
                              f"{sec(single['p50_s'])} / {sec(single['p99_s'])}")
        for what, got in rows.items():
            if not got:
                continue
            m = {k: _mean([p.get(k) for p in got]) for k in
                 ("quality_vs_ref", "cost_vs_ref", "hull_cost_vs_ref", "escalation_rate",
                  "latency_p50_s", "latency_p99_s")}
            table.add_row("mean", what, pct(m["quality_vs_ref"]), pct(m["cost_vs_ref"]),
                          pct(m["hull_cost_vs_ref"]), pct(m["escalation_rate"]),
                          f"{sec(m['latency_p50_s'])} / {sec(m['latency_p99_s'])}",
                          f"{sec(_mean([f['reference']['p50_s'] for f in folds]))} / "
                          f"{sec(_mean([f['reference']['p99_s'] for f in folds]))}",
                          f"{sec(_mean([f['best_single']['p50_s'] for f in folds]))} / "
                          f"{sec(_mean([f['best_single']['p99_s'] for f in folds]))}")
        console.print(table)
    table = Table(title="AIQ on each test fold (higher is better)")
    for col in ("fold", "best router", "best cascade", "best cascade routing"):
        table.add_column(col)
    for i, fold in enumerate(folds):
        a = fold["aiq"]
        table.add_row(str(i), *(f"{a[k]['aiq']:.4f} ({a[k]['name']})"
                                for k in ("router", "cascade", "cascade_routing")))
    table.add_row("mean", *(f"{_mean([f['aiq'][k]['aiq'] for f in folds]):.4f}"
                            for k in ("router", "cascade", "cascade_routing")))
    console.print(table)


def routerbench_part(path: Path, seed: int, n_boot: int) -> BenchResult:
    from routecast.bench import report
    from routecast.bench.evaluate import evaluate
    from routecast.data import load_dataset

    result = evaluate(load_dataset(path, seed=seed), routers=ROUTERS, n_boot=n_boot, seed=seed)
    report.print_table(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data(),
                        help="folder holding llm-cascades-zellinger/ and routerbench-subset/")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=200,
                        help="bootstrap resamples for the RouterBench part")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)

    from routecast.data import load_dataset
    from routecast.errors import RoutecastError

    try:
        t0 = time.perf_counter()
        data = load_dataset(args.data / "llm-cascades-zellinger", seed=args.seed)
        folds = []
        for i, split in enumerate(fold_splits(data.n_prompts, args.folds, args.seed)):
            print(f"fold {i + 1}/{args.folds} ...", file=sys.stderr, flush=True)
            folds.append(cascade_fold(data.with_splits(split), args.seed))
        print_cascade_part(folds)
        routerbench = routerbench_part(args.data / "routerbench-subset", args.seed,
                                       args.bootstrap)
        print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    except RoutecastError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps({"cascade_folds": folds, "routerbench": routerbench},
                                        indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
