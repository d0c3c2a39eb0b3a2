"""The tuned cascade and router on the two local models, replayed on held-out prompts.

Reads the outcomes shipped in ``routecast/local/data`` (see ``routecast.local.outcomes`` for how
they were collected and costed), tunes on train + validation, and prints, on the test split:
accuracy, mean recorded latency and mean energy per question of

* always SmolLM2-135M, always Gemma 3 270M (each asked without log-probs);
* the cascade Gemma -> SmolLM2 judged by the learned scorer (what ``routecast serve`` runs),
  and the reverse order; the two orders judged by the first step's log-prob confidence (asked
  for, and priced, with log-probs);
* the routed endpoint (TF-IDF linear router, and the kNN one);

with bootstrap 95 % intervals (prompts resampled) for the differences against always Gemma.

    python -m benchmarks.local_cascade [--bootstrap 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from routecast.cascades.cascade import Replay
from routecast.local import outcomes
from routecast.local.collect import USD_PER_KWH
from routecast.local.outcomes import LARGE, SMALL


def _replays(data: outcomes.LocalOutcomes, split: str) -> dict[str, tuple[Replay, Any]]:
    """Name -> (replay on ``split``, the served dataset it ran on)."""
    out: dict[str, tuple[Replay, Any]] = {}
    plain = outcomes.served(data).subset(split)
    for m in (SMALL, LARGE):
        out[f"always {m}"] = (outcomes.single(plain, m), plain)
    for signal in ("learned", "confidence"):
        for order in ((LARGE, SMALL), (SMALL, LARGE)):
            tuned = outcomes.tune_cascade(data, order, signal=signal)
            served = tuned.data(data).subset(split)
            out[f"cascade {tuned.cascade.describe()} {signal}"] = (
                tuned.cascade.replay(served, tuned.scores(served)), served)
    for kind in ("linear", "knn"):
        router, policy = outcomes.fit_router(data, kind)
        picks = router.route(list(plain.prompts), policy)
        cols = np.array([plain.model_index(m) for m in picks], dtype=np.int64)
        visited = np.zeros((plain.n_prompts, plain.n_models), dtype=bool)
        visited[np.arange(plain.n_prompts), cols] = True
        out[f"routed ({kind})"] = (Replay.from_visits(plain, visited, cols), plain)
    return out


def _interval(diff: np.ndarray[Any, np.dtype[np.float64]], n_boot: int,
              rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    data = outcomes.load()
    counts = {s: int((data.plain.split == s).sum()) for s in ("train", "validation", "test")}
    print(f"shipped outcomes: {data.plain.n_prompts} prompts x {data.plain.n_models} models, "
          f"splits {counts}; tuned on train+validation, reported on {args.split}")
    agree = float((data.plain.quality == data.logprobs.quality).mean())
    print(f"grades equal in the runs with and without log-probs: {agree:.1%}")
    replays = _replays(data, args.split)
    base, _ = replays[f"always {LARGE}"]
    rng = np.random.default_rng(args.seed)
    rows = []
    header = (f"{'':60s} {'accuracy':>8s} {'lat s':>6s} {'energy J':>8s} {'escal.':>6s}  "
              f"{'d acc vs Gemma [95% CI]':>26s}  {'d energy J [95% CI]':>24s}")
    print(header)
    for name, (r, served) in replays.items():
        assert r.latency_s is not None and base.latency_s is not None
        energy = r.cost_usd / USD_PER_KWH * 3.6e6
        base_energy = base.cost_usd / USD_PER_KWH * 3.6e6
        d_acc = r.quality - base.quality
        d_j = energy - base_energy
        acc_ci = _interval(d_acc, args.bootstrap, rng)
        j_ci = _interval(d_j, args.bootstrap, rng)
        row = {"name": name, "accuracy": r.mean_quality, "latency_s": float(r.latency_s.mean()),
               "energy_j": float(energy.mean()), "escalation_rate": r.escalation_rate,
               "answered_by": r.answer_shares(served.models),
               "d_accuracy": float(d_acc.mean()), "d_accuracy_ci": acc_ci,
               "d_energy_j": float(d_j.mean()), "d_energy_j_ci": j_ci,
               "d_latency_s": float((r.latency_s - base.latency_s).mean())}
        rows.append(row)
        print(f"{name:60s} {row['accuracy']:8.3f} {row['latency_s']:6.2f} "
              f"{row['energy_j']:8.2f} {r.escalation_rate:6.2f}  "
              f"{row['d_accuracy']:+7.3f} [{acc_ci[0]:+.3f}, {acc_ci[1]:+.3f}]  "
              f"{row['d_energy_j']:+7.2f} [{j_ci[0]:+.2f}, {j_ci[1]:+.2f}]")
    print("energy: WATTS_PER_THREAD x the CPU seconds the local profile predicts for each "
          "answer's tokens (with log-probs for a cascade's first step); latency: wall time as "
          "recorded on the shared collection machine, summed over the steps a cascade visits.")
    if args.json:
        args.json.write_text(json.dumps({"splits": counts, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
