"""The learning curve of a cascade endpoint that tunes its own thresholds from its traffic.

A stream of the cascade set's train and validation prompts (llm-cascades-zellinger, which
records every model's answer, cost and log-prob confidence), in random order, goes through
the learning core the server runs for a cascade endpoint with a ``learning:`` block
(:class:`routecast.learning.cascade.CascadeLearner` and its :class:`RowSampler`), in-process
over the recorded outcomes. Per request: the current thresholds walk the chain (every visited
step paid, its recorded confidence compared with the step's threshold); the sampler decides
whether the request is completed into a labelled row (judge calls for every step's answer,
shadow answers of the steps not visited); refits run when due. A judge call costs the judge
model's price for the rubric, prompt and answer tokens (4 characters per token) plus 4 output
tokens; with ``--noise p`` a share ``p`` of verdicts is flipped (seeded) and the learner is
told so.

After 100, 250, 500 and 1,000 requests (and the whole stream) it prints: complete rows,
labels, learning spend as a share of what always the chain's strongest step would have cost
over the same requests, and the current thresholds on the test split (never streamed): mean
quality against the target (``--quality-fraction`` of the strongest step's test quality) and
mean cost as a share of that step's. References on the same test prompts: the cold start
(never accept early), and the same chain's thresholds tuned offline on every train row.

With ``--live`` the stream goes through the real thing instead: ``routecast fleet`` replaying
the data set, ``routecast serve`` with a cold cascade endpoint that learns, and the official
``openai`` client sending every prompt; the thresholds the server swapped in last are
replayed on the test split (:func:`run_live`).

    python benchmarks/cascade_learning.py [--models a,b,c] [--noise 0,0.1] [--seeds 0,1,2]
                                          [--spend-fraction 0.2] [--live] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "llm-cascades-zellinger"
CHECKPOINTS = (100, 250, 500, 1000)


def judge_costs(data: Any, judge_in: float, judge_out: float) -> np.ndarray:
    from routecast.data.pricing import estimate_tokens
    from routecast.learning.judge import RUBRIC

    rubric = estimate_tokens(RUBRIC) + 12
    tokens = np.array([[rubric + estimate_tokens(p) + estimate_tokens(str(r or ""))
                        for r in row] for p, row in zip(data.prompts, data.responses,
                                                        strict=True)], dtype=np.float64)
    return np.asarray((tokens * judge_in + 4 * judge_out) / 1e6)


def on_test(thresholds: tuple[float, ...], test: Any) -> tuple[float, float]:
    """Mean quality and cost of the chain with ``thresholds`` on the test rows."""
    from routecast.learning.cascade import replay_thresholds

    assert test.confidence is not None
    return replay_thresholds(thresholds, test.confidence, test.quality, test.cost_usd,
                             np.ones(test.n_prompts))


def run(data: Any, models: list[str], noise: float, seed: int, args: Any) -> dict[str, Any]:
    from routecast.cascades.cascade import Cascade
    from routecast.learning import SpendMeter
    from routecast.learning.cascade import (
        CascadeLearner,
        CascadeLearnerSettings,
        Goal,
        RowSampler,
        tune_thresholds,
    )

    chain = data.select_models(models)
    stream = chain.take(np.flatnonzero(chain.split != "test"))
    test = chain.subset("test")
    train = chain.subset("train")
    assert stream.confidence is not None and train.confidence is not None
    judge_usd = judge_costs(stream, *args.judge_price)
    k = len(models)
    test_q = test.mean_quality()
    target = args.quality_fraction * float(test_q[-1])
    best_cost = float(test.mean_cost_usd()[-1])
    offline = tune_thresholds(train.confidence, train.quality, train.cost_usd,
                              np.ones(train.n_prompts),
                              Goal(args.quality_fraction, z=args.z), n_levels=args.levels)
    cold = on_test((float("inf"),) * (k - 1), test)
    off = on_test(offline, test)
    learner = CascadeLearner(Cascade(tuple(models), (0.5,) * (k - 1)),
                             CascadeLearnerSettings(refit_every=args.refit_every,
                                                    first_refit=args.first_refit,
                                                    quality_fraction=args.quality_fraction,
                                                    n_levels=args.levels, z=args.z,
                                                    miss_z=args.miss_z,
                                                    judge_noise=noise, seed=seed),
                             cold=True)
    sampler = RowSampler(power=args.power, seed=seed)
    meter = SpendMeter(budget_usd=None, spend_fraction=args.spend_fraction)
    rng = np.random.default_rng(seed + 7)
    order = np.random.default_rng(seed).permutation(stream.n_prompts)
    marks = {*(c for c in CHECKPOINTS if c < len(order)), len(order)}
    nominal = stream.mean_cost_usd()  # list prices stand-in before any cost is recorded
    rows = []
    print(f"{'+'.join(models)} seed={seed} noise={noise:.2f}: test target {target:.3f}; cold "
          f"start q={cold[0]:.3f} cost={cold[1] / best_cost:.1%}; offline-tuned "
          f"{tuple(round(t, 3) for t in offline)} q={off[0]:.3f} cost={off[1] / best_cost:.1%}")
    for n, i in enumerate(order, start=1):
        thresholds = learner.current.cascade.thresholds
        visited = k
        for j in range(k - 1):
            if stream.confidence[i, j] >= thresholds[j]:
                visited = j + 1
                break
        meter.watch(float(stream.cost_usd[i, -1]))
        known = learner.mean_costs()
        shadow_est = float(np.where(np.isfinite(known), known, nominal)[visited:].sum())
        cost = float(judge_usd[i].sum()) + shadow_est
        p = sampler.probability(cost, meter.pace_per_request())
        if cost <= meter.allowance() and sampler.draw(p):
            prompt = stream.prompts[i]
            for j, m in enumerate(models):
                meter.charge(float(judge_usd[i, j]), "judge")
                if j >= visited:
                    meter.charge(float(stream.cost_usd[i, j]), "shadow")
                q = float(stream.quality[i, j])
                if noise and rng.random() < noise:
                    q = 1.0 - q
                learner.record(prompt, m, q, float(stream.cost_usd[i, j]),
                               score=(float(stream.confidence[i, j]) if j < k - 1 else None),
                               scored=j < k - 1, weight=1.0 / p)
        if learner.due():
            learner.refit()
        if n in marks:
            q, c = on_test(learner.current.cascade.thresholds, test)
            row = {"models": models, "seed": seed, "noise": noise, "requests": n,
                   "rows": learner.complete_rows(), "labels": learner.n_labels,
                   "spend_fraction": meter.spent_usd / meter.baseline_usd,
                   "thresholds": list(learner.current.cascade.thresholds),
                   "quality": q, "target": target, "cost_fraction": c / best_cost,
                   "offline_quality": off[0], "offline_cost_fraction": off[1] / best_cost,
                   "refits": len(learner.reports),
                   "swaps": sum(r.swapped for r in learner.reports)}
            rows.append(row)
            print(f"  n={n:5d} rows={row['rows']:4d} spend={row['spend_fraction']:6.1%} "
                  f"thresholds={tuple(round(t, 3) for t in row['thresholds'])} test "
                  f"q={q:.3f} (target {target:.3f}, {q - target:+.3f}) "
                  f"cost={row['cost_fraction']:.1%} (offline {off[1] / best_cost:.1%}) "
                  f"swaps {row['swaps']}/{row['refits']}", flush=True)
    return {"models": models, "seed": seed, "noise": noise, "offline": list(offline),
            "cold": {"quality": cold[0], "cost_fraction": cold[1] / best_cost},
            "curve": rows}


def run_live(path: Path, data: Any, models: list[str], noise: float, seed: int,
             args: Any) -> dict[str, Any]:
    """The same stream through the real server: ``routecast fleet`` replaying the data (its
    judge gives the recorded quality, flipped with probability ``noise``), ``routecast serve``
    with a cascade endpoint that learns (cold), every prompt sent by the official ``openai``
    client, one at a time. The thresholds the server swapped in last are replayed on the test
    split; spend is what the server's learning_spend table holds."""
    import sqlite3
    import tempfile

    import openai

    from routecast.fleet import spawn_fleet
    from routecast.fleet.demo import routecast_serve

    chain = data.select_models(models)
    stream = chain.take(np.flatnonzero(chain.split != "test"))
    test = chain.subset("test")
    order = np.random.default_rng(seed).permutation(stream.n_prompts)[:args.live_requests]
    best_cost = float(test.mean_cost_usd()[-1])
    target = args.quality_fraction * float(test.mean_quality()[-1])
    with tempfile.TemporaryDirectory() as tmp, \
            spawn_fleet(path, judge_noise=noise, seed=seed) as fleet:
        judge_price = {"input_usd_per_mtok": args.judge_price[0],
                       "output_usd_per_mtok": args.judge_price[1]}
        config = {"models": {**fleet.models_config(judge=False),
                             fleet.judge_model: {"base_url": fleet.base_url, **judge_price}},
                  "endpoints": {"smart": {"type": "cascade", "models": models, "learning": {
                      "judge": {"model": fleet.judge_model, "scale": 1, "noise": noise},
                      "spend_fraction": args.spend_fraction, "refit_every": args.refit_every,
                      "first_refit": args.first_refit, "quality_fraction": args.quality_fraction,
                      "max_learned_per_s": 0}}},
                  "storage": {"db": str(Path(tmp) / "live.db")}}
        with routecast_serve(config, Path(tmp)) as url:
            client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
            baseline = 0.0
            for n, i in enumerate(order, start=1):
                client.chat.completions.create(
                    model="smart", messages=[{"role": "user", "content": stream.prompts[i]}])
                baseline += float(stream.cost_usd[i, -1])
                if n % 200 == 0:
                    print(f"  live: {n} requests sent", flush=True)
            time.sleep(2.0)  # the background learning's last labels and refit
            con = sqlite3.connect(Path(tmp) / "live.db")
            refits = con.execute("SELECT router, swapped FROM learning_refits ORDER BY id"
                                 ).fetchall()
            spent = con.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM learning_spend"
                                ).fetchone()[0]
            rows = con.execute("SELECT COUNT(DISTINCT prompt) FROM labels").fetchone()[0]
            con.close()
    swapped = [r for r, ok in refits if ok]
    thresholds = (tuple(float("inf") if t == "never" else float(t)
                        for t in swapped[-1].split()[1].split(","))
                  if swapped else (float("inf"),) * (len(models) - 1))
    q, c = on_test(thresholds, test)
    print(f"live {'+'.join(models)} seed={seed} noise={noise:.2f}: {len(order)} requests, "
          f"{rows} prompts labelled, spend {spent / baseline:.1%}, refits {len(refits)} "
          f"(swapped {len(swapped)}), thresholds {tuple(round(t, 3) for t in thresholds)}: "
          f"test q={q:.3f} (target {target:.3f}, {q - target:+.3f}) "
          f"cost={c / best_cost:.1%}", flush=True)
    return {"models": models, "seed": seed, "noise": noise, "live": True,
            "requests": len(order), "prompts_labelled": rows, "spend_fraction": spent / baseline,
            "refits": len(refits), "swaps": len(swapped), "thresholds": list(thresholds),
            "quality": q, "target": target, "cost_fraction": c / best_cost}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--models", action="append",
                   help="a chain, cheapest first, comma-separated (repeatable; default: "
                        "llama3.1-8b,llama3.1-70b,llama3.1-405b and gpt-4o-mini,gpt-4o)")
    p.add_argument("--noise", default="0,0.1", help="judge noise levels, comma-separated")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--spend-fraction", type=float, default=0.2)
    p.add_argument("--quality-fraction", type=float, default=0.95)
    p.add_argument("--refit-every", type=int, default=50)
    p.add_argument("--first-refit", type=int, default=30)
    p.add_argument("--levels", type=int, default=16)
    p.add_argument("--power", type=float, default=0.5)
    p.add_argument("--z", type=float, default=1.0,
                   help="standard errors between a tuned cascade and its target (0: none)")
    p.add_argument("--miss-z", type=float, default=0.0,
                   help="validation: short of the target by more than this many standard "
                        "errors of the held-out rows is a miss")
    p.add_argument("--judge-price", default="0.2,0.2",
                   help="judge USD per 1M input,output tokens")
    p.add_argument("--live", action="store_true",
                   help="send the stream through a real routecast server over the replay "
                        "fleet instead (one seed per --seeds entry)")
    p.add_argument("--live-requests", type=int, default=1188)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.judge_price = tuple(float(x) for x in args.judge_price.split(","))
    from routecast.data import load_dataset

    data = load_dataset(args.data)
    chains = [m.split(",") for m in (args.models or ["llama3.1-8b,llama3.1-70b,llama3.1-405b",
                                                      "gpt-4o-mini,gpt-4o"])]
    if args.live:
        live = [run_live(args.data, data, chain, float(noise), int(seed), args)
                for chain in chains for noise in args.noise.split(",")
                for seed in args.seeds.split(",")]
        if args.json:
            args.json.write_text(json.dumps(live, indent=1))
        return 0
    out = [run(data, chain, float(noise), int(seed), args)
           for chain in chains for noise in args.noise.split(",")
           for seed in args.seeds.split(",")]
    print("\nat the end of the stream (median over seeds):")
    for chain in chains:
        for noise in sorted({r["noise"] for r in out}):
            ends = [r["curve"][-1] for r in out if r["models"] == chain and r["noise"] == noise]
            print(f"  {'+'.join(chain):<40} noise={noise:.2f}: quality - target "
                  f"{np.median([e['quality'] - e['target'] for e in ends]):+.3f} "
                  f"(worst {min(e['quality'] - e['target'] for e in ends):+.3f}), cost "
                  f"{np.median([e['cost_fraction'] for e in ends]):.1%} (offline "
                  f"{ends[0]['offline_cost_fraction']:.1%}, quality - target "
                  f"{ends[0]['offline_quality'] - ends[0]['target']:+.3f}), spend "
                  f"{np.median([e['spend_fraction'] for e in ends]):.1%}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
