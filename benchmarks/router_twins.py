"""Are two routers one? Prediction agreement of ``mlp`` and ``mf`` (and ``linear``).

Fits each router on the train split of a data set (default: the RouterBench subset) and
compares their predictions on the test split:

* ``max|diff|``: the largest difference of two predicted qualities, over prompts and models;
* ``corr``: the correlation of the flattened ``(n, m)`` predictions, and the mean of the
  per-model correlations (the flattened one is dominated by the models' base rates);
* ``same choice``: share of test prompts where both pick the same model, at a cost weight of
  0 (best predicted quality) and at the weight that a policy calibrated on validation for
  95 % of the best single model's quality uses for the first router;
* for ``mlp``, how non-linear its hidden layer is on the test prompts: the share of units
  that are active on some prompts but not all (a unit active on every prompt, or on none, is
  linear there), averaged over its starts.

Run from the project root::

    .venv/bin/python benchmarks/router_twins.py
    .venv/bin/python benchmarks/router_twins.py --routers mlp,mf,linear
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np


def shared_data() -> Path:
    shared = os.environ.get("ROUTECAST_SHARED_DATA")
    return Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data() / "routerbench-subset")
    parser.add_argument("--routers", default="mlp,mf,linear")
    args = parser.parse_args(argv)

    from routecast.data import load_dataset
    from routecast.errors import RoutecastError
    from routecast.policy import Policy
    from routecast.routers import make_router
    from routecast.routers.mlp import MLPRouter

    try:
        data = load_dataset(args.data)
        train, val, test = (data.subset(s) for s in ("train", "validation", "test"))
        names = [n for n in args.routers.split(",") if n]
        preds, costs, weights = {}, {}, {}
        print(f"{data!r}: fit on train, compare on test ({test.n_prompts} prompts)")
        for name in names:
            t0 = time.perf_counter()
            router = make_router(name).fit(train)
            fit_s = time.perf_counter() - t0
            preds[name] = router.predict(list(test.prompts))
            costs[name] = router.predict_cost(list(test.prompts))
            weights[name] = Policy.for_quality(router, val, fraction=0.95).cost_weight
            line = f"  {name:<8} fit {fit_s:5.1f} s"
            if isinstance(router, MLPRouter):
                h = router.hidden_layer(list(test.prompts))
                active = h > 0
                mixed = (active.any(axis=1) & ~active.all(axis=1)).mean()
                line += f"; hidden units active on some test prompts but not all: {mixed:.0%}"
            print(line)
        print(f"{'pair':<14} {'max|diff|':>9} {'corr':>12} {'corr/model':>10} "
              f"{'same choice w=0':>15} {'same choice @95':>15}")
        for a, b in itertools.combinations(names, 2):
            pa, pb = preds[a], preds[b]
            per_model = np.mean([np.corrcoef(pa[:, j], pb[:, j])[0, 1]
                                 for j in range(pa.shape[1])])
            same0 = float((pa.argmax(1) == pb.argmax(1)).mean())
            w = weights[a]
            ca = (pa - w * costs[a]).argmax(1)
            cb = (pb - w * costs[b]).argmax(1)
            print(f"{a + '/' + b:<14} {np.abs(pa - pb).max():9.4f} "
                  f"{np.corrcoef(pa.ravel(), pb.ravel())[0, 1]:12.8f} {per_model:10.4f} "
                  f"{same0:15.1%} {float((ca == cb).mean()):15.1%}")
    except RoutecastError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
