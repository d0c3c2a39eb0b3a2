"""The demo's second part: recorded cloud models replayed behind routed and cascade endpoints.

Real data, real ``routecast fit`` / ``calibrate`` / ``tune-cascade`` (into the tests' private
cache), a real ``routecast serve`` subprocess over a real fleet, the official openai client.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from routecast.errors import DataError
from routecast.fleet import demo


def test_missing_data_says_where_and_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"routerbench-subset/ is missing.*\.\./shared/data"):
        demo.find_data(tmp_path)
    done = subprocess.run([sys.executable, "-m", "routecast.cli", "demo", "--no-local",
                           "--data", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Part 2 skipped" in done.stdout and "routerbench-subset/ is missing" in done.stdout
    assert "Traceback" not in done.stderr


def test_routed_and_cascade_endpoints_save_against_the_best_model(shared_data: Path) -> None:
    from routecast.cascades.cascade import Cascade
    from routecast.data import load_dataset
    from routecast.routers.persist import load_router
    from routecast.signals.persist import load_scorer

    lines: list[str] = []
    result = demo.run(shared_data, sample=80, say=lines.append)
    assert result.n_prompts == 80 and result.best_model == "gpt-4-1106-preview"
    assert set(result.results) == {"gpt-4-1106-preview", "auto", "cascade"}

    # What the endpoints did is what the library's replay of the same router and cascade
    # says for the same (seeded) prompts: same models, recorded quality, recorded cost.
    prepared = demo.prepare(demo.find_data(shared_data))
    assert prepared.cached  # the run above fitted and kept them
    test = load_dataset(shared_data / "routerbench-subset").subset("test")
    rows = np.sort(np.random.default_rng(0).choice(test.n_prompts, 80, replace=False))
    sent = test.take(rows)
    router, policy = load_router(prepared.router)
    assert policy is not None
    prompts = list(sent.prompts)
    picks = policy.choose(router.predict(prompts), router.predict_cost(prompts))
    assert result.results["auto"].models == [router.models_[j] for j in picks]
    cascade = Cascade.from_dict(json.loads((prepared.cascade / "cascade.json").read_text()))
    replay = cascade.replay(sent, load_scorer(prepared.cascade).score(sent))
    assert result.results["cascade"].models == [sent.models[j] for j in replay.answered]
    for name, r in result.results.items():
        cols = [sent.model_index(m) for m in r.models]
        assert r.quality == [float(sent.quality[i, j]) for i, j in enumerate(cols)], name
    assert result.results["cascade"].mean_cost_usd == pytest.approx(replay.mean_cost_usd,
                                                                    rel=1e-3)

    best = result.results["gpt-4-1106-preview"]
    for endpoint in ("auto", "cascade"):
        assert result.results[endpoint].mean_cost_usd < 0.6 * best.mean_cost_usd
    text = "\n".join(demo.summary(result))
    assert "On 80 held-out routerbench-subset prompts" in text
    saved = 1 - result.results["auto"].mean_cost_usd / best.mean_cost_usd
    assert re.search(rf"auto\s+accuracy .* {saved:.0%} saved", text), text
    assert f"cascade {cascade.describe()}; escalated" in text
