"""Live parity: does a served router / cascade deliver what the replay benchmark promised?

For each data set (the RouterBench subset and the cascade set, test split) this script

1. fits and calibrates a router (``routecast fit --router linear`` on train, ``routecast
   calibrate --quality-fraction 0.95`` on validation) and tunes a cascade (``routecast
   tune-cascade``: the learned signal on RouterBench, which records no confidence; the recorded
   log-prob confidence on the cascade set), with the commands a user runs;
2. starts the replay fleet over the test split (``routecast fleet``, a subprocess, speed 0)
   and ``routecast serve`` (a subprocess) with endpoints ``routed`` (the saved router),
   ``cascade`` (the tuned cascade) and ``best`` (always the best single model on validation);
3. sends every test prompt (or a seeded ``--sample``) to each endpoint through the official
   ``openai`` client, reading the answering model and ``x-routecast-cost-usd`` from the
   response headers, and has the fleet's judge score each answer text (its recorded quality);
4. replays the same router + policy and cascade on the same prompts with the library
   (``Policy.choose`` over ``Router.predict``; ``Cascade.replay`` over the signal's scores),
   as ``routecast bench`` and ``tune-cascade`` do, and prints served vs replayed mean quality
   and cost per endpoint, how many prompts got a different model, and where the cost differs.

Run from the project root (3-6 minutes measured on 2 busy cores, half of it fitting)::

    .venv/bin/python benchmarks/live_parity.py [--sample 0] [--seed 0] [--json parity.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from routecast.data.dataset import Dataset
    from routecast.fleet import RunningFleet

#: data folder, cascade signal, cascade endpoint's log-prob summary (None: not read).
DATASETS = (("routerbench-subset", "learned"), ("llm-cascades-zellinger", "confidence"))


def shared_data() -> Path:
    shared = os.environ.get("ROUTECAST_SHARED_DATA")
    return Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"


def cli(*args: str) -> str:
    """Run one routecast command as a user would; its stdout, or exit with its error."""
    done = subprocess.run([sys.executable, "-m", "routecast.cli", *args], capture_output=True,
                          text=True, timeout=900, check=False)
    if done.returncode != 0:
        sys.exit(f"routecast {' '.join(args)} failed:\n{done.stderr.strip()[-3000:]}")
    return done.stdout


@dataclass
class Served:
    """What one endpoint did on each prompt sent."""

    model: list[str]
    route: list[list[str]]
    cost_usd: list[float]
    quality: list[float]


def messages(data: Dataset, row: int) -> list[Any]:
    """The chat a client sends for one prompt: the data's system prompt (the cascade set has
    one per task) and the prompt as the user turn."""
    system = data.meta.get("system_prompts")
    out: list[Any] = []
    if isinstance(system, dict) and data.task is not None and system.get(data.task[row]):
        out.append({"role": "system", "content": str(system[data.task[row]])})
    return [*out, {"role": "user", "content": data.prompts[row]}]


def send(server_url: str, fleet: RunningFleet, data: Dataset, rows: list[int],
         endpoint: str, concurrency: int) -> Served:
    """Every prompt through the served endpoint, each answer judged by the fleet's judge."""
    import openai

    served = openai.OpenAI(base_url=server_url, api_key="unused", max_retries=0, timeout=120)
    judge = openai.OpenAI(base_url=fleet.base_url, api_key="unused", max_retries=0, timeout=60)

    def one(row: int) -> tuple[str, list[str], float, float]:
        chat = messages(data, row)
        raw = served.chat.completions.with_raw_response.create(model=endpoint, messages=chat)
        answer = raw.parse().choices[0].message.content or ""
        verdict = judge.chat.completions.create(model=fleet.judge_model, messages=[
            chat[-1], {"role": "assistant", "content": answer}])
        return (raw.headers["x-routecast-model"], raw.headers["x-routecast-route"].split(","),
                float(raw.headers["x-routecast-cost-usd"]),
                float(verdict.choices[0].message.content or "nan"))

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, rows))
    return Served([r[0] for r in results], [r[1] for r in results],
                  [r[2] for r in results], [r[3] for r in results])


def replay_router(folder: Path, test: Dataset) -> tuple[npt.NDArray[np.int64],
                                                        npt.NDArray[np.float64],
                                                        npt.NDArray[np.float64]]:
    """The saved router and its calibrated policy on ``test``: (column, quality, cost)."""
    import numpy as np

    from routecast.routers.persist import load_router

    router, policy = load_router(folder)
    assert policy is not None, "the router folder has no calibrated policy"
    data = test.select_models(router.models_)
    prompts = list(data.prompts)
    pick = policy.choose(router.predict(prompts), router.predict_cost(prompts),
                         models=router.models_, prompts=prompts)
    cols = np.array([test.model_index(data.models[j]) for j in pick], dtype=np.int64)
    rows = np.arange(test.n_prompts)
    return cols, test.quality[rows, cols], test.cost_usd[rows, cols]


