"""Savings that hold out of sample: leave one task out, repeated splits, do no harm.

Three parts, each printed as tables (``--json`` writes every figure):

1. ``loto``: **leave one task out** on the cascade set and the RouterBench subset
   (``routecast bench DATA --folds task``: fit and calibrate on the other tasks, evaluate on
   the held-out one). Per held-out task, the 95 % point calibrated on validation with the
   guarantee (confidence 0.9) and without it: realised quality and cost relative to the best
   single model *of that task*, for the best router, the best cascade and the best cascade
   routing (best: highest median AIQ across tasks), and the share of (task, method) pairs that
   met the target. Task shift breaks exchangeability, so the guarantee does not apply here;
   the figures show how far it carries.
2. ``repeats``: over R (default 50) random re-splits of each shared data set, the share of
   splits where the calibrated 95 % point met its target on the test prompts, and its mean
   cost, with ``confidence=0.9`` and without a guarantee (where nothing is certified, or
   nothing reaches the target, the best single model on validation is kept and counted, and
   the number of such splits is shown). The routers, signals and cascades are
   fitted once on the data set's own train split; each repeat re-draws which of the other
   prompts validate (calibrate) and which test. That is exactly what the guarantee is about
   (a fixed fitted model, exchangeable calibration and test prompts), and it keeps 200
   repeats affordable on 2 cores; ``routecast bench --repeats R`` refits on every split.
3. ``harm``: **do no harm**: on every shared data set (its test split, 100 bootstrap
   resamples) and under leave one task out, every learned router's AIQ minus the zero
   router's, with its interval (bootstrap 95 % on the split; min-max over held-out tasks),
   and the same for the router's own points alone (before mixing with single models).

Run from the project root (tfidf encoders, linear and kNN routers; every part time-bound)::

    .venv/bin/python benchmarks/out_of_sample.py                 # all parts
    .venv/bin/python benchmarks/out_of_sample.py --part repeats --repeats 50 --json oos.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from routecast.arrays import FloatArray
    from routecast.bench.schema import OutOfSample
    from routecast.data.dataset import Dataset

DATASETS = ("llm-cascades-zellinger", "routerbench-subset", "llmrouter-9model", "routellm-evals")
LOTO_DATASETS = DATASETS[:2]
ROUTERS = ("linear", "knn")
FRACTION = 0.95
CONFIDENCE = 0.9
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.0f} s] {msg}", file=sys.stderr, flush=True)


def _progress(name: str) -> Any:
    def step(_done: int, message: str) -> None:
        say(f"  {name}: {message}")

    return step


def shared_data() -> Path:
    shared = os.environ.get("ROUTECAST_SHARED_DATA")
    return Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"


def load(root: Path, name: str) -> Dataset:
    from routecast.data import load_dataset

    return load_dataset(root / name)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


# -- part 1: leave one task out ----------------------------------------------------------------


def run_loto(root: Path, names: tuple[str, ...], *, cascades: bool, confidence: float | None,
             limit_s: float) -> dict[str, OutOfSample]:
    from routecast.bench.outofsample import out_of_sample

    out = {}
    for name in names:
        ds = load(root, name)
        say(f"{name}: leave one task out ({'with' if cascades else 'no'} cascades)")
        out[name] = out_of_sample(ds, "task", routers=ROUTERS, confidence=confidence,
                                  cascades=cascades, time_limit_s=limit_s,
                                  progress=_progress(name))
    return out


def best_of(oos: OutOfSample, kind: str) -> str | None:
    rows = [s for s in oos["summary"] if s["kind"] == kind]
    rows = [s for s in rows if s["spread"]["aiq"]["median"] is not None]
    return max(rows, key=lambda s: s["spread"]["aiq"]["median"] or 0.0)["name"] if rows else None


def print_loto(results: dict[str, OutOfSample]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, oos in results.items():
        methods = [m for m in (best_of(oos, k) for k in ("router", "cascade", "cascade_routing"))
                   if m is not None]
        print(f"\n== leave one task out: {name} ({len(oos['folds'])} tasks); methods: "
              f"{', '.join(methods)} ==")
        print(f"{'task':<14}{'method':<28}{'guaranteed q/best':>18}{'cost/best':>11}{'met':>5}"
              f"{'point q/best':>14}{'cost/best':>11}{'met':>5}  fallback")
        met_g: list[bool] = []
        met_p: list[bool] = []
        for fold in oos["folds"]:
            for e in fold["entries"]:
                if e["name"] not in methods:
                    continue
                f = e["figures"]
                print(f"{fold['fold']:<14}{e['name']:<28}"
                      f"{pct(f['calibrated_95_guaranteed.quality_vs_best']):>18}"
                      f"{pct(f['calibrated_95_guaranteed.cost_vs_best']):>11}"
                      f"{_yes(e['met_95_guaranteed']):>5}"
                      f"{pct(f['calibrated_95.quality_vs_best']):>14}"
                      f"{pct(f['calibrated_95.cost_vs_best']):>11}{_yes(e['met_95']):>5}"
                      f"  {'yes' if e['fallback'] else ''}")
                met_g.append(bool(e["met_95_guaranteed"]))
                met_p.append(bool(e["met_95"]))
        share_g = sum(met_g) / max(1, len(met_g))
        share_p = sum(met_p) / max(1, len(met_p))
        print(f"(task, method) pairs meeting 95 % of the task's best model: with the guarantee "
              f"{sum(met_g)}/{len(met_g)} ({share_g:.0%}), without {sum(met_p)}/{len(met_p)} "
              f"({share_p:.0%}); an uncertified point counts as a miss")
        figures[name] = {"methods": methods, "met_guaranteed": share_g, "met_point": share_p,
                         "pairs": len(met_g)}
    return figures


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else "yes" if flag else "no"


# -- part 2: repeated splits with the models fitted once ---------------------------------------


@dataclass
class Method:
    """A method's operating points on every pooled (validation or test) prompt: per family,
    realised quality and cost per point and prompt; ``families[0]`` is the method's own."""

    name: str
    families: list[tuple[FloatArray, FloatArray]]


