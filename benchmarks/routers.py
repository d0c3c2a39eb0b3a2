"""Router tables: does learning beat the routing plateau? Figures for the README and the issue.

For each data set (the RouterBench subset, RouteLLM's MMLU with GPT-4-1106 vs Mixtral-8x7B on
a seeded 60/20/20 split, LLMRouter's 9 models), through the ordinary replay benchmark
(:func:`routecast.bench.evaluate.evaluate`: fit on train, calibrate on validation, evaluate on
test, bootstrap over test prompts):

* **kNN at every k** in :data:`KS`; the k with the best *validation* AIQ is marked, and every
  k's test figures are printed too, so the table shows what a well-tuned kNN reaches;
* **every router** (baselines, ``linear``, ``mlp``, ``mf``, ``sw-ranking``, ``stack``), the
  learned ones also with ``cost_model="mean"`` to show what per-prompt cost adds;
* AIQ and its gain over the zero router with bootstrap 95 % intervals, savings at 95 % of the
  best single model's quality (with interval), the calibrated 95 % point realised on test, the
  oracle gap, fit time and routing time per prompt; for two models, RouteLLM's APGR and
  CPT(50 %) / CPT(80 %), printed beside RouteLLM's published MMLU figures;

then (``--minilm``) the RouterBench table again with the MiniLM encoder, and (``--few-labels``)
the few-labels curve of adding GPT-4 to routers fitted without it (``bench/fewlabels.py``).

Variants (kNN at a given k, a router with other options) are registered as routers through
``register_router``, the path a plugin takes, under names such as ``knn-k80`` or
``mf/mean-cost``; only this process sees them. Run from the project root::

    .venv/bin/python benchmarks/routers.py                 # the three tables, TF-IDF
    .venv/bin/python benchmarks/routers.py --minilm --few-labels --json out/routers.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KS = (5, 10, 20, 40, 80, 160, 320, 640)
LEARNED = ("linear", "mlp", "mf", "sw-ranking", "stack")
OWN = ("mlp", "mf", "sw-ranking", "stack")  # the routers with a cost_model option
BASELINES = ("random", "best-single", "cheapest")
FEW_LABELS_MODEL = "gpt-4-1106-preview"
FEW_LABELS_ROUTERS = ("knn", "linear", "mlp", "mf", "sw-ranking", "stack")

#: RouteLLM's MMLU figures (Ong et al., "RouteLLM: Learning to Route LLMs with Preference
#: Data", arXiv:2406.18665), for GPT-4-1106 vs Mixtral-8x7B. See ROUTELLM_NOTE.
ROUTELLM_MMLU = (
    ("random (paper)", 0.500, 0.500, 0.800),
    ("best RouteLLM router per column, Arena + MMLU golden labels", 0.603, 0.354, 0.703),
)
ROUTELLM_NOTE = (
    "RouteLLM figures as reported for its MMLU evaluation (arXiv:2406.18665); the 'best per "
    "column' row takes each column's best router trained on Chatbot Arena preferences "
    "augmented with ~1,500 MMLU golden labels (routers trained on Arena data alone were close "
    "to random on MMLU). They were read from secondary summaries of the paper; the paper's "
    "own table could not be opened offline here. How the setups differ: RouteLLM's routers "
    "learn from out-of-domain preference battles plus a small in-domain augmentation and are "
    "evaluated on all of MMLU; routecast's learn from 60 % of these MMLU outcomes themselves "
    "(in-domain, both models' correctness on ~8.4k prompts) and are evaluated on a seeded 20 % "
    "test split. APGR/CPT depend only on the share of strong calls, not on prices.")


def default_data() -> Path:
    shared = os.environ.get("ROUTECAST_SHARED_DATA")
    return Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"


# -- variants, registered the way a plugin would ----------------------------------------------


def variant(base: str, label: str, **params: Any) -> str:
    """Register ``base`` with other default ``params`` under ``label``; returns ``label``."""
    from routecast.routers import ROUTERS, register_router, router_names

    router_names()  # load the built-ins
    if label in ROUTERS:
        return label
    cls = ROUTERS[base]

    def init(self: Any, **kw: Any) -> None:
        cls.__init__(self, **{**params, **kw})

    register_router(type(f"{cls.__name__}Variant", (cls,), {"name": label, "__init__": init}))
    return label


def knn_names(encoder: str) -> list[str]:
    suffix = "" if encoder == "tfidf" else f"/{encoder}"
    return [variant("knn", f"knn-k{k}{suffix}", k=k, encoder=encoder) for k in KS]


def learned_names(encoder: str, *, mean_cost: bool) -> list[str]:
    if encoder == "tfidf":
        names = list(LEARNED)
    else:
        names = [variant(r, f"{r}/{encoder}", encoder=encoder) for r in LEARNED]
    if mean_cost:
        names += [variant(r, f"{r}/mean-cost", cost_model="mean", encoder=encoder)
                  for r in OWN]
    return names


# -- running -----------------------------------------------------------------------------------


def run_table(data: Any, encoder: str, n_boot: int, *, mean_cost: bool = True,
              say: Any = print) -> dict[str, Any]:
    """Validation AIQ of every kNN k, then the test table of every router."""
    from routecast.bench.evaluate import evaluate

    knns = knn_names(encoder)
    t0 = time.perf_counter()
    val = evaluate(data, split="validation", routers=knns, n_boot=0, cascades=False)
    val_aiq = {r["name"]: r["aiq"] for r in val["routers"]}
    best_k = max(knns, key=lambda n: val_aiq[n])
    listed = ", ".join(f"{n}={a:.4f}" for n, a in val_aiq.items())
    say(f"  {data.name}/{encoder}: kNN validation AIQ {listed} -> best {best_k} "
        f"({time.perf_counter() - t0:.0f} s)")
    routers = [*BASELINES, *knns, *learned_names(encoder, mean_cost=mean_cost)]
    t0 = time.perf_counter()
    result = evaluate(data, split="test", routers=routers, n_boot=n_boot, cascades=False)
    say(f"  {data.name}/{encoder}: test table in {time.perf_counter() - t0:.0f} s")
    return {**result, "encoder": encoder, "knn_validation_aiq": val_aiq, "knn_best_k": best_k}


# -- printing ----------------------------------------------------------------------------------


def _ci(ci: Sequence[float] | None, fmt: str) -> str:
    return "" if not ci else " [" + ", ".join(fmt.format(v) for v in ci) + "]"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    two = any("pair" in r for r in result["routers"])
    best = result["best_single"]
    title = (f"{result['dataset']} ({result['encoder']}): test split, {result['n_prompts']} "
             f"prompts, {len(result['models'])} models; best single {best['name']} q "
             f"{best['quality']:.4f} at ${best['cost_usd']:.3g}; oracle q "
             f"{result['oracle']['quality']:.4f}; zero-router AIQ "
             f"{result['zero_router_aiq']:.4f}; bootstrap {result['n_boot']}")
    table = Table(title=title, title_justify="left")
    cols = ["router", "AIQ [95% CI]", "vs zero [95% CI]", "savings@95 [95% CI]",
            "cal. 95%: q / cost vs best", "oracle gap", "fit s", "ms/prompt"]
    if two:
        cols += ["APGR", "CPT(50%)", "CPT(80%)"]
    for c in cols:
        table.add_column(c, justify="left" if c == "router" else "right")
    for r in result["routers"]:
        ci = r.get("ci") or {}
        cal = r.get("calibrated_95") or {}
        name = r["name"] + (" *best k on val*" if r["name"] == result["knn_best_k"] else "")
        row = [name, f"{r['aiq']:.4f}" + _ci(ci.get("aiq"), "{:.3f}"),
               f"{r['aiq_minus_zero']:+.4f}" + _ci(ci.get("aiq_minus_zero"), "{:+.3f}"),
               _pct(r["savings_at_95"]) + _ci(ci.get("savings_at_95"), "{:.1%}"),
               ("unreachable" if cal.get("quality") is None
                else f"{cal['quality_vs_best']:.1%} / {cal['cost_vs_best']:.1%}"),
               f"{r['oracle_gap']:.3f}", f"{r['fit_s']:.1f}", f"{r['route_ms_per_prompt']:.3f}"]
        if two:
            p = r.get("pair") or {}
            row += [f"{p.get('apgr', float('nan')):.3f}", _pct(p.get("cpt_50")),
                    _pct(p.get("cpt_80"))]
        table.add_row(*row)
    Console(width=200).print(table)


def print_routellm(console_print: Any = print) -> None:
    console_print("RouteLLM, MMLU (GPT-4-1106 vs Mixtral-8x7B), published:")
    console_print(f"  {'router':62s} {'APGR':>6s} {'CPT(50%)':>9s} {'CPT(80%)':>9s}")
    for name, apgr, c50, c80 in ROUTELLM_MMLU:
        console_print(f"  {name:62s} {apgr:6.3f} {c50:9.1%} {c80:9.1%}")
    console_print("  " + ROUTELLM_NOTE)


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data(),
                        help="folder with routerbench-subset/, routellm-evals/, "
                             "llmrouter-9model/ (default: %(default)s)")
    parser.add_argument("--only", default="routerbench,mmlu,llmrouter",
                        help="comma-separated tables among routerbench, mmlu, llmrouter")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples (default 200)")
    parser.add_argument("--minilm", action="store_true",
                        help="also the RouterBench table with the MiniLM encoder")
    parser.add_argument("--few-labels", action="store_true",
                        help=f"also the few-labels curve of adding {FEW_LABELS_MODEL}")
    parser.add_argument("--repeats", type=int, default=5, help="few-labels draws (default 5)")
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    args = parser.parse_args(argv)

    from routecast.data import load_dataset
    from routecast.data.routellm import load_mmlu
    from routecast.errors import RoutecastError

    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    loaders = {
        "routerbench": lambda: load_dataset(args.data / "routerbench-subset"),
        "mmlu": lambda: load_mmlu(args.data / "routellm-evals"),
        "llmrouter": lambda: load_dataset(args.data / "llmrouter-9model"),
    }
    out: dict[str, Any] = {"tables": [], "few_labels": None,
                           "routellm_mmlu_published": [list(r) for r in ROUTELLM_MMLU]}
    try:
        for key in wanted:
            if key not in loaders:
                parser.error(f"unknown table {key!r}; use {', '.join(loaders)}")
            data = loaders[key]()
            print(f"{key}: {data!r}", flush=True)
            result = run_table(data, "tfidf", args.bootstrap)
            print_table(result)
            if key == "mmlu":
                print_routellm()
            out["tables"].append(result)
            if key == "routerbench" and args.minilm:
                result = run_table(data, "minilm", args.bootstrap, mean_cost=False)
                print_table(result)
                out["tables"].append(result)
            if key == "routerbench" and args.few_labels:
                from routecast.bench.fewlabels import few_labels
                from routecast.bench.fewlabels import print_table as print_few

                t0 = time.perf_counter()
                few = few_labels(data, FEW_LABELS_MODEL, routers=FEW_LABELS_ROUTERS,
                                 repeats=args.repeats)
                print_few(few)
                print(f"few-labels curve in {time.perf_counter() - t0:.0f} s")
                out["few_labels"] = few
    except RoutecastError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