def replay_cascade(folder: Path, test: Dataset, train: Dataset, signal: str
                   ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64],
                              npt.NDArray[np.float64], npt.NDArray[np.bool_], Any]:
    """The tuned cascade on ``test``, scored as tune-cascade scored it."""
    from routecast.cascades.cascade import Cascade
    from routecast.signals import make_signal
    from routecast.signals.persist import load_scorer

    cascade = Cascade.from_dict(json.loads((folder / "cascade.json").read_text()))
    if signal == "learned":
        scores = load_scorer(folder).score(test)
    else:
        scores = make_signal("confidence", calibrate=False).fit(train).score(test)
    replay = cascade.replay(test, scores)
    return replay.answered, replay.quality, replay.cost_usd, replay.visited, cascade


def same_text(test: Dataset, row: int, model: str) -> dict[str, float]:
    """The models whose recorded answer on ``row`` is ``model``'s text, with their quality."""
    from routecast.fleet import prompt_key

    assert test.responses is not None
    text = prompt_key(str(test.responses[row, test.model_index(model)]))
    return {m: float(test.quality[row, j]) for j, m in enumerate(test.models)
            if prompt_key(str(test.responses[row, j])) == text}


def compare(name: str, endpoint: str, test: Dataset, served: Served,
            cols: npt.NDArray[np.int64], quality: npt.NDArray[np.float64],
            cost: npt.NDArray[np.float64], dup_rows: set[int]) -> dict[str, Any]:
    """Served vs replayed figures for one endpoint, with the differences counted."""
    import numpy as np

    got_q, got_c = np.array(served.quality), np.array(served.cost_usd)
    predicted = [test.models[j] for j in cols]
    other_model = [i for i, m in enumerate(served.model) if m != predicted[i]]
    same = [i for i in range(len(predicted)) if i not in set(other_model)]
    cost_gap = got_c[same] - cost[same]
    # The judge's verdict must be the recorded quality of the model that answered.
    recorded = np.array([test.quality[i, test.model_index(m)] for i, m in
                         enumerate(served.model)])
    judge_mismatch = [{"id": test.ids[i], "served": served.model[i],
                       "judge": float(got_q[i]), "recorded": float(recorded[i]),
                       "same_text": same_text(test, int(i), served.model[i])}
                      for i in np.flatnonzero(recorded != got_q)]
    return {
        "data": name, "endpoint": endpoint, "n": len(predicted),
        "served_quality": float(got_q.mean()), "bench_quality": float(quality.mean()),
        "served_cost_usd": float(got_c.mean()), "bench_cost_usd": float(cost.mean()),
        "other_model": len(other_model),
        "other_model_on_duplicate_prompts": sum(1 for i in other_model if i in dup_rows),
        "judge_vs_recorded_mismatches": len(judge_mismatch),
        "judge_mismatch_examples": judge_mismatch[:3],
        "same_model_quality_gap": float(np.abs(got_q[same] - quality[same]).max(initial=0)),
        "same_model_cost_gap_mean_usd": float(cost_gap.mean()) if same else 0.0,
        "same_model_cost_gap_max_usd": float(np.abs(cost_gap).max(initial=0)),
        "other_model_examples": [{"row": int(i), "id": test.ids[i], "served": served.model[i],
                                  "bench": predicted[i]} for i in other_model[:5]],
    }