def _zero(train: Dataset, pool: Dataset, seed: int) -> tuple[FloatArray, FloatArray]:
    from routecast.mixing import zero_family

    _, fam = zero_family(train.mean_quality(), train.mean_cost_usd(), pool, seed)
    return fam.quality, fam.cost


def prepare_methods(ds: Dataset, *, cascades: bool, seed: int) -> tuple[Dataset, list[Method]]:
    """Fit once on train; every method's operating points on the pooled other prompts."""
    import numpy as np

    from routecast.cascades.routing import CascadeRouting, fit_gamma
    from routecast.cascades.tuning import CascadeSearch
    from routecast.mixing import router_family
    from routecast.routers import make_router
    from routecast.signals import available_signals, make_signal

    train = ds.subset("train")
    pool = ds.take(ds.split != "train")
    zero = _zero(train, pool, seed)
    router = make_router("linear").fit(train)
    pq, pc = router.predict(list(pool.prompts)), router.predict_cost(list(pool.prompts))
    _, routed = router_family(pq, pc, pool)
    methods = [Method("linear", [(routed.quality, routed.cost), zero])]
    if not cascades:
        return pool, methods
    tq = router.predict(list(train.prompts))
    for name in available_signals(train):
        say(f"  {ds.name}: signal {name}: fit, cross-fit on train, score the pool")
        signal = make_signal(name).fit(train)
        s_pool = signal.score(pool)
        s_oof = signal.cross_fit(train, 3, seed)
        search = CascadeSearch(train, s_oof, signal=name)
        front = search.frontier()[::-1]
        reps = [search.cascade(int(i)).replay(pool, s_pool) for i in front]
        methods.append(Method(f"cascade:{name}", [
            (np.stack([r.quality for r in reps]), np.stack([r.cost_usd for r in reps])), zero]))
        rule = CascadeRouting(gamma=fit_gamma(tq, s_oof, train.quality))
        _, reps = rule.sweep(pool, pq, pc, s_pool)
        methods.append(Method(f"cascade-routing:{name}", [
            (np.stack([r.quality for r in reps]), np.stack([r.cost_usd for r in reps])), zero]))
    return pool, methods


