"""The learning curve of a routed endpoint that starts cold and learns from its own traffic.

A stream of the RouterBench subset's train and validation prompts, in random order, goes
through the learning loop's core (the same :class:`routecast.learning.Learner` and explorers
the server runs, driven in-process over the recorded outcomes for speed). Per request: the
current router and policy pick the served model; the explorer picks which labels to buy (the
served answer's judgement, shadow answers of other models plus their judgements); the labels
are the recorded qualities (with ``--judge-noise p``: a fraction ``p`` of verdicts flipped,
seeded); refits run when due. Spend: a shadow answer costs its recorded cost; a judge call
costs the judge model's price for the rubric, prompt and answer tokens (estimated from the
text at 4 characters per token) plus 4 output tokens. The baseline is what always using the
best single model (GPT-4) would have cost over the same requests.

After 100, 250, 500, 1,000 and 2,000 requests it prints: labels, exploration and judge spend
(as a share of the baseline), and the current router's AIQ on the test split (never streamed),
its gain over the zero router as a share of the same router family fitted offline on every
train label, and its calibrated 95 % point on the test split (quality vs the target of 95 % of
the best single model's test quality, and cost as a share of that model's).

Strategies compared: ``active`` (the default explorer, budget-paced to ``--spend-fraction``),
``active-greedy`` (the same without randomisation),
and the references ``uniform-30x2`` (30 % of requests shadowed to 2 random models) and
``uniform-all-x3`` (every request shadowed to 3), each also judging every served answer.

``--shift`` runs the mix-shift experiment instead: ARC and Winogrande prompts first, then MBPP
only; it reports how many requests after the shift the calibrated point needs to be back
within 2 points of its quality target on the MBPP test prompts.

With judge noise the learner is told the noise level (``learning.judge.noise``) unless
``--no-correct-noise``; ``--no-prompt-cost`` and ``--shrink-folds 0`` turn off the learner's
per-prompt cost estimate and its out-of-fold shrinkage, to compare; ``--recent 0``,
``--swap-tolerance 0`` and ``--anchor-labels 0`` turn off the calibration's weighting to the
latest prompts' mix, the refit's tolerance, and the cold start model's anchor labels
(``learning.calibration_recent``, ``swap_tolerance_se``, ``anchor_labels``).

    python benchmarks/learning_curve.py [--strategies active,uniform-30x2] [--noise 0,0.1]
                                        [--shift] [--seed N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "routerbench-subset"
CHECKPOINTS = (100, 250, 500, 1000, 2000)


@dataclass
class World:
    """The recorded data the stream replays, and the fixed test-split reference figures."""

    stream: Any  # Dataset: train + validation
    test: Any
    judge_usd: np.ndarray  # (n_stream, m): what judging each recorded answer costs
    best: int  # column of the best single model (on the stream's data)
    zero_aiq: float
    offline_aiq: float
    cost_range: tuple[float, float]


def build_world(data_path: Path, judge_in: float, judge_out: float, router: str,
                params: dict[str, float] | None = None) -> World:
    from routecast import metrics
    from routecast.data import load_dataset
    from routecast.data.pricing import estimate_tokens
    from routecast.learning.judge import RUBRIC
    from routecast.routers import make_router

    data = load_dataset(data_path)
    stream = data.take(np.flatnonzero(data.split != "test"))
    test = data.subset("test")
    rubric = estimate_tokens(RUBRIC) + 12
    assert stream.responses is not None
    tokens = np.array([[rubric + estimate_tokens(p) + estimate_tokens(str(r or ""))
                        for r in row] for p, row in zip(stream.prompts, stream.responses,
                                                        strict=True)], dtype=np.float64)
    judge_usd = (tokens * judge_in + 4 * judge_out) / 1e6
    q, c = test.mean_quality(), test.mean_cost_usd()
    lo, hi = float(c.min()), float(c.max())
    offline = make_router(router, **(params or {})).fit(data.subset("train"))
    return World(stream, test, judge_usd, int(np.argmax(stream.mean_quality())),
                 metrics.aiq(c, q, lo, hi), test_aiq(offline, test, lo, hi), (lo, hi))


def test_aiq(router: Any, test: Any, lo: float, hi: float) -> float:
    from routecast import metrics
    from routecast.policy import choose, weight_grid

    prompts = list(test.prompts)
    pq, pc = router.predict(prompts), router.predict_cost(prompts)
    rows = np.arange(test.n_prompts)
    qs, cs = [], []
    for w in weight_grid(pc):
        pick = choose(pq, pc, float(w))
        qs.append(test.quality[rows, pick].mean())
        cs.append(test.cost_usd[rows, pick].mean())
    return metrics.aiq(np.asarray(cs), np.asarray(qs), lo, hi)


def point(learner: Any, test: Any) -> tuple[float, float, float]:
    """The current policy on ``test``: quality, its target (95 % of the best single model's),
    and cost as a share of that model's."""
    picks = learner.route(list(test.prompts))
    cols = np.asarray([test.models.index(m) for m in picks])
    rows = np.arange(test.n_prompts)
    mq, mc = test.mean_quality(), test.mean_cost_usd()
    b = int(np.argmax(mq))
    return (float(test.quality[rows, cols].mean()), 0.95 * float(mq[b]),
            float(test.cost_usd[rows, cols].mean() / mc[b]))


def router_params(args: Any) -> dict[str, float]:
    return {k: float(v) for k, v in (x.split("=", 1) for x in args.router_param)}


def make_explorer(strategy: str, seed: int, warmup: int = 10) -> Any:
    from routecast.learning import ActiveExplorer, UniformExplorer

    if strategy == "active":
        return ActiveExplorer(seed=seed, warmup=warmup)
    if strategy == "active-greedy":
        return ActiveExplorer(randomized=False)
    if strategy == "uniform-30x2":
        return UniformExplorer(fraction=0.3, k=2, seed=seed)
    if strategy == "uniform-all-x3":
        return UniformExplorer(fraction=1.0, k=3, seed=seed)
    raise SystemExit(f"unknown strategy {strategy!r}")


def run_stream(world: World, order: np.ndarray, strategy: str, noise: float, args: Any,
               checkpoints: tuple[int, ...], on_checkpoint: Any) -> Any:
    from routecast.learning import Learner, LearnerSettings, SpendMeter

    s = world.stream
    nominal = s.mean_cost_usd()  # list prices stand-in: what a typical answer costs
    params = router_params(args)
    learner = Learner(s.models, nominal, LearnerSettings(router=args.router,
                                                         router_params=params,
                                                         refit_every=args.refit_every,
                                                         kernel_power=args.kernel_power,
                                                         calibration_window=args.window,
                                                         judge_noise=(noise if args.correct_noise
                                                                      else 0.0),
                                                         prompt_cost=args.prompt_cost,
                                                         shrink_folds=args.shrink_folds,
                                                         swap_tolerance_se=args.swap_tolerance,
                                                         anchor_labels=args.anchor_labels,
                                                         calibration_recent=args.recent,
                                                         seed=args.seed))
    paced = strategy.startswith("active")
    meter = SpendMeter(budget_usd=None, spend_fraction=args.spend_fraction if paced else None)
    explorer = make_explorer(strategy, args.seed, args.warmup)
    rng = np.random.default_rng(args.seed + 7)
    col = {m: j for j, m in enumerate(s.models)}
    for n, i in enumerate(order, start=1):
        prompt = s.prompts[i]
        served = learner.route([prompt])[0]
        meter.watch(float(s.cost_usd[i, world.best]))
        cands = learner.candidates(prompt, served, judge_usd=float(world.judge_usd[i].mean()))
        for cand in explorer.plan(cands, meter):
            j = col[cand.model]
            meter.charge(float(world.judge_usd[i, j]), "judge")
            if not cand.served:
                meter.charge(float(s.cost_usd[i, j]), "shadow")
            q = float(s.quality[i, j])
            if noise and rng.random() < noise:
                q = 1.0 - q  # a flipped verdict
            learner.record(prompt, cand.model, q, float(s.cost_usd[i, j]))
        if learner.due():
            learner.refit()
        if n in checkpoints:
            on_checkpoint(n, learner, meter)
    return learner, meter


def curve(world: World, strategy: str, noise: float, args: Any) -> list[dict[str, Any]]:
    order = np.random.default_rng(args.seed).permutation(world.stream.n_prompts)
    order = order[:args.max_requests]
    checkpoints = tuple(c for c in CHECKPOINTS if c <= len(order))
    rows: list[dict[str, Any]] = []
    lo, hi = world.cost_range
    t0 = time.perf_counter()

    def on_checkpoint(n: int, learner: Any, meter: Any) -> None:
        a = test_aiq(learner.current.router, world.test, lo, hi)
        q, target, cost = point(learner, world.test)
        gain = (a - world.zero_aiq) / (world.offline_aiq - world.zero_aiq)
        row = {"strategy": strategy, "noise": noise, "requests": n,
               "labels": learner.labels.n_labels, "shadow_usd": meter.shadow_usd,
               "judge_usd": meter.judge_usd, "baseline_usd": meter.baseline_usd,
               "spend_fraction": meter.spent_usd / meter.baseline_usd, "aiq": a,
               "gain_fraction": gain, "router": learner.current.kind,
               "point_quality": q, "point_target": target, "point_cost_fraction": cost,
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"{strategy:>15} noise={noise:.2f} n={n:5d} labels={row['labels']:5d} "
              f"spend={row['spend_fraction']:6.1%} (judge {meter.judge_usd:.3f}$ shadow "
              f"{meter.shadow_usd:.3f}$ of {meter.baseline_usd:.3f}$) AIQ={a:.4f} "
              f"gain={gain:6.1%} [{row['router']}] 95%-point q={q:.3f} (target "
              f"{target:.3f}) cost={cost:.1%} t={row['seconds']:.0f}s", flush=True)
        if args.verbose:
            print("   labels per model:", dict(zip(learner.models,
                                                   learner.labels.counts().astype(int).tolist(),
                                                   strict=True)))

    run_stream(world, order, strategy, noise, args, checkpoints, on_checkpoint)
    return rows


def shift(world: World, args: Any) -> dict[str, Any]:
    """ARC + Winogrande first, then MBPP: requests until the point is back near its target."""
    s, test = world.stream, world.test
    assert s.task is not None and test.task is not None
    rng = np.random.default_rng(args.seed)
    first = rng.permutation(np.flatnonzero(np.isin(s.task, ["arc-challenge", "winogrande"])))
    then = rng.permutation(np.flatnonzero(np.asarray(s.task) == "mbpp"))
    first = first[:args.shift_at]
    order = np.concatenate([first, then[:args.shift_len]])
    mbpp_test = test.take(np.flatnonzero(np.asarray(test.task) == "mbpp"))
    every = args.shift_every
    marks = tuple(range(len(first), len(order) + 1, every))
    trace: list[dict[str, Any]] = []

    def on_checkpoint(n: int, learner: Any, meter: Any) -> None:
        q, target, cost = point(learner, mbpp_test)
        trace.append({"after_shift": n - len(first), "quality": q, "target": target,
                      "cost_fraction": cost, "labels": learner.labels.n_labels,
                      "spend_fraction": meter.spent_usd / meter.baseline_usd})
        print(f"  shift +{n - len(first):4d}: MBPP point q={q:.3f} target={target:.3f} "
              f"cost={cost:.1%} spend={trace[-1]['spend_fraction']:.1%}", flush=True)

    run_stream(world, order, "active", 0.0, args, marks, on_checkpoint)
    back = next((t["after_shift"] for t in trace if t["quality"] >= t["target"] - 0.02), None)
    after = [t for t in trace if back is not None and t["after_shift"] >= back]
    q_after = float(np.mean([t["quality"] for t in after])) if after else float("nan")
    cost_after = float(np.mean([t["cost_fraction"] for t in after])) if after else float("nan")
    print(f"shift: back within 2 points of the target after {back} requests; from then on "
          f"the MBPP point's mean quality {q_after:.3f} (target {trace[0]['target']:.3f}) at "
          f"{cost_after:.1%} of GPT-4's cost on MBPP")
    return {"trace": trace, "requests_to_recover": back, "quality_after": q_after,
            "cost_fraction_after": cost_after}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--router", default="linear")
    p.add_argument("--router-param", action="append", default=[], metavar="KEY=NUMBER",
                   help="a parameter of the learned router (e.g. C=0.3), repeatable")
    p.add_argument("--strategies", default="active,uniform-30x2,uniform-all-x3")
    p.add_argument("--noise", default="0,0.1", help="judge noise levels, comma-separated")
    p.add_argument("--correct-noise", action=argparse.BooleanOptionalAction, default=True,
                   help="tell the learner the judge's noise (learning.judge.noise), so that it "
                        "de-biases labels and predictions (default: on)")
    p.add_argument("--prompt-cost", action=argparse.BooleanOptionalAction, default=True,
                   help="the learner's per-prompt cost estimate (learning.prompt_cost)")
    p.add_argument("--shrink-folds", type=int, default=3,
                   help="folds of the out-of-fold shrinkage of the learned router (0: off)")
    p.add_argument("--swap-tolerance", type=float, default=1.0,
                   help="standard errors by which a refit may validate worse than the current "
                        "router and still be swapped in (0: any worse score keeps it out)")
    p.add_argument("--anchor-labels", type=int, default=100,
                   help="labels the cold start's model is explored to first (0: off)")
    p.add_argument("--recent", type=int, default=100,
                   help="latest labelled prompts the calibration window is weighted to "
                        "(learning.calibration_recent; 0: equal weights)")
    p.add_argument("--spend-fraction", type=float, default=0.2)
    p.add_argument("--refit-every", type=int, default=300)
    p.add_argument("--kernel-power", type=float, default=3.0)
    p.add_argument("--warmup", type=int, default=10, help="labels per model explored first")
    p.add_argument("--window", type=int, default=300,
                   help="held-out prompts (most recent) the policy is calibrated on")
    p.add_argument("--max-requests", type=int, default=2000)
    p.add_argument("--judge-price", default="0.2,0.2",
                   help="judge USD per 1M input,output tokens (default: a Mistral-7B-class "
                        "judge at 0.2/0.2; gpt-3.5-turbo-1106 is 1,2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shift", action="store_true")
    p.add_argument("--shift-at", type=int, default=1000)
    p.add_argument("--shift-len", type=int, default=600)
    p.add_argument("--shift-every", type=int, default=25)
    p.add_argument("--json", type=Path)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    judge_in, judge_out = (float(x) for x in args.judge_price.split(","))
    world = build_world(args.data, judge_in, judge_out, args.router, router_params(args))
    print(f"test split: zero-router AIQ {world.zero_aiq:.4f}, {args.router} fitted offline on "
          f"all train labels {world.offline_aiq:.4f} "
          f"(gain {world.offline_aiq - world.zero_aiq:+.4f})")
    out: dict[str, Any] = {"zero_aiq": world.zero_aiq, "offline_aiq": world.offline_aiq}
    if args.shift:
        out["shift"] = shift(world, args)
    else:
        out["curves"] = [row for noise in (float(x) for x in args.noise.split(","))
                         for strategy in args.strategies.split(",")
                         for row in curve(world, strategy, noise, args)]
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