def run_dataset(folder_name: str, signal: str, work: Path, sample: int, seed: int,
                concurrency: int) -> list[dict[str, Any]]:
    import numpy as np

    from routecast.data import load_dataset
    from routecast.fleet import prompt_key, spawn_fleet
    from routecast.fleet.demo import routecast_serve

    path = shared_data() / folder_name
    ds = load_dataset(path, seed=seed)
    test, train, val = ds.subset("test"), ds.subset("train"), ds.subset("validation")
    t0 = time.perf_counter()
    router_dir, cascade_dir = work / f"{folder_name}-router", work / f"{folder_name}-cascade"
    cli("fit", str(path), "--router", "linear", "--out", str(router_dir), "--seed", str(seed))
    cli("calibrate", str(router_dir), "--quality-fraction", "0.95", "--data", str(path),
        "--seed", str(seed))
    cli("tune-cascade", str(path), "--out", str(cascade_dir), "--signal", signal,
        "--seed", str(seed))
    prepared_s = time.perf_counter() - t0
    best = val.models[int(np.lexsort((val.mean_cost_usd(), -val.mean_quality()))[0])]

    rows = list(range(test.n_prompts))
    if sample and sample < len(rows):
        rows = sorted(np.random.default_rng(seed).choice(len(rows), sample, replace=False)
                      .tolist())
    sent = test.take(rows)
    first: dict[str, int] = {}
    for i, p in enumerate(sent.prompts):
        first.setdefault(prompt_key(p), i)
    dup_rows = {i for i, p in enumerate(sent.prompts) if first[prompt_key(p)] != i}

    results = []
    with spawn_fleet(path, split="test", seed=seed) as fleet:
        config = {"models": fleet.models_config(judge=False),
                  "endpoints": {
                      "routed": {"type": "routed", "router": str(router_dir)},
                      "cascade": {"type": "cascade", "file": str(cascade_dir)},
                      "best": {"type": "plain", "model": best}},
                  "storage": {"db": str(work / f"{folder_name}.db")}}
        with routecast_serve(config, work) as url:
            t1 = time.perf_counter()
            cols, q, c = replay_router(router_dir, sent)
            results.append(compare(folder_name, "routed", sent,
                                   send(url, fleet, sent, rows_all(sent), "routed",
                                        concurrency), cols, q, c, dup_rows))
            cols, q, c, _, cascade = replay_cascade(cascade_dir, sent, train, signal)
            r = compare(folder_name, "cascade", sent,
                        send(url, fleet, sent, rows_all(sent), "cascade", concurrency),
                        cols, q, c, dup_rows)
            r["cascade"] = cascade.describe()
            results.append(r)
            j = sent.model_index(best)
            results.append(compare(folder_name, f"best ({best})", sent,
                                   send(url, fleet, sent, rows_all(sent), "best", concurrency),
                                   np.full(sent.n_prompts, j), sent.quality[:, j],
                                   sent.cost_usd[:, j], dup_rows))
            served_s = time.perf_counter() - t1
    for r in results:
        r["prepare_s"], r["serve_s"] = prepared_s, served_s
    return results


def rows_all(data: Dataset) -> list[int]:
    return list(range(data.n_prompts))


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'data':24} {'endpoint':30} {'n':>5} {'quality served':>14} {'bench':>7} "
          f"{'cost served $':>14} {'bench $':>11} {'diff':>8} {'other model':>11}")
    for r in results:
        diff = r["served_cost_usd"] / r["bench_cost_usd"] - 1 if r["bench_cost_usd"] else 0.0
        print(f"{r['data']:24} {r['endpoint']:30} {r['n']:5d} {r['served_quality']:14.4f} "
              f"{r['bench_quality']:7.4f} {r['served_cost_usd']:14.6g} "
              f"{r['bench_cost_usd']:11.6g} {diff:+8.3%} {r['other_model']:11d}")
    for r in results:
        notes = [f"judge = recorded quality of the answering model on all but "
                 f"{r['judge_vs_recorded_mismatches']} prompts",
                 f"same-model cost gap mean {r['same_model_cost_gap_mean_usd']:+.3g} $, max "
                 f"{r['same_model_cost_gap_max_usd']:.3g} $ (whole-token rounding)"]
        if r["judge_vs_recorded_mismatches"]:
            notes.append("the judge differs where models gave the same text with different "
                         "recorded grades (it cannot tell which model answered and scores "
                         f"their mean): {r['judge_mismatch_examples']}")
        if r["other_model"]:
            notes.append(f"{r['other_model']} prompts answered by another model "
                         f"({r['other_model_on_duplicate_prompts']} of them duplicated prompt "
                         f"texts, served from their first row), e.g. "
                         f"{r['other_model_examples'][:2]}")
        print(f"  {r['data']} / {r['endpoint']}: " + "; ".join(notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=int, default=0,
                        help="a seeded sample of this many test prompts per data set (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--only", choices=[d for d, _ in DATASETS], default=None)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args()
    if not shared_data().is_dir():
        sys.exit(f"recorded data not found at {shared_data()}; set ROUTECAST_SHARED_DATA")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="routecast-parity-") as tmp:
        for name, signal in DATASETS:
            if args.only and name != args.only:
                continue
            results += run_dataset(name, signal, Path(tmp), args.sample, args.seed,
                                   args.concurrency)
    print_table(results)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    from routecast.errors import RoutecastError

    try:
        main()
    except RoutecastError as e:
        sys.exit(f"error: {e}")