def run_repeats(root: Path, names: tuple[str, ...], repeats: int, *, seed: int,
                cascade_sets: tuple[str, ...], limit_s: float) -> dict[str, Any]:
    import numpy as np

    from routecast.errors import CalibrationError
    from routecast.mixing import Family, cheapest_meeting

    out: dict[str, Any] = {}
    for name in names:
        ds = load(root, name)
        say(f"{name}: fit once on train ({'with' if name in cascade_sets else 'no'} cascades)")
        pool, methods = prepare_methods(ds, cascades=name in cascade_sets, seed=seed)
        n_val = int((ds.split == "validation").sum())
        rows: dict[str, dict[str, list[Any]]] = {
            m.name: {"met_g": [], "cost_g": [], "met_p": [], "cost_p": [], "uncertified": [],
                     "met_certified": [], "met_pop_g": [], "met_pop_p": []}
            for m in methods}
        # The guarantee is about a point's quality on the population the validation prompts
        # are drawn from: here the pool every split is drawn from. Judged on one test sample
        # instead, the point's sampling noise and the best model's (a maximum over models'
        # sample means, biased upward) count against it; both judgements are reported.
        pop_target = FRACTION * float(pool.quality.mean(axis=0).max())
        t0 = time.monotonic()
        done = 0
        for r in range(repeats):
            if time.monotonic() - t0 > limit_s:
                say(f"  {name}: time limit after {r} repeats")
                break
            perm = np.random.default_rng([seed, r]).permutation(pool.n_prompts)
            val, test = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            best_q = pool.quality[test].mean(axis=0)
            j = int(np.lexsort((pool.cost_usd[test].mean(axis=0), -best_q))[0])
            target = FRACTION * float(best_q[j])
            best_c = float(pool.cost_usd[test, j].mean())
            # Where no point is certified (or reaches the target), the user is told so and
            # keeps the best single model on validation: that is what is counted.
            v = int(np.lexsort((pool.cost_usd[val].mean(axis=0),
                                -pool.quality[val].mean(axis=0)))[0])
            keep_q = float(pool.quality[test, v].mean())
            keep_c = float(pool.cost_usd[test, v].mean())
            for m in methods:
                fams = [Family(q[:, val], c[:, val]) for q, c in m.families]
                for conf, key in ((CONFIDENCE, "g"), (None, "p")):
                    try:
                        sel = cheapest_meeting(fams, pool.quality[val], FRACTION, conf,
                                               seed=seed)
                    except CalibrationError:
                        if key == "g":
                            rows[m.name]["uncertified"].append(True)
                        got_q, got_c = keep_q, keep_c
                        pop_q = float(pool.quality[:, v].mean())
                    else:
                        q, c = m.families[sel.family]
                        got_q = float(q[sel.index, test].mean())
                        got_c = float(c[sel.index, test].mean())
                        pop_q = float(q[sel.index].mean())
                        if key == "g":
                            rows[m.name]["uncertified"].append(False)
                            rows[m.name]["met_certified"].append(got_q >= target - 1e-12)
                    rows[m.name][f"met_{key}"].append(got_q >= target - 1e-12)
                    rows[m.name][f"met_pop_{key}"].append(pop_q >= pop_target - 1e-12)
                    rows[m.name][f"cost_{key}"].append(got_c / best_c)
            done += 1
        out[name] = {"repeats": done, "methods": {
            k: {"met_guaranteed": float(np.mean(v["met_g"])) if v["met_g"] else None,
                "cost_vs_best_guaranteed": float(np.mean(v["cost_g"])) if v["cost_g"] else None,
                "uncertified": int(sum(v["uncertified"])),
                "met_certified": float(np.mean(v["met_certified"])) if v["met_certified"]
                else None,
                "met_point": float(np.mean(v["met_p"])) if v["met_p"] else None,
                "met_guaranteed_population": (float(np.mean(v["met_pop_g"]))
                                              if v["met_pop_g"] else None),
                "met_point_population": (float(np.mean(v["met_pop_p"]))
                                         if v["met_pop_p"] else None),
                "cost_vs_best_point": float(np.mean(v["cost_p"])) if v["cost_p"] else None}
            for k, v in rows.items()}}
        print(f"\n== {done} random validation/test re-splits of {name} (train fixed; "
              f"{n_val} validation, {pool.n_prompts - n_val} test prompts each) ==")
        print(f"{'method':<28}{'met (conf 0.9)':>16}{'mean cost/best':>16}{'uncertified':>13}"
              f"{'met if cert.':>14}{'met (no guar.)':>16}{'mean cost/best':>16}"
              f"{'met on pool (0.9 / no)':>24}")
        for k, v in out[name]["methods"].items():
            print(f"{k:<28}{pct(v['met_guaranteed']):>16}{pct(v['cost_vs_best_guaranteed']):>16}"
                  f"{v['uncertified']:>13}{pct(v['met_certified']):>14}"
                  f"{pct(v['met_point']):>16}{pct(v['cost_vs_best_point']):>16}"
                  f"{pct(v['met_guaranteed_population']):>15} / "
                  f"{pct(v['met_point_population']):>6}")
        print("(uncertified: no point certified on validation; the best single model on "
              "validation is kept and counted. met on pool: the point's quality over every "
              "prompt the splits are drawn from, against 95 % of the best model's there: what "
              "the guarantee is about)")
    return out


# -- part 3: do no harm ------------------------------------------------------------------------


def run_harm(root: Path, names: tuple[str, ...], loto: dict[str, OutOfSample], *,
             n_boot: int, seed: int, limit_s: float) -> dict[str, Any]:
    from routecast.bench.evaluate import evaluate
    from routecast.bench.outofsample import out_of_sample

    out: dict[str, Any] = {}
    for name in names:
        ds = load(root, name)
        say(f"{name}: test split, {n_boot} bootstrap resamples")
        res = evaluate(ds, routers=ROUTERS, n_boot=n_boot, seed=seed, cascades=False,
                       confidence=None)
        if name not in loto:
            say(f"{name}: leave one task out (routers only)")
            loto[name] = out_of_sample(ds, "task", routers=ROUTERS, confidence=None,
                                       cascades=False, time_limit_s=limit_s,
                                       progress=_progress(name))
        oos = loto[name]
        rb = res.get("zero_router_aiq_routerbench", 0.0)
        print(f"\n== do no harm: {name} (zero-router AIQ {res['zero_router_aiq']:.4f} on the "
              f"test split; RouterBench convention {rb:.4f}) ==")
        print(f"{'router':<10}{'AIQ - zero [95% CI]':>30}{'own AIQ - zero':>16}"
              f"{'LOTO: AIQ - zero median [min, max]':>40}{'own: median [min, max]':>34}")
        out[name] = {}
        for entry in res["routers"]:
            interval = entry.get("ci")
            ci = interval["aiq_minus_zero"] if interval else None
            s = next(x for x in oos["summary"] if x["name"] == entry["name"])
            g, o = s["spread"]["aiq_minus_zero"], s["spread"]["aiq_own_minus_zero"]
            own = entry.get("aiq_own", entry["aiq"]) - res["zero_router_aiq"]
            ci_text = "-" if not ci else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"
            print(f"{entry['name']:<10}{entry['aiq_minus_zero']:>+12.4f} {ci_text:>17}"
                  f"{own:>+16.4f}"
                  f"{_med(g):>40}{_med(o):>34}")
            out[name][entry["name"]] = {"aiq_minus_zero": entry["aiq_minus_zero"], "ci": ci,
                                        "own_aiq_minus_zero": own, "loto": g, "loto_own": o,
                                        "aiq_routerbench": entry.get("aiq_routerbench")}
    return out


def _med(s: Any) -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median']:+.4f} [{s['min']:+.4f}, {s['max']:+.4f}]"


def main() -> int:
    from routecast.errors import RoutecastError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--part", choices=("all", "loto", "repeats", "harm"), default="all")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--repeat-cascades", default="llm-cascades-zellinger,routerbench-subset",
                        help="data sets whose repeats include cascades (the signals' cross-fit "
                             "is the slow part)")
    parser.add_argument("--time-limit-s", type=float, default=900.0,
                        help="per data set and part: no new fold or repeat starts after this")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    names = tuple(n.strip() for n in args.datasets.split(",") if n.strip())
    out: dict[str, Any] = {"seed": args.seed, "fraction": FRACTION, "confidence": CONFIDENCE}
    try:
        loto: dict[str, OutOfSample] = {}
        if args.part in ("all", "loto"):
            loto = run_loto(args.data, tuple(n for n in LOTO_DATASETS if n in names),
                            cascades=True, confidence=CONFIDENCE, limit_s=args.time_limit_s)
            out["loto"] = {"figures": print_loto(loto), "results": loto}
        if args.part in ("all", "repeats"):
            out["repeats"] = run_repeats(
                args.data, names, args.repeats, seed=args.seed,
                cascade_sets=tuple(args.repeat_cascades.split(",")), limit_s=args.time_limit_s)
        if args.part in ("all", "harm"):
            out["harm"] = run_harm(args.data, names, loto, n_boot=args.bootstrap,
                                   seed=args.seed, limit_s=args.time_limit_s)
    except RoutecastError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n", encoding="utf-8")
        say(f"wrote {args.json}")
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
